"""Jira Service Management Cloud over the Jira Cloud platform REST API v3 (``/rest/api/3``).

Connection (``jira_default``): host ``<site>.atlassian.net`` (schema empty = https), login = the
account's email, password = an API token; sent as HTTP basic auth, built in :meth:`auth_headers`
and never logged. Extras, besides the base's retry/rate-limit/timeout ones:

``issue_type``
    issue type name for new issues (default ``Task``).
``correlation_field`` / ``tenant_field``
    optional custom field ids (``customfield_10050``) that take the correlation id / tenant when
    the value cannot be a label (see below).
``field_ids``
    optional mapping of the interface's field names to Jira field ids
    (``{"Severity": "customfield_10042"}``); unmapped names are sent as given, so callers may also
    use Jira field ids directly. Values are sent as given (strings suit text fields).

What the orchestrator keeps on an issue, and how it finds it again:

* **Issue**: the idempotency key is a label, and so are ``correlation:<id>`` and ``tenant:<tenant>``
  when the value is a valid label (Jira labels cannot contain whitespace and are at most 255
  characters). A value that is not label-safe goes to the ``correlation_field``/``tenant_field``
  custom field instead; if that extra is not set either, the call fails before sending anything
  rather than create an untraceable ticket. ``create_ticket`` searches
  ``project = "<queue>" AND labels = "<key>"`` (``GET /search/jql``, the enhanced search) first and
  keeps only an issue of its own tenant, so a key planted in another project or tenant is never
  "found";
  ``search_by_correlation`` searches the correlation label, so it needs a label-safe id.
  The enhanced search is eventually consistent: an issue created seconds earlier may not be found
  yet, which only matters if a task is re-run within that window.
* **Comment / reply**: a platform comment carrying the entity property ``orchestrator`` =
  ``{"idempotency_key": ..., "kind": ...}``, found by listing the issue's comments with
  ``expand=properties`` (paged with startAt/maxResults/total) before posting. Visibility in Jira
  Service Management is the documented ``sd.public.comment`` comment property:
  ``{"internal": true}`` for :meth:`comment` (an agent-only note, like RT's comment) and
  ``{"internal": false}`` for :meth:`reply` (shared with the customer, ``jsdPublic``; platform
  comments are public by default). One endpoint and one idempotency mechanism for both, which
  ``/rest/servicedeskapi/request/{key}/comment`` would not give (it takes no properties).
* **Attachment**: stored under the file name ``<key>__<filename>``, looked up in the issue's
  ``attachment`` field before uploading.

Statuses change through workflow transitions: the one whose target status (``to.name``) matches,
case-insensitively; asking for the status the issue already has is a no-op, so re-runs are safe.
"""

from __future__ import annotations

import base64
import dataclasses
import re
from collections.abc import Mapping
from functools import cached_property
from typing import Any
from urllib.parse import quote, urlencode

from include.connectors.base import HttpConnectorHook
from include.connectors.errors import PermanentError
from include.connectors.ticketing.interface import Ticket, TicketEntry, TicketingHook

API = "rest/api/3"
SEARCH_FIELDS = "summary,status,labels,project"
PROPERTY_KEY = "orchestrator"
JSM_VISIBILITY_PROPERTY = "sd.public.comment"
PAGE_SIZE = 100
# Multipart uploads must opt out of Jira's XSRF check; the header's name merely ends in "Token".
XSRF_HEADERS = {"X-Atlassian-Token": "no-check"}  # policy: allow-literal XSRF opt-out, not a secret
MAX_LABEL_LENGTH = 255
CORRELATION_LABEL = "correlation:"
TENANT_LABEL = "tenant:"
# Keys from include.connectors.idempotency start with this prefix; it marks the key label.
IDEMPOTENCY_LABEL_PREFIX = "idem-"


def label_safe(value: str) -> bool:
    """Whether ``value`` is a valid Jira label: non-empty, no whitespace, at most 255 characters."""
    return 0 < len(value) <= MAX_LABEL_LENGTH and not any(ch.isspace() for ch in value)


def jql_string(value: str) -> str:
    """A JQL string literal."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def adf(text: str) -> dict[str, Any]:
    """Plain text as an Atlassian Document Format document: a paragraph per blank-line-separated
    block, line breaks kept as ``hardBreak`` nodes (ADF allows no empty text nodes)."""
    paragraphs = []
    for block in re.split(r"\n\s*\n", text.replace("\r\n", "\n").strip()):
        content: list[dict[str, Any]] = []
        for number, line in enumerate(block.split("\n")):
            if number:
                content.append({"type": "hardBreak"})
            if line:
                content.append({"type": "text", "text": line})
        paragraphs.append({"type": "paragraph", "content": content})
    return {"type": "doc", "version": 1, "content": paragraphs}


def _scalar(value: Any) -> str | None:
    """A custom field value as text: strings and numbers, or a select option's ``value``."""
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, Mapping) and isinstance(value.get("value"), str):
        return str(value["value"])
    return None


def _target(transition: Mapping[str, Any]) -> str:
    """The status a transition leads to."""
    return str((transition.get("to") or {}).get("name", ""))


class JiraServiceManagementHook(HttpConnectorHook, TicketingHook):
    """Ticketing on Jira Service Management Cloud. Connection: site host, email + API token.

    :param conn_id: the Jira connection; default ``jira_default``.
    :param tenant: the tenant the calls are made for (rate-limit bucket, ``tenant:`` label).
    :param bulk: the calls also draw from the connection's bulk rate limit.
    """

    system = "jira"
    default_conn_name = "jira_default"
    hook_name = "Jira Service Management"

    def auth_headers(self) -> dict[str, str]:
        conn = self.connection
        if not conn.login or not conn.password:
            raise PermanentError(
                f"connection {self.conn_id!r} needs login (account email) and password (API token)",
                system=self.system,
                operation="auth",
            )
        credentials = base64.b64encode(f"{conn.login}:{conn.password}".encode()).decode("ascii")
        return {"Authorization": f"Basic {credentials}"}

    @cached_property
    def field_ids(self) -> dict[str, str]:
        return {str(k): str(v) for k, v in dict(self.extras.get("field_ids") or {}).items()}

    @staticmethod
    def _issue_path(ticket_id: str, suffix: str = "") -> str:
        return f"{API}/issue/{quote(str(ticket_id), safe='')}{suffix}"

    # --- reading --------------------------------------------------------------------------
    def _fields(self, values: Mapping[str, Any]) -> dict[str, str]:
        """Custom field values (under the interface's names where mapped) and the orchestrator's labels."""
        names = {field_id: name for name, field_id in self.field_ids.items()}
        fields = {
            names.get(field_id, field_id): text
            for field_id, value in values.items()
            if field_id.startswith("customfield_") and (text := _scalar(value)) is not None
        }
        for extra, name in (
            ("correlation_field", self.CORRELATION_FIELD),
            ("tenant_field", self.TENANT_FIELD),
        ):
            field_id = str(self.extras.get(extra) or "")
            if names.get(field_id, field_id) in fields:
                fields[name] = fields[names.get(field_id, field_id)]
        for label in values.get("labels") or []:
            if label.startswith(CORRELATION_LABEL):
                fields[self.CORRELATION_FIELD] = label.removeprefix(CORRELATION_LABEL)
            elif label.startswith(TENANT_LABEL):
                fields[self.TENANT_FIELD] = label.removeprefix(TENANT_LABEL)
            elif label.startswith(IDEMPOTENCY_LABEL_PREFIX):
                fields[self.IDEMPOTENCY_FIELD] = label
        return fields

    def _ticket(self, raw: Mapping[str, Any], *, created: bool = False) -> Ticket:
        values = raw.get("fields") or {}
        return Ticket(
            id=str(raw["key"]),
            subject=str(values.get("summary") or ""),
            status=str((values.get("status") or {}).get("name", "")),
            queue=str((values.get("project") or {}).get("key", "")),
            fields=self._fields(values),
            created=created,
        )

    def get_ticket(self, ticket_id: str) -> Ticket:
        response = self.request("GET", self._issue_path(ticket_id), operation="get_ticket", expect=(200,))
        return self._ticket(response.json())

    def _search(self, jql: str, operation: str, *, extra_fields: tuple[str, ...] = ()) -> list[Ticket]:
        """All issues matching ``jql`` (enhanced search, paged with ``nextPageToken``)."""
        fields = ",".join((SEARCH_FIELDS, *extra_fields))
        params: dict[str, Any] = {"jql": jql, "fields": fields, "maxResults": PAGE_SIZE}
        tickets: list[Ticket] = []
        while True:
            path = f"{API}/search/jql?{urlencode(params)}"
            body = self.request("GET", path, operation=operation, expect=(200,)).json()
            tickets.extend(self._ticket(issue) for issue in body.get("issues", []))
            if body.get("isLast", True) or not body.get("nextPageToken"):
                return tickets
            params["nextPageToken"] = body["nextPageToken"]

    def search_by_correlation(self, correlation_id: str) -> list[Ticket]:
        if not label_safe(CORRELATION_LABEL + correlation_id):
            raise PermanentError(
                f"correlation id {correlation_id!r} is not a valid label; only label-safe ids are searchable",
                system=self.system,
                operation="search",
            )
        return self._search(f"labels = {jql_string(CORRELATION_LABEL + correlation_id)}", "search")

    def _find_by_key(self, queue: str, idempotency_key: str) -> Ticket | None:
        """The issue of project ``queue`` and this hook's tenant labelled ``idempotency_key``, if any.

        The tenant is compared on the issues found (its label, or ``tenant_field`` when the value
        is not label-safe) rather than in JQL: one query shape for both ways of storing it.
        """
        jql = f"project = {jql_string(queue)} AND labels = {jql_string(idempotency_key)}"
        tenant_field = str(self.extras.get("tenant_field") or "")
        found = self._search(jql, "find_key", extra_fields=(tenant_field,) if tenant_field else ())
        mine = [ticket for ticket in found if ticket.fields.get(self.TENANT_FIELD) == self.tenant]
        return mine[0] if mine else None

    def find_by_key(self, queue: str, idempotency_key: str) -> Ticket | None:
        """The issue of project ``queue`` and this hook's tenant labelled ``idempotency_key``, if any
        (what :meth:`create_ticket` searches before creating).

        :param queue: the project key.
        :param idempotency_key: the key label.
        """
        return self._find_by_key(queue, idempotency_key)

    # --- writing --------------------------------------------------------------------------
    def _traceability(self, idempotency_key: str, correlation_id: str) -> tuple[list[str], dict[str, str]]:
        """The labels and custom field values that make an issue findable and traceable."""
        if not label_safe(idempotency_key):
            raise PermanentError(
                f"idempotency key {idempotency_key!r} is not a valid Jira label",
                system=self.system,
                operation="create_ticket",
            )
        labels, custom = [idempotency_key], {}
        for prefix, extra, value in (
            (CORRELATION_LABEL, "correlation_field", correlation_id),
            (TENANT_LABEL, "tenant_field", self.tenant),
        ):
            if label_safe(prefix + value):
                labels.append(prefix + value)
            elif self.extras.get(extra):
                custom[str(self.extras[extra])] = value
            else:
                raise PermanentError(
                    f"{prefix.rstrip(':')} {value!r} is not a valid Jira label and no {extra} is configured",
                    system=self.system,
                    operation="create_ticket",
                )
        return labels, custom

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
        labels, custom = self._traceability(idempotency_key, correlation_id)
        if requestor and "@" in requestor:
            # The reporter field takes an Atlassian account id, not an email address.
            body = f"{body}\n\nRequested by: {requestor}"
        payload: dict[str, Any] = {
            **{self.field_ids.get(name, name): value for name, value in (fields or {}).items()},
            **custom,
            "project": {"key": queue},
            "issuetype": {"name": str(self.extras.get("issue_type") or "Task")},
            "summary": subject,
            "description": adf(body),
            "labels": labels,
        }
        if requestor and "@" not in requestor:
            payload["reporter"] = {"id": requestor}

        def create() -> Ticket:
            response = self.request(
                "POST",
                f"{API}/issue",
                operation="create_ticket",
                json={"fields": payload},
                expect=(201,),
                retry=False,
            )
            key = str(response.json()["key"])
            self.log.info("created issue %s in project %s (correlation %s)", key, queue, correlation_id)
            return dataclasses.replace(self.get_ticket(key), created=True)

        return self.create_once(
            lambda: self._find_by_key(queue, idempotency_key),
            create,
            operation="create_ticket",
            key=idempotency_key,  # shared by the runs of one alert or request: one ticket
        )

    def _comment_with_key(self, ticket_id: str, idempotency_key: str) -> str | None:
        start = 0
        while True:
            query = urlencode({"expand": "properties", "startAt": start, "maxResults": PAGE_SIZE})
            path = self._issue_path(ticket_id, f"/comment?{query}")
            page = self.request("GET", path, operation="list_comments", expect=(200,)).json()
            comments = page.get("comments", [])
            for comment in comments:
                for prop in comment.get("properties") or []:
                    value = prop.get("value") if prop.get("key") == PROPERTY_KEY else None
                    if isinstance(value, Mapping) and value.get("idempotency_key") == idempotency_key:
                        return str(comment["id"])
            start = int(page.get("startAt", start)) + len(comments)
            if not comments or start >= int(page.get("total", 0)):
                return None

    def _post_comment(
        self, ticket_id: str, body: str, *, idempotency_key: str, kind: str, internal: bool
    ) -> TicketEntry:
        payload = {
            "body": adf(body),
            "properties": [
                {"key": PROPERTY_KEY, "value": {"idempotency_key": idempotency_key, "kind": kind}},
                {"key": JSM_VISIBILITY_PROPERTY, "value": {"internal": internal}},
            ],
        }
        path = self._issue_path(ticket_id, "/comment")

        def find() -> TicketEntry | None:
            existing = self._comment_with_key(ticket_id, idempotency_key)
            return None if existing is None else TicketEntry(ticket_id, existing, created=False)

        def create() -> TicketEntry:
            response = self.request("POST", path, operation=kind, json=payload, expect=(201,), retry=False)
            return TicketEntry(ticket_id=ticket_id, entry_id=str(response.json()["id"]), created=True)

        # Keyed: runs of one alert share the key; the lock keeps two of them from both posting.
        return self.create_once(find, create, operation=kind, key=idempotency_key)

    def comment(self, ticket_id: str, body: str, *, idempotency_key: str) -> TicketEntry:
        return self._post_comment(
            ticket_id, body, idempotency_key=idempotency_key, kind="comment", internal=True
        )

    def reply(self, ticket_id: str, body: str, *, idempotency_key: str) -> TicketEntry:
        return self._post_comment(
            ticket_id, body, idempotency_key=idempotency_key, kind="reply", internal=False
        )

    def attach(
        self, ticket_id: str, *, filename: str, content: bytes, content_type: str, idempotency_key: str
    ) -> TicketEntry:
        stored_name = f"{idempotency_key}__{filename}"

        def find() -> TicketEntry | None:
            path = self._issue_path(ticket_id, "?fields=attachment")
            issue = self.request("GET", path, operation="list_attachments", expect=(200,)).json()
            for attachment in (issue.get("fields") or {}).get("attachment") or []:
                if attachment.get("filename") == stored_name:
                    return TicketEntry(ticket_id=ticket_id, entry_id=str(attachment["id"]), created=False)
            return None

        def create() -> TicketEntry:
            response = self.request(
                "POST",
                self._issue_path(ticket_id, "/attachments"),
                operation="attach",
                files={"file": (stored_name, content, content_type)},
                headers=XSRF_HEADERS,
                expect=(200,),
                retry=False,
            )
            self.log.info("attached %s to %s", stored_name, ticket_id)
            return TicketEntry(ticket_id=ticket_id, entry_id=str(response.json()[0]["id"]), created=True)

        return self.create_once(find, create, operation="attach", key=idempotency_key)

    def set_fields(self, ticket_id: str, fields: Mapping[str, str]) -> Ticket:
        payload = {"fields": {self.field_ids.get(name, name): value for name, value in fields.items()}}
        self.request("PUT", self._issue_path(ticket_id), operation="set_fields", json=payload, expect=(204,))
        return self.get_ticket(ticket_id)

    def set_status(self, ticket_id: str, status: str) -> Ticket:
        ticket = self.get_ticket(ticket_id)
        if ticket.status.casefold() == status.casefold():
            return ticket
        path = self._issue_path(ticket_id, "/transitions")
        transitions = self.request("GET", path, operation="transitions", expect=(200,)).json()
        available = transitions.get("transitions", [])
        chosen = next((t for t in available if _target(t).casefold() == status.casefold()), None)
        if chosen is None:
            reachable = ", ".join(f"{_target(t)!r} (via {t.get('name')!r})" for t in available)
            raise PermanentError(
                f"{ticket_id} is {ticket.status!r}; no transition to {status!r}; "
                f"available: {reachable or 'none'}",
                system=self.system,
                operation="set_status",
            )
        self.request(
            "POST", path, operation="set_status", json={"transition": {"id": chosen["id"]}}, expect=(204,)
        )
        self.log.info("%s: %s -> %s (transition %s)", ticket_id, ticket.status, status, chosen.get("name"))
        return self.get_ticket(ticket_id)
