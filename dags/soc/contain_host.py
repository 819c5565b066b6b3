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
from include.workflows import domain_workflow
from include.workflows.soc import ALERT, TENANT, soc_action, soc_params

HOST = "{{ params.host }}"


@domain_workflow(
    domain="soc",
    doc_md=__doc__,
    params=soc_params(
        {
            "host": Param(
                type="string",
                pattern="^i-[0-9a-f]{8}([0-9a-f]{9})?(?!\\n)$",
                description="EC2 instance id of the compromised host (i-...)",
            ),
        },
        alert="The alert's id in the SIEM/EDR: the same alert is contained once",
    ),
)
def contain_host() -> None:
    soc_action(
        "host-isolate",
        inspect=InspectHostOperator(task_id="inspect_host", tenant=TENANT, host=HOST),
        ticket_subject="[{{ params.severity }}] Contain " + HOST + " (alert " + ALERT + ")",
        gate_subject="Isolate " + HOST + " of " + TENANT,
        artifact_params=("host", "tenant"),
        change=lambda: IsolateHostOperator(task_id="isolate_host", tenant=TENANT, host=HOST),
        evidence="Host " + HOST + " is in quarantine group "
        "{{ ti.xcom_pull(task_ids='isolate_host')['quarantine_group'] }}; previous groups "
        "{{ ti.xcom_pull(task_ids='isolate_host')['previous_groups'] | join(', ') }} are recorded on "
        "the instance (tag orchestrator:previous-groups) for the release.",
        done="Host " + HOST + " is in the quarantine security group.",
    )


contain_host()
