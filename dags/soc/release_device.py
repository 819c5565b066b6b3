"""
### SOC: release an isolated device in the customer's Defender for Endpoint

After the investigation (machine = Defender machine id or the machine's name, tenant, the
containment's alert id): inspect the machine (read-only app), open a SOC ticket, ask SOC on-call
or the SOC lead to approve (the SOC ladder; an approval of its own, `device-release`, never the
isolation's), then release it, wait for Defender's machine action to complete without holding a
worker, and put the evidence on the ticket.

A machine that is not isolated (never isolated, or its newest isolation action is a release) is
left as it is: one ticket and one evidence comment per alert id, one release action. An unknown or
ambiguous machine name, or one in another tenant's domain, is refused before anything is created.
The Microsoft incident the alert belongs to (`incident_id`), if any, gets a "released" comment
(include/workflows/incidents.py); its status is left to the analyst.
"""

from include.operators.microsoft import InspectDeviceOperator, ReleaseDeviceOperator
from include.workflows import domain_workflow
from include.workflows.soc import ALERT, MACHINE, TENANT, TICKET_ID, machine_param, soc_action, soc_params


@domain_workflow(
    domain="soc",
    doc_md=__doc__,
    params=soc_params(
        {
            "machine": machine_param(),
        },
        severity=False,
        reason="Why the device may be released",
    ),
)
def release_device() -> None:
    soc_action(
        "device-release",
        undo="release",
        inspect=InspectDeviceOperator(task_id="inspect_device", tenant=TENANT, machine=MACHINE),
        ticket_subject="Release device " + MACHINE + " from isolation (alert " + ALERT + ")",
        gate_subject="Release device " + MACHINE + " of " + TENANT + " from isolation",
        artifact_params=("machine", "tenant"),
        change=lambda: ReleaseDeviceOperator(
            task_id="release_device",
            tenant=TENANT,
            machine=MACHINE,
            machine_id="{{ ti.xcom_pull(task_ids='inspect_device')['id'] }}",
            comment="Orchestrator: released after alert " + ALERT + " (ticket " + TICKET_ID + ")",
        ),
        evidence="{% set r = ti.xcom_pull(task_ids='release_device') %}"
        "Device {{ r['computer_dns_name'] }} (Defender id {{ r['machine_id'] }}) "
        "{% if r['status'] == 'not-isolated' %}was not isolated: left as it is{% else %}"
        "released: machine action {{ r['action_id'] }} {{ r['status'] }} at {{ r['updated_at'] }}, "
        "{{ 'started by this run' if r['created'] else 'requested earlier by ' ~ r['requestor'] }}"
        "{% endif %}.",
        done="Machine " + MACHINE + " released.",
    )


release_device()
