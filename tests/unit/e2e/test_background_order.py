"""The end-to-end session's order (tests/e2e/background.py ``order``): a test that only takes the
result of a scenario started at the session's first test runs just before the first always-quiet
module after it, never earlier; other tests keep their places."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from tests.e2e import background


def _item(nodeid: str, takes: str | None = None) -> Any:
    function = SimpleNamespace(_background_result=takes) if takes else SimpleNamespace()
    return SimpleNamespace(nodeid=nodeid, function=function)


@pytest.fixture
def scenarios(monkeypatch: pytest.MonkeyPatch) -> None:
    def noop(request: Any) -> Any:
        return lambda: None

    found = {
        "early": background.Scenario("early", "test_a", noop, None, background.ALWAYS_QUIET, 60),
        "late": background.Scenario("late", "test_z", noop, "test_burst", background.ALWAYS_QUIET, 60),
    }
    monkeypatch.setattr(background, "SCENARIOS", found)


def test_an_early_scenarios_result_test_runs_before_the_first_quiet_module(scenarios: None) -> None:
    items = [
        _item("tests/e2e/test_a.py::test_result", takes="early"),
        _item("tests/e2e/test_a.py::test_other"),
        _item("tests/e2e/test_b.py::test_b"),
        _item("tests/e2e/test_burst.py::test_burst"),
        _item("tests/e2e/test_c.py::test_c"),
        _item("tests/e2e/test_kpi_report.py::test_kpi"),
    ]
    background.order(items)  # type: ignore[arg-type]
    assert [i.nodeid.split("::")[1] for i in items] == [
        "test_other",
        "test_b",
        "test_result",
        "test_burst",
        "test_c",
        "test_kpi",
    ]


def test_no_quiet_module_after_it_or_a_later_scenario_keeps_the_place(scenarios: None) -> None:
    items = [
        _item("tests/e2e/test_burst.py::test_burst"),
        _item("tests/e2e/test_d.py::test_result", takes="early"),
        _item("tests/e2e/test_z.py::test_late", takes="late"),
        _item("tests/e2e/test_kpi_report.py::test_kpi"),
        _item("tests/e2e/test_q.py::test_q"),
    ]
    before = [i.nodeid for i in items]
    background.order(items)  # type: ignore[arg-type]
    # test_result is moved to just before test_kpi_report (the next quiet module), test_late
    # (a scenario that starts later) stays.
    assert [i.nodeid for i in items] == [before[0], before[2], before[1], before[3], before[4]]
    items = [_item("tests/e2e/test_d.py::test_result", takes="early"), _item("tests/e2e/test_q.py::test_q")]
    background.order(items)  # type: ignore[arg-type]
    assert [i.nodeid for i in items] == ["tests/e2e/test_d.py::test_result", "tests/e2e/test_q.py::test_q"]
