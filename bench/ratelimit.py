"""Shared rate limit benchmark: N worker processes, one limit in PostgreSQL, a server that enforces it.

Each process makes M calls through a :class:`~include.connectors.base.HttpConnectorHook` whose extras
set ``rate_limit_per_second`` / ``rate_limit_burst`` to the server's limit and point
``rate_limit_store_dsn`` at the shared store. The fault server (rate-enforcing mode) admits at most
``limit`` requests per sliding window and answers 429 beyond it, so every 429 is a permit the
shared limiter handed out too early.

Achieved rate is the steady state: a sliding window lets the first ``limit`` calls through at once,
so the rate is ``(admitted - limit) / span`` with ``span`` from the first to the last admitted
request (a perfect limiter reaches exactly ``limit / window``). Prints the figures and writes
``bench/results/ratelimit.json``. By hand (starts and stops a PostgreSQL cluster of its own):
``python -m bench.ratelimit --processes 4 --calls 100``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import tempfile
import time
import uuid
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from devstack import postgres
from devstack.config import HOST, Profile
from devstack.standins.fault import FaultServer, ReceivedRequest

RESULTS = Path(__file__).parent / "results" / "ratelimit.json"
BENCH_PROFILE = Profile(name="ratelimit-bench", api_port=0, pg_port=25463, moto_port=0, smtp_port=0)
DATABASE = "ratelimit"
START_TIMEOUT = 180.0
# Measured on the 2-CPU development box (4 workers): with no margin the server answered 13 of 413
# requests 429 (sent up to 9.6 ms early); 0.02 sent none at 1.2 ms of slack when the box was idle;
# 0.05 kept 34-40 ms of slack under load at a ratio of 0.93-0.94 (the ceiling is 1 / 1.05 = 0.952).
SAFETY_MARGIN = 0.05


@dataclass
class RateLimitResult:
    processes: int
    calls_per_process: int
    total_calls: int
    failed_calls: int
    elapsed_seconds: float
    span_seconds: float
    achieved_per_second: float
    allowed_per_second: float
    ratio: float
    server_429s: int
    server_admitted: int
    max_admitted_in_window: int
    min_window_slack_ms: float
    client_retries: int
    limiter_wait_seconds: float
    safety_margin: float


def store_dsn(profile: Profile) -> str:
    """The store as its own role ``ratelimit``, as the ``ratelimit_store`` connection names it."""
    return postgres.dsn(profile, postgres.RATELIMIT_ROLE, DATABASE)


# What a worker imports before the start line (this module, Airflow's SDK and the connector base:
# ~2 s of CPU per process). The workers are forked from multiprocessing's fork server, which imports
# these once and stays up for the rest of this process (one fork server per process: a second run,
# e.g. the next store in the integration tests, forks at once). Spawned workers each imported them
# anew: 4 processes on 2 cores cost ~5 s per run before the start line, on a loaded machine far
# more. Exactly what a worker imported before the barrier, no more: what its first call imports
# lazily (the store's client, pyrate_limiter) it still imports after the start line, as a fresh task
# process does, so the figures measure the same thing as before.
WORKER_PRELOAD = ("bench.ratelimit", "airflow.sdk", "include.connectors.base")


def _worker_context() -> multiprocessing.context.ForkServerContext:
    """The fork server's context, its preload set if it is not running yet (ignored once it is)."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(WORKER_PRELOAD))
    return context


def _bench_hook(conn_id: str, port: int, extras: dict[str, Any]) -> Any:
    """A HttpConnectorHook for the fault server (imported here: only the worker processes need Airflow)."""
    from airflow.sdk import Connection

    from include.connectors.base import HttpConnectorHook

    class BenchHook(HttpConnectorHook):
        system = "bench"

        def auth_headers(self) -> dict[str, str]:
            return {}

    hook = BenchHook(conn_id, tenant="bench")
    connection = Connection(
        conn_id=conn_id, conn_type="http", host=HOST, port=port, schema="http", extra=json.dumps(extras)
    )
    hook.__dict__["connection"] = connection  # fills the cached_property: no connection lookup
    return hook


def _worker(conn_id: str, port: int, extras: dict[str, Any], calls: int, barrier: Any, results: Any) -> None:
    from include.connectors.errors import ConnectorError

    hook = _bench_hook(conn_id, port, extras)
    assert hook.limiter is not None
    barrier.wait(START_TIMEOUT)
    failed = 0
    for call in range(calls):
        try:
            hook.request("GET", f"/bench/{os.getpid()}/{call}", operation="bench_call")
        except ConnectorError:
            failed += 1
    results.put({"failed": failed, "retries": hook.retry_count, "waited": hook.limiter.waited_seconds})


def _window_figures(received: list[ReceivedRequest], limit: int, window: float) -> tuple[int, float]:
    """Most admitted requests in any server window, and the smallest slack over every request that
    arrived, ``t[i + limit] - t[i] - window``: negative means the client sent one too early."""
    admitted = sorted(r.arrived for r in received if r.outcome == 200)
    in_window: deque[float] = deque()
    most = 0
    for arrived in admitted:
        in_window.append(arrived)
        while in_window[0] <= arrived - window:
            in_window.popleft()
        most = max(most, len(in_window))
    arrivals = sorted(r.arrived for r in received)
    slacks = [arrivals[i + limit] - arrivals[i] - window for i in range(len(arrivals) - limit)]
    return most, min(slacks, default=float("nan")) * 1000


def run(
    dsn: str,
    *,
    processes: int = 4,
    calls: int = 50,
    limit: int = 20,
    window_seconds: float = 1.0,
    safety_margin: float = SAFETY_MARGIN,
) -> RateLimitResult:
    """Run the benchmark against the store ``dsn`` with a fresh bucket; return the figures."""
    os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="ratelimit-bench-airflow-"))
    extras = {
        "rate_limit_per_second": limit / window_seconds,
        "rate_limit_burst": limit,
        "rate_limit_store_dsn": dsn,
        "rate_limit_max_wait_seconds": 60,
        "rate_limit_safety_margin": safety_margin,
    }
    conn_id = f"bench_{uuid.uuid4().hex[:8]}"  # a bucket (table) of its own per run
    context = _worker_context()  # after AIRFLOW_HOME is set: the fork server inherits it
    barrier = context.Barrier(processes + 1)
    results = context.Queue()
    with FaultServer() as server:
        server.enforce_rate(limit, window_seconds)
        workers = [
            context.Process(target=_worker, args=(conn_id, server.port, extras, calls, barrier, results))
            for _ in range(processes)
        ]
        for worker in workers:
            worker.start()
        barrier.wait(START_TIMEOUT)
        started = time.monotonic()
        reports = [results.get(timeout=START_TIMEOUT + calls * processes) for _ in workers]
        elapsed = time.monotonic() - started
        for worker in workers:
            worker.join(timeout=30)
        received = server.requests
        rejected = server.rejected
    admitted = [r for r in received if r.outcome == 200]
    span = max(r.arrived for r in admitted) - min(r.arrived for r in admitted)
    achieved = (len(admitted) - limit) / span if span > 0 else float("nan")
    allowed = limit / window_seconds
    most, slack_ms = _window_figures(received, limit, window_seconds)
    return RateLimitResult(
        processes=processes,
        calls_per_process=calls,
        total_calls=processes * calls,
        failed_calls=sum(r["failed"] for r in reports),
        elapsed_seconds=round(elapsed, 3),
        span_seconds=round(span, 3),
        achieved_per_second=round(achieved, 3),
        allowed_per_second=allowed,
        ratio=round(achieved / allowed, 4),
        server_429s=rejected,
        server_admitted=len(admitted),
        max_admitted_in_window=most,
        min_window_slack_ms=round(slack_ms, 1),
        client_retries=sum(r["retries"] for r in reports),
        limiter_wait_seconds=round(sum(r["waited"] for r in reports), 3),
        safety_margin=safety_margin,
    )


def report(result: RateLimitResult, path: Path = RESULTS) -> None:
    print(
        f"{result.total_calls} calls from {result.processes} processes in {result.elapsed_seconds:.2f}s "
        f"({result.failed_calls} failed, {result.client_retries} client retries)\n"
        f"achieved {result.achieved_per_second:.2f}/s (steady state over {result.span_seconds:.2f}s) "
        f"of {result.allowed_per_second:.2f}/s allowed: ratio {result.ratio:.3f}\n"
        f"server: {result.server_admitted} admitted, {result.server_429s} answered 429; at most "
        f"{result.max_admitted_in_window} in one window, tightest window slack "
        f"{result.min_window_slack_ms:.1f} ms (safety margin {result.safety_margin})"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(result), indent=2) + "\n")
    print(f"written to {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--calls", type=int, default=100, help="calls per process")
    parser.add_argument("--limit", type=int, default=20, help="requests the server admits per window")
    parser.add_argument("--window", type=float, default=1.0, help="the server's window in seconds")
    parser.add_argument("--safety-margin", type=float, default=SAFETY_MARGIN)
    parser.add_argument("--dsn", help="an existing store; default: a cluster of its own, stopped after")
    args = parser.parse_args()
    options = {
        "processes": args.processes,
        "calls": args.calls,
        "limit": args.limit,
        "window_seconds": args.window,
        "safety_margin": args.safety_margin,
    }
    if args.dsn:
        report(run(args.dsn, **options))
        return
    postgres.initialise(BENCH_PROFILE, fresh=True)
    postgres.start(BENCH_PROFILE)
    try:
        postgres.create_database(BENCH_PROFILE, DATABASE)
        report(run(store_dsn(BENCH_PROFILE), **options))
    finally:
        postgres.stop(BENCH_PROFILE)


if __name__ == "__main__":
    main()
