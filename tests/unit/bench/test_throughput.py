"""The throughput part's figures (bench/suite.py, bench/burst.py): each side in two bursts, ABBA.

Bare Airflow's bursts and the platform's run in the order bare, platform, platform, bare; each
side's runs/min is its runs over its bursts' summed seconds, and the ratio is the ratio of those
sums. The per-burst figures stay in the result and in one table row, so a drift shows.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench import burst as burst_module
from bench.burst import BurstResult, combine, wait_idle
from bench.suite import THROUGHPUT_ORDER, figures, sum_cpu, throughput_figures, throughput_plan

REPO = Path(__file__).resolve().parents[3]


def _burst(dag_id: str, tag: str, seconds: list[float | None], total: float) -> BurstResult:
    runs = len(seconds)
    return BurstResult(
        dag_id=dag_id,
        runs=runs,
        trigger_seconds=2.0,
        total_seconds=total,
        runs_per_minute=round(runs / total * 60, 1),
        states={
            "success": sum(s is not None for s in seconds),
            **({"running": 1} if None in seconds else {}),
        },
        run_seconds_p50=0.0,
        run_seconds_p95=0.0,
        run_seconds_max=0.0,
        run_seconds={f"{tag}_{i}": s for i, s in enumerate(seconds)},
    )


def _abba() -> list[tuple[str, BurstResult, dict[str, float]]]:
    # The machine slows down over the part: every burst is slower than the one before.
    return [
        ("bare", _burst("bare", "b1", [1.0] * 100, 50.0), {"tasks": 20.0, "scheduler": 5.0, "machine": 40.0}),
        (
            "platform",
            _burst("plat", "p1", [2.0] * 100, 60.0),
            {"tasks": 25.0, "scheduler": 6.0, "machine": 45.0},
        ),
        (
            "platform",
            _burst("plat", "p2", [3.0] * 100, 75.0),
            {"tasks": 26.0, "scheduler": 6.5, "machine": 47.0},
        ),
        ("bare", _burst("bare", "b2", [4.0] * 100, 80.0), {"tasks": 22.0, "scheduler": 5.5, "machine": 41.0}),
    ]


def test_combine_counts_all_runs_over_the_summed_seconds() -> None:
    first = _burst("bare", "a", [1.0, 2.0, 3.0, 4.0], total=10.0)  # 24 runs/min
    second = _burst("bare", "b", [5.0, 6.0, None, 8.0], total=30.0)  # 8 runs/min

    both = combine([first, second])

    assert both.runs == 8
    assert both.total_seconds == 40.0
    assert both.runs_per_minute == 12.0  # 8 runs in 40 s, not the mean of 24 and 8 (16)
    assert both.trigger_seconds == 4.0
    assert both.states == {"success": 7, "running": 1}
    assert len(both.run_seconds) == 8
    # percentiles over every finished run of both bursts (nearest rank over 1..6, 8)
    assert (both.run_seconds_p50, both.run_seconds_max) == (4.0, 8.0)


def test_combine_refuses_no_bursts_and_bursts_of_different_dags() -> None:
    with pytest.raises(ValueError, match="no bursts"):
        combine([])
    with pytest.raises(ValueError, match=r"different DAGs \['bare', 'plat'\]"):
        combine([_burst("bare", "a", [1.0], 1.0), _burst("plat", "b", [1.0], 1.0)])


def test_the_plan_interleaves_half_bursts_abba() -> None:
    assert THROUGHPUT_ORDER == ("bare", "platform", "platform", "bare")
    assert throughput_plan(200) == [("bare", 100), ("platform", 100), ("platform", 100), ("bare", 100)]
    # an odd count: each side still runs all of it, the larger half second
    assert throughput_plan(5) == [("bare", 2), ("platform", 2), ("platform", 3), ("bare", 3)]
    with pytest.raises(ValueError, match="at least 2"):
        throughput_plan(1)


def test_the_ratio_is_of_the_sides_sums_and_the_bursts_stay_visible() -> None:
    out = throughput_figures(_abba())

    assert out["order"] == list(THROUGHPUT_ORDER)
    # each side: 200 runs over its two bursts' seconds
    assert out["bare"]["runs"] == out["platform"]["runs"] == 200
    assert out["bare"]["total_seconds"] == 130.0
    assert out["platform"]["total_seconds"] == 135.0
    assert out["bare"]["runs_per_minute"] == round(200 / 130 * 60, 1) == 92.3
    assert out["platform"]["runs_per_minute"] == round(200 / 135 * 60, 1) == 88.9
    assert out["ratio"] == round(130 / 135, 2) == 0.96
    # each pair that ran back to back: platform over bare
    assert out["pair_ratios"] == [round(50 / 60, 2), round(80 / 75, 2)] == [0.83, 1.07]
    assert out["bare"]["states"] == {"success": 200}
    assert out["bare"]["dag_id"] == "bare"
    assert [b["runs_per_minute"] for b in out["bare"]["bursts"]] == [120.0, 75.0]
    assert [b["runs_per_minute"] for b in out["platform"]["bursts"]] == [100.0, 80.0]
    assert out["platform"]["bursts"][1]["cpu"] == {"tasks": 26.0, "scheduler": 6.5, "machine": 47.0}
    assert "run_seconds" not in out["bare"]
    assert "run_seconds" not in out["bare"]["bursts"][0]


def test_cpu_is_summed_over_a_sides_bursts_largest_first_machine_last() -> None:
    out = throughput_figures(_abba())

    assert out["bare"]["cpu"] == {"tasks": 42.0, "scheduler": 10.5, "machine": 81.0}
    assert list(out["bare"]["cpu"]) == ["tasks", "scheduler", "machine"]
    assert sum_cpu([{"machine": 1.0, "a": 1.0}, {"b": 3.0, "a": 1.04}]) == {
        "b": 3.0,
        "a": 2.0,
        "machine": 1.0,
    }


def test_bursts_of_one_side_only_are_refused() -> None:
    bare_only = [burst for burst in _abba() if burst[0] == "bare"]
    with pytest.raises(ValueError, match=r"sides \['bare'\]; need bare and platform"):
        throughput_figures(bare_only)


def _rows(results: dict[str, Any]) -> dict[str, str]:
    return {name: value for name, value, _ in figures(results) if name.startswith("throughput")}


def test_the_table_has_the_aggregated_rows_and_one_row_per_burst() -> None:
    rows = _rows({"throughput": throughput_figures(_abba())})

    assert rows["throughput: runs/min platform / bare"] == (
        "88.9 / 92.3 -> ratio 0.96 (200 runs each; states {'success': 200} / {'success': 200})"
    )
    assert rows["throughput: CPU s, bare burst"] == "machine 81.0 s: tasks 42.0, scheduler 10.5 in 130.0 s"
    assert rows["throughput: runs/min per burst (1st / 2nd half)"] == (
        "bare 120.0 / 75.0; platform 100.0 / 80.0; ratio per pair 0.83 / 1.07"
        " (order bare, platform, platform, bare)"
    )


def test_a_result_from_before_the_bursts_keeps_its_rows() -> None:
    # bench/results/ files written with one burst per side: the same rows as then, no burst row
    old = throughput_figures(_abba())
    for side in ("bare", "platform"):
        del old[side]["bursts"]
    rows = _rows({"throughput": old})

    assert list(rows) == [
        "throughput: runs/min platform / bare",
        "throughput: CPU s, platform burst",
        "throughput: CPU s, bare burst",
    ]
    assert "throughput: runs/min per burst (1st / 2nd half)" not in _rows({"throughput": {"error": "boom"}})


def test_wait_idle_returns_once_no_run_is_queued_or_running(monkeypatch: pytest.MonkeyPatch) -> None:
    class Api:
        def __init__(self) -> None:
            self.active = {"bare": [2, 1, 0], "plat": [0]}
            self.asked: list[tuple[str, Any]] = []

        def get(self, path: str, **params: Any) -> dict[str, int]:
            dag_id = path.split("/")[1]
            self.asked.append((dag_id, params["state"]))
            return {"total_entries": self.active[dag_id].pop(0)}

    monkeypatch.setattr(burst_module.time, "sleep", lambda seconds: None)
    api = Api()

    wait_idle(api, ["bare", "plat"])  # type: ignore[arg-type]

    assert api.asked == [("bare", ["queued", "running"])] * 3 + [("plat", ["queued", "running"])]
    assert api.active == {"bare": [], "plat": []}


def test_wait_idle_gives_up_after_its_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    class Busy:
        def get(self, path: str, **params: Any) -> dict[str, int]:
            return {"total_entries": 3}

    monkeypatch.setattr(burst_module.time, "sleep", lambda seconds: None)
    with pytest.raises(TimeoutError, match="runs of bare still queued or running after 0s"):
        wait_idle(Busy(), ["bare"], timeout=0)  # type: ignore[arg-type]


def test_too_few_burst_runs_are_refused_before_any_stack_starts() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.suite", "--parts", "throughput", "--burst-runs", "1"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert done.returncode == 2
    assert "--burst-runs: 1; at least 2" in done.stderr
    assert "stack_start" not in done.stdout
