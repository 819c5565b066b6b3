"""Mail steps of the workflows (the SMTP connection ``smtp_default``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator


class NotifyManagerOperator(BaseOperator):
    """Email the manager that the new employee's accounts exist (only when this run created them)."""

    template_fields: Sequence[str] = ("to", "subject", "html", "created")

    def __init__(self, *, to: str, subject: str, html: str, created: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.to = to
        self.subject = subject
        self.html = html
        self.created = created

    def execute(self, context: Any) -> dict[str, Any]:
        from include.approvals.notify import send_email

        if str(self.created).strip() != "True":
            # A re-run for an employee who is already onboarded: the manager was told the first time.
            self.log.info("accounts existed before this run: no email")
            return {"sent": False}
        sent = send_email([self.to], self.subject, self.html, log=self.log)
        if sent.get("error"):
            raise RuntimeError(f"email to the manager failed: {sent['error']}")  # retried
        return {"sent": True, "to": sent.get("to", [])}
