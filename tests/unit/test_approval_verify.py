"""The approval guarantee's verification (include/approvals/verify.py), on in-memory HITL records.

Each refusal path is a named case with its exact message; the records are shaped as Airflow's
public API returns them (``GET .../hitlDetails``), built with the gate's own binding line.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowSkipException

from include.approvals import verify
from include.approvals.respondents import assigned_respondents
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
) -> dict[str, Any]:
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
        "assigned_users": list(assigned_respondents(roles, excluded)),
        "response_received": answered,
        "chosen_options": [answer] if answered else None,
        "responded_by_user": {"id": "7", "name": by} if answered and by else None,
        "responded_at": "2026-12-06T07:00:00Z" if answered else None,
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
            "approve_host_isolate: mallory is in none of ['soc_lead', 'soc_oncall'] (roles: [])",
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
