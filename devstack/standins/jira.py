"""An in-memory stand-in for Jira Service Management Cloud on 127.0.0.1, for the adapter's tests.

The real SaaS is unreachable from here, so this server implements, in memory, exactly the calls
the adapter makes, with the request and response shapes and status codes of Atlassian's
documented contract: the Jira Cloud platform REST API v3 and the "Rate limiting" guide for Jira
Cloud.

==========================================================  =======================================
``POST /rest/api/3/issue``                                  create issue: 201 ``{"id","key","self"}``
``GET  /rest/api/3/issue/{issueIdOrKey}``                   get issue (``fields`` filter): 200
``PUT  /rest/api/3/issue/{issueIdOrKey}``                   edit issue ``{"fields": {...}}``: 204
``GET  /rest/api/3/search/jql``                             enhanced JQL search (``jql``, ``fields``,
                                                            ``maxResults``, ``nextPageToken``): 200
                                                            ``{"issues", "isLast", "nextPageToken"?}``
``GET  /rest/api/3/issue/{issueIdOrKey}/comment``           page of comments: ``startAt``,
                                                            ``maxResults``, ``total``, ``comments``;
                                                            ``expand=properties`` adds properties
``POST /rest/api/3/issue/{issueIdOrKey}/comment``           add comment (ADF body, entity
                                                            ``properties``): 201 comment
``POST /rest/api/3/issue/{issueIdOrKey}/attachments``       multipart part ``file``; needs header
                                                            ``X-Atlassian-Token: no-check`` (403
                                                            "XSRF check failed" otherwise): 200 list
``GET|POST /rest/api/3/issue/{issueIdOrKey}/transitions``   available transitions: 200 /
                                                            ``{"transition": {"id"}}``: 204
==========================================================  =======================================

Built on :class:`devstack.standins.base.HttpStandIn` (127.0.0.1, a free port per instance, in-process).

- Auth: HTTP basic with the account email and API token (a fresh token per instance); anything else
  is 401 "Client must be authenticated to access this resource.".
- Shapes: JSON ``application/json;charset=UTF-8``; descriptions and comment bodies must be Atlassian
  Document Format; search returns only issue ids unless ``fields`` asks for more; comment property
  ``sd.public.comment`` ``{"internal": b}`` makes ``jsdPublic`` = ``not b`` (platform comments are
  public by default); labels cannot contain spaces; a field not on the screen cannot be set.
- Errors: Jira's ErrorCollection ``{"errorMessages": [...], "errors": {field: message}}``; an
  unknown issue is 404 "Issue does not exist or you do not have permission to see it."; an unknown
  URL or method is the servlet's ``{"message", "status-code"}`` 404/405.
- Throttling: switched on with :meth:`JiraStandIn.throttle`, the next requests get 429 with
  ``Retry-After`` (seconds), ``X-RateLimit-Limit``, ``X-RateLimit-Remaining``, ``X-RateLimit-Reset``
  (ISO 8601 timestamp, request time + Retry-After) and ``RateLimit-Reason`` (``jira-burst-based``,
  ``jira-quota-global-based``, ``jira-quota-tenant-based`` or ``jira-per-issue-on-write``).
- Faults for the tests: :meth:`JiraStandIn.lose_responses` (POST carried out, then 503).
- Sites: every customer has a Jira Cloud site of its own. ``accounts`` adds accounts (email, API
  token, the project keys it may browse), one per customer site; each sees and writes only its own
  projects (another project's issue is 404, a create there 400 "valid project is required", a
  search never returns it). The ``email``/``api_token`` account sees every project (the tests').
- Inspection (not Jira's; loopback only, like the other stand-ins' ``/_records``):
  ``GET /_issues`` lists every issue (key, project, labels, status, comment and attachment
  counts, attachment file names), never a body or a credential; requests are recorded with the
  account's email that made them (:class:`JiraRequest`).
- As a process of the local stack (service ``jira-standin``, :func:`port`): :func:`main` reads
  the sites (accounts, tokens, projects) from a 0600 file, never from the command line.

Not shown:

- workflows other than one (To Do -> In Progress -> Done, and back);
- JQL beyond ``labels = "x"`` and ``project = X AND labels = "x"`` (anything else is 400, like a
  query Jira cannot parse);
- eventual consistency (Jira's enhanced search lags; this one is immediately consistent);
- permissions beyond "an account browses and writes its site's projects" (no project roles,
  no issue security levels), OAuth 2.0, Connect/Forge apps; one host for every site (a real
  site is ``<name>.atlassian.net``);
- 429s Jira sends on its own (only when :meth:`JiraStandIn.throttle` says so).

Every request is recorded (method, path, query, status; no credentials, no bodies).
"""

from __future__ import annotations

import base64
import binascii
import email.parser
import email.policy
import itertools
import json
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from devstack.standins.base import (
    HOST,
    HttpStandIn,
    RecordedRequest,
    Request,
    Response,
    Route,
    StandInError,
    route,
    serve_main,
    service_argv,
    write_config_file,
)

__all__ = [
    "HOST",
    "JiraError",
    "JiraRequest",
    "JiraStandIn",
    "RecordedRequest",
    "Response",
    "adf_text",
    "is_adf",
]

API = "/rest/api/3"
NOT_FOUND = "Issue does not exist or you do not have permission to see it."
NOT_AUTHENTICATED = "Client must be authenticated to access this resource."
UNBOUNDED = "Unbounded JQL queries are not allowed here. Please add a search restriction to your query."
NOT_ADF = "Operation value must be an Atlassian Document (see the Atlassian Document Format)"
RATE_LIMIT_REASONS = frozenset(
    {"jira-burst-based", "jira-quota-global-based", "jira-quota-tenant-based", "jira-per-issue-on-write"}
)

#: status name -> (id, statusCategory key, statusCategory name)
STATUSES = {
    "To Do": ("10000", "new", "To Do"),
    "In Progress": ("3", "indeterminate", "In Progress"),
    "Done": ("10001", "done", "Done"),
}
#: status -> [(transition id, transition name, target status)]
WORKFLOW = {
    "To Do": [("11", "Start progress", "In Progress")],
    "In Progress": [("21", "Stop progress", "To Do"), ("31", "Resolve", "Done")],
    "Done": [("41", "Reopen", "To Do")],
}
INITIAL_STATUS = "To Do"
SYSTEM_FIELDS = ("summary", "description", "labels", "project", "issuetype", "reporter")

_JQL = re.compile(
    r'^\s*(?:project\s*=\s*(?P<q>"?)(?P<project>[A-Za-z][A-Za-z0-9_]*)(?P=q)\s+AND\s+)?'
    r'labels\s*=\s*"(?P<label>(?:[^"\\]|\\.)*)"\s*$',
    re.IGNORECASE,
)


class JiraError(StandInError):
    """Answer with a Jira ErrorCollection."""

    def __init__(
        self, status: int, messages: list[str] | None = None, errors: dict[str, str] | None = None
    ) -> None:
        super().__init__(status, Response(status, {"errorMessages": messages or [], "errors": errors or {}}))


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000+0000")


def is_adf(value: Any) -> bool:
    return (
        isinstance(value, Mapping) and value.get("type") == "doc" and isinstance(value.get("content"), list)
    )


def adf_text(doc: Mapping[str, Any]) -> str:
    """The plain text of an ADF document (paragraphs separated by blank lines)."""

    def inline(node: Mapping[str, Any]) -> str:
        if node.get("type") == "hardBreak":
            return "\n"
        return str(node.get("text", "")) + "".join(inline(n) for n in node.get("content", []))

    return "\n\n".join(inline(block) for block in doc.get("content", []))


@dataclass(frozen=True)
class JiraRequest(RecordedRequest):
    """A recorded request and the account (email) it authenticated as; ``""`` if none."""

    account: str = ""


class JiraStandIn(HttpStandIn[JiraRequest]):
    """The service: state, contract checks and one :meth:`handle` per request; :meth:`start` serves it."""

    server_version = "JiraStandIn/1.0"
    json_content_type = "application/json;charset=UTF-8"
    text_content_type = "text/plain;charset=UTF-8"

    def __init__(
        self,
        *,
        email: str = "orchestrator@example.com",
        api_token: str | None = None,
        projects: Mapping[str, str] | None = None,
        issue_types: tuple[str, ...] = ("Task", "Incident", "Service Request"),
        custom_fields: tuple[str, ...] = ("customfield_10050", "customfield_10051", "customfield_10052"),
        page_size: int = 50,
        accounts: Mapping[str, Mapping[str, Any]] | None = None,
        port: int = 0,
        max_recorded: int | None = None,
    ) -> None:
        super().__init__(port=port, max_recorded=max_recorded)
        self.email = email
        self.api_token = api_token or "ATATT3x" + secrets.token_urlsafe(24)  # a fresh secret per instance
        self.projects = dict(projects or {"SOC": "Security Operations", "HR": "People"})
        # email -> (API token, the project keys it may browse); the main account browses all.
        self.accounts: dict[str, tuple[str, frozenset[str]]] = {
            str(mail): (str(spec["api_token"]), frozenset(spec["projects"]))
            for mail, spec in (accounts or {}).items()
        }
        for mail, (_, keys) in self.accounts.items():
            unknown = sorted(keys - set(self.projects))
            assert not unknown, f"account {mail}: unknown project(s) {unknown}"
        self.issue_types = issue_types
        self.custom_fields = custom_fields
        self.page_size = page_size
        self.account_id = "712020:0f7e8d7c-standin-orchestrator"
        self.issues: dict[str, dict[str, Any]] = {}  # key -> issue (fields, comments, attachments)
        self._ids = itertools.count(10001)
        self._keys: dict[str, itertools.count[int]] = {}
        self._throttle: dict[str, Any] = {"times": 0}
        self._lose_responses = 0

    # --- test controls --------------------------------------------------------------------
    def throttle(
        self, times: int = 1, *, retry_after: int = 1, reason: str = "jira-burst-based", limit: int = 100
    ) -> None:
        """Answer the next ``times`` authenticated requests with 429 (``times=0`` switches it off)."""
        assert reason in RATE_LIMIT_REASONS, reason
        with self._lock:
            self._throttle = {"times": times, "retry_after": retry_after, "reason": reason, "limit": limit}

    def lose_responses(self, times: int = 1) -> None:
        """Carry out the next ``times`` POSTs, then answer 503 as if the response had been lost."""
        with self._lock:
            self._lose_responses = times

    def requests_to(self, method: str, path_suffix: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == method and r.path.endswith(path_suffix)]

    def issue(self, key: str) -> dict[str, Any]:
        return self.issues[key]

    # --- request handling -----------------------------------------------------------------
    def error_body(self, status: int, message: str) -> dict[str, Any]:
        return {"errorMessages": [message], "errors": {}}

    def record(self, request: Request, response: Response) -> JiraRequest:
        base = RecordedRequest.of(request, response)
        account = self._account(request.header("authorization")) or ("", frozenset())
        return JiraRequest(base.method, base.path, base.query, base.status, base.at, base.lost, account[0])

    def issue_summaries(self) -> list[dict[str, Any]]:
        """What ``GET /_issues`` shows: every issue, no bodies, no credentials."""
        with self._lock:
            return [
                {
                    "key": issue["key"],
                    "project": issue["fields"]["project"]["key"],
                    "labels": list(issue["fields"].get("labels") or []),
                    "status": issue["status"],
                    "comments": len(issue["comments"]),
                    "attachments": [a["filename"] for a in issue["attachments"]],
                }
                for issue in self.issues.values()
            ]

    def handle(self, request: Request) -> Response:
        if request.path == "/_issues" and request.method == "GET":
            return Response(200, {"issues": self.issue_summaries()})
        headers = {name.lower(): value for name, value in request.headers.items()}
        response = self._dispatch(request.method, request.path, request.query, headers, request.body)
        with self._lock:
            if request.method == "POST" and self._lose_responses > 0 and response.status < 300:
                self._lose_responses -= 1
                response = Response(503, self.error_body(503, "upstream timed out"))
        return response

    def _dispatch(
        self, method: str, path: str, query: dict[str, list[str]], headers: Mapping[str, str], body: bytes
    ) -> Response:
        account = self._account(headers.get("authorization", ""))
        if account is None:
            raise JiraError(401, [NOT_AUTHENTICATED])
        if (throttled := self._throttled()) is not None:
            return throttled
        match route(self._routes(), method, path):
            case (action, groups):
                with self._lock:
                    return action(*groups, query=query, headers=headers, body=body, visible=account[1])
            case 405:
                return Response(405, {"message": f"Method {method} is not allowed", "status-code": 405})
            case _:
                return Response(404, {"message": f"null for uri: {self.base_url}{path}", "status-code": 404})

    def _routes(self) -> list[Route]:
        issue = API + r"/issue/([^/]+)"
        return [
            ("POST", API + "/issue", self._create_issue),
            ("GET", API + "/search/jql", self._search),
            ("GET", issue, self._get_issue),
            ("PUT", issue, self._edit_issue),
            ("GET", issue + "/comment", self._list_comments),
            ("POST", issue + "/comment", self._add_comment),
            ("POST", issue + "/attachments", self._add_attachment),
            ("GET", issue + "/transitions", self._list_transitions),
            ("POST", issue + "/transitions", self._do_transition),
        ]

    def _account(self, header: str) -> tuple[str, frozenset[str]] | None:
        """The account a basic-auth header authenticates and the projects it browses; None if none."""
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            decoded = base64.b64decode(encoded, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        mail, _, token = decoded.partition(":")
        if decoded == f"{self.email}:{self.api_token}":
            return mail, frozenset(self.projects)
        known = self.accounts.get(mail)
        if known is not None and secrets.compare_digest(known[0], token):
            return mail, known[1]
        return None

    def _throttled(self) -> Response | None:
        with self._lock:
            spec = self._throttle
            if spec["times"] <= 0:
                return None
            spec["times"] -= 1
        reset = datetime.now(UTC) + timedelta(seconds=spec["retry_after"])
        headers = {
            "X-RateLimit-Limit": str(spec["limit"]),
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": reset.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "RateLimit-Reason": spec["reason"],
        }
        return self.throttled(spec["retry_after"], "Rate limit exceeded.", headers=headers)

    # --- helpers ------------------------------------------------------------------------------
    def _json(self, body: bytes) -> dict[str, Any]:
        try:
            value = json.loads(body or b"null")
        except ValueError:
            raise JiraError(400, ["Unexpected character in the request body: not valid JSON."]) from None
        if not isinstance(value, dict):
            raise JiraError(400, ["The request body must be a JSON object."])
        return value

    def _find(self, id_or_key: str, visible: frozenset[str] | None = None) -> dict[str, Any]:
        for issue in self.issues.values():
            if id_or_key in (issue["key"], issue["id"]):
                if visible is not None and issue["fields"]["project"]["key"] not in visible:
                    break  # another site's issue: as unknown as a missing one
                return issue
        raise JiraError(404, [NOT_FOUND])

    def _user(self) -> dict[str, Any]:
        return {"accountId": self.account_id, "emailAddress": self.email, "displayName": "Orchestrator"}

    def _check_fields(self, fields: Mapping[str, Any], *, creating: bool) -> dict[str, str]:
        """Field errors as Jira words them (an empty dict when all is well)."""
        errors: dict[str, str] = {}
        settable = (
            set(SYSTEM_FIELDS) | set(self.custom_fields) | ({"project", "issuetype"} if creating else set())
        )
        for name in fields:
            if name not in settable:
                errors[name] = (
                    f"Field '{name}' cannot be set. It is not on the appropriate screen, or unknown."
                )
        for label in fields.get("labels") or []:
            if not isinstance(label, str) or re.search(r"\s", label):
                errors["labels"] = f"The label '{label}' contains spaces which is invalid."
            elif len(label) > 255:
                errors["labels"] = (
                    "The label exceeds the maximum length for a single label of 255 characters."
                )
        if (
            "description" in fields
            and fields["description"] is not None
            and not is_adf(fields["description"])
        ):
            errors["description"] = NOT_ADF
        if "summary" in fields and not str(fields.get("summary") or "").strip():
            errors["summary"] = "You must specify a summary of the issue."
        return errors

    def _issue_json(self, issue: Mapping[str, Any], wanted: list[str] | None) -> dict[str, Any]:
        status_id, category, category_name = STATUSES[issue["status"]]
        project = issue["fields"]["project"]
        fields: dict[str, Any] = {
            **{name: None for name in self.custom_fields},
            **issue["fields"],
            "status": {
                "name": issue["status"],
                "id": status_id,
                "statusCategory": {"key": category, "name": category_name},
            },
            "project": {"id": project["id"], "key": project["key"], "name": project["name"]},
            "attachment": [self._attachment_json(a) for a in issue["attachments"]],
            "comment": {
                "comments": [self._comment_json(c, expand=False) for c in issue["comments"]],
                "startAt": 0,
                "maxResults": len(issue["comments"]),
                "total": len(issue["comments"]),
            },
            "created": issue["created"],
            "updated": issue["updated"],
        }
        if wanted is not None and not {"*all", "*navigable"} & set(wanted):
            fields = {name: value for name, value in fields.items() if name in wanted}
        return {
            "expand": "renderedFields,names,schema,operations,editmeta,changelog,versionedRepresentations",
            "id": issue["id"],
            "self": f"{self.base_url}{API}/issue/{issue['id']}",
            "key": issue["key"],
            "fields": fields,
        }

    @staticmethod
    def _wanted(query: Mapping[str, list[str]]) -> list[str] | None:
        if "fields" not in query:
            return None
        return [name.strip() for value in query["fields"] for name in value.split(",") if name.strip()]

    # --- issues -----------------------------------------------------------------------------
    def _create_issue(self, *, body: bytes, visible: frozenset[str], **_: Any) -> Response:
        fields = dict(self._json(body).get("fields") or {})
        errors = self._check_fields(fields, creating=True)
        project_key = str((fields.get("project") or {}).get("key", ""))
        if project_key not in self.projects or project_key not in visible:
            errors["project"] = "valid project is required"
        if str((fields.get("issuetype") or {}).get("name", "")) not in self.issue_types:
            errors["issuetype"] = "Specify a valid issue type"
        if not str(fields.get("summary") or "").strip():
            errors["summary"] = "You must specify a summary of the issue."
        if errors:
            raise JiraError(400, [], errors)
        issue_id = str(next(self._ids))
        key = f"{project_key}-{next(self._keys.setdefault(project_key, itertools.count(1)))}"
        fields["project"] = {"id": str(10000 + list(self.projects).index(project_key)), "key": project_key}
        fields["project"]["name"] = self.projects[project_key]
        fields["issuetype"] = {"name": fields["issuetype"]["name"], "subtask": False}
        fields.setdefault("labels", [])
        fields["reporter"] = fields.get("reporter") or self._user()
        self.issues[key] = {
            "id": issue_id,
            "key": key,
            "status": INITIAL_STATUS,
            "fields": fields,
            "comments": [],
            "attachments": [],
            "created": _now(),
            "updated": _now(),
        }
        return Response(201, {"id": issue_id, "key": key, "self": f"{self.base_url}{API}/issue/{issue_id}"})

    def _get_issue(self, id_or_key: str, *, query: Mapping[str, list[str]], **_: Any) -> Response:
        return Response(200, self._issue_json(self._find(id_or_key, _["visible"]), self._wanted(query)))

    def _edit_issue(self, id_or_key: str, *, body: bytes, **_: Any) -> Response:
        issue = self._find(id_or_key, _["visible"])
        fields = dict(self._json(body).get("fields") or {})
        if errors := self._check_fields(fields, creating=False):
            raise JiraError(400, [], errors)
        issue["fields"].update(fields)
        issue["updated"] = _now()
        return Response(204)

    def _search(self, *, query: Mapping[str, list[str]], visible: frozenset[str], **_: Any) -> Response:
        jql = (query.get("jql") or [""])[0]
        if not jql.strip():
            raise JiraError(400, [UNBOUNDED])
        match = _JQL.match(jql)
        if match is None:
            raise JiraError(400, [f"Error in the JQL Query: the stand-in cannot parse '{jql}'."])
        project = match["project"]
        if project is not None and project.upper() not in (set(self.projects) & visible):
            raise JiraError(400, [f"The value '{project}' does not exist for the field 'project'."])
        label = re.sub(r"\\(.)", r"\1", match["label"])
        hits = [
            issue
            for issue in self.issues.values()
            if label in issue["fields"]["labels"]
            and issue["fields"]["project"]["key"] in visible
            and (project is None or issue["fields"]["project"]["key"] == project.upper())
        ]
        start = int(base64.urlsafe_b64decode((query.get("nextPageToken") or ["MA=="])[0]).decode() or 0)
        size = min(int((query.get("maxResults") or ["50"])[0]), self.page_size)
        page = hits[start : start + size]
        wanted = self._wanted(query)
        issues = [self._issue_json(i, wanted) if wanted else {"id": i["id"]} for i in page]
        body: dict[str, Any] = {"issues": issues, "isLast": start + size >= len(hits)}
        if not body["isLast"]:
            body["nextPageToken"] = base64.urlsafe_b64encode(str(start + size).encode()).decode()
        return Response(200, body)

    # --- comments ------------------------------------------------------------------------------
    def _comment_json(self, comment: Mapping[str, Any], *, expand: bool) -> dict[str, Any]:
        visible = {k: v for k, v in comment.items() if k != "properties"}
        return {**visible, "properties": comment["properties"]} if expand else visible

    def _list_comments(self, id_or_key: str, *, query: Mapping[str, list[str]], **_: Any) -> Response:
        comments = self._find(id_or_key, _["visible"])["comments"]
        start = int((query.get("startAt") or ["0"])[0])
        size = min(int((query.get("maxResults") or ["5000"])[0]), self.page_size)
        expand = "properties" in ",".join(query.get("expand", [])).split(",")
        page = [self._comment_json(c, expand=expand) for c in comments[start : start + size]]
        return Response(200, {"startAt": start, "maxResults": size, "total": len(comments), "comments": page})

    def _add_comment(self, id_or_key: str, *, body: bytes, **_: Any) -> Response:
        issue = self._find(id_or_key, _["visible"])
        request = self._json(body)
        if not is_adf(request.get("body")):
            raise JiraError(400, [], {"comment": NOT_ADF})
        properties = list(request.get("properties") or [])
        if any(not isinstance(p, Mapping) or not p.get("key") for p in properties):
            raise JiraError(400, ["Property key must be a non-empty string."])
        visibility: Any = next((p["value"] for p in properties if p["key"] == "sd.public.comment"), {})
        comment_id = str(next(self._ids))
        comment = {
            "self": f"{self.base_url}{API}/issue/{issue['id']}/comment/{comment_id}",
            "id": comment_id,
            "author": self._user(),
            "body": request["body"],
            "updateAuthor": self._user(),
            "created": _now(),
            "updated": _now(),
            "jsdPublic": not bool((visibility or {}).get("internal", False)),
            "properties": properties,
        }
        issue["comments"].append(comment)
        return Response(201, comment)

    # --- attachments ---------------------------------------------------------------------------
    def _add_attachment(
        self, id_or_key: str, *, headers: Mapping[str, str], body: bytes, **_: Any
    ) -> Response:
        issue = self._find(id_or_key, _["visible"])
        if headers.get("x-atlassian-token", "").lower() != "no-check":
            return Response(403, "XSRF check failed")
        content_type = headers.get("content-type", "")
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            f"Content-Type: {content_type}\r\n\r\n".encode() + body
        )
        parts = [
            p
            for p in (message.iter_parts() if message.is_multipart() else [])
            if p.get_param("name", header="content-disposition") == "file"
        ]
        if not parts:
            raise JiraError(400, ["Unable to attach: no multipart part named 'file' in the request."])
        created = []
        for part in parts:
            attachment_id = str(next(self._ids))
            data = part.get_payload(decode=True) or b""
            attachment = {
                "self": f"{self.base_url}{API}/attachment/{attachment_id}",
                "id": attachment_id,
                "filename": part.get_filename() or "",
                "author": self._user(),
                "created": _now(),
                "size": len(data),
                "mimeType": part.get_content_type(),
            }
            issue["attachments"].append({**attachment, "data": data})
            created.append(self._attachment_json(attachment))
        return Response(200, created)

    @staticmethod
    def _attachment_json(attachment: Mapping[str, Any]) -> dict[str, Any]:
        shown = {name: value for name, value in attachment.items() if name != "data"}
        return {**shown, "content": f"{attachment['self']}/content"}

    # --- transitions ---------------------------------------------------------------------------
    def _transition_json(self, transition_id: str, name: str, target: str) -> dict[str, Any]:
        status_id, category, category_name = STATUSES[target]
        return {
            "id": transition_id,
            "name": name,
            "to": {
                "self": f"{self.base_url}{API}/status/{status_id}",
                "name": target,
                "id": status_id,
                "statusCategory": {"key": category, "name": category_name},
            },
            "hasScreen": False,
            "isGlobal": False,
            "isInitial": False,
            "isAvailable": True,
            "isConditional": False,
            "isLooped": False,
        }

    def _list_transitions(self, id_or_key: str, **_: Any) -> Response:
        issue = self._find(id_or_key, _["visible"])
        transitions = [self._transition_json(*t) for t in WORKFLOW[issue["status"]]]
        return Response(200, {"expand": "transitions", "transitions": transitions})

    def _do_transition(self, id_or_key: str, *, body: bytes, **_: Any) -> Response:
        issue = self._find(id_or_key, _["visible"])
        wanted = str((self._json(body).get("transition") or {}).get("id", ""))
        if not wanted:
            raise JiraError(400, ["Missing 'transition' identifier"])
        target = next((to for tid, _, to in WORKFLOW[issue["status"]] if tid == wanted), None)
        if target is None:
            raise JiraError(400, [f"Transition id '{wanted}' is not valid for this issue."])
        issue["status"] = target
        issue["updated"] = _now()
        return Response(204)


# --- the stand-in as a service of the local stack ------------------------------------------------------
SERVICE = "jira-standin"
PORT_OFFSET = (
    48  # profile.api_port + 48 (RT +10, log servers +13.., ERP +20, Redis +30, MFA +40, MS +45, hooks +47)
)
CONFIG_LOCAL_NAME = "jira-standin.json"


def port(profile: Any) -> int:
    return int(profile.api_port) + PORT_OFFSET


def base_url(profile: Any) -> str:
    return f"http://{HOST}:{port(profile)}"


def project_key(tenant: str) -> str:
    """The project of a customer's site in the stand-in: its ``ticketing.project``, else its name."""
    from include.policies.tenants import tenant_ticketing

    return tenant_ticketing(tenant).project or re.sub(r"[^A-Z0-9_]", "", tenant.upper())[:10]


def account_email(tenant: str) -> str:
    return f"orchestrator@{tenant}.example"


def api_token(profile: Any, tenant: str) -> str:
    return str(
        profile.local_secret(f"jira-{tenant}-api-token", lambda: "ATATT3x" + secrets.token_urlsafe(24))
    )


def standin_config(profile: Any) -> dict[str, Any]:
    """One site per customer tenant (its project, its account): the Jira tenants' sites and, so a
    test can see nothing lands there, every other customer's too."""
    from include.policies.tenants import tenant_ids

    return {
        "projects": {project_key(t): f"{t} service desk" for t in tenant_ids()},
        "accounts": {
            account_email(t): {"api_token": api_token(profile, t), "projects": [project_key(t)]}
            for t in tenant_ids()
        },
    }


def connection(profile: Any, tenant: str, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The Airflow connection of ``tenant``'s Jira site in the stand-in (its secret's value)."""
    return {
        "conn_type": "http",
        "host": HOST,
        "port": port(profile),
        "schema": "http",
        "login": account_email(tenant),
        "password": api_token(profile, tenant),
        "extra": {
            # The customer's site, its own limits: one bucket per tenant (conn id jira:<tenant>).
            "rate_limit_per_second": 10,
            "rate_limit_burst": 20,
            "retry_max_attempts": 4,
            "timeout_seconds": 15,
            **(extra or {}),
        },
    }


def write_config(profile: Any) -> Path:
    """The stand-in's sites (API tokens included) as a 0600 file of the profile."""
    return write_config_file(profile, CONFIG_LOCAL_NAME, standin_config(profile))


def standin_argv(profile: Any) -> list[str]:
    return service_argv("devstack.standins.jira", port(profile), write_config(profile))


def main(argv: list[str] | None = None) -> None:
    """Serve on 127.0.0.1 until SIGTERM or SIGINT: the customers' Jira sites of the local stack."""
    serve_main(
        "Jira Service Management stand-in (local stack)",
        lambda args, service: JiraStandIn(
            projects=args.config["projects"], accounts=args.config["accounts"], **service
        ),
        argv,
    )


if __name__ == "__main__":
    main()
