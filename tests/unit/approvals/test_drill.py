"""Approval drills: the policy's drill ladder, only ever shorter, the trigger param, the gate's use."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import Param
from airflow.sdk.exceptions import TaskDeferred

from include.operators.approval import DRILL_PARAM, ApprovalGateOperator
from include.policies.approvals import (
    LADDER_KEYS,
    Ladder,
    load_approvals,
)
from include.workflows import domain_workflow
from include.workflows.approval import approval_gate

DOC = "Test workflow for approval drills."
DRILL = Ladder(timedelta(seconds=10), timedelta(seconds=20), timedelta(seconds=30), ())


def test_the_drill_ladder_loads_and_keeps_who_is_escalated_to():
    policy = load_approvals()
    assert policy.drill_ladder == {
        "remind_after": DRILL.remind_after,
        "escalate_after": DRILL.escalate_after,
        "timeout": DRILL.timeout,
    }
    soc = policy.rule("soc", "host-isolate").ladder
    assert policy.drill(soc) == replace(DRILL, escalate_to=soc.escalate_to)


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        pytest.param(
            lambda d: d.pop("drill_ladder"), "<root>: 'drill_ladder' is a required property", id="missing"
        ),
        pytest.param(
            lambda d: d["drill_ladder"].pop("timeout"),
            "drill_ladder: 'timeout' is a required property",
            id="missing-step",
        ),
        pytest.param(
            lambda d: d["drill_ladder"].update({"timeout": "30 seconds"}),
            "drill_ladder.timeout: '30 seconds' does not match '^[1-9][0-9]*[smhd]$'",
            id="bad-duration",
        ),
        pytest.param(
            lambda d: d["drill_ladder"].update({"escalate_to": ["x@secops.example"]}),
            "drill_ladder: Additional properties are not allowed ('escalate_to' was unexpected)",
            id="escalate-to-is-the-policys",
        ),
        pytest.param(
            lambda d: d["drill_ladder"].update({"remind_after": "1m"}),
            "drill_ladder: escalation ladder out of order: remind_after (0:01:00) < escalate_after "
            "(0:00:20) < timeout (0:00:30) must hold",
            id="out-of-order",
        ),
    ],
)
def test_an_invalid_drill_ladder_is_refused_naming_the_key(approvals_problems, change, problem):
    assert problem in approvals_problems(change)


def test_a_drill_never_makes_a_ladder_longer():
    soc = load_approvals().rule("soc", "host-isolate").ladder
    slow = replace(
        load_approvals(), drill_ladder={key: timedelta(hours=1) * n for n, key in enumerate(LADDER_KEYS, 1)}
    )
    assert slow.drill(soc) == soc  # longer than the policy's: not used
    tight = soc.tightened(remind_after=timedelta(seconds=5))  # a workflow's own, shorter than the drill's
    assert load_approvals().drill(tight) == Ladder(  # each step: the earlier of the two
        timedelta(seconds=5), DRILL.escalate_after, DRILL.timeout, soc.escalate_to
    )


def _dag_with(build) -> Any:
    @domain_workflow(domain="soc", doc_md=DOC, params={"host": Param("web-01", type="string")})
    def drill_test() -> None:
        build()

    return drill_test()


def test_the_drill_param_is_added_only_to_dags_with_a_gate():
    gated = _dag_with(lambda: approval_gate("host-isolate", subject="Isolate", body="Isolate web-01"))
    plain = _dag_with(lambda: EmptyOperator(task_id="isolate"))

    param = gated.params.get_param(DRILL_PARAM)
    assert (param.value, param.schema["type"], param.schema["title"]) == (False, "boolean", "Approval drill")
    assert "privileged steps are skipped whatever the answer" in param.description
    assert DRILL_PARAM not in plain.params
    assert list(gated.params) == ["host", "correlation_id", DRILL_PARAM]  # the workflow's own come first
    gate = gated.get_task("approve_host_isolate")
    assert list(gate.params) == ["comment", "otp"]  # the drill flag is not in the answer form


def test_the_gate_asks_at_drill_pace_and_marks_the_request(monkeypatch):
    from include.operators import approval as module

    sent: list[str] = []
    audited: list[dict[str, Any]] = []
    monkeypatch.setattr(module, "upsert_hitl_detail", lambda **kwargs: None)
    monkeypatch.setattr(
        module, "send_email", lambda to, subject, html, **kw: sent.append(subject) or {"to": to}
    )
    monkeypatch.setattr(module, "task_event", lambda context, kind, **kwargs: {"kind": kind, **kwargs})
    monkeypatch.setattr(module, "audit_emit", audited.append)
    dag = _dag_with(lambda: approval_gate("host-isolate", subject="Isolate", body="Isolate web-01"))
    gate: ApprovalGateOperator = dag.get_task("approve_host_isolate")
    ti = SimpleNamespace(
        id="0190d8a1-0000-7000-8000-000000000000",
        dag_id=dag.dag_id,
        run_id="manual__1",
        task_id=gate.task_id,
        map_index=-1,
        xcom_push=lambda **kwargs: None,
    )
    context = {
        "ti": ti,
        "dag_run": SimpleNamespace(triggering_user_name="lea", conf={DRILL_PARAM: True}),
        "params": {"host": "web-01", DRILL_PARAM: True},
        "run_id": "manual__1",
    }

    with pytest.raises(TaskDeferred) as deferred:
        gate.execute(context)

    trigger = deferred.value.trigger
    facts = deferred.value.kwargs["facts"]
    assert facts["drill"] is True
    requested = module.RequestFacts.from_dict(facts).requested_at
    assert trigger.timeout_datetime - requested == DRILL.timeout
    assert module.RequestFacts.from_dict(trigger.facts).escalate_at - requested == DRILL.escalate_after
    assert trigger.facts["escalate_to"] == list(gate.ladder.escalate_to)
    assert sent == ["[DRILL][Approval needed][soc] host-isolate: Isolate"]
    (record,) = audited
    assert record["details"]["drill"] is True
    assert record["subject"].startswith("[DRILL]")
    assert gate.ladder == load_approvals().rule("soc", "host-isolate").ladder  # the gate keeps its own
    assert gate.ladder_for(drill=False) == gate.ladder
