"""Terraform steps: plan (read-only role), approve the exact plan, apply it (write role).

Thin over :class:`include.connectors.terraform.TerraformHook`: each operator takes its capability's
credentials, has the hook run the CLI, and returns a record for XCom (hashes, counts, non-sensitive
outputs; never plan content, state or credentials). Workflows use them through
:func:`include.workflows.terraform.terraform_change`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cached_property
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
    TerraformHook,
    capability_environment,
)


class TerraformOperator(BaseOperator):
    """Base: one tenant's copy of a configuration (``source``) with its own state (``stack``).

    :param source: the configuration, relative to the repository (or absolute).
    :param stack: the stack's name: one state per tenant and stack.
    :param tenant: the tenant (templated).
    :param variables: the configuration's input variables (templated).
    :param workspace: the workspace's name (templated; default the run id, so that plan and apply of
        one run share the plan file).
    :param conn_id: the Terraform connection (the CLI's settings).
    :param aws_conn_id: the connection with the platform's base AWS credentials.
    """

    template_fields: Sequence[str] = ("tenant", "variables", "workspace")
    ui_color = "#e5d9ff"
    capability = ""  # each step names its capability: the role the CLI runs as

    def __init__(
        self,
        *,
        source: str,
        stack: str,
        tenant: str,
        variables: Mapping[str, str] | None = None,
        workspace: str = "{{ run_id }}",
        conn_id: str = DEFAULT_CONN_ID,
        aws_conn_id: str = "aws_default",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.source = source
        self.stack = stack
        self.tenant = tenant
        self.variables = dict(variables or {})
        self.workspace = workspace
        self.conn_id = conn_id
        self.aws_conn_id = aws_conn_id

    @cached_property
    def hook(self) -> TerraformHook:
        return TerraformHook(
            self.conn_id,
            tenant=self.tenant,
            stack=self.stack,
            source=self.source,
            workspace=self.workspace,
            output=self.log.info,
        )

    def credentials(self, run: RunContext) -> dict[str, str]:
        """The CLI's AWS environment: this step's capability role in the tenant's account."""
        return capability_environment(self.capability, self.tenant, run, self.aws_conn_id)


class TerraformPlanOperator(TerraformOperator, SkipMixin):
    """``plan -detailed-exitcode -out`` as the read-only ``terraform-plan`` role.

    No changes: the record says so and the steps after it (approval, apply) are skipped.

    :param destroy: plan the destruction of the stack.
    """

    capability = "terraform-plan"

    def __init__(self, *, destroy: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.destroy = destroy

    def execute(self, context: Any) -> dict[str, Any]:
        run = RunContext.from_airflow_context(context, self.tenant)
        self.hook.prepare(self.credentials(run))
        record = self.hook.plan(
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
    their answers, :mod:`include.approvals.verify`; the verification finds the gates of
    ``terraform-apply`` upstream by itself), fresh, made against the current state, and a plan that
    destroys or replaces anything needs an approval asked as destructive (the stricter
    ``destroy_steps``), whatever the plan's XCom record says.

    :param plan_task_id: the plan step (its record: hash, age, state serial).
    """

    capability = "terraform-apply"

    def __init__(self, *, plan_task_id: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.plan_task_id = plan_task_id

    def act(self, context: Any) -> dict[str, Any]:
        ti = context["ti"]
        run = RunContext.from_airflow_context(context, self.tenant)
        record = ti.xcom_pull(task_ids=self.plan_task_id)
        if not record:
            raise TerraformError(f"no plan record from {self.plan_task_id}")
        if self.approval is None or not self.approval.artifact:  # set by execute() before act()
            raise TerraformError(f"no verified approval of a plan of {self.tenant}/{self.stack}")
        approved = self.approval.artifact
        hook = self.hook
        hook.prepare(self.credentials(run))
        plan = hook.verify(record, approved, utcnow())
        if hook.destructive(plan) and not self.approval.destructive:
            raise TerraformError(
                f"the plan of {self.tenant}/{self.stack} destroys or replaces resources, but it was "
                "approved as a non-destructive change: refusing to apply, plan and ask again"
            )
        changes = hook.apply(plan)
        hook.record_apply(record["correlation_id"])
        from include.connectors.aws import role_arn

        audit_side_effect(
            context,
            system="terraform",
            operation="apply",
            object_id=f"{self.tenant}/{self.stack}",
            tenant=self.tenant,
            capability=self.capability,
            role_arn=role_arn(self.capability, self.tenant),
            plan_sha256=record["sha256"],
            changes=changes,
            summary=str(record.get("summary_markdown", ""))[:500],
        )
        return {
            "tenant": self.tenant,
            "stack": self.stack,
            "sha256": record["sha256"],
            "changes": changes,
            "outputs": hook.outputs(),
            "correlation_id": record["correlation_id"],
        }
