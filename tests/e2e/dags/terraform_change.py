"""
### Terraform change (end-to-end test DAGs)

Plan a small tenant stack with the read-only role, approve the exact plan, apply it with the
write role; the same as a destroy, which needs the stricter approvers. The `terraform` binary is
the stand-in of tests/support (no Terraform binary reaches these machines).
"""

from __future__ import annotations

from airflow.sdk import Param

from include.workflows import domain_workflow
from include.workflows.terraform import terraform_change

SOURCE = "tests/support/terraform/tenant_stack"
PARAMS = {"tenant": Param("acme", type="string", enum=["acme", "globex"])}


@domain_workflow(
    domain="implementation",
    dag_id="e2e_tenant_baseline",
    doc_md=__doc__,
    kind="infrastructure_change",
    params=PARAMS,
)
def tenant_baseline() -> None:
    terraform_change(
        stack="baseline",
        source=SOURCE,
        tenant="{{ params.tenant }}",
        subject="Baseline of {{ params.tenant }}",
    )


@domain_workflow(
    domain="implementation",
    dag_id="e2e_tenant_baseline_destroy",
    doc_md=__doc__,
    kind="infrastructure_change",
    params=PARAMS,
)
def tenant_baseline_destroy() -> None:
    terraform_change(
        stack="baseline",
        source=SOURCE,
        tenant="{{ params.tenant }}",
        subject="DESTROY the baseline of {{ params.tenant }}",
        destroy=True,
    )


tenant_baseline()
tenant_baseline_destroy()
