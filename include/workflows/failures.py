"""``change_failed_comment(...)``: the ticket is told when an approved change failed, in every domain.

    failed = change_failed_comment([identity, directory, keys], ticket_task="hr_ticket",
                                   basis="offboarding-" + EMPLOYEE + "-{{ run_id }}", tenant=STAFF,
                                   gates=gate)
    [identity, directory, keys] >> failed

After a workflow's privileged step(s), beside the evidence: the evidence comment is then
``upstream_failed`` and says nothing, so whoever works the ticket would not learn that the change is
not in place. The comment:

- runs when one of ``steps`` failed or could not run (``trigger_rule="one_failed"``: a failed or
  ``upstream_failed`` step); skipped after a success, and by a rejection (the gate skips the steps
  after it, and this with them);
- names the step(s) that failed (of several: those whose task instances, any map index, ended
  ``failed`` or ``upstream_failed``, read from Airflow at run time), says what to do (clear the step
  once the cause is fixed: it runs again on the recorded approval), not why: the reason is in the
  task's log (an exception's text is not put on a ticket a customer may see);
- is keyed ``<basis>-failed`` (``idempotency_basis`` of
  :class:`~include.operators.ticketing.CommentTicketOperator`): a cleared step that fails again
  posts nothing more. SOC keys it by the alert (one alert, one comment); the other workflows by
  their ticket's basis and the run (a later run for the same employee or tenant that fails again
  is news on the same ticket);
- skips when the run has no ticket (``ticket_task`` pushed none: the read-only step before it
  failed) and, with ``gates``, when the gate(s) recorded no approval (a step before the gate
  failed, e.g. a Terraform plan: nothing was approved, so no "approved step failed").

One shared comment rather than each workflow's own: the SOC skeleton (:mod:`include.workflows.soc`)
uses it with its keys unchanged; HR on- and offboarding and tenant provisioning use it. Invoicing
has its own, richer ``report_failure`` (:class:`~include.operators.invoicing.InvoiceFailureCommentOperator`:
the validation problems or the failed step's reason, for finance), which already fires on a failed
ERP step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator, TaskGroup
from airflow.sdk.exceptions import AirflowSkipException

from include.operators.approval import ApprovalGateOperator
from include.operators.ticketing import CommentTicketOperator

TASK_ID = "change_failed"
FAILED_STATES = ("failed", "upstream_failed")


def ticket_id_if_any(ticket_task: str) -> str:
    """The template of the ticket id ``ticket_task`` pushed; empty when the run opened no ticket."""
    return "{{ (ti.xcom_pull(task_ids='" + ticket_task + "') or {}).get('id', '') }}"


def gate_task_ids(gate: ApprovalGateOperator | TaskGroup) -> list[str]:
    """The gate's task ids: the operator's, or every step of a several-step gate (a task group)."""
    if isinstance(gate, TaskGroup):
        return sorted(task.task_id for task in gate if isinstance(task, ApprovalGateOperator))
    return [gate.task_id]


def _and(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def failure_text(failed: Sequence[str], run_id: str) -> str:
    """What the ticket is told: which approved step(s) failed in ``run_id``, and what to do."""
    if len(failed) == 1:
        (step,) = failed
        return (
            f"The approved step {step} failed or could not run in run {run_id}: its change is not made. "
            f"See the task's log; once the cause is fixed, clearing {step} runs it again on the recorded "
            "approval."
        )
    names = _and(failed)
    return (
        f"The approved steps {names} failed or could not run in run {run_id}: their changes are not "
        f"made (the run's other approved steps are as the run shows). See the tasks' logs; once the "
        f"cause is fixed, clearing {names} runs them again on the recorded approval."
    )


class ChangeFailedCommentOperator(CommentTicketOperator):
    """The ticket comment when an approved step failed or could not run (module docstring).

    :param steps: the task ids of the workflow's privileged steps (the comment's upstream).
    :param gates: the task ids of the approval gate's steps; when given, the comment is posted only
        if every one of them recorded an approval (XCom ``approval``, ``approved`` true).
    :param kwargs: as :class:`~include.operators.ticketing.CommentTicketOperator` (``ticket_id``,
        ``tenant``, ``idempotency_basis``, ...); the body is written at run time.
    """

    def __init__(self, *, steps: Sequence[str], gates: Sequence[str] = (), **kwargs: Any) -> None:
        if not steps:
            raise ValueError("ChangeFailedCommentOperator: name at least one privileged step")
        super().__init__(body="", trigger_rule="one_failed", skip_without_ticket=True, **kwargs)
        self.steps = list(steps)
        self.gates = list(gates)

    def execute(self, context: Any) -> dict[str, Any]:
        if not str(self.ticket_id or "").strip():
            return super().execute(context)  # skips: no ticket to tell
        ti = context["ti"]
        if self.gates:
            records = ti.xcom_pull(task_ids=self.gates, key="approval")
            records = records if isinstance(records, list) else [records]
            if len(records) != len(self.gates) or not all(
                isinstance(r, dict) and r.get("approved") for r in records
            ):
                raise AirflowSkipException(
                    f"{self.task_id}: nothing was approved in this run (a step before the gate failed); "
                    "the reason is in the failed step's log"
                )
        self.body = failure_text(self.failed_steps(context), str(context["run_id"]))
        return super().execute(context)

    def failed_steps(self, context: Any) -> list[str]:
        """The steps that failed or could not run (all of them if Airflow cannot say which)."""
        if len(self.steps) == 1:
            return list(self.steps)
        ti = context["ti"]
        failed = [
            step
            for step in self.steps
            if ti.get_ti_count(
                dag_id=ti.dag_id, task_ids=[step], run_ids=[ti.run_id], states=list(FAILED_STATES)
            )
        ]
        return failed or list(self.steps)


def change_failed_comment(
    steps: Sequence[BaseOperator],
    *,
    ticket_task: str,
    basis: str,
    tenant: str,
    gates: ApprovalGateOperator | TaskGroup | None = None,
    task_id: str = TASK_ID,
) -> ChangeFailedCommentOperator:
    """The failure comment after the approved ``steps`` (the caller sets it downstream of them).

    :param steps: the privileged step(s) of the change.
    :param ticket_task: the task that pushed the run's ticket (XCom ``id``).
    :param basis: the idempotency basis (templated); the key is ``<basis>-failed``.
    :param tenant: the ticket's tenant (templated).
    :param gates: the approval gate before ``steps``: post only after a recorded approval.
    :param task_id: the comment's task id.
    """
    return ChangeFailedCommentOperator(
        task_id=task_id,
        steps=[step.task_id for step in steps],
        gates=gate_task_ids(gates) if gates is not None else (),
        tenant=tenant,
        # one_failed also fires when a step before the ticket failed (every later step
        # upstream_failed): then there is no ticket, and nothing was approved; skipped
        ticket_id=ticket_id_if_any(ticket_task),
        idempotency_basis=basis + "-failed",
    )
