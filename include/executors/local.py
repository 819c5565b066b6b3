"""LocalExecutor that does not let a stale defer-exit success fail a resumed task.

Configured as ``[core] executor = include.executors.local.ResumeSafeLocalExecutor``; see
:mod:`include.executors.stale_events` for the race it closes.
"""

from __future__ import annotations

from airflow.executors.local_executor import LocalExecutor

from include.executors.stale_events import DropStaleDeferExits


class ResumeSafeLocalExecutor(DropStaleDeferExits, LocalExecutor):
    pass
