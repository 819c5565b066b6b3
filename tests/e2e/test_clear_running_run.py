"""Clearing a failed task on the real stack moves the run's SLA deadline instead of answering 500.

Airflow 3.3.2 failed every such clear (apache/airflow#70368); include/workflows/deadline_fix.py,
installed by config/airflow_local_settings.py in every component, fixes it. The deadline is read
from the metadata DB: the REST API does not show a run's deadlines.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta

import psycopg
import pytest

from devstack import postgres
from devstack.api_client import AirflowApi
from devstack.stack import Stack
from include.policies.loader import load_domain_policy

DAG_ID = "e2e_clear_running_run"
SLA = load_domain_policy().domain("support").sla["infrastructure_change"]


@pytest.fixture(scope="module", autouse=True)
def clear_dag(api: AirflowApi) -> None:
    api.wait_for_dags({DAG_ID})


def pending_deadlines(stack: Stack, run_id: str) -> list[tuple[datetime, datetime]]:
    """(deadline_time, dag_run.queued_at) of every unmissed deadline of the run."""
    dsn = postgres.dsn(stack.profile, postgres.DB_USER, "airflow")
    with psycopg.connect(dsn) as connection:
        rows = connection.execute(
            "SELECT d.deadline_time, r.queued_at FROM deadline d JOIN dag_run r ON r.id = d.dagrun_id"
            " WHERE r.dag_id = %s AND r.run_id = %s AND NOT d.missed",
            (DAG_ID, run_id),
        ).fetchall()
    return [(deadline_time, queued_at) for deadline_time, queued_at in rows]


def wait_for_states(api: AirflowApi, run_id: str, wanted: dict[str, str], timeout: float = 60) -> None:
    until = time.monotonic() + timeout
    while True:
        states = api.task_states(DAG_ID, run_id)
        if all(states.get(task_id) == state for task_id, state in wanted.items()):
            return
        if time.monotonic() > until:
            raise TimeoutError(f"{DAG_ID}/{run_id}: {states}, waited for {wanted}")
        time.sleep(0.3)


@pytest.mark.parametrize(
    ("hold", "run_state_at_clear"),
    [pytest.param(True, "running", id="running-run"), pytest.param(False, "failed", id="failed-run")],
)
def test_clearing_a_failed_task_moves_the_sla_deadline(
    api: AirflowApi, stack: Stack, hold: bool, run_state_at_clear: str
) -> None:
    run_id = api.trigger(DAG_ID, {"hold": hold})
    if hold:
        wait_for_states(api, run_id, {"flaky": "failed", "holds_the_run": "running"})
    else:
        api.wait_for_run(DAG_ID, run_id, timeout=60)
    assert api.run(DAG_ID, run_id)["state"] == run_state_at_clear
    [(deadline_before, queued_before)] = pending_deadlines(stack, run_id)
    assert deadline_before == queued_before + SLA

    cleared = api.request(
        "POST",
        f"dags/{DAG_ID}/clearTaskInstances",
        json={"dag_run_id": run_id, "task_ids": ["flaky"], "dry_run": False, "only_failed": True},
    )

    assert [ti["task_id"] for ti in cleared["task_instances"]] == ["flaky"]
    [(deadline_after, queued_after)] = pending_deadlines(stack, run_id)
    recalculated_from = deadline_after - SLA
    assert recalculated_from > queued_before
    if hold:
        assert recalculated_from == queued_after
    else:
        # Airflow sets a finished run back to queued after recalculating its deadlines, and that
        # stamps queued_at once more (DagRun.set_state): the deadline is a few ms short of it.
        assert timedelta(0) <= queued_after - recalculated_from < timedelta(seconds=1)
    run = api.wait_for_run(DAG_ID, run_id, timeout=60)
    assert run["state"] == "success"
    tries = {ti["task_id"]: (ti["state"], ti["try_number"]) for ti in api.task_instances(DAG_ID, run_id)}
    assert tries == {"flaky": ("success", 2), "holds_the_run": ("success", 1)}
    assert api.xcom(DAG_ID, run_id, "flaky") == "second try"
    # The run ended before its deadline: Airflow prunes it, no SLA mail.
    assert pending_deadlines(stack, run_id) == []
