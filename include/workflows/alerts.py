"""Alert email for a missed SLA, sent by a Deadline Alert from the triggerer.

The scheduler hands the callback a small context (the run as the REST API shows it and the
deadline), not a task context, so the message is composed here, at send time, rather than in
Jinja: "how late" is only known when the mail goes out. One mail per missed deadline: Airflow
fires each deadline once, and the Message-ID is derived from the deadline id, so a callback that
is retried after a crash is recognised as the same message by mail servers and clients.
"""

from __future__ import annotations

import ssl
from datetime import datetime, timedelta
from functools import cached_property
from html import escape
from typing import Any

from airflow.providers.smtp.hooks.smtp import SmtpHook
from airflow.providers.smtp.notifications.smtp import SmtpNotifier
from airflow.sdk.timezone import utcnow

from include.approvals.messages import waited
from include.connectors.context import CORRELATION_CONF_KEY, default_correlation_id

ALERT_SMTP_CONN_ID = "smtp_alerts"
ALERT_FROM = "orchestrator@secops.example"


def _moment(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and value:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    return None


class SharedTlsSmtpHook(SmtpHook):
    """``SmtpHook`` that builds the default TLS context once per process, not once per mail.

    The provider calls ``ssl.create_default_context()`` for every connection (for the async
    client even when TLS is off), which loads the whole system CA store. In the triggerer that
    was half the trigger runner's samples (py-spy, issue 8); sharing it took the triggerer from
    0.38 to 0.23 CPU-s per SLA alert, and a 200-run burst past its SLA sends 120-odd of them.
    A context is configuration only (CA store, verification mode); the SMTP clients read it and
    never change it, so one can serve every connection. ``ssl_context: none`` and invalid values
    still get the provider's own answer.
    """

    _default_tls: ssl.SSLContext | None = None

    def _build_ssl_context(self) -> ssl.SSLContext | None:
        if self.ssl_context not in (None, "default"):
            return super()._build_ssl_context()
        if SharedTlsSmtpHook._default_tls is None:
            SharedTlsSmtpHook._default_tls = super()._build_ssl_context()
        return SharedTlsSmtpHook._default_tls


def sla_subject(domain: str, kind: str, sla: timedelta, dag_id: str, run_id: str) -> str:
    return f"[SLA miss][{domain}] {dag_id} run {run_id} exceeded its {kind.replace('_', ' ')} SLA of {sla}"


class SlaMissNotifier(SmtpNotifier):
    """Email the alert list that a run outlived its SLA: which run, how late, correlation id, link."""

    def __init__(self, *, domain: str, kind: str, sla_seconds: float, base_url: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.domain = domain
        self.kind = kind
        self.sla = timedelta(seconds=sla_seconds)
        self.base_url = base_url.rstrip("/")

    @cached_property
    def hook(self) -> SmtpHook:
        return SharedTlsSmtpHook(smtp_conn_id=self.smtp_conn_id, auth_type=self.auth_type)

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
        await super().async_notify(context)
