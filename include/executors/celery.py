"""CeleryExecutor that does not let a stale defer-exit success fail a resumed task.

The distributed setup's executor (``[core] executor =
include.executors.celery.ResumeSafeCeleryExecutor``): a Celery task that runs a deferring task
ends with SUCCESS, and the same 3.3.2 race as with the LocalExecutor follows (an approval
answered within a second of the gate deferring). See :mod:`include.executors.stale_events`.
``airflow celery worker`` and the other Celery commands come with the class (its CLI commands are
CeleryExecutor's).
"""

from __future__ import annotations

from airflow.providers.celery.executors.celery_executor import CeleryExecutor

from include.executors.stale_events import DropStaleDeferExits


class ResumeSafeCeleryExecutor(DropStaleDeferExits, CeleryExecutor):
    pass
