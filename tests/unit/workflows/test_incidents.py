"""Incident write-back (include/workflows/incidents.py) offline: the outcome read from a run, the
comment and its marker, the param, and the task's place in the SOC DAGs: a teardown right after the
privileged step, beside the evidence, that a reject does not skip and that never decides the run's
state."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.sdk import DAG
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException, ParamValidationError

from include.workflows.incidents import (
    DONE,
    FAILED,
    REJECTED,
    TIMED_OUT,
    IncidentWritebackOperator,
    RunOutcome,
    compose,
    incident_param,
    incident_writeback,
    run_outcome,
)

ROOT = Path(__file__).resolve().parents[3]
SOC_DAGS = {
    # DAG: (dag id, action, the privileged step the write-back follows, the task deciding the run's state)
    "contain_host": ("soc_contain_host", "host-isolate", "isolate_host", "evidence"),
    "disable_account": ("soc_disable_account", "identity-disable", "disable_account", "evidence"),
    "disable_entra_user": ("soc_disable_entra_user", "entra-user-disable", "disable_user", "evidence"),
    "enable_entra_user": ("soc_enable_entra_user", "entra-user-enable", "enable_user", "evidence"),
    "isolate_device": ("soc_isolate_device", "device-isolate", "isolate_device", "evidence"),
    "release_device": ("soc_release_device", "device-release", "release_device", "evidence"),
    "block_indicator": ("soc_block_indicator", "perimeter-block", "block_indicator", "resolve_ticket"),
}
ORDER = ["inspect_user", "open_ticket", "approve", "disable_user", "evidence"]


@cache
def soc_dag(name: str) -> Any:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags" / "soc" / f"{name}.py"), safe_mode=False)
    assert not bag.import_errors, bag.import_errors
    (dag,) = bag.dags.values()
    return dag


@dataclass(frozen=True)
class _TI:
    task_id: str
    state: str


def approved(name: str) -> dict[str, Any]:
    return {"outcome": "approved", "approved": True, "responded_by": {"name": name}}


# --- the outcome of a run ------------------------------------------------------------------------------
def test_done_when_every_privileged_step_succeeded_named_by_its_approvers() -> None:
    states = dict.fromkeys(ORDER, "success")
    outcome = run_outcome(
        gates=[approved("ezra")], steps={"disable_user": "success"}, states=states, order=ORDER
    )
    assert outcome == RunOutcome(DONE, people=("ezra",))
    # an evidence comment that failed afterwards does not undo the containment
    states["evidence"] = "failed"
    assert (
        run_outcome(
            gates=[approved("ezra")], steps={"disable_user": "success"}, states=states, order=ORDER
        ).result
        == DONE
    )


def test_a_reject_or_a_timeout_decides_whatever_ran() -> None:
    rejected = {
        "outcome": "rejected",
        "approved": False,
        "responded_by": {"name": "lena"},
        "comment": "false positive",
    }
    states = {"inspect_user": "success", "open_ticket": "success", "approve": "success"}
    states |= {"disable_user": "skipped", "evidence": "skipped"}
    assert run_outcome(gates=[rejected], steps={"disable_user": "skipped"}, states=states, order=ORDER) == (
        RunOutcome(REJECTED, people=("lena",), answer="false positive")
    )
    timed_out = {"outcome": "timed_out", "approved": False, "responded_by": None}
    assert run_outcome(gates=[timed_out], steps={"disable_user": "skipped"}, states=states, order=ORDER) == (
        RunOutcome(TIMED_OUT)
    )
    # the second step of a two-step approval rejected after the first approved
    assert (
        run_outcome(
            gates=[approved("ezra"), rejected], steps={"disable_user": "skipped"}, states=states, order=ORDER
        ).result
        == REJECTED
    )


def test_failed_names_the_first_task_that_failed() -> None:
    states = {"inspect_user": "failed"} | dict.fromkeys(ORDER[1:], "upstream_failed")
    assert run_outcome(
        gates=[None], steps={"disable_user": "upstream_failed"}, states=states, order=ORDER
    ) == (RunOutcome(FAILED, at="inspect_user", state="failed"))
    states = dict.fromkeys(ORDER[:3], "success") | {"disable_user": "failed", "evidence": "upstream_failed"}
    assert run_outcome(
        gates=[approved("ezra")], steps={"disable_user": "failed"}, states=states, order=ORDER
    ) == RunOutcome(FAILED, at="disable_user", state="failed")


# --- the comment ---------------------------------------------------------------------------------------
def test_the_comment_says_what_who_ticket_and_correlation_and_ends_with_its_marker() -> None:
    ids: dict[str, Any] = {
        "dag_id": "soc_disable_entra_user",
        "run_id": "manual__1",
        "correlation_id": "corr-1",
    }
    text, marker = compose(
        RunOutcome(DONE, people=("ezra",)),
        **ids,
        basis="DEF-1",
        done="Entra user m@acme.example: sign-in blocked",
        ticket_id="42",
    )
    assert text == (
        "Orchestrator soc_disable_entra_user: contained. Entra user m@acme.example: sign-in blocked. "
        "Approved by ezra. Ticket 42. Correlation id corr-1; run manual__1.\n"
        "[orchestrator:soc_disable_entra_user:DEF-1:done]"
    )
    assert marker == text.splitlines()[-1]
    text, marker = compose(
        RunOutcome(REJECTED, people=("lena",), answer="false\npositive " + "x" * 400), **ids, basis=""
    )
    assert text.startswith(
        'Orchestrator soc_disable_entra_user: not contained: rejected by lena ("false positive x'
    )
    assert len(text.splitlines()[0]) < 400  # the approver's comment is cut, on one line
    assert marker == "[orchestrator:soc_disable_entra_user:corr-1:rejected]"  # no alert: the correlation id
    text, _ = compose(RunOutcome(FAILED, at="inspect_user", state="failed"), **ids, basis="A", release=True)
    assert "not released: the run stopped at inspect_user (failed)" in text
    assert "no approval before the deadline" in compose(RunOutcome(TIMED_OUT), **ids, basis="A")[0]


# --- the param -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["", "1001", "2972395", "1" * 19])
def test_the_param_takes_nothing_or_an_incident_id(value: str) -> None:
    assert incident_param().resolve(value) == value


@pytest.mark.parametrize("value", ["1001; DROP", "abc", "../1001", "1" * 20, "-1", "1001\n"])
def test_the_param_refuses_anything_else(value: str) -> None:
    with pytest.raises(ParamValidationError):
        incident_param().resolve(value)


def test_the_factory_adds_the_param_and_refuses_a_looser_one() -> None:
    with DAG("wb_factory", schedule=None) as dag:
        task = incident_writeback("host-isolate")
    assert dag.params.get_param("incident_id").schema["pattern"] == incident_param().schema["pattern"]
    assert task.is_teardown
    assert task.task_id == "incident_writeback"
    from airflow.sdk import Param

    loose = {"incident_id": Param("", type="string")}
    with (
        DAG("wb_loose", schedule=None, params=loose),
        pytest.raises(ValueError, match=r"must be incident_param\(\) of include\.workflows\.incidents"),
    ):
        incident_writeback("host-isolate")
    with pytest.raises(ValueError, match="inside a DAG"):
        incident_writeback("host-isolate")


# --- its place in the SOC DAGs ----------------------------------------------------------------------------
def test_every_soc_dag_is_here() -> None:
    assert {p.stem for p in (ROOT / "dags" / "soc").glob("*.py")} - {"service_check"} == set(SOC_DAGS)


@pytest.mark.parametrize("name", sorted(SOC_DAGS))
def test_every_soc_dag_writes_back_beside_its_evidence_as_a_teardown(name: str) -> None:
    from airflow.models.dagrun import DagRun
    from airflow.task.trigger_rule import TriggerRule

    from include.operators.approval import ApprovalGateOperator

    dag_id, action, after, leaf = SOC_DAGS[name]
    dag = soc_dag(name)
    assert dag.dag_id == dag_id
    task = dag.get_task("incident_writeback")
    assert isinstance(task, IncidentWritebackOperator)
    assert (task.domain_action, task.is_teardown, task.upstream_task_ids) == (action, True, {after})
    assert dag.get_task(after).capability == action
    # right after the change, beside its evidence: never waits for the evidence comment
    evidence = "block_evidence" if name == "block_indicator" else "evidence"
    assert dag.get_task(evidence).upstream_task_ids == {after}
    assert evidence not in task.get_flat_relative_ids(upstream=True)
    # runs once the change is done, whatever its state: no setup task can make it skip
    assert task.trigger_rule == TriggerRule.ALL_DONE_SETUP_SUCCESS
    assert not any(dag.get_task(t).is_setup for t in task.get_flat_relative_ids(upstream=True))
    assert "incident_id" in dag.params
    # a reject skips the change (and so what follows it) but never the write-back
    gate = next(t for t in dag.tasks if getattr(t, "approval_action", None) == action)
    skipped = ApprovalGateOperator._downstream_to_skip(gate, {"task": gate})
    assert any(getattr(dag.get_task(t), "capability", None) == action for t in skipped)
    assert "incident_writeback" not in skipped
    # the ticket hears of a failed change: a comment right after it, only when it failed or could
    # not run (one_failed: a skipped change, as after a reject, skips it too)
    failure_comments = {"change_failed": after}
    if name == "block_indicator":
        failure_comments["unblock_failed"] = "unblock_indicator"
    for comment_id, step in failure_comments.items():
        comment = dag.get_task(comment_id)
        assert (comment.upstream_task_ids, comment.trigger_rule) == ({step}, TriggerRule.ONE_FAILED)
    # the run's state comes from the work (a failed change leaves its evidence upstream_failed),
    # never from the write-back
    tis = [_TI(t.task_id, "success") for t in dag.tasks]
    leaves = {ti.task_id for ti in DagRun._tis_for_dagrun_state(None, dag=dag, tis=tis)}  # type: ignore[arg-type]
    assert leaves == {leaf, *failure_comments}


def test_the_entra_disable_no_longer_comments_from_its_privileged_step() -> None:
    disable = soc_dag("disable_entra_user").get_task("disable_user")
    # the write-back does it, with its own non-privileged app: the privileged step has no incident
    assert "incident_id" not in disable.template_fields
    assert not hasattr(disable, "incident_id")


# --- the task, before any call ------------------------------------------------------------------------------
def _context(task: IncidentWritebackOperator, **params: Any) -> dict[str, Any]:
    ti = SimpleNamespace(dag_id="soc_contain_host", run_id="manual__1", task_id=task.task_id, try_number=1)
    return {
        "ti": ti,
        "task": task,
        "params": params,
        "dag_run": SimpleNamespace(conf={}),
        "run_id": "manual__1",
    }


@pytest.fixture
def no_calls(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """No Graph hook may be built; audit events are collected."""
    import include.audit.emit as emit_module
    import include.connectors.microsoft as microsoft

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a Graph hook was built")

    events: list[dict[str, Any]] = []
    monkeypatch.setattr(microsoft, "GraphHook", refuse)
    monkeypatch.setattr(emit_module, "emit", lambda fields, **kw: events.append(dict(fields)))
    return events


def test_no_incident_is_a_skip_and_a_malformed_one_fails_before_any_call(
    no_calls: list[dict[str, Any]],
) -> None:
    task = soc_dag("contain_host").get_task("incident_writeback")
    task.tenant, task.incident_id = "acme", ""
    with pytest.raises(AirflowSkipException, match="no incident_id"):
        task.execute(_context(task))
    task.incident_id = "1001; rm -rf"
    with pytest.raises(AirflowFailException, match="not a Defender/Sentinel incident id"):
        task.execute(_context(task))
    (event,) = no_calls
    assert event["kind"] == "notification.failed"
    assert event["details"]["channel"] == "incident"
    assert event["tenant"] == "acme"


def test_a_drill_does_not_touch_the_incident(no_calls: list[dict[str, Any]]) -> None:
    task = soc_dag("contain_host").get_task("incident_writeback")
    task.tenant, task.incident_id = "acme", "1001"
    with pytest.raises(AirflowSkipException, match="approval drill"):
        task.execute(_context(task, approval_drill=True))
    assert no_calls == []


# --- an alert from the SIEM carries its incident to the run ----------------------------------------------
def _alert(**data: Any) -> str:
    import json

    fields = {"tenant": "acme", "severity": "high", "host": "i-0123456789abcdef0", "ip": "203.0.113.7"}
    document = {
        "source": "siem-alerts",
        "id": "ALERT-0042",
        "kind": "siem.alert",
        "occurred_at": "2026-12-07T01:00:00Z",
        "data": fields | data,
    }
    return json.dumps(document)


def test_an_alerts_incident_id_reaches_both_soc_runs_and_a_bad_one_is_dead_lettered() -> None:
    from include.intake.events import EventRejected, parse_event, starts_for
    from include.intake.policy import load_intake

    source = load_intake().source("siem-alerts")
    event = parse_event(_alert(incident_id="2972395"), source)
    starts = starts_for(event, source.events[event.kind], message_id="m-1")
    assert {s.workflow: s.conf["incident_id"] for s in starts} == {
        "soc_contain_host": "2972395",
        "soc_block_indicator": "2972395",
    }
    without = parse_event(_alert(), source)
    assert all(
        "incident_id" not in s.conf
        for s in starts_for(without, source.events[without.kind], message_id="m-2")
    )
    with pytest.raises(EventRejected, match="incident_id"):
        parse_event(_alert(incident_id="1001; DROP"), source)


def test_a_done_text_that_does_not_render_is_left_out_and_one_task_retry_only() -> None:
    task = soc_dag("disable_entra_user").get_task("incident_writeback")
    assert task.retries == 1
    assert "done" not in task.template_fields  # rendered for a done run only
    ti = SimpleNamespace(xcom_pull=lambda **kwargs: None)
    assert "sessions revoked." in task._render_done({"ti": ti, "params": {"user": "m@acme.example"}})
    broken = IncidentWritebackOperator(
        task_id="wb",
        domain_action="x",
        tenant="acme",
        incident_id="1",
        done="{{ ti.xcom_pull(task_ids='a')['b'] }}",
    )
    assert broken._render_done({"ti": ti}) == ""
