"""Company directory (LDAP) steps of onboarding and offboarding (connection ``ldap_default``; see
:mod:`include.operators.hr`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from include.approvals.verify import RequiresApproval
from include.audit.emit import side_effect as audit_side_effect
from include.operators.hr import _IdentityStep, _OnboardingStep
from include.policies.tenants import STAFF_TENANT


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
