"""
### SOC ticket mirrored to the customer's Jira (end-to-end test DAG)

An alert's SOC ticket in Request Tracker (keyed by the alert id, like the SOC workflows) with the
evidence attached and a resolve: for a tenant whose tenants.yaml ticketing is Jira, every step is
mirrored to its Jira Service Management project by the ticket operators themselves (comments are
mirrored the same way: tests/integration/connectors/test_jira_mirror.py).
"""

from airflow.sdk import Param

from include.operators.ticketing import (
    AttachEvidenceOperator,
    CreateTicketOperator,
    UpdateTicketOperator,
)
from include.workflows import domain_workflow

TENANT = "{{ params.tenant }}"
ALERT = "{{ params.alert_id }}"
TICKET_ID = "{{ ti.xcom_pull(task_ids='open_ticket')['id'] }}"


@domain_workflow(
    domain="soc",
    dag_id="e2e_soc_ticket_mirror",
    doc_md=__doc__,
    params={
        "tenant": Param("globex", type="string", enum=["acme", "globex"]),
        "alert_id": Param(type="string", pattern="^[A-Za-z0-9][A-Za-z0-9._:-]{2,63}(?!\\n)$"),
    },
)
def soc_ticket_mirror() -> None:
    ticket = CreateTicketOperator(
        task_id="open_ticket",
        tenant=TENANT,
        ticket_queue="soc",
        subject="[high] Suspicious sign-in (alert " + ALERT + ")",
        body="Alert " + ALERT + ": impossible travel for jdoe.",
        idempotency_basis=ALERT,
    )
    evidence = AttachEvidenceOperator(
        task_id="evidence",
        tenant=TENANT,
        ticket_id=TICKET_ID,
        filename="signin-log.txt",
        content="2026-12-07T05:00:00Z jdoe sign-in from 203.0.113.7 (risk high)",
        idempotency_basis=ALERT,
    )
    resolve = UpdateTicketOperator(task_id="resolve", tenant=TENANT, ticket_id=TICKET_ID, status="resolved")
    ticket >> evidence >> resolve


soc_ticket_mirror()
