"""Mail steps of the workflows, through the platform's SMTP relay (connection ``smtp_alerts``)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import Any

from airflow.sdk import BaseOperator

from include.connectors.smtp import SmtpRelayHook


class NotifyManagerOperator(BaseOperator):
    """Email the manager that the new employee's accounts exist (only when this run created them).

    XCom: ``{"sent": True, "to": [...]}``, or ``{"sent": False}`` when the accounts existed before
    this run (a re-run: the manager was told the first time). A failed send fails the task, so
    Airflow's retries send it again.

    :param to: the manager's address (templated).
    :param subject: the subject line (templated).
    :param html: the HTML body (templated).
    :param created: ``"True"`` if this run created the accounts (templated, from the create step).
    :param conn_id: the SMTP connection; default the relay's (``smtp_alerts``).
    """

    template_fields: Sequence[str] = ("to", "subject", "html", "created")

    def __init__(
        self, *, to: str, subject: str, html: str, created: str, conn_id: str | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.to = to
        self.subject = subject
        self.html = html
        self.created = created
        self.conn_id = conn_id

    @cached_property
    def hook(self) -> SmtpRelayHook:
        """The platform's SMTP relay."""
        return SmtpRelayHook(self.conn_id)

    def execute(self, context: Any) -> dict[str, Any]:
        if str(self.created).strip() != "True":
            self.log.info("accounts existed before this run: no email")
            return {"sent": False}
        try:
            recipients = self.hook.send([self.to], self.subject, self.html)
        except Exception as exc:  # any SMTP or connection failure: the task fails and is retried
            self.log.warning("could not send %r to %s: %s", self.subject, self.to, type(exc).__name__)
            detail = f"{type(exc).__name__}: {exc}"[:300]
            raise RuntimeError(f"email to the manager failed: {detail}") from exc
        return {"sent": True, "to": recipients}
