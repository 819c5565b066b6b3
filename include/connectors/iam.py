"""Contain a compromised IAM user in a tenant's AWS account: deactivate its keys, remove its console
password. Disabled, never deleted: the user, its keys (inactive) and its history stay for the
investigation, and a release can re-activate the keys.

:class:`IamHook`, used by the SOC "disable account" workflow: :meth:`IamHook.inspect_user` as the
read-only ``identity-inspect`` role (what the approver sees), :meth:`IamHook.disable_user` as the
privileged ``identity-disable`` role after the approval; offboarding's key revocation in every
customer tenant uses :meth:`IamHook.disable_user_if_present`. All of them only touch users under the
``/staff/`` path, which is what the capability roles are scoped to (``user/staff/*``). Repeating a
disable changes nothing and says so (SCALE-3).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Final

from botocore.exceptions import ClientError

from include.connectors.aws import AwsCapabilityHook, error_code

USER_NAME: Final = re.compile(r"[A-Za-z0-9+=,.@_-]{1,64}")
STAFF_PATH: Final = "/staff/"


class AccountContainmentError(RuntimeError):
    """The account cannot be contained as asked; the message says what and where."""


class AccountNotFound(AccountContainmentError, LookupError):
    """No such IAM user in this tenant's account."""


@dataclass(frozen=True)
class UserState:
    """An IAM user's access: its keys by status and whether it has a console password."""

    user_name: str
    arn: str
    active_keys: tuple[str, ...]
    inactive_keys: tuple[str, ...]
    console_access: bool

    @property
    def contained(self) -> bool:
        return not self.active_keys and not self.console_access

    def as_xcom(self) -> dict[str, Any]:
        values = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
        return {**values, "contained": self.contained}

    def markdown(self) -> str:
        if self.contained:
            return f"IAM user **{self.user_name}** is already contained (no active key, no console password)."
        keys = ", ".join(f"`{k}`" for k in self.active_keys) or "none"
        console = "remove its console password" if self.console_access else "no console password"
        return (
            f"Disable IAM user **{self.user_name}** (`{self.arn}`): deactivate access keys {keys}; "
            f"{console}. The user and its keys are kept (inactive) for the investigation."
        )


def check_user_name(user_name: str) -> str:
    """:raises AccountContainmentError: not a valid IAM user name."""
    if not isinstance(user_name, str) or not USER_NAME.fullmatch(user_name):
        raise AccountContainmentError(
            f"account {user_name!r} is not an IAM user name (1-64 of letters, digits and +=,.@_-)"
        )
    return user_name


class IamHook(AwsCapabilityHook):
    """Staff IAM users in a tenant's account, as a capability role (see the module docstring).

    :param aws_conn_id: the Airflow AWS connection (base credentials, endpoints); default ``aws_default``.
    :param capability: ``identity-inspect`` (read-only) or ``identity-disable``.
    :param tenant: the tenant whose account holds the user.
    :param run_context: the run making the calls; default: the running task's.
    """

    system: ClassVar[str] = "iam"
    service: ClassVar[str] = "iam"
    hook_name = "IAM users"

    def inspect_user(self, user_name: str) -> UserState:
        """The user's keys and console access (read-only).

        :param user_name: the IAM user name.
        :raises AccountNotFound: no such user.
        :raises AccountContainmentError: a malformed name, or a user outside ``/staff/``.
        """
        check_user_name(user_name)
        try:
            user = self.call("get_user", lambda: self.client.get_user(UserName=user_name))["User"]
        except ClientError as error:
            if error_code(error) == "NoSuchEntity":
                raise AccountNotFound(f"IAM user {user_name} not found in this tenant's account") from None
            raise
        if user.get("Path") != STAFF_PATH:
            raise AccountContainmentError(
                f"IAM user {user_name} is not a staff account (path {user.get('Path')!r}, "
                f"expected {STAFF_PATH!r}); service accounts are not disabled by this workflow"
            )
        keys = self.call("list_access_keys", lambda: self.client.list_access_keys(UserName=user_name))[
            "AccessKeyMetadata"
        ]
        try:
            self.call("get_login_profile", lambda: self.client.get_login_profile(UserName=user_name))
            console = True
        except ClientError as error:
            if error_code(error) != "NoSuchEntity":
                raise
            console = False
        return UserState(
            user_name=user_name,
            arn=user["Arn"],
            active_keys=tuple(sorted(k["AccessKeyId"] for k in keys if k["Status"] == "Active")),
            inactive_keys=tuple(sorted(k["AccessKeyId"] for k in keys if k["Status"] != "Active")),
            console_access=console,
        )

    def disable_user(self, user_name: str) -> dict[str, Any]:
        """Deactivate every active key and remove the console password; returns what changed.

        :param user_name: the IAM user name.
        :return: the state afterwards (:meth:`UserState.as_xcom`), ``deactivated_keys``,
            ``console_password_removed`` and ``changed``.
        :raises AccountContainmentError: as :meth:`inspect_user`, or access left after disabling.
        """
        before = self.inspect_user(user_name)
        for key_id in before.active_keys:
            self._deactivate(user_name, key_id)
        if before.console_access:
            try:
                self.call(
                    "delete_login_profile", lambda: self.client.delete_login_profile(UserName=user_name)
                )
            except ClientError as error:  # removed meanwhile (a retry, a parallel run): the goal holds
                if error_code(error) != "NoSuchEntity":
                    raise
        after = self.inspect_user(user_name)
        if not after.contained:
            raise AccountContainmentError(f"IAM user {user_name} still has access after disabling: {after}")
        return {
            **after.as_xcom(),
            "deactivated_keys": list(before.active_keys),
            "console_password_removed": before.console_access,
            "changed": not before.contained,
        }

    def _deactivate(self, user_name: str, key_id: str) -> None:
        self.call(
            "update_access_key",
            lambda: self.client.update_access_key(UserName=user_name, AccessKeyId=key_id, Status="Inactive"),
        )

    def disable_user_if_present(self, user_name: str) -> dict[str, Any] | None:
        """:meth:`disable_user`, or ``None`` when the tenant's account has no such user.

        :param user_name: the IAM user name.
        :raises AccountContainmentError: as :meth:`disable_user` (a non-staff user is still refused).
        """
        try:
            return self.disable_user(user_name)
        except AccountNotFound:
            return None
