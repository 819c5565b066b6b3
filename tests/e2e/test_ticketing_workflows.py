"""Ticket steps on the real stack against a real Request Tracker 5."""

from __future__ import annotations

import pytest

from devstack.api_client import AirflowApi
from include.connectors.ticketing.request_tracker import RequestTrackerHook


@pytest.fixture(scope="module", autouse=True)
def ticket_dags(api: AirflowApi) -> None:
    api.wait_for_dags({"e2e_ticket_lifecycle", "e2e_create_then_crash"})


def test_create_comment_attach_set_field_resolve(api: AirflowApi, rt: RequestTrackerHook) -> None:
    run_id = api.trigger("e2e_ticket_lifecycle", {"tenant": "globex"})
    run = api.wait_for_run("e2e_ticket_lifecycle", run_id, timeout=240)
    assert run["state"] == "success"
    created = api.xcom("e2e_ticket_lifecycle", run_id, "create")
    assert created["created"] is True
    ticket = rt.get_ticket(created["id"])
    assert ticket.status == "resolved"
    assert ticket.fields["Severity"] == "low"
    assert ticket.fields["Tenant"] == "globex"
    assert ticket.fields["CorrelationId"] == created["correlation_id"]
    assert [t.id for t in rt.search_by_correlation(created["correlation_id"])] == [created["id"]]
    for task_id in ("comment", "attach"):
        entry = api.xcom("e2e_ticket_lifecycle", run_id, task_id)
        assert entry["created"] is True
        assert entry["entry_id"]


def test_task_killed_after_create_leaves_exactly_one_ticket(api: AirflowApi, rt: RequestTrackerHook) -> None:
    run_id = api.trigger("e2e_create_then_crash")
    run = api.wait_for_run("e2e_create_then_crash", run_id, timeout=240)
    assert run["state"] == "success"
    (ti,) = api.task_instances("e2e_create_then_crash", run_id)
    assert ti["try_number"] == 2
    result = api.xcom("e2e_create_then_crash", run_id, "create_ticket")
    assert result["created"] is False  # the retry found the ticket of the killed try
    tickets = rt.search_by_correlation(result["correlation_id"])
    assert [t.id for t in tickets] == [result["id"]]
