"""Contain a compromised IAM user in a tenant's AWS account: deactivate its keys, remove its console
password. Disabled, never deleted: the user, its keys (inactive) and its history stay for the
investigation, and a release can re-activate the keys.

Used by the SOC "disable account" workflow: :func:`inspect_user` as the read-only
``identity-inspect`` role (what the approver sees), :func:`disable_user` as the privileged
``identity-disable`` role after the approval. Both only touch users under the ``/staff/`` path,
which is what the capability roles are scoped to (``user/staff/*``). Repeating :func:`disable_user`
changes nothing and says so (SCALE-3).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any, Final

USER_NAME: Final = re.compile(r"[A-Za-z0-9+=,.@_-]{1,64}")
STAFF_PATH: Final = "/staff/"


class AccountContainmentError(RuntimeError):
    """The account cannot be contained as asked; the message says what and where."""


@dataclass(frozen=True)
class UserState:
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


def inspect_user(iam: Any, user_name: str) -> UserState:
    """The user's keys and console access (read-only).

    :raises AccountContainmentError: unknown user, or a user outside ``/staff/``.
    """
    from botocore.exceptions import ClientError

    check_user_name(user_name)
    try:
        user = iam.get_user(UserName=user_name)["User"]
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") == "NoSuchEntity":
            raise AccountContainmentError(
                f"IAM user {user_name} not found in this tenant's account"
            ) from None
        raise
    if user.get("Path") != STAFF_PATH:
        raise AccountContainmentError(
            f"IAM user {user_name} is not a staff account (path {user.get('Path')!r}, "
            f"expected {STAFF_PATH!r}); service accounts are not disabled by this workflow"
        )
    keys = iam.list_access_keys(UserName=user_name)["AccessKeyMetadata"]
    try:
        iam.get_login_profile(UserName=user_name)
        console = True
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") != "NoSuchEntity":
            raise
        console = False
    return UserState(
        user_name=user_name,
        arn=user["Arn"],
        active_keys=tuple(sorted(k["AccessKeyId"] for k in keys if k["Status"] == "Active")),
        inactive_keys=tuple(sorted(k["AccessKeyId"] for k in keys if k["Status"] != "Active")),
        console_access=console,
    )


def disable_user(iam: Any, user_name: str) -> dict[str, Any]:
    """Deactivate every active key and remove the console password; returns what changed."""
    from botocore.exceptions import ClientError

    before = inspect_user(iam, user_name)
    for key_id in before.active_keys:
        iam.update_access_key(UserName=user_name, AccessKeyId=key_id, Status="Inactive")
    if before.console_access:
        try:
            iam.delete_login_profile(UserName=user_name)
        except ClientError as error:  # removed meanwhile (a retry, a parallel run): the goal holds
            if error.response.get("Error", {}).get("Code") != "NoSuchEntity":
                raise
    after = inspect_user(iam, user_name)
    if not after.contained:
        raise AccountContainmentError(f"IAM user {user_name} still has access after disabling: {after}")
    return {
        **after.as_xcom(),
        "deactivated_keys": list(before.active_keys),
        "console_password_removed": before.console_access,
        "changed": not before.contained,
    }
