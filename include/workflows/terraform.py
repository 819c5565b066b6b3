"""``terraform_change(...)``: plan, approve the exact plan, apply it, in one call.

    plan, gate, apply = terraform_change(
        stack="tenant-baseline", source="terraform/modules/tenant-provisioning",
        tenant="{{ params.tenant }}", subject="Provision {{ params.tenant }}",
    )

- the plan runs as the read-only ``terraform-plan`` role; "no changes" skips approval and apply;
- the approval question shows the summary (adds/changes/replaces/destroys per resource type,
  destroys named) and the plan's SHA-256; a destroying plan needs the stricter approvers
  (``destroy_steps`` of ``terraform-apply`` in ``include/policies/approvals.yaml``);
- apply runs as ``terraform-apply`` only the plan whose hash was approved, if it is fresh and the
  state has not moved since.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from airflow.sdk import TaskGroup

from include.operators.approval import ApprovalGateOperator
from include.operators.terraform import TerraformApplyOperator, TerraformPlanOperator
from include.workflows.approval import approval_gate


def terraform_change(
    *,
    stack: str,
    source: str,
    tenant: str,
    subject: str,
    variables: Mapping[str, str] | None = None,
    destroy: bool = False,
    ticket_id: str | None = None,
    **gate_kwargs: Any,
) -> tuple[TerraformPlanOperator, ApprovalGateOperator | TaskGroup, TerraformApplyOperator]:
    """Plan, approval gate and apply of ``stack`` for ``tenant``, chained; see the module docstring.

    :param stack: the stack's name (one state per tenant and stack); the steps' ids derive from it.
    :param source: the configuration, relative to the repository.
    :param tenant: the tenant (templated).
    :param subject: the approval question's subject.
    :param variables: the configuration's input variables (templated).
    :param destroy: plan (and ask to approve) the destruction of the stack.
    :param ticket_id: the ticket the approval is commented on.
    :param gate_kwargs: passed on to :func:`include.workflows.approval.approval_gate`.
    """
    name = stack.replace("-", "_")
    common = {"source": source, "stack": stack, "tenant": tenant, "variables": dict(variables or {})}
    plan = TerraformPlanOperator(task_id=f"plan_{name}", destroy=destroy, **common)
    record = f"ti.xcom_pull(task_ids='{plan.task_id}')"
    body = (
        f"Terraform {'DESTROY' if destroy else 'apply'} of stack `{stack}` for tenant **{tenant}**.\n\n"
        f"{{{{ {record}['summary_markdown'] }}}}\n\n"
        f"Plan SHA-256: `{{{{ {record}['sha256'] }}}}` (only this plan file can be applied)."
    )
    gate = approval_gate(
        TerraformApplyOperator.capability,
        subject=subject,
        body=body,
        tenant=tenant,
        ticket_id=ticket_id,
        artifact=f"{{{{ {record}['sha256'] }}}}",
        destructive=f"{{{{ {record}['destructive'] }}}}",
        task_id=f"approve_{name}",
        **gate_kwargs,
    )
    apply = TerraformApplyOperator(task_id=f"apply_{name}", plan_task_id=plan.task_id, **common)
    plan >> gate >> apply
    return plan, gate, apply
