"""Bulk ticket update end to end: 30 real tickets in Request Tracker, one change applied in batches
(dynamic task mapping) through the rate-limited connector; four reruns of the same change
duplicate no comment. Checked in Request Tracker.
"""

from __future__ import annotations

import pytest

from devstack.api_client import AirflowApi, ApiError
from include.connectors.context import RunContext
from include.connectors.ticketing.request_tracker import API as RT_API
from include.connectors.ticketing.request_tracker import RequestTrackerHook

DAG = "support_bulk_update"
# Two batches (25 + 5) are enough to show the mapping; every ticket costs about 2.5 calls per run
# at the 2/s bulk share, so each ticket more is about 6 s of the suite (five runs).
TICKETS = 30


@pytest.fixture(scope="module")
def tickets(api: AirflowApi, rt: RequestTrackerHook) -> list[str]:
    api.wait_for_dags({DAG})
    run = RunContext("e2e_setup", "bulk", "seed", "acme", "corr-bulk-seed")
    return [
        rt.create_ticket(
            queue="support",
            subject=f"Bulk target {n}",
            body="seeded by the bulk update test",
            idempotency_key=f"idem-bulk-seed-{n}",
            correlation_id=run.correlation_id,
        ).id
        for n in range(TICKETS)
    ]


def _comments(rt: RequestTrackerHook, ticket_id: str) -> int:
    """Comments on the ticket as Request Tracker lists them (the seeded tickets have none else)."""
    path = f"{RT_API}/ticket/{ticket_id}/history?fields=Type&per_page=100"
    items = rt.request("GET", path, operation="test_history", expect=(200,)).json().get("items", [])
    return sum(1 for item in items if item.get("Type") == "Comment")


def test_one_change_many_tickets_in_batches_and_a_rerun_duplicates_nothing(
    api: AirflowApi, rt: RequestTrackerHook, tickets: list[str]
) -> None:
    conf = {
        "tenant": "acme",
        "change_id": "CHG-2026-11-29",
        "ticket_ids": tickets,
        "fields": {"Severity": "low"},
        "status": "open",
        "comment": "Maintenance window on Sunday 02:00-04:00 UTC.",
    }
    first = api.trigger(DAG, conf)
    assert api.wait_for_run(DAG, first, timeout=600)["state"] == "success"
    batches = [ti for ti in api.task_instances(DAG, first) if ti["task_id"] == "update_batch"]
    assert len(batches) == 2  # 30 tickets in batches of 25
    reruns = []
    for _ in range(4):  # SCALE-3: five runs of the same change in all
        again = api.trigger(DAG, conf)
        assert api.wait_for_run(DAG, again, timeout=600)["state"] == "success"
        reruns.append(again)

    for ticket_id in (tickets[0], tickets[25], tickets[-1]):
        (ticket,) = rt._search(f"id = {ticket_id}", "test_search")
        assert ticket.status == "open"
        assert ticket.fields.get("Severity") == "low"
        assert _comments(rt, ticket_id) == 1
    created = [
        api.xcom(DAG, run, "update_batch", map_index=i)["comments_created"]
        for run in (first, *reruns)
        for i in range(2)
    ]
    assert created == [25, 5] + [0] * 8


def test_a_change_that_changes_nothing_or_bad_ids_is_refused(api: AirflowApi) -> None:
    with pytest.raises(ApiError) as refused:
        api.trigger(DAG, {"tenant": "acme", "change_id": "CHG-x", "ticket_ids": ["12a"]})
    assert refused.value.status_code == 400
    run_id = api.trigger(DAG, {"tenant": "acme", "change_id": "CHG-empty", "ticket_ids": ["1"]})
    assert api.wait_for_run(DAG, run_id, timeout=180)["state"] == "failed"
    assert api.task_states(DAG, run_id)["plan_batches"] == "failed"
