"""Nobody sets an approval aside by hand: the API server refuses it and records who tried.

One ``soc_disable_account`` run against a real IAM staff user (moto) waits for its approval. The
SOC operator who triggered it, then ``admin``, try every way the REST API offers to get past the
gate (mark the gate or the privileged step success, mark an upstream task with
``include_downstream``, bulk updates, mark the run success, write the gate's XCom): each gets
403 with the rule, nothing changes (the run, its tasks, the user's access key in IAM), and each
attempt is one ``policy.violation`` audit record naming the user, found by ``audit trace`` of the
run. Dry runs and notes stay allowed. Then a SOC on-call answers Approve and the run succeeds; a
state set by hand afterwards is one ``manual.change`` record, and the listener's record of it
points there instead of claiming a worker.
"""

from __future__ import annotations

from typing import Any

import pytest

from devstack.api_client import AirflowApi
from devstack.aws_seed import account_client
from devstack.config import REGION
from devstack.stack import Stack
from include.audit.store import AuditStore
from include.policies.tenants import tenant_account_id
from tests.e2e.conftest import sign_up

DAG = "soc_disable_account"
GATE = "approve_identity_disable"
PRIVILEGED = "disable_account"
OPERATOR, ONCALL = "olga_door_op", "otto_door_oncall"
USERS = {OPERATOR: ["soc_operator"], ONCALL: ["soc_oncall"]}
IAM_USER = "eve.door.e2e"


def _attempts(run_id: str) -> list[tuple[str, str, str, dict[str, Any]]]:
    """(rule, method, path, body): every way around the gate the public API offers."""
    run = f"dags/{DAG}/dagRuns/{run_id}"
    tis = f"{run}/taskInstances"
    success = {"new_state": "success"}
    return [
        ("approval-gate", "PATCH", f"{tis}/{GATE}", success),
        ("approval-gate", "PATCH", f"{tis}/{GATE}/-1", success),
        ("privileged-step", "PATCH", f"{tis}/{PRIVILEGED}", success),
        ("approval-gate", "PATCH", f"{tis}/open_ticket", {**success, "include_downstream": True}),
        (
            "approval-gate",
            "PATCH",
            tis,
            {"actions": [{"action": "update", "entities": [{"task_id": GATE, "new_state": "success"}]}]},
        ),
        ("run-success-before-approval", "PATCH", run, {"state": "success"}),
        (
            "run-success-before-approval",
            "PATCH",
            f"dags/{DAG}/dagRuns",
            {"actions": [{"action": "update", "entities": [{"dag_run_id": run_id, "state": "success"}]}]},
        ),
        (
            "approval-xcom",
            "POST",
            f"{tis}/{GATE}/xcomEntries",
            {"key": "approval", "value": {"outcome": "approved"}},
        ),
        ("approval-xcom", "PATCH", f"{tis}/{GATE}/xcomEntries/approval", {"value": {"outcome": "approved"}}),
    ]


@pytest.fixture(scope="module")
def users(stack: Stack, api: AirflowApi) -> dict[str, AirflowApi]:
    api.wait_for_dags({DAG})
    return sign_up(stack, USERS)


def _iam(stack: Stack) -> Any:
    return account_client("iam", tenant_account_id("globex"), stack.profile.moto_url, REGION)


def _key_states(stack: Stack) -> list[tuple[str, str]]:
    keys = _iam(stack).list_access_keys(UserName=IAM_USER)["AccessKeyMetadata"]
    return [(k["AccessKeyId"], k["Status"]) for k in keys]


def test_nobody_sets_the_approval_aside_and_every_attempt_is_recorded(
    stack: Stack, api: AirflowApi, users: dict[str, AirflowApi]
) -> None:
    iam = _iam(stack)
    iam.create_user(UserName=IAM_USER, Path="/staff/")
    key = iam.create_access_key(UserName=IAM_USER)["AccessKey"]["AccessKeyId"]
    alert = {"account": IAM_USER, "tenant": "globex", "severity": "high", "alert_id": "SIEM-9301"}
    run_id = users[OPERATOR].trigger(DAG, alert)
    users[ONCALL].wait_for_request(DAG, run_id, GATE)
    states = api.task_states(DAG, run_id)
    assert states[GATE] == "deferred"
    assert states[PRIVILEGED] is None

    attempts = _attempts(run_id)
    for client in (users[OPERATOR], api):
        for rule, method, path, body in attempts:
            refused = client.request(method, path, json=body, expect=(403,))
            assert refused["rule"] == rule, (client.username, method, path, refused)
            assert refused["detail"]

    # What stays allowed: a dry run (changes nothing) and a note.
    tis = f"dags/{DAG}/dagRuns/{run_id}/taskInstances"
    dry = api.request("PATCH", f"{tis}/{GATE}/dry_run", json={"new_state": "success"})
    assert [ti["task_id"] for ti in dry["task_instances"]] == [GATE]
    users[OPERATOR].request("PATCH", f"{tis}/{GATE}", json={"note": "waiting for on-call"})

    assert api.run(DAG, run_id)["state"] == "running"
    assert api.task_states(DAG, run_id) == states
    assert _key_states(stack) == [(key, "Active")]

    with AuditStore(stack.audit_dsn) as audit:
        _, story = audit.trace(run_id)
    violations = [r for r in story if r["kind"] == "policy.violation" and r["run_id"] == run_id]
    expected = [(user, rule, method) for user in (OPERATOR, api.username) for rule, method, _, _ in attempts]
    assert [(r["actor"], r["details"]["rule"], r["details"]["method"]) for r in violations] == expected
    assert {(r["dag_id"], r["domain"], r["tenant"]) for r in violations} == {(DAG, "soc", "globex")}
    assert not [r for r in story if r["kind"] in ("manual.change", "task.finished") and r["task_id"] == GATE]

    # The real way: an on-call approver answers.
    users[ONCALL].answer(DAG, run_id, GATE, "Approve", comment="confirmed compromise")
    assert api.wait_for_run(DAG, run_id, timeout=120)["state"] == "success"
    assert _key_states(stack) == [(key, "Inactive")]

    # A state set by hand that is allowed: one manual.change, and the listener points at it.
    api.request("PATCH", f"{tis}/evidence", json={"new_state": "failed"})
    with AuditStore(stack.audit_dsn) as audit:
        _, story = audit.trace(run_id)
    (change,) = [r for r in story if r["kind"] == "manual.change"]
    assert (change["actor"], change["task_id"], change["details"]["new_state"]) == (
        api.username,
        "evidence",
        "failed",
    )
    (by_hand,) = [r for r in story if r["kind"] == "task.finished" and r["actor"] != "worker"]
    assert (by_hand["actor"], by_hand["task_id"], by_hand["details"]["state"]) == (
        "api",
        "evidence",
        "failed",
    )
    assert by_hand["details"]["manual_change"] == change["details"]["change_id"]
    assert by_hand["details"]["changed_by"] == api.username
