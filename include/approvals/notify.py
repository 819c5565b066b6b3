"""Side effects of the approval ladder: emails through the platform's SMTP connection, ticket comments.

Both are best effort by design: a lost reminder must not cancel an approval (the request stays in
the UI's required actions, and the next ladder step tries again), so failures are returned as a
recorded outcome and logged, never raised.

In the triggerer, blocking side effects (a Teams post, a page, a ticket comment, an audit record)
run on :func:`off_loop`'s threads, never on the event loop nor on the thread Airflow's HITL trigger
polls for the answer on (see there).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from logging import Logger
from typing import TYPE_CHECKING, Any, Final, TypeVar

from include.connectors.idempotency import idempotency_key
from include.connectors.smtp import ALERT_SMTP_CONN_ID, SmtpRelayHook

if TYPE_CHECKING:
    from include.connectors.context import RunContext

T = TypeVar("T")

SIDE_EFFECT_THREADS: Final = 4
"""Threads of :func:`off_loop` per process: a few slow posts at once; more wait for one of them."""

# Why a pool of our own, not asgiref's ``sync_to_async`` (the default, thread_sensitive=True):
# that runs every call of the process on ONE shared thread, and Airflow's HITLTrigger polls for the
# answer (and applies the timeout's default) on that same thread. A Teams webhook timing out
# through its retries there held every approval's answer poll and fail-safe reject behind it.
# Not asyncio's default executor either: the loop resolves host names (aiosmtplib, httpx) on it,
# which slow posts filling it would stall. One pool per process: a forked child gets its own.
_pools: dict[int, ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    pid = os.getpid()
    with _pools_lock:
        pool = _pools.get(pid)
        if pool is None:
            pool = _pools[pid] = ThreadPoolExecutor(
                max_workers=SIDE_EFFECT_THREADS, thread_name_prefix="approval-side-effects"
            )
        return pool


async def off_loop(function: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """Run the blocking ``function(*args, **kwargs)`` on the ladder's side-effect threads and await it.

    The caller's context variables (the trigger's log context) go with it, as with
    :func:`asyncio.to_thread`. Neither the event loop nor the HITL answer poll waits for it.
    """
    loop = asyncio.get_running_loop()
    call = functools.partial(contextvars.copy_context().run, function, *args, **kwargs)
    return await loop.run_in_executor(_pool(), call)


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
