"""Company directory (LDAP) steps of onboarding and offboarding (connection ``ldap_default``; see
:mod:`include.operators.hr`).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk.exceptions import AirflowFailException

from include.approvals.verify import RequiresApproval
from include.audit.emit import side_effect as audit_side_effect
from include.operators.hr import _IdentityStep, _OnboardingStep
from include.policies.tenants import STAFF_TENANT

if TYPE_CHECKING:
    from include.connectors.ldap import DirectoryHook


class _DirectoryStep(_IdentityStep):
    """Base of the directory steps.

    :param user_name: the employee's login name (templated).
    :param ldap_conn_id: the Airflow connection of the directory.
    """

    def __init__(self, *, ldap_conn_id: str = "ldap_default", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ldap_conn_id = ldap_conn_id

    @cached_property
    def hook(self) -> DirectoryHook:
        from include.connectors.ldap import DirectoryHook

        return DirectoryHook(self.ldap_conn_id)


class InspectDirectoryAccountOperator(_DirectoryStep):
    """Offboarding, read-only: the account exists and belongs to this employee id; its groups.

    Returns the uid, whether it is disabled, its groups and the ``markdown`` for the approval.

    :param user_name: the leaver's login name (templated).
    :param employee_id: the HR employee id the account must belong to (templated).
    :param ldap_conn_id: the Airflow connection of the directory.
    """

    template_fields: Sequence[str] = ("user_name", "employee_id")

    def __init__(self, *, employee_id: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.employee_id = employee_id

    def execute(self, context: Any) -> dict[str, Any]:
        person = self.hook.get_user(self.user_name)
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


class EnsureDirectoryAccountOperator(_OnboardingStep, _DirectoryStep):
    """Onboarding: the LDAP person exists in its role's groups; no password (the employee sets it).

    No AWS role, but the same privilege (``identity-admin``): it acts on the approved record only.
    Returns :meth:`~include.connectors.ldap.DirectoryResult.as_xcom`.

    :param user_name: the login name (templated).
    :param given_name: the given name (templated).
    :param surname: the surname (templated).
    :param work_email: the work email address (templated).
    :param employee_id: the HR employee id (templated).
    :param role: the job role, which decides the groups (templated).
    :param title: the job title; empty or ``None``: left as it is (templated).
    :param ldap_conn_id: the Airflow connection of the directory.
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

    def act(self, context: Any) -> dict[str, Any]:
        from include.policies.hr_roles import role_mapping

        groups = role_mapping(self.role).directory_groups
        result = self.guarded(
            lambda: self.hook.ensure_user(
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


class DisableDirectoryAccountOperator(RequiresApproval, _DirectoryStep):
    """Offboarding: the LDAP person locked for good, out of every group, kept for audit.

    No AWS role, but the same privilege (``identity-disable``): it acts on the approved leaver only.
    Returns :meth:`~include.connectors.ldap.DirectoryResult.as_xcom`.

    :param user_name: the leaver's login name (templated).
    :param ldap_conn_id: the Airflow connection of the directory.
    """

    capability = "identity-disable"
    artifact_fields = {"uid": "user_name"}

    def act(self, context: Any) -> dict[str, Any]:
        result = self.guarded(lambda: self.hook.disable_user(self.user_name).as_xcom())
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
