"""Every file in dags/ parses offline and declares its DAGs the platform way.

The authoritative rules (pools, domain settings, secrets, parse budget) are ``policy-check``'s;
these tests give a DAG author a per-file, per-property answer in the pytest output.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import pytest

from include.policies.checks import (
    DEFAULT_DAGS_FOLDER,
    DEFAULT_PARSE_BUDGET_SECONDS,
    DagFolderScan,
    load_dag_folder,
)
from include.policies.loader import domain_tags, load_domain_policy, workflow_kind
from include.policies.timeouts import human_wait, longest_path

DAG_FILES = sorted(path for path in DEFAULT_DAGS_FOLDER.rglob("*.py") if "__pycache__" not in path.parts)
# The owner Airflow gives a task nobody owns.
AIRFLOW_DEFAULT_OWNER = "airflow"


@cache
def parsed(path: Path) -> DagFolderScan:
    """One file parsed on its own, as the DAG processor does, so its import error and time are its own."""
    return load_dag_folder(path)


def dags_of(path: Path) -> list[Any]:
    scan = parsed(path)
    assert not scan.import_errors, f"{path.name} does not import"
    return scan.dags


def relative(path: Path) -> str:
    return str(path.relative_to(DEFAULT_DAGS_FOLDER))


dag_files = pytest.mark.parametrize("path", DAG_FILES, ids=[relative(path) for path in DAG_FILES])


@dag_files
def test_imports_without_error(path, record_property):
    scan = parsed(path)
    seconds = sum(scan.parse_seconds.values())
    record_property("parse_seconds", round(seconds, 4))  # tabled by conftest at the end

    assert {str(file): error.splitlines()[-1] for file, error in scan.import_errors.items()} == {}
    assert scan.dags, f"{relative(path)} defines no DAG"
    assert seconds <= DEFAULT_PARSE_BUDGET_SECONDS, f"{relative(path)} took {seconds:.2f} s to parse"


@dag_files
def test_domain_tag(path):
    for dag in dags_of(path):
        domain_tags = [tag for tag in dag.tags if tag.startswith("domain:")]
        assert len(domain_tags) == 1, f"DAG {dag.dag_id} has domain tags {domain_tags}"


@dag_files
def test_owner(path):
    for dag in dags_of(path):
        for task in dag.tasks:
            assert task.owner, f"DAG {dag.dag_id} task {task.task_id} has no owner"
            assert task.owner != AIRFLOW_DEFAULT_OWNER, f"DAG {dag.dag_id} task {task.task_id} has no owner"


@dag_files
def test_retries(path):
    for dag in dags_of(path):
        for task in dag.tasks:
            if getattr(task, "approval_action", None):
                # Approval gates ask a human once: a failed gate fails closed, never re-asks.
                assert task.retries == 0, f"DAG {dag.dag_id} gate {task.task_id} retries"
                continue
            assert task.retries >= 1, f"DAG {dag.dag_id} task {task.task_id} has retries={task.retries}"


@dag_files
def test_doc_md(path):
    for dag in dags_of(path):
        assert dag.doc_md, f"DAG {dag.dag_id} has no doc_md"
        assert dag.doc_md.strip(), f"DAG {dag.dag_id} has a blank doc_md"


@dag_files
def test_params_typed(path):
    for dag in dags_of(path):
        for name in dag.params:
            schema = dag.params.get_param(name).schema
            assert "type" in schema, f"DAG {dag.dag_id} param {name!r} has no type"


@dag_files
def test_failure_mail_never_goes_to_a_run_param(path):
    # BaseOperator.email is who gets Airflow's failure mail (with the error): an operator that kept
    # an employee's or requester's address in it would mail them the platform's failures.
    leaks = [
        f"{dag.dag_id}.{task.task_id}: {task.email!r}"
        for dag in dags_of(path)
        for task in dag.tasks
        if "{{" in str(task.email or "")
    ]
    assert leaks == []


@dag_files
def test_every_task_is_bounded_by_its_domain(path):
    policy = load_domain_policy()
    for dag in dags_of(path):
        [domain] = domain_tags(dag)
        limits = policy.domain(domain).timeouts[workflow_kind(dag)]
        for task in dag.tasks:
            name = f"DAG {dag.dag_id} task {task.task_id}"
            assert task.execution_timeout is not None, f"{name} has no execution_timeout"
            wait = human_wait(task)
            if wait is None:
                assert task.execution_timeout <= limits.execution_timeout, name
            else:  # an approval gate: never cut off while an approver may answer, then the work
                assert wait <= task.execution_timeout <= wait + limits.execution_timeout, name


@dag_files
def test_every_run_outlasts_its_approvals_and_its_work(path):
    policy = load_domain_policy()
    for dag in dags_of(path):
        [domain] = domain_tags(dag)
        limits = policy.domain(domain).timeouts[workflow_kind(dag)]
        length, approval_waits = longest_path(dag)
        assert dag.dagrun_timeout is not None, f"DAG {dag.dag_id} has no dagrun_timeout"
        assert dag.dagrun_timeout <= limits.dagrun_timeout, dag.dag_id
        # The approval chain, then the work: every task of the longest path at its timeout.
        assert approval_waits < length <= dag.dagrun_timeout, dag.dag_id
