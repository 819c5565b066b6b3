"""
### SOC: disable a compromised account

From an alert (account = IAM user name of a staff identity, tenant, severity, alert id): inspect
the account in the tenant's AWS account (read-only: its active access keys and console access),
open a SOC ticket, ask SOC on-call or the SOC lead to approve (the SOC ladder: reminder 5 min,
escalation 10 min, rejected at 15), then deactivate every access key and remove the console
password, keeping the user and its keys (inactive) for the investigation, and put the evidence on
the ticket.

Same alert, same end state: one ticket and one evidence comment per alert id, and an account that
is already contained is left as it is. A service account (outside /staff/), an unknown account or
tenant, or a malformed alert is refused before anything is created.

With an `incident_id` the Defender/Sentinel incident gets the run's outcome (a comment, and
`inProgress` when done), also when the run is rejected or fails: include/workflows/incidents.py.
"""

from airflow.sdk import Param

from include.operators.iam import DisableAccountOperator, InspectAccountOperator
from include.operators.ticketing import CommentTicketOperator, CreateTicketOperator
from include.policies.tenants import tenant_ids
from include.workflows import domain_workflow
from include.workflows.approval import approval_gate
from include.workflows.incidents import incident_writeback

TENANT = "{{ params.tenant }}"
ACCOUNT = "{{ params.account }}"
ALERT = "{{ params.alert_id }}"
TICKET_ID = "{{ ti.xcom_pull(task_ids='open_ticket')['id'] }}"
INSPECTED = "{{ ti.xcom_pull(task_ids='inspect_account')['markdown'] }}"


@domain_workflow(
    domain="soc",
    doc_md=__doc__,
    params={
        "account": Param(
            type="string",
            pattern="^[A-Za-z0-9+=,.@_-]{1,64}$",
            description="IAM user name of the compromised staff account",
        ),
        "tenant": Param(type="string", enum=tenant_ids(), description="Customer tenant"),
        "severity": Param("high", type="string", enum=["low", "medium", "high", "critical"]),
        "alert_id": Param(
            type="string",
            pattern="^[A-Za-z0-9][A-Za-z0-9._:-]{2,63}$",
            description="The alert's id in the SIEM/EDR: the same alert is handled once",
        ),
        "summary": Param("", type="string", maxLength=500, description="What the alert says"),
    },
)
def disable_account() -> None:
    inspect = InspectAccountOperator(task_id="inspect_account", tenant=TENANT, account=ACCOUNT)
    ticket = CreateTicketOperator(
        task_id="open_ticket",
        tenant=TENANT,
        ticket_queue="soc",
        subject="[{{ params.severity }}] Disable account " + ACCOUNT + " (alert " + ALERT + ")",
        body="Alert " + ALERT + ": {{ params.summary }}\n\n" + INSPECTED,
        fields={"Severity": "{{ params.severity }}"},
        idempotency_basis=ALERT,
    )
    gate = approval_gate(
        "identity-disable",
        subject="Disable account " + ACCOUNT + " of " + TENANT,
        body=INSPECTED,
        tenant=TENANT,
        ticket_id=TICKET_ID,
        artifact_params=("account", "tenant"),
    )
    disable = DisableAccountOperator(task_id="disable_account", tenant=TENANT, account=ACCOUNT)
    evidence = CommentTicketOperator(
        task_id="evidence",
        tenant=TENANT,
        ticket_id=TICKET_ID,
        body="Account " + ACCOUNT + " contained: access keys "
        "{{ ti.xcom_pull(task_ids='disable_account')['inactive_keys'] | join(', ') or 'none' }} inactive, "
        "console access {{ 'removed' if ti.xcom_pull(task_ids='disable_account')['console_password_removed']"
        " else 'none' }}. The user is kept for the investigation. Approved by "
        "{{ ti.xcom_pull(task_ids='approve_identity_disable', key='approval')['responded_by']['name'] }}.",
        idempotency_basis=ALERT,
    )
    inspect >> ticket >> gate >> disable >> evidence
    evidence >> incident_writeback(
        "identity-disable", done="IAM user " + ACCOUNT + ": access keys inactive, console access removed."
    )


disable_account()
