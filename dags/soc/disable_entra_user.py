"""
### SOC: disable a compromised user in the customer's Entra ID

From an alert (user = object id or user principal name, tenant, severity, alert id, optionally the
Defender/Sentinel incident id): inspect the user in the tenant's own Entra tenant (read-only app:
sign-in state, sessions, MFA methods), open a SOC ticket, ask SOC on-call or the SOC lead to approve
(the SOC ladder), then block sign-in and revoke every session, optionally delete the user's MFA
methods (all but the password: the user re-registers after the investigation), put the evidence
on the ticket, and tell the incident (a comment, status `inProgress`; a rejected or failed run
says so too: include/workflows/incidents.py).

Same alert, same end state: one ticket and one evidence comment per alert id, one incident comment,
and a user who is already blocked is left as it is. A user principal name outside the tenant's
Entra domains, an unknown user or tenant, or a malformed alert is refused before anything changes.
Undo: `soc_enable_entra_user`, with its own approval.
"""

from airflow.sdk import Param

from include.operators.microsoft import DisableEntraUserOperator, InspectEntraUserOperator
from include.operators.ticketing import CommentTicketOperator, CreateTicketOperator
from include.policies.tenants import tenant_ids
from include.workflows import domain_workflow
from include.workflows.approval import approval_gate
from include.workflows.incidents import incident_param, incident_writeback

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
        "severity": Param("high", type="string", enum=["low", "medium", "high", "critical"]),
        "alert_id": Param(
            type="string",
            pattern="^[A-Za-z0-9][A-Za-z0-9._:-]{2,63}$",
            description="The alert's id in the SIEM/EDR: the same alert is handled once",
        ),
        "reset_mfa": Param(
            "no", type="string", enum=["no", "yes"], description="Also delete the MFA methods"
        ),
        "incident_id": incident_param(),
        "summary": Param("", type="string", maxLength=500, description="What the alert says"),
    },
)
def disable_entra_user() -> None:
    inspect = InspectEntraUserOperator(task_id="inspect_user", tenant=TENANT, user=USER)
    ticket = CreateTicketOperator(
        task_id="open_ticket",
        tenant=TENANT,
        ticket_queue="soc",
        subject="[{{ params.severity }}] Disable Entra user " + USER + " (alert " + ALERT + ")",
        body="Alert " + ALERT + ": {{ params.summary }}\n\n" + INSPECTED,
        fields={"Severity": "{{ params.severity }}"},
        idempotency_basis=ALERT,
    )
    gate = approval_gate(
        "entra-user-disable",
        subject="Disable Entra user " + USER + " of " + TENANT + " (MFA reset: {{ params.reset_mfa }})",
        body=INSPECTED,
        tenant=TENANT,
        ticket_id=TICKET_ID,
        artifact_params=("user", "tenant", "reset_mfa"),
    )
    disable = DisableEntraUserOperator(
        task_id="disable_user",
        tenant=TENANT,
        user=USER,
        reset_mfa="{{ params.reset_mfa }}",
    )
    evidence = CommentTicketOperator(
        task_id="evidence",
        tenant=TENANT,
        ticket_id=TICKET_ID,
        body="Entra user " + USER + " contained: sign-in "
        "{{ 'blocked now' if ti.xcom_pull(task_ids='disable_user')['changed'] else 'was already blocked' }}, "
        "sessions valid from {{ ti.xcom_pull(task_ids='disable_user')['sessions_valid_from'] }}, MFA methods "
        "deleted: {{ ti.xcom_pull(task_ids='disable_user')['mfa_methods_deleted'] | join(', ') or 'none' }}. "
        "Approved by "
        "{{ ti.xcom_pull(task_ids='approve_entra_user_disable', key='approval')['responded_by']['name'] }}.",
        idempotency_basis=ALERT,
    )
    inspect >> ticket >> gate >> disable >> evidence
    evidence >> incident_writeback(
        "entra-user-disable",
        done="Entra user " + USER + ": sign-in blocked, sessions revoked{{ ', MFA methods deleted' if "
        "(ti.xcom_pull(task_ids='disable_user') or {}).get('mfa_methods_deleted') }}.",
    )


disable_entra_user()
