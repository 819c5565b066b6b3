"""Event intake latency: an alert sent to ``siem-alerts`` -> the SOC workflow's first task starting.

For each of N alerts (one at a time, each sent once the previous one's task started): send the
event to the queue (moto) and wait for ``soc_contain_host``'s first task (``inspect_host``) of run
``intake__siem-alerts__<id>`` to have a ``start_date``. Latency = that ``start_date`` (Airflow's
clock) minus the send time (this process's clock, same machine). Measured the same way, the baseline:
a message to ``bench-bare-intake`` -> the first task of a bare DAG scheduled on an SQS asset watcher
(``bench/intake_dags/bare_intake.py``), i.e. what Airflow alone costs for one asset-scheduled hop.
The intake path has two hops (watcher -> intake DAG run -> trigger -> SOC run). Also reported: send
-> the intake task's start (the first hop on the intake path). Goal (issue 22): p50 <= 3 s.

``python -m bench.intake`` starts its own fresh stack (the test profile: set ORCH_TEST_PORT_OFFSET)
with the baseline bundle, measures, prints the figures, writes ``--output`` and stops the stack.
Not part of ``make bench`` (bench/suite.py) yet.
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.burst import percentile
from devstack import directory_seed
from devstack.api_client import AirflowApi, ApiError
from devstack.aws_seed import account_client
from devstack.config import PROFILES, REGION
from devstack.stack import Stack
from include.intake.events import run_id_for
from include.intake.policy import load_intake
from include.policies.tenants import platform_account_id

BARE_BUNDLE = {
    "name": "bench-intake-dags",
    "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
    "kwargs": {"path": str(Path(__file__).parent / "intake_dags")},
}
BARE_DAG, BARE_TASK, BARE_QUEUE = "bench_bare_intake", "take_messages", "bench-bare-intake"
SOC_DAG, SOC_TASK = "soc_contain_host", "inspect_host"
INTAKE_TASK = "handle_messages"
GOAL_P50_SECONDS = 3.0


@dataclass
class Figures:
    samples: int
    p50: float
    p95: float
    max: float
    seconds: list[float]


@dataclass
class IntakeResult:
    events: int
    intake: Figures  # send -> soc_contain_host first task start
    intake_first_hop: Figures  # send -> intake task start
    intake_to_run: Figures  # intake task start -> target run created (its queued_at)
    run_to_task: Figures  # target run created -> its first task start
    baseline: Figures  # send -> bare asset-watcher DAG task start
    goal_p50_seconds: float
    goal_met: bool


def figures(seconds: list[float]) -> Figures:
    return Figures(
        samples=len(seconds),
        p50=percentile(seconds, 50, digits=2),
        p95=percentile(seconds, 95, digits=2),
        max=percentile(seconds, 100, digits=2),
        seconds=[round(s, 3) for s in seconds],
    )


def _started_at(api: AirflowApi, dag_id: str, run_id: str, task_id: str) -> datetime | None:
    try:
        ti = api.get(f"dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}")
    except ApiError as error:
        if error.status_code == 404:  # the run (or its task instances) does not exist yet
            return None
        raise
    return datetime.fromisoformat(ti["start_date"]) if ti.get("start_date") else None


def _wait_start(api: AirflowApi, dag_id: str, run_id: str, task_id: str, timeout: float = 60) -> datetime:
    deadline = time.monotonic() + timeout
    while (started := _started_at(api, dag_id, run_id, task_id)) is None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{dag_id}/{run_id}/{task_id} did not start within {timeout:.0f}s")
        time.sleep(0.05)
    return started


def _bare_run_after(api: AirflowApi, sent: datetime, timeout: float = 60) -> str:
    """The bare DAG's first run queued after ``sent`` (asset-triggered run ids are not ours to pick)."""
    deadline = time.monotonic() + timeout
    while True:
        runs = api.get(f"dags/{BARE_DAG}/dagRuns", limit=20, order_by="-run_after")["dag_runs"]
        for run in runs:
            if datetime.fromisoformat(run["run_after"]) >= sent.replace(microsecond=0):
                return str(run["dag_run_id"])
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {BARE_DAG} run after {sent.isoformat()} within {timeout:.0f}s")
        time.sleep(0.05)


def measure(api: AirflowApi, sqs: Any, events: int = 10, pause: float = 2.0) -> IntakeResult:
    siem = load_intake().source("siem-alerts")
    siem_url = sqs.get_queue_url(QueueName=siem.queue)["QueueUrl"]
    bare_url = sqs.create_queue(QueueName=BARE_QUEUE)["QueueUrl"]
    intake: list[float] = []
    first_hop: list[float] = []
    to_run: list[float] = []
    to_task: list[float] = []
    baseline: list[float] = []
    for index in range(events):
        event_id = f"BENCH-{uuid.uuid4().hex[:12]}"
        body = {
            "source": siem.name,
            "id": event_id,
            "kind": "siem.alert",
            "occurred_at": datetime.now(UTC).isoformat(),
            "data": {
                "tenant": "acme",
                "severity": "high",
                "host": "i-0bbbbbbbbbbbbbbb0",
                "summary": f"bench {index}",
            },
        }
        sent = datetime.now(UTC)
        sqs.send_message(QueueUrl=siem_url, MessageBody=json.dumps(body))
        run_id = run_id_for(siem.name, event_id)
        target_started = _wait_start(api, SOC_DAG, run_id, SOC_TASK)
        intake.append((target_started - sent).total_seconds())
        created = datetime.fromisoformat(api.run(SOC_DAG, run_id)["queued_at"])
        to_task.append((target_started - created).total_seconds())
        intake_runs = api.get(f"dags/{siem.dag_id}/dagRuns", limit=5, order_by="-run_after")["dag_runs"]
        handled = (
            _started_at(api, siem.dag_id, intake_runs[0]["dag_run_id"], INTAKE_TASK) if intake_runs else None
        )
        if handled is not None:
            first_hop.append((handled - sent).total_seconds())
            to_run.append((created - handled).total_seconds())
        time.sleep(pause)
        sent = datetime.now(UTC)
        sqs.send_message(QueueUrl=bare_url, MessageBody=json.dumps({"n": index}))
        bare_run = _bare_run_after(api, sent)
        baseline.append((_wait_start(api, BARE_DAG, bare_run, BARE_TASK) - sent).total_seconds())
        time.sleep(pause)
    result = figures(intake)
    return IntakeResult(
        events=events,
        intake=result,
        intake_first_hop=figures(first_hop),
        intake_to_run=figures(to_run),
        run_to_task=figures(to_task),
        baseline=figures(baseline),
        goal_p50_seconds=GOAL_P50_SECONDS,
        goal_met=result.p50 <= GOAL_P50_SECONDS,
    )


def report(result: IntakeResult, output: Path | None = None) -> None:
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(asdict(result), indent=2) + "\n")
    i, h, b = result.intake, result.intake_first_hop, result.baseline
    r, t = result.intake_to_run, result.run_to_task
    print(
        f"event intake: {result.events} alerts; send -> soc_contain_host first task start p50 {i.p50}s "
        f"p95 {i.p95}s max {i.max}s (goal p50 <= {result.goal_p50_seconds}s: "
        f"{'met' if result.goal_met else 'NOT met'}); send -> intake task start p50 {h.p50}s p95 {h.p95}s, "
        f"-> SOC run created p50 {r.p50}s, -> its first task start p50 {t.p50}s; "
        f"bare-Airflow asset watcher send -> task start p50 {b.p50}s p95 {b.p95}s max {b.max}s"
        + (f" -> {output}" if output else "")
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=10)
    parser.add_argument("--output", type=Path, default=None, help="write the figures as JSON here")
    args = parser.parse_args()
    profile = PROFILES["test"]
    stack = Stack(profile, extra_bundles=[BARE_BUNDLE])
    try:
        stack.start(fresh=True)
        api = AirflowApi(profile.api_url, *directory_seed.admin_login(profile))
        api.wait_for_dags({SOC_DAG, BARE_DAG, load_intake().source("siem-alerts").dag_id})
        sqs = account_client("sqs", platform_account_id(), profile.moto_url, REGION)
        report(measure(api, sqs, args.events), args.output)
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
