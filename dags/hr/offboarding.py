"""
### HR: offboard a leaver

From the UI form (optionally naming the HR ticket): check that the directory account exists and
belongs to the employee id (read-only), open or use the HR ticket, then ask the HR lead AND a
security officer (two different people, in that order). After both approvals: disable the IAM
Identity Center user (every group membership removed, marked disabled, never deleted), lock the
directory account for good and take it out of every group, and deactivate the staff IAM user's
access keys and console password in every customer tenant. The evidence goes to the ticket and
the audit trail, with the steps no API can do (ending portal sessions; the session Deny policy).

Same leaver, same end state: run it again and nothing changes, one evidence comment.

When an approved step fails (or cannot run), the ticket says which (`change_failed`, once per run;
include/workflows/failures.py); the steps that did run stand. Clearing the failed step once the
cause is fixed runs it on the recorded approval, and the evidence follows.
"""

from airflow.sdk import Param

from include.operators.hr import HrTicketOperator
from include.operators.iam import RevokeTenantAccessKeysOperator
from include.operators.identity_center import DisableIdentityCenterUserOperator
from include.operators.ldap import DisableDirectoryAccountOperator, InspectDirectoryAccountOperator
from include.operators.ticketing import CommentTicketOperator
from include.policies.tenants import tenant_ids
from include.workflows import domain_workflow
from include.workflows.approval import approval_gate
from include.workflows.failures import change_failed_comment

STAFF = "secops"
STEP_1 = "ti.xcom_pull(task_ids='approve_identity_disable.step_1_hr_lead', key='approval')"
STEP_2 = "ti.xcom_pull(task_ids='approve_identity_disable.step_2_security_officer', key='approval')"
EMPLOYEE = "{{ params.employee_id }}"
UID = "{{ params.uid }}"
TICKET_ID = "{{ ti.xcom_pull(task_ids='hr_ticket')['id'] }}"
INSPECTED = "{{ ti.xcom_pull(task_ids='inspect_account')['markdown'] }}"
IDENTITY = "ti.xcom_pull(task_ids='disable_identity')"
DIRECTORY = "ti.xcom_pull(task_ids='disable_directory_account')"
KEYS = "ti.xcom_pull(task_ids='revoke_tenant_keys')"


@domain_workflow(
    domain="hr",
    doc_md=__doc__,
    params={
        "employee_id": Param(
            type="string", pattern="^E[0-9]{5}(?!\\n)$", description="HR employee id, e.g. E01234"
        ),
        "uid": Param(
            type="string", pattern="^[a-z][a-z0-9._-]{1,31}(?!\\n)$", description="Login name of the leaver"
        ),
        "last_day": Param(type="string", format="date", description="Last working day, YYYY-MM-DD"),
        "reason": Param(
            "", type="string", maxLength=500, description="Note for the ticket (no personal details)"
        ),
        "hr_ticket": Param(
            "",
            type="string",
            pattern="^([0-9]{1,9})?(?!\\n)$",
            description="The HR ticket that asked for this (number); empty: the run opens one",
        ),
    },
)
def offboarding() -> None:
    inspect = InspectDirectoryAccountOperator(task_id="inspect_account", user_name=UID, employee_id=EMPLOYEE)
    ticket = HrTicketOperator(
        task_id="hr_ticket",
        existing="{{ params.hr_ticket }}",
        subject="Offboarding " + UID + " (" + EMPLOYEE + "), last day {{ params.last_day }}",
        body="Offboarding of " + UID + " (" + EMPLOYEE + "), last day {{ params.last_day }}. "
        "{{ params.reason }}\n\n" + INSPECTED,
        idempotency_basis="offboarding-" + EMPLOYEE,
    )
    gate = approval_gate(
        "identity-disable",
        subject="Offboard " + UID + " (" + EMPLOYEE + ")",
        body=INSPECTED,
        tenant=STAFF,
        ticket_id=TICKET_ID,
        artifact_params=("uid",),
    )
    identity = DisableIdentityCenterUserOperator(task_id="disable_identity", user_name=UID)
    directory = DisableDirectoryAccountOperator(task_id="disable_directory_account", user_name=UID)
    keys = RevokeTenantAccessKeysOperator.partial(task_id="revoke_tenant_keys", user_name=UID).expand(
        tenant=tenant_ids()
    )
    evidence = CommentTicketOperator(
        task_id="evidence",
        tenant=STAFF,
        ticket_id=TICKET_ID,
        body="Offboarded " + UID + " (" + EMPLOYEE + "), approved by "
        "{{ " + STEP_1 + "['responded_by']['name'] }} and {{ " + STEP_2 + "['responded_by']['name'] }}.\n\n"
        "- IAM Identity Center: user {{ " + IDENTITY + "['user_id'] }} disabled; groups removed: "
        "{{ " + IDENTITY + "['groups_removed'] | join(', ') or 'none' }}.\n"
        "- Directory: {{ " + DIRECTORY + "['dn'] }} locked; groups removed: "
        "{{ " + DIRECTORY + "['groups_removed'] | join(', ') or 'none' }}.\n"
        "- Customer tenants: {% for k in " + KEYS + " %}{{ k['tenant'] }}: "
        "{% if k['found'] %}keys {{ k['deactivated_keys'] | join(', ') or 'none active' }} inactive, console "
        "{{ 'removed' if k['console_password_removed'] else 'none' }}{% else %}no staff user{% endif %}; "
        "{% endfor %}\n\n"
        "Still to do by hand (no API exists):\n\n{{ " + IDENTITY + "['sessions'] }}",
        idempotency_basis="offboarding-" + EMPLOYEE,
    )
    inspect >> ticket >> gate >> [identity, directory, keys] >> evidence
    failed = change_failed_comment(
        [identity, directory, keys],
        ticket_task="hr_ticket",
        basis="offboarding-" + EMPLOYEE + "-{{ run_id }}",
        tenant=STAFF,
        gates=gate,
    )
    [identity, directory, keys] >> failed


offboarding()
