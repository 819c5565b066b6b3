"""Start a workflow run from inside a task: Airflow's Execution API, the path TriggerDagRunOperator takes.

Why this path (measured on Airflow 3.3.2):

- ``airflow.api.common.trigger_dag`` needs the metadata database, which a Task SDK task does not
  have.
- The public REST API would need a service user with trigger permission on every mapped workflow
  (another local password, role and connection to manage).
- The Execution API's ``POST /execution/dag-runs/{dag_id}/{run_id}`` (what the task runner does for
  ``TriggerDagRunOperator``) is authenticated by the running task's own token and runs the same
  ``trigger_dag`` as the REST API: the conf is validated against the DAG's params (a bad one is HTTP
  400 ``value_error``, no run exists), and an existing run id is HTTP 409, so the same event never
  starts twice. The run is ``run_type=operator_triggered``, ``triggered_by=operator``; which event
  started it is in its conf (``intake_event``, ``correlation_id``) and in the audit trail.

The request goes through the task's supervisor (``SUPERVISOR_COMMS``), an internal of the Task SDK
that ``TriggerDagRunOperator`` uses too; one trigger per message without a mapped task per message
(which would add a scheduling round trip to every event's latency).
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

from include.intake.events import Start

StartResult = Literal["started", "duplicate"]


class StartRefused(Exception):
    """Airflow refused the run for good (its params, a DAG that does not allow it): dead-letter it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Starter(Protocol):
    def start(self, start: Start) -> StartResult:
        """Create the run; ``"duplicate"`` when the run id exists.

        :raises StartRefused: never possible for this event (dead-letter it).
        :raises Exception: anything else is transient: the message stays and comes back.
        """
        ...


# The Execution API's refusals that no retry can change (its 400 reasons); a 404 (the DAG not
# parsed yet) or a 5xx may pass, so those keep the message for redelivery.
PERMANENT_REASONS = frozenset({"value_error", "denied_run_type"})


def _reason_of(detail: dict[str, Any] | None) -> tuple[str | None, str]:
    body = (detail or {}).get("detail")
    inner = body.get("detail") if isinstance(body, dict) else None
    if isinstance(inner, dict):
        return inner.get("reason"), str(inner.get("message", ""))[:300]
    return None, str((detail or {}).get("status_code", "unknown status"))


class TaskSdkStarter:
    """Start runs through the running task's supervisor (call it inside a task only)."""

    def start(self, start: Start) -> StartResult:
        from airflow.sdk.exceptions import ErrorType
        from airflow.sdk.execution_time.comms import ErrorResponse, TriggerDagRun
        from airflow.sdk.execution_time.task_runner import SUPERVISOR_COMMS

        response = SUPERVISOR_COMMS.send(
            TriggerDagRun(dag_id=start.workflow, run_id=start.run_id, conf=start.conf, logical_date=None)
        )
        if not isinstance(response, ErrorResponse):
            return "started"
        if response.error == ErrorType.DAGRUN_ALREADY_EXISTS:
            return "duplicate"
        reason, message = _reason_of(response.detail)
        if reason in PERMANENT_REASONS:
            raise StartRefused(f"{start.workflow} refused the run ({reason}): {message}")
        raise RuntimeError(f"starting {start.workflow} run {start.run_id} failed ({reason or message})")
