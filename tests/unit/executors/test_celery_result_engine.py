"""The CeleryExecutor reads task states over one kept database connection, not one per scheduler
loop (include/executors/celery.py; issue 26). Against a real SQLite result database: the
connections counted are the ones SQLAlchemy opens."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from airflow.providers.celery.executors.celery_executor_utils import BulkStateFetcher
from celery import Celery
from celery.backends.database import DatabaseBackend
from celery.result import AsyncResult
from sqlalchemy import event
from sqlalchemy.engine import Engine

from include.executors import celery as celery_executor
from include.executors.celery import KeptEngineSessionManager, ResumeSafeCeleryExecutor, keep_result_engine

READS = 5


@pytest.fixture
def app(tmp_path: Path) -> Celery:
    return Celery("unit-result-engine", backend=f"db+sqlite:///{tmp_path / 'results.db'}", broker="memory://")


@pytest.fixture
def connects() -> Iterator[list[object]]:
    opened: list[object] = []

    def count(dbapi_connection: object, _record: object) -> None:
        opened.append(dbapi_connection)

    event.listen(Engine, "connect", count)
    yield opened
    event.remove(Engine, "connect", count)


def _read_states(app: Celery, task_ids: list[str]) -> None:
    """What the scheduler's sync does each loop: one bulk read of the results table."""
    fetcher = BulkStateFetcher(1, celery_app=app)
    states = fetcher.get_many([AsyncResult(task_id, app=app) for task_id in task_ids])
    assert set(states) == set(task_ids)


def test_celerys_manager_opens_a_connection_per_read_outside_a_forked_process(
    app: Celery, connects: list[object]
) -> None:
    """The cost the kept engine removes: Celery's own manager, in a process that was not forked
    (the scheduler), connects anew on every read."""
    assert isinstance(app.backend, DatabaseBackend)
    assert not isinstance(app.backend.session_manager, KeptEngineSessionManager)
    for _ in range(READS):
        _read_states(app, [uuid.uuid4().hex])
    assert len(connects) >= READS


def test_the_kept_engine_reads_every_time_over_one_connection(app: Celery, connects: list[object]) -> None:
    assert keep_result_engine(app.backend) is True
    assert keep_result_engine(app.backend) is False  # once is enough
    task_id = uuid.uuid4().hex
    app.backend.store_result(task_id, None, "SUCCESS")
    _read_states(app, [task_id])
    opened = len(connects)
    assert opened <= 2  # the pool's first connections (tables created, then the read)
    for _ in range(READS):
        _read_states(app, [task_id, uuid.uuid4().hex])
    assert len(connects) == opened  # no read after the first opened a connection
    assert app.backend.get_task_meta(task_id)["status"] == "SUCCESS"


def test_other_result_backends_are_left_alone() -> None:
    app = Celery("unit-result-engine-cache", backend="cache+memory://", broker="memory://")
    assert keep_result_engine(app.backend) is False


def test_a_forked_child_does_not_share_the_kept_connection(app: Celery) -> None:
    keep_result_engine(app.backend)
    _read_states(app, [uuid.uuid4().hex])
    manager = app.backend.session_manager
    assert len(manager._engines) == 1
    pid = os.fork()
    if pid == 0:  # the child: inherited engines forgotten, a read opens its own
        code = 0 if not manager._engines else 3
        try:
            _read_states(app, [uuid.uuid4().hex])
        except Exception:
            code = 4
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert len(manager._engines) == 1  # the parent keeps its own
    _read_states(app, [uuid.uuid4().hex])


def test_the_executor_keeps_its_apps_result_engine_when_it_starts(
    app: Celery, monkeypatch: pytest.MonkeyPatch
) -> None:
    kept: list[Any] = []

    def keep(backend: Any) -> bool:
        kept.append(backend)
        return True

    monkeypatch.setattr(celery_executor, "keep_result_engine", keep)
    executor = ResumeSafeCeleryExecutor.__new__(ResumeSafeCeleryExecutor)
    executor.celery_app = app
    executor._sync_parallelism = 1
    executor.start()
    assert kept == [app.backend]
