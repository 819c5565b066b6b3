"""``soc_action(...)``: the SOC skeleton from an alert to a privileged change, in one call.

    @domain_workflow(domain="soc", doc_md=__doc__, params=soc_params({"host": HOST_PARAM}))
    def contain_host() -> None:
        soc_action(
            "host-isolate",
            inspect=InspectHostOperator(task_id="inspect_host", tenant=TENANT, host=HOST),
            ticket_subject="[{{ params.severity }}] Contain " + HOST + " (alert " + ALERT + ")",
            gate_subject="Isolate " + HOST + " of " + TENANT,
            artifact_params=("host", "tenant"),
            change=lambda: IsolateHostOperator(task_id="isolate_host", tenant=TENANT, host=HOST),
            evidence="Host " + HOST + " is in quarantine group ...",
            done="Host " + HOST + " is in the quarantine security group.",
        )

gives ``inspect >> open_ticket >> approve_<action> >> <change> >> evidence``, the ticket's failure
comment beside the evidence (``<change> >> change_failed``) and the incident write-back beside them
(``<change> >> incident_writeback``):

- ``inspect``: the read-only look at the target (the caller's operator); its ``markdown`` is the
  ticket's and the approval request's body;
- ``open_ticket``: the SOC ticket, keyed by the alert id (an undo's by ``<undo>-<alert id>``), with
  the alert's severity as a field when the workflow has a ``severity`` param;
- ``approve_<action>``: :func:`include.workflows.approval.approval_gate`, bound to
  ``artifact_params``;
- the change: the privileged operator, built by ``change()`` after the gate (an operator takes the
  DAG's params as they are when it is built, and the gate adds ``approval_drill``, which the
  privileged step reads);
- ``evidence``: the ticket comment on what the change did, ending with who approved it;
- ``change_failed``: the ticket comment when the approved change failed or could not run
  (:func:`soc_failure_comment`, the shared :mod:`include.workflows.failures`,
  ``trigger_rule="one_failed"``): the evidence is then ``upstream_failed`` and says nothing, and
  the analyst working the ticket must learn that the containment is not in place; skipped after a
  success and by a rejection (the gate skips it);
- ``incident_writeback``: :func:`include.workflows.incidents.incident_writeback`.

Where the write-back hangs, and why: it is an Airflow teardown downstream of the privileged step,
beside the evidence, not after it. Without an incident it skips at once, and after the evidence it
made every SOC run end one task later (the isolation benchmark's SOC run, 5.2 -> 10.0 s p50 to the
run's end); beside it, the two run together. What it guarantees is unchanged:

- a rejection (or a timed-out approval) writes back: the gate skips the steps after it but never a
  teardown (``ApprovalGateOperator._downstream_to_skip``), and a teardown's trigger rule
  (``all_done_setup_success``; with no setup task: all done) runs it once the privileged step is
  done, whatever its state (success, failed, upstream_failed, skipped); so do a failure of the
  privileged step and a success, each exactly once (one task; its one retry only after a failure,
  and the incident comment's marker makes a repeated post a no-op);
- what it writes is unchanged: the outcome is read from the gates' records and the privileged
  steps' states, all upstream of it; a failed evidence comment never changed it (the containment
  stood);
- the run's state: Airflow leaves teardowns out of it (``DagRun._tis_for_dagrun_state``), so the
  evidence is the run's last step: a failed privileged step leaves it ``upstream_failed`` and a
  failed evidence comment is ``failed``, either way a failed run, whatever the write-back did; a
  run is finished only when every task is, the write-back included.

A normal task with ``trigger_rule="all_done"`` would not do: the gate's reject skips it, and a
write-back that failed would fail the run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from airflow.sdk import BaseOperator, Param, TaskGroup
from airflow.sdk.definitions._internal.contextmanager import DagContext

from include.operators.approval import ApprovalGateOperator
from include.operators.ticketing import CommentTicketOperator, CreateTicketOperator
from include.policies.tenants import tenant_ids
from include.workflows.approval import approval_gate
from include.workflows.failures import change_failed_comment
from include.workflows.incidents import IncidentWritebackOperator, incident_writeback

TENANT = "{{ params.tenant }}"
ALERT = "{{ params.alert_id }}"
TICKET_TASK = "open_ticket"
TICKET_ID = "{{ ti.xcom_pull(task_ids='" + TICKET_TASK + "')['id'] }}"
ALERT_PATTERN = "^[A-Za-z0-9][A-Za-z0-9._:-]{2,63}(?!\\n)$"
HANDLED_ONCE = "The alert's id in the SIEM/EDR: the same alert is handled once"
RELEASED_ONCE = "The containment's alert id: the release is handled once per alert"
MACHINE = "{{ params.machine }}"
# A Defender machine id (40 hex digits) or a machine name (DNS or host name).
MACHINE_PATTERN = (
    "^([0-9a-fA-F]{40}|[A-Za-z0-9][A-Za-z0-9-]{0,62}(\\.[A-Za-z0-9][A-Za-z0-9-]{0,62}){0,8})(?!\\n)$"
)


def machine_param() -> Param:
    """The ``machine`` param of the Defender device workflows (isolate and release)."""
    return Param(
        type="string",
        pattern=MACHINE_PATTERN,
        maxLength=253,
        description="Defender machine id, or the machine's DNS or host name",
    )


class SocAction(NamedTuple):
    """The tasks :func:`soc_action` built, in order."""

    inspect: BaseOperator
    ticket: CreateTicketOperator
    gate: ApprovalGateOperator | TaskGroup
    change: BaseOperator
    evidence: CommentTicketOperator
    writeback: IncidentWritebackOperator
    failed: CommentTicketOperator


def soc_params(
    target: Mapping[str, Param],
    *,
    alert: str | None = None,
    severity: bool = True,
    before_alert: Mapping[str, Param] | None = None,
    extra: Mapping[str, Param] | None = None,
    reason: str | None = None,
) -> dict[str, Param]:
    """A SOC workflow's params, in the trigger form's order: ``target`` (what the alert is about),
    ``tenant``, ``severity``, ``before_alert``, ``alert_id``, ``extra``, then ``summary`` (what the
    alert says) or, for an undo, ``reason``.

    :param alert: the ``alert_id`` param's description (default: handled once per alert; for an
        undo: the containment's alert id).
    :param severity: the ``severity`` param (low to critical, default high); an undo has none.
    :param reason: an undo's last param, ``reason``, with this description, instead of ``summary``.
    """
    params: dict[str, Param] = dict(target)
    params["tenant"] = Param(type="string", enum=tenant_ids(), description="Customer tenant")
    if severity:
        params["severity"] = Param("high", type="string", enum=["low", "medium", "high", "critical"])
    params.update(before_alert or {})
    default = RELEASED_ONCE if reason is not None else HANDLED_ONCE
    params["alert_id"] = Param(type="string", pattern=ALERT_PATTERN, description=alert or default)
    params.update(extra or {})
    if reason is not None:
        params["reason"] = Param("", type="string", maxLength=500, description=reason)
    else:
        params["summary"] = Param("", type="string", maxLength=500, description="What the alert says")
    return params


def inspected(inspect: BaseOperator) -> str:
    """The template of the inspect step's read-only account of the target (its ``markdown``)."""
    return "{{ ti.xcom_pull(task_ids='" + inspect.task_id + "')['markdown'] }}"


def soc_ticket(
    inspect: BaseOperator,
    *,
    subject: str,
    undo: str | None = None,
    tenant: str = TENANT,
) -> CreateTicketOperator:
    """The run's SOC ticket after ``inspect``: the alert (or an undo's reason) and what the inspect
    step found; one per alert id (an undo's: per ``<undo>-<alert id>``). The alert's severity is a
    ticket field when the DAG has a ``severity`` param."""
    dag = DagContext.get_current()
    if dag is None:
        raise ValueError(f"soc_ticket({subject!r}) must be called inside a DAG")
    if undo:
        lead = "Release after alert " + ALERT + ": {{ params.reason }}"
    else:
        lead = "Alert " + ALERT + ": {{ params.summary }}"
    extra: dict[str, Any] = {}
    if "severity" in dag.params:
        extra["fields"] = {"Severity": "{{ params.severity }}"}
    ticket = CreateTicketOperator(
        task_id=TICKET_TASK,
        tenant=tenant,
        ticket_queue="soc",
        subject=subject,
        body=lead + "\n\n" + inspected(inspect),
        **extra,
        idempotency_basis=alert_basis(undo),
    )
    inspect >> ticket
    return ticket


def soc_gate(
    action: str,
    inspect: BaseOperator,
    *,
    subject: str,
    artifact_params: Sequence[str],
    tenant: str = TENANT,
) -> ApprovalGateOperator | TaskGroup:
    """The approval of ``action`` (:func:`include.workflows.approval.approval_gate`): the request
    shows what ``inspect`` found, is commented on the run's ticket and is bound to
    ``artifact_params``. The caller sets it after the ticket."""
    return approval_gate(
        action,
        subject=subject,
        body=inspected(inspect),
        tenant=tenant,
        ticket_id=TICKET_ID,
        artifact_params=tuple(artifact_params),
    )


def alert_basis(undo: str | None = None) -> str:
    """What keys the run's ticket and evidence: the alert id (an undo's: ``<undo>-<alert id>``)."""
    return f"{undo}-{ALERT}" if undo else ALERT


def approver(gate: ApprovalGateOperator | TaskGroup) -> str:
    """The template of the name of who approved at ``gate`` (its last step's, for several steps)."""
    if isinstance(gate, TaskGroup):
        (last,) = gate.get_leaves()
        task_id = last.task_id
    else:
        task_id = gate.task_id
    return "{{ ti.xcom_pull(task_ids='" + task_id + "', key='approval')['responded_by']['name'] }}"


def soc_evidence(
    gate: ApprovalGateOperator | TaskGroup,
    body: str,
    *,
    basis: str,
    tenant: str = TENANT,
    task_id: str = "evidence",
) -> CommentTicketOperator:
    """The evidence comment on the run's ticket: ``body`` (one or more sentences, ending with a full
    stop), then who approved it at ``gate``. The caller sets it after the step it is evidence of."""
    return CommentTicketOperator(
        task_id=task_id,
        tenant=tenant,
        ticket_id=TICKET_ID,
        body=body + " Approved by " + approver(gate) + ".",
        idempotency_basis=basis,
    )


def soc_failure_comment(
    step: BaseOperator, *, basis: str, tenant: str = TENANT, task_id: str = "change_failed"
) -> CommentTicketOperator:
    """The comment on the run's ticket when the approved ``step`` failed or could not run
    (:func:`include.workflows.failures.change_failed_comment`, shared by every domain); the caller
    sets it after ``step``. Keyed ``<basis>-failed`` (the alert's): a second failure of the same
    alert's change (a cleared step that failed again) does not post it twice. Says what to do, not
    why: the reason is in the task's log (an exception's text is not put on a customer-visible
    ticket)."""
    return change_failed_comment([step], ticket_task=TICKET_TASK, basis=basis, tenant=tenant, task_id=task_id)


def soc_action(
    action: str,
    *,
    inspect: BaseOperator,
    ticket_subject: str,
    gate_subject: str,
    artifact_params: Sequence[str],
    change: Callable[[], BaseOperator],
    evidence: str,
    done: str,
    undo: str | None = None,
    tenant: str = TENANT,
) -> SocAction:
    """The SOC skeleton for the privileged ``action`` (see the module docstring), in a DAG declared
    with ``params=soc_params(...)``.

    :param action: the approval action of the change, which is its privileged capability.
    :param inspect: the read-only step, built by the caller (first, before anything else).
    :param ticket_subject: the SOC ticket's subject (templated).
    :param gate_subject: the approval request's subject (templated); its body is what ``inspect``
        found.
    :param artifact_params: the run params the approval is bound to.
    :param change: builds the privileged step (called after the gate).
    :param evidence: the evidence comment on the ticket, before "Approved by <name>." (templated).
    :param done: what a done run did, one sentence, for the incident (templated).
    :param undo: the name of an undo (``enable``, ``release``): the ticket says why it is released,
        its idempotency keys are ``<undo>-<alert id>``, and the incident is told "released".
    :param tenant: the run's tenant (templated).
    """
    ticket = soc_ticket(inspect, subject=ticket_subject, undo=undo, tenant=tenant)
    gate = soc_gate(action, inspect, subject=gate_subject, artifact_params=artifact_params, tenant=tenant)
    step = change()
    if getattr(step, "capability", None) != action:
        raise ValueError(
            f"soc_action({action!r}): the change {step.task_id!r} has capability "
            f"{getattr(step, 'capability', None)!r}, not the approved action {action!r}"
        )
    comment = soc_evidence(gate, evidence, basis=alert_basis(undo), tenant=tenant)
    ticket >> gate >> step >> comment
    failed = soc_failure_comment(step, basis=alert_basis(undo), tenant=tenant)
    step >> failed
    # Beside the evidence, not after it (module docstring).
    writeback = incident_writeback(action, done=done, release=bool(undo), tenant=tenant)
    step >> writeback
    return SocAction(inspect, ticket, gate, step, comment, writeback, failed)
