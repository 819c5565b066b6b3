"""Tenant provisioning end to end: ticket -> plan of terraform/modules/tenant-provisioning with the
tenant's own state -> cloud lead approves that plan -> apply -> outputs on the ticket, resolved.
Four more runs for the same tenant plan no changes: nothing is asked or applied, same ticket
and report. An approval drill nobody answers escalates (mail, ticket comment), times out and
applies nothing.

The terraform binary is the stand-in (docs/standins.md, "Terraform"); the ticket is read back from
Request Tracker.
"""

from __future__ import annotations

from typing import Any

import pytest

from devstack.api_client import AirflowApi
from devstack.stack import Stack
from include.connectors.ticketing.request_tracker import RequestTrackerHook
from tests.e2e.conftest import sign_up
from tests.e2e.drills import check_unanswered_drill

DAG = "implementation_provision_tenant"
GATE = "approve_tenant_baseline.step_1"
USERS = {"ines_impl_op": ["implementation_operator"], "carl_cloud_lead": ["cloud_lead"]}
CONF = {"tenant": "globex", "requested_by": "pm@secops.example"}


@pytest.fixture(scope="module")
def users(stack: Stack, api: AirflowApi) -> dict[str, AirflowApi]:
    api.wait_for_dags({DAG})
    return sign_up(stack, USERS)


@pytest.fixture(scope="module", autouse=True)
def drill(users: dict[str, AirflowApi]) -> str:
    """The approval drill nobody answers (tenant acme), triggered as the module starts (an early
    drill, tests/e2e/conftest.py); its test, last in the module, checks the finished run."""
    conf = {"tenant": "acme", "requested_by": "pm@secops.example", "approval_drill": True}
    run_id = users["ines_impl_op"].trigger(DAG, conf)
    # Waiting at its gate, so it has opened the acme ticket: the ticket's search-before-create is
    # not atomic, and test_rejection_applies_nothing's acme run must find it, not race it.
    users["carl_cloud_lead"].wait_for_request(DAG, run_id, GATE)
    return run_id


def test_provision_then_a_second_run_changes_nothing(
    api: AirflowApi, users: dict[str, AirflowApi], rt: RequestTrackerHook
) -> None:
    run_id = users["ines_impl_op"].trigger(DAG, CONF)
    request = users["carl_cloud_lead"].wait_for_request(DAG, run_id, GATE)
    plan: dict[str, Any] = api.xcom(DAG, run_id, "plan_tenant_baseline")
    assert plan["sha256"] in request["body"]
    assert plan["summary"]["changes"] is True
    users["carl_cloud_lead"].answer(DAG, run_id, GATE, "Approve", "new customer, contract signed")
    assert api.wait_for_run(DAG, run_id, timeout=240)["state"] == "success"
    states = api.task_states(DAG, run_id)
    assert states["apply_tenant_baseline"] == "success"
    assert states["resolve_ticket"] == "success"
    applied = api.xcom(DAG, run_id, "apply_tenant_baseline")
    assert applied["sha256"] == plan["sha256"]
    ticket_id = str(api.xcom(DAG, run_id, "open_ticket")["id"])
    (ticket,) = rt._search(f"id = {ticket_id}", "test_search")  # the search names the queue
    assert ticket.status == "resolved"
    assert ticket.queue == "implementation"

    for _ in range(4):  # SCALE-3: five runs in all, one change
        again = users["ines_impl_op"].trigger(DAG, CONF)
        assert api.wait_for_run(DAG, again, timeout=240)["state"] == "success"
        states = api.task_states(DAG, again)
        assert states["apply_tenant_baseline"] == "skipped"
        assert states[GATE] == "skipped"
        assert states["report"] == "success"
        assert str(api.xcom(DAG, again, "open_ticket")["id"]) == ticket_id  # the same ticket
        assert api.xcom(DAG, again, "open_ticket")["created"] is False
        assert api.xcom(DAG, again, "report")["created"] is False  # and the same report comment
    assert len(rt._search("Subject = 'Provision tenant globex'", "test_search")) == 1


def test_rejection_applies_nothing(stack: Stack, api: AirflowApi, users: dict[str, AirflowApi]) -> None:
    run_id = users["ines_impl_op"].trigger(DAG, {"tenant": "acme", "requested_by": "pm@secops.example"})
    users["carl_cloud_lead"].wait_for_request(DAG, run_id, GATE)
    users["carl_cloud_lead"].answer(DAG, run_id, GATE, "Reject", "contract not signed yet")
    api.wait_for_run(DAG, run_id, timeout=240)
    states = api.task_states(DAG, run_id)
    assert states["apply_tenant_baseline"] == "skipped"
    assert api.xcom(DAG, run_id, GATE, key="approval")["outcome"] == "rejected"
    assert not (stack.profile.root / "terraform" / "state" / "acme" / "tenant-baseline.tfstate").exists()


def test_drill_nobody_answers_escalates_then_rejects_and_applies_nothing(
    stack: Stack, api: AirflowApi, drill: str, rt: RequestTrackerHook
) -> None:
    check_unanswered_drill(
        stack,
        api,
        rt,
        dag_id=DAG,
        run_id=drill,
        gate=GATE,
        privileged="apply_tenant_baseline",
        domain="implementation",
        action="terraform-apply",
        timeout=300,
    )
    assert not (stack.profile.root / "terraform" / "state" / "acme" / "tenant-baseline.tfstate").exists()
