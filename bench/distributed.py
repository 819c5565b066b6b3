"""The distributed setup against the embedded one, on the same burst, in one run (issues 9, 26).

``python -m bench.distributed`` starts the embedded default on a profile of its own
(``bench-embedded``: the LocalExecutor, as ``make run`` and the tests use it; ``.local/bench-embedded``)
and runs the burst on it; stops it; starts the distributed setup (``bench-celery``: CeleryExecutor,
Redis, two workers; ``.local/bench-celery``) and runs the same burst with worker-1 stopped (one
worker: worker-2, which serves every queue), then with both. One stack runs at a time, so each
side has the whole machine. The burst is ``--runs-per-domain`` runs of every domain's
``<domain>_service_check`` triggered at once, so the work spreads over every domain pool (support 8,
hr 4, invoicing 4, implementation 6, soc 6, platform 2 slots) rather than stopping at one pool's
quota. Before each measured burst a two-runs-per-domain burst warms the stack (first task start-ups,
connection caches); it is not measured. Both stacks parse a file again only when it changes
(``[dag_processor] min_file_process_interval`` 3600 s instead of the stack's 120 s): the periodic
re-parse of every file fell inside one side's burst and not the other's, by the clock.

It prints runs/minute, run duration p50/p95, CPU seconds per component (``bench/cpu.py``; with
Celery a worker's figure includes its pool and task processes, with the LocalExecutor those are
``tasks``) and CPU seconds per run for each side, and the ratios; the load average before each
burst is recorded with it (the figures are as good as the machine is quiet). Writes
``bench/results/distributed-<UTC timestamp>.json`` (committed: the figures docs/benchmarks.md
quotes). ``--api-workers N`` runs both stacks with ``[api] workers = N`` (the API server's uvicorn
workers) instead of the stack's setting; ``--scheduler-idle-sleep S`` both with ``[scheduler]
scheduler_idle_sleep_time = S`` (how long the scheduler sleeps after a loop that queued nothing and
had no executor event: with open runs that only wait for their tasks, it sets how often the
scheduler examines them, and so most of its CPU under Celery; docs/deployment.md);
``--dag-bundle git`` both reading the workflows as deployed, from a ``GitOpsDagBundle`` over a bare
repository of ``dags/`` (:func:`git_bundle`), instead of the local stack's folder;
``--setting section.key=value`` (repeatable) any other Airflow setting for both stacks (e.g.
``celery.task_track_started=False``), recorded in the result as ``settings``.
``--api-sweep embedded|celery`` measures ``[api] workers`` instead: one stack, bursts with 1, 2,
2, 1 workers, only the API server restarted between (:func:`api_sweep`;
``bench/results/distributed-api-<setup>-<UTC timestamp>.json``).

:func:`run` returns flat keys, for ``bench/suite.py`` (``SIDES`` below name the sides):

- ``runs_per_burst``, ``api_workers``, ``scheduler_idle_sleep_time`` (None: the stack's setting),
  ``dag_bundle`` (``local`` or ``git``), ``settings`` (``section.key`` -> value: the other Airflow
  settings given, both stacks),
  ``wall_seconds`` (the whole run);
- ``<side>_runs_per_minute``, ``<side>_wall_seconds``, ``<side>_run_seconds_p50``/``_p95``,
  ``<side>_states`` (end state -> count), ``<side>_cpu`` (component -> CPU seconds, with
  ``machine`` and ``other``), ``<side>_cpu_seconds_per_run`` (machine CPU / runs),
  ``<side>_stack_cpu_seconds_per_run`` (the components' CPU, not ``other``, / runs),
  ``<side>_loadavg_before`` (1, 5, 15 min), ``<side>_pg_sessions_opened`` (connections opened
  to PostgreSQL during the burst, every component), ``<side>_pg_transactions`` (transactions in
  it); ``<side>_error`` instead where that side failed;
- ``embedded_stack_start_seconds``, ``celery_stack_start_seconds``;
- ``ratio_celery_1_to_embedded`` (the issue's goal: >= 0.9), ``ratio_celery_2_to_1``,
  ``ratio_celery_2_to_embedded`` (runs/minute); ``cpu_ratio_celery_1_to_embedded``,
  ``cpu_ratio_celery_2_to_embedded`` (runs per stack CPU-second: embedded's stack CPU per run over
  Celery's; what a run costs the host, less exposed to whatever else the machine runs).

Runtime on the 2 cores with the default 10 runs per domain (60 runs a burst): 6 minutes (346 s)
with the machine at load 7 to 11, 9.5 minutes at load 10 to 17; most of it is starting the two
stacks (50 to 150 s each) and the warm-up bursts. Figures and what they led to: docs/deployment.md
("Performance against the embedded setup").
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from bench.burst import burst, percentile
from bench.cpu import CpuMeter
from bench.cpu import line as cpu_line
from devstack.config import REPO_ROOT, Profile
from include.policies.loader import load_domain_policy

RESULTS = Path(__file__).parent / "results"
CELERY_PROFILE = Profile(
    name="bench-celery",
    api_port=18880,  # RT +10, log servers +13/+14/+16, scheduler health +15, ERP +20, Redis +30, MFA +40
    pg_port=26242,
    moto_port=15850,
    smtp_port=13325,
    ldap_port=14189,
    executor="celery",
)
EMBEDDED_PROFILE = Profile(
    name="bench-embedded",
    api_port=18980,
    pg_port=26342,
    moto_port=15950,
    smtp_port=13425,
    ldap_port=14289,
)
PROFILE = CELERY_PROFILE  # the name this module had for it before issue 26
SIDES: Final = ("embedded", "celery_1", "celery_2")
DEFAULT_RUNS_PER_DOMAIN: Final = 10
WARM_UP_RUNS_PER_DOMAIN: Final = 2
API_SWEEP_ORDER: Final = (1, 2, 2, 1)
DAG_BUNDLES: Final = ("local", "git")


def _log(message: str) -> None:
    print(f"[bench-distributed {time.strftime('%H:%M:%S')}] {message}", flush=True)


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


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
    }


def pg_counters(profile: Profile) -> dict[str, int] | None:
    """The metadata database's counters so far (``pg_stat_database``): ``sessions`` opened and
    ``transactions`` ended (commits and rollbacks); None where they cannot be read (the figures
    are witnesses, not the measurement). Transactions are mostly the scheduler's loop: how often
    it examined the open runs, whatever the machine's speed."""
    import psycopg

    from devstack import postgres

    try:
        with psycopg.connect(postgres.admin_dsn(profile), autocommit=True, connect_timeout=10) as conn:
            row = conn.execute(
                "SELECT sessions, xact_commit + xact_rollback FROM pg_stat_database WHERE datname = 'airflow'"
            ).fetchone()
    except psycopg.Error:
        return None
    return {"sessions": int(row[0]), "transactions": int(row[1])} if row else None


def measured_burst(stack: Any, api: Any, runs_per_domain: int, side: str) -> dict[str, Any]:
    """:func:`mixed_burst` with the CPU per component over it, as ``<side>_<key>`` keys."""
    load = _load()
    before = pg_counters(stack.profile)
    with CpuMeter(stack.status) as meter:
        figures = mixed_burst(api, runs_per_domain)
    after = pg_counters(stack.profile)
    # Connections opened to the metadata database and transactions in it during the burst, by
    # every component (the reading connection goes to database postgres: not counted).
    for key in ("sessions", "transactions"):
        name = "pg_sessions_opened" if key == "sessions" else "pg_transactions"
        figures[name] = after[key] - before[key] if before is not None and after is not None else None
    machine = meter.seconds.get("machine", 0.0)
    stack_cpu = sum(v for k, v in meter.seconds.items() if k not in ("machine", "other"))
    figures["cpu"] = meter.seconds
    figures["cpu_seconds_per_run"] = round(machine / figures["runs"], 2) if figures["runs"] else None
    # The stack's own CPU (every component and the bench client, not "other": whatever else the
    # machine ran), per run: what a run costs the host, less exposed to a noisy machine.
    figures["stack_cpu_seconds_per_run"] = round(stack_cpu / figures["runs"], 2) if figures["runs"] else None
    figures["loadavg_before"] = load
    _log(f"{side}: {_summary(figures)}")
    return {f"{side}_{key}": value for key, value in figures.items()}


def _side(out: dict[str, Any], side: str, measure: Callable[[], dict[str, Any]]) -> None:
    """One side's figures into ``out``; a side that fails (the API server timing out a trigger)
    leaves ``<side>_error`` instead, and the other sides still run."""
    try:
        out.update(measure())
    except Exception as error:
        out[f"{side}_error"] = f"{type(error).__name__}: {error}"[:500]
        _log(f"{side} FAILED: {out[f'{side}_error']}")


GIT_BUNDLE_NAME: Final = "workflows"


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=bench", "-c", "user.email=bench@secops.example", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
    )


def git_bundle(root: Path, dags: Path = REPO_ROOT / "dags") -> dict[str, Any]:
    """The bundle as deployed (docker/helm/values.yaml: ``GitOpsDagBundle``, the only bundle,
    ``subdir: dags``) over a bare repository under ``root`` (emptied first) holding one commit of
    ``dags`` as the working tree has it (uncommitted changes included: what is measured is what
    is checked out). Runs of a Git bundle carry its commit, and Airflow's scheduler skips the
    per-loop latest-version look-up for them (``_verify_integrity_if_dag_changed``), which the
    local bundle's runs pay. Returns the bundle's entry for ``[dag_processor]
    dag_bundle_config_list``."""
    shutil.rmtree(root, ignore_errors=True)
    bare, work = root / "workflows.git", root / "work"
    root.mkdir(parents=True)
    _git(root, "init", "--bare", "--initial-branch=main", str(bare))
    _git(root, "clone", str(bare), str(work))
    _git(work, "checkout", "-B", "main")
    shutil.copytree(dags, work / "dags", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    _git(work, "add", "-A")
    _git(work, "commit", "-m", "bench: dags/ as checked out")
    _git(work, "push", "origin", "main")
    return {
        "name": GIT_BUNDLE_NAME,
        "classpath": "include.bundles.git.GitOpsDagBundle",
        "kwargs": {"repo_url": str(bare), "tracking_ref": "main", "subdir": "dags", "refresh_interval": 60},
    }


# [dag_processor] min_file_process_interval of both stacks (seconds): longer than a run (see _stack).
BENCH_MIN_FILE_PROCESS_INTERVAL = 3600
SETTING = re.compile(r"([a-z][a-z0-9_]*)\.([a-z][a-z0-9_]*)")


def airflow_settings(settings: dict[str, str]) -> dict[str, str]:
    """``section.key`` -> value as Airflow's environment variables (``AIRFLOW__SECTION__KEY``).
    Refuses, naming it, a name that is not ``section.key`` in lower case, a value with a line break
    or an empty one, and the settings that have options of their own (a run records those under
    their own keys)."""
    own = {"api.workers": "--api-workers", "scheduler.scheduler_idle_sleep_time": "--scheduler-idle-sleep"}
    env = {}
    for name, value in settings.items():
        match = SETTING.fullmatch(name)
        if not match:
            raise ValueError(
                f"setting {name!r}: expected section.key in lower case, e.g. celery.task_track_started"
            )
        if name in own or name == "dag_processor.dag_bundle_config_list":
            raise ValueError(f"setting {name!r}: use {own.get(name, '--dag-bundle')} for it")
        if not value or "\n" in value or "\r" in value:
            raise ValueError(f"setting {name!r}: the value must be one non-empty line, not {value!r}")
        env[f"AIRFLOW__{match[1].upper()}__{match[2].upper()}"] = value
    return env


def _stack(
    profile: Profile,
    api_workers: int | None,
    scheduler_idle_sleep: float | None = None,
    *,
    dag_bundle: str = "local",
    settings: dict[str, str] | None = None,
) -> Any:
    """A stack whose ``[api] workers`` is ``stack.api_workers`` and ``[scheduler]
    scheduler_idle_sleep_time`` is ``stack.scheduler_idle_sleep`` (None: the stack's setting), read
    each time a component starts: :func:`api_sweep` changes the first between API server restarts.
    ``dag_bundle="git"``: the workflows come from :func:`git_bundle` instead of the stack's local
    bundle (one bundle: a DAG id may not be in two). ``settings``: ``section.key`` -> value, any
    other Airflow setting (:func:`airflow_settings`), set last."""
    from devstack.stack import Stack

    extra = airflow_settings(settings or {})

    if scheduler_idle_sleep is not None and not scheduler_idle_sleep > 0:
        raise ValueError(f"scheduler_idle_sleep must be > 0 seconds, not {scheduler_idle_sleep!r}")
    if dag_bundle not in DAG_BUNDLES:
        raise ValueError(f"dag_bundle must be one of {', '.join(DAG_BUNDLES)}, not {dag_bundle!r}")

    class BenchStack(Stack):
        api_workers: int | None = None
        scheduler_idle_sleep: float | None = None
        bundles: list[dict[str, Any]] | None = None

        @property
        def env(self) -> dict[str, str]:
            env = super().env
            if self.api_workers is not None:
                env["AIRFLOW__API__WORKERS"] = str(self.api_workers)
            if self.scheduler_idle_sleep is not None:
                env["AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME"] = str(self.scheduler_idle_sleep)
            if self.bundles is not None:
                env["AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST"] = json.dumps(self.bundles)
            # No periodic re-parse of every file during a burst: with the stack's 120 s, the Celery
            # stack's (slower) start put its re-parse inside the one-worker burst (5-10 CPU-s of
            # dag-processor there, under 1 on the embedded side, whose burst ended first): a cost of
            # the clock, not of the executor. A changed file is still parsed at once.
            env["AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL"] = str(BENCH_MIN_FILE_PROCESS_INTERVAL)
            env.update(extra)
            return env

    stack = BenchStack(profile)
    stack.api_workers = api_workers
    stack.scheduler_idle_sleep = scheduler_idle_sleep
    if dag_bundle == "git":  # a stack's fresh start leaves this folder of its root alone
        stack.bundles = [git_bundle(profile.root / "bench-workflows")]
    return stack


def _started(stack: Any) -> tuple[Any, float]:
    from devstack import directory_seed
    from devstack.api_client import AirflowApi

    began = time.monotonic()
    stack.start(fresh=True)
    seconds = round(time.monotonic() - began, 1)
    api = AirflowApi(stack.profile.api_url, *directory_seed.admin_login(stack.profile), timeout=60)
    api.wait_for_dags({f"{domain}_service_check" for domain in load_domain_policy().domains}, timeout=300)
    mixed_burst(api, WARM_UP_RUNS_PER_DOMAIN)
    return api, seconds


def run(
    runs_per_domain: int = DEFAULT_RUNS_PER_DOMAIN,
    *,
    api_workers: int | None = None,
    scheduler_idle_sleep: float | None = None,
    dag_bundle: str = "local",
    settings: dict[str, str] | None = None,
    embedded_profile: Profile = EMBEDDED_PROFILE,
    celery_profile: Profile = CELERY_PROFILE,
) -> dict[str, Any]:
    """The three bursts (embedded, one Celery worker, two), each stack started fresh and stopped;
    flat keys as the module says. A side that fails gives ``<side>_error`` (and None for the
    ratios it is in); a stack that does not start raises, after it is stopped."""
    from devstack import processes

    if embedded_profile.distributed or not celery_profile.distributed:
        raise ValueError("run(): embedded_profile must use the LocalExecutor and celery_profile Celery")
    airflow_settings(settings or {})  # a bad one refused before any stack starts
    began = time.monotonic()
    runs = runs_per_domain * len(load_domain_policy().domains)
    out: dict[str, Any] = {
        "runs_per_burst": runs,
        "api_workers": api_workers,
        "scheduler_idle_sleep_time": scheduler_idle_sleep,
        "dag_bundle": dag_bundle,
        "settings": dict(settings or {}),
    }

    stack = _stack(
        embedded_profile, api_workers, scheduler_idle_sleep, dag_bundle=dag_bundle, settings=settings
    )
    try:
        api, out["embedded_stack_start_seconds"] = _started(stack)
        _side(out, "embedded", lambda: measured_burst(stack, api, runs_per_domain, "embedded"))
    finally:
        stack.stop(quiet=True)

    stack = _stack(
        celery_profile, api_workers, scheduler_idle_sleep, dag_bundle=dag_bundle, settings=settings
    )
    try:
        api, out["celery_stack_start_seconds"] = _started(stack)
        # worker-2 stays: it is the one that also serves `soc` (worker-1: default and platform).
        processes.stop("celery-worker-1", pids_dir=stack.profile.pids)
        _log("worker-1 stopped: one worker (worker-2, every queue)")
        _side(out, "celery_1", lambda: measured_burst(stack, api, runs_per_domain, "celery_1"))
        stack.start_worker("worker-1")
        processes.wait_until(lambda: stack.worker_ready("celery-worker-1"), what="worker-1 back", timeout=120)
        _side(out, "celery_2", lambda: measured_burst(stack, api, runs_per_domain, "celery_2"))
    finally:
        stack.stop(quiet=True)

    def ratio(a: str, b: str, key: str = "runs_per_minute") -> float | None:
        """a / b of ``key``; None where a side failed."""
        x, y = out.get(f"{a}_{key}"), out.get(f"{b}_{key}")
        return round(x / y, 2) if x and y else None

    out["ratio_celery_1_to_embedded"] = ratio("celery_1", "embedded")
    out["ratio_celery_2_to_1"] = ratio("celery_2", "celery_1")
    out["ratio_celery_2_to_embedded"] = ratio("celery_2", "embedded")
    # Runs per stack CPU-second, Celery against embedded: the per-host cost, less exposed to noise.
    out["cpu_ratio_celery_1_to_embedded"] = ratio("embedded", "celery_1", "stack_cpu_seconds_per_run")
    out["cpu_ratio_celery_2_to_embedded"] = ratio("embedded", "celery_2", "stack_cpu_seconds_per_run")
    out["wall_seconds"] = round(time.monotonic() - began, 1)
    return out


def _summary(figures: dict[str, Any]) -> str:
    return (
        f"{figures['runs']} runs in {figures['wall_seconds']}s = {figures['runs_per_minute']} runs/min, "
        f"run p50 {figures['run_seconds_p50']}s p95 {figures['run_seconds_p95']}s, "
        f"states {figures['states']}, "
        f"load before {figures['loadavg_before']}; "
        f"PostgreSQL sessions opened {figures.get('pg_sessions_opened')}, "
        f"transactions {figures.get('pg_transactions')}; "
        f"CPU per run: stack {figures['stack_cpu_seconds_per_run']} s, "
        f"machine {figures['cpu_seconds_per_run']} s; "
        f"{cpu_line(figures['cpu'], top=9)}"
    )


def report(result: dict[str, Any]) -> str:
    """The lines ``main`` prints: one per side, then the ratios."""
    others = ", ".join(f"{k}={v}" for k, v in (result.get("settings") or {}).items())
    lines = []
    for side in SIDES:
        if f"{side}_error" in result:
            lines.append(f"{side:9} FAILED: {result[f'{side}_error']}")
            continue
        figures = {k.removeprefix(f"{side}_"): v for k, v in result.items() if k.startswith(f"{side}_")}
        figures["runs"] = result["runs_per_burst"]
        lines.append(f"{side:9} {_summary(figures)}")
    lines.append(
        f"celery 1 worker / embedded: {result['ratio_celery_1_to_embedded']}x (goal >= 0.9); "
        f"2 workers / 1: {result['ratio_celery_2_to_1']}x; "
        f"2 workers / embedded: {result['ratio_celery_2_to_embedded']}x; runs per stack CPU-second, "
        f"celery 1 / embedded {result['cpu_ratio_celery_1_to_embedded']}x, "
        f"celery 2 / embedded {result['cpu_ratio_celery_2_to_embedded']}x "
        f"(api workers: {result['api_workers'] or 'stack default'}; scheduler idle sleep: "
        f"{result.get('scheduler_idle_sleep_time') or 'stack default'}; "
        f"DAG bundle: {result.get('dag_bundle', 'local')}; "
        f"other settings: {others or 'none'}; "
        f"run took {result['wall_seconds']}s)"
    )
    return "\n".join(lines)


def _restart_api_server(stack: Any, api: Any, workers: int) -> float:
    """The API server alone started again with ``[api] workers = workers``; seconds until the
    stack answers healthy. The session's token stays valid (same JWT secret)."""
    from devstack import processes

    began = time.monotonic()
    processes.stop("api-server", pids_dir=stack.profile.pids)
    stack.api_workers = workers
    stack.start_component("api-server")
    processes.wait_until(
        stack._healthy, what="API server", timeout=240, log=stack.profile.logs / "api-server.log"
    )
    api.wait_for_dags({f"{domain}_service_check" for domain in load_domain_policy().domains}, timeout=120)
    return round(time.monotonic() - began, 1)


def _warm_up(api: Any, side: str) -> dict[str, Any]:
    """One run per domain after an API server restart, not measured: its wall time only."""
    return {f"{side}_warm_up_seconds": mixed_burst(api, 1)["wall_seconds"]}


def api_sweep(setup: str, runs_per_domain: int, order: tuple[int, ...] = API_SWEEP_ORDER) -> dict[str, Any]:
    """``[api] workers`` 1 against 2 on one stack (``embedded``, or ``celery`` with both workers):
    one stack start, then a burst per entry of ``order`` (ABBA, so a machine whose load drifts
    favours neither), the API server alone restarted where the setting changes. Keys
    ``api<N>_<i>_<key>`` per burst (``i`` its place in ``order``) as :func:`measured_burst`'s."""
    profile = {"embedded": EMBEDDED_PROFILE, "celery": CELERY_PROFILE}[setup]
    began = time.monotonic()
    out: dict[str, Any] = {
        "setup": setup,
        "runs_per_burst": runs_per_domain * len(load_domain_policy().domains),
    }
    stack = _stack(profile, order[0])
    try:
        api, out["stack_start_seconds"] = _started(stack)
        for i, workers in enumerate(order):
            side = f"api{workers}_{i}"
            if stack.api_workers != workers:
                out[f"{side}_restart_seconds"] = _restart_api_server(stack, api, workers)
                # The new API server's first requests, not measured; one that times out is noted
                # (``<side>_warm_up_error``), the measured burst still runs.
                _side(out, f"{side}_warm_up", functools.partial(_warm_up, api, side))
            _side(out, side, functools.partial(measured_burst, stack, api, runs_per_domain, side))
    finally:
        stack.stop(quiet=True)
    out["wall_seconds"] = round(time.monotonic() - began, 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs-per-domain", type=int, default=DEFAULT_RUNS_PER_DOMAIN)
    parser.add_argument("--api-workers", type=int, default=None, help="[api] workers for both stacks")
    parser.add_argument(
        "--scheduler-idle-sleep",
        type=float,
        default=None,
        metavar="SECONDS",
        help="[scheduler] scheduler_idle_sleep_time for both stacks (> 0)",
    )
    parser.add_argument(
        "--dag-bundle",
        choices=DAG_BUNDLES,
        default="local",
        help="where both stacks read the workflows: the local stack's folder (default) or, as "
        "deployed (Helm), a GitOpsDagBundle over a bare repository of dags/ (see git_bundle)",
    )
    parser.add_argument(
        "--setting",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="any other Airflow setting for both stacks (repeatable), e.g. celery.task_track_started=False",
    )
    parser.add_argument(
        "--api-sweep",
        choices=("embedded", "celery"),
        help="instead: [api] workers 1, 2, 2, 1 on one stack of this setup (see api_sweep)",
    )
    args = parser.parse_args()
    if args.api_sweep:
        result = api_sweep(args.api_sweep, args.runs_per_domain)
        result["machine"] = {"cpus": os.cpu_count(), "loadavg_at_end": _load()}
        RESULTS.mkdir(exist_ok=True)
        out = RESULTS / f"distributed-api-{args.api_sweep}-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"\n{json.dumps(result)}\n-> {out}")
        return
    if args.scheduler_idle_sleep is not None and not args.scheduler_idle_sleep > 0:
        parser.error(f"--scheduler-idle-sleep must be > 0 seconds, not {args.scheduler_idle_sleep}")
    settings = {}
    for item in args.setting:
        name, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--setting {item!r}: expected SECTION.KEY=VALUE")
        settings[name] = value
    try:
        airflow_settings(settings)
    except ValueError as error:
        parser.error(f"--setting: {error}")
    result = run(
        args.runs_per_domain,
        api_workers=args.api_workers,
        scheduler_idle_sleep=args.scheduler_idle_sleep,
        dag_bundle=args.dag_bundle,
        settings=settings,
    )
    result["machine"] = {"cpus": os.cpu_count(), "loadavg_at_end": _load()}
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"distributed-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n{report(result)}\n-> {out}")


if __name__ == "__main__":
    main()
