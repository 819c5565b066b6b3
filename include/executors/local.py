"""LocalExecutor that does not let a stale defer-exit success fail a resumed task.

Configured as ``[core] executor = include.executors.local.ResumeSafeLocalExecutor``; see
:mod:`include.executors.stale_events` for the race it closes.
"""

from __future__ import annotations

import logging
from typing import Any

from airflow.executors.local_executor import LocalExecutor

from include.executors.stale_events import stale_defer_exit_keys

log = logging.getLogger(__name__)


class ResumeSafeLocalExecutor(LocalExecutor):
    def get_event_buffer(self, dag_ids: Any = None) -> dict[Any, Any]:
        events = super().get_event_buffer(dag_ids)
        for key in stale_defer_exit_keys(events):
            log.info("dropping the stale defer-exit success of %s: the task has resumed", key)
            del events[key]
        return events
