"""Request Tracker 5 as a real local service: token auth, custom-field search, reset, no leaked token,
and runs of one alert racing to post one comment, reply or attachment.

Runs on a profile of its own (RT on 127.0.0.1:28090, files under .local/rt-itest) so it never
touches the shared ``test`` stack; installs RT from Debian first if it is missing (~1 minute). The
races' creation lock is in a PostgreSQL of their own (profile ``rt-lock-itest``, 127.0.0.1:25492),
started fresh and stopped at the end, as the platform's shared store is.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from airflow.sdk import Connection

from devstack import postgres
from devstack.config import Profile
from devstack.request_tracker import RequestTracker, rt_connection, rt_connection_extra
from include.connectors.ticketing.interface import Ticket, TicketEntry
from include.connectors.ticketing.request_tracker import ENTRY_TYPES, RequestTrackerHook
from tests.support.stores import postgres_database

PROFILE = Profile(name="rt-itest", api_port=28080, pg_port=0, moto_port=0, smtp_port=0)
STORE_PROFILE = Profile(name="rt-lock-itest", api_port=0, pg_port=25492, moto_port=0, smtp_port=0)
TIMEOUT = 30
RACERS = 4
# Between a run's search of the history and its POST: a slow network, so that runs started together
# all search before any posts (what makes the unlocked control post more than once).
PAUSE = 1.0


@pytest.fixture(scope="module")
def rt() -> Iterator[RequestTracker]:
    service = RequestTracker(PROFILE)
    service.stop()  # a leftover from an interrupted run of this module, by its PID file
    service.prepare()
    service.reset()
    try:
        service.start()
        yield service
    finally:
        service.stop()


def _auth(rt: RequestTracker) -> dict[str, str]:
    return {"Authorization": f"token {rt.token}"}


def _search(rt: RequestTracker, correlation_id: str) -> list[dict[str, object]]:
    response = requests.get(
        f"{rt.url}/REST/2.0/tickets",
        params={"query": f"'CF.{{CorrelationId}}' = '{correlation_id}'", "fields": "Subject,Queue"},
        headers=_auth(rt),
        timeout=TIMEOUT,
    )
    assert response.status_code == 200, response.text
    return response.json()["items"]


def test_rest_api_needs_the_token(rt: RequestTracker) -> None:
    with_token = requests.get(f"{rt.url}/REST/2.0/rt", headers=_auth(rt), timeout=TIMEOUT)
    assert with_token.status_code == 200
    assert with_token.json()["Version"].startswith("5.")
    assert requests.get(f"{rt.url}/REST/2.0/rt", timeout=TIMEOUT).status_code == 401
    wrong = {"Authorization": "token 1-1-00000000000000000000000000000000"}
    assert requests.get(f"{rt.url}/REST/2.0/rt", headers=wrong, timeout=TIMEOUT).status_code == 401


def test_ticket_is_found_by_correlation_id_and_reset_removes_it(rt: RequestTracker) -> None:
    created = requests.post(
        f"{rt.url}/REST/2.0/ticket",
        json={
            "Queue": "support",
            "Subject": "integration test ticket",
            "Content": "created by test_request_tracker_service",
            "ContentType": "text/plain",
            "CustomFields": {"CorrelationId": "corr-1", "Tenant": "acme"},
        },
        headers=_auth(rt),
        timeout=TIMEOUT,
    )
    assert created.status_code == 201, created.text
    ticket_id = created.json()["id"]

    found = _search(rt, "corr-1")
    assert [item["id"] for item in found] == [ticket_id]
    assert found[0]["Subject"] == "integration test ticket"
    assert _search(rt, "corr-unknown") == []

    ticket = requests.get(f"{rt.url}/REST/2.0/ticket/{ticket_id}", headers=_auth(rt), timeout=TIMEOUT)
    values = {cf["name"]: cf["values"] for cf in ticket.json()["CustomFields"]}
    assert values == {
        "CorrelationId": ["corr-1"],
        "Tenant": ["acme"],
        "IdempotencyKey": [],
        "Severity": [],
        "Category": [],
    }

    rt.reset()
    assert _search(rt, "corr-1") == []
    gone = requests.get(f"{rt.url}/REST/2.0/ticket/{ticket_id}", headers=_auth(rt), timeout=TIMEOUT)
    assert gone.status_code == 404


def _create(rt: RequestTracker, subject: str, correlation_id: str) -> str:
    created = requests.post(
        f"{rt.url}/REST/2.0/ticket",
        json={"Queue": "soc", "Subject": subject, "CustomFields": {"CorrelationId": correlation_id}},
        headers=_auth(rt),
        timeout=TIMEOUT,
    )
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


def test_live_reset_leaves_no_stale_cache(rt: RequestTracker) -> None:
    """Reset while RT runs: the next ticket reuses the id and RT shows the new one, not a cached old one."""
    rt.reset()
    first = _create(rt, "before reset", "corr-live-1")
    assert requests.get(f"{rt.url}/REST/2.0/ticket/{first}", headers=_auth(rt), timeout=TIMEOUT).ok
    pid = rt.running_pid()
    rt.reset()
    assert rt.running_pid() == pid
    second = _create(rt, "after reset", "corr-live-2")
    assert second == first
    ticket = requests.get(f"{rt.url}/REST/2.0/ticket/{second}", headers=_auth(rt), timeout=TIMEOUT).json()
    assert ticket["Subject"] == "after reset"
    assert _search(rt, "corr-live-1") == []
    assert len(_search(rt, "corr-live-2")) == 1


def test_reset_with_restart(rt: RequestTracker) -> None:
    _create(rt, "restart", "corr-restart")
    pid = rt.running_pid()
    rt.reset(restart=True)
    assert rt.running_pid() not in (None, pid)
    assert _search(rt, "corr-restart") == []


def test_every_queue_accepts_the_custom_fields(rt: RequestTracker) -> None:
    for queue in ("support", "hr", "soc"):
        created = requests.post(
            f"{rt.url}/REST/2.0/ticket",
            json={"Queue": queue, "Subject": f"{queue} ticket", "CustomFields": {"CorrelationId": queue}},
            headers=_auth(rt),
            timeout=TIMEOUT,
        )
        assert created.status_code == 201, created.text
        assert len(_search(rt, queue)) == 1


def test_token_file_is_private(rt: RequestTracker) -> None:
    assert rt.token_file.stat().st_mode & 0o777 == 0o600
    assert rt.root_password_file.stat().st_mode & 0o777 == 0o600


def test_connection_definition_carries_the_token(rt: RequestTracker) -> None:
    connection = rt_connection(PROFILE)
    assert (connection["host"], connection["port"], connection["schema"]) == ("127.0.0.1", 28090, "http")
    assert connection["password"] == rt.token
    assert connection["extra"] == {
        "auth_type": "token",
        "rate_limit_per_second": 20,
        "rate_limit_burst": 20,
        # bulk updates' share of the 20/s (SCALE-4)
        "bulk_rate_limit_per_second": 2,
        "bulk_rate_limit_burst": 2,
        # support triage's share (issue 19)
        "triage_rate_limit_per_second": 5,
        "triage_rate_limit_burst": 12,
    }
    # the test profile's extras, read without its RT (which need not exist on this machine)
    test_extra = rt_connection_extra(dataclasses.replace(PROFILE, name="test-400"))
    assert test_extra["bulk_rate_limit_per_second"] == 5  # the e2e suite's larger share


def _hook(rt: RequestTracker, tenant: str) -> RequestTrackerHook:
    """A hook on this RT without rate limits (no store needed)."""
    hook = RequestTrackerHook(tenant=tenant)
    hook.__dict__["connection"] = Connection(
        conn_id="rt_default",
        conn_type="http",
        host="127.0.0.1",
        port=rt.port,
        schema="http",
        password=rt.token,
    )
    return hook


def test_search_before_create_finds_a_key_only_in_its_queue_and_tenant(rt: RequestTracker) -> None:
    """A key planted on a ticket of another queue or tenant is not "found": the create goes ahead."""
    acme, globex = _hook(rt, "acme"), _hook(rt, "globex")
    key = f"idem-scope-{uuid.uuid4().hex[:8]}"

    def create(hook: RequestTrackerHook, queue: str) -> Ticket:
        return hook.create_ticket(queue=queue, subject="s", body="b", idempotency_key=key, correlation_id="c")

    planted = create(globex, "soc")
    support = create(acme, "support")
    soc = create(acme, "soc")
    again = create(acme, "soc")

    assert [t.created for t in (planted, support, soc, again)] == [True, True, True, False]
    assert len({planted.id, support.id, soc.id}) == 3
    assert again.id == soc.id
    read = acme.get_tickets([planted.id, support.id, soc.id, "999999"])
    assert {i: (t.queue, t.fields["Tenant"]) for i, t in read.items()} == {
        planted.id: ("soc", "globex"),
        support.id: ("support", "acme"),
        soc.id: ("soc", "acme"),
    }


def test_token_never_appears_in_the_log(rt: RequestTracker) -> None:
    assert rt.log.exists()
    log = rt.log.read_text(errors="replace")
    assert rt.token not in log
    # The secret part of "<id>-<user>-<secret>" must not show up on its own either.
    assert rt.token.rsplit("-", 1)[-1] not in log


# --- runs of one alert racing: one comment, reply or attachment ------------------------------------
@pytest.fixture(scope="module")
def lock_store() -> Iterator[str]:
    """The shared store the creation lock lives in (its URL holds the password: never print it)."""
    with postgres_database(STORE_PROFILE, "ratelimit"):
        yield postgres.admin_dsn(STORE_PROFILE, "ratelimit")


class SlowPostHook(RequestTrackerHook):
    """RT behind a slow network: every POST leaves :data:`PAUSE` after the search before it.

    ``unlocked`` drops the idempotency key from ``create_once`` (no creation lock): the control.
    """

    unlocked = False

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        if method == "POST":
            time.sleep(PAUSE)
        return super().request(method, path, **kwargs)

    def create_once(self, find: Any, create: Any, *, operation: str, key: str | None = None) -> Any:
        return super().create_once(find, create, operation=operation, key=None if self.unlocked else key)


def _post(
    rt_port: int, token: str, store: str, spec: tuple[str, str, str, bool], start: float, results: Any
) -> None:
    """One run (a process of its own): ``kind`` (comment, reply, attach) on the ticket with ``key``."""
    ticket_id, kind, key, unlocked = spec
    hook = SlowPostHook(tenant="acme")
    hook.unlocked = unlocked
    hook.__dict__["connection"] = Connection(
        conn_id="rt_default",
        conn_type="http",
        host="127.0.0.1",
        port=rt_port,
        schema="http",
        password=token,
        extra=json.dumps(
            {"rate_limit_store_dsn": store, "timeout_seconds": TIMEOUT, "retry_max_attempts": 3}
        ),
    )
    time.sleep(max(0.0, start - time.time()))
    entry: TicketEntry
    if kind == "attach":
        entry = hook.attach(
            ticket_id,
            filename="evidence.txt",
            content=b"pcap",
            content_type="text/plain",
            idempotency_key=key,
        )
    else:
        entry = getattr(hook, kind)(ticket_id, "host contained", idempotency_key=key)
    results.put((entry.entry_id, entry.created))


def _race(rt: RequestTracker, store: str, spec: tuple[str, str, str, bool]) -> list[tuple[str, bool]]:
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    start = time.time() + 1.0
    racers = [
        context.Process(target=_post, args=(rt.port, rt.token, store, spec, start, results))
        for _ in range(RACERS)
    ]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join(120)
    assert [racer.exitcode for racer in racers] == [0] * RACERS
    return [results.get(timeout=5) for _ in racers]


def _entries_with_key(rt: RequestTracker, ticket_id: str, kind: str, key: str) -> list[str]:
    """The ticket's transactions of ``kind`` (comment, reply, attach) carrying ``key``, read from RT
    itself (not through the hook)."""
    history = requests.get(
        f"{rt.url}/REST/2.0/ticket/{ticket_id}/history",
        params={"fields": "Type,Data", "per_page": 100},
        headers=_auth(rt),
        timeout=TIMEOUT,
    )
    assert history.status_code == 200, history.text
    wanted = ENTRY_TYPES["correspond" if kind == "reply" else "comment"]
    return [
        str(t["id"]) for t in history.json()["items"] if t["Type"] == wanted and key in (t.get("Data") or "")
    ]


@pytest.mark.parametrize("kind", ["comment", "reply", "attach"])
def test_runs_sharing_a_key_post_once(rt: RequestTracker, lock_store: str, kind: str) -> None:
    """Four runs of one alert post the same entry at once: RT holds exactly one, and every run gets it."""
    ticket_id = _create(rt, f"race {kind}", f"corr-race-{kind}")
    key = f"idem-race-{kind}-{uuid.uuid4().hex[:8]}"

    answers = _race(rt, lock_store, (ticket_id, kind, key, False))

    in_rt = _entries_with_key(rt, ticket_id, kind, key)
    assert len(in_rt) == 1
    assert sorted(answers, key=lambda a: not a[1]) == [(in_rt[0], True)] + [(in_rt[0], False)] * (RACERS - 1)
    if kind == "attach":
        attachments = requests.get(
            f"{rt.url}/REST/2.0/ticket/{ticket_id}/attachments",
            params={"fields": "Filename"},
            headers=_auth(rt),
            timeout=TIMEOUT,
        ).json()["items"]
        assert [a["Filename"] for a in attachments].count("evidence.txt") == 1


def test_without_the_key_racing_runs_post_twice(rt: RequestTracker, lock_store: str) -> None:
    """The control: without the lock the same race leaves more than one comment (the test above can fail)."""
    ticket_id = _create(rt, "race unlocked", "corr-race-unlocked")
    key = f"idem-race-unlocked-{uuid.uuid4().hex[:8]}"

    answers = _race(rt, lock_store, (ticket_id, "comment", key, True))

    assert len(_entries_with_key(rt, ticket_id, "comment", key)) > 1
    assert sum(created for _, created in answers) > 1
