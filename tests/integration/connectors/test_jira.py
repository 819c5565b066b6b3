"""The Jira Service Management adapter against the in-memory Jira Cloud stand-in.

No network beyond 127.0.0.1 and no PostgreSQL: the connection carries no rate limit, so the
hook's shared limiter is off, and retries back off from 0.05 s (a ``Retry-After`` still wins).
"""

from __future__ import annotations

import os
import tempfile

# Airflow reads its configuration when first imported: keep it away from any real installation.
if "AIRFLOW_HOME" not in os.environ:
    os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="orchestrator-itest-airflow-")
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")

import base64
import json
import logging
import time
from collections.abc import Callable, Iterator
from functools import cached_property
from typing import Any

import pytest
import requests
from airflow.sdk import Connection

from devstack.standins.jira import JiraStandIn, adf_text
from include.connectors.errors import PermanentError
from include.connectors.ticketing.jira import JiraServiceManagementHook, adf
from tests.support.hooks import CaplogLog, closing_hooks

TENANT = "acme"
CORRELATION = "manual__2026-05-04T10:00:00+00:00"
LOGGER = "tests.integration.jira_adapter"


class StandInJiraHook(CaplogLog, JiraServiceManagementHook):
    """The adapter pointed at the stand-in. Only the plumbing differs: the connection is built here
    instead of read from Airflow, and ``self.log`` is a stdlib logger so ``caplog`` sees it."""

    log_name = LOGGER

    def __init__(self, standin: JiraStandIn, *, password: str | None = None, **extras: Any) -> None:
        super().__init__(tenant=TENANT)
        self._stub = Connection(
            conn_id=self.default_conn_name,
            conn_type="http",
            host="127.0.0.1",
            port=standin.port,
            schema="http",
            login=standin.email,
            password=standin.api_token if password is None else password,
            extra=json.dumps(
                {"issue_type": "Task", "retry_base_delay": 0.05, "retry_max_delay": 0.2, **extras}
            ),
        )

    @cached_property
    def connection(self) -> Connection:
        return self._stub


@pytest.fixture
def jira() -> Iterator[JiraStandIn]:
    with JiraStandIn() as standin:
        yield standin


@pytest.fixture
def make_hook(jira: JiraStandIn) -> Iterator[Callable[..., StandInJiraHook]]:
    with closing_hooks(lambda **kwargs: StandInJiraHook(jira, **kwargs)) as make:
        yield make


@pytest.fixture
def hook(make_hook: Callable[..., StandInJiraHook]) -> StandInJiraHook:
    return make_hook()


def _create(hook: StandInJiraHook, key: str = "idem-000000000000000000000001", **kwargs: Any) -> Any:
    return hook.create_ticket(
        queue="SOC",
        subject="Phishing report from finance",
        body=kwargs.pop("body", "A user reported a phishing mail.\n\nEvidence follows."),
        idempotency_key=key,
        correlation_id=kwargs.pop("correlation_id", CORRELATION),
        **kwargs,
    )


def _secrets(jira: JiraStandIn) -> list[str]:
    basic = base64.b64encode(f"{jira.email}:{jira.api_token}".encode()).decode()
    return [jira.api_token, basic]


# --- the whole life of a ticket --------------------------------------------------------------
def test_create_comment_attach_set_field_and_resolve(hook: StandInJiraHook, jira: JiraStandIn) -> None:
    ticket = _create(hook, fields={"customfield_10051": "finance"})
    assert ticket.created is True
    assert (ticket.queue, ticket.status, ticket.subject) == ("SOC", "To Do", "Phishing report from finance")
    assert ticket.fields[hook.CORRELATION_FIELD] == CORRELATION
    assert ticket.fields[hook.TENANT_FIELD] == TENANT
    assert ticket.fields[hook.IDEMPOTENCY_FIELD] == "idem-000000000000000000000001"
    stored = jira.issue(ticket.id)["fields"]
    assert stored["labels"] == ["idem-000000000000000000000001", f"correlation:{CORRELATION}", "tenant:acme"]
    assert stored["issuetype"]["name"] == "Task"
    assert adf_text(stored["description"]) == "A user reported a phishing mail.\n\nEvidence follows."
    assert stored["customfield_10051"] == "finance"

    note = hook.comment(ticket.id, "Triage started.", idempotency_key="idem-note")
    answer = hook.reply(ticket.id, "We are looking into it.", idempotency_key="idem-reply")
    evidence = hook.attach(
        ticket.id,
        filename="headers.txt",
        content=b"Received: from mx.example.org\n",
        content_type="text/plain",
        idempotency_key="idem-evidence",
    )
    assert note.created
    assert answer.created
    assert evidence.created
    comments = jira.issue(ticket.id)["comments"]
    assert [(c["id"], c["jsdPublic"]) for c in comments] == [(note.entry_id, False), (answer.entry_id, True)]
    assert comments[0]["properties"][0] == {
        "key": "orchestrator",
        "value": {"idempotency_key": "idem-note", "kind": "comment"},
    }
    (attachment,) = jira.issue(ticket.id)["attachments"]
    assert attachment["id"] == evidence.entry_id
    assert attachment["filename"] == "idem-evidence__headers.txt"
    assert (attachment["data"], attachment["mimeType"]) == (b"Received: from mx.example.org\n", "text/plain")
    assert jira.requests_to("POST", "/attachments")[0].status == 200

    updated = hook.set_fields(ticket.id, {"customfield_10050": "high"})
    assert updated.fields["customfield_10050"] == "high"
    assert hook.set_status(ticket.id, "in progress").status == "In Progress"
    done = hook.set_status(ticket.id, "Done")
    assert done.status == "Done" == jira.issue(ticket.id)["status"]
    assert hook.set_status(ticket.id, "done").status == "Done"  # already there: no transition
    assert len(jira.requests_to("POST", "/transitions")) == 2
    assert [t.id for t in hook.search_by_correlation(CORRELATION)] == [ticket.id]
    assert hook.retry_count == 0


def test_repeated_calls_with_the_same_key_return_what_exists(
    hook: StandInJiraHook, jira: JiraStandIn
) -> None:
    first = _create(hook)
    again = _create(hook, body="a retried task renders the same call")
    assert (again.id, again.created) == (first.id, False)
    assert again.fields[hook.IDEMPOTENCY_FIELD] == "idem-000000000000000000000001"

    calls = [
        lambda: hook.comment(first.id, "note", idempotency_key="idem-c"),
        lambda: hook.reply(first.id, "reply", idempotency_key="idem-r"),
        lambda: hook.attach(
            first.id, filename="a.log", content=b"x", content_type="text/plain", idempotency_key="idem-a"
        ),
    ]
    for call in calls:
        created, repeated = call(), call()
        assert created.created is True
        assert (repeated.entry_id, repeated.created) == (created.entry_id, False)

    assert len(jira.issues) == 1
    issue = jira.issue(first.id)
    assert (len(issue["comments"]), len(issue["attachments"])) == (2, 1)
    assert len(jira.requests_to("POST", "/rest/api/3/issue")) == 1
    assert len(jira.requests_to("POST", "/comment")) == 2
    assert len(jira.requests_to("POST", "/attachments")) == 1


def test_the_same_key_in_another_project_is_another_ticket(hook: StandInJiraHook, jira: JiraStandIn) -> None:
    soc = _create(hook)
    hr = hook.create_ticket(
        queue="HR",
        subject="s",
        body="b",
        idempotency_key="idem-000000000000000000000001",
        correlation_id=CORRELATION,
    )
    assert (soc.id, hr.id, hr.created) == ("SOC-1", "HR-1", True)


def test_comment_lookup_pages_through_all_comments(hook: StandInJiraHook, jira: JiraStandIn) -> None:
    jira.page_size = 2
    ticket = _create(hook)
    entries = [hook.comment(ticket.id, f"note {n}", idempotency_key=f"idem-{n}") for n in range(5)]
    before = len(jira.requests_to("GET", "/comment"))

    repeated = hook.comment(ticket.id, "note 4", idempotency_key="idem-4")

    assert (repeated.entry_id, repeated.created) == (entries[4].entry_id, False)
    pages = jira.requests_to("GET", "/comment")[before:]
    assert [p.query["startAt"] for p in pages] == [["0"], ["2"], ["4"]]
    assert all(p.query["expand"] == ["properties"] for p in pages)
    assert len(jira.issue(ticket.id)["comments"]) == 5


def test_search_pages_with_next_page_token(hook: StandInJiraHook, jira: JiraStandIn) -> None:
    jira.page_size = 1
    for n in range(3):
        _create(hook, key=f"idem-{n}")
    found = hook.search_by_correlation(CORRELATION)
    assert [t.id for t in found] == ["SOC-1", "SOC-2", "SOC-3"]
    searches = jira.requests_to("GET", "/search/jql")[-3:]
    assert "nextPageToken" not in searches[0].query
    assert all("nextPageToken" in s.query for s in searches[1:])
    assert searches[0].query["fields"] == ["summary,status,labels,project"]


# --- failures --------------------------------------------------------------------------------
def test_429_waits_for_retry_after_then_succeeds(
    hook: StandInJiraHook, jira: JiraStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    jira.throttle(1, retry_after=1)

    started = time.monotonic()
    ticket = _create(hook)
    elapsed = time.monotonic() - started

    assert ticket.created is True
    assert elapsed >= 1.0
    assert hook.retry_count == 1
    statuses = [r.status for r in jira.requests]
    assert statuses[0] == 429
    assert set(statuses[1:]) <= {200, 201}
    assert jira.requests[1].at - jira.requests[0].at >= 1.0
    # (the other warning possible here: this test has no shared store to lock creates in)
    (retry,) = [
        r for r in caplog.records if r.levelno == logging.WARNING and "no shared store" not in r.getMessage()
    ]
    assert "attempt 1 failed" in retry.getMessage()
    assert "HTTP 429: Rate limit exceeded." in retry.getMessage()


def test_wrong_token_fails_at_once_with_the_service_message(
    make_hook: Callable[..., StandInJiraHook], jira: JiraStandIn
) -> None:
    hook = make_hook(password="not-the-token")
    with pytest.raises(PermanentError) as raised:
        _create(hook)
    assert raised.value.status == 401
    assert "Client must be authenticated to access this resource." in str(raised.value)
    assert hook.retry_count == 0
    assert [r.status for r in jira.requests] == [401]
    assert jira.issues == {}


def test_unknown_status_names_the_available_transitions(hook: StandInJiraHook, jira: JiraStandIn) -> None:
    ticket = _create(hook)
    with pytest.raises(PermanentError) as raised:
        hook.set_status(ticket.id, "Closed")
    message = str(raised.value)
    assert "no transition to 'Closed'" in message
    assert "available: 'In Progress' (via 'Start progress')" in message
    with pytest.raises(PermanentError, match="available: 'In Progress'"):
        hook.set_status(ticket.id, "Done")  # not reachable from To Do in one step
    assert jira.issue(ticket.id)["status"] == "To Do"
    assert jira.requests_to("POST", "/transitions") == []


def test_unknown_issue_is_permanent_with_jira_message(hook: StandInJiraHook) -> None:
    with pytest.raises(PermanentError, match="Issue does not exist or you do not have permission") as raised:
        hook.comment("SOC-404", "x", idempotency_key="idem-x")
    assert raised.value.status == 404
    assert hook.retry_count == 0


def test_values_that_cannot_be_labels(make_hook: Callable[..., StandInJiraHook], jira: JiraStandIn) -> None:
    plain = make_hook()
    with pytest.raises(PermanentError, match="not a valid Jira label and no correlation_field"):
        _create(plain, correlation_id="run with spaces")
    assert jira.requests == []  # refused before anything was sent

    with_field = make_hook(correlation_field="customfield_10052")
    ticket = _create(with_field, correlation_id="run with spaces")
    labels = jira.issue(ticket.id)["fields"]["labels"]
    assert labels == ["idem-000000000000000000000001", "tenant:acme"]
    assert jira.issue(ticket.id)["fields"]["customfield_10052"] == "run with spaces"
    assert ticket.fields[with_field.CORRELATION_FIELD] == "run with spaces"


def test_token_never_appears_in_logs_or_errors(
    make_hook: Callable[..., StandInJiraHook],
    jira: JiraStandIn,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)  # the hook's records and urllib3's request lines
    hook = make_hook()
    jira.throttle(1, retry_after=1)
    ticket = _create(hook)
    hook.comment(ticket.id, "note", idempotency_key="idem-note")
    errors: list[str] = []
    for call in (
        lambda: hook.set_status(ticket.id, "Closed"),
        lambda: hook.get_ticket("SOC-999"),
        lambda: make_hook(password=jira.api_token[::-1]).get_ticket(ticket.id),
    ):
        with pytest.raises(PermanentError) as raised:
            call()
        errors.append(f"{raised.value!s} {raised.value!r}")

    out, err = capfd.readouterr()
    assert hook.retry_count == 1
    assert len(caplog.records) > 3
    for secret in [*_secrets(jira), jira.api_token[::-1]]:
        assert secret not in caplog.text
        assert all(secret not in error for error in errors)
        assert secret not in out + err


# --- the stand-in keeps Atlassian's contract ----------------------------------------------------
def test_standin_rate_limit_headers(jira: JiraStandIn) -> None:
    jira.throttle(1, retry_after=7, reason="jira-quota-global-based")
    auth = (jira.email, jira.api_token)
    limited = requests.get(f"{jira.base_url}/rest/api/3/issue/SOC-1", auth=auth, timeout=5)
    assert limited.status_code == 429
    assert limited.headers["Retry-After"] == "7"
    assert limited.headers["RateLimit-Reason"] == "jira-quota-global-based"
    assert limited.headers["X-RateLimit-Remaining"] == "0"
    assert int(limited.headers["X-RateLimit-Limit"]) > 0
    assert limited.headers["X-RateLimit-Reset"].endswith("Z")
    assert "T" in limited.headers["X-RateLimit-Reset"]
    after = requests.get(f"{jira.base_url}/rest/api/3/issue/SOC-1", auth=auth, timeout=5)
    assert after.status_code == 404
    assert after.json() == {
        "errorMessages": ["Issue does not exist or you do not have permission to see it."],
        "errors": {},
    }


def test_standin_rejects_what_jira_rejects(jira: JiraStandIn) -> None:
    auth = (jira.email, jira.api_token)
    url = f"{jira.base_url}/rest/api/3"
    anonymous = requests.get(f"{url}/search/jql", params={"jql": 'labels = "x"'}, timeout=5)
    assert anonymous.status_code == 401
    assert anonymous.json()["errorMessages"]
    bad_jql = requests.get(f"{url}/search/jql", params={"jql": "summary ~ phishing"}, auth=auth, timeout=5)
    assert bad_jql.status_code == 400
    assert bad_jql.json()["errorMessages"][0].startswith("Error in the JQL")
    fields = {
        "project": {"key": "SOC"},
        "issuetype": {"name": "Task"},
        "summary": "s",
        "description": "plain text is not ADF",
        "labels": ["has space"],
    }
    invalid = requests.post(f"{url}/issue", json={"fields": fields}, auth=auth, timeout=5)
    assert invalid.status_code == 400
    assert set(invalid.json()["errors"]) == {"description", "labels"}
    created = requests.post(
        f"{url}/issue",
        json={"fields": {**fields, "description": adf("d"), "labels": []}},
        auth=auth,
        timeout=5,
    )
    assert created.status_code == 201
    assert created.json()["key"] == "SOC-1"
    no_token = requests.post(
        f"{url}/issue/SOC-1/attachments", files={"file": ("a.txt", b"a")}, auth=auth, timeout=5
    )
    assert no_token.status_code == 403
    ids_only = requests.get(
        f"{url}/search/jql", params={"jql": 'project = SOC AND labels = "x"'}, auth=auth, timeout=5
    )
    assert ids_only.status_code == 200
    assert ids_only.json() == {"issues": [], "isLast": True}


@pytest.mark.parametrize(
    ("step", "post_suffix"),
    [
        pytest.param("create", "/rest/api/3/issue", id="create"),
        pytest.param("comment", "/comment", id="comment"),
        pytest.param("attach", "/attachments", id="attach"),
    ],
)
def test_a_lost_response_is_found_not_repeated(
    hook: StandInJiraHook, jira: JiraStandIn, step: str, post_suffix: str
) -> None:
    """The service committed the POST but the answer was lost (503): the retry searches first."""
    ticket = _create(hook) if step != "create" else None
    jira.lose_responses(1)
    if step == "create":
        result = _create(hook, key="idem-000000000000000000000042")
        assert result.created is False
        assert len(jira.issues) == 1
    elif step == "comment":
        entry = hook.comment(ticket.id, "Contained.", idempotency_key="idem-comment-1")
        assert entry.created is False
        assert len(jira.issue(ticket.id)["comments"]) == 1
    else:
        entry = hook.attach(
            ticket.id, filename="e.txt", content=b"x", content_type="text/plain", idempotency_key="idem-att-1"
        )
        assert entry.created is False
        assert len(jira.issue(ticket.id)["attachments"]) == 1
    assert len([r for r in jira.requests_to("POST", post_suffix) if r.status in (201, 200, 503)]) == 1
    assert hook.retry_count == 1
