"""Alert email for a missed SLA, sent by a Deadline Alert from the triggerer.

The scheduler hands the callback a small context (the run as the REST API shows it and the
deadline), not a task context, so the message is composed here, at send time, rather than in
Jinja: "how late" is only known when the mail goes out. One mail per missed deadline: Airflow
fires each deadline once, and the Message-ID is derived from the deadline id, so a callback that
is retried after a crash is recognised as the same message by mail servers and clients.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import cached_property
from html import escape
from typing import Any

from airflow.providers.smtp.notifications.smtp import SmtpNotifier
from airflow.sdk.timezone import utcnow

from include.approvals.messages import waited
from include.connectors.context import CORRELATION_CONF_KEY, default_correlation_id
from include.connectors.smtp import ALERT_FROM, SharedTlsSmtpClient, SmtpRelayHook


def _moment(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and value:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    return None


def sla_subject(domain: str, kind: str, sla: timedelta, dag_id: str, run_id: str) -> str:
    return f"[SLA miss][{domain}] {dag_id} run {run_id} exceeded its {kind.replace('_', ' ')} SLA of {sla}"


class SlaMissNotifier(SmtpNotifier):
    """Email the alert list that a run outlived its SLA: which run, how late, correlation id, link.

    An ``SmtpNotifier`` (the Deadline Alert's callback takes its ``to``, ``from_email`` and
    ``smtp_conn_id``) that sends through the platform's relay hook.

    :param domain: the domain whose SLA it is.
    :param kind: the SLA kind (``fast_path``, ``infrastructure_change``, ...).
    :param sla_seconds: the SLA.
    :param base_url: the Airflow UI's base URL, for the link to the run.
    """

    def __init__(self, *, domain: str, kind: str, sla_seconds: float, base_url: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.domain = domain
        self.kind = kind
        self.sla = timedelta(seconds=sla_seconds)
        self.base_url = base_url.rstrip("/")

    @cached_property
    def relay(self) -> SmtpRelayHook:
        sender = self.from_email or ALERT_FROM
        return SmtpRelayHook(self.smtp_conn_id, from_email=sender, auth_type=self.auth_type)

    @cached_property
    def hook(self) -> SharedTlsSmtpClient:
        """The relay's SMTP client (what the provider's ``notify`` would use)."""
        return self.relay.client

    def compose(self, context: dict[str, Any], now: datetime) -> None:
        run = context.get("dag_run") or {}
        deadline = context.get("deadline") or {}
        dag_id, run_id = run.get("dag_id", "?"), run.get("dag_run_id", "?")
        conf = run.get("conf") or {}
        correlation_id = conf.get(CORRELATION_CONF_KEY) or default_correlation_id(dag_id, run_id)
        queued_at, deadline_at = _moment(run.get("queued_at")), _moment(deadline.get("deadline_time"))
        url = f"{self.base_url}/dags/{dag_id}/runs/{run_id}"
        rows = [
            ("Domain", self.domain),
            ("Workflow", dag_id),
            ("Run", f"{run_id} (state {run.get('state', '?')})"),
            ("Correlation id", str(correlation_id)),
            ("SLA", f"{self.kind.replace('_', ' ')}: {self.sla} from queued"),
            ("Queued at", str(queued_at)),
            ("Deadline", str(deadline_at)),
            ("Late by", waited(deadline_at, now) if deadline_at else "unknown"),
            ("Running for", waited(queued_at, now) if queued_at else "unknown"),
        ]
        table = "".join(f"<tr><th align='left'>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in rows)
        self.subject = sla_subject(self.domain, self.kind, self.sla, dag_id, run_id)
        self.html_content = f'<table>{table}</table><p><a href="{escape(url)}">Open the run</a></p>'
        self.custom_headers = {
            "X-Orchestrator-Correlation-Id": str(correlation_id),
            "X-Orchestrator-Alert": f"sla-miss/{self.domain}/{dag_id}",
            "Message-ID": f"<sla-miss-{deadline.get('id', run_id)}@orchestrator.secops.example>",
        }

    async def async_notify(self, context: Any) -> None:
        self.compose(dict(context), utcnow())
        subject, html = self.subject or "", self.html_content or ""
        await self.relay.asend(self.to, subject, html, headers=self.custom_headers)
