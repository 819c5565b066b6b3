"""HR identity steps: validate the employee record, create and disable staff identities.

The staff identities live in the internal tenant ``secops`` (``tenants.yaml``): IAM Identity
Center in its account, reached only through the ``identity-admin`` (onboarding) and
``identity-disable`` (offboarding) capability roles, and the company directory over LDAP
(connection ``ldap_default``). Every step is idempotent (the connectors read first and write only
the difference), so a retried task or a re-run with the same employee converges and says
``created``/``changed`` = False. Errors that retrying cannot fix (a conflict, a missing group, a
refused record) fail the task at once with the connector's message, which names the field.

Only ids, names of groups and flags go to XCom: no personal names, no emails (those stay in the
run's params, which HR entered).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from include.approvals.verify import RequiresApproval
from include.audit.emit import side_effect as audit_side_effect
from include.connectors.context import RunContext
from include.operators.ticketing import CreateTicketOperator
from include.policies.tenants import STAFF_TENANT


class ValidateEmployeeOperator(BaseOperator):
    """Great Expectations on the employee record; on failure the result goes to the HR ticket.

    Nothing exists yet when this runs. A record that fails stops the run here: the validation
    result (every check, the problems in words) is posted as a comment on ``ticket_id`` when the
    request came with an HR ticket, and the task fails with the same problems. Returns the
    result and the groups of the record's role (``hr_roles.yaml``) for the approval question.
    """

    template_fields: Sequence[str] = ("record", "ticket_id")
    ui_color = "#e8f4ff"

    def __init__(
        self, *, record: Mapping[str, Any], ticket_id: str = "", onboarding: bool = True, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.record = dict(record)
        self.ticket_id = ticket_id
        self.onboarding = onboarding

    def execute(self, context: Any) -> dict[str, Any]:
        from include.policies.hr_roles import role_mapping
        from include.validation.employee import EmployeeRecordError, validate_employee_record

        # The form sends every field; an optional one left empty means "not given".
        record = {k: v for k, v in self.record.items() if not (k == "tenant" and v in ("", None))}
        try:
            result = validate_employee_record(record, onboarding=self.onboarding)
        except EmployeeRecordError as error:
            raise AirflowFailException(f"employee record refused: {error}") from None
        self.log.info("%s", result.summary())
        if not result.success:
            if self.ticket_id:
                self._post(context, result.markdown())
            raise AirflowFailException(result.summary())
        mapping = role_mapping(str(record["role"]))
        return {**result.as_xcom(), "mapping": mapping.as_xcom()}

    def _post(self, context: Any, body: str) -> None:
        from include.connectors.idempotency import idempotency_key
        from include.operators.ticketing import ticketing_hook

        run = RunContext.from_airflow_context(context, STAFF_TENANT)
        # Keyed by the run: a retried task posts nothing twice; a corrected record re-submitted
        # is a new run and its result is news for HR.
        key = idempotency_key(run, "validation")
        entry = ticketing_hook("request_tracker", None, STAFF_TENANT).comment(
            str(self.ticket_id), body, idempotency_key=key
        )
        self.log.info("validation result posted to ticket %s (entry %s)", entry.ticket_id, entry.entry_id)


class _IdentityStep(BaseOperator):
    """Base: fields templated from the run's params; errors retrying cannot fix fail at once."""

    template_fields: Sequence[str] = ("user_name",)

    def __init__(self, *, user_name: str, aws_conn_id: str = "aws_default", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.user_name = user_name
        self.aws_conn_id = aws_conn_id

    def guarded(self, step: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        from include.connectors.errors import PermanentError

        try:
            return step()
        except PermanentError as error:
            raise AirflowFailException(f"{self.task_id}: {error}") from None

    def identity_center(self, context: Any, capability: str) -> Any:
        from include.connectors.identity_center import identity_center

        run = RunContext.from_airflow_context(context, STAFF_TENANT)
        return identity_center(capability, STAFF_TENANT, run_context=run, aws_conn_id=self.aws_conn_id)


# The onboarding record as the gate binds it (``artifact_params`` of dags/hr/onboarding.py).
ONBOARDING_ARTIFACT = ("email", "employee_id", "given_name", "role", "surname", "uid")


class _OnboardingStep(RequiresApproval, _IdentityStep):
    """Privileged onboarding step: acts on the approved employee record only (``identity-admin``)."""

    capability = "identity-admin"

    def expected_flags(self, context: Any) -> dict[str, bool]:
        from include.policies.hr_roles import role_mapping

        # A role with a privileged group needs the stricter approval, whatever the request said.
        return {"privileged": role_mapping(str(getattr(self, "role", ""))).privileged}


class EnsureIdentityCenterUserOperator(_OnboardingStep):
    """Onboarding: the IAM Identity Center user exists with the groups of its role (``identity-admin``)."""

    artifact_fields = {
        "email": "work_email",
        "employee_id": "employee_id",
        "given_name": "given_name",
        "role": "role",
        "surname": "family_name",
        "uid": "user_name",
    }

    template_fields: Sequence[str] = (
        "user_name",
        "given_name",
        "family_name",
        "work_email",
        "employee_id",
        "role",
    )

    def __init__(
        self,
        *,
        given_name: str,
        family_name: str,
        work_email: str,
        employee_id: str,
        role: str,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.given_name = given_name
        self.family_name = family_name
        # Not ``email``: BaseOperator.email is who gets Airflow's failure mail, not the employee.
        self.work_email = work_email
        self.employee_id = employee_id
        self.role = role  # the groups come from the role mapping (hr_roles.yaml) at run time

    def act(self, context: Any) -> dict[str, Any]:
        from include.connectors.aws import role_arn
        from include.policies.hr_roles import role_mapping

        groups = role_mapping(self.role).identity_center_groups
        store = self.identity_center(context, "identity-admin")
        result = self.guarded(
            lambda: store.ensure_user(
                self.user_name,
                given_name=self.given_name,
                family_name=self.family_name,
                email=self.work_email,
                employee_id=self.employee_id,
                groups=list(groups),
            ).as_xcom()
        )
        self.log.info(
            "Identity Center user %s %s; groups added: %s",
            self.user_name,
            "created" if result["created"] else "already there",
            ", ".join(result["groups_added"]) or "none",
        )
        audit_side_effect(
            context,
            system="aws-identity-center",
            operation="ensure-user",
            object_id=f"{result['identity_store_id']}/{result['user_id']}",
            tenant=STAFF_TENANT,
            created=result["created"],
            capability="identity-admin",
            role_arn=role_arn("identity-admin", STAFF_TENANT),
            user_name=self.user_name,
            groups_added=result["groups_added"],
        )
        return result


class DisableIdentityCenterUserOperator(RequiresApproval, _IdentityStep):
    """Offboarding: memberships removed, user marked disabled, kept (``identity-disable``)."""

    capability = "identity-disable"
    artifact_fields = {"uid": "user_name"}

    def act(self, context: Any) -> dict[str, Any]:
        from include.connectors.aws import role_arn
        from include.connectors.identity_center import session_revocation_plan

        store = self.identity_center(context, "identity-disable")

        def disable() -> dict[str, Any]:
            result = store.disable_user(self.user_name)
            return {**result.as_xcom(), "sessions": session_revocation_plan(result).markdown()}

        result = self.guarded(disable)
        self.log.info(
            "Identity Center user %s disabled%s; groups removed: %s",
            self.user_name,
            "" if result["changed"] else " already",
            ", ".join(result["groups_removed"]) or "none",
        )
        audit_side_effect(
            context,
            system="aws-identity-center",
            operation="disable-user",
            object_id=f"{result['identity_store_id']}/{result['user_id']}",
            tenant=STAFF_TENANT,
            created=result["changed"],
            capability="identity-disable",
            role_arn=role_arn("identity-disable", STAFF_TENANT),
            user_name=self.user_name,
            groups_removed=result["groups_removed"],
        )
        return result


class EnsureDirectoryAccountOperator(_OnboardingStep):
    """Onboarding: the LDAP person exists in its role's groups; no password (the employee sets it).

    No AWS role, but the same privilege (``identity-admin``): it acts on the approved record only.
    """

    artifact_fields = {
        "email": "work_email",
        "employee_id": "employee_id",
        "given_name": "given_name",
        "role": "role",
        "surname": "surname",
        "uid": "user_name",
    }

    template_fields: Sequence[str] = (
        "user_name",
        "given_name",
        "surname",
        "work_email",
        "employee_id",
        "title",
        "role",
    )

    def __init__(
        self,
        *,
        given_name: str,
        surname: str,
        work_email: str,
        employee_id: str,
        role: str,
        title: str | None = None,
        ldap_conn_id: str = "ldap_default",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.given_name = given_name
        self.surname = surname
        # Not ``email``: BaseOperator.email is who gets Airflow's failure mail, not the employee.
        self.work_email = work_email
        self.employee_id = employee_id
        self.role = role
        self.title = title
        self.ldap_conn_id = ldap_conn_id

    def act(self, context: Any) -> dict[str, Any]:
        from include.connectors.ldap import DirectoryHook
        from include.policies.hr_roles import role_mapping

        groups = role_mapping(self.role).directory_groups
        hook = DirectoryHook(self.ldap_conn_id)
        result = self.guarded(
            lambda: hook.ensure_user(
                self.user_name,
                given_name=self.given_name,
                surname=self.surname,
                email=self.work_email,
                employee_id=self.employee_id,
                title=self.title or None,
                groups=list(groups),
            ).as_xcom()
        )
        audit_side_effect(
            context,
            system="ldap",
            operation="ensure-user",
            object_id=result["dn"],
            tenant=STAFF_TENANT,
            created=result["created"],
            groups_added=result["groups_added"],
        )
        return result


class DisableDirectoryAccountOperator(RequiresApproval, _IdentityStep):
    """Offboarding: the LDAP person locked for good, out of every group, kept for audit.

    No AWS role, but the same privilege (``identity-disable``): it acts on the approved leaver only.
    """

    capability = "identity-disable"
    artifact_fields = {"uid": "user_name"}

    def __init__(self, *, ldap_conn_id: str = "ldap_default", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ldap_conn_id = ldap_conn_id

    def act(self, context: Any) -> dict[str, Any]:
        from include.connectors.ldap import DirectoryHook

        result = self.guarded(lambda: DirectoryHook(self.ldap_conn_id).disable_user(self.user_name).as_xcom())
        audit_side_effect(
            context,
            system="ldap",
            operation="disable-user",
            object_id=result["dn"],
            tenant=STAFF_TENANT,
            created=result["changed"],
            groups_removed=result["groups_removed"],
        )
        return result


class RevokeTenantAccessKeysOperator(RequiresApproval, BaseOperator):
    """Offboarding: the leaver's staff IAM user in every customer tenant loses its keys and console.

    Staff who work in customer accounts have IAM users under ``/staff/`` there (the SOC's
    disable-account workflow contains the same users). One task per tenant (mapped), as the
    tenant's ``identity-disable`` role; a tenant where the leaver has no user is "nothing to do".
    """

    template_fields: Sequence[str] = ("tenant", "user_name")
    capability = "identity-disable"
    artifact_fields = {"uid": "user_name"}

    def __init__(
        self, *, tenant: str, user_name: str, aws_conn_id: str = "aws_default", **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.tenant = tenant
        self.user_name = user_name
        self.aws_conn_id = aws_conn_id

    def act(self, context: Any) -> dict[str, Any]:
        from include.connectors.aws import capability_client, role_arn
        from include.connectors.iam_users import AccountContainmentError, disable_user

        run = RunContext.from_airflow_context(context, self.tenant)
        iam = capability_client(
            self.capability, self.tenant, "iam", run_context=run, aws_conn_id=self.aws_conn_id
        )
        try:
            iam.get_user(UserName=self.user_name)
        except iam.exceptions.NoSuchEntityException:
            self.log.info("tenant %s: no staff IAM user %s, nothing to revoke", self.tenant, self.user_name)
            return {"tenant": self.tenant, "found": False, "changed": False, "deactivated_keys": []}
        try:
            result = disable_user(iam, self.user_name)
        except AccountContainmentError as error:
            raise AirflowFailException(f"{self.task_id} ({self.tenant}): {error}") from None
        audit_side_effect(
            context,
            system="aws",
            operation="disable-iam-user",
            object_id=result["arn"],
            tenant=self.tenant,
            created=result["changed"],
            capability="identity-disable",
            role_arn=role_arn("identity-disable", self.tenant),
            deactivated_keys=result["deactivated_keys"],
            console_password_removed=result["console_password_removed"],
        )
        return {"tenant": self.tenant, "found": True, **result}


class HrTicketOperator(CreateTicketOperator):
    """The HR ticket of the request: the one HR gave (``existing``), or one opened in queue ``hr``
    once per employee (``idempotency_basis``)."""

    template_fields: Sequence[str] = (*CreateTicketOperator.template_fields, "existing")

    def __init__(self, *, existing: str, **kwargs: Any) -> None:
        super().__init__(tenant=STAFF_TENANT, ticket_queue="hr", **kwargs)
        self.existing = existing

    def execute(self, context: Any) -> dict[str, Any]:
        given = str(self.existing).strip()
        if given not in ("", "0", "None"):
            return {"id": given, "created": False, "given": True}
        return {**super().execute(context), "given": False}


class InspectDirectoryAccountOperator(BaseOperator):
    """Offboarding, read-only: the account exists and belongs to this employee id; its groups."""

    template_fields: Sequence[str] = ("user_name", "employee_id")

    def __init__(
        self, *, user_name: str, employee_id: str, ldap_conn_id: str = "ldap_default", **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.user_name = user_name
        self.employee_id = employee_id
        self.ldap_conn_id = ldap_conn_id

    def execute(self, context: Any) -> dict[str, Any]:
        from include.connectors.ldap import DirectoryHook

        hook = DirectoryHook(self.ldap_conn_id)
        person = hook.get_user(self.user_name)
        if person is None:
            raise AirflowFailException(f"no directory account {self.user_name!r}: check the login name")
        if person.get("employee_id") != self.employee_id:
            raise AirflowFailException(
                f"directory account {self.user_name!r} belongs to employee {person.get('employee_id')!r}, "
                f"not {self.employee_id!r}: check the employee id"
            )
        groups = list(person.get("groups") or [])
        markdown = (
            f"Directory account `{self.user_name}` (employee {self.employee_id}), "
            f"{'already disabled' if person.get('disabled') else 'active'}, groups: "
            f"{', '.join(groups) or 'none'}. Offboarding disables it (never deletes), removes every "
            "group membership in the directory and in IAM Identity Center, and deactivates the "
            "staff IAM user's keys in every customer tenant."
        )
        return {
            "uid": self.user_name,
            "disabled": bool(person.get("disabled")),
            "groups": groups,
            "markdown": markdown,
        }


class NotifyManagerOperator(BaseOperator):
    """Email the manager that the new employee's accounts exist (only when this run created them)."""

    template_fields: Sequence[str] = ("to", "subject", "html", "created")

    def __init__(self, *, to: str, subject: str, html: str, created: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.to = to
        self.subject = subject
        self.html = html
        self.created = created

    def execute(self, context: Any) -> dict[str, Any]:
        from include.approvals.notify import send_email

        if str(self.created).strip() != "True":
            # A re-run for an employee who is already onboarded: the manager was told the first time.
            self.log.info("accounts existed before this run: no email")
            return {"sent": False}
        sent = send_email([self.to], self.subject, self.html, log=self.log)
        if sent.get("error"):
            raise RuntimeError(f"email to the manager failed: {sent['error']}")  # retried
        return {"sent": True, "to": sent.get("to", [])}
