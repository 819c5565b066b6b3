"""
### Audit story (end-to-end test DAG)

SOC containment from a ticket: open the ticket, ask for approval (with the ticket), "isolate" the
host (recorded only), and put the evidence on the ticket. Every step writes the audit trail
through the platform (listener, gate, ticket operators); the test traces it back from the ticket.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseOperator, Param

from include.operators.ticketing import CommentTicketOperator, CreateTicketOperator
from include.workflows import domain_workflow
from include.workflows.approval import approval_gate


class RecordIsolation(BaseOperator):
    """Stands in for the privileged step: returns who approved it (not imported from the approval
    DAGs' file, which would define their DAGs a second time here)."""

    template_fields = ("target",)

    def __init__(self, *, capability: str, target: str, gate: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.capability = capability
        self.target = target
        self.gate = gate

    def execute(self, context: Any) -> dict[str, Any]:
        approval = context["ti"].xcom_pull(task_ids=self.gate, key="approval")
        return {"target": self.target, "approved_by": [approval["responded_by"]["name"]]}


TICKET_ID = "{{ ti.xcom_pull(task_ids='open_ticket')['id'] }}"


@domain_workflow(
    domain="soc",
    dag_id="e2e_audit_story",
    doc_md=__doc__,
    params={
        "host": Param("ws-0099", type="string", minLength=1),
        "tenant": Param("acme", type="string", enum=["acme", "globex"]),
    },
)
def audit_story() -> None:
    ticket = CreateTicketOperator(
        task_id="open_ticket",
        tenant="{{ params.tenant }}",
        ticket_queue="soc",
        subject="Contain {{ params.host }}",
        body="Opened by run {{ run_id }}",
    )
    gate = approval_gate(
        "host-isolate",
        subject="Isolate {{ params.host }}",
        body="Isolate host **{{ params.host }}** of tenant **{{ params.tenant }}**.",
        tenant="{{ params.tenant }}",
        ticket_id=TICKET_ID,
    )
    isolate = RecordIsolation(
        task_id="isolate_host", capability="host-isolate", target="{{ params.host }}", gate=gate.task_id
    )
    evidence = CommentTicketOperator(
        task_id="evidence",
        tenant="{{ params.tenant }}",
        ticket_id=TICKET_ID,
        body="Host {{ params.host }} isolated; approved by "
        "{{ ti.xcom_pull(task_ids='isolate_host')['approved_by'] | join(', ') }}.",
    )
    ticket >> gate >> isolate >> evidence


audit_story()
