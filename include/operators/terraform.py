"""Terraform steps: plan (read-only role), approve the exact plan, apply it (write role).

Thin over :mod:`include.connectors.terraform`: each operator prepares the workspace and the
capability credentials, makes one call, returns a record for XCom (hashes, counts, non-sensitive
outputs; never plan content, state or credentials). Workflows use them through
:func:`include.workflows.terraform.terraform_change`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.bases.skipmixin import SkipMixin
from airflow.sdk.timezone import utcnow

from include.approvals.verify import RequiresApproval
from include.audit.emit import side_effect as audit_side_effect
from include.connectors.context import RunContext
from include.connectors.terraform import (
    DEFAULT_CONN_ID,
    TerraformError,
    TerraformRunner,
    TerraformSettings,
    capability_environment,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def _mask(env: Mapping[str, str]) -> None:
    from airflow.sdk.log import mask_secret

    for key in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        if env.get(key):
            mask_secret(env[key])


class TerraformOperator(BaseOperator):
    """Base: one tenant's copy of a configuration (``source``) with its own state (``stack``)."""

    template_fields: Sequence[str] = ("tenant", "variables")
    ui_color = "#e5d9ff"
    capability_role = ""

    def __init__(
        self,
        *,
        source: str,
        stack: str,
        tenant: str,
        variables: Mapping[str, str] | None = None,
        conn_id: str = DEFAULT_CONN_ID,
        aws_conn_id: str = "aws_default",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        path = Path(source)
        self.source = path if path.is_absolute() else REPO_ROOT / path
        self.stack = stack
        self.tenant = tenant
        self.variables = dict(variables or {})
        self.conn_id = conn_id
        self.aws_conn_id = aws_conn_id

    def runner(self, context: Any, run: RunContext) -> TerraformRunner:
        env = capability_environment(self.capability_role, self.tenant, run, self.aws_conn_id)
        _mask(env)
        settings = TerraformSettings.from_connection(self.conn_id)
        return TerraformRunner(
            settings,
            source=settings.source_for(self.source, REPO_ROOT),
            tenant=self.tenant,
            stack=self.stack,
            workspace=_UNSAFE.sub("_", run.run_id),
            env={**env, "TF_VAR_tenant": self.tenant},
            log=self.log.info,
        )


class TerraformPlanOperator(TerraformOperator, SkipMixin):
    """``plan -detailed-exitcode -out`` as the read-only ``terraform-plan`` role.

    No changes: the record says so and the steps after it (approval, apply) are skipped.
    """

    capability = "terraform-plan"
    capability_role = "terraform-plan"

    def __init__(self, *, destroy: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.destroy = destroy

    def execute(self, context: Any) -> dict[str, Any]:
        run = RunContext.from_airflow_context(context, self.tenant)
        runner = self.runner(context, run)
        runner.prepare()
        record = runner.plan(
            self.variables, correlation_id=run.correlation_id, destroy=self.destroy
        ).as_xcom()
        record["correlation_id"] = run.correlation_id
        self.log.info("plan of %s/%s:\n%s", self.tenant, self.stack, record["summary_markdown"])
        if record["summary"]["changes"]:
            return record
        context["ti"].xcom_push(key="return_value", value=record)
        downstream = context["task"].get_direct_relatives(upstream=False)
        self.log.info("no changes: nothing to approve or apply")
        self.skip(ti=context["ti"], tasks=list(downstream))
        return record


class TerraformApplyOperator(RequiresApproval, TerraformOperator):
    """Apply exactly the approved plan as the ``terraform-apply`` role.

    The plan file must be the one whose SHA-256 the approvers saw (read from Airflow's record of
    their answers, :mod:`include.approvals.verify`), fresh, made against the current state, and a
    plan that destroys or replaces anything needs an approval asked as destructive (the stricter
    ``destroy_steps``), whatever the plan's XCom record says.

    :param plan_task_id: the plan step (its record: hash, age, state serial).
    :param gate_task_ids: the approval gate step(s) (shown in the DAG; the verification finds the
        gates of ``terraform-apply`` upstream by itself).
    """

    capability = "terraform-apply"
    capability_role = "terraform-apply"

    def __init__(self, *, plan_task_id: str, gate_task_ids: Sequence[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.plan_task_id = plan_task_id
        self.gate_task_ids = list(gate_task_ids)

    def act(self, context: Any) -> dict[str, Any]:
        ti = context["ti"]
        run = RunContext.from_airflow_context(context, self.tenant)
        record = ti.xcom_pull(task_ids=self.plan_task_id)
        if not record:
            raise TerraformError(f"no plan record from {self.plan_task_id}")
        if self.approval is None or not self.approval.artifact:  # set by execute() before act()
            raise TerraformError(f"no verified approval of a plan of {self.tenant}/{self.stack}")
        approved = self.approval.artifact
        runner = self.runner(context, run)
        runner.prepare()
        plan = runner.verify(record, approved, utcnow())
        if runner.destructive(plan) and not self.approval.destructive:
            raise TerraformError(
                f"the plan of {self.tenant}/{self.stack} destroys or replaces resources, but it was "
                "approved as a non-destructive change: refusing to apply, plan and ask again"
            )
        changes = runner.apply(plan)
        runner.record_apply(record["correlation_id"])
        from include.connectors.aws import role_arn

        audit_side_effect(
            context,
            system="terraform",
            operation="apply",
            object_id=f"{self.tenant}/{self.stack}",
            tenant=self.tenant,
            capability=self.capability,
            role_arn=role_arn(self.capability_role, self.tenant),
            plan_sha256=record["sha256"],
            changes=changes,
            summary=str(record.get("summary_markdown", ""))[:500],
        )
        return {
            "tenant": self.tenant,
            "stack": self.stack,
            "sha256": record["sha256"],
            "changes": changes,
            "outputs": runner.outputs(),
            "correlation_id": record["correlation_id"],
        }
