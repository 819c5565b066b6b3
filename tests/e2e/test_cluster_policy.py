"""The running DAG processor enforces the domain rules too (cluster policies), not only CI.

A DAG pushed straight to the tracked branch, bypassing the pull-request checks, must not run:
it appears as an import error that names the rule and the culprit.
"""

from __future__ import annotations

import time

import pytest

from devstack.api_client import AirflowApi
from devstack.stack import Stack
from include.audit.store import AuditStore
from tests.e2e.gitops import BUNDLE_NAME, GitOpsRemote

UNTAGGED = """
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG

with DAG("rogue_untagged", schedule=None, doc_md="rogue"):
    EmptyOperator(task_id="noop")
"""

WRONG_POOL = """
from airflow.providers.standard.operators.empty import EmptyOperator

from include.workflows import domain_workflow


@domain_workflow(domain="soc", dag_id="rogue_wrong_pool", doc_md="rogue")
def rogue():
    EmptyOperator(task_id="isolate_everything", pool="default_pool")


rogue()
"""

UNBOUNDED_TASK = """
from datetime import timedelta

from airflow.providers.standard.operators.empty import EmptyOperator

from include.workflows import domain_workflow


@domain_workflow(domain="soc", dag_id="rogue_unbounded", doc_md="rogue")
def rogue():
    EmptyOperator(task_id="wait_forever", execution_timeout=timedelta(days=30))


rogue()
"""


def _import_error(api: AirflowApi, filename: str, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for error in api.get("importErrors", limit=100)["import_errors"]:
            if error["bundle_name"] == BUNDLE_NAME and error["filename"] == filename:
                return error["stack_trace"]
        time.sleep(1)
    raise TimeoutError(f"no import error for {filename} within {timeout}s")


@pytest.mark.parametrize(
    ("filename", "source", "dag_id", "expected"),
    [
        pytest.param(
            "rogue_untagged.py",
            UNTAGGED,
            "rogue_untagged",
            "known-domain: DAG rogue_untagged has no domain tag (expected one of: "
            "hr, implementation, invoicing, platform, soc, support)",
            id="no-domain-tag",
        ),
        pytest.param(
            "rogue_wrong_pool.py",
            WRONG_POOL,
            "rogue_wrong_pool",
            "domain-pool: DAG rogue_wrong_pool task isolate_everything runs in pool "
            "'default_pool', not its domain pool 'soc'",
            id="wrong-pool",
        ),
        pytest.param(
            "rogue_unbounded.py",
            UNBOUNDED_TASK,
            "rogue_unbounded",
            "run-timeouts: DAG rogue_unbounded task wait_forever has execution_timeout 30d, over the soc "
            "fast_path maximum 10m",
            id="task-over-its-timeout",
        ),
    ],
)
def test_rogue_dag_pushed_to_branch_is_refused(
    api: AirflowApi,
    stack: Stack,
    gitops_remote: GitOpsRemote,
    filename: str,
    source: str,
    dag_id: str,
    expected: str,
) -> None:
    gitops_remote.commit_file(f"dags/{filename}", source, f"add {filename} without review")
    try:
        assert expected in _import_error(api, filename)
        dag_ids = {d["dag_id"] for d in api.get("dags", limit=1000)["dags"]}
        assert dag_id not in dag_ids
        # And it is on the audit trail, written by the listener in the dag-processor.
        with AuditStore(stack.audit_dsn) as audit:
            violations = [
                r
                for r in audit.records()
                if r["kind"] == "policy.violation" and str(r["details"].get("file", "")).endswith(filename)
            ]
        assert violations, f"no policy.violation audit record for {filename}"
        rule, message = expected.split(": ", 1)
        assert violations[0]["details"]["rule"] == rule
        assert message in violations[0]["details"]["message"]
    finally:
        gitops_remote.commit_file(f"dags/{filename}", None, f"revert {filename}")
