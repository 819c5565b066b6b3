"""The shared "an approved change failed" ticket comment (include/workflows/failures.py) offline: what
it says (the failed steps, read from Airflow), when it skips (no ticket, nothing approved), its key,
and where each privileged workflow with a ticket puts it (SOC's is in test_soc.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest import mock

import pytest
from airflow.sdk.definitions.mappedoperator import MappedOperator
from airflow.sdk.exceptions import AirflowSkipException
from airflow.task.trigger_rule import TriggerRule
from jinja2.sandbox import SandboxedEnvironment

from include.approvals.verify import RequiresApproval
from include.operators.approval import ApprovalGateOperator
from include.operators.ticketing import CommentTicketOperator
from include.policies.checks import load_dag_folder
from include.workflows.failures import ChangeFailedCommentOperator, failure_text

REPO = Path(__file__).resolve().parents[3]
STEPS = ["disable_identity", "disable_directory_account", "revoke_tenant_keys"]
GATES = ["approve_identity_disable.step_1_hr_lead", "approve_identity_disable.step_2_security_officer"]
APPROVED = {"outcome": "approved", "approved": True}


def _comment(steps: list[str] = STEPS, gates: list[str] = GATES) -> ChangeFailedCommentOperator:
    return ChangeFailedCommentOperator(
        task_id="change_failed",
        steps=steps,
        gates=gates,
        tenant="secops",
        ticket_id="42",
        idempotency_basis="offboarding-E01234-manual__1-failed",
    )


def _ti(failed: set[str], approvals: list[Any] | None = None) -> mock.MagicMock:
    ti = mock.MagicMock(dag_id="hr_offboarding", run_id="manual__1")
    ti.xcom_pull.return_value = [APPROVED, APPROVED] if approvals is None else approvals
    ti.get_ti_count.side_effect = lambda dag_id, task_ids, run_ids, states: int(
        (dag_id, run_ids, states) == ("hr_offboarding", ["manual__1"], ["failed", "upstream_failed"])
        and task_ids[0] in failed
    )
    return ti


@pytest.fixture
def posted() -> Iterator[mock.MagicMock]:
    """The ticket comment itself (CommentTicketOperator's: tests/unit/operators/test_ticketing.py)."""
    with mock.patch.object(
        CommentTicketOperator, "execute", autospec=True, return_value={"created": True}
    ) as post:
        yield post


def test_one_failed_step_is_named_with_what_to_do(posted: mock.MagicMock) -> None:
    comment = _comment()
    ti = _ti({"disable_identity"})

    assert comment.execute({"ti": ti, "run_id": "manual__1"}) == {"created": True}

    posted.assert_called_once()
    assert comment.body == (
        "The approved step disable_identity failed or could not run in run manual__1: its change is not "
        "made. See the task's log; once the cause is fixed, clearing disable_identity runs it again on "
        "the recorded approval."
    )
    ti.xcom_pull.assert_called_once_with(task_ids=GATES, key="approval")


def test_several_failed_steps_are_named_together(posted: mock.MagicMock) -> None:
    comment = _comment()
    comment.execute({"ti": _ti({"disable_identity", "revoke_tenant_keys"}), "run_id": "manual__1"})
    assert comment.body.startswith(
        "The approved steps disable_identity and revoke_tenant_keys failed or could not run in run manual__1"
    )
    assert "clearing disable_identity and revoke_tenant_keys runs them again" in comment.body
    assert "disable_directory_account" not in comment.body


def test_when_airflow_names_none_every_step_is_named(posted: mock.MagicMock) -> None:
    comment = _comment()
    comment.execute({"ti": _ti(set()), "run_id": "manual__1"})
    assert "disable_identity, disable_directory_account and revoke_tenant_keys" in comment.body


@pytest.mark.parametrize(
    "approvals",
    [
        pytest.param([None, None], id="no-answer-recorded"),
        pytest.param([APPROVED, None], id="second-step-never-asked"),
        pytest.param([APPROVED, {"outcome": "rejected", "approved": False}], id="rejected"),
        pytest.param([], id="nothing"),
    ],
)
def test_nothing_is_said_when_nothing_was_approved(posted: mock.MagicMock, approvals: list[Any]) -> None:
    with pytest.raises(AirflowSkipException, match="nothing was approved in this run"):
        _comment().execute({"ti": _ti({"disable_identity"}, approvals), "run_id": "manual__1"})
    posted.assert_not_called()


def test_a_step_that_needed_no_further_approver_counts_as_approved(posted: mock.MagicMock) -> None:
    approvals = [APPROVED, {"outcome": "not_required", "approved": True}]
    _comment().execute({"ti": _ti({"disable_identity"}, approvals), "run_id": "manual__1"})
    posted.assert_called_once()


def test_without_a_ticket_it_skips_before_asking_anything() -> None:
    comment = _comment()
    comment.ticket_id = " "  # rendered empty: the step before the ticket failed
    ti = _ti({"disable_identity"})
    with pytest.raises(AirflowSkipException, match="change_failed: the run has no ticket"):
        comment.execute({"ti": ti, "run_id": "manual__1"})
    ti.xcom_pull.assert_not_called()
    ti.get_ti_count.assert_not_called()


def test_one_step_needs_no_question_to_airflow(posted: mock.MagicMock) -> None:
    comment = _comment(steps=["isolate_host"], gates=[])
    ti = _ti(set())
    comment.execute({"ti": ti, "run_id": "manual__9"})
    assert comment.body == failure_text(["isolate_host"], "manual__9")
    ti.get_ti_count.assert_not_called()
    ti.xcom_pull.assert_not_called()  # no gates given: SOC's comment, as before


def test_a_comment_names_a_step() -> None:
    with pytest.raises(ValueError, match="at least one privileged step"):
        ChangeFailedCommentOperator(task_id="c", steps=[], tenant="t", ticket_id="1", idempotency_basis="b")


# --- where each workflow puts it -----------------------------------------------------------------
def _dag(path: str) -> Any:
    (dag,) = load_dag_folder(REPO / "dags" / path).dags
    return dag


@pytest.mark.parametrize(
    ("path", "steps", "ticket_task", "basis"),
    [
        pytest.param(
            "hr/offboarding.py",
            {"disable_identity", "disable_directory_account", "revoke_tenant_keys"},
            "hr_ticket",
            "offboarding-{{ params.employee_id }}-{{ run_id }}-failed",
            id="hr-offboarding",
        ),
        pytest.param(
            "hr/onboarding.py",
            {"create_identity", "create_directory_account"},
            "hr_ticket",
            "onboarding-{{ params.employee_id }}-{{ run_id }}-failed",
            id="hr-onboarding",
        ),
        pytest.param(
            "implementation/provision_tenant.py",
            {"apply_tenant_baseline"},
            "open_ticket",
            "provision-{{ params.tenant }}-{{ run_id }}-failed",
            id="provision-tenant",
        ),
    ],
)
def test_each_privileged_workflow_with_a_ticket_tells_it_of_a_failed_change(
    path: str, steps: set[str], ticket_task: str, basis: str
) -> None:
    dag = _dag(path)
    comment = dag.get_task("change_failed")
    assert isinstance(comment, ChangeFailedCommentOperator)
    # right after every privileged step, and only those: a failed read-only step says nothing here
    assert comment.upstream_task_ids == steps
    privileged = {
        t.task_id
        for t in dag.tasks
        if issubclass(t.operator_class if isinstance(t, MappedOperator) else type(t), RequiresApproval)
    }
    assert privileged == steps, "a privileged step the comment does not watch"
    assert comment.trigger_rule == TriggerRule.ONE_FAILED
    assert comment.idempotency_basis == basis
    assert set(comment.steps) == steps
    # it asks for the run's approval at the gate's every step
    gates = {t.task_id for t in dag.tasks if isinstance(t, ApprovalGateOperator)}
    assert set(comment.gates) == gates
    render = SandboxedEnvironment().from_string(comment.ticket_id).render
    assert render(ti=SimpleNamespace(xcom_pull=lambda task_ids: None)) == ""
    assert (
        render(
            ti=SimpleNamespace(xcom_pull=lambda task_ids: {"id": "7"} if task_ids == ticket_task else None)
        )
        == "7"
    )
    # a rejection skips the steps (the gate's last step skips what follows it), and a comment whose
    # upstream is all skipped is skipped by its trigger rule (one_failed): nothing said
    (last,) = {g for g in gates if set(dag.get_task(g).downstream_task_ids) & steps}
    task = dag.get_task(last)
    assert steps <= set(ApprovalGateOperator._downstream_to_skip(task, {"task": task}))
