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
from include.workflows import domain_workflow
from include.workflows.incidents import incident_param
from include.workflows.soc import ALERT, TENANT, soc_action, soc_params

USER = "{{ params.user }}"
USER_PATTERN = (
    "^([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
    "|[A-Za-z0-9._%+'-]{1,64}@[A-Za-z0-9.-]{1,190})(?!\\n)$"
)


@domain_workflow(
    domain="soc",
    doc_md=__doc__,
    params=soc_params(
        {
            "user": Param(
                type="string", pattern=USER_PATTERN, description="Entra object id or user principal name"
            ),
        },
        extra={
            "reset_mfa": Param(
                "no", type="string", enum=["no", "yes"], description="Also delete the MFA methods"
            ),
            "incident_id": incident_param(),
        },
    ),
)
def disable_entra_user() -> None:
    soc_action(
        "entra-user-disable",
        inspect=InspectEntraUserOperator(task_id="inspect_user", tenant=TENANT, user=USER),
        ticket_subject="[{{ params.severity }}] Disable Entra user " + USER + " (alert " + ALERT + ")",
        gate_subject="Disable Entra user " + USER + " of " + TENANT + " (MFA reset: {{ params.reset_mfa }})",
        artifact_params=("user", "tenant", "reset_mfa"),
        change=lambda: DisableEntraUserOperator(
            task_id="disable_user",
            tenant=TENANT,
            user=USER,
            reset_mfa="{{ params.reset_mfa }}",
        ),
        evidence="Entra user " + USER + " contained: sign-in "
        "{{ 'blocked now' if ti.xcom_pull(task_ids='disable_user')['changed'] else 'was already blocked' }}, "
        "sessions valid from {{ ti.xcom_pull(task_ids='disable_user')['sessions_valid_from'] }}, MFA methods "
        "deleted: {{ ti.xcom_pull(task_ids='disable_user')['mfa_methods_deleted'] | join(', ') or 'none' }}.",
        done="Entra user " + USER + ": sign-in blocked, sessions revoked{{ ', MFA methods deleted' if "
        "(ti.xcom_pull(task_ids='disable_user') or {}).get('mfa_methods_deleted') }}.",
    )


disable_entra_user()
