"""The approval guarantee's verification (include/approvals/verify.py), on in-memory HITL records.

Each refusal path is a named case with its exact message; the records are shaped as Airflow's
public API returns them (``GET .../hitlDetails``), built with the gate's own binding line.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowSkipException

from include.approvals import verify
from include.approvals.respondents import assigned_respondents, escalation_respondents
from include.approvals.verify import (
    ApprovalVerificationError,
    GateRef,
    RequiresApproval,
    VerifiedApproval,
    binding,
    binding_line,
    check_answers,
    params_artifact,
    parse_binding,
)

PLAN = "a" * 64
ONE_GATE = [GateRef(task_id="approve_host_isolate", step=1)]
HR_GATES = [
    GateRef(task_id="approve_identity_disable.step_1_hr_lead", step=1),
    GateRef(task_id="approve_identity_disable.step_2_security_officer", step=2),
]
TF_GATES = [
    GateRef(task_id="approve_tenant_baseline.step_1", step=1),
    GateRef("approve_tenant_baseline.step_2", 2),
]


# The SOC requests below were created at CREATED; the policy's SOC ladder escalates 10 min later,
# to security_officer (approvals.yaml), so the gate's entry opens at ESCALATED.
CREATED = "2026-12-06T06:55:00Z"
ESCALATED = datetime(2026, 12, 6, 7, 5, tzinfo=UTC)


def exactly(text: str) -> str:
    return f"^{re.escape(text)}$"


def request(
    *,
    action: str,
    roles: list[str],
    excluded: list[str],
    answer: str | None = "Approve",
    by: str | None = "sam",
    step: int = 1,
    steps: int = 1,
    artifact: str | None = PLAN,
    destructive: bool = False,
    privileged: bool = False,
    drill: bool = False,
    body: str = "Isolate host ws-1.",
    escalate_to: list[str] | None = None,
    escalate_at: datetime = ESCALATED,
    responded_at: str = "2026-12-06T07:00:00Z",
) -> dict[str, Any]:
    """A HITL detail as the gate makes it; SOC requests (``soc_lead`` asked) escalate to
    ``security_officer`` at ``escalate_at`` unless ``escalate_to`` says otherwise."""
    if escalate_to is None:
        escalate_to = ["security_officer"] if "soc_lead" in roles else []
    bound = binding(
        action=action,
        step=step,
        steps=steps,
        artifact=artifact,
        destructive=destructive,
        privileged=privileged,
        drill=drill,
    )
    answered = answer is not None
    return {
        "subject": "Approve",
        "body": f"{body}\n\n---\n- **Run:** http://x\n{binding_line(bound)}",
        "options": ["Approve", "Reject"],
        "assigned_users": [
            *assigned_respondents(roles, excluded),
            *escalation_respondents(escalate_to, escalate_at),
        ],
        "created_at": CREATED,
        "response_received": answered,
        "chosen_options": [answer] if answered else None,
        "responded_by_user": {"id": "7", "name": by} if answered and by else None,
        "responded_at": responded_at if answered else None,
    }


class Records:
    def __init__(
        self, details: Mapping[str, Mapping[str, Any] | None], roles: Mapping[str, set[str]]
    ) -> None:
        self.details = dict(details)
        self.roles = dict(roles)
        self.asked: list[str] = []

    def hitl_detail(self, dag_id: str, run_id: str, task_id: str) -> Mapping[str, Any] | None:
        self.asked.append(f"{dag_id}/{run_id}/{task_id}")
        return self.details.get(task_id)

    def roles_of(self, username: str) -> set[str]:
        return self.roles.get(username, set())


ROLES = {"sam": {"soc_lead"}, "olly": {"soc_oncall"}, "hana": {"hr_lead"}, "seb": {"security_officer"}}


def soc(detail: Mapping[str, Any] | None, **kwargs: Any) -> VerifiedApproval:
    arguments: dict[str, Any] = {
        "dag_id": "soc_contain_host",
        "run_id": "r1",
        "domain": "soc",
        "action": "host-isolate",
        "gates": ONE_GATE,
        "triggered_by": "dora",
        "artifact": PLAN,
        **kwargs,
    }
    return check_answers(records=Records({"approve_host_isolate": detail}, ROLES), **arguments)


SOC = {"action": "host-isolate", "roles": ["soc_lead", "soc_oncall"], "excluded": ["dora"]}


def test_an_approval_by_an_allowed_person_for_this_artifact_is_verified() -> None:
    approval = soc(request(**SOC))

    assert approval == VerifiedApproval(
        action="host-isolate",
        artifact=PLAN,
        destructive=False,
        privileged=False,
        approvers=(verify.Approver(step=1, name="sam", id="7", responded_at="2026-12-06T07:00:00Z"),),
    )


@pytest.mark.parametrize(
    ("detail", "kwargs", "message"),
    [
        pytest.param(
            None,
            {},
            "approve_host_isolate: no approval request recorded in Airflow for this run",
            id="no-hitl-record",
        ),
        pytest.param(
            request(**SOC, answer="Reject"),
            {},
            "approve_host_isolate: sam answered ['Reject'], not ['Approve']",
            id="wrong-option",
        ),
        pytest.param(
            request(**SOC, answer=None),
            {},
            "approve_host_isolate: the approval request has not been answered",
            id="not-answered",
        ),
        pytest.param(
            {**request(**SOC, answer="Reject"), "responded_by_user": None},
            {},
            "approve_host_isolate: answered by nobody (the timeout's ['Reject']): not approved",
            id="timeout-default",
        ),
        pytest.param(
            request(**SOC, by="mallory"),
            {},
            "approve_host_isolate: mallory is in none of ['security_officer', 'soc_lead', 'soc_oncall'] "
            "(roles: [])",
            id="responder-not-in-group",
        ),
        pytest.param(
            request(**SOC, by="dora"),
            {},
            "approve_host_isolate: answered by dora, who triggered the run or answered an earlier step",
            id="triggering-user-answered",
        ),
        pytest.param(
            request(**SOC, artifact="b" * 64),
            {},
            f"approved 'host-isolate' for artifact {'b' * 64!r}, but this step acts on {PLAN!r}",
            id="artifact-mismatch",
        ),
        pytest.param(
            request(**SOC, artifact=None),
            {"artifact": None},
            "the approval of 'host-isolate' names no artifact; this step needs one",
            id="no-artifact-bound",
        ),
        pytest.param(
            request(action="host-isolate", roles=["soc_lead", "soc_oncall", "hr_lead"], excluded=["dora"]),
            {},
            "approve_host_isolate: asked of ['hr_lead', 'soc_lead', 'soc_oncall'], but the policy asks "
            "['soc_lead', 'soc_oncall']",
            id="asked-of-other-groups",
        ),
        pytest.param(
            request(action="host-isolate", roles=["soc_lead", "soc_oncall"], excluded=[]),
            {},
            "approve_host_isolate: the request did not exclude dora, who triggered the run",
            id="trigger-not-excluded",
        ),
        pytest.param(
            {
                **request(**SOC),
                "assigned_users": [*request(**SOC)["assigned_users"], {"id": "42", "name": "a friend"}],
            },
            {},
            "approve_host_isolate: assigned to individual users ['42'], not to groups",
            id="assigned-to-a-person",
        ),
        pytest.param(
            request(action="identity-disable", roles=["soc_lead", "soc_oncall"], excluded=["dora"]),
            {},
            'approve_host_isolate: the request was for {"action": "identity-disable", "artifact": '
            f'"{PLAN}", "destructive": false, "drill": false, "privileged": false, "step": 1, "steps": 1}}, '
            'not for {"action": "host-isolate", "destructive": false, "drill": false, "privileged": false, '
            '"step": 1, "steps": 1}',
            id="approval-of-another-action",
        ),
        pytest.param(
            request(**SOC, drill=True),
            {},
            'approve_host_isolate: the request was for {"action": "host-isolate", "artifact": '
            f'"{PLAN}", "destructive": false, "drill": true, "privileged": false, "step": 1, "steps": 1}}, '
            'not for {"action": "host-isolate", "destructive": false, "drill": false, "privileged": false, '
            '"step": 1, "steps": 1}',
            id="drill-answer-outside-a-drill",
        ),
        pytest.param(
            {**request(**SOC), "body": "Isolate.\n- **Binding:** `{}`\nsomething after"},
            {},
            "approve_host_isolate: the request has no binding line: not made by an approval gate",
            id="binding-not-last-line",
        ),
        pytest.param(
            request(**SOC),
            {"gates": []},
            "no approval gate for 'host-isolate' upstream of this step",
            id="no-gate-upstream",
        ),
    ],
)
def test_refused(detail: Mapping[str, Any] | None, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ApprovalVerificationError, match=exactly(message)):
        soc(detail, **kwargs)


HR = {"action": "identity-disable", "steps": 2, "artifact": "params:uid:sha256:x"}


def hr(step_1: Mapping[str, Any] | None, step_2: Mapping[str, Any] | None) -> VerifiedApproval:
    records = Records({HR_GATES[0].task_id: step_1, HR_GATES[1].task_id: step_2}, ROLES)
    return check_answers(
        records=records,
        dag_id="hr_offboarding",
        run_id="r2",
        domain="hr",
        action="identity-disable",
        gates=list(reversed(HR_GATES)),
        triggered_by="harriet",
        artifact="params:uid:sha256:x",
    )


def test_two_steps_by_two_people_are_verified() -> None:
    approval = hr(
        request(**HR, roles=["hr_lead"], excluded=["harriet"], by="hana"),
        request(**HR, step=2, roles=["security_officer"], excluded=["hana", "harriet"], by="seb"),
    )

    assert [(a.step, a.name) for a in approval.approvers] == [(1, "hana"), (2, "seb")]


def test_the_same_person_twice_is_refused() -> None:
    both = {**ROLES, "hana": {"hr_lead", "security_officer"}}
    records = Records(
        {
            HR_GATES[0].task_id: request(**HR, roles=["hr_lead"], excluded=["harriet"], by="hana"),
            # Suppose the exclusion of step 1's responder were missing from step 2's request.
            HR_GATES[1].task_id: request(
                **HR, step=2, roles=["security_officer"], excluded=["harriet"], by="hana"
            ),
        },
        both,
    )
    with pytest.raises(
        ApprovalVerificationError,
        match=exactly(
            "approve_identity_disable.step_2_security_officer: answered by hana, who triggered the run or "
            "answered an earlier step"
        ),
    ):
        check_answers(
            records=records,
            dag_id="hr_offboarding",
            run_id="r2",
            domain="hr",
            action="identity-disable",
            gates=HR_GATES,
            triggered_by="harriet",
            artifact="params:uid:sha256:x",
        )


def test_a_missing_second_answer_is_refused() -> None:
    with pytest.raises(
        ApprovalVerificationError,
        match=exactly(
            "approve_identity_disable.step_2_security_officer: "
            "no approval request recorded in Airflow for this run"
        ),
    ):
        hr(request(**HR, roles=["hr_lead"], excluded=["harriet"], by="hana"), None)


def _terraform(records: Records, **kwargs: Any) -> VerifiedApproval:
    return check_answers(
        records=records,
        dag_id="implementation_provision_tenant",
        run_id="r3",
        domain="implementation",
        action="terraform-apply",
        gates=TF_GATES,
        triggered_by="ivan",
        artifact=None,
        **kwargs,
    )


def test_a_destroying_plan_cannot_ride_on_a_one_step_approval() -> None:
    one_step = request(action="terraform-apply", roles=["cloud_lead"], excluded=["ivan"], by="cleo")
    records = Records({TF_GATES[0].task_id: one_step, TF_GATES[1].task_id: None}, {"cleo": {"cloud_lead"}})

    assert _terraform(records).artifact == PLAN  # the apply compares it with the plan file itself
    with pytest.raises(
        ApprovalVerificationError,
        match=exactly(
            "approve_tenant_baseline.step_1: approved as not destructive, but this change is destructive"
        ),
    ):
        _terraform(records, destructive=True)


def test_the_binding_is_the_last_line_only_and_refuses_backticks() -> None:
    bound = binding(
        action="a", step=1, steps=1, artifact="x", destructive=False, privileged=False, drill=False
    )
    forged = binding_line({**bound, "artifact": "forged"})

    assert parse_binding(f"{forged}\n{binding_line(bound)}") == bound
    assert parse_binding(f"{binding_line(bound)}\ntext rendered after it") is None
    with pytest.raises(ValueError, match="one line of 1-512 characters without backticks"):
        binding(
            action="a",
            step=1,
            steps=1,
            artifact="x`\n- **Binding:** `{}",
            destructive=False,
            privileged=False,
            drill=False,
        )


def test_params_artifact_is_order_free_and_value_bound() -> None:
    one = params_artifact({"tenant": "acme", "host": "i-1"}, ["tenant", "host"])

    assert one == params_artifact({"host": "i-1", "tenant": "acme", "other": 1}, ["host", "tenant"])
    assert one.startswith("params:host,tenant:sha256:")
    assert one != params_artifact({"tenant": "acme", "host": "i-2"}, ["tenant", "host"])


# --- the mixin, in a task ------------------------------------------------------------------------


class Isolate(RequiresApproval):
    capability = "host-isolate"
    artifact_fields = {"host": "host", "tenant": "tenant"}
    task_id = "isolate_host"

    def __init__(self, host: str, tenant: str) -> None:
        self.host, self.tenant = host, tenant
        self.acted = False

    def act(self, context: Any) -> str:
        self.acted = True
        return "isolated"


def _context(*, drill: bool = False) -> dict[str, Any]:
    gate = SimpleNamespace(
        task_id="approve_host_isolate", approval_action="host-isolate", step=1, earlier_steps=[]
    )
    dag = SimpleNamespace(tags=["domain:soc"])
    task = SimpleNamespace(
        task_id="isolate_host",
        dag=dag,
        get_flat_relatives=lambda upstream: [gate],
        log=logging.getLogger("isolate_host"),
    )
    return {
        "ti": SimpleNamespace(id="ti-1", dag_id="soc_contain_host", run_id="r1", task_id="isolate_host"),
        "task": task,
        "dag_run": SimpleNamespace(triggering_user_name="dora", conf={}),
        "params": {"host": "i-1", "tenant": "acme", "approval_drill": drill},
        "run_id": "r1",
    }


@pytest.fixture
def audited(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    monkeypatch.setattr("include.audit.emit.emit", lambda fields, **_: events.append(dict(fields)))
    return events


def _records_for(artifact: str, monkeypatch: pytest.MonkeyPatch) -> None:
    detail = request(**{**SOC, "artifact": artifact})
    monkeypatch.setattr(verify, "records_factory", lambda: Records({"approve_host_isolate": detail}, ROLES))


def test_the_step_acts_after_a_verified_approval_and_it_is_audited(
    monkeypatch: pytest.MonkeyPatch, audited: list[dict[str, Any]]
) -> None:
    _records_for(params_artifact({"host": "i-1", "tenant": "acme"}, ["host", "tenant"]), monkeypatch)
    step = Isolate("i-1", "acme")

    assert step.execute(_context()) == "isolated"
    assert verify.require_verified("ti-1", "host-isolate") is step.approval
    assert [(e["kind"], e["details"]["approvers"][0]["name"]) for e in audited] == [
        ("approval.verified", "sam")
    ]


def test_an_approval_of_another_host_does_not_act_and_is_a_policy_violation(
    monkeypatch: pytest.MonkeyPatch, audited: list[dict[str, Any]]
) -> None:
    _records_for(params_artifact({"host": "i-OTHER", "tenant": "acme"}, ["host", "tenant"]), monkeypatch)
    step = Isolate("i-1", "acme")

    with pytest.raises(
        ApprovalVerificationError, match=r"^isolate_host: refused to act: approved 'host-isolate'"
    ):
        step.execute(_context())
    assert not step.acted
    assert [(e["kind"], e["details"]["rule"]) for e in audited] == [("policy.violation", "approval-artifact")]


def test_a_drill_never_acts_whatever_the_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    _records_for(params_artifact({"host": "i-1", "tenant": "acme"}, ["host", "tenant"]), monkeypatch)
    step = Isolate("i-1", "acme")

    with pytest.raises(AirflowSkipException, match="approval drill: isolate_host"):
        step.execute(_context(drill=True))
    assert not step.acted


def test_a_privileged_step_cannot_override_execute() -> None:
    with pytest.raises(TypeError, match=exactly("Sneaky: a privileged step implements act(), not execute()")):

        class Sneaky(RequiresApproval):
            def execute(self, context: Any) -> None: ...


# --- capability roles at run time (include/connectors/aws.py) ---------------------------------------


def _in_task(monkeypatch: pytest.MonkeyPatch, *, domain: str, ti_id: str = "ti-9") -> None:
    context = _context()
    context["task"].dag.tags = [f"domain:{domain}"]
    context["ti"].id = ti_id
    monkeypatch.setattr("include.connectors.aws._running_task", lambda: context)


def _run(tenant: str = "acme") -> Any:
    from include.connectors.context import RunContext

    return RunContext(dag_id="d", run_id="r", task_id="t", tenant=tenant, correlation_id="c-1")


def test_a_task_gets_no_privileged_role_without_a_verified_approval(
    monkeypatch: pytest.MonkeyPatch, audited: list[dict[str, Any]]
) -> None:
    from include.connectors.aws import assume_role_request

    _in_task(monkeypatch, domain="soc")
    with pytest.raises(
        ApprovalVerificationError, match=r"^isolate_host: privileged capability 'host-isolate'"
    ):
        assume_role_request("host-isolate", "acme", _run())
    assert audited[-1]["details"]["rule"] == "approval-before-privileged"
    assert assume_role_request("host-inspect", "acme", _run())["RoleArn"].endswith(
        "orchestrator-host-inspect"
    )


def test_a_task_gets_no_capability_of_another_domain(
    monkeypatch: pytest.MonkeyPatch, audited: list[dict[str, Any]]
) -> None:
    from include.connectors.aws import assume_role_request

    _in_task(monkeypatch, domain="support")
    with pytest.raises(
        ApprovalVerificationError,
        match=exactly(
            "isolate_host: capability 'terraform-plan' is granted to implementation, not to this DAG's "
            "domain support"
        ),
    ):
        assume_role_request("terraform-plan", "acme", _run())
    assert audited[-1]["details"]["rule"] == "capability-domain"


def test_outside_a_task_nothing_is_checked() -> None:
    from include.connectors.aws import assume_role_request

    assert assume_role_request("host-isolate", "acme", _run())["RoleArn"].endswith(
        "orchestrator-host-isolate"
    )


# ---------------------------------------------------------------------------------------------
# Escalation: security_officer may answer a SOC request from created_at + escalate_after on


def _entry(at: str, group: str = "security_officer") -> dict[str, str]:
    return {"id": f"after:{at}:role:{group}", "name": "crafted"}


def _with_escalation(entries: list[dict[str, str]], **kwargs: Any) -> dict[str, Any]:
    detail = request(**SOC, escalate_to=[], **kwargs)
    return {**detail, "assigned_users": [*detail["assigned_users"], *entries]}


def test_an_escalation_groups_answer_after_escalation_is_verified_and_named() -> None:
    approval = soc(request(**SOC, by="seb", responded_at="2026-12-06T07:05:00.000001Z"))

    (approver,) = approval.approvers
    assert (approver.name, approver.escalation_group) == ("seb", "security_officer")
    assert approval.as_details()["approvers"] == [
        {
            "step": 1,
            "name": "seb",
            "id": "7",
            "responded_at": "2026-12-06T07:05:00.000001Z",
            "after_escalation": True,
            "escalation_group": "security_officer",
        }
    ]
    # At exactly the escalation time too; a regular approver's answer names no escalation.
    assert soc(request(**SOC, by="seb", responded_at="2026-12-06T07:05:00Z")).approvers[0].escalation_group
    assert soc(request(**SOC)).as_details()["approvers"][0].keys() == {"step", "name", "id", "responded_at"}


def test_the_escalation_time_may_differ_from_created_at_only_within_the_skew() -> None:
    # The gate takes its time just before Airflow stores the request, and rounds up to the second.
    for at in (ESCALATED - verify.ESCALATION_SKEW, ESCALATED + verify.ESCALATION_SKEW):
        detail = request(**SOC, by="seb", escalate_at=at, responded_at="2026-12-06T07:05:10Z")
        assert soc(detail).approvers[0].escalation_group == "security_officer"


ESCALATION_REFUSALS = [
    pytest.param(
        request(**SOC, by="seb", responded_at="2026-12-06T07:04:59.999999Z"),
        {},
        "approve_host_isolate: seb answered at 2026-12-06T07:04:59.999999+00:00 as security_officer, "
        "before escalation at 2026-12-06T07:05:00+00:00",
        id="answered-before-escalation",
    ),
    pytest.param(
        request(**SOC, by="seb", escalate_at=datetime(2026, 12, 6, 6, 55, tzinfo=UTC)),
        {},
        "approve_host_isolate: 'security_officer' may answer from 2026-12-06T06:55:00+00:00, earlier than "
        "the policy's escalation at 2026-12-06T07:05:00+00:00 (request at 2026-12-06T06:55:00+00:00 + "
        "0:10:00)",
        id="crafted-earlier-time",
    ),
    pytest.param(
        request(**SOC, escalate_at=ESCALATED - verify.ESCALATION_SKEW - timedelta(seconds=1)),
        {},
        "approve_host_isolate: 'security_officer' may answer from 2026-12-06T07:04:49+00:00, earlier than "
        "the policy's escalation at 2026-12-06T07:05:00+00:00 (request at 2026-12-06T06:55:00+00:00 + "
        "0:10:00)",
        id="just-beyond-the-skew-even-if-a-regular-approver-answered",
    ),
    pytest.param(
        request(**SOC, escalate_at=datetime(2026, 12, 6, 9, 0, tzinfo=UTC)),
        {},
        "approve_host_isolate: 'security_officer' may answer from 2026-12-06T09:00:00+00:00, later than "
        "the policy's escalation at 2026-12-06T07:05:00+00:00 (request at 2026-12-06T06:55:00+00:00 + "
        "0:10:00)",
        id="not-the-policys-time",
    ),
    pytest.param(
        request(**SOC, escalate_to=["hr_lead"]),
        {},
        "approve_host_isolate: escalates to ['hr_lead'], but the policy escalates to ['security_officer']",
        id="unknown-escalation-group",
    ),
    pytest.param(
        request(**SOC, escalate_to=["security_officer", "soc_lead"]),
        {},
        "approve_host_isolate: escalates to ['security_officer', 'soc_lead'], but the policy escalates to "
        "['security_officer']",
        id="extra-escalation-group",
    ),
    pytest.param(
        request(**SOC, escalate_to=[]),
        {},
        "approve_host_isolate: escalates to [], but the policy escalates to ['security_officer']",
        id="escalation-missing",
    ),
    pytest.param(
        _with_escalation([_entry("2026-12-06T07:05:00Z"), _entry("2026-12-06T07:05:01Z")]),
        {},
        "approve_host_isolate: escalation group 'security_officer' asked twice",
        id="escalation-group-twice",
    ),
    pytest.param(
        _with_escalation([_entry("2026-12-06T07:05:00+00:00")]),
        {},
        "approve_host_isolate: malformed escalation entry "
        "'after:2026-12-06T07:05:00+00:00:role:security_officer'",
        id="malformed-time-offset",
    ),
    pytest.param(
        _with_escalation([_entry("2026-13-06T07:05:00Z")]),
        {},
        "approve_host_isolate: malformed escalation entry 'after:2026-13-06T07:05:00Z:role:security_officer'",
        id="malformed-time-month-13",
    ),
    pytest.param(
        _with_escalation([{"id": "after:2026-12-06T07:05:00Z:security_officer", "name": "x"}]),
        {},
        "approve_host_isolate: malformed escalation entry 'after:2026-12-06T07:05:00Z:security_officer'",
        id="malformed-no-role-prefix",
    ),
    pytest.param(
        {**request(**SOC), "created_at": None},
        {},
        "approve_host_isolate: no request time to check the escalation time against",
        id="no-created-at",
    ),
    pytest.param(
        request(**SOC, by="hana", responded_at="2026-12-06T07:06:00Z"),
        {},
        "approve_host_isolate: hana is in none of ['security_officer', 'soc_lead', 'soc_oncall'] "
        "(roles: ['hr_lead'])",
        id="other-domains-group-after-escalation",
    ),
    pytest.param(
        request(**SOC, by="dora", responded_at="2026-12-06T07:06:00Z"),
        {},
        "approve_host_isolate: answered by dora, who triggered the run or answered an earlier step",
        id="trigger-in-the-escalation-group-after-escalation",
    ),
    pytest.param(
        request(**SOC, by="seb", responded_at="yesterday"),
        {},
        "approve_host_isolate: answered by seb of ['security_officer'] at no recorded time",
        id="unreadable-answer-time",
    ),
    pytest.param(
        request(**SOC, by="seb", responded_at="2026-12-06T07:06:00Z"),
        {"gates": [GateRef("approve_host_isolate", 1, escalate_after=timedelta(minutes=11))]},
        "approve_host_isolate: escalates after 0:11:00, later than the policy's 0:10:00",
        id="gate-ladder-looser-than-policy",
    ),
]


@pytest.mark.parametrize(("detail", "kwargs", "message"), ESCALATION_REFUSALS)
def test_escalation_refused(detail: Mapping[str, Any], kwargs: dict[str, Any], message: str) -> None:
    roles = {**ROLES, "dora": {"security_officer"}}
    arguments: dict[str, Any] = {
        "dag_id": "soc_contain_host",
        "run_id": "r1",
        "domain": "soc",
        "action": "host-isolate",
        "gates": ONE_GATE,
        "triggered_by": "dora",
        "artifact": PLAN,
        **kwargs,
    }
    with pytest.raises(ApprovalVerificationError, match=exactly(message)) as refused:
        check_answers(records=Records({"approve_host_isolate": detail}, roles), **arguments)
    assert refused.value.rule in {"escalation", "approver-group", "four-eyes"}  # type: ignore[attr-defined]


def test_a_gates_tighter_ladder_and_a_drill_move_the_escalation_time() -> None:
    created = datetime(2026, 12, 6, 6, 55, tzinfo=UTC)
    tight = [GateRef("approve_host_isolate", 1, escalate_after=timedelta(minutes=2))]
    detail = request(
        **SOC, by="seb", escalate_at=created + timedelta(minutes=2), responded_at="2026-12-06T06:57:00Z"
    )
    assert soc(detail, gates=tight).approvers[0].escalation_group == "security_officer"
    # The same entry against the policy's ladder (the gate's own ladder unknown) is a crafted time.
    with pytest.raises(ApprovalVerificationError, match="earlier than the policy's escalation"):
        soc(detail)
    # A drill escalates at the drill ladder's 20 s.
    drill = request(
        **SOC,
        by="seb",
        drill=True,
        escalate_at=created + timedelta(seconds=20),
        responded_at="2026-12-06T06:55:20Z",
    )
    assert soc(drill, drill=True).approvers[0].escalation_group == "security_officer"
    early = {**drill, "responded_at": "2026-12-06T06:55:19Z"}
    with pytest.raises(ApprovalVerificationError, match="before escalation at 2026-12-06T06:55:20"):
        soc(early, drill=True)


def test_a_request_escalating_where_the_policy_does_not_is_refused() -> None:
    crafted = request(
        **HR, roles=["hr_lead"], excluded=["harriet"], by="hana", escalate_to=["security_officer"]
    )
    with pytest.raises(
        ApprovalVerificationError,
        match=exactly(
            "approve_identity_disable.step_1_hr_lead: escalates to ['security_officer'], but the policy "
            "escalates to []"
        ),
    ):
        hr(crafted, request(**HR, step=2, roles=["security_officer"], excluded=["hana", "harriet"], by="seb"))


def test_gates_upstream_carry_the_gates_own_escalate_after() -> None:
    gate = SimpleNamespace(
        task_id="approve_host_isolate",
        approval_action="host-isolate",
        step=1,
        earlier_steps=[],
        ladder=SimpleNamespace(escalate_after=timedelta(minutes=3)),
    )
    task = SimpleNamespace(get_flat_relatives=lambda upstream: [gate])
    assert verify.gates_upstream(task, "host-isolate") == [
        GateRef("approve_host_isolate", 1, escalate_after=timedelta(minutes=3))
    ]
