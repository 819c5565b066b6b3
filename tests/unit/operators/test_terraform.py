"""The Terraform steps with a mocked hook: the exact CLI steps each one asks for, its XCom, its refusals.

The CLI itself runs against the stand-in in tests/integration/connectors/test_terraform_cli.py, and
plan, approval and apply together in tests/e2e/test_terraform_change.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from include.approvals.verify import ApprovalVerificationError, VerifiedApproval
from include.connectors.aws import role_arn
from include.connectors.context import RunContext, default_correlation_id
from include.connectors.terraform import TerraformError, TerraformHook
from include.operators.terraform import TerraformApplyOperator, TerraformPlanOperator

DAG_ID = "implementation_provision_tenant"
RUN_ID = "manual__2026-12-06T10:00:00+00:00"
CORRELATION_ID = default_correlation_id(DAG_ID, RUN_ID)
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "ASIA0", "AWS_SECRET_ACCESS_KEY": "s3cr3t", "AWS_SESSION_TOKEN": "tok"}
SHA = "ab" * 32
NOW = datetime(2026, 12, 6, 10, 5, tzinfo=UTC)
PLAN_FILE = Path("/work/acme/tenant-baseline/run/tfplan")
COMMON: dict[str, Any] = {
    "source": "terraform/modules/tenant-provisioning",
    "stack": "tenant-baseline",
    "tenant": "acme",
    "variables": {"tenant": "acme"},
}


def _context(task_id: str, record: dict[str, Any] | None = None) -> dict[str, Any]:
    ti = mock.MagicMock(dag_id=DAG_ID, task_id=task_id, run_id=RUN_ID)
    ti.xcom_pull.return_value = record
    return {"ti": ti, "run_id": RUN_ID, "dag_run": None, "task": mock.MagicMock()}


def _record(*, changes: bool = True, destructive: bool = False) -> dict[str, Any]:
    return {
        "tenant": "acme",
        "stack": "tenant-baseline",
        "workspace": "run",
        "sha256": SHA,
        "created_at": "2026-12-06T10:00:00+00:00",
        "state_lineage": None,
        "state_serial": None,
        "summary": {"changes": changes},
        "summary_markdown": "**2 to add**" if changes else "No changes.",
        "destructive": destructive,
    }


def _run(task_id: str) -> RunContext:
    return RunContext(DAG_ID, RUN_ID, task_id, "acme", CORRELATION_ID)


@pytest.fixture
def credentials() -> Iterator[mock.MagicMock]:
    with mock.patch("include.operators.terraform.capability_environment", return_value=CREDENTIALS) as env:
        yield env


@pytest.fixture
def plan_hook() -> Iterator[mock.MagicMock]:
    with mock.patch.object(TerraformPlanOperator, "hook", new_callable=mock.PropertyMock) as prop:
        yield prop.return_value


@pytest.fixture
def apply_hook() -> Iterator[mock.MagicMock]:
    with mock.patch.object(TerraformApplyOperator, "hook", new_callable=mock.PropertyMock) as prop:
        hook = prop.return_value
        hook.verify.return_value = PLAN_FILE
        hook.destructive.return_value = False
        hook.apply.return_value = {"add": 2, "change": 0, "remove": 0, "operation": "apply"}
        hook.outputs.return_value = {"state_bucket": "orchestrator-acme-tfstate", "token": "(sensitive)"}
        yield hook


@pytest.fixture
def audit() -> Iterator[mock.MagicMock]:
    with mock.patch("include.operators.terraform.audit_side_effect") as side_effect:
        yield side_effect


def _apply_step(approval: VerifiedApproval | None) -> TerraformApplyOperator:
    step = TerraformApplyOperator(
        task_id="apply_tenant_baseline", plan_task_id="plan_tenant_baseline", **COMMON
    )
    step.approval = approval
    return step


def _approval(*, artifact: str | None = SHA, destructive: bool = False) -> VerifiedApproval:
    return VerifiedApproval("terraform-apply", artifact, destructive=destructive, privileged=True)


# --- the hook each step builds ---------------------------------------------------------------------


def test_the_hook_is_the_tenant_stack_in_the_run_workspace_and_does_no_io() -> None:
    step = TerraformPlanOperator(task_id="plan_tenant_baseline", workspace=RUN_ID, **COMMON)
    with mock.patch.object(TerraformHook, "get_connection", side_effect=AssertionError("I/O")):
        hook = step.hook
    assert isinstance(hook, TerraformHook)
    assert (hook.conn_id, hook.tenant, hook.stack, hook.source, hook.workspace) == (
        "terraform_default",
        "acme",
        "tenant-baseline",
        Path("terraform/modules/tenant-provisioning"),
        "manual__2026-12-06T10_00_00_00_00",
    )
    assert step.hook is hook


def test_the_workspace_is_the_run_by_default() -> None:
    step = TerraformPlanOperator(task_id="plan_tenant_baseline", **COMMON)
    assert step.workspace == "{{ run_id }}"
    assert "workspace" in step.template_fields


# --- plan --------------------------------------------------------------------------------------


def test_plan_with_changes_returns_the_record_for_the_gate(
    plan_hook: mock.MagicMock, credentials: mock.MagicMock
) -> None:
    plan_hook.plan.return_value.as_xcom.return_value = _record()
    step = TerraformPlanOperator(task_id="plan_tenant_baseline", **COMMON)
    context = _context("plan_tenant_baseline")

    with mock.patch.object(TerraformPlanOperator, "skip") as skip:
        result = step.execute(context)

    run = _run("plan_tenant_baseline")
    credentials.assert_called_once_with("terraform-plan", "acme", run, "aws_default")
    assert plan_hook.method_calls == [
        mock.call.prepare(CREDENTIALS),
        mock.call.plan({"tenant": "acme"}, correlation_id=CORRELATION_ID, destroy=False),
    ]
    assert result == {**_record(), "correlation_id": CORRELATION_ID}
    skip.assert_not_called()
    context["ti"].xcom_push.assert_not_called()


def test_plan_without_changes_skips_approval_and_apply(
    plan_hook: mock.MagicMock, credentials: mock.MagicMock
) -> None:
    plan_hook.plan.return_value.as_xcom.return_value = _record(changes=False)
    step = TerraformPlanOperator(task_id="plan_tenant_baseline", destroy=True, **COMMON)
    context = _context("plan_tenant_baseline")
    gate = mock.MagicMock(name="approve_tenant_baseline")
    context["task"].get_direct_relatives.return_value = {gate}

    with mock.patch.object(TerraformPlanOperator, "skip") as skip:
        result = step.execute(context)

    plan_hook.plan.assert_called_once_with({"tenant": "acme"}, correlation_id=CORRELATION_ID, destroy=True)
    expected = {**_record(changes=False), "correlation_id": CORRELATION_ID}
    assert result == expected
    context["ti"].xcom_push.assert_called_once_with(key="return_value", value=expected)
    context["task"].get_direct_relatives.assert_called_once_with(upstream=False)
    skip.assert_called_once_with(ti=context["ti"], tasks=[gate])


def test_a_failing_plan_fails_the_step_with_terraforms_reason(
    plan_hook: mock.MagicMock, credentials: mock.MagicMock
) -> None:
    plan_hook.plan.side_effect = TerraformError(
        "terraform plan failed (exit 1) for acme/tenant-baseline: boom"
    )
    step = TerraformPlanOperator(task_id="plan_tenant_baseline", **COMMON)
    with pytest.raises(
        TerraformError, match=r"^terraform plan failed \(exit 1\) for acme/tenant-baseline: boom$"
    ):
        step.execute(_context("plan_tenant_baseline"))
    plan_hook.prepare.assert_called_once_with(CREDENTIALS)


# --- apply -------------------------------------------------------------------------------------


def test_apply_applies_exactly_the_approved_plan_and_records_it(
    apply_hook: mock.MagicMock, credentials: mock.MagicMock, audit: mock.MagicMock
) -> None:
    step = _apply_step(_approval())
    record = {**_record(), "correlation_id": "corr-plan"}
    context = _context("apply_tenant_baseline", record)

    with mock.patch("include.operators.terraform.utcnow", return_value=NOW):
        result = step.act(context)

    context["ti"].xcom_pull.assert_called_once_with(task_ids="plan_tenant_baseline")
    credentials.assert_called_once_with(
        "terraform-apply", "acme", _run("apply_tenant_baseline"), "aws_default"
    )
    assert apply_hook.method_calls == [
        mock.call.prepare(CREDENTIALS),
        mock.call.verify(record, SHA, NOW),
        mock.call.destructive(PLAN_FILE),
        mock.call.apply(PLAN_FILE),
        mock.call.record_apply("corr-plan"),
        mock.call.outputs(),
    ]
    assert result == {
        "tenant": "acme",
        "stack": "tenant-baseline",
        "sha256": SHA,
        "changes": {"add": 2, "change": 0, "remove": 0, "operation": "apply"},
        "outputs": {"state_bucket": "orchestrator-acme-tfstate", "token": "(sensitive)"},
        "correlation_id": "corr-plan",
    }
    audit.assert_called_once_with(
        context,
        system="terraform",
        operation="apply",
        object_id="acme/tenant-baseline",
        tenant="acme",
        capability="terraform-apply",
        role_arn=role_arn("terraform-apply", "acme"),
        plan_sha256=SHA,
        changes={"add": 2, "change": 0, "remove": 0, "operation": "apply"},
        summary="**2 to add**",
    )


def test_a_destructive_plan_approved_as_destructive_is_applied(
    apply_hook: mock.MagicMock, credentials: mock.MagicMock, audit: mock.MagicMock
) -> None:
    apply_hook.destructive.return_value = True
    step = _apply_step(_approval(destructive=True))
    step.act(_context("apply_tenant_baseline", {**_record(), "correlation_id": "corr-plan"}))
    apply_hook.apply.assert_called_once_with(PLAN_FILE)


@pytest.mark.parametrize(
    ("record", "approval", "message"),
    [
        pytest.param(None, _approval(), "^no plan record from plan_tenant_baseline$", id="no-record"),
        pytest.param(
            _record(),
            None,
            "^no verified approval of a plan of acme/tenant-baseline$",
            id="no-approval",
        ),
        pytest.param(
            _record(),
            _approval(artifact=None),
            "^no verified approval of a plan of acme/tenant-baseline$",
            id="no-artifact",
        ),
    ],
)
def test_apply_refuses_before_any_cli_call(
    apply_hook: mock.MagicMock,
    credentials: mock.MagicMock,
    record: dict[str, Any] | None,
    approval: VerifiedApproval | None,
    message: str,
) -> None:
    with pytest.raises(TerraformError, match=message):
        _apply_step(approval).act(_context("apply_tenant_baseline", record))
    assert apply_hook.method_calls == []
    credentials.assert_not_called()


def test_a_destructive_plan_approved_as_a_plain_change_is_not_applied(
    apply_hook: mock.MagicMock, credentials: mock.MagicMock, audit: mock.MagicMock
) -> None:
    apply_hook.destructive.return_value = True
    with pytest.raises(
        TerraformError,
        match=r"^the plan of acme/tenant-baseline destroys or replaces resources, but it was approved as a "
        r"non-destructive change: refusing to apply, plan and ask again$",
    ):
        _apply_step(_approval()).act(_context("apply_tenant_baseline", {**_record(), "correlation_id": "c"}))
    apply_hook.apply.assert_not_called()
    apply_hook.record_apply.assert_not_called()
    audit.assert_not_called()


def test_a_plan_the_hook_refuses_is_not_applied(
    apply_hook: mock.MagicMock, credentials: mock.MagicMock, audit: mock.MagicMock
) -> None:
    apply_hook.verify.side_effect = TerraformError(
        "plan file of acme/tenant-baseline is not the approved plan"
    )
    with pytest.raises(TerraformError, match="is not the approved plan"):
        _apply_step(_approval()).act(_context("apply_tenant_baseline", {**_record(), "correlation_id": "c"}))
    apply_hook.destructive.assert_not_called()
    apply_hook.apply.assert_not_called()
    audit.assert_not_called()


def test_execute_verifies_the_approval_of_terraform_apply_before_acting(
    apply_hook: mock.MagicMock, credentials: mock.MagicMock, audit: mock.MagicMock
) -> None:
    step = _apply_step(None)
    context = _context("apply_tenant_baseline", {**_record(), "correlation_id": "c"})
    with mock.patch("include.approvals.verify.verify_approval", return_value=_approval()) as verify:
        step.execute(context)
    verify.assert_called_once_with(context, "terraform-apply", artifact=None, tenant="acme")
    apply_hook.apply.assert_called_once_with(PLAN_FILE)


def test_execute_without_a_verified_approval_never_reaches_the_cli(
    apply_hook: mock.MagicMock, credentials: mock.MagicMock
) -> None:
    refused = ApprovalVerificationError("apply_tenant_baseline: no approval of terraform-apply")
    with (
        mock.patch("include.approvals.verify.verify_approval", side_effect=refused),
        pytest.raises(ApprovalVerificationError, match="no approval of terraform-apply"),
    ):
        _apply_step(None).execute(_context("apply_tenant_baseline", _record()))
    assert apply_hook.method_calls == []
    credentials.assert_not_called()
