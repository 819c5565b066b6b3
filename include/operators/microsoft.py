"""Entra ID user steps of the SOC (inspect, disable, enable) in a customer's own Entra tenant, each with
the tenant's app of the step's capability (:class:`~include.connectors.microsoft.GraphHook`).

Disable: sign-in blocked, sessions revoked, optionally every MFA method but the password deleted
(the incident the alert came from is written back by the workflow's own non-privileged step,
include/workflows/incidents.py). A re-run of an already
contained user changes nothing. Bad input (malformed key, a UPN of another tenant's domain, an
unknown user) fails the task before any change, with the reason.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypeVar

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from include.approvals.verify import RequiresApproval
from include.audit.emit import side_effect as audit_side_effect
from include.operators.failing import failing_fast

if TYPE_CHECKING:
    from include.connectors.microsoft import DefenderHook, EntraUser, GraphHook

T = TypeVar("T")
YES = frozenset({"yes", "true", "1"})


def _failing_fast(task_id: str, step: Callable[[], T]) -> T:
    """Run ``step`` through the shared :func:`include.operators.failing.failing_fast`: what no
    retry can mend fails the task at once, naming the step: bad input, a credential that is not the
    tenant's, and whatever the connector found permanent (a token Entra refused, a 403, a 404 that
    is not "no such user or machine"). Transient errors (429, 5xx, timeouts) still go to the
    domain's retries."""
    from include.connectors.microsoft import MicrosoftInputError, TenantCredentialError

    return failing_fast(task_id, step, MicrosoftInputError, TenantCredentialError)


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
        return _failing_fast(self.task_id, step)

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
    """

    template_fields: Sequence[str] = ("tenant", "user", "reset_mfa")
    capability = "entra-user-disable"
    artifact_fields = {"user": "user", "tenant": "tenant", "reset_mfa": "reset_mfa"}

    def __init__(self, *, reset_mfa: str = "no", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.reset_mfa = reset_mfa

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
        result = {
            "user_id": user.id,
            "user_principal_name": user.user_principal_name,
            "changed": changed,
            "sessions_valid_from": valid_from,
            "mfa_methods_deleted": deleted,
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


# --- Defender for Endpoint: device isolation ------------------------------------------------------------
FINAL_ACTION_STATUSES = frozenset({"Succeeded", "Failed", "Cancelled", "TimeOut"})


class _DeviceStep(BaseOperator):
    """Base of the Defender steps: the tenant, the machine (id or name) and the Defender hook of the
    step's capability.

    :param tenant: the customer tenant (templated); its Entra tenant is tenants.yaml's.
    :param machine: the Defender machine id (40 hex digits) or the machine's name, DNS or host name
        (templated). A name is resolved read-only; unknown or ambiguous fails the task before any change.
    :param aws_conn_id: the platform's base AWS connection (to assume the capability's role).
    """

    template_fields: Sequence[str] = ("tenant", "machine")
    capability = ""  # each step declares its own

    def __init__(self, *, tenant: str, machine: str, aws_conn_id: str = "aws_default", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.tenant = tenant
        self.machine = machine
        self.aws_conn_id = aws_conn_id

    @cached_property
    def hook(self) -> DefenderHook:
        from include.connectors.microsoft import DefenderHook

        return DefenderHook(capability=self.capability, tenant=self.tenant, aws_conn_id=self.aws_conn_id)

    def failing_fast(self, step: Callable[[], T]) -> T:
        return _failing_fast(self.task_id, step)

    def resolve(self) -> dict[str, Any]:
        """The machine the step is about (by id, or its name resolved read-only)."""
        return self.failing_fast(lambda: self.hook.find_machine(str(self.machine)))


def _machine_summary(machine: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": str(machine.get("id", "")),
        "computer_dns_name": str(machine.get("computerDnsName", "")),
        "os_platform": str(machine.get("osPlatform", "")),
        "health_status": str(machine.get("healthStatus", "")),
        "risk_score": str(machine.get("riskScore", "")),
    }


def _action_summary(action: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "action_id": str(action.get("id", "")),
        "type": str(action.get("type", "")),
        "scope": action.get("scope"),
        "status": str(action.get("status", "")),
        "requestor": str(action.get("requestor", "")),
        "created_at": str(action.get("creationDateTimeUtc", "")),
        "updated_at": str(action.get("lastUpdateDateTimeUtc", "")),
    }


class InspectDeviceOperator(_DeviceStep):
    """The machine and its isolation state (its newest isolate/release action), for the approval question
    (read-only app, ``device-inspect``).

    :param tenant: the customer tenant (templated).
    :param machine: machine id or name (templated).
    """

    capability = "device-inspect"

    def execute(self, context: Any) -> dict[str, Any]:
        machine = _machine_summary(self.resolve())
        latest = self.hook.latest_isolation_action(machine["id"])
        state = (
            "never isolated through Defender"
            if latest is None
            else f"newest action {latest.get('type')} ({latest.get('scope') or 'n/a'}) "
            f"{latest.get('status')} since {latest.get('lastUpdateDateTimeUtc')}"
        )
        markdown = (
            f"**Defender machine** `{machine['computer_dns_name']}` (id `{machine['id']}`)\n\n"
            f"- OS: {machine['os_platform']}; health: {machine['health_status'] or 'n/a'}; "
            f"risk: {machine['risk_score'] or 'n/a'}\n"
            f"- isolation: {state}"
        )
        self.log.info("%s", markdown)
        return {
            **machine,
            "latest_action": _action_summary(latest) if latest else None,
            "markdown": markdown,
        }


class _MachineActionStep(RequiresApproval, _DeviceStep):
    """Start an isolation or release once, then wait for it deferred (:class:`MachineActionTrigger`: no
    worker held while the device applies it); the task fails if the action fails, is cancelled or does
    not finish within ``action_timeout`` seconds (a re-run then waits on the same action).

    Returns ``machine_id``, ``computer_dns_name``, ``created`` (this run started the action),
    ``action_id``, ``type``, ``scope``, ``status``, ``requestor`` and the action's times; ``action_id``
    empty (status ``not-isolated``) when a release finds nothing to release.

    :param comment: the action's comment in Defender (templated; the correlation id is appended).
    :param machine_id: the id the machine resolved to when the approval was asked (templated, from
        ``inspect_device``); a name that resolves to another machine now (a renamed or re-imaged
        device) is refused. Empty: not checked.
    :param poll_interval: seconds between the trigger's reads of the action.
    :param action_timeout: seconds to wait for the action in all (under the SOC fast path's 10 min
        execution timeout, so the clear message is the one that fails the task).
    """

    template_fields: Sequence[str] = ("tenant", "machine", "comment", "machine_id")
    verb = ""

    def __init__(
        self,
        *,
        comment: str = "",
        machine_id: str = "",
        poll_interval: float = 5.0,
        action_timeout: float = 540.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.comment = comment
        self.machine_id = machine_id
        self.poll_interval = poll_interval
        self.action_timeout = action_timeout

    def start(self, machine_id: str, comment: str) -> tuple[dict[str, Any], bool]:
        raise NotImplementedError

    def act(self, context: Any) -> dict[str, Any] | None:
        from dataclasses import asdict

        from include.triggers.microsoft import MachineActionTrigger

        machine = _machine_summary(self.resolve())
        if self.machine_id and machine["id"] != str(self.machine_id).lower():
            raise AirflowFailException(
                f"{self.task_id}: machine {self.machine!r} resolves to {machine['id']} now, not to the "
                f"{self.machine_id} shown when the approval was asked: refused"
            )
        run = self.hook.run_context
        comment = f"{self.comment or 'Orchestrator ' + self.verb} (correlation id {run.correlation_id})"
        action, created = self.failing_fast(lambda: self.start(machine["id"], comment[:1000]))
        summary = {"machine_id": machine["id"], "computer_dns_name": machine["computer_dns_name"]}
        if not action:
            self.log.info("machine %s: not isolated, nothing to release", machine["computer_dns_name"])
            self._audit(context, summary, {}, created=False)
            return {**summary, "created": False, **_action_summary({"status": "not-isolated"})}
        self.log.info(
            "machine %s: %s action %s (%s)",
            machine["computer_dns_name"],
            "started" if created else "found the existing",
            action.get("id"),
            action.get("status"),
        )
        self._audit(context, summary, action, created=created)
        if action.get("status") in FINAL_ACTION_STATUSES:
            return self.finish(summary, created, action)
        self.defer(
            trigger=MachineActionTrigger(
                tenant=self.tenant,
                action_id=str(action["id"]),
                run_context=asdict(run),
                poll_interval=self.poll_interval,
                timeout_seconds=self.action_timeout,
                aws_conn_id=self.aws_conn_id,
            ),
            method_name="execute_complete",
            kwargs={"summary": summary, "created": created},
        )
        return None  # not reached: defer raises

    def execute_complete(
        self, context: Any, event: Mapping[str, Any], summary: Mapping[str, Any], created: bool
    ) -> dict[str, Any]:
        """Woken by the trigger: the action is final (or the wait timed out)."""
        action = dict(event.get("action") or {})
        if event.get("status") == "timeout":
            raise AirflowFailException(
                f"{self.task_id}: machine action {event.get('action_id')} on {summary['computer_dns_name']} "
                f"did not complete within {self.action_timeout:.0f} s (last status "
                f"{action.get('status') or 'unknown'}); it stays pending in Defender: a re-run waits on it"
            )
        return self.finish(summary, created, action)

    def finish(self, summary: Mapping[str, Any], created: bool, action: Mapping[str, Any]) -> dict[str, Any]:
        if action.get("status") != "Succeeded":
            raise AirflowFailException(
                f"{self.task_id}: machine action {action.get('id')} ({action.get('type')}) on "
                f"{summary['computer_dns_name']} ended {action.get('status')}"
            )
        self.log.info(
            "machine %s: %s %s at %s",
            summary["computer_dns_name"],
            action.get("type"),
            action.get("status"),
            action.get("lastUpdateDateTimeUtc"),
        )
        return {**summary, "created": created, **_action_summary(action)}

    def _audit(
        self, context: Any, summary: Mapping[str, Any], action: Mapping[str, Any], *, created: bool
    ) -> None:
        audit_side_effect(
            context,
            system="defender",
            operation=f"{self.verb}-device",
            object_id=f"{summary['machine_id']} ({summary['computer_dns_name']})",
            tenant=self.tenant,
            created=created,
            capability=self.capability,
            action_id=str(action.get("id", "")),
            action_status=str(action.get("status", "")),
            scope=action.get("scope"),
        )


class IsolateDeviceOperator(_MachineActionStep):
    """Isolate the machine in Defender (privileged: needs the approval of exactly this machine, tenant
    and isolation type; the gate binds ``artifact_params=("machine", "tenant", "isolation_type")``).

    A machine whose newest isolation action is an isolation (pending or done; this run's, an earlier
    run's or a console user's) gets no second action: that one is waited for.

    :param tenant: the customer tenant (templated).
    :param machine: machine id or name (templated).
    :param isolation_type: ``Full`` or ``Selective`` (Outlook, Teams and Skype keep working; templated).
    """

    template_fields: Sequence[str] = ("tenant", "machine", "comment", "machine_id", "isolation_type")
    capability = "device-isolate"
    artifact_fields = {"machine": "machine", "tenant": "tenant", "isolation_type": "isolation_type"}
    verb = "isolate"

    def __init__(self, *, isolation_type: str = "Full", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.isolation_type = isolation_type

    def start(self, machine_id: str, comment: str) -> tuple[dict[str, Any], bool]:
        return self.hook.isolate_once(machine_id, comment, str(self.isolation_type))


class ReleaseDeviceOperator(_MachineActionStep):
    """Release the machine from isolation (privileged: its own approval, ``device-release``, bound to
    machine and tenant). A machine not isolated (no isolation, or the newest action is a release) is
    left as it is.

    :param tenant: the customer tenant (templated).
    :param machine: machine id or name (templated).
    """

    capability = "device-release"
    artifact_fields = {"machine": "machine", "tenant": "tenant"}
    verb = "release"

    def start(self, machine_id: str, comment: str) -> tuple[dict[str, Any], bool]:
        return self.hook.release_once(machine_id, comment)
