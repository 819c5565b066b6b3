"""IAM Identity Center steps of onboarding and offboarding (capabilities ``identity-admin`` and
``identity-disable``, in the staff tenant, through
:class:`~include.connectors.identity_center.IdentityCenterHook`; see :mod:`include.operators.hr`).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from include.approvals.verify import RequiresApproval
from include.audit.emit import side_effect as audit_side_effect
from include.operators.hr import _IdentityStep, _OnboardingStep
from include.policies.tenants import STAFF_TENANT

if TYPE_CHECKING:
    from include.connectors.identity_center import IdentityCenterHook


class _IdentityCenterStep(_IdentityStep):
    """Base of the Identity Center steps: the staff tenant's store, as the step's capability.

    :param user_name: the employee's login name (templated).
    :param aws_conn_id: the Airflow AWS connection (base credentials; ``identity_store_id`` extra).
    """

    capability = ""  # each step declares its own

    def __init__(self, *, aws_conn_id: str = "aws_default", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.aws_conn_id = aws_conn_id

    @cached_property
    def hook(self) -> IdentityCenterHook:
        from include.connectors.identity_center import IdentityCenterHook

        return IdentityCenterHook(self.aws_conn_id, capability=self.capability, tenant=STAFF_TENANT)


class EnsureIdentityCenterUserOperator(_OnboardingStep, _IdentityCenterStep):
    """Onboarding: the IAM Identity Center user exists with the groups of its role (``identity-admin``).

    The groups come from the role mapping (``hr_roles.yaml``) at run time. Returns ids, group names
    and flags (:meth:`~include.connectors.identity_center.IdentityResult.as_xcom`).

    :param user_name: the login name (templated).
    :param given_name: the given name (templated).
    :param family_name: the family name (templated).
    :param work_email: the work email address (templated).
    :param employee_id: the HR employee id (templated).
    :param role: the job role, which decides the groups (templated).
    :param aws_conn_id: the Airflow AWS connection of the platform's base credentials.
    """

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
        from include.policies.hr_roles import role_mapping

        groups = role_mapping(self.role).identity_center_groups
        result = self.guarded(
            lambda: self.hook.ensure_user(
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
            capability=self.capability,
            role_arn=self.hook.role_arn,
            user_name=self.user_name,
            groups_added=result["groups_added"],
        )
        return result


class DisableIdentityCenterUserOperator(RequiresApproval, _IdentityCenterStep):
    """Offboarding: memberships removed, user marked disabled, kept (``identity-disable``).

    Returns ids, group names and flags, and the manual steps that end the user's sessions
    (``sessions``, markdown).

    :param user_name: the leaver's login name (templated).
    :param aws_conn_id: the Airflow AWS connection of the platform's base credentials.
    """

    capability = "identity-disable"
    artifact_fields = {"uid": "user_name"}

    def act(self, context: Any) -> dict[str, Any]:
        from include.connectors.identity_center import session_revocation_plan

        def disable() -> dict[str, Any]:
            result = self.hook.disable_user(self.user_name)
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
            capability=self.capability,
            role_arn=self.hook.role_arn,
            user_name=self.user_name,
            groups_removed=result["groups_removed"],
        )
        return result
