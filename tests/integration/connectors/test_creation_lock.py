"""Runs sharing an idempotency key create once (``ConnectorHook.create_once(..., key=...)``): the
search and the create hold a lock on the key in the shared store, PostgreSQL (embedded default) or
Redis (distributed), each a server of its own here, started fresh and stopped at the end (profiles
``lock-itest`` 127.0.0.1:25512 and ``lock-redis-itest`` 127.0.0.1:16520).

The "service" is a folder: ``find`` lists it, ``create`` writes a file, with a pause between the
search and the create as wide as a slow API's, so four processes started together all search
before any creates. Without the key (no lock) they create four times: the control that shows the
test can fail.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

import pytest
from airflow.sdk import Connection

from devstack import postgres
from devstack.config import Profile
from include.connectors.base import ConnectorHook
from include.connectors.errors import RetryBudgetExhausted
from include.connectors.ratelimit import creation_lock
from tests.support import stores
from tests.support.stores import postgres_database

PROFILE = Profile(name="lock-itest", api_port=0, pg_port=25512, moto_port=0, smtp_port=0)
REDIS_PROFILE = Profile(
    name="lock-redis-itest", api_port=16490, pg_port=0, moto_port=0, smtp_port=0, executor="celery"
)
PAUSE = 0.4  # between the search and the create


@contextlib.contextmanager
def postgres_store() -> Iterator[str]:
    with postgres_database(PROFILE, "ratelimit"):
        yield postgres.admin_dsn(PROFILE, "ratelimit")


def redis_store() -> contextlib.AbstractContextManager[str]:
    return stores.redis_store(REDIS_PROFILE)


STORES = {"postgresql": postgres_store, "redis": redis_store}


@pytest.fixture(scope="module", params=list(STORES))
def store(request: pytest.FixtureRequest) -> Iterator[str]:
    with STORES[request.param]() as url:
        yield url


class FolderHook(ConnectorHook):
    system: ClassVar[str] = "folder"


def _hook(store: str) -> FolderHook:
    hook = FolderHook("folder_default", tenant="acme")
    hook.__dict__["connection"] = Connection(
        conn_id="folder_default",
        conn_type="generic",
        extra=json.dumps({"rate_limit_store_dsn": store, "timeout_seconds": 10, "retry_max_attempts": 3}),
    )
    return hook


def _create_once(store: str, folder: str, key: str | None, start: float, results: Any) -> None:
    hook = _hook(store)
    service = Path(folder)

    def find() -> str | None:
        existing = sorted(service.iterdir())
        return existing[0].name if existing else None

    def create() -> str:
        time.sleep(PAUSE)
        made = service / f"ticket-{multiprocessing.current_process().pid}"
        made.write_text("created")
        return made.name

    time.sleep(max(0.0, start - time.time()))
    results.put(hook.create_once(find, create, operation="create_ticket", key=key))


def _race(store: str, folder: Path, key: str | None, processes: int = 4) -> list[str]:
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    start = time.time() + 1.0
    workers = [
        context.Process(target=_create_once, args=(store, str(folder), key, start, results))
        for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert all(worker.exitcode == 0 for worker in workers)
    return [results.get(timeout=5) for _ in workers]


def test_runs_sharing_a_key_create_once(store: str, tmp_path: Path) -> None:
    (locked := tmp_path / "locked").mkdir()
    answers = _race(store, locked, key="idem-alert-42")
    created = [p.name for p in locked.iterdir()]
    assert len(created) == 1
    assert answers == created * 4  # every run got the one ticket


def test_without_the_key_they_race_and_each_creates(store: str, tmp_path: Path) -> None:
    (unlocked := tmp_path / "unlocked").mkdir()
    _race(store, unlocked, key=None)
    assert len(list(unlocked.iterdir())) == 4


def test_a_held_lock_is_waited_for_then_the_attempts_give_up(store: str) -> None:
    hook = _hook(store)
    hook.__dict__["timeout"] = 1.0  # the wait for the lock
    with creation_lock(store, "folder:acme:idem-held", wait_seconds=5, hold_seconds=30):
        began = time.monotonic()
        # Each attempt waits for the lock, then the retry policy's next attempt searches again.
        with pytest.raises(RetryBudgetExhausted, match=r"3 attempts.*still held after 1 s") as caught:
            hook.create_once(lambda: None, lambda: "made", operation="create_ticket", key="idem-held")
        # Three waits of 1 s each; redis-py's Lock gives up one poll (50 ms) before its blocking
        # timeout rather than after it, so a wait may end at 0.95 s.
        assert time.monotonic() - began >= 3 * (1.0 - 0.1)
    password = urlsplit(store).password
    assert password
    assert password not in str(caught.value)
    # Released with the block: the next run takes it at once.
    assert (
        hook.create_once(lambda: None, lambda: "made", operation="create_ticket", key="idem-held") == "made"
    )


def test_a_failed_create_releases_the_lock(store: str) -> None:
    hook = _hook(store)

    def failing() -> str:
        raise RuntimeError("the service said no")

    with pytest.raises(RuntimeError):
        hook.create_once(lambda: None, failing, operation="create_ticket", key="idem-fails")
    hook.__dict__["timeout"] = 1.0
    assert (
        hook.create_once(lambda: None, lambda: "made", operation="create_ticket", key="idem-fails") == "made"
    )
