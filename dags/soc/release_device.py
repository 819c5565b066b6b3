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

from airflow.sdk import Param

from include.operators.microsoft import InspectDeviceOperator, ReleaseDeviceOperator
from include.operators.ticketing import CommentTicketOperator, CreateTicketOperator
from include.policies.tenants import tenant_ids
from include.workflows import domain_workflow
from include.workflows.approval import approval_gate
from include.workflows.incidents import incident_writeback

TENANT = "{{ params.tenant }}"
MACHINE = "{{ params.machine }}"
ALERT = "{{ params.alert_id }}"
TICKET_ID = "{{ ti.xcom_pull(task_ids='open_ticket')['id'] }}"
INSPECTED = "{{ ti.xcom_pull(task_ids='inspect_device')['markdown'] }}"
# A Defender machine id (40 hex digits) or a machine name (DNS or host name).
MACHINE_PATTERN = "^([0-9a-fA-F]{40}|[A-Za-z0-9][A-Za-z0-9-]{0,62}(\\.[A-Za-z0-9][A-Za-z0-9-]{0,62}){0,8})$"


@domain_workflow(
    domain="soc",
    doc_md=__doc__,
    params={
        "machine": Param(
            type="string",
            pattern=MACHINE_PATTERN,
            maxLength=253,
            description="Defender machine id, or the machine's DNS or host name",
        ),
        "tenant": Param(type="string", enum=tenant_ids(), description="Customer tenant"),
        "alert_id": Param(
            type="string",
            pattern="^[A-Za-z0-9][A-Za-z0-9._:-]{2,63}$",
            description="The containment's alert id: the release is handled once per alert",
        ),
        "reason": Param("", type="string", maxLength=500, description="Why the device may be released"),
    },
)
def release_device() -> None:
    inspect = InspectDeviceOperator(task_id="inspect_device", tenant=TENANT, machine=MACHINE)
    ticket = CreateTicketOperator(
        task_id="open_ticket",
        tenant=TENANT,
        ticket_queue="soc",
        subject="Release device " + MACHINE + " from isolation (alert " + ALERT + ")",
        body="Release after alert " + ALERT + ": {{ params.reason }}\n\n" + INSPECTED,
        idempotency_basis="release-" + ALERT,
    )
    gate = approval_gate(
        "device-release",
        subject="Release device " + MACHINE + " of " + TENANT + " from isolation",
        body=INSPECTED,
        tenant=TENANT,
        ticket_id=TICKET_ID,
        artifact_params=("machine", "tenant"),
    )
    release = ReleaseDeviceOperator(
        task_id="release_device",
        tenant=TENANT,
        machine=MACHINE,
        machine_id="{{ ti.xcom_pull(task_ids='inspect_device')['id'] }}",
        comment="Orchestrator: released after alert " + ALERT + " (ticket " + TICKET_ID + ")",
    )
    evidence = CommentTicketOperator(
        task_id="evidence",
        tenant=TENANT,
        ticket_id=TICKET_ID,
        body="{% set r = ti.xcom_pull(task_ids='release_device') %}"
        "Device {{ r['computer_dns_name'] }} (Defender id {{ r['machine_id'] }}) "
        "{% if r['status'] == 'not-isolated' %}was not isolated: left as it is{% else %}"
        "released: machine action {{ r['action_id'] }} {{ r['status'] }} at {{ r['updated_at'] }}, "
        "{{ 'started by this run' if r['created'] else 'requested earlier by ' ~ r['requestor'] }}"
        "{% endif %}. Approved by "
        "{{ ti.xcom_pull(task_ids='approve_device_release', key='approval')['responded_by']['name'] }}.",
        idempotency_basis="release-" + ALERT,
    )
    inspect >> ticket >> gate >> release >> evidence
    evidence >> incident_writeback("device-release", done="Machine " + MACHINE + " released.", release=True)


release_device()
