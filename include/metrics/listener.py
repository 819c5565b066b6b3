"""The metrics listener: every task and run of every workflow exported to StatsD with domain and tenant.

A second listener next to the audit listener (pluggy calls both), so the audit trail's code stays
as it is. Off unless ``[orchestrator_metrics] statsd_host`` is set (:mod:`include.metrics.statsd`).
Metric names below carry the configured prefix (default ``orchestrator.``); every metric has the
tags ``domain`` and ``tenant``, and ``dag_id`` (plus ``task_id`` for task metrics).

Worker (Task SDK task runner), at each task try's end:

- ``task.duration`` (ms, tag ``state``): start to end of the try; for a deferred task, wait included;
- ``task.finished`` (counter, tag ``state``: success, failed, up_for_retry, skipped);
- ``task.retries`` (counter): the retries a task needed, sent when it ends for good;
- ``approval.wait`` (ms, tag ``outcome``): for an approval gate, requested to answered (its XCom
  ``approval`` record, the worker's only view of the request; the report reads Airflow's
  ``hitl_detail`` rows instead).

Scheduler, at each run's end (it holds the task instance rows the worker does not see):

- ``task.queue_wait`` (ms): queued -> start of each task's last try (Airflow does not emit
  ``task.queued_duration`` for Task SDK workers);
- ``dagrun.duration`` (ms, tags ``state``, ``kind``): queued -> end, what the SLA deadline measures;
- ``dagrun.sla_miss`` (counter): a run longer than its domain's SLA for its kind.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from airflow.listeners import hookimpl

from include.metrics.measure import domain_and_kind, queue_wait, seconds, tenant_of
from include.metrics.statsd import StatsdClient, configured_client

log = logging.getLogger(__name__)

APPROVAL_XCOM_KEY = "approval"  # include.operators.approval.XCOM_KEY (not imported: it pulls in the gate)
FINAL_STATES = ("success", "failed", "skipped")


def _enum_value(value: Any) -> str | None:
    return None if value is None else str(getattr(value, "value", value))


def _task_labels(task_instance: Any) -> tuple[dict[str, str | None], Mapping[str, Any]]:
    """(tags, params) of a worker-side task instance."""
    task = getattr(task_instance, "task", None)
    dag = getattr(task, "dag", None)
    domain, _kind = domain_and_kind(getattr(dag, "tags", None) or ())
    context = getattr(task_instance, "_cached_template_context", None) or {}
    params = context.get("params") or {}
    dag_run = context.get("dag_run")
    conf = dict(getattr(dag_run, "conf", None) or {})
    # The tenant is the run's validated param; a conf key the DAG does not declare names no tenant.
    conf.pop("tenant", None)
    if isinstance(params.get("tenant"), str):
        conf["tenant"] = params["tenant"]
    tags = {
        "domain": domain,
        "tenant": tenant_of(conf, domain),
        "dag_id": task_instance.dag_id,
        "task_id": task_instance.task_id,
    }
    return tags, params


def _approval_wait(task_instance: Any) -> tuple[float, str] | None:
    try:
        record = task_instance.xcom_pull(task_ids=task_instance.task_id, key=APPROVAL_XCOM_KEY)
    except Exception:  # not a gate, or no XCom access here: no approval figure
        return None
    if not isinstance(record, Mapping) or not record.get("requested_at") or not record.get("responded_at"):
        return None
    wait = seconds(
        datetime.fromisoformat(record["requested_at"]), datetime.fromisoformat(record["responded_at"])
    )
    return (wait, str(record.get("outcome") or "unknown")) if wait is not None else None


def emit_task_metrics(client: StatsdClient, task_instance: Any, state: str) -> None:
    """The worker-side metrics of one task try's end (see the module docstring)."""
    tags, _params = _task_labels(task_instance)
    start, end = getattr(task_instance, "start_date", None), getattr(task_instance, "end_date", None)
    if start is not None and end is None:
        from airflow.sdk.timezone import utcnow

        end = utcnow()
    duration = seconds(start, end)
    if duration is not None:
        client.timing("task.duration", duration, {**tags, "state": state})
    client.incr("task.finished", {**tags, "state": state})
    retries = int(getattr(task_instance, "try_number", 1) or 1) - 1
    if state in FINAL_STATES and retries > 0:
        client.incr("task.retries", tags, retries)
    if state == "success" and hasattr(getattr(task_instance, "task", None), "approval_action"):
        approval = _approval_wait(task_instance)
        if approval is not None:
            client.timing("approval.wait", approval[0], {**tags, "outcome": approval[1]})


def emit_run_metrics(client: StatsdClient, dag_run: Any, task_instances: list[Any]) -> None:
    """The scheduler-side metrics of one finished run (see the module docstring)."""
    from include.metrics.kpi import sla_table

    domain, kind = domain_and_kind(getattr(getattr(dag_run, "dag", None), "tags", None) or ())
    tags = {
        "domain": domain,
        "tenant": tenant_of(dict(getattr(dag_run, "conf", None) or {}), domain),
        "dag_id": dag_run.dag_id,
    }
    state = _enum_value(dag_run.state) or "none"
    queued = getattr(dag_run, "queued_at", None) or getattr(dag_run, "start_date", None)
    duration = seconds(queued, getattr(dag_run, "end_date", None))
    if duration is not None:
        client.timing("dagrun.duration", duration, {**tags, "state": state, "kind": kind})
        sla = sla_table().get(domain, {}).get(kind)
        if sla is not None and duration > sla:
            client.incr("dagrun.sla_miss", {**tags, "kind": kind})
    for ti in task_instances:
        wait = queue_wait(getattr(ti, "queued_dttm", None), getattr(ti, "start_date", None))
        if wait is not None:
            client.timing("task.queue_wait", wait, {**tags, "task_id": ti.task_id})


def _on_task(task_instance: Any, state: str) -> None:
    client = configured_client()
    if client is None:
        return
    try:
        emit_task_metrics(client, task_instance, state)
    except Exception:  # metrics must never fail a task
        log.warning("task metrics not sent", exc_info=True)


def _on_run(dag_run: Any) -> None:
    client = configured_client()
    if client is None:
        return
    try:
        from sqlalchemy.orm import object_session

        session = object_session(dag_run)
        tis = list(dag_run.get_task_instances(session=session)) if session is not None else []
        emit_run_metrics(client, dag_run, tis)
    except Exception:  # metrics must never disturb the scheduler loop
        log.warning("run metrics not sent", exc_info=True)


@hookimpl
def on_task_instance_success(previous_state: Any, task_instance: Any) -> None:
    _on_task(task_instance, "success")


@hookimpl
def on_task_instance_failed(previous_state: Any, task_instance: Any, error: Any) -> None:
    state = _enum_value(getattr(task_instance, "state", None)) or "failed"
    _on_task(task_instance, state if state in ("failed", "up_for_retry") else "failed")


@hookimpl
def on_task_instance_skipped(previous_state: Any, task_instance: Any) -> None:
    _on_task(task_instance, "skipped")


@hookimpl
def on_dag_run_success(dag_run: Any, msg: str) -> None:
    _on_run(dag_run)


@hookimpl
def on_dag_run_failed(dag_run: Any, msg: str) -> None:
    _on_run(dag_run)


class _Listener:
    """The hooks above, as one object (a module reference would re-import under another name)."""

    on_task_instance_success = staticmethod(on_task_instance_success)
    on_task_instance_failed = staticmethod(on_task_instance_failed)
    on_task_instance_skipped = staticmethod(on_task_instance_skipped)
    on_dag_run_success = staticmethod(on_dag_run_success)
    on_dag_run_failed = staticmethod(on_dag_run_failed)


LISTENER = _Listener()
