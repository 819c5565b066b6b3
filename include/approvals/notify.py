"""Side effects of the approval ladder: emails through the platform's SMTP connection, ticket comments.

Both are best effort by design: a lost reminder must not cancel an approval (the request stays in
the UI's required actions, and the next ladder step tries again), so failures are returned as a
recorded outcome and logged, never raised.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from logging import Logger
from typing import Any

from include.connectors.context import RunContext
from include.connectors.idempotency import idempotency_key
from include.workflows.alerts import ALERT_FROM, ALERT_SMTP_CONN_ID


def send_email(
    to: Sequence[str],
    subject: str,
    html: str,
    *,
    headers: Mapping[str, str] | None = None,
    log: Logger | Any,
    conn_id: str = ALERT_SMTP_CONN_ID,
) -> dict[str, Any]:
    """Send one email; return ``{"to": [...], "subject": ...}`` plus ``"error"`` if it failed."""
    from include.workflows.alerts import SharedTlsSmtpHook

    recipients = list(dict.fromkeys(to))  # de-duplicated, order kept
    outcome: dict[str, Any] = {"to": recipients, "subject": subject}
    try:
        with SharedTlsSmtpHook(smtp_conn_id=conn_id) as hook:
            hook.send_email_smtp(
                to=recipients,
                subject=subject,
                html_content=html,
                from_email=ALERT_FROM,
                custom_headers=dict(headers or {}),
            )
    except Exception as exc:  # any SMTP/connection failure is recorded, not raised (see module doc)
        log.warning("could not send %r to %s: %s", subject, ", ".join(recipients), type(exc).__name__)
        outcome["error"] = f"{type(exc).__name__}: {exc}"[:300]
    return outcome


async def asend_email(
    to: Sequence[str],
    subject: str,
    html: str,
    *,
    headers: Mapping[str, str] | None = None,
    log: Logger | Any,
    conn_id: str = ALERT_SMTP_CONN_ID,
) -> dict[str, Any]:
    """:func:`send_email` for the triggerer (asyncio)."""
    from include.workflows.alerts import SharedTlsSmtpHook

    recipients = list(dict.fromkeys(to))
    outcome: dict[str, Any] = {"to": recipients, "subject": subject}
    try:
        async with SharedTlsSmtpHook(smtp_conn_id=conn_id) as hook:
            await hook.asend_email_smtp(
                to=recipients,
                subject=subject,
                html_content=html,
                from_email=ALERT_FROM,
                custom_headers=dict(headers or {}),
            )
    except Exception as exc:  # recorded, not raised: see module doc
        log.warning("could not send %r to %s: %s", subject, ", ".join(recipients), type(exc).__name__)
        outcome["error"] = f"{type(exc).__name__}: {exc}"[:300]
    return outcome


def comment_on_ticket(run: RunContext, system: str, ticket_id: str, text: str) -> dict[str, Any]:
    """Comment on the run's ticket (idempotent per run, task and ladder step)."""
    from include.operators.ticketing import ticketing_hook

    tenant = run.tenant
    try:
        entry = ticketing_hook(system, None, tenant).comment(
            ticket_id, text, idempotency_key=idempotency_key(run, "approval-escalation")
        )
    except Exception as exc:  # recorded, not raised: see module doc
        return {"ticket_id": ticket_id, "error": f"{type(exc).__name__}: {exc}"[:300]}
    return {"ticket_id": ticket_id, "entry_id": entry.entry_id}
