"""The ticketing interface every adapter implements (Request Tracker, Jira Service Management).

Side-effecting calls take an ``idempotency_key``: the adapter first searches for an object carrying
that key and returns it instead of creating a second one, so a retried or re-run task never
duplicates a ticket, comment or attachment. Tickets also carry the run's correlation id and tenant.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Ticket:
    id: str
    subject: str
    status: str
    queue: str
    fields: dict[str, str] = field(default_factory=dict)
    created: bool = False  # True if this call created it, False if it already existed

    def as_xcom(self) -> dict[str, Any]:
        return {"id": self.id, "status": self.status, "queue": self.queue, "created": self.created}


@dataclass(frozen=True)
class TicketEntry:
    """A comment, reply or attachment on a ticket."""

    ticket_id: str
    entry_id: str
    created: bool


class TicketingHook(abc.ABC):
    CORRELATION_FIELD = "CorrelationId"
    TENANT_FIELD = "Tenant"
    IDEMPOTENCY_FIELD = "IdempotencyKey"

    @abc.abstractmethod
    def create_ticket(
        self,
        *,
        queue: str,
        subject: str,
        body: str,
        idempotency_key: str,
        correlation_id: str,
        fields: Mapping[str, str] | None = None,
        requestor: str | None = None,
    ) -> Ticket: ...

    @abc.abstractmethod
    def get_ticket(self, ticket_id: str) -> Ticket: ...

    @abc.abstractmethod
    def comment(self, ticket_id: str, body: str, *, idempotency_key: str) -> TicketEntry: ...

    @abc.abstractmethod
    def reply(self, ticket_id: str, body: str, *, idempotency_key: str) -> TicketEntry: ...

    @abc.abstractmethod
    def attach(
        self, ticket_id: str, *, filename: str, content: bytes, content_type: str, idempotency_key: str
    ) -> TicketEntry: ...

    @abc.abstractmethod
    def set_fields(self, ticket_id: str, fields: Mapping[str, str]) -> Ticket: ...

    @abc.abstractmethod
    def set_status(self, ticket_id: str, status: str) -> Ticket: ...

    def update(
        self, ticket_id: str, *, fields: Mapping[str, str] | None = None, status: str | None = None
    ) -> None:
        """Set ``fields`` and/or ``status``. Here as two calls; an adapter whose API takes both in
        one request overrides it (a bulk change makes it once per ticket, at the bulk rate)."""
        if fields:
            self.set_fields(ticket_id, fields)
        if status:
            self.set_status(ticket_id, status)

    @abc.abstractmethod
    def search_by_correlation(self, correlation_id: str) -> list[Ticket]: ...
