"""Escalation widens who may answer, on the real stack: a SOC approval drill (drill ladder: escalation
after 20 s, auto-reject after 30 s) of ``e2e_soc_containment``, whose policy escalates to the
security officers (approvals.yaml ``escalate_to``).

Before the escalation time a security officer's answer is refused (403) through the public REST API
(the UI sends the same PATCH) and through the Execution API with a user's token; so are an approver
of another domain and the auditor, before and after. Airflow's record of the request stays
unanswered until the officer answers after escalation; then the record names the officer, at or
after the time the gate wrote, the privileged step's verifier (include/approvals/verify.py) accepts
that answer from Airflow's own record, and the answer's audit record says it came after escalation.

Users (roles from access.yaml groups):
  esc_op     soc_operator       triggers the drill
  esc_seb    security_officer   the escalation group
  esc_hank   hr_lead            an approver of another domain
  esc_ava    auditor            reads everything, answers nothing
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import pytest

from devstack.api_client import AirflowApi, ApiError
from devstack.stack import Stack
from include.approvals import verify
from include.approvals.respondents import AFTER_PREFIX, parse_escalation
from include.approvals.verify import ApprovalVerificationError, GateRef, check_answers
from include.audit.store import AuditStore
from include.policies.approvals import load_approvals
from tests.e2e import background
from tests.e2e.conftest import admin_api, sign_up

DAG = "e2e_soc_containment"
GATE = "approve_host_isolate"
USERS = {
    "esc_op": ["soc_operator"],
    "esc_seb": ["security_officer"],
    "esc_hank": ["hr_lead"],
    "esc_ava": ["auditor"],
}


class ApiRecords:
    """:class:`include.approvals.verify.ApprovalRecords` through the stack's REST API (admin)."""

    def __init__(self, api: AirflowApi) -> None:
        self.api = api

    def hitl_detail(self, dag_id: str, run_id: str, task_id: str) -> Mapping[str, Any] | None:
        return self.api.get(self.api.hitl_path(dag_id, run_id, task_id))

    def roles_of(self, username: str) -> set[str]:
        user = self.api.request("GET", f"users/{username}", api="auth/fab/v1")
        return {role["name"] for role in user["roles"]}


def _refused(client: AirflowApi, run_id: str) -> None:
    with pytest.raises(ApiError) as refused:
        client.answer(DAG, run_id, GATE, "Approve", "let me")
    assert refused.value.status_code == 403, refused.value


def _unanswered(api: AirflowApi, run_id: str) -> dict[str, Any]:
    detail = api.get(api.hitl_path(DAG, run_id, GATE))
    assert (detail["response_received"], detail["responded_by_user"], detail["chosen_options"]) == (
        False,
        None,
        None,
    )
    return detail


# The drill mostly waits for its escalation (20 s) and the auto-reject: it runs in the background
# (tests/e2e/background.py) from the session's start, beside test_approval_channels' drill; its
# users (and so its audit records) are its own. It pages at its escalation (the failing-pager
# scenario's fault is scoped to that scenario's own run).
@background.scenario(start_after=None, timeout=400)
def escalation_drill_scenario(request: pytest.FixtureRequest) -> Callable[[], None]:
    stack: Stack = request.getfixturevalue("stack")
    request.getfixturevalue("api").wait_for_dags({DAG})
    users = sign_up(stack, USERS)
    api = admin_api(stack)  # this scenario's own client
    return lambda: _escalation_group_answers_only_after_escalation(stack, api, users)


@background.result_test("escalation_drill_scenario")
def test_escalation_group_answers_only_after_escalation() -> None:
    background.result("escalation_drill_scenario")


def _escalation_group_answers_only_after_escalation(
    stack: Stack, api: AirflowApi, users: dict[str, AirflowApi]
) -> None:
    with AuditStore(stack.audit_dsn) as audit:
        seq, _ = audit.head()
    run_id = users["esc_op"].trigger(DAG, {"host": "ws-0777", "tenant": "acme", "approval_drill": True})
    request = users["esc_seb"].wait_for_request(DAG, run_id, GATE)

    # What the gate asked: the SOC groups, not the trigger, the officers from the escalation time.
    ids = {user["id"] for user in request["assigned_users"]}
    (entry,) = [i for i in ids if i.startswith(AFTER_PREFIX)]
    assert ids - {entry} == {"role:soc_lead", "role:soc_oncall", "not:esc_op"}
    parsed = parse_escalation(entry)
    assert parsed is not None
    opens, group = parsed
    assert group == "security_officer"
    created = datetime.fromisoformat(request["created_at"])
    assert abs((opens - created).total_seconds() - 20) <= 2  # the drill ladder's escalate_after
    assert datetime.now(UTC) < opens, "the request was seen too late to try before escalation"

    # Before escalation: the officer (REST, and the Execution API with a user's token), another
    # domain's approver, the auditor: all refused, and Airflow's record stays unanswered.
    _refused(users["esc_seb"], run_id)
    execution = users["esc_seb"].request(
        "PATCH",
        f"hitlDetails/{request['task_instance']['id']}",
        api="execution",
        json={"chosen_options": ["Approve"], "params_input": {}},
        expect=(401, 403),
    )
    assert execution is not None
    for name in ("esc_hank", "esc_ava"):
        _refused(users[name], run_id)
    _unanswered(api, run_id)
    assert datetime.now(UTC) < opens, "the refusals took longer than the escalation time"

    # After escalation: the other domain's approver and the auditor still refused; the officer answers.
    time.sleep(max(0.0, (opens - datetime.now(UTC)).total_seconds()) + 0.5)
    for name in ("esc_hank", "esc_ava"):
        _refused(users[name], run_id)
    _unanswered(api, run_id)
    answer = users["esc_seb"].answer(DAG, run_id, GATE, "Approve", "on call did not answer; contain it")
    assert answer["responded_by"]["name"] == "esc_seb"

    detail = api.get(api.hitl_path(DAG, run_id, GATE))
    assert detail["responded_by_user"]["name"] == "esc_seb"
    assert detail["chosen_options"] == ["Approve"]
    assert datetime.fromisoformat(detail["responded_at"]) >= opens

    # The privileged step's checks accept this answer from Airflow's own record, as after escalation:
    # the request asked exactly the policy's groups and escalation time, the officer answered after it.
    records = ApiRecords(api)
    escalation = verify._check_assignment(
        GATE,
        detail,
        ("soc_lead", "soc_oncall"),
        "esc_op",
        ("security_officer",),
        verify._escalate_after(
            GateRef(GATE, 1), load_approvals().rule("soc", "host-isolate").ladder.escalate_after, drill=True
        ),
    )
    approver = verify._check_answer(
        GATE, detail, 1, ("soc_lead", "soc_oncall"), verify._Walk(excluded={"esc_op"}), records, escalation
    )
    assert (approver.name, approver.escalation_group) == ("esc_seb", "security_officer")
    # The whole verification walks every answer check first; this test DAG binds no artifact, which
    # is the one (and last) thing it refuses.
    with pytest.raises(ApprovalVerificationError, match=r"names no artifact; this step needs one$"):
        check_answers(
            records=records,
            dag_id=DAG,
            run_id=run_id,
            domain="soc",
            action="host-isolate",
            gates=[GateRef(GATE, 1)],
            triggered_by="esc_op",
            artifact=None,
            drill=True,
        )

    assert api.wait_for_run(DAG, run_id, timeout=120)["state"] == "success"
    with AuditStore(stack.audit_dsn) as audit:
        _, story = audit.trace(run_id)
        since = audit.records(first=seq + 1)
    (answered,) = [r for r in story if r["kind"] == "approval.answered"]
    assert answered["actor"] == "esc_seb"
    assert (answered["details"]["after_escalation"], answered["details"]["escalation_groups"]) == (
        True,
        ["security_officer"],
    )
    assert answered["details"]["drill"] is True
    # Every refused answer is on the audit trail naming the user; the officer's early one says why.
    refused = [r for r in since if r["actor"] in USERS and r["kind"] in ("policy.violation", "api.refused")]
    assert all(r["dag_id"] == DAG for r in refused), refused
    counts = {name: len([r for r in refused if r["actor"] == name]) for name in USERS}
    assert (counts["esc_op"], counts["esc_hank"], counts["esc_ava"]) == (0, 2, 2), counts
    early = [r for r in refused if r["actor"] == "esc_seb" and r["kind"] == "policy.violation"]
    assert [r["details"]["rule"] for r in early] == ["escalation-pending"], early
