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
from include.connectors.smtp import ALERT_SMTP_CONN_ID, SmtpRelayHook


def _failed(outcome: dict[str, Any], exc: Exception, log: Logger | Any) -> dict[str, Any]:
    recipients = ", ".join(outcome["to"])
    log.warning("could not send %r to %s: %s", outcome["subject"], recipients, type(exc).__name__)
    return {**outcome, "error": f"{type(exc).__name__}: {exc}"[:300]}


def send_email(
    to: Sequence[str],
    subject: str,
    html: str,
    *,
    headers: Mapping[str, str] | None = None,
    log: Logger | Any,
    conn_id: str = ALERT_SMTP_CONN_ID,
) -> dict[str, Any]:
    """Send one email; return ``{"to": [...], "subject": ...}`` plus ``"error"`` if it failed.

    :param to: the recipients (de-duplicated, order kept).
    :param subject: the subject line.
    :param html: the HTML body.
    :param headers: extra headers (correlation id, Message-ID).
    :param log: where a failure is logged (the task's or trigger's logger).
    :param conn_id: the SMTP connection.
    """
    outcome: dict[str, Any] = {"to": list(dict.fromkeys(to)), "subject": subject}
    try:
        SmtpRelayHook(conn_id).send(outcome["to"], subject, html, headers=headers)
    except Exception as exc:  # any SMTP/connection failure is recorded, not raised (see module doc)
        return _failed(outcome, exc, log)
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
    """:func:`send_email` for the triggerer (asyncio); same parameters."""
    outcome: dict[str, Any] = {"to": list(dict.fromkeys(to)), "subject": subject}
    try:
        await SmtpRelayHook(conn_id).asend(outcome["to"], subject, html, headers=headers)
    except Exception as exc:  # recorded, not raised: see module doc
        return _failed(outcome, exc, log)
    return outcome


def comment_on_ticket(run: RunContext, system: str, ticket_id: str, text: str) -> dict[str, Any]:
    """Comment on the run's ticket (idempotent per run, task and ladder step)."""
    from include.connectors.ticketing import ticketing_hook

    tenant = run.tenant
    try:
        entry = ticketing_hook(system, None, tenant).comment(
            ticket_id, text, idempotency_key=idempotency_key(run, "approval-escalation")
        )
    except Exception as exc:  # recorded, not raised: see module doc
        return {"ticket_id": ticket_id, "error": f"{type(exc).__name__}: {exc}"[:300]}
    return {"ticket_id": ticket_id, "entry_id": entry.entry_id}
