"""The ticketing interface every adapter implements (Request Tracker, Jira Service Management).

Side-effecting calls take an ``idempotency_key``: the adapter first searches for an object carrying
that key and returns it instead of creating a second one, so a retried or re-run task never
duplicates a ticket, comment or attachment. Tickets also carry the run's correlation id and tenant.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
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
    """What every ticketing adapter does; each adapter is also a :class:`ConnectorHook` (connection,
    tenant, rate limit, retries), built by :func:`include.connectors.ticketing.ticketing_hook`.

    Tickets carry the run's correlation id, the tenant and the idempotency key in the fields
    named here.
    """

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
    ) -> Ticket:
        """Open a ticket, or return the one already carrying ``idempotency_key`` (``created=False``).

        :param queue: the queue (RT) or project key (Jira).
        :param subject: the subject (summary).
        :param body: the first message, plain text.
        :param idempotency_key: the key a re-run finds the ticket by.
        :param correlation_id: the run's correlation id, kept on the ticket.
        :param fields: custom field values by name.
        :param requestor: who asked (an email address, or a Jira account id).
        """

    @abc.abstractmethod
    def get_ticket(self, ticket_id: str) -> Ticket:
        """The ticket as it now is.

        :param ticket_id: the ticket.
        """

    def get_tickets(self, ticket_ids: Sequence[str]) -> dict[str, Ticket]:
        """The tickets as they now are, by id (queue and fields included). Here one
        :meth:`get_ticket` per id, so a missing ticket fails the call; an adapter whose API searches
        by ids overrides it and leaves a missing ticket out.

        :param ticket_ids: the tickets.
        """
        return {str(t): self.get_ticket(str(t)) for t in ticket_ids}

    @abc.abstractmethod
    def comment(self, ticket_id: str, body: str, *, idempotency_key: str) -> TicketEntry:
        """Post an internal comment once per ``idempotency_key``.

        :param ticket_id: the ticket.
        :param body: the comment, plain text.
        :param idempotency_key: the key a re-run finds the comment by.
        """

    @abc.abstractmethod
    def reply(self, ticket_id: str, body: str, *, idempotency_key: str) -> TicketEntry:
        """Post a reply the requester sees, once per ``idempotency_key``.

        :param ticket_id: the ticket.
        :param body: the reply, plain text.
        :param idempotency_key: the key a re-run finds the reply by.
        """

    @abc.abstractmethod
    def attach(
        self, ticket_id: str, *, filename: str, content: bytes, content_type: str, idempotency_key: str
    ) -> TicketEntry:
        """Attach a file once per ``idempotency_key``.

        :param ticket_id: the ticket.
        :param filename: the file's name.
        :param content: the file's bytes.
        :param content_type: its MIME type.
        :param idempotency_key: the key a re-run finds the attachment by.
        """

    @abc.abstractmethod
    def set_fields(self, ticket_id: str, fields: Mapping[str, str]) -> Ticket:
        """Set custom fields; return the ticket as it now is.

        :param ticket_id: the ticket.
        :param fields: values by field name.
        """

    @abc.abstractmethod
    def set_status(self, ticket_id: str, status: str) -> Ticket:
        """Move the ticket to ``status`` (a no-op if it is there); return it as it now is.

        :param ticket_id: the ticket.
        :param status: the status to move to.
        """

    def update(
        self, ticket_id: str, *, fields: Mapping[str, str] | None = None, status: str | None = None
    ) -> None:
        """Set ``fields`` and/or ``status``. Here as two calls; an adapter whose API takes both in
        one request overrides it (a bulk change makes it once per ticket, at the bulk rate).

        :param ticket_id: the ticket.
        :param fields: values by field name; none or empty: left as they are.
        :param status: the status to move to; ``None``: left as it is.
        """
        if fields:
            self.set_fields(ticket_id, fields)
        if status:
            self.set_status(ticket_id, status)

    @abc.abstractmethod
    def search_by_correlation(self, correlation_id: str) -> list[Ticket]:
        """The tickets carrying a correlation id.

        :param correlation_id: the run's (or the triggering event's) correlation id.
        """


# The fields the orchestrator keeps on its tickets: set by create_ticket only, never by a caller's
# ``fields`` in a bulk change (a rewritten Tenant hides a ticket from its tenant's triage and
# scope checks; a planted IdempotencyKey makes a future create "find" the wrong ticket).
RESERVED_FIELDS: tuple[str, ...] = (
    TicketingHook.TENANT_FIELD,
    TicketingHook.IDEMPOTENCY_FIELD,
    TicketingHook.CORRELATION_FIELD,
)
