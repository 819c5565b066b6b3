"""Throughput of the distributed setup on 1 and on 2 Celery workers (issue 9).

``python -m bench.distributed`` (19 minutes on 2 cores with 15 runs per domain) starts the
distributed stack on a profile of its own (``bench-celery``: CeleryExecutor, Redis, two workers;
ports 800 above the test profile's, ``.local/bench-celery``), then runs the same burst twice: with
worker-1 stopped (one worker: worker-2, which serves both queues), and with both. The burst is
``--runs-per-domain`` runs of every domain's ``<domain>_service_check`` at once, so the work
spreads over every domain pool (support 8, hr 4, invoicing 4, implementation 6, soc 6, platform 2
slots) rather than stopping at one pool's quota. It prints runs/minute and run duration p50/p95
for each and writes ``bench/results/distributed-<timestamp>.json``. The figures are as good as the
machine is quiet.
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.burst import burst, percentile
from devstack.config import Profile
from include.policies.loader import load_domain_policy

RESULTS = Path(__file__).parent / "results"
PROFILE = Profile(
    name="bench-celery",
    api_port=18880,  # RT +10, log servers +13/+14/+16, scheduler health +15, ERP +20, Redis +30
    pg_port=26242,
    moto_port=15850,
    smtp_port=13325,
    ldap_port=14189,
    executor="celery",
)


def _log(message: str) -> None:
    print(f"[bench-distributed {time.strftime('%H:%M:%S')}] {message}", flush=True)


def mixed_burst(api: Any, runs_per_domain: int) -> dict[str, Any]:
    """Every domain's service check ``runs_per_domain`` times, all triggered at once."""
    dag_ids = [f"{domain}_service_check" for domain in load_domain_policy().domains]
    began = time.monotonic()
    with ThreadPoolExecutor(max_workers=len(dag_ids)) as pool:
        conf = {"tenant": "acme"}
        results = list(
            pool.map(lambda dag_id: burst(api, dag_id, runs_per_domain, conf, timeout=900), dag_ids)
        )
    wall = time.monotonic() - began
    seconds = [s for r in results for s in r.run_seconds.values() if s is not None]
    states: dict[str, int] = {}
    for result in results:
        for state, count in result.states.items():
            states[state] = states.get(state, 0) + count
    runs = runs_per_domain * len(dag_ids)
    return {
        "runs": runs,
        "wall_seconds": round(wall, 1),
        "runs_per_minute": round(runs / wall * 60, 1),
        "run_seconds_p50": percentile(seconds, 50),
        "run_seconds_p95": percentile(seconds, 95),
        "states": states,
        "per_dag": {r.dag_id: {k: v for k, v in asdict(r).items() if k != "run_seconds"} for r in results},
    }


def run(runs_per_domain: int) -> dict[str, Any]:
    from devstack import directory_seed, processes
    from devstack.api_client import AirflowApi
    from devstack.stack import Stack

    stack = Stack(PROFILE)
    out: dict[str, Any] = {"runs_per_domain": runs_per_domain}
    try:
        began = time.monotonic()
        stack.start(fresh=True)
        out["stack_start_seconds"] = round(time.monotonic() - began, 1)
        api = AirflowApi(stack.profile.api_url, *directory_seed.admin_login(stack.profile), timeout=60)
        dag_ids = {f"{domain}_service_check" for domain in load_domain_policy().domains}
        api.wait_for_dags(dag_ids, timeout=300)
        mixed_burst(api, 2)  # warm-up: first task start-ups, connection caches
        # worker-2 stays: it is the one that also serves `soc` (worker-1 serves `default` only).
        processes.stop("celery-worker-1", pids_dir=stack.profile.pids)
        _log("worker-1 stopped: one worker (worker-2, queues default and soc)")
        out["one_worker"] = mixed_burst(api, runs_per_domain)
        _log(f"one worker: {_summary(out['one_worker'])}")
        stack.start_worker("worker-1")
        processes.wait_until(lambda: stack.worker_ready("celery-worker-1"), what="worker-1 back", timeout=120)
        out["two_workers"] = mixed_burst(api, runs_per_domain)
        _log(f"two workers: {_summary(out['two_workers'])}")
        out["ratio"] = round(out["two_workers"]["runs_per_minute"] / out["one_worker"]["runs_per_minute"], 2)
    finally:
        stack.stop()
    return out


def _summary(figures: dict[str, Any]) -> str:
    return (
        f"{figures['runs']} runs in {figures['wall_seconds']}s = {figures['runs_per_minute']} runs/min, "
        f"run p50 {figures['run_seconds_p50']}s p95 {figures['run_seconds_p95']}s, states {figures['states']}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs-per-domain", type=int, default=20)
    args = parser.parse_args()
    import os

    result = run(args.runs_per_domain)
    result["machine"] = {"cpus": os.cpu_count(), "loadavg_at_end": [round(x, 2) for x in os.getloadavg()]}
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"distributed-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    out.write_text(json.dumps(result, indent=2))
    print(
        f"\none worker:  {_summary(result['one_worker'])}\n"
        f"two workers: {_summary(result['two_workers'])}\n"
        f"two / one: {result['ratio']}x runs/min -> {out}"
    )


if __name__ == "__main__":
    main()
