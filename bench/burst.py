"""Burst benchmark: N runs of one workflow triggered at once through the REST API.

Prints trigger time, drain time, runs/minute and end states, and writes a JSON result. Used by
the end-to-end suite (200 runs against the test stack) and by hand against ``make run``:
``python -m bench.burst --runs 200`` (reads the admin password of the run profile).
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from devstack import directory_seed
from devstack.api_client import TERMINAL_RUN_STATES, AirflowApi
from devstack.config import PROFILES


@dataclass
class BurstResult:
    dag_id: str
    runs: int
    trigger_seconds: float
    total_seconds: float
    runs_per_minute: float
    states: dict[str, int]
    run_seconds_p50: float
    run_seconds_p95: float
    run_seconds_max: float
    # run id -> seconds from queued to end (None while unfinished); not printed, used by tests
    run_seconds: dict[str, float | None]


def _list_runs(api: AirflowApi, dag_id: str, run_ids: set[str]) -> dict[str, dict[str, Any]]:
    runs: dict[str, dict[str, Any]] = {}
    offset = 0
    while True:
        page = api.get(f"dags/{dag_id}/dagRuns", limit=100, offset=offset)
        runs.update({run["dag_run_id"]: run for run in page["dag_runs"] if run["dag_run_id"] in run_ids})
        offset += 100
        if offset >= page["total_entries"]:
            return runs


def _seconds(run: dict[str, Any]) -> float | None:
    if not run.get("end_date"):
        return None
    queued = datetime.fromisoformat(run["queued_at"])
    return (datetime.fromisoformat(run["end_date"]) - queued).total_seconds()


def percentile(values: list[float], pct: float, digits: int = 1) -> float:
    """Nearest-rank percentile, rounded; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))], digits)


def burst(
    api: AirflowApi, dag_id: str, runs: int, conf: dict[str, Any], *, timeout: float = 900
) -> BurstResult:
    prefix = f"burst_{time.time_ns() // 1_000_000}"  # ms: two bursts of one DAG never share ids
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=16) as pool:
        run_ids = set(pool.map(lambda i: api.trigger(dag_id, conf, run_id=f"{prefix}_{i:04d}"), range(runs)))
    triggered = time.monotonic() - started
    deadline = started + timeout
    while True:
        found = _list_runs(api, dag_id, run_ids)
        done = [r for r in found.values() if r["state"] in TERMINAL_RUN_STATES]
        if len(done) == runs or time.monotonic() > deadline:
            break
        time.sleep(2)
    total = time.monotonic() - started
    run_seconds = {run_id: _seconds(found[run_id]) if run_id in found else None for run_id in run_ids}
    finished = [s for s in run_seconds.values() if s is not None]
    return BurstResult(
        dag_id=dag_id,
        runs=runs,
        trigger_seconds=round(triggered, 1),
        total_seconds=round(total, 1),
        runs_per_minute=round(runs / total * 60, 1),
        states=dict(Counter(found[r]["state"] if r in found else "missing" for r in run_ids)),
        run_seconds_p50=percentile(finished, 50),
        run_seconds_p95=percentile(finished, 95),
        run_seconds_max=percentile(finished, 100),
        run_seconds=run_seconds,
    )


def combine(results: Sequence[BurstResult]) -> BurstResult:
    """Several bursts of one DAG as one: runs, trigger and drain seconds summed, runs/min = all
    runs over the bursts' summed seconds (the time between bursts does not count), states summed,
    percentiles over every run. Refuses an empty list or bursts of different DAGs."""
    if not results:
        raise ValueError("combine: no bursts to combine")
    dag_ids = {r.dag_id for r in results}
    if len(dag_ids) != 1:
        raise ValueError(f"combine: bursts of different DAGs {sorted(dag_ids)}; combine one DAG's bursts")
    run_seconds: dict[str, float | None] = {}
    for result in results:
        run_seconds.update(result.run_seconds)
    finished = [s for s in run_seconds.values() if s is not None]
    runs = sum(r.runs for r in results)
    total = sum(r.total_seconds for r in results)
    states: Counter[str] = Counter()
    for result in results:
        states.update(result.states)
    return BurstResult(
        dag_id=results[0].dag_id,
        runs=runs,
        trigger_seconds=round(sum(r.trigger_seconds for r in results), 1),
        total_seconds=round(total, 1),
        runs_per_minute=round(runs / total * 60, 1),
        states=dict(states),
        run_seconds_p50=percentile(finished, 50),
        run_seconds_p95=percentile(finished, 95),
        run_seconds_max=percentile(finished, 100),
        run_seconds=run_seconds,
    )


def wait_idle(api: AirflowApi, dag_ids: Iterable[str], *, timeout: float = 900) -> None:
    """Return once no run of ``dag_ids`` is queued or running (a burst that timed out may leave
    some): the next burst must not share the machine with the last one's runs."""
    deadline = time.monotonic() + timeout
    for dag_id in dag_ids:
        while api.get(f"dags/{dag_id}/dagRuns", state=["queued", "running"], limit=1)["total_entries"]:
            if time.monotonic() > deadline:
                raise TimeoutError(f"runs of {dag_id} still queued or running after {timeout}s")
            time.sleep(2)


def report(result: BurstResult, output: Path) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(asdict(result), indent=2))
    print(
        f"burst {result.dag_id}: {result.runs} runs triggered in {result.trigger_seconds}s, all done in "
        f"{result.total_seconds}s = {result.runs_per_minute} runs/min; states {result.states} -> {output}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--dag-id", default="support_service_check")
    parser.add_argument("--profile", default="run", choices=sorted(PROFILES))
    parser.add_argument("--output", type=Path, default=Path("bench/results/burst.json"))
    args = parser.parse_args()
    profile = PROFILES[args.profile]
    api = AirflowApi(profile.api_url, *directory_seed.admin_login(profile))
    report(burst(api, args.dag_id, args.runs, {"tenant": "acme"}), args.output)


if __name__ == "__main__":
    main()
