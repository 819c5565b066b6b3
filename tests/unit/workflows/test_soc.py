"""The SOC skeleton (include/workflows/soc.py) offline: the params in the trigger form's order, the
tasks and dependencies ``soc_action`` builds (the write-back beside the evidence), an undo's keys,
and a change that is not the approved action refused when the DAG is parsed."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from airflow.sdk import DAG, Param, TaskGroup
from airflow.sdk.exceptions import AirflowSkipException, ParamValidationError
from airflow.task.trigger_rule import TriggerRule
from jinja2.sandbox import SandboxedEnvironment

from include.operators.ec2 import InspectHostOperator, IsolateHostOperator
from include.operators.ticketing import CommentTicketOperator
from include.workflows import domain_workflow
from include.workflows.failures import failure_text
from include.workflows.incidents import IncidentWritebackOperator
from include.workflows.soc import (
    ALERT,
    HANDLED_ONCE,
    RELEASED_ONCE,
    TENANT,
    approver,
    soc_action,
    soc_params,
)

HOST = "{{ params.host }}"
TARGET = {"host": Param(type="string", pattern="^i-[0-9a-f]{8}$", description="the host")}


def _dag(**action: Any) -> DAG:
    """A SOC DAG of one ``soc_action`` (host-isolate), built as a DAG file builds it."""
    undo = action.get("undo")
    params = soc_params(TARGET, severity=not undo, reason="Why" if undo else None)

    @domain_workflow(domain="soc", dag_id="soc_test_action", doc_md="A test SOC action.", params=params)
    def test_action() -> None:
        soc_action(
            "host-isolate",
            inspect=InspectHostOperator(task_id="inspect_host", tenant=TENANT, host=HOST),
            ticket_subject="Contain " + HOST,
            gate_subject="Isolate " + HOST,
            artifact_params=("host", "tenant"),
            change=lambda: IsolateHostOperator(task_id="isolate_host", tenant=TENANT, host=HOST),
            evidence="Host " + HOST + " isolated.",
            done="Host " + HOST + " isolated.",
            **action,
        )

    return test_action()


# --- the params ---------------------------------------------------------------------------------------
def test_the_params_come_in_the_trigger_forms_order() -> None:
    extra = {"mode": Param("a", type="string", enum=["a", "b"])}
    before = {"until": Param(type="string")}
    params = soc_params(TARGET, before_alert=before, extra=extra)
    assert list(params) == ["host", "tenant", "severity", "until", "alert_id", "mode", "summary"]
    assert params["alert_id"].description == HANDLED_ONCE
    assert params["severity"].resolve() == "high"
    assert params["summary"].resolve() == ""
    undo = soc_params(TARGET, severity=False, reason="Why the host may be released")
    assert list(undo) == ["host", "tenant", "alert_id", "reason"]
    assert undo["alert_id"].description == RELEASED_ONCE
    assert undo["reason"].description == "Why the host may be released"


@pytest.mark.parametrize("value", ["ab", "-ALERT-1", "A 1", "A" * 65, "ALERT/1"])
def test_a_malformed_alert_id_or_unknown_tenant_is_refused(value: str) -> None:
    params = soc_params(TARGET)
    with pytest.raises(ParamValidationError):
        params["alert_id"].resolve(value)
    assert params["alert_id"].resolve("DEF-7001") == "DEF-7001"
    with pytest.raises(ParamValidationError):
        params["tenant"].resolve("no-such-tenant")
    with pytest.raises(ParamValidationError):
        params["summary"].resolve("x" * 501)


# --- the skeleton ------------------------------------------------------------------------------------
def test_soc_action_chains_the_skeleton_with_the_write_back_beside_the_evidence() -> None:
    dag = _dag()
    upstream = {t.task_id: t.upstream_task_ids for t in dag.tasks}
    assert upstream == {
        "inspect_host": set(),
        "open_ticket": {"inspect_host"},
        "approve_host_isolate": {"open_ticket"},
        "isolate_host": {"approve_host_isolate"},
        "evidence": {"isolate_host"},
        "change_failed": {"isolate_host"},
        "incident_writeback": {"isolate_host"},
    }
    failed = dag.get_task("change_failed")
    assert (failed.trigger_rule, failed.idempotency_basis) == (TriggerRule.ONE_FAILED, ALERT + "-failed")
    assert failed.skip_without_ticket is True
    # one_failed fires too when the read-only step failed before any ticket: the id renders empty
    # (and the comment skips, below), not an UndefinedError retried by the domain's retries
    render = SandboxedEnvironment().from_string(failed.ticket_id).render
    assert render(ti=SimpleNamespace(xcom_pull=lambda task_ids: None)) == ""
    assert render(ti=SimpleNamespace(xcom_pull=lambda task_ids: {"id": "42"})) == "42"
    with pytest.raises(AirflowSkipException, match="change_failed: the run has no ticket"):
        CommentTicketOperator(
            task_id="change_failed", tenant="acme", ticket_id=" ", body="b", skip_without_ticket=True
        ).execute({})
    # the shared comment (include/workflows/failures.py, tested there), for this one step, with no
    # question to the gates: as before the move
    assert (failed.steps, failed.gates) == (["isolate_host"], [])
    assert failure_text(failed.steps, "manual__1").startswith(
        "The approved step isolate_host failed or could not run in run manual__1: its change is not made."
    )
    writeback = dag.get_task("incident_writeback")
    assert isinstance(writeback, IncidentWritebackOperator)
    assert (writeback.is_teardown, writeback.trigger_rule) == (True, TriggerRule.ALL_DONE_SETUP_SUCCESS)
    assert (writeback.domain_action, writeback.release) == ("host-isolate", False)
    assert writeback.done == "Host {{ params.host }} isolated."
    assert list(dag.params)[-3:] == ["correlation_id", "approval_drill", "incident_id"]

    ticket = dag.get_task("open_ticket")
    inspected = "{{ ti.xcom_pull(task_ids='inspect_host')['markdown'] }}"
    assert ticket.body == "Alert {{ params.alert_id }}: {{ params.summary }}\n\n" + inspected
    assert ticket.fields == {"Severity": "{{ params.severity }}"}  # the DAG has a severity param
    assert ticket.idempotency_basis == ALERT
    gate = dag.get_task("approve_host_isolate")
    assert (gate.body, gate.artifact_params) == (inspected, ("host", "tenant"))
    evidence = dag.get_task("evidence")
    assert evidence.body == (
        "Host {{ params.host }} isolated. Approved by "
        "{{ ti.xcom_pull(task_ids='approve_host_isolate', key='approval')['responded_by']['name'] }}."
    )
    assert evidence.ticket_id == "{{ ti.xcom_pull(task_ids='open_ticket')['id'] }}"
    # the change is built after the gate, so it sees the gate's drill param (it skips a drill)
    assert "approval_drill" in dag.get_task("isolate_host").params


def test_an_undo_has_its_own_keys_and_releases() -> None:
    dag = _dag(undo="release")
    ticket = dag.get_task("open_ticket")
    assert ticket.body.startswith("Release after alert {{ params.alert_id }}: {{ params.reason }}\n\n")
    assert ticket.fields == {}  # no severity param
    assert ticket.idempotency_basis == "release-{{ params.alert_id }}"
    assert dag.get_task("change_failed").idempotency_basis == "release-{{ params.alert_id }}-failed"
    assert dag.get_task("evidence").idempotency_basis == "release-{{ params.alert_id }}"
    assert dag.get_task("incident_writeback").release is True


def test_a_change_that_is_not_the_approved_action_is_refused() -> None:
    @domain_workflow(domain="soc", dag_id="soc_test_wrong", doc_md="Wrong.", params=soc_params(TARGET))
    def wrong() -> None:
        soc_action(
            "host-isolate",
            inspect=InspectHostOperator(task_id="inspect_host", tenant=TENANT, host=HOST),
            ticket_subject="Contain",
            gate_subject="Isolate",
            artifact_params=("host", "tenant"),
            change=lambda: InspectHostOperator(task_id="look_again", tenant=TENANT, host=HOST),
            evidence="Looked.",
            done="Looked.",
        )

    with pytest.raises(ValueError, match="'look_again' has capability 'host-inspect', not the approved"):
        wrong()


def test_the_approver_of_a_several_step_approval_is_its_last_steps() -> None:
    from airflow.providers.standard.operators.empty import EmptyOperator

    with DAG("soc_test_group", schedule=None), TaskGroup("approve_x") as group:
        EmptyOperator(task_id="step_1") >> EmptyOperator(task_id="step_2")
    assert "task_ids='approve_x.step_2'" in approver(group)
