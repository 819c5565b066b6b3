"""The stale-event guard sits in front of both executors' event buffers (include/executors/)."""

from __future__ import annotations

from typing import Any

import pytest

from include.executors import stale_events
from include.executors.celery import ResumeSafeCeleryExecutor
from include.executors.local import ResumeSafeLocalExecutor
from include.executors.stale_events import DropStaleDeferExits


@pytest.mark.parametrize("executor", [ResumeSafeLocalExecutor, ResumeSafeCeleryExecutor])
def test_the_guard_comes_before_the_executor_in_the_mro(executor: type) -> None:
    assert executor.get_event_buffer is DropStaleDeferExits.get_event_buffer


def test_only_the_stale_keys_are_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    class Base:
        def get_event_buffer(self, dag_ids: Any = None) -> dict[str, tuple[str, None]]:
            return {"stale": ("success", None), "fresh": ("success", None), "failed": ("failed", None)}

    class Guarded(DropStaleDeferExits, Base):
        pass

    seen: list[dict[str, Any]] = []

    def stale(events: dict[str, Any]) -> set[str]:
        seen.append(dict(events))
        return {"stale"}

    monkeypatch.setattr(stale_events, "stale_defer_exit_keys", stale)
    assert Guarded().get_event_buffer() == {"fresh": ("success", None), "failed": ("failed", None)}
    assert len(seen) == 1
    assert set(seen[0]) == {"stale", "fresh", "failed"}
