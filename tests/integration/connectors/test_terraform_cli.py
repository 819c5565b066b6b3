"""The Terraform hook against the stand-in CLI and moto: the real invoking code, end to end
without a scheduler (the approval in between is tested on the real stack, tests/e2e).

The stand-in asks STS who it is with the credentials it was given, so these tests prove which
capability role planned and which applied, in which tenant account.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

if "AIRFLOW_HOME" not in os.environ:  # the Airflow connection is read through Airflow
    os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="orchestrator-itest-airflow-")

from devstack.aws_seed import seed_capability_roles
from include.connectors.context import RunContext
from include.connectors.terraform import (
    TerraformError,
    TerraformHook,
    capability_environment,
)
from include.policies.tenants import tenant_account_id
from tests.support.moto import moto_with_aws_connection

REPO = Path(__file__).resolve().parents[3]
STANDIN = REPO / "devstack" / "bin" / "terraform"
SOURCE = REPO / "tests" / "support" / "terraform" / "tenant_stack"
REGION = "eu-west-1"
CONN_ID = "aws_terraform_itest"
TERRAFORM_CONN_ID = "terraform_itest"
SENSITIVE_OUTPUT = "tok-acme-s3cr3t-canary"


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    with moto_with_aws_connection(CONN_ID, REGION) as url:
        seed_capability_roles(url, REGION)
        yield url


class Stack:
    """One tenant stack: hooks for plan and apply in per-run workspaces, the log, the audit."""

    def __init__(
        self, root: Path, monkeypatch: pytest.MonkeyPatch, max_age: timedelta = timedelta(hours=1)
    ) -> None:
        self.work_root, self.state_root = root / "work", root / "state"
        extra = {
            "binary": str(STANDIN),
            "work_root": str(self.work_root),
            "state_root": str(self.state_root),
            "max_plan_age_seconds": max_age.total_seconds(),
        }
        connection = {"conn_type": "generic", "extra": extra}
        monkeypatch.setenv(f"AIRFLOW_CONN_{TERRAFORM_CONN_ID.upper()}", json.dumps(connection))
        self.audit = root / "audit.jsonl"
        self.lines: list[str] = []

    def runner(self, capability: str, run_id: str, tenant: str = "acme") -> TerraformHook:
        """The hook of ``run_id``'s workspace, prepared with ``capability``'s credentials."""
        run = RunContext("implementation_provision_tenant", run_id, "step", tenant, f"corr-{run_id}")
        env = capability_environment(capability, tenant, run, CONN_ID)
        hook = TerraformHook(
            TERRAFORM_CONN_ID,
            tenant=tenant,
            stack="baseline",
            source=SOURCE,
            workspace=run_id,
            output=self.lines.append,
        )
        hook.prepare({**env, "TF_STANDIN_AUDIT": str(self.audit)})
        return hook

    def callers(self) -> list[tuple[str, str]]:
        entries = [json.loads(line) for line in self.audit.read_text().splitlines()]
        return [(e["command"], e["caller"].split("/")[1]) for e in entries]

    def plan(self, run_id: str, **kwargs):
        runner = self.runner("terraform-plan", run_id)
        return runner.plan({}, correlation_id=f"corr-{run_id}", **kwargs).as_xcom()

    def apply(self, run_id: str, record: dict, approved: str | None = None) -> tuple[TerraformHook, dict]:
        runner = self.runner("terraform-apply", run_id)
        plan = runner.verify(record, approved or record["sha256"], datetime.now(UTC))
        changes = runner.apply(plan)
        runner.record_apply(f"corr-{run_id}")
        return runner, changes


@pytest.fixture
def stack(tmp_path: Path, moto_url: str, monkeypatch: pytest.MonkeyPatch) -> Stack:
    return Stack(tmp_path, monkeypatch)


def test_plan_then_apply_the_approved_plan_with_the_right_roles(stack: Stack, monkeypatch) -> None:
    # Ambient credentials of the worker must never reach Terraform.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAWORKERAMBIENT000")
    monkeypatch.setenv("WORKER_DB_PASSWORD", "not-for-terraform")

    record = stack.plan("run1")
    assert record["summary"] == {
        "changes": True,
        "add": 2,
        "change": 0,
        "destroy": 0,
        "replace": 0,
        "by_type": {"aws_cloudwatch_log_group": {"add": 1}, "aws_s3_bucket": {"add": 1}},
        "destroyed": [],
    }
    assert record["destructive"] is False
    assert "| `aws_s3_bucket` | 1 | 0 | 0 | 0 |" in record["summary_markdown"]
    assert len(record["sha256"]) == 64

    runner, changes = stack.apply("run1", record)
    assert changes == {"add": 2, "change": 0, "remove": 0, "operation": "apply"}
    assert runner.outputs() == {"state_bucket": "orchestrator-acme-tfstate", "bootstrap_token": "(sensitive)"}
    assert stack.callers() == [
        ("plan", "orchestrator-terraform-plan"),
        ("apply", "orchestrator-terraform-apply"),
    ]
    account = tenant_account_id("acme")
    assert all(account in json.loads(line)["caller"] for line in stack.audit.read_text().splitlines())
    assert "WORKER_DB_PASSWORD" not in runner._environment()
    assert runner._environment()["AWS_ACCESS_KEY_ID"] != "AKIAWORKERAMBIENT000"
    assert not any(SENSITIVE_OUTPUT in line for line in stack.lines)
    assert "aws_s3_bucket.state: Create complete after 0s" in stack.lines


def test_a_second_run_changes_nothing(stack: Stack) -> None:
    stack.apply("run1", stack.plan("run1"))
    again = stack.plan("run2")  # a new run, a new correlation id: still no changes
    assert again["summary"]["changes"] is False
    assert again["summary_markdown"] == "No changes."


def test_a_tampered_plan_is_refused(stack: Stack) -> None:
    record = stack.plan("run1")
    plan_file = stack.work_root / "acme" / "baseline" / "run1" / "tfplan"
    plan_file.write_bytes(plan_file.read_bytes() + b"\0")
    with pytest.raises(TerraformError, match=r"plan file of acme/baseline is not the approved plan"):
        stack.apply("run1", record)
    assert not (stack.state_root / "acme" / "baseline.tfstate").exists()


def test_an_approval_for_another_plan_is_refused(stack: Stack) -> None:
    record = stack.plan("run1")
    with pytest.raises(TerraformError, match="is not the approved plan"):
        stack.apply("run1", record, approved="0" * 64)


def test_a_plan_made_before_the_state_moved_is_refused(stack: Stack) -> None:
    first = stack.plan("run1")
    second = stack.plan("run2")
    stack.apply("run2", second)
    with pytest.raises(
        TerraformError, match=r"state of acme/baseline moved since the plan \(serial empty -> 1\)"
    ):
        stack.apply("run1", first)


def test_an_old_plan_is_refused(tmp_path: Path, moto_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    stack = Stack(tmp_path, monkeypatch, max_age=timedelta(seconds=60))
    record = stack.plan("run1")
    record["created_at"] = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    with pytest.raises(TerraformError, match=r"older than the 60 s allowed: plan again"):
        stack.apply("run1", record)


def test_a_destroy_is_flagged(stack: Stack) -> None:
    stack.apply("run1", stack.plan("run1"))
    record = stack.plan("run2", destroy=True)
    assert record["destructive"] is True
    assert record["summary"]["destroyed"] == ["aws_cloudwatch_log_group.workflows", "aws_s3_bucket.state"]
    assert (
        "**DESTROYS:** `aws_cloudwatch_log_group.workflows`, `aws_s3_bucket.state`"
        in record["summary_markdown"]
    )


def test_terraform_errors_name_the_command_and_the_stack(stack: Stack) -> None:
    runner = stack.runner("terraform-plan", "run1")
    with pytest.raises(
        TerraformError, match=r"terraform frobnicate failed \(exit 1\) for acme/baseline: .*no command named"
    ):
        runner.run("frobnicate")
