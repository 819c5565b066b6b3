"""Drop the stale "success" an executor reports for a worker that exited because its task deferred.

Airflow 3.3.2 race (apache/airflow#66374, #67287, #72716): a deferrable task defers, its worker
exits cleanly and the executor queues a SUCCESS event for that try. If the task is resumed (a
trigger fires, or an approval is answered through the API) before the scheduler drains that
event, the task is already SCHEDULED, QUEUED or RUNNING again with the same try number, and the
scheduler takes the stale SUCCESS for a task killed externally: it fails the task. 3.3.2 only
covers the SCHEDULED variant (#66431); QUEUED is fixed upstream by #68741 (after 3.3.2) and
RUNNING is still open (#72767). We measured it here: an approval answered 1 to 5 s after the
gate deferred failed the gate.

A SUCCESS event for a try whose task instance is SCHEDULED/QUEUED/RUNNING with ``next_method``
set can only be that stale defer-exit event (the resumed attempt reports its own end after it
has set its final state), so it is dropped before the scheduler sees it. Everything else passes
through unchanged. Remove when Airflow ships the fix for every variant.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from airflow.models.taskinstance import TaskInstance
from airflow.models.taskinstancekey import TaskInstanceKey
from airflow.utils.session import create_session
from airflow.utils.state import TaskInstanceState
from sqlalchemy import select, tuple_

log = logging.getLogger(__name__)
RESUMED_STATES = (TaskInstanceState.SCHEDULED, TaskInstanceState.QUEUED, TaskInstanceState.RUNNING)


def stale_defer_exit_keys(events: Mapping[Any, tuple[Any, Any]]) -> set[TaskInstanceKey]:
    """The keys of ``events`` that are stale defer-exit successes (see module doc)."""
    candidates = [
        key
        for key, (state, _) in events.items()
        if isinstance(key, TaskInstanceKey) and state == TaskInstanceState.SUCCESS
    ]
    if not candidates:
        return set()
    with create_session() as session:
        rows = session.execute(
            select(
                TaskInstance.dag_id,
                TaskInstance.task_id,
                TaskInstance.run_id,
                TaskInstance.map_index,
                TaskInstance.try_number,
            ).where(
                tuple_(
                    TaskInstance.dag_id, TaskInstance.task_id, TaskInstance.run_id, TaskInstance.map_index
                ).in_([(k.dag_id, k.task_id, k.run_id, k.map_index) for k in candidates]),
                TaskInstance.next_method.is_not(None),
                TaskInstance.state.in_(RESUMED_STATES),
            )
        ).all()
    resumed = {TaskInstanceKey(r.dag_id, r.task_id, r.run_id, r.try_number, r.map_index) for r in rows}
    return {key for key in candidates if key in resumed}


class DropStaleDeferExits:
    """Executor mixin (put it before the executor class): every event buffer the scheduler reads
    has the stale defer-exit successes taken out. The LocalExecutor and the CeleryExecutor both
    report that event (a Celery task ends when its task defers), so both need it."""

    def get_event_buffer(self, dag_ids: Any = None) -> dict[Any, Any]:
        events = super().get_event_buffer(dag_ids)  # type: ignore[misc]
        for key in stale_defer_exit_keys(events):
            log.info("dropping the stale defer-exit success of %s: the task has resumed", key)
            del events[key]
        return events
