"""IAM user steps: the SOC's account containment (inspect, disable) and offboarding's key
revocation in every customer tenant, each as the tenant's own capability role.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from include.approvals.verify import RequiresApproval
from include.audit.emit import side_effect as audit_side_effect
from include.connectors.context import RunContext


class _IamStep(BaseOperator):
    template_fields: Sequence[str] = ("tenant", "account")
    capability = ""

    def __init__(self, *, tenant: str, account: str, aws_conn_id: str = "aws_default", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.tenant = tenant
        self.account = account
        self.aws_conn_id = aws_conn_id

    def work(self, context: Any, step: Callable[[Any], dict[str, Any]]) -> dict[str, Any]:
        """Run ``step`` on an IAM client of the capability role; containment errors fail at once."""
        from include.connectors.aws import capability_client
        from include.connectors.iam_users import AccountContainmentError

        run = RunContext.from_airflow_context(context, self.tenant)
        iam = capability_client(
            self.capability, self.tenant, "iam", run_context=run, aws_conn_id=self.aws_conn_id
        )
        try:
            return step(iam)
        except AccountContainmentError as error:
            raise AirflowFailException(f"{self.task_id}: {error}") from None


class InspectAccountOperator(_IamStep):
    """The account's active keys and console access, for the approval question (read-only role)."""

    capability = "identity-inspect"

    def execute(self, context: Any) -> dict[str, Any]:
        from include.connectors.iam_users import inspect_user

        def inspect(iam: Any) -> dict[str, Any]:
            state = inspect_user(iam, self.account)
            self.log.info("%s", state.markdown())
            return {**state.as_xcom(), "markdown": state.markdown()}

        return self.work(context, inspect)


class DisableAccountOperator(RequiresApproval, _IamStep):
    """Deactivate the account's keys and remove its console password (privileged: needs the approval).

    Acts only on a verified approval of exactly this account in this tenant (the gate binds
    ``artifact_params=("account", "tenant")``).
    """

    capability = "identity-disable"
    artifact_fields = {"account": "account", "tenant": "tenant"}

    def act(self, context: Any) -> dict[str, Any]:
        from include.connectors.aws import role_arn
        from include.connectors.iam_users import disable_user

        result = self.work(context, lambda iam: disable_user(iam, self.account))
        audit_side_effect(
            context,
            system="aws",
            operation="disable-iam-user",
            object_id=result["arn"],
            tenant=self.tenant,
            created=result["changed"],
            capability=self.capability,
            role_arn=role_arn(self.capability, self.tenant),
            deactivated_keys=result["deactivated_keys"],
            console_password_removed=result["console_password_removed"],
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
