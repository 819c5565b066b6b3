"""
### SOC: isolate a device in the customer's Defender for Endpoint

From an alert (machine = Defender machine id or the machine's name, tenant, severity, alert id,
isolation type, optionally the Defender/Sentinel incident id): inspect the machine in the tenant's
own Defender (read-only app; a name is resolved read-only, and an unknown or ambiguous name, or a
name in another tenant's domain, fails here, before anything is created), open a SOC ticket, ask
SOC on-call or the SOC lead to approve (the SOC ladder, escalating to the security officers), then
isolate it (`Full`, or `Selective`: Outlook, Teams and Skype keep working), wait for Defender's
machine action to complete without holding a worker (the triggerer polls it), and put the evidence
on the ticket.

Same alert, same end state: one ticket and one evidence comment per alert id, and a machine whose
newest isolation action is an isolation (pending or done, ours or a console user's) gets no second
action: the run waits on that one. Undo: `soc_release_device`, with its own approval.
The Microsoft incident the alert belongs to (`incident_id`), if any, gets one comment per
outcome and its status (include/workflows/incidents.py), also when the run is rejected or fails.
"""

from airflow.sdk import Param

from include.operators.microsoft import InspectDeviceOperator, IsolateDeviceOperator
from include.workflows import domain_workflow
from include.workflows.soc import ALERT, MACHINE, TENANT, TICKET_ID, machine_param, soc_action, soc_params


@domain_workflow(
    domain="soc",
    doc_md=__doc__,
    params=soc_params(
        {
            "machine": machine_param(),
        },
        extra={
            "isolation_type": Param(
                "Full",
                type="string",
                enum=["Full", "Selective"],
                description="Selective keeps Outlook, Teams and Skype working",
            ),
        },
    ),
)
def isolate_device() -> None:
    soc_action(
        "device-isolate",
        inspect=InspectDeviceOperator(task_id="inspect_device", tenant=TENANT, machine=MACHINE),
        ticket_subject="[{{ params.severity }}] Isolate device " + MACHINE + " (alert " + ALERT + ")",
        gate_subject="Isolate device " + MACHINE + " of " + TENANT + " ({{ params.isolation_type }})",
        artifact_params=("machine", "tenant", "isolation_type"),
        change=lambda: IsolateDeviceOperator(
            task_id="isolate_device",
            tenant=TENANT,
            machine=MACHINE,
            machine_id="{{ ti.xcom_pull(task_ids='inspect_device')['id'] }}",
            isolation_type="{{ params.isolation_type }}",
            comment="Orchestrator: isolated for alert " + ALERT + " (ticket " + TICKET_ID + ")",
        ),
        evidence="{% set r = ti.xcom_pull(task_ids='isolate_device') %}"
        "Device {{ r['computer_dns_name'] }} (Defender id {{ r['machine_id'] }}) "
        "isolated ({{ r['scope'] }}): "
        "machine action {{ r['action_id'] }} {{ r['status'] }} at {{ r['updated_at'] }}, "
        "{{ 'started by this run' if r['created'] else 'requested earlier by ' ~ r['requestor'] }}.",
        done="Machine " + MACHINE + " isolated ({{ params.isolation_type }}).",
    )


isolate_device()
