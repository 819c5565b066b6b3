"""
### Approval gates (end-to-end test DAGs)

SOC containment with one approval (answered, refused, or left to time out on a short ladder with
a ticket to comment on) and HR offboarding with two approvals by two different people. The
"privileged" steps only record what they would do and who approved it, so a test can tell
whether they ran.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import BaseOperator, Param

from include.operators.ticketing import CreateTicketOperator
from include.workflows import domain_workflow
from include.workflows.approval import approval_gate

PLAN = (
    "Isolate host **{{ params.host }}** of tenant **{{ params.tenant }}** from the network "
    "(EDR network containment; the host keeps its EDR channel)."
)
SHORT_LADDER = {
    "remind_after": timedelta(seconds=8),
    "escalate_after": timedelta(seconds=16),
    "timeout": timedelta(seconds=24),
}


class RecordPrivilegedStep(BaseOperator):
    """Stands in for the privileged side effect: returns what it did and who approved it."""

    template_fields = ("target",)

    def __init__(self, *, capability: str, target: str, gates: list[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.capability = capability
        self.target = target
        self.gates = gates

    def execute(self, context: Any) -> dict[str, Any]:
        approvals = [context["ti"].xcom_pull(task_ids=gate, key="approval") for gate in self.gates]
        return {
            "capability": self.capability,
            "target": self.target,
            "approved_by": [a["responded_by"]["name"] for a in approvals],
            "comments": [a["comment"] for a in approvals],
        }


SOC_PARAMS = {
    "host": Param("ws-0042", type="string", minLength=1),
    "tenant": Param("acme", type="string", enum=["acme", "globex"]),
}


@domain_workflow(domain="soc", dag_id="e2e_soc_containment", doc_md=__doc__, params=SOC_PARAMS)
def soc_containment() -> None:
    gate = approval_gate(
        "host-isolate", subject="Isolate {{ params.host }}", body=PLAN, tenant="{{ params.tenant }}"
    )
    gate >> RecordPrivilegedStep(
        task_id="isolate_host", capability="host-isolate", target="{{ params.host }}", gates=[gate.task_id]
    )


@domain_workflow(domain="soc", dag_id="e2e_soc_containment_unanswered", doc_md=__doc__, params=SOC_PARAMS)
def soc_containment_unanswered() -> None:
    ticket = CreateTicketOperator(
        task_id="open_ticket",
        tenant="{{ params.tenant }}",
        ticket_queue="soc",
        subject="Containment of {{ params.host }}",
        body="Opened by run {{ run_id }}",
    )
    gate = approval_gate(
        "host-isolate",
        subject="Isolate {{ params.host }}",
        body=PLAN,
        tenant="{{ params.tenant }}",
        ticket_id="{{ ti.xcom_pull(task_ids='open_ticket')['id'] }}",
        ladder=SHORT_LADDER,
    )
    (
        ticket
        >> gate
        >> RecordPrivilegedStep(
            task_id="isolate_host",
            capability="host-isolate",
            target="{{ params.host }}",
            gates=[gate.task_id],
        )
    )


@domain_workflow(
    domain="hr",
    dag_id="e2e_hr_offboarding",
    doc_md=__doc__,
    params={"employee": Param("jdoe", type="string", minLength=1)},
)
def hr_offboarding() -> None:
    gate = approval_gate(
        "identity-disable",
        subject="Disable the accounts of {{ params.employee }}",
        body="Disable (not delete) the identity and directory account of **{{ params.employee }}**.",
    )
    gate >> RecordPrivilegedStep(
        task_id="disable_identity",
        capability="identity-disable",
        target="{{ params.employee }}",
        gates=[t for t in gate.children],
    )


soc_containment()
soc_containment_unanswered()
hr_offboarding()
