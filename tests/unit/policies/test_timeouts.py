"""Bounded runs (run-timeouts): every task and run has a timeout within its domain's, and no run can
end while an approver may still answer; the same rule in ``policy-check`` and the cluster policy."""

from __future__ import annotations

import re
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.exceptions import AirflowClusterPolicyViolation
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG

from include.policies.approvals import APPROVALS_FILE
from include.policies.checks import CheckContext, Violation, check_run_timeouts, display_path, run_checks
from include.policies.cluster_policy import dag_policy, task_policy
from include.policies.loader import load_domain_policy
from include.policies.timeouts import dag_timeout_problem, longest_path, task_timeout_problem

SOC = load_domain_policy().domain("soc")
HR = load_domain_policy().domain("hr")


def exactly(message: str) -> str:
    return f"^{re.escape(message)}$"


def _dag(dag_id: str = "soc_x", tags: tuple[str, ...] = ("domain:soc",), **kwargs: Any) -> SimpleNamespace:
    return SimpleNamespace(dag_id=dag_id, tags=set(tags), **kwargs)


def _task(execution_timeout: timedelta | None, **kwargs: Any) -> SimpleNamespace:
    return SimpleNamespace(task_id="step", execution_timeout=execution_timeout, **kwargs)


# --------------------------------------------------------------------------------------------
# One task


@pytest.mark.parametrize(
    ("tags", "task", "problem"),
    [
        pytest.param(("domain:soc",), _task(timedelta(minutes=10)), None, id="at-the-maximum"),
        pytest.param(("domain:soc",), _task(timedelta(seconds=30)), None, id="shorter"),
        pytest.param(
            ("domain:soc",),
            _task(None),
            "DAG soc_x task step has no execution_timeout (the soc fast_path maximum 10m)",
            id="none",
        ),
        pytest.param(
            ("domain:soc",),
            _task(timedelta(minutes=11)),
            "DAG soc_x task step has execution_timeout 11m, over the soc fast_path maximum 10m",
            id="over",
        ),
        pytest.param(
            ("domain:soc", "kind:infrastructure_change"),
            _task(timedelta(minutes=30)),
            None,
            id="kind-infrastructure-change",
        ),
        pytest.param(
            ("domain:soc", "kind:infrastructure_change"),
            _task(timedelta(hours=1)),
            "DAG soc_x task step has execution_timeout 1h, over the soc infrastructure_change maximum 30m",
            id="over-infrastructure-change",
        ),
        pytest.param(
            ("domain:soc",),
            _task(timedelta(minutes=25), response_timeout=timedelta(minutes=15)),
            None,
            id="gate-wait-plus-work",
        ),
        pytest.param(
            ("domain:soc",),
            _task(timedelta(minutes=26), response_timeout=timedelta(minutes=15)),
            "DAG soc_x task step has execution_timeout 26m, over the soc fast_path maximum 25m "
            "(approval wait 15m + 10m)",
            id="gate-over",
        ),
        pytest.param(
            ("domain:soc",),
            _task(timedelta(minutes=10), response_timeout=timedelta(minutes=15)),
            "DAG soc_x task step waits up to 15m for an approver but has execution_timeout 10m: it would "
            "be cut off while an approver may still answer",
            id="gate-cut-off",
        ),
        pytest.param(
            ("domain:soc", "kind:batch"),
            _task(timedelta(minutes=1)),
            "DAG soc_x is tagged kind:batch: it needs at most one kind tag, one of fast_path, "
            "infrastructure_change",
            id="unknown-kind",
        ),
    ],
)
def test_task_timeout(tags, task, problem):
    assert task_timeout_problem(_dag(tags=tags), task, SOC) == problem


# --------------------------------------------------------------------------------------------
# One run


def _chain(dag: DAG, count: int, timeout: timedelta, pool: str = "soc") -> None:
    previous = None
    for number in range(count):
        task = EmptyOperator(task_id=f"t{number}", pool=pool, execution_timeout=timeout, dag=dag)
        if previous is not None:
            previous >> task
        previous = task


def _real_dag(dagrun_timeout: timedelta | None, count: int = 3, **kwargs: Any) -> DAG:
    dag = DAG("soc_hand_made", schedule=None, tags=["domain:soc"], dagrun_timeout=dagrun_timeout, **kwargs)
    _chain(dag, count, timedelta(minutes=10))
    return dag


@pytest.mark.parametrize(
    ("dagrun_timeout", "count", "problem"),
    [
        pytest.param(timedelta(hours=2), 12, None, id="path-fits"),
        pytest.param(
            None, 3, "DAG soc_hand_made has no dagrun_timeout (the soc fast_path one is 2h)", id="none"
        ),
        pytest.param(
            timedelta(hours=3),
            3,
            "DAG soc_hand_made has dagrun_timeout 3h, over the soc fast_path maximum 2h",
            id="over",
        ),
        pytest.param(
            timedelta(hours=2),
            13,
            "DAG soc_hand_made has dagrun_timeout 2h, shorter than its longest path 2h10m (each task at "
            "its execution_timeout): a run could be killed before its tasks and approvers had their time",
            id="shorter-than-its-path",
        ),
    ],
)
def test_dag_timeout(dagrun_timeout, count, problem):
    assert dag_timeout_problem(_real_dag(dagrun_timeout, count), SOC) == problem


def test_longest_path_counts_a_gate_at_its_wait_and_parallel_branches_once():
    dag = DAG("hr_gated", schedule=None, tags=["domain:hr"])
    first = EmptyOperator(task_id="first", execution_timeout=timedelta(minutes=30), dag=dag)
    short = EmptyOperator(task_id="short", execution_timeout=timedelta(minutes=5), dag=dag)
    gate = EmptyOperator(task_id="gate", execution_timeout=None, dag=dag)
    gate.response_timeout = timedelta(days=2)  # a human-in-the-loop task's wait
    last = EmptyOperator(task_id="last", execution_timeout=timedelta(minutes=30), dag=dag)
    first >> [short, gate] >> last

    assert longest_path(dag) == (timedelta(days=2, hours=1), timedelta(days=2))
    dag.dagrun_timeout = timedelta(days=2)
    assert dag_timeout_problem(dag, HR) == (
        "DAG hr_gated has dagrun_timeout 2d, shorter than its longest path 2d1h (each task at its "
        "execution_timeout, approval waits 2d included): a run could be killed before its tasks and "
        "approvers had their time"
    )


# --------------------------------------------------------------------------------------------
# policy-check: run-timeouts


HAND_MADE = '''
"""Hand-made workflows: no timeouts, too long ones."""
from datetime import timedelta

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG

with DAG("soc_unbounded", schedule=None, tags=["domain:soc"], doc_md=__doc__):
    EmptyOperator(task_id="isolate", pool="soc")

with DAG("hr_too_long", schedule=None, tags=["domain:hr"], doc_md=__doc__, dagrun_timeout=timedelta(days=9)):
    EmptyOperator(task_id="wait", pool="hr", execution_timeout=timedelta(hours=3))

with DAG("hr_two_kinds", schedule=None, tags=["domain:hr", "kind:fast_path", "kind:batch"], doc_md=__doc__):
    EmptyOperator(task_id="wait", pool="hr")
'''

FACTORY = '''
"""Built the platform way: one task shortens its timeout, which it may."""
from datetime import timedelta

from airflow.sdk import task

from include.workflows import domain_workflow
from include.workflows.approval import approval_gate


@domain_workflow(domain="soc", doc_md=__doc__)
def contain():
    @task(execution_timeout=timedelta(minutes=2))
    def inspect():
        return 1

    inspect() >> approval_gate("host-isolate", subject="s", body="b")


contain()
'''


def test_policy_check_names_the_dag_the_task_and_the_value(dag_folder):
    folder = dag_folder(hand_made=HAND_MADE, factory=FACTORY)

    violations = run_checks(CheckContext(dags_folder=folder), [check_run_timeouts])

    file = display_path(folder / "hand_made.py")
    assert violations == [
        Violation(
            "run-timeouts",
            f"{file}::hr_too_long",
            "DAG hr_too_long has dagrun_timeout 9d, over the hr fast_path maximum 5d",
        ),
        Violation(
            "run-timeouts",
            f"{file}::hr_too_long::wait",
            "DAG hr_too_long task wait has execution_timeout 3h, over the hr fast_path maximum 30m",
        ),
        Violation(
            "run-timeouts",
            f"{file}::hr_two_kinds",
            "DAG hr_two_kinds is tagged kind:batch, kind:fast_path: it needs at most one kind tag, one of "
            "fast_path, infrastructure_change",
        ),
        Violation(
            "run-timeouts",
            f"{file}::soc_unbounded",
            "DAG soc_unbounded has no dagrun_timeout (the soc fast_path one is 2h)",
        ),
        Violation(
            "run-timeouts",
            f"{file}::soc_unbounded::isolate",
            "DAG soc_unbounded task isolate has no execution_timeout (the soc fast_path maximum 10m)",
        ),
    ]


def test_policy_check_refuses_a_domain_whose_run_ends_before_its_approval_chain(
    dag_folder, policy_document, write_policy
):
    # 4d is more than hr's own approval timeout (2d) + a task, so domains.yaml alone is valid; but
    # hr's identity approvals take two steps of up to 2d each.
    policy_document["domains"]["hr"]["timeouts"]["fast_path"]["dagrun_timeout"] = "4d"
    policy = write_policy(policy_document)
    write_policy(APPROVALS_FILE.read_text(encoding="utf-8"), name="approvals.yaml")

    violations = run_checks(CheckContext(dags_folder=dag_folder(), policy_file=policy), [check_run_timeouts])

    assert violations == [
        Violation(
            "run-timeouts",
            display_path(policy),
            "domains.hr.timeouts.fast_path.dagrun_timeout: 4d is shorter than the 'identity-admin' approval "
            "chain of hr (2 step(s) of up to 2d, 4d) plus one task's execution_timeout (30m): a run would be "
            "killed while an approver may still answer",
        )
    ]


# --------------------------------------------------------------------------------------------
# The cluster policy (the running DAG processor)


def test_cluster_policy_refuses_an_unbounded_run_and_task():
    dag = DAG("soc_rogue", schedule=None, tags=["domain:soc"])
    isolate = EmptyOperator(task_id="isolate", pool="soc", dag=dag)

    with pytest.raises(
        AirflowClusterPolicyViolation,
        match=exactly("run-timeouts: DAG soc_rogue has no dagrun_timeout (the soc fast_path one is 2h)"),
    ):
        dag_policy(dag)
    with pytest.raises(
        AirflowClusterPolicyViolation,
        match=exactly(
            "run-timeouts: DAG soc_rogue task isolate has no execution_timeout "
            "(the soc fast_path maximum 10m)"
        ),
    ):
        task_policy(isolate)


def test_cluster_policy_refuses_a_task_over_the_maximum():
    dag = DAG("soc_rogue", schedule=None, tags=["domain:soc"], dagrun_timeout=timedelta(hours=1))
    isolate = EmptyOperator(task_id="isolate", pool="soc", execution_timeout=timedelta(hours=1), dag=dag)

    dag_policy(dag)  # the run is bounded
    with pytest.raises(
        AirflowClusterPolicyViolation,
        match=exactly(
            "run-timeouts: DAG soc_rogue task isolate has execution_timeout 1h, over the soc fast_path "
            "maximum 10m"
        ),
    ):
        task_policy(isolate)


def test_cluster_policy_reports_the_pool_first():
    dag = DAG("soc_rogue", schedule=None, tags=["domain:soc"])
    isolate = EmptyOperator(task_id="isolate", pool="default_pool", dag=dag)

    with pytest.raises(AirflowClusterPolicyViolation, match=r"^domain-pool: "):
        task_policy(isolate)


def test_cluster_policy_accepts_a_factory_dag():
    from include.workflows import domain_workflow
    from include.workflows.approval import approval_gate

    @domain_workflow(domain="soc", dag_id="soc_bounded", doc_md="bounded")
    def bounded() -> None:
        EmptyOperator(task_id="inspect") >> approval_gate("host-isolate", subject="s", body="b")

    dag = bounded()
    dag_policy(dag)
    for task in dag.tasks:
        task_policy(task)
    assert {task.task_id: task.execution_timeout for task in dag.tasks} == {
        "inspect": timedelta(minutes=10),
        "approve_host_isolate": timedelta(minutes=25),
    }


def test_a_task_over_its_maximum_is_its_own_problem_not_its_runs():
    dag = _real_dag(timedelta(hours=1), count=1)
    dag.task_dict["t0"].execution_timeout = timedelta(days=30)

    assert longest_path(dag) == (timedelta(days=30), timedelta(0))
    assert longest_path(dag, SOC.timeouts["fast_path"]) == (timedelta(minutes=10), timedelta(0))
    assert dag_timeout_problem(dag, SOC) is None
    assert task_timeout_problem(dag, dag.task_dict["t0"], SOC) == (
        "DAG soc_hand_made task t0 has execution_timeout 30d, over the soc fast_path maximum 10m"
    )
