"""IAM user steps: the SOC's account containment (inspect, disable) and offboarding's key
revocation in every customer tenant, each as the tenant's own capability role
(:class:`~include.connectors.iam.IamHook`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypeVar

from airflow.sdk import BaseOperator

from include.approvals.verify import RequiresApproval
from include.audit.emit import side_effect as audit_side_effect
from include.operators.failing import failing_fast

if TYPE_CHECKING:
    from include.connectors.iam import IamHook

T = TypeVar("T")


class _IamStep(BaseOperator):
    """Base of the IAM steps: the tenant and the hook of the step's capability.

    :param tenant: the tenant whose AWS account holds the user (templated).
    :param aws_conn_id: the Airflow AWS connection of the platform's base credentials.
    """

    template_fields: Sequence[str] = ("tenant",)
    capability = ""  # each step declares its own

    def __init__(self, *, tenant: str, aws_conn_id: str = "aws_default", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.tenant = tenant
        self.aws_conn_id = aws_conn_id

    @cached_property
    def hook(self) -> IamHook:
        from include.connectors.iam import IamHook

        return IamHook(self.aws_conn_id, capability=self.capability, tenant=self.tenant)

    def failing_fast(self, step: Callable[[], T]) -> T:
        """Run ``step`` (:func:`include.operators.failing.failing_fast`); a permanent connector error
        or a containment error (unknown or non-staff user) fails the task at once."""
        from include.connectors.iam import AccountContainmentError

        return failing_fast(self.task_id, step, AccountContainmentError)

    def audit(self, context: Any, result: dict[str, Any]) -> None:
        """The disabling on the audit trail: the user, its keys, the role that did it."""
        audit_side_effect(
            context,
            system="aws",
            operation="disable-iam-user",
            object_id=result["arn"],
            tenant=self.tenant,
            created=result["changed"],
            capability=self.capability,
            role_arn=self.hook.role_arn,
            deactivated_keys=result["deactivated_keys"],
            console_password_removed=result["console_password_removed"],
        )


class _AccountStep(_IamStep):
    template_fields: Sequence[str] = ("tenant", "account")

    def __init__(self, *, account: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.account = account


class InspectAccountOperator(_AccountStep):
    """The account's active keys and console access, for the approval question (read-only role).

    :param tenant: the tenant whose AWS account holds the user (templated).
    :param account: the IAM user name (templated).
    :param aws_conn_id: the Airflow AWS connection of the platform's base credentials.
    """

    capability = "identity-inspect"

    def execute(self, context: Any) -> dict[str, Any]:
        state = self.failing_fast(lambda: self.hook.inspect_user(self.account))
        self.log.info("%s", state.markdown())
        return {**state.as_xcom(), "markdown": state.markdown()}


class DisableAccountOperator(RequiresApproval, _AccountStep):
    """Deactivate the account's keys and remove its console password (privileged: needs the approval).

    Acts only on a verified approval of exactly this account in this tenant (the gate binds
    ``artifact_params=("account", "tenant")``).

    :param tenant: the tenant whose AWS account holds the user (templated).
    :param account: the IAM user name (templated).
    :param aws_conn_id: the Airflow AWS connection of the platform's base credentials.
    """

    capability = "identity-disable"
    artifact_fields = {"account": "account", "tenant": "tenant"}

    def act(self, context: Any) -> dict[str, Any]:
        result = self.failing_fast(lambda: self.hook.disable_user(self.account))
        self.audit(context, result)
        return result


class RevokeTenantAccessKeysOperator(RequiresApproval, _IamStep):
    """Offboarding: the leaver's staff IAM user in every customer tenant loses its keys and console.

    Staff who work in customer accounts have IAM users under ``/staff/`` there (the SOC's
    disable-account workflow contains the same users). One task per tenant (mapped), as the
    tenant's ``identity-disable`` role; a tenant where the leaver has no user is "nothing to do".

    :param tenant: the customer tenant (templated; mapped over every tenant).
    :param user_name: the leaver's login name, its IAM user name in the tenants (templated).
    :param aws_conn_id: the Airflow AWS connection of the platform's base credentials.
    """

    template_fields: Sequence[str] = ("tenant", "user_name")
    capability = "identity-disable"
    artifact_fields = {"uid": "user_name"}

    def __init__(self, *, user_name: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.user_name = user_name

    def act(self, context: Any) -> dict[str, Any]:
        from include.connectors.iam import AccountContainmentError

        result = failing_fast(
            f"{self.task_id} ({self.tenant})",
            lambda: self.hook.disable_user_if_present(self.user_name),
            AccountContainmentError,
        )
        if result is None:
            self.log.info("tenant %s: no staff IAM user %s, nothing to revoke", self.tenant, self.user_name)
            return {"tenant": self.tenant, "found": False, "changed": False, "deactivated_keys": []}
        self.audit(context, result)
        return {"tenant": self.tenant, "found": True, **result}
