"""
### Ticket lifecycle (end-to-end test DAG)

Creates a ticket in Request Tracker, comments, attaches evidence, sets a field and resolves it,
all through the ticketing operators and the shared connector base.
"""

from airflow.sdk import Param

from include.operators.ticketing import (
    AttachEvidenceOperator,
    CommentTicketOperator,
    CreateTicketOperator,
    UpdateTicketOperator,
)
from include.workflows import domain_workflow

TICKET_ID = "{{ ti.xcom_pull(task_ids='create')['id'] }}"


@domain_workflow(
    domain="support",
    dag_id="e2e_ticket_lifecycle",
    doc_md=__doc__,
    params={"tenant": Param("acme", type="string", enum=["acme", "globex"])},
)
def ticket_lifecycle():
    tenant = "{{ params.tenant }}"
    create = CreateTicketOperator(
        task_id="create",
        tenant=tenant,
        ticket_queue="support",
        subject="Suspicious login for {{ params.tenant }}",
        body="Created by run {{ run_id }}",
    )
    comment = CommentTicketOperator(task_id="comment", tenant=tenant, ticket_id=TICKET_ID, body="Triaged.")
    attach = AttachEvidenceOperator(
        task_id="attach", tenant=tenant, ticket_id=TICKET_ID, filename="evidence.txt", content="login log"
    )
    resolve = UpdateTicketOperator(
        task_id="resolve", tenant=tenant, ticket_id=TICKET_ID, fields={"Severity": "low"}, status="resolved"
    )
    create >> comment >> attach >> resolve


ticket_lifecycle()
