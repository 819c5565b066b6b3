"""
### HR: onboard a new employee

From the UI form (optionally naming the HR ticket that asked for it): validate the employee record
with Great Expectations (`include/validation/employee.py`); a record that fails stops the run
before any account exists, and the result goes to the HR ticket. Then the HR lead approves; the
run creates the IAM Identity Center user with the groups of the employee's role
(`include/policies/hr_roles.yaml`) and the directory account (LDAP, no password: the employee sets
it through the reset flow), opens the hardware/access ticket and emails the manager.

Same employee, same end state: one HR ticket, one access ticket, one identity, one directory
account; the manager is emailed only by the run that created the accounts. A disabled (offboarded)
identity is never re-enabled here: a rehire is a decision for HR and security.

When an approved account step fails (or cannot run), the HR ticket says which (`change_failed`, once
per run; include/workflows/failures.py). Clearing it once the cause is fixed runs it on the recorded
approval, and the access ticket, the manager's mail and the report follow.
"""

from airflow.sdk import Param

from include.operators.hr import ONBOARDING_ARTIFACT, HrTicketOperator, ValidateEmployeeOperator
from include.operators.identity_center import EnsureIdentityCenterUserOperator
from include.operators.ldap import EnsureDirectoryAccountOperator
from include.operators.mail import NotifyManagerOperator
from include.operators.ticketing import CommentTicketOperator, CreateTicketOperator
from include.policies.hr_roles import known_roles
from include.policies.tenants import tenant_ids
from include.validation.employee import FIELDS
from include.workflows import domain_workflow
from include.workflows.approval import approval_gate
from include.workflows.failures import change_failed_comment

STAFF = "secops"
EMPLOYEE = "{{ params.employee_id }}"
UID = "{{ params.uid }}"
NAME = "{{ params.given_name }} {{ params.surname }}"
TICKET_ID = "{{ ti.xcom_pull(task_ids='hr_ticket')['id'] }}"
CREATED = (
    "{{ ti.xcom_pull(task_ids='create_identity')['created'] "
    "or ti.xcom_pull(task_ids='create_directory_account')['created'] }}"
)
# Who approved: the HR lead, and the security officer when the role is privileged.
APPROVERS = (
    "ti.xcom_pull(task_ids=['approve_identity_admin.step_1', 'approve_identity_admin.step_2'], "
    "key='approval') | selectattr('outcome', 'ne', 'not_required') "
    "| map(attribute='responded_by') | map(attribute='name')"
)
TEXT = {"type": "string", "minLength": 1, "maxLength": 64}


@domain_workflow(
    domain="hr",
    doc_md=__doc__,
    params={
        "employee_id": Param(
            type="string", pattern="^E[0-9]{5}(?!\\n)$", description="HR employee id, e.g. E01234"
        ),
        "given_name": Param(**TEXT, description="Given name"),
        "surname": Param(**TEXT, description="Surname"),
        "email": Param(type="string", format="idn-email", description="Work email (@secops.example)"),
        "uid": Param(
            type="string",
            pattern="^[a-z][a-z0-9._-]{1,31}(?!\\n)$",
            description="Login name, e.g. ada.lovelace",
        ),
        "role": Param(type="string", enum=known_roles(), description="Job role (decides the groups)"),
        "manager_email": Param(type="string", format="idn-email", description="Manager (gets the email)"),
        "start_date": Param(type="string", format="date", description="First day, YYYY-MM-DD"),
        "tenant": Param(
            "", type="string", enum=["", *tenant_ids()], description="Customer the employee works for, if one"
        ),
        "hr_ticket": Param(
            "",
            type="string",
            pattern="^([0-9]{1,9})?(?!\\n)$",
            description="The HR ticket that asked for this (number); empty: the run opens one",
        ),
    },
)
def onboarding() -> None:
    validate = ValidateEmployeeOperator(
        task_id="validate_record",
        record={field: "{{ params." + field + " }}" for field in FIELDS},
        ticket_id="{{ params.hr_ticket }}",
    )
    ticket = HrTicketOperator(
        task_id="hr_ticket",
        existing="{{ params.hr_ticket }}",
        subject="Onboarding " + NAME + " (" + EMPLOYEE + "), starts {{ params.start_date }}",
        body="Onboarding of " + NAME + ", " + EMPLOYEE + ", role {{ params.role }}, login " + UID + ", "
        "manager {{ params.manager_email }}, first day {{ params.start_date }}.",
        idempotency_basis="onboarding-" + EMPLOYEE,
    )
    gate = approval_gate(
        "identity-admin",
        subject="Onboard " + NAME + " (" + EMPLOYEE + ") as {{ params.role }}",
        body="Create the IAM Identity Center user `" + UID + "` in groups "
        "{{ ti.xcom_pull(task_ids='validate_record')['mapping']['identity_center_groups'] | join(', ') }} "
        "and the directory account in "
        "{{ ti.xcom_pull(task_ids='validate_record')['mapping']['directory_groups'] | join(', ') }}; "
        "first day {{ params.start_date }}. The employee record passed every check.",
        tenant=STAFF,
        ticket_id=TICKET_ID,
        artifact_params=ONBOARDING_ARTIFACT,
        # A role with a privileged group (hr_roles.yaml) also needs a security officer.
        privileged="{{ ti.xcom_pull(task_ids='validate_record')['mapping']['privileged'] }}",
    )
    identity = EnsureIdentityCenterUserOperator(
        task_id="create_identity",
        user_name=UID,
        given_name="{{ params.given_name }}",
        family_name="{{ params.surname }}",
        work_email="{{ params.email }}",
        employee_id=EMPLOYEE,
        role="{{ params.role }}",
    )
    directory = EnsureDirectoryAccountOperator(
        task_id="create_directory_account",
        user_name=UID,
        given_name="{{ params.given_name }}",
        surname="{{ params.surname }}",
        work_email="{{ params.email }}",
        employee_id=EMPLOYEE,
        role="{{ params.role }}",
        title="{{ params.role }}",
    )
    access = CreateTicketOperator(
        task_id="access_ticket",
        tenant=STAFF,
        ticket_queue="support",
        subject="Hardware and access for " + NAME + " (" + EMPLOYEE + "), starts {{ params.start_date }}",
        body="New employee " + NAME + ", login " + UID + ", role {{ params.role }}, first day "
        "{{ params.start_date }}: laptop, badge, MFA token. Identity Center and directory accounts exist "
        "(HR ticket " + TICKET_ID + ").",
        fields={"Category": "access-request"},
        idempotency_basis="onboarding-" + EMPLOYEE,
    )
    manager = NotifyManagerOperator(
        task_id="email_manager",
        to="{{ params.manager_email }}",
        subject="Accounts ready for " + NAME + ", starting {{ params.start_date }}",
        html="<p>" + NAME + " (" + EMPLOYEE + ") starts on {{ params.start_date }} as {{ params.role }}. "
        "Login <code>" + UID + "</code>: AWS access portal and directory accounts are ready; the "
        "hardware/access request is ticket {{ ti.xcom_pull(task_ids='access_ticket')['id'] }}.</p>",
        created=CREATED,
    )
    report = CommentTicketOperator(
        task_id="report",
        tenant=STAFF,
        ticket_id=TICKET_ID,
        body="Onboarded " + UID + " (approved by {{ " + APPROVERS + " | join(' and ') }}): "
        "Identity Center user {{ ti.xcom_pull(task_ids='create_identity')['user_id'] }} in "
        "{{ ti.xcom_pull(task_ids='create_identity')['groups'] | join(', ') }}; directory account "
        "{{ ti.xcom_pull(task_ids='create_directory_account')['dn'] }}; access ticket "
        "{{ ti.xcom_pull(task_ids='access_ticket')['id'] }}.",
        idempotency_basis="onboarding-" + EMPLOYEE,
    )
    validate >> ticket >> gate >> [identity, directory] >> access >> manager >> report
    failed = change_failed_comment(
        [identity, directory],
        ticket_task="hr_ticket",
        basis="onboarding-" + EMPLOYEE + "-{{ run_id }}",
        tenant=STAFF,
        gates=gate,
    )
    [identity, directory] >> failed


onboarding()
