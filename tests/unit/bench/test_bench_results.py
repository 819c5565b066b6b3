"""bench.suite's result files: one JSON per run in ``bench/results/``; docs/benchmarks.md shows the latest.

A result file holds the figures as printed (``figures``), when, on which commit and on what machine
the run finished (``recorded``), and every measurement. The figures are recomputed here from the
measurements, so a hand-edited figure or a changed table is caught; the docs page's table must be
the newest committed file's figures, row for row.
"""

from __future__ import annotations

import json
import re
import subprocess
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from bench import suite

REPO = Path(__file__).resolve().parents[3]
RESULTS = REPO / "bench" / "results"
BENCHMARKS_PAGE = REPO / "docs" / "benchmarks.md"
RESULT_NAME = re.compile(r"^(\d{8}T\d{6}Z)\.json$")
MEASURED = {
    "fast_path": {
        "platform": {"n": 50, "p50": 1.62, "p95": 2.45, "max": 2.54, "timed_out": 0},
        "bare": {"n": 50, "p50": 1.45, "p95": 2.52, "max": 2.54, "timed_out": 0},
        "ratio_p50": 1.12,
        "ratio_p95": 0.97,
    },
    "ratelimit": {"ratio": 0.9405, "server_429s": 0},
    "wall_seconds": {"fast_path": 113.4, "total": 531.9},
}


def result_files() -> list[Path]:
    return sorted(path for path in RESULTS.glob("*.json") if RESULT_NAME.match(path.name))


def committed_result_files() -> list[Path]:
    try:
        listed = subprocess.run(
            ["git", "ls-files", "bench/results"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        return []
    return sorted(REPO / name for name in listed if RESULT_NAME.match(Path(name).name))


def row(figure: dict[str, Any]) -> str:
    return f"| {figure['figure']} | {figure['value']} | {figure['goal'] or '-'} |"


@pytest.fixture
def recorded_elsewhere():
    commit = {"sha": "a" * 40, "dirty": False}
    machine = {"cpus": 2, "cpu_model": "test", "memory_gib": 24.0}
    with (
        mock.patch.object(suite, "_commit", return_value=commit),
        mock.patch.object(suite, "_machine", return_value=machine),
    ):
        yield commit, machine


@pytest.mark.parametrize(
    ("now", "name", "finished_at"),
    [
        pytest.param(
            datetime(2026, 12, 6, 9, 3, 57, tzinfo=UTC),
            "20261206T090357Z.json",
            "2026-12-06T09:03:57Z",
            id="utc",
        ),
        pytest.param(
            datetime(2026, 12, 6, 10, 3, 57, tzinfo=timezone(timedelta(hours=1))),
            "20261206T090357Z.json",
            "2026-12-06T09:03:57Z",
            id="other-zone-named-in-utc",
        ),
    ],
)
def test_write_results_writes_one_utc_named_file_with_the_printed_figures(
    tmp_path: Path,
    recorded_elsewhere: tuple[dict[str, Any], dict[str, Any]],
    now: datetime,
    name: str,
    finished_at: str,
) -> None:
    commit, machine = recorded_elsewhere

    path = suite.write_results(MEASURED, folder=tmp_path / "results", now=now)

    assert path == tmp_path / "results" / name
    record = json.loads(path.read_text())
    assert record["recorded"] == {
        "finished_at": finished_at,
        "command": "make bench",
        "module": "bench.suite",
        "commit": commit,
        "machine": machine,
    }
    assert {key: record[key] for key in MEASURED} == MEASURED
    assert record["figures"][2:5] == [
        {
            "figure": "fast path: ticket -> updated, platform p50/p95/max (s)",
            "value": "1.62 / 2.45 / 2.54 (n=50), timed out 0",
            "goal": "p50 <= 3 s",
        },
        {
            "figure": "fast path: bare Airflow p50/p95/max (s)",
            "value": "1.45 / 2.52 / 2.54 (n=50)",
            "goal": None,
        },
        {"figure": "fast path: overhead ratio p50 (p95)", "value": "1.12 (0.97)", "goal": "<= 1.10"},
    ]


def test_the_written_figures_are_the_printed_table(tmp_path: Path, recorded_elsewhere: Any) -> None:
    record = json.loads(suite.write_results(MEASURED, folder=tmp_path).read_text())
    printed = suite.table(MEASURED).splitlines()

    for figure in record["figures"]:
        [line] = [line for line in printed if line.startswith(figure["figure"] + " ")]
        goal = f"  [goal {figure['goal']}]" if figure["goal"] else ""
        assert line.rstrip().endswith(figure["value"] + goal)


def test_commit_names_the_checked_out_commit() -> None:
    git = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False)
    head = git.stdout.strip()
    if not head:
        pytest.skip("not a git checkout")

    assert suite._commit()["sha"] == head  # type: ignore[index]


@pytest.mark.parametrize("path", result_files(), ids=lambda path: path.name)
def test_each_result_file_is_what_the_suite_writes(path: Path) -> None:
    record = json.loads(path.read_text())
    stamp = RESULT_NAME.match(path.name).group(1)  # type: ignore[union-attr]

    assert record["recorded"]["finished_at"] == datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
    assert {"command", "module", "commit", "machine"} <= set(record["recorded"])
    assert record["recorded"]["machine"]["cpus"] > 0
    assert record["figures"] == [
        {"figure": name, "value": value, "goal": goal or None} for name, value, goal in suite.figures(record)
    ]


def test_the_benchmarks_page_shows_the_latest_result_row_for_row() -> None:
    page = BENCHMARKS_PAGE.read_text()
    [linked] = set(re.findall(r"\(\.\./bench/results/(\d{8}T\d{6}Z\.json)\)", page))
    committed = committed_result_files()
    if committed:
        assert linked == committed[-1].name, "docs/benchmarks.md must show the newest committed result"

    record = json.loads((RESULTS / linked).read_text())
    rows = [line for line in page.splitlines() if line.startswith("| ") and not line.startswith("| figure |")]
    table = rows[: len(record["figures"])]
    assert table == [row(figure) for figure in record["figures"]]
