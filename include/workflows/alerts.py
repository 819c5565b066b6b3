"""Alert email for a missed SLA, sent by a Deadline Alert from the triggerer.

The scheduler hands the callback a small context (the run as the REST API shows it and the
deadline), not a task context, so the message is composed here, at send time, rather than in
Jinja: "how late" is only known when the mail goes out. The miss is recorded in the SLA digest
store (include/workflows/sla_digest.py): the domain's first miss in a window is mailed at once,
the later ones in one digest when the window closes. The Message-ID of the single mail is derived
from the deadline id, so a callback that is retried after a crash is recognised as the same
message by mail servers and clients (and the store records the miss once).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any

from airflow.providers.smtp.notifications.smtp import SmtpNotifier
from airflow.sdk.timezone import utcnow

from include.connectors.context import CORRELATION_CONF_KEY, default_correlation_id
from include.connectors.smtp import ALERT_FROM, SharedTlsSmtpClient, SmtpRelayHook, recipients_of
from include.workflows.sla_digest import (
    LateRun,
    MailChannel,
    adefault_store,
    aflush,
    as_moment,
    domain_recipients,
    immediate_message,
)

log = logging.getLogger(__name__)


class SlaMissNotifier(SmtpNotifier):
    """Email the alert list that a run outlived its SLA: which run, how late, correlation id, link.

    An ``SmtpNotifier`` (the Deadline Alert's callback takes its ``to``, ``from_email`` and
    ``smtp_conn_id``) that sends through the platform's relay hook.

    :param domain: the domain whose SLA it is.
    :param kind: the SLA kind (``fast_path``, ``infrastructure_change``, ...).
    :param sla_seconds: the SLA.
    :param base_url: the Airflow UI's base URL, for the link to the run.
    :param digest_window_seconds: the domain's SLA digest window; the domain policy's when not given.
    """

    def __init__(
        self,
        *,
        domain: str,
        kind: str,
        sla_seconds: float,
        base_url: str,
        digest_window_seconds: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.digest_window_seconds = digest_window_seconds
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

    def late_run(self, context: dict[str, Any]) -> LateRun:
        """The missed SLA as the digest store keeps it."""
        run = context.get("dag_run") or {}
        deadline = context.get("deadline") or {}
        dag_id, run_id = run.get("dag_id", "?"), run.get("dag_run_id", "?")
        conf = run.get("conf") or {}
        correlation_id = conf.get(CORRELATION_CONF_KEY) or default_correlation_id(dag_id, run_id)
        queued_at, deadline_at = as_moment(run.get("queued_at")), as_moment(deadline.get("deadline_time"))
        return LateRun(
            miss_id=str(deadline.get("id") or f"{dag_id}.{run_id}.{self.kind}"),
            domain=self.domain,
            dag_id=dag_id,
            run_id=run_id,
            correlation_id=str(correlation_id),
            kind=self.kind,
            sla_seconds=self.sla.total_seconds(),
            deadline_at=deadline_at.isoformat() if deadline_at else "",
            queued_at=queued_at.isoformat() if queued_at else "",
            state=str(run.get("state", "?")),
            url=f"{self.base_url}/dags/{dag_id}/runs/{run_id}",
        )

    def compose(self, context: dict[str, Any], now: datetime) -> None:
        self.subject, self.html_content, self.custom_headers = immediate_message(self.late_run(context), now)

    async def async_notify(self, context: Any) -> None:
        """Record the miss in the digest store and flush what is due (this miss, if it is the
        domain's first in its window). Without a reachable store: one mail for this miss, at once."""
        late = self.late_run(dict(context))
        window = timedelta(seconds=self.digest_window_seconds) if self.digest_window_seconds else None
        try:
            store = await adefault_store()
            if window is None:
                from include.policies.loader import load_domain_policy

                window = load_domain_policy().domain(self.domain).alert_digest_window
            outcome = await asyncio.to_thread(store.record, late, window)
        except Exception as exc:  # the alert matters more than the grouping
            log.warning("SLA digest store unavailable (%s); mailing this miss on its own", type(exc).__name__)
            self.compose(dict(context), utcnow())
            subject, html = self.subject or "", self.html_content or ""
            await self.relay.asend(self.to, subject, html, headers=self.custom_headers)
            return
        log.info("SLA miss %s of %s recorded: %s", late.miss_id, self.domain, outcome)
        try:
            recipients = dict(domain_recipients())
        except Exception:
            recipients = {}
        recipients[self.domain] = recipients_of(self.to)
        await aflush(store, MailChannel(recipients, self.smtp_conn_id))
