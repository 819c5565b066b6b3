"""Request Tracker 5 over its REST 2 API (``/REST/2.0``).

Idempotency: a ticket carries its key in the ``IdempotencyKey`` custom field and is found with
TicketSQL before creating, in the same queue and tenant only (a key planted on a ticket of another
queue or tenant is never "found"); a comment, reply or attachment carries its key in the message
subject, which RT stores as the transaction's ``Data``, and is found in the ticket history before
posting.

Shares of the limit: a hook made with ``share="triage"`` (support triage, :data:`TRIAGE_SHARE`)
takes a permit from the connector's bucket (RT's total), from the share's own bucket
(``<share>_rate_limit_per_second`` / ``<share>_rate_limit_burst`` in the connection extras) and, when
the connection sets a per-tenant limit, from the share's per-tenant bucket instead of the tenant's:
a flood of customer mail is capped at the share's rate and never spends the tenant bucket that SOC
work of the same tenant draws from. Without the share's extras the hook uses the plain buckets.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

from include.connectors.base import HttpConnectorHook
from include.connectors.ticketing.interface import Ticket, TicketEntry, TicketingHook

API = "REST/2.0"
ENTRY_TYPES = {"comment": "Comment", "correspond": "Correspond"}
TRIAGE_SHARE = "triage"
# Tickets read per TicketSQL search in get_tickets (the query string stays well under 8 KB), and
# REST 2's largest page.
IDS_PER_SEARCH = 50
MAX_PER_PAGE = 100


def _quote_sql(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _plain_text(attachments: list[dict[str, Any]]) -> str:
    """The first text/plain content among a message's attachments, or ``""``."""
    for item in attachments:
        if str(item.get("ContentType", "")).startswith("text/plain") and item.get("Content"):
            return str(item["Content"])
    return ""


class RequestTrackerHook(HttpConnectorHook, TicketingHook):
    """Ticketing on Request Tracker 5. Connection: host/port/schema, token in the password.

    :param conn_id: the RT connection; default ``rt_default``.
    :param tenant: the tenant the calls are made for (rate-limit bucket, ``Tenant`` field).
    :param bulk: the calls also draw from the connection's bulk rate limit.
    :param share: a named share of the limit (``triage``): its own buckets, see the module's doc
        and :class:`~include.connectors.base.ConnectorHook`.
    """

    system = "request_tracker"
    default_conn_name = "rt_default"
    hook_name = "Request Tracker"

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"token {self.connection.password}"}

    # --- reading --------------------------------------------------------------------------
    @staticmethod
    def _ticket(raw: Mapping[str, Any], *, created: bool = False) -> Ticket:
        fields = {
            cf["name"]: (cf.get("values") or [""])[0] for cf in raw.get("CustomFields", []) if "name" in cf
        }
        queue = raw.get("Queue")
        queue_name = queue.get("Name") or queue.get("id") if isinstance(queue, Mapping) else queue
        return Ticket(
            id=str(raw["id"]),
            subject=raw.get("Subject", ""),
            status=raw.get("Status", ""),
            queue=str(queue_name or ""),
            fields=fields,
            created=created,
        )

    def get_ticket(self, ticket_id: str) -> Ticket:
        response = self.request("GET", f"{API}/ticket/{ticket_id}", operation="get_ticket", expect=(200,))
        return self._ticket(response.json())

    def _search(self, query: str, operation: str) -> list[Ticket]:
        # per_page: REST 2 answers 20 items a page by default, 100 at most (IDS_PER_SEARCH fits).
        path = (
            f"{API}/tickets?query={quote(query)}&per_page={MAX_PER_PAGE}"
            "&fields=Subject,Status,Queue,CustomFields&fields[Queue]=Name"
        )
        response = self.request("GET", path, operation=operation, expect=(200,))
        return [self._ticket(item) for item in response.json().get("items", [])]

    def search_by_correlation(self, correlation_id: str) -> list[Ticket]:
        return self._search(f"'CF.{{{self.CORRELATION_FIELD}}}' = {_quote_sql(correlation_id)}", "search")

    def get_tickets(self, ticket_ids: Sequence[str]) -> dict[str, Ticket]:
        """The tickets among ``ticket_ids`` that exist, by id: one TicketSQL search per
        :data:`IDS_PER_SEARCH` ids, each ticket with its queue's name and custom fields.

        :param ticket_ids: ticket numbers.
        :raises ValueError: for an id that is not a number (before any request).
        """
        ids = [str(t) for t in ticket_ids]
        bad = [t for t in ids if not t.isdigit()]
        if bad:
            raise ValueError(f"ticket ids must be numbers: {', '.join(map(repr, bad))}")
        found: dict[str, Ticket] = {}
        for start in range(0, len(ids), IDS_PER_SEARCH):
            chunk = ids[start : start + IDS_PER_SEARCH]
            query = " OR ".join(f"id = {int(t)}" for t in chunk)
            found.update((ticket.id, ticket) for ticket in self._search(query, "get_tickets"))
        return found

    def _find_by_key(self, queue: str, idempotency_key: str) -> Ticket | None:
        """The ticket of ``queue`` and this hook's tenant carrying ``idempotency_key``, if any."""
        query = (
            f"Queue = {_quote_sql(queue)} AND 'CF.{{{self.TENANT_FIELD}}}' = {_quote_sql(self.tenant)} "
            f"AND 'CF.{{{self.IDEMPOTENCY_FIELD}}}' = {_quote_sql(idempotency_key)}"
        )
        found = self._search(query, "find_key")
        return found[0] if found else None

    # --- writing --------------------------------------------------------------------------
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
        custom_fields = {
            **(fields or {}),
            self.CORRELATION_FIELD: correlation_id,
            self.TENANT_FIELD: self.tenant,
            self.IDEMPOTENCY_FIELD: idempotency_key,
        }
        payload: dict[str, Any] = {
            "Queue": queue,
            "Subject": subject,
            "Content": body,
            "ContentType": "text/plain",
            "CustomFields": custom_fields,
        }
        if requestor:
            payload["Requestor"] = requestor

        def create() -> Ticket:
            response = self.request(
                "POST", f"{API}/ticket", operation="create_ticket", json=payload, expect=(201,), retry=False
            )
            ticket_id = str(response.json()["id"])
            self.log.info("created ticket %s in queue %s (correlation %s)", ticket_id, queue, correlation_id)
            return Ticket(ticket_id, subject, "new", queue, dict(custom_fields), created=True)

        return self.create_once(
            lambda: self._find_by_key(queue, idempotency_key),
            create,
            operation="create_ticket",
            key=idempotency_key,  # shared by the runs of one alert or request: one ticket
        )

    def _entry_with_key(self, ticket_id: str, idempotency_key: str, kind: str) -> str | None:
        path = f"{API}/ticket/{ticket_id}/history?fields=Type,Data&per_page=100"
        page = 1
        while True:
            body = self.request("GET", f"{path}&page={page}", operation="history", expect=(200,)).json()
            for item in body.get("items", []):
                if item.get("Type") == ENTRY_TYPES[kind] and idempotency_key in (item.get("Data") or ""):
                    return str(item["id"])
            if page >= int(body.get("pages") or 1):
                return None
            page += 1

    def _post_entry(
        self, ticket_id: str, kind: str, payload: dict[str, Any], idempotency_key: str
    ) -> TicketEntry:
        def find() -> TicketEntry | None:
            entry_id = self._entry_with_key(ticket_id, idempotency_key, kind)
            return None if entry_id is None else TicketEntry(ticket_id, entry_id, created=False)

        def create() -> TicketEntry:
            body = {**payload, "Subject": f"[{idempotency_key}]"}
            path = f"{API}/ticket/{ticket_id}/{kind}"
            self.request("POST", path, operation=kind, json=body, expect=(201,), retry=False)
            entry_id = self._entry_with_key(ticket_id, idempotency_key, kind)
            return TicketEntry(ticket_id=ticket_id, entry_id=entry_id or "", created=True)

        # Keyed: the runs of one alert share the key, and the lock keeps two of them from both
        # finding nothing in the history and both posting.
        return self.create_once(find, create, operation=kind, key=idempotency_key)

    def comment(self, ticket_id: str, body: str, *, idempotency_key: str) -> TicketEntry:
        payload = {"Content": body, "ContentType": "text/plain"}
        return self._post_entry(ticket_id, "comment", payload, idempotency_key)

    def reply(self, ticket_id: str, body: str, *, idempotency_key: str) -> TicketEntry:
        payload = {"Content": body, "ContentType": "text/plain"}
        return self._post_entry(ticket_id, "correspond", payload, idempotency_key)

    def attach(
        self, ticket_id: str, *, filename: str, content: bytes, content_type: str, idempotency_key: str
    ) -> TicketEntry:
        payload = {
            "Content": f"Evidence attached: {filename}",
            "ContentType": "text/plain",
            "Attachments": [
                {
                    "FileName": filename,
                    "FileType": content_type,
                    "FileContent": base64.b64encode(content).decode(),
                }
            ],
        }
        return self._post_entry(ticket_id, "comment", payload, idempotency_key)

    def set_fields(self, ticket_id: str, fields: Mapping[str, str]) -> Ticket:
        self.request(
            "PUT", f"{API}/ticket/{ticket_id}", operation="set_fields", json={"CustomFields": dict(fields)}
        )
        return self.get_ticket(ticket_id)

    def update_core(self, ticket_id: str, values: Mapping[str, Any]) -> None:
        """Set core fields (``Priority``, ``Status``, ``Owner``) and custom fields in one request.

        :param ticket_id: the ticket.
        :param values: REST 2 ticket attributes (``CustomFields`` a mapping of its own).
        """
        self.request("PUT", f"{API}/ticket/{ticket_id}", operation="update", json=dict(values))

    def update(
        self, ticket_id: str, *, fields: Mapping[str, str] | None = None, status: str | None = None
    ) -> None:
        """One PUT for both (REST 2 takes ``CustomFields`` and ``Status`` together), no read-back."""
        values: dict[str, Any] = {}
        if fields:
            values["CustomFields"] = dict(fields)
        if status:
            values["Status"] = status
        if values:
            self.update_core(ticket_id, values)

    def new_tickets(self, queue: str, *, after_id: int = 0, limit: int = 50) -> list[dict[str, Any]]:
        """Tickets still ``new`` in ``queue`` that people opened (the orchestrator's own tickets
        carry an IdempotencyKey and are skipped), oldest first: what support triage picks up.

        :param queue: the queue to look in.
        :param after_id: only tickets with a higher id (the caller's cursor).
        :param limit: at most this many.
        """
        query = (
            f"Queue = {_quote_sql(queue)} AND Status = 'new' AND id > {int(after_id)} "
            f"AND 'CF.{{{self.IDEMPOTENCY_FIELD}}}' IS NULL"
        )
        path = (
            f"{API}/tickets?query={quote(query)}&orderby=id&order=ASC&per_page={int(limit)}"
            "&fields=Subject,Requestor,Created"
        )
        response = self.request("GET", path, operation="poll_new", expect=(200,))
        return list(response.json().get("items", []))

    def ticket_detail(self, ticket_id: str) -> dict[str, Any]:
        """Subject, requestor e-mail and the first message's text (what triage classifies).

        Two requests, the ticket and its attachments (REST 2 lists a ticket's attachments in one
        call): triage runs on the fast path, and each request is ~30 ms plus a rate-limit permit.

        :param ticket_id: the ticket.
        """
        ticket = self.request(
            "GET", f"{API}/ticket/{ticket_id}", operation="get_ticket", expect=(200,)
        ).json()
        requestors = ticket.get("Requestor") or []
        requestor = requestors[0].get("id") if requestors and isinstance(requestors[0], Mapping) else None
        path = (
            f"{API}/ticket/{ticket_id}/attachments?fields=TransactionId,ContentType,Content"
            "&orderby=id&order=ASC&per_page=20"
        )
        items = self.request("GET", path, operation="attachments", expect=(200,)).json().get("items", [])
        first = min(
            (int(i["TransactionId"]) for i in items if str(i.get("TransactionId", "")).isdigit()),
            default=None,
        )
        return {
            "id": str(ticket["id"]),
            "subject": ticket.get("Subject", ""),
            "requestor": requestor,
            "body": _plain_text([i for i in items if str(i.get("TransactionId")) == str(first)]),
        }

    def _text_of(self, transaction_id: str) -> str:
        """The text/plain content of a transaction (as stored; measured: RT 5 returns text as is)."""
        path = f"{API}/transaction/{transaction_id}/attachments?fields=ContentType,Content&per_page=20"
        return _plain_text(
            self.request("GET", path, operation="attachments", expect=(200,)).json().get("items", [])
        )

    def set_status(self, ticket_id: str, status: str) -> Ticket:
        self.request("PUT", f"{API}/ticket/{ticket_id}", operation="set_status", json={"Status": status})
        return self.get_ticket(ticket_id)
