"""CeleryExecutor that does not let a stale defer-exit success fail a resumed task, and that reads
task states over one kept database connection.

The distributed setup's executor (``[core] executor =
include.executors.celery.ResumeSafeCeleryExecutor``): a Celery task that runs a deferring task
ends with SUCCESS, and the same 3.3.2 race as with the LocalExecutor follows (an approval
answered within a second of the gate deferring). See :mod:`include.executors.stale_events`.
``airflow celery worker`` and the other Celery commands come with the class (its CLI commands are
CeleryExecutor's).

The kept connection (issue 26): the executor's ``sync`` reads the Celery task states from the
result backend (the metadata database, ``db+postgresql://``) on every scheduler loop that has a
task out. Celery's database backend keeps a pooled engine only in a *forked* process (its
``SessionManager.forked``, set in a worker's pool processes); in any other process, and the
scheduler is one, every ``ResultSession()`` builds a new engine with ``NullPool``: one new
PostgreSQL connection (backend start-up and password exchange on both sides) per loop. Under a
60-run burst that was most of the scheduler's 18 s of CPU against the embedded setup's 4 s, and a
share of PostgreSQL's 10.8 s against 4.9 s. :meth:`ResumeSafeCeleryExecutor.start` gives the
backend a :class:`KeptEngineSessionManager`: one pooled engine, as in a pool process, that Celery
itself disposes of on a retryable database error (``on_backend_retryable_error``), and that a
process forked from the scheduler does not inherit.
"""

from __future__ import annotations

import os
from typing import Any

from airflow.providers.celery.executors.celery_executor import CeleryExecutor
from celery.backends.database import DatabaseBackend
from celery.backends.database.session import SessionManager

from include.executors.stale_events import DropStaleDeferExits


class KeptEngineSessionManager(SessionManager):
    """Celery's session manager with the engine kept, as it keeps it in a forked pool process.

    A child forked from this process (the CeleryExecutor's send pool with ``sync_parallelism`` >
    1) drops the inherited engines without closing their connections (SQLAlchemy's rule for
    forks) and builds its own if it needs one.
    """

    def __init__(self) -> None:
        super().__init__()
        self.forked = True  # Celery's switch for "keep one pooled engine per URL"
        os.register_at_fork(after_in_child=self._forget_inherited)

    def _forget_inherited(self) -> None:
        for engine in self._engines.values():
            engine.dispose(close=False)
        self._engines.clear()
        self._sessions.clear()
        self.prepared = False


def keep_result_engine(backend: Any) -> bool:
    """Give a Celery database result backend a :class:`KeptEngineSessionManager`; False (and
    nothing changed) for any other backend."""
    if not isinstance(backend, DatabaseBackend) or isinstance(
        backend.session_manager, KeptEngineSessionManager
    ):
        return False
    backend.session_manager = KeptEngineSessionManager()
    return True


class ResumeSafeCeleryExecutor(DropStaleDeferExits, CeleryExecutor):
    def start(self) -> None:
        super().start()
        # The app's backend is built once and shared by the state fetcher and every sent task's
        # AsyncResult: giving it the kept engine here covers every read the scheduler makes.
        if keep_result_engine(self.celery_app.backend):
            self.log.info("Celery result backend: one kept database engine for the task state reads")
