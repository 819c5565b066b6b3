"""Incident write-back: a SOC run that came from a Microsoft Defender/Sentinel incident says on the
incident what became of it.

    disable >> incident_writeback("entra-user-disable", done="Entra user {{ params.user }}: sign-in blocked")

One line on the workflow's privileged step, beside its evidence (``include.workflows.soc.soc_action``
does it; the evidence is not waited for, and a long workflow writes back when the change is in
place, not after a block's expiry). The call adds the run param ``incident_id`` to the DAG
(optional, empty: nothing is written; a value that is not a Graph incident id, 1-19 digits, is
refused with HTTP 400 before the run exists, and again by the task before any call).

What the incident gets, per run outcome (read from the run itself: the approval gates' records,
the privileged steps' states):

=============  ===============================================  =================================
outcome        comment                                          status
=============  ===============================================  =================================
done           ``<dag>: contained.`` what was done, approved    ``inProgress`` (an undo, e.g. an
               by whom                                          enable: left as it is)
rejected       ``<dag>: not contained: rejected by <name>``     left as it is
               (and the approver's comment)
timed_out      ``... not contained: no approval before the      left as it is
               deadline``
failed         ``... not contained: the run stopped at <task>`` left as it is
=============  ===============================================  =================================

Every comment ends with the ticket, the correlation id, the run id and a marker line
``[orchestrator:<dag_id>:<alert id>:<outcome>]``. Graph comments have no idempotency key, so the
marker is one: the task reads the incident's comments and posts only when none holds it (under the
shared creation lock, :meth:`~include.connectors.microsoft.GraphHook.write_back_incident`). The
same alert run five times leaves one comment per outcome; a rejected run and a later approved one
leave two. Never ``resolved``: Graph asks a classification and a determination for that, which are
the analyst's judgement after the investigation, not the orchestrator's.

Credentials: the tenant's own ``incident-writeback`` app (``orchestrator/<tenant>/incident-writeback/
msgraph`` in its AWS account; Graph ``SecurityIncident.ReadWrite.All`` only), never the privileged
step's app: the capability is not privileged, so a rejected run writes back too. The incident is
looked up in the run's tenant only: another tenant's incident id is "not found", asked with this
tenant's credentials.

The task never changes the run's privileged result: it is a teardown (Airflow leaves teardowns out
of the run's state, and a gate's reject does not skip them), runs when everything before it is done
(success, failed, skipped; why it hangs beside the evidence: ``include/workflows/soc.py``), and a
write-back that still fails after its retry (one: the hook itself waits out a throttled Graph and
retries its 5xx) fails only itself, with a ``notification.failed`` audit record naming the
incident and the error. A bad incident id or an incident the tenant does not have fails it at once
(no retry helps). An approval drill writes nothing (the incident is the customer's, in their own
portal).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from airflow.sdk import BaseOperator, Param
from airflow.sdk.definitions._internal.contextmanager import DagContext
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

WRITEBACK_CAPABILITY = "incident-writeback"
INCIDENT_PARAM = "incident_id"
TASK_ID = "incident_writeback"
# The param's pattern: empty (no incident) or a Graph incident id (include/connectors/microsoft.py).
# ``(?!\n)``: Python's ``$`` (jsonschema validates with ``re.search``) also matches before a final
# line break.
INCIDENT_PARAM_PATTERN = r"^([0-9]{1,19})?(?!\n)$"
DONE, REJECTED, TIMED_OUT, FAILED = "done", "rejected", "timed_out", "failed"
APPROVAL_XCOM_KEY = "approval"  # include/operators/approval.py XCOM_KEY
CONTAINED_STATUS = "inProgress"
# The hook retries a throttled or failing Graph itself (Retry-After honoured); a task retry more,
# not the domain's three: the run is finished only when its write-back is.
WRITEBACK_RETRIES = 1
_ONE_LINE = re.compile(r"\s+")


def incident_param() -> Param:
    """The optional ``incident_id`` run param of a workflow that writes back."""
    return Param(
        "",
        type="string",
        pattern=INCIDENT_PARAM_PATTERN,
        title="Incident id",
        description="Optional: the Defender/Sentinel incident (Graph security incident id) the alert "
        "belongs to; the run comments on it and sets its status",
    )


@dataclass(frozen=True)
class RunOutcome:
    """What became of the run, for the incident.

    :param result: ``done``, ``rejected``, ``timed_out`` or ``failed``.
    :param people: who approved (done) or rejected.
    :param answer: the approver's comment on a reject.
    :param at: the task where a failed run stopped, and its state.
    """

    result: str
    people: tuple[str, ...] = ()
    answer: str = ""
    at: str | None = None
    state: str | None = None


def run_outcome(
    *,
    gates: Sequence[Mapping[str, Any] | None],
    steps: Mapping[str, str | None],
    states: Mapping[str, str | None],
    order: Sequence[str],
) -> RunOutcome:
    """The outcome of a run from its gates' approval records (in step order), its privileged steps'
    states and every upstream task's state (``order``: the tasks upstream first).

    A gate that did not approve decides (rejected, or timed out: the fail-safe); else the run is done
    when every privileged step succeeded; else it failed where the first task failed (or, when none
    did, at the first privileged step that did not succeed).
    """
    for record in gates:
        if record and record.get("approved") is False:
            name = str((record.get("responded_by") or {}).get("name") or "")
            if record.get("outcome") == "timed_out" or not name:
                return RunOutcome(TIMED_OUT)
            return RunOutcome(REJECTED, people=(name,), answer=str(record.get("comment") or ""))
    if steps and all(state == "success" for state in steps.values()):
        people = tuple(
            str((r.get("responded_by") or {}).get("name"))
            for r in gates
            if r and r.get("outcome") == "approved" and (r.get("responded_by") or {}).get("name")
        )
        return RunOutcome(DONE, people=people)
    for task_id in order:
        if states.get(task_id) == "failed":
            return RunOutcome(FAILED, at=task_id, state="failed")
    for task_id in order:
        if task_id in steps and steps[task_id] != "success":
            return RunOutcome(FAILED, at=task_id, state=steps[task_id] or "not run")
    return RunOutcome(FAILED)


def _line(text: str, limit: int) -> str:
    text = _ONE_LINE.sub(" ", text).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def marker(dag_id: str, basis: str, result: str) -> str:
    """The line that makes a comment findable: one per workflow, alert (or correlation id) and outcome."""
    return f"[orchestrator:{dag_id}:{basis}:{result}]"


def compose(
    outcome: RunOutcome,
    *,
    dag_id: str,
    run_id: str,
    correlation_id: str,
    basis: str,
    done: str = "",
    release: bool = False,
    ticket_id: str | None = None,
) -> tuple[str, str]:
    """The incident comment for ``outcome`` and its marker (the comment's last line)."""
    label = "released" if release else "contained"
    if outcome.result == DONE:
        text = f"Orchestrator {dag_id}: {label}."
        if done:
            text += f" {_line(done, 500)}"
            text += "" if text.endswith(".") else "."
        if outcome.people:
            text += f" Approved by {', '.join(outcome.people)}."
    elif outcome.result == REJECTED:
        text = f"Orchestrator {dag_id}: not {label}: rejected by {', '.join(outcome.people)}"
        text += f' ("{_line(outcome.answer, 200)}").' if outcome.answer.strip() else "."
    elif outcome.result == TIMED_OUT:
        text = (
            f"Orchestrator {dag_id}: not {label}: no approval before the deadline "
            "(the fail-safe rejected it)."
        )
    else:
        where = f" at {outcome.at} ({outcome.state})" if outcome.at else ""
        text = f"Orchestrator {dag_id}: not {label}: the run stopped{where}; see the run and the ticket."
    if ticket_id:
        text += f" Ticket {ticket_id}."
    text += f" Correlation id {correlation_id}; run {run_id}."
    line = marker(dag_id, basis or correlation_id, outcome.result)
    return f"{text}\n{line}", line


class IncidentWritebackOperator(BaseOperator):
    """Comment on the run's incident and set its status (see the module docstring); a teardown.

    :param domain_action: the approval action (and privileged capability) of the workflow's change.
    :param tenant: the run's customer tenant (templated).
    :param incident_id: the incident (templated; empty: nothing to write).
    :param done: what a done run did, one sentence (templated).
    :param basis: what makes two runs the same, for the marker: the alert id (templated; empty: the
        run's correlation id).
    :param release: the change is an undo (enable, release): "released", and the status is left.
    :param ticket_task: the task whose return value's ``id`` is the run's ticket.
    """

    # ``done`` is rendered only for a done run (it may read the change's XCom, which a rejected or
    # failed run does not have), and a text that does not render leaves it out, never fails the task.
    template_fields: Sequence[str] = ("tenant", "incident_id", "basis")
    capability = WRITEBACK_CAPABILITY
    ui_color = "#e8f0fe"

    def __init__(
        self,
        *,
        domain_action: str,
        tenant: str,
        incident_id: str,
        done: str = "",
        basis: str = "",
        release: bool = False,
        ticket_task: str = "open_ticket",
        aws_conn_id: str = "aws_default",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.domain_action = domain_action
        self.tenant = tenant
        self.incident_id = incident_id
        self.done = done
        self.basis = basis
        self.release = release
        self.ticket_task = ticket_task
        self.aws_conn_id = aws_conn_id

    # --- what happened in the run --------------------------------------------------------------
    def _upstream(self) -> list[Any]:
        """Every task upstream of this one, each after its own upstream tasks (an ancestor has fewer
        ancestors than its descendants)."""
        upstream = self.get_flat_relatives(upstream=True)
        return sorted(upstream, key=lambda t: (len(t.get_flat_relative_ids(upstream=True)), t.task_id))

    def task_states(self, context: Mapping[str, Any]) -> dict[str, str | None]:
        """The states of this run's task instances (Task SDK: through the Execution API)."""
        ti = context["ti"]
        found = ti.get_task_states(dag_id=ti.dag_id, run_ids=[ti.run_id])
        return {str(k): (str(v) if v is not None else None) for k, v in (found.get(ti.run_id) or {}).items()}

    def outcome(self, context: Mapping[str, Any]) -> RunOutcome:
        ti = context["ti"]
        upstream = self._upstream()
        gates = sorted(
            (
                t
                for t in upstream
                if getattr(t, "approval_action", None) == self.domain_action and hasattr(t, "earlier_steps")
            ),
            key=lambda t: int(getattr(t, "step", 1)),
        )
        steps = [t.task_id for t in upstream if getattr(t, "capability", None) == self.domain_action]
        if not gates or not steps:
            raise AirflowFailException(
                f"{self.task_id}: no approval gate and privileged step of {self.domain_action!r} upstream: "
                "append the write-back after the workflow's change"
            )
        states = self.task_states(context)
        records = [ti.xcom_pull(task_ids=t.task_id, key=APPROVAL_XCOM_KEY) for t in gates]
        return run_outcome(
            gates=[r if isinstance(r, Mapping) else None for r in records],
            steps={s: states.get(s) for s in steps},
            states=states,
            order=[t.task_id for t in upstream],
        )

    def ticket_id(self, context: Mapping[str, Any]) -> str | None:
        if not self.ticket_task:
            return None
        ticket = context["ti"].xcom_pull(task_ids=self.ticket_task)
        return str(ticket["id"]) if isinstance(ticket, Mapping) and ticket.get("id") else None

    # --- the write-back --------------------------------------------------------------------------
    def execute(self, context: Any) -> dict[str, Any]:
        from include.connectors.context import RunContext
        from include.connectors.microsoft import (
            GraphHook,
            MicrosoftInputError,
            TenantCredentialError,
            check_incident_id,
        )

        incident = str(self.incident_id or "")
        if not incident:
            raise AirflowSkipException("no incident_id: nothing to write back")
        try:
            check_incident_id(incident)
        except MicrosoftInputError as error:
            self._failed(context, incident, None, str(error))
            raise AirflowFailException(f"{self.task_id}: {error}") from None
        if (context.get("params") or {}).get("approval_drill"):
            raise AirflowSkipException("approval drill: the customer's incident is not touched")
        outcome = self.outcome(context)
        run = RunContext.from_airflow_context(context, self.tenant)
        text, line = compose(
            outcome,
            dag_id=run.dag_id,
            run_id=run.run_id,
            correlation_id=run.correlation_id,
            basis=str(self.basis or "").strip(),
            done=self._render_done(context) if outcome.result == DONE else "",
            release=self.release,
            ticket_id=self.ticket_id(context),
        )
        status = CONTAINED_STATUS if outcome.result == DONE and not self.release else None
        hook = GraphHook(
            capability=self.capability, tenant=self.tenant, run_context=run, aws_conn_id=self.aws_conn_id
        )
        try:
            # One read of the incident serves the comment's search and the status check.
            commented, status_changed = hook.write_back_incident(incident, text, marker=line, status=status)
        except (MicrosoftInputError, TenantCredentialError) as error:
            self._failed(context, incident, outcome, str(error))
            raise AirflowFailException(f"{self.task_id}: {error}") from None
        except Exception as error:
            if int(getattr(context["ti"], "try_number", 1) or 1) > int(self.retries or 0):
                self._failed(context, incident, outcome, f"{type(error).__name__}: {error}")
            raise
        self.log.info(
            "incident %s of %s: %s%s; %s",
            incident,
            self.tenant,
            "commented" if commented else "comment already there",
            f", status {status}" if status_changed else "",
            line,
        )
        self._audit(context, incident, outcome, commented, status, status_changed)
        return {
            "incident_id": incident,
            "outcome": outcome.result,
            "commented": commented,
            "status": status,
            "status_changed": status_changed,
            "marker": line,
        }

    def _render_done(self, context: Any) -> str:
        try:
            return str(self.render_template(self.done, context) or "")
        except Exception as error:  # a template error must not cost the write-back
            self.log.warning("the done text did not render (%s): the comment goes without it", error)
            return ""

    def _audit(
        self,
        context: Any,
        incident: str,
        outcome: RunOutcome,
        commented: bool,
        status: str | None,
        status_changed: bool,
    ) -> None:
        from include.audit.emit import side_effect

        side_effect(
            context,
            system="msgraph",
            operation="incident-writeback",
            object_id=f"incident {incident}",
            tenant=self.tenant,
            created=commented,
            capability=self.capability,
            action=self.domain_action,
            outcome=outcome.result,
            status=status,
            status_changed=status_changed,
        )

    def _failed(self, context: Any, incident: str, outcome: RunOutcome | None, error: str) -> None:
        """The write-back is given up: ``notification.failed`` (the run's result stands)."""
        from include.audit.emit import emit, task_event
        from include.audit.records import NOTIFICATION_FAILED

        self.log.error("incident write-back to %s of %s failed: %s", incident[:40], self.tenant, error)
        emit(
            task_event(
                context,
                NOTIFICATION_FAILED,
                tenant=self.tenant or None,
                actor="airflow",
                subject=f"incident {incident[:40]}",
                details={
                    "channel": "incident",
                    "system": "msgraph",
                    "action": self.domain_action,
                    "incident_id": incident[:40],
                    "outcome": outcome.result if outcome else None,
                    "error": error[:500],
                },
            )
        )


def incident_writeback(
    domain_action: str,
    *,
    done: str = "",
    release: bool = False,
    tenant: str = "{{ params.tenant }}",
    basis: str = "{{ params.alert_id }}",
    ticket_task: str = "open_ticket",
    task_id: str = TASK_ID,
    **kwargs: Any,
) -> IncidentWritebackOperator:
    """The write-back task for the current DAG's change ``domain_action``: set it after the privileged
    step, beside the evidence (``change >> incident_writeback(...)``; see ``include/workflows/soc.py``).
    Adds the ``incident_id`` param to the DAG.

    :param domain_action: the approval action of the change (its privileged steps' capability).
    :param done: what a done run did, one sentence (templated, rendered only for a done run).
    :param release: an undo (enable, release): "released", the status is left as it is.
    :param tenant: the run's tenant (templated; default the ``tenant`` param).
    :param basis: what makes two runs the same (templated; default the ``alert_id`` param).
    :param ticket_task: the task returning the run's ticket (``{"id": ...}``).
    """
    dag = DagContext.get_current()
    if dag is None:
        raise ValueError(f"incident_writeback({domain_action!r}) must be called inside a DAG")
    declared = dag.params.get_param(INCIDENT_PARAM) if INCIDENT_PARAM in dag.params else None
    if declared is None:
        dag.params[INCIDENT_PARAM] = incident_param()
    elif declared.schema.get("pattern") != INCIDENT_PARAM_PATTERN:
        raise ValueError(
            f"DAG {dag.dag_id}: param {INCIDENT_PARAM!r} must be incident_param() of "
            f"include.workflows.incidents (pattern {INCIDENT_PARAM_PATTERN}), or left to incident_writeback()"
        )
    task = IncidentWritebackOperator(
        task_id=task_id,
        domain_action=domain_action,
        tenant=tenant,
        incident_id="{{ params." + INCIDENT_PARAM + " }}",
        done=done,
        basis=basis,
        release=release,
        ticket_task=ticket_task,
        **{"retries": WRITEBACK_RETRIES, **kwargs},
    )
    return task.as_teardown()
