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
from include.workflows import domain_workflow
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
        severity=False,
        reason="Why the user may sign in again",
    ),
)
def enable_entra_user() -> None:
    soc_action(
        "entra-user-enable",
        undo="enable",
        inspect=InspectEntraUserOperator(task_id="inspect_user", tenant=TENANT, user=USER),
        ticket_subject="Enable Entra user " + USER + " again (alert " + ALERT + ")",
        gate_subject="Enable Entra user " + USER + " of " + TENANT,
        artifact_params=("user", "tenant"),
        change=lambda: EnableEntraUserOperator(task_id="enable_user", tenant=TENANT, user=USER),
        evidence="Entra user " + USER + " may sign in again "
        "({{ 'changed now' if ti.xcom_pull(task_ids='enable_user')['changed'] else 'was already allowed' }})"
        ".",
        done="Entra user " + USER + " may sign in again.",
    )


enable_entra_user()
