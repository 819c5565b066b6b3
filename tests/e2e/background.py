"""Background scenarios: a long-waiting scenario of one module runs beside other modules' tests.

Some end-to-end scenarios mostly wait (a firewall block's 90 s expiry, a bulk update held to its
rate share, an approval drill's 20-30 s ladder). Each is declared in its module with
:func:`scenario`; the session starts it in a thread of its own at a chosen point and its test, in
its own module, waits for it and fails with the scenario's own assertion. The wait then overlaps
other modules' tests instead of adding to the session.

The rules that keep that sound (pytest has no mechanism for a test that spans modules; pytest-xdist
runs whole tests in parallel processes, which would start one stack per process):

- ``start_after``: a module of the session; the scenario starts at the first test after that
  module's last test (or at its own module, whichever comes first; at the session's first test
  when ``None``). Chosen so that nothing timed runs beside it (the burst's SLA).
- ``quiet``: modules (``test_x``) or tests (``test_x::test_name``) whose counts are global (all mails,
  all runs of a window, a global fault switch): each waits until the scenario has ended; the burst,
  the evidence packs and the KPI report always do (``ALWAYS_QUIET``), whatever the session holds.
- The scenario has its own users, subjects, alert ids and correlation ids, so per-subject counts of
  the tests beside it exclude it; it builds its own HTTP clients (``requests.Session`` is not
  thread-safe): ``prepare`` runs in the main thread with the session's fixtures, the body in the
  scenario's thread.
- A failure (assertion or error) is raised by :func:`result` in the scenario's test with the
  scenario named; a scenario still running after its ``timeout`` fails that test too. The thread
  is a daemon: a session that ends early does not wait for it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

# prepare(request) -> body: prepare runs in the main thread (sign-ups, session fixtures); the body
# runs in the scenario's thread and returns what its test needs.
Prepare = Callable[[pytest.FixtureRequest], Callable[[], Any]]


@dataclass
class Scenario:
    name: str
    module: str
    prepare: Prepare
    start_after: str | None
    quiet: tuple[str, ...]
    timeout: float
    started_at: float | None = None
    _thread: threading.Thread | None = None
    _value: Any = None
    _error: BaseException | None = None
    _done: threading.Event = field(default_factory=threading.Event)

    def start(self, request: pytest.FixtureRequest) -> None:
        self.started_at = time.monotonic()
        try:
            body = self.prepare(request)
        except BaseException as error:  # reported by the scenario's test, not by the test it started in
            self._error = error
            self._done.set()
            return
        self._thread = threading.Thread(target=self._main, args=(body,), name=f"e2e-{self.name}", daemon=True)
        self._thread.start()

    def _main(self, body: Callable[[], Any]) -> None:
        try:
            self._value = body()
        except BaseException as error:
            self._error = error
        finally:
            self._done.set()

    def wait(self, why: str) -> None:
        """Block until the scenario has ended (or its timeout has passed: then fail, naming ``why``)."""
        assert self.started_at is not None
        left = self.started_at + self.timeout - time.monotonic()
        if not self._done.wait(max(0.0, left)):
            raise AssertionError(
                f"background scenario {self.module}::{self.name} still running {self.timeout:.0f}s after it "
                f"started ({why})"
            )


SCENARIOS: dict[str, Scenario] = {}
# Modules no scenario may run beside, whatever the session: the burst (200 runs against an SLA), the
# evidence packs and the KPI report (every run of a time window, any DAG and tenant).
ALWAYS_QUIET = ("test_burst", "test_evidence_packs", "test_kpi_report")


def scenario(
    *, start_after: str | None, quiet: tuple[str, ...] = (), timeout: float = 600
) -> Callable[[Prepare], Prepare]:
    """Declare a background scenario of the calling module, named after the decorated ``prepare``."""

    def register(prepare: Prepare) -> Prepare:
        module = prepare.__module__.rsplit(".", 1)[-1]
        quiets = ALWAYS_QUIET + quiet
        SCENARIOS[prepare.__name__] = Scenario(
            prepare.__name__, module, prepare, start_after, quiets, timeout
        )
        return prepare

    return register


def result(name: str) -> Any:
    """What the scenario's body returned; its failure, or a timeout, fails the calling test."""
    found = SCENARIOS[name]
    assert found.started_at is not None, f"background scenario {name} was never started"
    found.wait("its test waited for it")
    if found._error is not None:
        found._error.add_note(f"(raised in the background scenario {found.module}::{name})")
        raise found._error
    return found._value


def result_test(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Mark a test that only takes scenario ``name``'s result, so :func:`order` may run it later."""

    def mark(test: Callable[..., Any]) -> Callable[..., Any]:
        test._background_result = name  # type: ignore[attr-defined]
        return test

    return mark


def order(items: list[pytest.Item]) -> None:
    """Run each marked result test (:func:`result_test`) of a scenario that starts at the session's
    first test just before the first always-quiet test after it (which waits for the scenario
    anyway), not where its module puts it: the scenario's wait then overlaps the modules between
    instead of holding the session at its start. Never earlier than where the module puts it."""

    def taken(item: pytest.Item) -> str | None:
        name = getattr(getattr(item, "function", None), "_background_result", None)
        found = SCENARIOS.get(name) if isinstance(name, str) else None
        return name if found is not None and found.start_after is None else None

    for item in [i for i in items if taken(i)]:
        here = items.index(item)
        later = next((n for n in range(here + 1, len(items)) if _module(items[n]) in ALWAYS_QUIET), None)
        if later is not None:
            items.insert(later - 1, items.pop(here))


def wait_for(name: str) -> None:
    """Block until the scenario has ended, whatever its outcome (its own test reports that)."""
    found = SCENARIOS[name]
    assert found.started_at is not None, f"background scenario {name} was never started"
    found.wait("a test that reads what it writes waited for it")


def _module(item: pytest.Item) -> str:
    return Path(item.nodeid.split("::")[0]).stem


def _test(item: pytest.Item) -> str:
    return f"{_module(item)}::{getattr(item, 'originalname', item.name)}"


def before_test(request: pytest.FixtureRequest) -> None:
    """Start the scenarios that are due, and hold a quiet test until the scenarios it must not see
    have ended (called by an autouse fixture before every end-to-end test)."""
    item = request.node
    items = request.session.items
    modules = [_module(i) for i in items]
    here = items.index(item)
    module, test = _module(item), _test(item)
    for found in SCENARIOS.values():
        if found.module not in modules:
            continue  # its test is not in this session
        if found.started_at is None:
            after = found.start_after
            due = (
                module == found.module
                or after is None
                or after not in modules
                or here > len(modules) - 1 - modules[::-1].index(after)
            )
            if due:
                found.start(request)
        if found.started_at is not None and {module, test} & set(found.quiet):
            found.wait(f"{test} must not run beside it")
