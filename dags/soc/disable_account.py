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
from include.workflows import domain_workflow
from include.workflows.soc import ALERT, TENANT, soc_action, soc_params

ACCOUNT = "{{ params.account }}"


@domain_workflow(
    domain="soc",
    doc_md=__doc__,
    params=soc_params(
        {
            "account": Param(
                type="string",
                pattern="^[A-Za-z0-9+=,.@_-]{1,64}(?!\\n)$",
                description="IAM user name of the compromised staff account",
            ),
        }
    ),
)
def disable_account() -> None:
    soc_action(
        "identity-disable",
        inspect=InspectAccountOperator(task_id="inspect_account", tenant=TENANT, account=ACCOUNT),
        ticket_subject="[{{ params.severity }}] Disable account " + ACCOUNT + " (alert " + ALERT + ")",
        gate_subject="Disable account " + ACCOUNT + " of " + TENANT,
        artifact_params=("account", "tenant"),
        change=lambda: DisableAccountOperator(task_id="disable_account", tenant=TENANT, account=ACCOUNT),
        evidence="Account " + ACCOUNT + " contained: access keys "
        "{{ ti.xcom_pull(task_ids='disable_account')['inactive_keys'] | join(', ') or 'none' }} inactive, "
        "console access {{ 'removed' if ti.xcom_pull(task_ids='disable_account')['console_password_removed']"
        " else 'none' }}. The user is kept for the investigation.",
        done="IAM user " + ACCOUNT + ": access keys inactive, console access removed.",
    )


disable_account()
