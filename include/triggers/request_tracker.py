"""New tickets in a Request Tracker queue as events: what starts support triage within seconds.

A polling event trigger (Airflow's ``BaseEventTrigger``, run by the triggerer for an
``AssetWatcher``): every ``poll_interval`` seconds it asks RT's REST 2 API for tickets still
``new`` in the queue with an id above the last one it reported, and yields one event per ticket.
Each event becomes an asset event, and the asset schedules ``support_triage``.

Why polling, not push: Request Tracker 5 has no outgoing webhooks (a scrip running a custom Perl
action could call Airflow's REST API, but that puts code and an Airflow credential into the
ticketing system). Polling an indexed query every second costs one small request and bounds the
added latency by the interval; it needs nothing but the read-only REST token the connector has.

The cursor lives in memory: after a triggerer restart every ticket still ``new`` is reported
again, which is what should happen (it was not triaged yet); triage is idempotent, so a ticket
reported twice is triaged once in effect.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypedDict

from airflow.triggers.base import BaseEventTrigger, TriggerEvent
from asgiref.sync import sync_to_async

if TYPE_CHECKING:
    from include.connectors.ticketing.request_tracker import RequestTrackerHook


class NewTicketEvent(TypedDict):
    """The payload of one event: a ticket still ``new`` in the watched queue."""

    ticket_id: str
    queue: str
    subject: str
    requestor: str | None


class NewTicketTrigger(BaseEventTrigger):
    """Yield ``{"ticket_id", "queue", "subject", "requestor"}`` for each new ticket of ``queue``.

    :param queue: the RT queue to watch.
    :param conn_id: the RT connection (REST 2 token).
    :param poll_interval: seconds between polls.
    """

    def __init__(self, *, queue: str, conn_id: str = "rt_default", poll_interval: float = 1.0) -> None:
        super().__init__()
        self.queue = queue
        self.conn_id = conn_id
        self.poll_interval = poll_interval

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {"queue": self.queue, "conn_id": self.conn_id, "poll_interval": self.poll_interval},
        )

    @cached_property
    def hook(self) -> RequestTrackerHook:
        """The RT hook of ``conn_id``; the poll is the platform's own, not a tenant's: its own
        rate-limit bucket."""
        from include.connectors.ticketing.request_tracker import RequestTrackerHook

        return RequestTrackerHook(self.conn_id, tenant="platform")

    async def run(self) -> AsyncIterator[TriggerEvent]:
        # The first access imports the HTTP client stack: off the event loop.
        hook = await sync_to_async(lambda: self.hook)()
        cursor = 0
        while True:
            try:
                tickets = await sync_to_async(hook.new_tickets)(self.queue, after_id=cursor)
            except Exception as error:  # an RT outage must not kill the watcher: log, wait, poll again
                self.log.warning("polling queue %s failed: %s", self.queue, type(error).__name__)
                tickets = []
            for ticket in tickets:
                ticket_id = int(ticket["id"])
                cursor = max(cursor, ticket_id)
                requestors = ticket.get("Requestor") or []
                requestor = (
                    requestors[0].get("id") if requestors and isinstance(requestors[0], dict) else None
                )
                event: NewTicketEvent = {
                    "ticket_id": str(ticket_id),
                    "queue": self.queue,
                    "subject": str(ticket.get("Subject", ""))[:200],
                    "requestor": requestor,
                }
                yield TriggerEvent(event)
            await asyncio.sleep(self.poll_interval)
