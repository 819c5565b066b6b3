"""Approval resume latency: from the answer to the next task starting.

For each of N runs of a workflow with an approval gate: wait until the gate waits for an answer,
answer it through the REST API as an allowed approver, and measure

- ``server``: the answer's ``responded_at`` (set by the API server while handling the PATCH) to
  the ``start_date`` of the step after the gate, both from Airflow's own clocks;
- ``client``: the PATCH returning to that step being seen running (what a person would notice).

Answers go in one at a time, as soon as each gate is waiting (the worst case for the 3.3.2
defer-resume race, see include/executors/stale_events.py). Prints p50/p95/max and writes JSON.
Run by the end-to-end suite against its stack (``tests/e2e/test_approvals.py``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.burst import percentile
from devstack.api_client import AirflowApi


@dataclass
class ResumeResult:
    dag_id: str
    approvals: int
    server_p50: float
    server_p95: float
    server_max: float
    client_p50: float
    client_p95: float
    client_max: float
    states: dict[str, int]
    # per approval, for the test that reads the result
    server_seconds: list[float]


def _wait_started(api: AirflowApi, dag_id: str, run_id: str, task_id: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    path = f"dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}"
    while True:
        ti = api.get(path)
        if ti.get("start_date"):
            return ti
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"{dag_id}/{run_id}/{task_id} did not start within {timeout:.0f}s ({ti['state']})"
            )
        time.sleep(0.05)


def measure(
    *,
    admin: AirflowApi,
    requester: AirflowApi,
    approvers: Sequence[AirflowApi],
    dag_id: str,
    gate: str,
    next_task: str,
    approvals: int,
    conf: dict[str, Any],
) -> ResumeResult:
    server: list[float] = []
    client: list[float] = []
    run_ids = []
    for index in range(approvals):
        # Approvers take turns: each answer needs a fresh one-time code of its approver's token, and
        # one token yields a few codes at once, then one per 30 s (devstack/totp.py).
        approver = approvers[index % len(approvers)]
        run_id = requester.trigger(dag_id, conf)
        run_ids.append(run_id)
        approver.wait_for_request(dag_id, run_id, gate, poll=0.05)
        answer = approver.answer(dag_id, run_id, gate, "Approve", "bench")
        answered = time.monotonic()
        ti = _wait_started(admin, dag_id, run_id, next_task, timeout=60)
        client.append(time.monotonic() - answered)
        responded = datetime.fromisoformat(answer["responded_at"])
        server.append((datetime.fromisoformat(ti["start_date"]) - responded).total_seconds())
    states: dict[str, int] = {}
    for run_id in run_ids:
        state = admin.wait_for_run(dag_id, run_id, timeout=120)["state"]
        states[state] = states.get(state, 0) + 1
    return ResumeResult(
        dag_id=dag_id,
        approvals=approvals,
        server_p50=percentile(server, 50, digits=2),
        server_p95=percentile(server, 95, digits=2),
        server_max=percentile(server, 100, digits=2),
        client_p50=percentile(client, 50, digits=2),
        client_p95=percentile(client, 95, digits=2),
        client_max=percentile(client, 100, digits=2),
        states=states,
        server_seconds=[round(s, 3) for s in server],
    )


def report(result: ResumeResult, output: Path) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(asdict(result), indent=2))
    print(
        f"approval resume {result.dag_id}: {result.approvals} approvals; answer -> next task start "
        f"p50 {result.server_p50}s p95 {result.server_p95}s max {result.server_max}s (server clocks), "
        f"p50 {result.client_p50}s p95 {result.client_p95}s (client); runs {result.states} -> {output}"
    )
