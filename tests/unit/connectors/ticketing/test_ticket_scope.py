"""Tickets bounded by queue and tenant (issue 19): search-before-create finds only a ticket of the
same queue and tenant; bulk reads come back with queue and tenant; triage's calls take their own
share of Request Tracker's limit and never the tenant bucket SOC work draws from."""

from __future__ import annotations

import json
from typing import Any
from unittest import mock
from urllib.parse import parse_qs, urlsplit

import pytest
from airflow.sdk import Connection

from include.connectors.ratelimit import RateLimit
from include.connectors.ticketing.jira import JiraServiceManagementHook
from include.connectors.ticketing.request_tracker import API, TRIAGE_SHARE, RequestTrackerHook

EXTRAS = {
    "rate_limit_per_second": 20,
    "rate_limit_burst": 20,
    "tenant_rate_limit_per_second": 5,
    "bulk_rate_limit_per_second": 2,
    "triage_rate_limit_per_second": 2,
    "triage_rate_limit_burst": 12,
    "rate_limit_store_dsn": "postgresql://store.invalid/ratelimit",
    "rate_limit_safety_margin": 0.05,
}


def rt_hook(extras: dict[str, Any] = EXTRAS, **kwargs: Any) -> RequestTrackerHook:
    hook = RequestTrackerHook(tenant=kwargs.pop("tenant", "acme"), **kwargs)
    hook.__dict__["connection"] = Connection(
        conn_id="rt_default", conn_type="http", host="rt.invalid", password="t", extra=json.dumps(extras)
    )
    return hook


def buckets(hook: RequestTrackerHook) -> list[tuple[str, RateLimit]]:
    assert hook.limiter is not None
    return list(hook.limiter._specs)


# --- triage's share ------------------------------------------------------------------------------


def test_soc_work_takes_the_connector_and_its_tenant_bucket() -> None:
    assert [name for name, _ in buckets(rt_hook())] == ["rt_default", "rt_default__acme"]


def test_triage_takes_the_connector_its_share_and_its_own_bucket_of_the_tenant() -> None:
    reader = rt_hook(tenant="platform", share=TRIAGE_SHARE)
    writer = reader.for_tenant("acme")  # a (spoofed) acme mail: written as acme

    assert writer.share == TRIAGE_SHARE
    assert buckets(writer) == [
        ("rt_default", RateLimit(per_second=20.0, burst=20, safety_margin=0.05)),
        ("rt_default__triage", RateLimit(per_second=2.0, burst=12, safety_margin=0.05)),
        ("rt_default__triage__acme", RateLimit(per_second=5.0, burst=5, safety_margin=0.05)),
    ]
    assert [name for name, _ in buckets(reader)][-1] == "rt_default__triage__platform"
    assert "rt_default__acme" not in [name for name, _ in buckets(writer)]  # SOC's tenant bucket


def test_triage_bulk_work_also_takes_the_bulk_share() -> None:
    names = [name for name, _ in buckets(rt_hook(share=TRIAGE_SHARE, bulk=True))]
    assert names == ["rt_default", "rt_default__triage", "rt_default__triage__acme", "rt_default__bulk"]


def test_a_connection_without_the_share_keeps_the_plain_buckets() -> None:
    extras = {k: v for k, v in EXTRAS.items() if not k.startswith("triage_")}
    hook = rt_hook(extras, share=TRIAGE_SHARE)
    assert [name for name, _ in buckets(hook)] == ["rt_default", "rt_default__acme"]


# --- reads and search-before-create -----------------------------------------------------------------


def ticket_json(ticket_id: int, queue: str, tenant: str | None, key: str = "") -> dict[str, Any]:
    fields = [{"name": "Tenant", "values": [tenant] if tenant else []}]
    if key:
        fields.append({"name": "IdempotencyKey", "values": [key]})
    return {
        "id": ticket_id,
        "Subject": "s",
        "Status": "new",
        "Queue": {"Name": queue},
        "CustomFields": fields,
    }


class Recorder:
    """``RequestTrackerHook.request`` replaced: records (method, decoded TicketSQL or path)."""

    def __init__(self, *pages: list[dict[str, Any]]) -> None:
        self.pages = list(pages)
        self.sent: list[tuple[str, str]] = []

    def install(self, monkeypatch: pytest.MonkeyPatch) -> Recorder:
        monkeypatch.setattr(RequestTrackerHook, "request", lambda hook, *args, **kw: self.send(*args, **kw))
        return self

    def send(self, method: str, path: str, **kwargs: Any) -> Any:
        asked = parse_qs(urlsplit(path).query)
        if "query" in asked:  # a search asks for a whole page (REST 2's default is 20 items)
            assert asked["per_page"] == ["100"]
        query = asked.get("query", [path])[0]
        self.sent.append((method, query))
        response = mock.Mock()
        if method == "POST":
            response.json.return_value = {"id": 99}
        else:
            response.json.return_value = {"items": self.pages.pop(0) if self.pages else []}
        return response


def test_get_tickets_reads_queue_and_tenant_fifty_ids_per_search(monkeypatch: pytest.MonkeyPatch) -> None:
    ids = [str(n) for n in range(1, 61)]
    recorder = Recorder([ticket_json(1, "support", "acme"), ticket_json(2, "soc", "globex")], [])
    recorder.install(monkeypatch)

    tickets = rt_hook().get_tickets(ids)

    assert recorder.sent == [
        ("GET", " OR ".join(f"id = {n}" for n in range(1, 51))),
        ("GET", " OR ".join(f"id = {n}" for n in range(51, 61))),
    ]
    assert {t: (x.queue, x.fields.get("Tenant")) for t, x in tickets.items()} == {
        "1": ("support", "acme"),
        "2": ("soc", "globex"),
    }


def test_get_tickets_refuses_an_id_that_is_not_a_number_before_any_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    recorder = Recorder()
    recorder.install(monkeypatch)
    with pytest.raises(ValueError, match=r"^ticket ids must be numbers: '1 OR 1=1'$"):
        rt_hook().get_tickets(["2", "1 OR 1=1"])
    assert recorder.sent == []


def test_request_tracker_searches_the_key_in_the_queue_and_tenant_only(
    monkeypatch: pytest.MonkeyPatch, creation_locks: list[str]
) -> None:
    recorder = Recorder([])  # nothing found (a planted key elsewhere is not asked for): created
    recorder.install(monkeypatch)

    ticket = rt_hook().create_ticket(
        queue="soc", subject="s", body="b", idempotency_key="idem-1", correlation_id="corr-1"
    )

    assert recorder.sent == [
        ("GET", "Queue = 'soc' AND 'CF.{Tenant}' = 'acme' AND 'CF.{IdempotencyKey}' = 'idem-1'"),
        ("POST", f"{API}/ticket"),
    ]
    assert (ticket.id, ticket.created) == ("99", True)
    # The search and the create held the key's lock: runs sharing the key cannot both create.
    assert creation_locks == ["request_tracker:acme:idem-1"]


def jira_hook(extras: dict[str, Any] | None = None) -> JiraServiceManagementHook:
    hook = JiraServiceManagementHook(tenant="acme")
    hook.__dict__["connection"] = Connection(
        conn_id="jira_default",
        conn_type="http",
        host="x.atlassian.net",
        login="a@b.c",
        password="t",
        extra=json.dumps(extras or {}),
    )
    return hook


def issue(key: str, labels: list[str], fields: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "key": key,
        "fields": {"summary": "s", "status": {"name": "To Do"}, "project": {"key": "SOC"}, "labels": labels}
        | (fields or {}),
    }


@pytest.mark.parametrize(
    ("extras", "found", "expected", "fields_asked"),
    [
        pytest.param(
            None,
            [issue("SOC-1", ["idem-1", "tenant:globex"]), issue("SOC-2", ["idem-1", "tenant:acme"])],
            "SOC-2",
            "summary,status,labels,project",
            id="label",
        ),
        pytest.param(
            None,
            [issue("SOC-1", ["idem-1", "tenant:globex"])],
            None,
            "summary,status,labels,project",
            id="planted",
        ),
        pytest.param(
            {"tenant_field": "customfield_10051"},
            [issue("SOC-3", ["idem-1"], {"customfield_10051": "acme"})],
            "SOC-3",
            "summary,status,labels,project,customfield_10051",
            id="tenant-field",
        ),
    ],
)
def test_jira_finds_the_key_only_on_an_issue_of_its_tenant(
    monkeypatch: pytest.MonkeyPatch,
    extras: dict[str, Any] | None,
    found: list[dict[str, Any]],
    expected: str | None,
    fields_asked: str,
) -> None:
    asked: list[dict[str, list[str]]] = []

    def request(hook: Any, method: str, path: str, **kwargs: Any) -> Any:
        asked.append(parse_qs(urlsplit(path).query))
        return mock.Mock(json=mock.Mock(return_value={"issues": found, "isLast": True}))

    monkeypatch.setattr(JiraServiceManagementHook, "request", request)

    ticket = jira_hook(extras)._find_by_key("SOC", "idem-1")

    assert (ticket.id if ticket else None) == expected
    assert [(a["jql"][0], a["fields"][0]) for a in asked] == [
        ('project = "SOC" AND labels = "idem-1"', fields_asked)
    ]


def test_without_a_shared_store_the_create_is_not_locked_and_says_so(
    monkeypatch: pytest.MonkeyPatch, creation_locks: list[str]
) -> None:
    Recorder([]).install(monkeypatch)
    extras = {k: v for k, v in EXTRAS.items() if "rate_limit" not in k}
    hook = rt_hook(extras)  # no limits, no store: and no `ratelimit_store` connection offline
    log = mock.Mock()
    monkeypatch.setattr(RequestTrackerHook, "log", log)

    ticket = hook.create_ticket(
        queue="soc", subject="s", body="b", idempotency_key="idem-2", correlation_id="c"
    )

    assert ticket.created
    assert creation_locks == []
    warned = [call.args[0] % call.args[1:] for call in log.warning.call_args_list]
    assert warned == [
        "request_tracker: no shared store (connection 'ratelimit_store'): creates are not locked across runs"
    ]
