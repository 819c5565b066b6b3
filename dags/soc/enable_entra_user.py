"""
### SOC: allow a contained Entra user to sign in again

After the investigation (user = object id or user principal name, tenant, the containment's ticket
or alert id): inspect the user (read-only app), open a SOC ticket, ask SOC on-call or the SOC lead
to approve (the SOC ladder; an approval of its own, never the disabling's), then allow sign-in and
put the evidence on the ticket. MFA methods deleted by the containment are not restored: the user
registers new ones.

A user already allowed to sign in is left as it is (one ticket and one evidence comment per alert
id). A user principal name outside the tenant's Entra domains or an unknown user is refused before
anything changes. With an `incident_id` the incident gets a comment on the outcome (its status is
left as it is): include/workflows/incidents.py.
"""

from airflow.sdk import Param

from include.operators.microsoft import EnableEntraUserOperator, InspectEntraUserOperator
from include.operators.ticketing import CommentTicketOperator, CreateTicketOperator
from include.policies.tenants import tenant_ids
from include.workflows import domain_workflow
from include.workflows.approval import approval_gate
from include.workflows.incidents import incident_writeback

TENANT = "{{ params.tenant }}"
USER = "{{ params.user }}"
ALERT = "{{ params.alert_id }}"
TICKET_ID = "{{ ti.xcom_pull(task_ids='open_ticket')['id'] }}"
INSPECTED = "{{ ti.xcom_pull(task_ids='inspect_user')['markdown'] }}"
USER_PATTERN = (
    "^([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
    "|[A-Za-z0-9._%+'-]{1,64}@[A-Za-z0-9.-]{1,190})$"
)


@domain_workflow(
    domain="soc",
    doc_md=__doc__,
    params={
        "user": Param(
            type="string", pattern=USER_PATTERN, description="Entra object id or user principal name"
        ),
        "tenant": Param(type="string", enum=tenant_ids(), description="Customer tenant"),
        "alert_id": Param(
            type="string",
            pattern="^[A-Za-z0-9][A-Za-z0-9._:-]{2,63}$",
            description="The containment's alert id: the release is handled once per alert",
        ),
        "reason": Param("", type="string", maxLength=500, description="Why the user may sign in again"),
    },
)
def enable_entra_user() -> None:
    inspect = InspectEntraUserOperator(task_id="inspect_user", tenant=TENANT, user=USER)
    ticket = CreateTicketOperator(
        task_id="open_ticket",
        tenant=TENANT,
        ticket_queue="soc",
        subject="Enable Entra user " + USER + " again (alert " + ALERT + ")",
        body="Release after alert " + ALERT + ": {{ params.reason }}\n\n" + INSPECTED,
        idempotency_basis="enable-" + ALERT,
    )
    gate = approval_gate(
        "entra-user-enable",
        subject="Enable Entra user " + USER + " of " + TENANT,
        body=INSPECTED,
        tenant=TENANT,
        ticket_id=TICKET_ID,
        artifact_params=("user", "tenant"),
    )
    enable = EnableEntraUserOperator(task_id="enable_user", tenant=TENANT, user=USER)
    evidence = CommentTicketOperator(
        task_id="evidence",
        tenant=TENANT,
        ticket_id=TICKET_ID,
        body="Entra user " + USER + " may sign in again "
        "({{ 'changed now' if ti.xcom_pull(task_ids='enable_user')['changed'] else 'was already allowed' }})"
        ". "
        "Approved by "
        "{{ ti.xcom_pull(task_ids='approve_entra_user_enable', key='approval')['responded_by']['name'] }}.",
        idempotency_basis="enable-" + ALERT,
    )
    inspect >> ticket >> gate >> enable >> evidence
    evidence >> incident_writeback(
        "entra-user-enable", done="Entra user " + USER + " may sign in again.", release=True
    )


enable_entra_user()
