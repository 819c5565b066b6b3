"""The audit listener: the platform, not each DAG author, records what every run did.

Airflow calls these hooks in the component where the change happens, and each writes one audit
record (:func:`include.audit.emit.emit`, which never raises and spools when the store is down):

- scheduler: a run started (``run.triggered``: who, how (UI, REST API, schedule, ...), the DAG
  bundle's name and Git version, the ticket it came from) and finished (``run.finished``: the
  end state of every task, including those the scheduler skipped, which no worker reports);
- worker (Task SDK task runner): every task try's end (``task.finished``: success, failed,
  up_for_retry, skipped, with try number, duration and the error's type, never its text);
- API server: a task state set by hand (mark success/failed) goes through the same task hooks, and
  its record names ``api`` and the ``manual.change`` record of the user who set it (written by
  the approval door, :mod:`include.auth.middleware`), never a worker; the scheduler's own task
  failures (a task that stopped heartbeating) name ``scheduler``;
- dag-processor: a DAG file refused by a cluster policy (``policy.violation``: file, rule, message).

Approval requests, escalation steps and answers are recorded by the gate and its trigger, and
side effects by the connector operators; all of them share the run's correlation id.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from airflow.listeners import hookimpl

from include.audit import records as kinds
from include.audit.emit import emit

log = logging.getLogger(__name__)

_DOMAIN_TAG = "domain:"
_CONF_TICKET_KEYS = ("ticket_id", "ticket")
# Cluster-policy messages start with their rule name (include/policies/cluster_policy.py).
_POLICY_LINE = re.compile(r"AirflowClusterPolicyViolation: (?P<rule>[a-z][a-z0-9-]*): (?P<message>.*)")


def _domain(dag: Any) -> str | None:
    tags = [t for t in (getattr(dag, "tags", None) or ()) if isinstance(t, str) and t.startswith(_DOMAIN_TAG)]
    return tags[0].removeprefix(_DOMAIN_TAG) if len(tags) == 1 else None


def _param_default(dag: Any, name: str) -> Any:
    params = getattr(dag, "params", None)
    if params is None:
        return None
    try:
        value = params.get_param(name).value if name in params else None
    except Exception:
        return None
    return value if isinstance(value, str) else None


def _correlation_id(dag_id: str, run_id: str, conf: Mapping[str, Any]) -> str:
    from include.connectors.context import CORRELATION_CONF_KEY, default_correlation_id

    value = conf.get(CORRELATION_CONF_KEY)
    return str(value) if value else default_correlation_id(dag_id, run_id)


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def _enum_value(value: Any) -> str | None:
    if value is None:
        return None
    return str(getattr(value, "value", value))


def _run_fields(dag_run: Any) -> dict[str, Any]:
    dag = getattr(dag_run, "dag", None)
    conf = dict(getattr(dag_run, "conf", None) or {})
    # The tenant of a run is its validated ``tenant`` param: conf["tenant"] counts only when the DAG
    # declares that param (the trigger form checked it); a free conf key names no tenant.
    declared = "tenant" in (getattr(dag, "params", None) or {})
    given = conf.get("tenant") if declared and isinstance(conf.get("tenant"), str) else None
    tenant = given or _param_default(dag, "tenant")
    return {
        "domain": _domain(dag),
        "tenant": tenant,
        "correlation_id": _correlation_id(dag_run.dag_id, dag_run.run_id, conf),
        "dag_id": dag_run.dag_id,
        "run_id": dag_run.run_id,
    }


@hookimpl
def on_dag_run_running(dag_run: Any, msg: str) -> None:
    conf = dict(getattr(dag_run, "conf", None) or {})
    ticket = next((str(conf[k]) for k in _CONF_TICKET_KEYS if conf.get(k) not in (None, "")), None)
    user = getattr(dag_run, "triggering_user_name", None)
    details: dict[str, Any] = {
        "how": _enum_value(getattr(dag_run, "triggered_by", None)),
        "run_type": _enum_value(getattr(dag_run, "run_type", None)),
        "bundle_name": getattr(getattr(dag_run, "dag_model", None), "bundle_name", None),
        "bundle_version": getattr(dag_run, "bundle_version", None),
        "logical_date": _iso(getattr(dag_run, "logical_date", None)),
        "conf": conf,
    }
    if ticket:
        details["ticket_id"] = ticket
    emit(
        {
            "kind": kinds.RUN_TRIGGERED,
            "actor": user or "scheduler",
            **_run_fields(dag_run),
            "subject": dag_run.dag_id,
            "details": details,
        }
    )


def _task_states(dag_run: Any) -> dict[str, str]:
    # The scheduler's own session: it sees the states set in this loop, not yet committed.
    from sqlalchemy.orm import object_session

    session = object_session(dag_run)
    if session is None:
        return {}
    states: dict[str, str] = {}
    for ti in dag_run.get_task_instances(session=session):
        name = ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]"
        states[name] = _enum_value(ti.state) or "none"
    return dict(sorted(states.items()))


def _run_finished(dag_run: Any, msg: str) -> None:
    start, end = getattr(dag_run, "start_date", None), getattr(dag_run, "end_date", None)
    emit(
        {
            "kind": "run.finished",
            "actor": "scheduler",
            **_run_fields(dag_run),
            "subject": dag_run.dag_id,
            "details": {
                "state": _enum_value(dag_run.state),
                "reason": msg,
                "tasks": _task_states(dag_run),
                "duration_seconds": round((end - start).total_seconds(), 3) if start and end else None,
            },
        }
    )


@hookimpl
def on_dag_run_success(dag_run: Any, msg: str) -> None:
    _run_finished(dag_run, msg)


@hookimpl
def on_dag_run_failed(dag_run: Any, msg: str) -> None:
    _run_finished(dag_run, msg)


def _task_actor(task_instance: Any) -> tuple[str, dict[str, Any]]:
    """Who ended the task: its worker, or (server side) a user's change by hand or the scheduler."""
    # The worker hands the Task SDK's runtime task instance; the API server and the scheduler
    # hand the ORM one (checked by module name: the worker need not import the ORM for this).
    if type(task_instance).__module__ != "airflow.models.taskinstance":
        return "worker", {}
    from include.approvals.door import current_manual_change

    change = current_manual_change()
    if change is None:
        return "scheduler", {}
    return "api", {"manual_change": change.change_id, "changed_by": change.actor}


def _task_finished(task_instance: Any, state: str, error: Any = None) -> None:
    task = getattr(task_instance, "task", None)
    dag = getattr(task, "dag", None)
    conf: Mapping[str, Any] = {}
    tenant = getattr(task, "tenant", None)
    dag_run = getattr(task_instance, "dag_run", None)  # server-side TaskInstance
    context = getattr(task_instance, "_cached_template_context", None)  # worker-side
    if context:
        dag_run = context.get("dag_run")
        params = context.get("params") or {}
        if not isinstance(tenant, str) and isinstance(params.get("tenant"), str):
            tenant = params["tenant"]
    conf = dict(getattr(dag_run, "conf", None) or {})
    start, end = getattr(task_instance, "start_date", None), getattr(task_instance, "end_date", None)
    if start is not None and end is None:
        from airflow.sdk.timezone import utcnow

        end = utcnow()
    details: dict[str, Any] = {
        "state": state,
        "try_number": getattr(task_instance, "try_number", None),
        "map_index": getattr(task_instance, "map_index", -1),
        "operator": type(task).__name__ if task is not None else None,
        "duration_seconds": round((end - start).total_seconds(), 3) if start and end else None,
    }
    if error is not None:
        # The type only: an exception's text can carry what it was handed (a URL, a payload).
        details["error_type"] = type(error).__name__ if isinstance(error, BaseException) else "error"
    actor, by_hand = _task_actor(task_instance)
    details.update(by_hand)
    emit(
        {
            "kind": kinds.TASK_FINISHED,
            "actor": actor,
            "domain": _domain(dag),
            "tenant": tenant if isinstance(tenant, str) and tenant and "{{" not in tenant else None,
            "correlation_id": _correlation_id(task_instance.dag_id, task_instance.run_id, conf),
            "dag_id": task_instance.dag_id,
            "run_id": task_instance.run_id,
            "task_id": task_instance.task_id,
            "subject": task_instance.task_id,
            "details": details,
        }
    )


@hookimpl
def on_task_instance_success(previous_state: Any, task_instance: Any) -> None:
    _task_finished(task_instance, "success")


@hookimpl
def on_task_instance_failed(previous_state: Any, task_instance: Any, error: Any) -> None:
    state = _enum_value(getattr(task_instance, "state", None)) or "failed"
    _task_finished(task_instance, state if state in ("failed", "up_for_retry") else "failed", error)


@hookimpl
def on_task_instance_skipped(previous_state: Any, task_instance: Any) -> None:
    _task_finished(task_instance, "skipped")


@hookimpl
def on_new_dag_import_error(filename: str, stacktrace: str) -> None:
    # Only cluster-policy refusals are policy violations; a syntax error is a broken file.
    match = next((m for m in map(_POLICY_LINE.search, stacktrace.splitlines()) if m), None)
    if match is None:
        return
    emit(
        {
            "kind": kinds.POLICY_VIOLATION,
            "actor": "dag-processor",
            "subject": filename,
            "details": {"file": filename, "rule": match["rule"], "message": match["message"][:500]},
        }
    )


class _Listener:
    """The hooks above, as one object (a module reference would re-import under another name)."""

    on_dag_run_running = staticmethod(on_dag_run_running)
    on_dag_run_success = staticmethod(on_dag_run_success)
    on_dag_run_failed = staticmethod(on_dag_run_failed)
    on_task_instance_success = staticmethod(on_task_instance_success)
    on_task_instance_failed = staticmethod(on_task_instance_failed)
    on_task_instance_skipped = staticmethod(on_task_instance_skipped)
    on_new_dag_import_error = staticmethod(on_new_dag_import_error)


LISTENER = _Listener()
