"""Audit overhead per task: what writing the audit trail costs a task, measured two ways.

1. ``in_process``: the listener's write path against the stack's audit store, N times each:
   ``cold`` = a fresh process's first record (a new store object, the PostgreSQL connection, the
   append), which is what every task process pays once; ``warm`` = further appends on the same
   connection (the gate's or a ticket operator's second record in the same task).
2. ``in_runs``: from real task runs of the session, the audit record's ``at`` (database clock at
   append) minus the task instance's ``end_date`` (set by the API server when the worker reported
   the end state). The worker reports the state *before* its listeners run (Task SDK
   ``finalize``), so this is how long after the task's end its ``task.finished`` record landed:
   the audit write plus the rest of finalisation. It delays no downstream task (the scheduler has
   the state already); it holds the worker slot that long.

Prints p50/p95/max in milliseconds and writes JSON. Run by the end-to-end suite
(``tests/e2e/test_audit_trail.py``) against its stack.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.burst import percentile
from devstack.api_client import AirflowApi, ApiError
from include.audit.store import AuditStore


@dataclass
class AuditOverhead:
    samples: int
    cold_p50_ms: float
    cold_p95_ms: float
    warm_p50_ms: float
    warm_p95_ms: float
    tasks_measured: int
    in_runs_p50_ms: float
    in_runs_p95_ms: float
    in_runs_max_ms: float
    slowest: dict[str, float]  # task -> ms, the three slowest in runs (what to look at first)


def _event(n: int) -> dict[str, Any]:
    return {
        "kind": "bench.audit_overhead",
        "actor": "bench",
        "domain": "platform",
        "correlation_id": "corr-bench-audit",
        "subject": "audit overhead",
        "details": {"n": n, "state": "success", "try_number": 1, "duration_seconds": 0.1},
    }


def measure_in_process(dsn: str, samples: int) -> tuple[list[float], list[float]]:
    cold: list[float] = []
    warm: list[float] = []
    for n in range(samples):
        started = time.perf_counter()
        store = AuditStore(dsn)
        store.append(_event(n))
        cold.append(time.perf_counter() - started)
        started = time.perf_counter()
        store.append(_event(n))
        warm.append(time.perf_counter() - started)
        store.close()
    return cold, warm


def measure_in_runs(dsn: str, api: AirflowApi, limit: int) -> dict[str, float]:
    """``at - end_date`` (seconds) of the last ``limit`` ``task.finished`` records of the session."""
    with AuditStore(dsn) as store:
        records = [r for r in store.records() if r["kind"] == "task.finished"][-limit:]
    delays: dict[str, float] = {}
    for record in records:
        map_index = record["details"].get("map_index", -1)
        path = f"dags/{record['dag_id']}/dagRuns/{record['run_id']}/taskInstances/{record['task_id']}"
        try:
            ti = api.get(path if map_index in (-1, None) else f"{path}/{map_index}")
        except ApiError:
            continue  # a DAG of a test that replaced it (GitOps) is gone
        if not ti.get("end_date") or ti.get("try_number") != record["details"].get("try_number"):
            continue  # a later try ended since: its end_date is not this record's
        at = datetime.fromisoformat(record["at"].replace("Z", "+00:00"))
        name = f"{record['dag_id']}.{record['task_id']}@{record['run_id']}"
        delays[name] = (at - datetime.fromisoformat(ti["end_date"])).total_seconds()
    return delays


def measure(dsn: str, api: AirflowApi, *, samples: int = 200, tasks: int = 120) -> AuditOverhead:
    cold, warm = measure_in_process(dsn, samples)
    by_task = measure_in_runs(dsn, api, tasks)
    delays = list(by_task.values())
    slowest = sorted(by_task.items(), key=lambda item: item[1], reverse=True)[:3]

    def ms(values: list[float], p: float) -> float:
        return percentile([v * 1000 for v in values], p, digits=1)

    return AuditOverhead(
        samples=samples,
        cold_p50_ms=ms(cold, 50),
        cold_p95_ms=ms(cold, 95),
        warm_p50_ms=ms(warm, 50),
        warm_p95_ms=ms(warm, 95),
        tasks_measured=len(delays),
        in_runs_p50_ms=ms(delays, 50),
        in_runs_p95_ms=ms(delays, 95),
        in_runs_max_ms=ms(delays, 100),
        slowest={name.split("@")[0]: round(value * 1000, 1) for name, value in slowest},
    )


def report(result: AuditOverhead, output: Path) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(asdict(result), indent=2))
    print(
        f"audit overhead: first record of a process p50 {result.cold_p50_ms} ms p95 {result.cold_p95_ms} ms, "
        f"further records p50 {result.warm_p50_ms} ms p95 {result.warm_p95_ms} ms ({result.samples} each); "
        f"in real runs task end -> task.finished recorded p50 {result.in_runs_p50_ms} ms "
        f"p95 {result.in_runs_p95_ms} ms max {result.in_runs_max_ms} ms ({result.tasks_measured} tasks; "
        f"slowest {result.slowest}) -> {output}"
    )
