"""
### Implementation: provision a customer tenant

For a tenant declared in `include/policies/tenants.yaml` (its AWS account added by pull request):
open an implementation ticket, plan the tenant module (`terraform/modules/tenant-provisioning`)
against the tenant's own state as the read-only `terraform-plan` role, ask the cloud lead to
approve exactly that plan (its SHA-256 is in the question; a plan that destroys anything also
needs a security officer), apply it as `terraform-apply`, then put the outputs on the ticket and
resolve it. A tenant that is already provisioned plans "no changes": nothing is asked or applied,
and the ticket says so. Infrastructure-change SLA of the implementation domain.

When the approved apply fails (or cannot run), the ticket says so (`change_failed`, once per run;
include/workflows/failures.py); a plan that failed before anything was approved says nothing there
(its log has the reason). Clearing the apply once the cause is fixed runs it on the recorded approval.
"""

from airflow.sdk import Param

from include.operators.ticketing import CommentTicketOperator, CreateTicketOperator, UpdateTicketOperator
from include.policies.tenants import tenant_ids
from include.workflows import domain_workflow
from include.workflows.failures import change_failed_comment
from include.workflows.terraform import terraform_change

TENANT = "{{ params.tenant }}"
TICKET_ID = "{{ ti.xcom_pull(task_ids='open_ticket')['id'] }}"
PLAN = "ti.xcom_pull(task_ids='plan_tenant_baseline')"


@domain_workflow(
    domain="implementation",
    doc_md=__doc__,
    kind="infrastructure_change",
    params={
        "tenant": Param(type="string", enum=tenant_ids(), description="Tenant to provision"),
        "requested_by": Param(
            type="string",
            format="idn-email",
            description="Who asked for the tenant (gets the ticket updates)",
        ),
    },
)
def provision_tenant() -> None:
    ticket = CreateTicketOperator(
        task_id="open_ticket",
        tenant=TENANT,
        ticket_queue="implementation",
        subject="Provision tenant " + TENANT,
        body="Tenant provisioning requested by {{ params.requested_by }} (run {{ run_id }}).",
        idempotency_basis="provision-" + TENANT,
    )
    plan, gate, apply = terraform_change(
        stack="tenant-baseline",
        source="terraform/modules/tenant-provisioning",
        tenant=TENANT,
        subject="Provision tenant " + TENANT,
        variables={
            "tenant": TENANT,
            "state_bucket_name": "orchestrator-" + TENANT + "-tfstate",
            "access_log_bucket_name": "orchestrator-" + TENANT + "-access-logs",
        },
        ticket_id=TICKET_ID,
    )
    report = CommentTicketOperator(
        task_id="report",
        tenant=TENANT,
        ticket_id=TICKET_ID,
        body="Terraform: {{ " + PLAN + "['summary_markdown'] }}\n\n"
        "{% set applied = ti.xcom_pull(task_ids='apply_tenant_baseline') %}"
        "{% if applied %}Applied plan {{ applied['sha256'][:12] }} ({{ applied['changes'] }}); "
        "outputs: {{ applied['outputs'] | tojson }}{% else %}Nothing applied "
        "(no changes, or not approved).{% endif %}",
        trigger_rule="none_failed",
        idempotency_basis="provision-" + TENANT,  # one report per tenant, not one per run
    )
    resolve = UpdateTicketOperator(
        task_id="resolve_ticket",
        tenant=TENANT,
        ticket_id=TICKET_ID,
        status="resolved",
        trigger_rule="none_failed",
    )
    # report is not a direct downstream of plan: a plan with no changes skips its direct
    # downstream (the gate); report then runs after the skipped apply (none_failed).
    ticket >> plan
    apply >> report >> resolve
    apply >> change_failed_comment(
        [apply],
        ticket_task="open_ticket",
        basis="provision-" + TENANT + "-{{ run_id }}",
        tenant=TENANT,
        gates=gate,
    )


provision_tenant()
