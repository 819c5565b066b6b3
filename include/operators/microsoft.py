"""Entra ID user steps of the SOC (inspect, disable, enable) in a customer's own Entra tenant, each with
the tenant's app of the step's capability (:class:`~include.connectors.microsoft.GraphHook`).

Disable: sign-in blocked, sessions revoked, optionally every MFA method but the password deleted,
optionally a comment on the Defender/Sentinel incident the alert came from. A re-run of an already
contained user changes nothing. Bad input (malformed key, a UPN of another tenant's domain, an
unknown user) fails the task before any change, with the reason.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypeVar

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from include.approvals.verify import RequiresApproval
from include.audit.emit import side_effect as audit_side_effect

if TYPE_CHECKING:
    from include.connectors.microsoft import EntraUser, GraphHook

T = TypeVar("T")
YES = frozenset({"yes", "true", "1"})


class _EntraStep(BaseOperator):
    """Base of the Entra steps: the tenant, the user and the Graph hook of the step's capability.

    :param tenant: the customer tenant (templated); its Entra tenant is tenants.yaml's.
    :param user: the user's object id or user principal name (templated).
    """

    template_fields: Sequence[str] = ("tenant", "user")
    capability = ""  # each step declares its own

    def __init__(self, *, tenant: str, user: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.tenant = tenant
        self.user = user

    @cached_property
    def hook(self) -> GraphHook:
        from include.connectors.microsoft import GraphHook

        return GraphHook(capability=self.capability, tenant=self.tenant)

    def failing_fast(self, step: Callable[[], T]) -> T:
        """Run ``step``; bad input or a credential that is not the tenant's fails the task at once."""
        from include.connectors.microsoft import MicrosoftInputError, TenantCredentialError

        try:
            return step()
        except (MicrosoftInputError, TenantCredentialError) as error:
            raise AirflowFailException(f"{self.task_id}: {error}") from None

    def audit(self, context: Any, operation: str, user: EntraUser, changed: bool, **details: Any) -> None:
        audit_side_effect(
            context,
            system="entra-id",
            operation=operation,
            object_id=f"{user.id} ({user.user_principal_name})",
            tenant=self.tenant,
            created=changed,
            capability=self.capability,
            **details,
        )


def _markdown(user: EntraUser, methods: list[dict[str, Any]]) -> str:
    kinds = [str(m.get("@odata.type", "")).rsplit(".", 1)[-1] for m in methods]
    mfa = [k for k in kinds if k != "passwordAuthenticationMethod"]
    return (
        f"**Entra user** {user.display_name} (`{user.user_principal_name}`, id `{user.id}`)\n\n"
        f"- sign-in: {'allowed' if user.account_enabled else 'blocked'}\n"
        f"- sessions valid from: {user.sessions_valid_from}\n"
        f"- MFA methods: {', '.join(mfa) or 'none'}"
    )


class InspectEntraUserOperator(_EntraStep):
    """The user's sign-in state, sessions and MFA methods, for the approval question (read-only app).

    :param tenant: the customer tenant (templated).
    :param user: object id or user principal name (templated).
    """

    capability = "entra-user-inspect"

    def execute(self, context: Any) -> dict[str, Any]:
        user = self.failing_fast(lambda: self.hook.get_user(self.user))
        methods = self.hook.authentication_methods(user)
        markdown = _markdown(user, methods)
        self.log.info("%s", markdown)
        return {**user.as_xcom(), "mfa_methods": len(methods) - 1, "markdown": markdown}


class DisableEntraUserOperator(RequiresApproval, _EntraStep):
    """Block sign-in, revoke sessions, optionally delete MFA methods (privileged: needs the approval).

    Acts only on a verified approval of exactly this user, tenant and MFA decision (the gate binds
    ``artifact_params=("user", "tenant", "reset_mfa")``). Order: when the user can still sign in,
    sessions are revoked, sign-in blocked, sessions revoked again (a sign-in between the first two
    calls loses its session too); a user already blocked is left as is, so a re-run changes nothing.

    :param tenant: the customer tenant (templated).
    :param user: object id or user principal name (templated).
    :param reset_mfa: ``yes`` deletes every authentication method but the password (templated).
    :param incident_id: the Defender/Sentinel incident to comment on and set ``inProgress`` (templated;
        empty: none).
    :param comment: the incident comment (templated).
    """

    template_fields: Sequence[str] = ("tenant", "user", "reset_mfa", "incident_id", "comment")
    capability = "entra-user-disable"
    artifact_fields = {"user": "user", "tenant": "tenant", "reset_mfa": "reset_mfa"}

    def __init__(
        self, *, reset_mfa: str = "no", incident_id: str = "", comment: str = "", **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.reset_mfa = reset_mfa
        self.incident_id = incident_id
        self.comment = comment

    def act(self, context: Any) -> dict[str, Any]:
        hook = self.hook
        user = self.failing_fast(lambda: hook.get_user(self.user))
        changed = False
        valid_from = user.sessions_valid_from
        if user.account_enabled:
            hook.revoke_sessions(user)
            changed = hook.set_account_enabled(user, False)
            valid_from = hook.revoke_sessions(user)
        deleted = hook.delete_mfa_methods(user) if str(self.reset_mfa).lower() in YES else []
        commented = False
        if self.incident_id:
            commented = hook.comment_incident_once(
                self.incident_id, self.comment or f"User {user.user_principal_name} contained."
            )
            hook.set_incident_status(self.incident_id, "inProgress")
        result = {
            "user_id": user.id,
            "user_principal_name": user.user_principal_name,
            "changed": changed,
            "sessions_valid_from": valid_from,
            "mfa_methods_deleted": deleted,
            "incident_commented": commented,
        }
        self.log.info(
            "Entra user %s: %s; MFA methods deleted: %s",
            user.user_principal_name,
            "sign-in blocked, sessions revoked" if changed else "already blocked, left as is",
            ", ".join(deleted) or "none",
        )
        self.audit(context, "disable-entra-user", user, changed or bool(deleted), mfa_methods_deleted=deleted)
        return result


class EnableEntraUserOperator(RequiresApproval, _EntraStep):
    """Allow sign-in again (privileged: its own approval; the user's MFA methods are not restored).

    :param tenant: the customer tenant (templated).
    :param user: object id or user principal name (templated).
    """

    capability = "entra-user-enable"
    artifact_fields = {"user": "user", "tenant": "tenant"}

    def act(self, context: Any) -> dict[str, Any]:
        user = self.failing_fast(lambda: self.hook.get_user(self.user))
        changed = self.hook.set_account_enabled(user, True)
        self.log.info(
            "Entra user %s: %s", user.user_principal_name, "sign-in allowed" if changed else "already allowed"
        )
        self.audit(context, "enable-entra-user", user, changed)
        return {"user_id": user.id, "user_principal_name": user.user_principal_name, "changed": changed}
