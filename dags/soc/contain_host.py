"""
### SOC: contain a host

From an alert (host = EC2 instance id, tenant, severity, alert id): inspect the host in the
tenant's AWS account (read-only), open a SOC ticket, ask SOC on-call or the SOC lead to approve
(reminder after 5 min, escalation to on-call and the lead after 10, rejected after 15: the
domain policy), then replace the instance's security groups with the VPC's quarantine group,
recording the previous groups on the instance for the release, and put the evidence on the ticket.

Same alert, same end state: the ticket and its evidence comment are keyed by the alert id, and an
isolated host is left as it is (its recorded previous groups are kept). An unknown host or tenant,
or a malformed alert, is refused before anything is created.

With an `incident_id` the Defender/Sentinel incident gets the run's outcome (a comment, and
`inProgress` when done), also when the run is rejected or fails: include/workflows/incidents.py.
"""

from airflow.sdk import Param

from include.operators.ec2 import InspectHostOperator, IsolateHostOperator
from include.operators.ticketing import CommentTicketOperator, CreateTicketOperator
from include.policies.tenants import tenant_ids
from include.workflows import domain_workflow
from include.workflows.approval import approval_gate
from include.workflows.incidents import incident_writeback

TENANT = "{{ params.tenant }}"
HOST = "{{ params.host }}"
ALERT = "{{ params.alert_id }}"
TICKET_ID = "{{ ti.xcom_pull(task_ids='open_ticket')['id'] }}"


@domain_workflow(
    domain="soc",
    doc_md=__doc__,
    params={
        "host": Param(
            type="string",
            pattern="^i-[0-9a-f]{8}([0-9a-f]{9})?$",
            description="EC2 instance id of the compromised host (i-...)",
        ),
        "tenant": Param(type="string", enum=tenant_ids(), description="Customer tenant"),
        "severity": Param("high", type="string", enum=["low", "medium", "high", "critical"]),
        "alert_id": Param(
            type="string",
            pattern="^[A-Za-z0-9][A-Za-z0-9._:-]{2,63}$",
            description="The alert's id in the SIEM/EDR: the same alert is contained once",
        ),
        "summary": Param("", type="string", maxLength=500, description="What the alert says"),
    },
)
def contain_host() -> None:
    inspect = InspectHostOperator(task_id="inspect_host", tenant=TENANT, host=HOST)
    ticket = CreateTicketOperator(
        task_id="open_ticket",
        tenant=TENANT,
        ticket_queue="soc",
        subject="[{{ params.severity }}] Contain " + HOST + " (alert " + ALERT + ")",
        body="Alert " + ALERT + ": {{ params.summary }}\n\n"
        "{{ ti.xcom_pull(task_ids='inspect_host')['markdown'] }}",
        fields={"Severity": "{{ params.severity }}"},
        idempotency_basis=ALERT,
    )
    gate = approval_gate(
        "host-isolate",
        subject="Isolate " + HOST + " of " + TENANT,
        body="{{ ti.xcom_pull(task_ids='inspect_host')['markdown'] }}",
        tenant=TENANT,
        ticket_id=TICKET_ID,
        artifact_params=("host", "tenant"),
    )
    isolate = IsolateHostOperator(task_id="isolate_host", tenant=TENANT, host=HOST)
    evidence = CommentTicketOperator(
        task_id="evidence",
        tenant=TENANT,
        ticket_id=TICKET_ID,
        body="Host " + HOST + " is in quarantine group "
        "{{ ti.xcom_pull(task_ids='isolate_host')['quarantine_group'] }}; previous groups "
        "{{ ti.xcom_pull(task_ids='isolate_host')['previous_groups'] | join(', ') }} are recorded on "
        "the instance (tag orchestrator:previous-groups) for the release. Approved by "
        "{{ ti.xcom_pull(task_ids='approve_host_isolate', key='approval')['responded_by']['name'] }}.",
        idempotency_basis=ALERT,
    )
    inspect >> ticket >> gate >> isolate >> evidence
    evidence >> incident_writeback(
        "host-isolate", done="Host " + HOST + " is in the quarantine security group."
    )


contain_host()
