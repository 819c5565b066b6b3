"""Terraform on the real stack: plan -> approve the exact plan -> apply; no changes -> nothing to
approve; a destroy needs the stricter approvers; sensitive outputs nowhere in logs or XCom.

Users: ivan (implementation_operator) triggers; cleo (cloud_lead) approves applies; sven
(security_officer) is the second approver a destroy needs.
"""

from __future__ import annotations

import json

import pytest

from devstack.api_client import AirflowApi, ApiError
from devstack.stack import Stack
from tests.e2e.conftest import sign_up

APPLY_DAG = "e2e_tenant_baseline"
DESTROY_DAG = "e2e_tenant_baseline_destroy"
GATE_1 = "approve_baseline.step_1"
GATE_2 = "approve_baseline.step_2"
SENSITIVE = "tok-acme-s3cr3t-canary"
USERS = {"ivan": ["implementation_operator"], "cleo": ["cloud_lead"], "sven": ["security_officer"]}


@pytest.fixture(scope="module")
def users(stack: Stack, api: AirflowApi) -> dict[str, AirflowApi]:
    api.wait_for_dags({APPLY_DAG, DESTROY_DAG})
    return sign_up(stack, USERS)


def state_file(stack: Stack) -> dict:
    return json.loads((stack.profile.root / "terraform" / "state" / "acme" / "baseline.tfstate").read_text())


def test_plan_approve_apply_then_a_second_run_changes_nothing(
    stack: Stack, api: AirflowApi, users: dict[str, AirflowApi]
) -> None:
    run_id = users["ivan"].trigger(APPLY_DAG, {"tenant": "acme", "correlation_id": "corr-tf-1"})
    request = users["cleo"].wait_for_request(APPLY_DAG, run_id, GATE_1)
    plan = api.xcom(APPLY_DAG, run_id, "plan_baseline")
    assert "**2 to add, 0 to change, 0 to replace, 0 to destroy**" in request["body"]
    assert plan["sha256"] in request["body"]
    assert {u["id"] for u in request["assigned_users"]} == {"role:cloud_lead", "not:ivan"}
    users["cleo"].answer(APPLY_DAG, run_id, GATE_1, "Approve", "tenant onboarding approved")

    assert api.wait_for_run(APPLY_DAG, run_id, timeout=180)["state"] == "success"
    assert api.task_states(APPLY_DAG, run_id) == {
        "plan_baseline": "success",
        GATE_1: "success",
        GATE_2: "success",  # a non-destroying plan needs one approval: step 2 not required
        "apply_baseline": "success",
    }
    assert api.xcom(APPLY_DAG, run_id, GATE_2, key="approval")["outcome"] == "not_required"
    applied = api.xcom(APPLY_DAG, run_id, "apply_baseline")
    assert applied["changes"] == {"add": 2, "change": 0, "remove": 0, "operation": "apply"}
    assert applied["outputs"] == {
        "state_bucket": "orchestrator-acme-tfstate",
        "bootstrap_token": "(sensitive)",
    }
    assert applied["sha256"] == plan["sha256"]
    # the correlation id is a tag on what the run created
    assert state_file(stack)["resources"]["aws_s3_bucket.state"]["tags"]["correlation_id"] == "corr-tf-1"

    again = users["ivan"].trigger(APPLY_DAG, {"tenant": "acme", "correlation_id": "corr-tf-2"})
    assert api.wait_for_run(APPLY_DAG, again, timeout=180)["state"] == "success"
    assert api.task_states(APPLY_DAG, again) == {
        "plan_baseline": "success",
        GATE_1: "skipped",
        GATE_2: "skipped",
        "apply_baseline": "skipped",
    }
    assert api.xcom(APPLY_DAG, again, "plan_baseline")["summary"]["changes"] is False
    assert state_file(stack)["serial"] == 1


def test_a_destroy_needs_the_cloud_lead_and_a_security_officer(
    stack: Stack, api: AirflowApi, users: dict[str, AirflowApi]
) -> None:
    run_id = users["ivan"].trigger(DESTROY_DAG, {"tenant": "acme"})
    first = users["cleo"].wait_for_request(DESTROY_DAG, run_id, GATE_1)
    assert "**DESTROYS:**" in first["body"]
    users["cleo"].answer(DESTROY_DAG, run_id, GATE_1, "Approve")

    second = users["sven"].wait_for_request(DESTROY_DAG, run_id, GATE_2)
    assert {u["id"] for u in second["assigned_users"]} == {"role:security_officer", "not:ivan", "not:cleo"}
    with pytest.raises(ApiError) as refused:
        users["cleo"].answer(DESTROY_DAG, run_id, GATE_2, "Approve")
    assert refused.value.status_code == 403
    assert api.task_states(DESTROY_DAG, run_id)["apply_baseline"] is None  # nothing applied yet
    users["sven"].answer(DESTROY_DAG, run_id, GATE_2, "Approve", "decommission confirmed")

    assert api.wait_for_run(DESTROY_DAG, run_id, timeout=180)["state"] == "success"
    applied = api.xcom(DESTROY_DAG, run_id, "apply_baseline")
    assert applied["changes"]["remove"] == 2
    assert state_file(stack)["resources"] == {}


def test_sensitive_outputs_never_reach_the_logs(stack: Stack, users: dict[str, AirflowApi]) -> None:
    logs = stack.profile.root / "airflow" / "logs"
    task_logs = [p for p in logs.rglob("*") if p.is_file() and "e2e_tenant_baseline" in str(p)]
    assert any("task_id=apply_baseline" in str(p) for p in task_logs)  # the applies ran and logged
    leaks = [str(path) for path in task_logs if SENSITIVE in path.read_text(errors="replace")]
    assert leaks == []
    process_logs = [
        p for p in (stack.profile.root / "logs").glob("*.log") if SENSITIVE in p.read_text(errors="replace")
    ]
    assert process_logs == []
