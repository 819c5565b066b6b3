"""
### Invoicing: invoice a milestone

Turns a finished milestone of a customer contract into a posted invoice in Business Central.

**Started by** the milestone event or by hand, with the same input: tenant, contract id, milestone
id, the milestone period (first and last day) and the key of the PSA's export of its billable lines.
- *Event:* when a milestone is signed off, the PSA calls Airflow's REST API
  (`POST /api/v2/dags/invoicing_milestone_invoice/dagRuns`, conf = these fields, optionally
  `correlation_id` = the PSA's event id) as a user with the `invoicing_operator` role. A direct
  trigger, not an asset event: the form's schema refuses a malformed event with HTTP 400 before any
  run exists, and the PSA's account can start invoicing runs only (asset events carry no per-DAG
  permission).
- *By hand:* Trigger DAG in the UI: the same fields as a form.

**The PSA export** is an S3 object (CSV or JSON, one line per billable item: line id, customer,
project, date, description, quantity, unit price, currency, VAT rate) in the PSA export bucket named
by connection `psa_exports`; `export_key` is its key, e.g. `exports/acme/CT-2026-001/M1.csv`.

**Steps**
1. `check_request`: tenant invoiceable (its Business Central customer number is in
   `include/policies/invoicing.yaml`), period sane, export present. Bad input stops here: nothing is
   created anywhere.
2. `open_ticket` in Request Tracker queue `invoicing`, one per milestone.
3. `validate_lines`: the Great Expectations suite (amounts, VAT rates, currency, known customer, no
   duplicates, dates in the period), every line for this tenant, the customer present and not
   blocked in Business Central. The result is archived either way; problems stop the run here, are
   logged and commented on the ticket in plain words. Nothing exists in the ERP.
4. `approve_invoice_post`: a finance controller approves the totals (net, VAT per rate, gross,
   line count, customer) and the export's SHA-256; rejected after 3 days without an answer.
5. `create_invoice`, `post_invoice`: the draft in Business Central, made from exactly the approved
   file, identified by the external reference `TENANT/CONTRACT/MILESTONE`; posted only if its
   totals are the approved ones (policy tolerance).
6. `archive_invoice`: the posted invoice (as Business Central holds it) next to its validation
   result in the audit bucket, Object Lock COMPLIANCE, write-once: `invoices/<tenant>/<contract>/
   <milestone>/`.
7. The ticket gets the outcome (posted: number, totals, approver, archive; or not approved and why)
   and is resolved or rejected; a failed step is commented with its reason.

**Same milestone again** (SCALE-3): one ticket, one invoice, no line twice. A re-run finds the
invoice by its external reference, completes a draft or leaves a posted one alone, and finds the
identical archive objects already there.
"""

from airflow.sdk import Param

from include.invoicing.milestone import CONTRACT_PATTERN, EXPORT_KEY_PATTERN, MILESTONE_PATTERN
from include.operators.invoicing import (
    ArchiveInvoiceOperator,
    CheckMilestoneRequestOperator,
    CreateInvoiceOperator,
    InvoiceFailureCommentOperator,
    InvoiceOutcomeCommentOperator,
    PostInvoiceOperator,
    ValidateMilestoneLinesOperator,
)
from include.operators.ticketing import CreateTicketOperator, UpdateTicketOperator
from include.policies.invoicing import invoiceable_tenants
from include.workflows import domain_workflow
from include.workflows.approval import approval_gate
from include.workflows.failures import ticket_id_if_any

TENANT = "{{ params.tenant }}"
REQUEST = "ti.xcom_pull(task_ids='check_request')"
VALIDATED = "ti.xcom_pull(task_ids='validate_lines')"
# Empty when the run stopped before the ticket existed (the failure comment then skips).
TICKET_ID = ticket_id_if_any("open_ticket")


@domain_workflow(
    domain="invoicing",
    doc_md=__doc__,
    params={
        "tenant": Param(type="string", enum=invoiceable_tenants(), description="Customer tenant to invoice"),
        "contract_id": Param(
            type="string", pattern=CONTRACT_PATTERN, description="Contract id in the PSA, e.g. CT-2026-001"
        ),
        "milestone_id": Param(
            type="string", pattern=MILESTONE_PATTERN, description="Milestone of the contract, e.g. M1"
        ),
        "period_start": Param(type="string", format="date", description="First day of the milestone period"),
        "period_end": Param(type="string", format="date", description="Last day of the milestone period"),
        "export_key": Param(
            type="string",
            pattern=EXPORT_KEY_PATTERN,
            description="Key of the PSA export (.csv or .json) in the PSA export bucket, "
            "e.g. exports/acme/CT-2026-001/M1.csv",
        ),
    },
)
def milestone_invoice() -> None:
    check = CheckMilestoneRequestOperator(task_id="check_request")
    ticket = CreateTicketOperator(
        task_id="open_ticket",
        tenant=TENANT,
        ticket_queue="invoicing",
        subject="Invoice {{ " + REQUEST + "['external_reference'] }}: contract {{ params.contract_id }} "
        "milestone {{ params.milestone_id }} (" + TENANT + ")",
        body="Milestone invoice for tenant " + TENANT + ", contract {{ params.contract_id }}, milestone "
        "{{ params.milestone_id }}, period {{ params.period_start }} to {{ params.period_end }}; PSA export "
        "{{ " + REQUEST + "['export']['uri'] }}. Run {{ run_id }}.",
        idempotency_basis="{{ " + REQUEST + "['external_reference'] }}",
    )
    validate = ValidateMilestoneLinesOperator(task_id="validate_lines")
    gate = approval_gate(
        CreateInvoiceOperator.capability,
        subject="Post invoice {{ " + REQUEST + "['external_reference'] }}: {{ " + VALIDATED + "['gross'] }} "
        "to {{ " + VALIDATED + "['customer']['name'] }}",
        body="{{ " + VALIDATED + "['approval_markdown'] }}",
        tenant=TENANT,
        ticket_id=TICKET_ID,
        artifact="{{ " + VALIDATED + "['export_sha256'] }}",
        task_id="approve_invoice_post",
    )
    create = CreateInvoiceOperator(task_id="create_invoice", validate_task_id="validate_lines")
    post = PostInvoiceOperator(
        task_id="post_invoice", validate_task_id="validate_lines", create_task_id="create_invoice"
    )
    archive = ArchiveInvoiceOperator(
        task_id="archive_invoice", validate_task_id="validate_lines", post_task_id="post_invoice"
    )
    report = InvoiceOutcomeCommentOperator(
        task_id="report",
        tenant=TENANT,
        ticket_id=TICKET_ID,
        request_task_id="check_request",
        gate_task_id="approve_invoice_post",
        create_task_id="create_invoice",
        post_task_id="post_invoice",
        archive_task_id="archive_invoice",
        trigger_rule="none_failed",  # also after a rejection, which skips the ERP steps
    )
    close = UpdateTicketOperator(
        task_id="close_ticket",
        tenant=TENANT,
        ticket_id=TICKET_ID,
        status="{{ 'resolved' if ti.xcom_pull(task_ids='archive_invoice') else 'rejected' }}",
    )
    failure = InvoiceFailureCommentOperator(
        task_id="report_failure",
        tenant=TENANT,
        ticket_id=TICKET_ID,
        request_task_id="check_request",
        validate_task_id="validate_lines",
        step_task_ids=["validate_lines", "create_invoice", "post_invoice", "archive_invoice"],
    )
    check >> ticket >> validate >> gate >> create >> post >> archive >> report >> close
    [validate, create, post, archive] >> failure


milestone_invoice()
