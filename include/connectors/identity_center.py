"""AWS IAM Identity Center identities for the HR workflows, through the ``identitystore`` API.

:class:`IdentityCenterHook` makes every call on a capability session
(:class:`~include.connectors.aws.AwsCapabilityHook`): ``identity-admin`` for onboarding
(:meth:`IdentityCenterHook.ensure_user`), ``identity-disable`` for offboarding
(:meth:`IdentityCenterHook.disable_user`); it refuses an operation on a session of the other
capability. The identity store id (``d-...``) is a parameter or the ``identity_store_id`` extra of
the AWS connection (a string, or a mapping tenant -> id when tenants have stores of their own).

Every operation validates all of its input before the first AWS call and is idempotent: it reads
first, writes only what is missing, and says so (``created``/``changed``), so a retried or re-run
task converges on the same state and reports ``changed=False``.

Decisions:

- **Groups are never created here.** A group gives access only through the permission sets
  assigned to it, and those are infrastructure (Terraform). A group of the role mapping
  (``include/policies/hr_roles.yaml``) that is missing from the store is an error naming it,
  raised before the user is created: a typo in the mapping must not produce an employee whose
  groups grant nothing. Memberships outside the role mapping are left alone (a role change is not
  onboarding).
- **Disable, never delete.** The identitystore API has no call to disable a user: the console's
  "Disable user access" has no public API (the read-only ``UserStatus`` in DescribeUser reports
  it; aws/aws-cli#9954 asks for one). :meth:`IdentityCenterHook.disable_user` therefore removes every
  group membership (no permission set reaches the user through a group any more) and marks the
  user ``UserType = "Disabled"`` with UpdateUser, which also makes onboarding refuse the user name
  later (a rehire is a decision, not a side effect). The user, its id and its history stay.
  Direct (user, not group) account assignments are not touched: onboarding never makes them, and
  listing them needs ``sso-admin`` in the Identity Center instance account.
- **Sessions.** No API ends a user's AWS access portal session or the IAM role sessions it already
  opened (the console's "Active sessions" tab is console-only). They end at their expiry (portal
  session duration; permission set session duration, 1 h by default). AWS's documented way to cut
  role sessions at once is a Deny policy matching ``identitystore:userId``, applied as a service
  control policy from the management account: :func:`session_revocation_plan` renders it with
  the manual steps for the ticket; applying it is outside the identity capabilities.
- Employee id: sent as ``employeeNumber`` of the ``aws:identitystore:enterprise`` extension and
  compared when the store returns it; a user name held by a user with another email (or another
  employee number) is a conflict, never overwritten.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar, Final

from botocore.exceptions import ClientError

from include.connectors.aws import AwsCapabilityHook, error_code, error_status, is_transient
from include.connectors.context import RunContext
from include.connectors.errors import PermanentError, TransientError
from include.policies.capabilities import role_name

SYSTEM: Final = "identitystore"
ONBOARDING_CAPABILITY: Final = "identity-admin"
OFFBOARDING_CAPABILITY: Final = "identity-disable"
STORE_ID_EXTRA: Final = "identity_store_id"
ENTERPRISE_EXTENSION: Final = "aws:identitystore:enterprise"
ACTIVE_USER_TYPE: Final = "Employee"
DISABLED_USER_TYPE: Final = "Disabled"

# The identitystore actions each operation calls, by the capability it runs under. Resources: the
# store, arn:aws:identitystore::{account_id}:identitystore/<store id>, and the user, group and
# membership ARNs, arn:aws:identitystore:::user/*, group/* and membership/* (no account in them).
REQUIRED_ACTIONS: Final[dict[str, frozenset[str]]] = {
    ONBOARDING_CAPABILITY: frozenset(
        {
            "identitystore:GetGroupId",
            "identitystore:GetUserId",
            "identitystore:DescribeUser",
            "identitystore:CreateUser",
            "identitystore:ListGroupMembershipsForMember",
            "identitystore:CreateGroupMembership",
        }
    ),
    OFFBOARDING_CAPABILITY: frozenset(
        {
            "identitystore:GetUserId",
            "identitystore:DescribeUser",
            "identitystore:ListGroupMembershipsForMember",
            "identitystore:DescribeGroup",
            "identitystore:DeleteGroupMembership",
            "identitystore:UpdateUser",
        }
    ),
}

STORE_ID_PATTERN: Final = re.compile(
    r"^(?:d-[0-9a-f]{10}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$"
)
USER_NAME_PATTERN: Final = re.compile(r"^[a-z][a-z0-9._-]{1,31}$")
GROUP_PATTERN: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
EMPLOYEE_ID_PATTERN: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,31}$")
EMAIL_PATTERN: Final = re.compile(r"^[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}$")
NAME_MAX: Final = 64
_DENIED_CODES: Final = frozenset({"AccessDeniedException", "AccessDenied", "403"})


# --- errors -------------------------------------------------------------------------------------
class IdentityCenterError(PermanentError):
    """Identity Center refused an operation, or it cannot succeed: retrying will not help."""

    def __init__(self, message: str, *, operation: str, code: str | None = None) -> None:
        super().__init__(message, system=SYSTEM, operation=operation)
        self.code = code  # the AWS error code, when AWS answered


class IdentityCenterValidationError(IdentityCenterError, ValueError):
    """Bad input, refused before any call to AWS."""


class IdentityCenterNotFound(IdentityCenterError, LookupError):
    """The user (or a group of the role mapping) does not exist in the identity store."""


class IdentityCenterConflict(IdentityCenterError):
    """The store holds something the request must not overwrite (another person under this user
    name, an email of another user, a disabled identity)."""


class IdentityCenterAccessDenied(IdentityCenterError):
    """The capability role lacks an ``identitystore:`` action (see the message)."""


# --- results ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class IdentityResult:
    """What one call did. ``changed`` is False when the store already was in the asked state."""

    identity_store_id: str
    user_name: str
    user_id: str
    created: bool = False
    changed: bool = False
    disabled: bool = False
    groups: tuple[str, ...] = ()  # ensure_user: the asked groups, all of which the user is now in
    groups_added: tuple[str, ...] = ()
    groups_removed: tuple[str, ...] = ()
    user_status: str | None = None  # DescribeUser's UserStatus (console "Disable user access"), if reported

    def as_xcom(self) -> dict[str, Any]:
        """Ids, names of groups and flags only: no email, no personal name."""
        return {
            "identity_store_id": self.identity_store_id,
            "user_name": self.user_name,
            "user_id": self.user_id,
            "created": self.created,
            "changed": self.changed,
            "disabled": self.disabled,
            "groups": list(self.groups),
            "groups_added": list(self.groups_added),
            "groups_removed": list(self.groups_removed),
            "user_status": self.user_status,
        }


@dataclass(frozen=True)
class SessionRevocationPlan:
    """What ends the sessions a disabled user may still hold; nothing here is applied automatically."""

    identity_store_id: str
    user_id: str
    deny_policy: dict[str, Any]
    steps: tuple[str, ...]

    def markdown(self) -> str:
        return "\n".join(
            [
                "### Sessions still open",
                "",
                "Identity Center has no API to end a user's sessions; until they expire, do:",
                "",
                *(f"{number}. {step}" for number, step in enumerate(self.steps, start=1)),
            ]
        )


# --- validation (pure) --------------------------------------------------------------------------
def check_identity_store_id(value: object) -> str:
    """:raises IdentityCenterValidationError: not ``d-`` + 10 hex digits (or a UUID store id)."""
    if not isinstance(value, str) or not STORE_ID_PATTERN.fullmatch(value):
        raise IdentityCenterValidationError(
            f"identity store id {value!r} is not like d-1234567890", operation="configure"
        )
    return value


def _text_problem(field: str, value: object) -> str | None:
    if not isinstance(value, str) or not value or value != value.strip():
        return f"{field} {value!r} must be a non-empty string without surrounding blanks"
    if len(value) > NAME_MAX:
        return f"{field} is {len(value)} characters long, at most {NAME_MAX} allowed"
    if any(not ch.isprintable() for ch in value):
        return f"{field} {value!r} contains control characters"
    return None


def _user_name_problem(user_name: object) -> str | None:
    if not isinstance(user_name, str) or not USER_NAME_PATTERN.fullmatch(user_name):
        return f"user name {user_name!r} must match {USER_NAME_PATTERN.pattern}"
    return None


def _groups(groups: object) -> tuple[list[str], tuple[str, ...]]:
    """Problems of a group list, and its names (sorted, unique) when there are none."""
    if isinstance(groups, str | bytes | Mapping) or not isinstance(groups, Iterable):
        return [f"groups must be a list of group names, got {groups!r}"], ()
    names = list(groups)
    if not names:
        return ["groups must name at least one group (the role mapping's groups)"], ()
    problems = [
        f"group {name!r} must match {GROUP_PATTERN.pattern}"
        for name in names
        if not isinstance(name, str) or not GROUP_PATTERN.fullmatch(name)
    ]
    return problems, () if problems else tuple(sorted({str(name) for name in names}))


def _refuse(operation: str, problems: list[str]) -> None:
    if problems:
        raise IdentityCenterValidationError("; ".join(problems), operation=operation)


def validate_onboarding(
    user_name: object,
    *,
    given_name: object,
    family_name: object,
    email: object,
    employee_id: object,
    groups: object,
) -> tuple[str, ...]:
    """Every problem of an :meth:`IdentityCenterHook.ensure_user` request at once; the groups, sorted."""
    problems = [
        p
        for p in (
            _user_name_problem(user_name),
            _text_problem("given_name", given_name),
            _text_problem("family_name", family_name),
        )
        if p
    ]
    if not isinstance(email, str) or len(email) > 254 or not EMAIL_PATTERN.fullmatch(email):
        problems.append(f"email {email!r} is not an address like name@example.com")
    if not isinstance(employee_id, str) or not EMPLOYEE_ID_PATTERN.fullmatch(employee_id):
        problems.append(f"employee_id {employee_id!r} must match {EMPLOYEE_ID_PATTERN.pattern}")
    group_problems, names = _groups(groups)
    _refuse("ensure_user", problems + group_problems)
    return names


# --- the hook -----------------------------------------------------------------------------------
def _api_name(method: str) -> str:
    return "".join(part.capitalize() for part in method.split("_"))


class IdentityCenterHook(AwsCapabilityHook):
    """One identity store in a tenant's account, through ``identitystore`` as a capability role.

    The operations check they run on the capability meant for them (:data:`ONBOARDING_CAPABILITY`
    for :meth:`ensure_user`, :data:`OFFBOARDING_CAPABILITY` for :meth:`disable_user`). Nothing is
    read in ``__init__``: the capability and a given store id are checked there, the connection and
    AWS on first use.

    :param aws_conn_id: the Airflow AWS connection (base credentials, endpoints and, unless
        ``identity_store_id`` is given, the ``identity_store_id`` extra); default ``aws_default``.
    :param capability: ``identity-admin`` (onboarding) or ``identity-disable`` (offboarding).
    :param tenant: the tenant whose account holds the identity store.
    :param identity_store_id: the store (``d-`` + 10 hex digits); default: the connection extra.
    :param run_context: the run making the calls; default: the running task's.
    :raises IdentityCenterValidationError: not an identity capability, or a malformed store id.
    """

    system: ClassVar[str] = SYSTEM
    service: ClassVar[str] = SYSTEM
    hook_name = "IAM Identity Center"

    def __init__(
        self,
        aws_conn_id: str | None = None,
        *,
        capability: str,
        tenant: str,
        identity_store_id: str | None = None,
        run_context: RunContext | None = None,
        **kwargs: Any,
    ) -> None:
        if capability not in (ONBOARDING_CAPABILITY, OFFBOARDING_CAPABILITY):
            raise IdentityCenterValidationError(
                f"capability {capability!r} is not an identity capability "
                f"({ONBOARDING_CAPABILITY!r} or {OFFBOARDING_CAPABILITY!r})",
                operation="configure",
            )
        super().__init__(aws_conn_id, capability=capability, tenant=tenant, run_context=run_context, **kwargs)
        self.given_identity_store_id = (
            None if identity_store_id is None else check_identity_store_id(identity_store_id)
        )

    @cached_property
    def identity_store_id(self) -> str:
        """The store: the one given, else the connection's ``identity_store_id`` extra for the tenant."""
        if self.given_identity_store_id is not None:
            return self.given_identity_store_id
        return identity_store_id_from_extras(self.extras, self.tenant)

    # -- AWS calls, with errors sorted by what to do about them --
    def _call(self, operation: str, method: str, *, passthrough: tuple[str, ...] = (), **kwargs: Any) -> Any:
        """``identitystore.<method>`` on this store, through :meth:`call` (transient errors retried).

        Every call may be repeated: reads, and writes whose repeat is a conflict or a not-found the
        caller passes through (``passthrough``) and handles.
        """
        store_id = self.identity_store_id
        return self.call(operation, lambda: self._request(operation, method, store_id, passthrough, kwargs))

    def _request(
        self, operation: str, method: str, store_id: str, passthrough: tuple[str, ...], kwargs: dict[str, Any]
    ) -> Any:
        try:
            return getattr(self.client, method)(IdentityStoreId=store_id, **kwargs)
        except ClientError as error:
            code, status = error_code(error), error_status(error)
            if code in passthrough:
                raise
            message = str(error.response.get("Error", {}).get("Message") or error)
            action = f"identitystore:{_api_name(method)}"
            if code in _DENIED_CODES or status == 403:
                role = role_name(self.capability)
                raise IdentityCenterAccessDenied(
                    f"{action} denied in identity store {self.identity_store_id} ({role} must grant it): "
                    f"{message}",
                    operation=operation,
                    code=code,
                ) from None
            if is_transient(error):
                raise TransientError(
                    f"{action} failed in identity store {self.identity_store_id}: {message}",
                    system=SYSTEM,
                    operation=operation,
                    status=status,
                ) from error
            raise IdentityCenterError(
                f"{action} refused in identity store {self.identity_store_id}: {code}: {message}",
                operation=operation,
                code=code,
            ) from None

    def _require_capability(self, operation: str, needed: str) -> None:
        if self.capability != needed:
            raise IdentityCenterValidationError(
                f"{operation} needs a session of capability {needed!r}, this one is {self.capability!r}",
                operation=operation,
            )

    # -- reads --
    def user_id(self, user_name: str, *, operation: str = "find_user") -> str | None:
        """The UserId of ``user_name``, or None when the store has no such user.

        :param user_name: the user name.
        :param operation: the operation named in errors.
        """
        _refuse(operation, [p for p in (_user_name_problem(user_name),) if p])
        return self._lookup_user(operation, "userName", user_name)

    def _lookup_user(self, operation: str, path: str, value: str) -> str | None:
        identifier = {"UniqueAttribute": {"AttributePath": path, "AttributeValue": value}}
        try:
            answer = self._call(
                operation,
                "get_user_id",
                AlternateIdentifier=identifier,
                passthrough=("ResourceNotFoundException",),
            )
        except ClientError:
            return None
        return str(answer["UserId"])

    def describe_user(self, user_id: str, *, operation: str = "find_user") -> dict[str, Any]:
        """DescribeUser of ``user_id``, with the enterprise extension.

        :param user_id: the store's UserId.
        :param operation: the operation named in errors.
        """
        answer = self._call(operation, "describe_user", UserId=user_id, Extensions=[ENTERPRISE_EXTENSION])
        return {k: v for k, v in answer.items() if k != "ResponseMetadata"}

    def _group_id(self, operation: str, display_name: str) -> str | None:
        identifier = {"UniqueAttribute": {"AttributePath": "displayName", "AttributeValue": display_name}}
        try:
            answer = self._call(
                operation,
                "get_group_id",
                AlternateIdentifier=identifier,
                passthrough=("ResourceNotFoundException",),
            )
        except ClientError:
            return None
        return str(answer["GroupId"])

    def _memberships(self, operation: str, user_id: str) -> list[dict[str, Any]]:
        memberships: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            paging: dict[str, Any] = {"NextToken": token} if token else {}
            page = self._call(
                operation, "list_group_memberships_for_member", MemberId={"UserId": user_id}, **paging
            )
            memberships += page.get("GroupMemberships", [])
            token = page.get("NextToken")
            if not token:
                return memberships

    def _group_name(self, operation: str, group_id: str) -> str:
        try:
            answer = self._call(
                operation, "describe_group", GroupId=group_id, passthrough=("ResourceNotFoundException",)
            )
        except ClientError:
            return group_id  # deleted meanwhile: the id is all there is to report
        return str(answer.get("DisplayName") or group_id)

    def groups_of(self, user_name: str) -> list[str]:
        """Display names of the groups ``user_name`` is a member of, sorted (read-only).

        :param user_name: the user name.
        :raises IdentityCenterNotFound: no such user.
        """
        user_id = self._require_user("groups_of", user_name)
        return sorted(
            self._group_name("groups_of", m["GroupId"]) for m in self._memberships("groups_of", user_id)
        )

    def _require_user(self, operation: str, user_name: str) -> str:
        user_id = self.user_id(user_name, operation=operation)
        if user_id is None:
            raise IdentityCenterNotFound(
                f"user {user_name!r} not found in identity store {self.identity_store_id}",
                operation=operation,
            )
        return user_id

    # -- onboarding --
    def ensure_user(
        self,
        user_name: str,
        *,
        given_name: str,
        family_name: str,
        email: str,
        employee_id: str,
        groups: Iterable[str],
    ) -> IdentityResult:
        """The user exists with these groups among its memberships (see the module docstring).

        :param user_name: the user name (``^[a-z][a-z0-9._-]{1,31}$``).
        :param given_name: the given name.
        :param family_name: the family name.
        :param email: the work email address.
        :param employee_id: the HR employee id (``employeeNumber`` of the enterprise extension).
        :param groups: the role mapping's groups; each must exist in the store.

        :raises IdentityCenterValidationError: bad input (nothing was called).
        :raises IdentityCenterNotFound: a group is missing (nothing was written).
        :raises IdentityCenterConflict: the user name or email belongs to someone else, or the
            identity was disabled by offboarding (nothing was written).
        """
        operation = "ensure_user"
        wanted = validate_onboarding(
            user_name,
            given_name=given_name,
            family_name=family_name,
            email=email,
            employee_id=employee_id,
            groups=groups,
        )
        self._require_capability(operation, ONBOARDING_CAPABILITY)
        group_ids = {name: self._group_id(operation, name) for name in wanted}
        missing = [name for name, group_id in group_ids.items() if group_id is None]
        if missing:
            raise IdentityCenterNotFound(
                f"group(s) {', '.join(repr(m) for m in missing)} not found in identity store "
                f"{self.identity_store_id}; groups are provisioned with their permission sets, "
                "onboarding does not create them",
                operation=operation,
            )
        user_id = self.user_id(user_name, operation=operation)
        created = False
        if user_id is None:
            user_id, created = self._create_user(
                user_name,
                given_name=given_name,
                family_name=family_name,
                email=email,
                employee_id=employee_id,
            )
        if not created:
            self._check_same_person(user_name, user_id, email=email, employee_id=employee_id)
        member_of = {m["GroupId"] for m in self._memberships(operation, user_id)}
        added = []
        for name in wanted:
            group_id = group_ids[name]
            if group_id in member_of:
                continue
            try:
                self._call(
                    operation,
                    "create_group_membership",
                    GroupId=group_id,
                    MemberId={"UserId": user_id},
                    passthrough=("ConflictException",),
                )
            except ClientError:
                continue  # added by a concurrent run of the same request meanwhile
            added.append(name)
        return IdentityResult(
            identity_store_id=self.identity_store_id,
            user_name=user_name,
            user_id=user_id,
            created=created,
            changed=created or bool(added),
            groups=wanted,
            groups_added=tuple(added),
        )

    def _create_user(
        self, user_name: str, *, given_name: str, family_name: str, email: str, employee_id: str
    ) -> tuple[str, bool]:
        operation = "ensure_user"
        holder = self._lookup_user(operation, "emails.value", email)
        if holder is not None:
            raise IdentityCenterConflict(
                f"the email of user {user_name!r} already belongs to another user ({holder}) in identity "
                f"store {self.identity_store_id}",
                operation=operation,
            )
        try:
            answer = self._call(
                operation,
                "create_user",
                UserName=user_name,
                Name={"GivenName": given_name, "FamilyName": family_name},
                DisplayName=f"{given_name} {family_name}",
                Emails=[{"Value": email, "Type": "work", "Primary": True}],
                UserType=ACTIVE_USER_TYPE,
                Extensions={ENTERPRISE_EXTENSION: {"employeeNumber": employee_id}},
                passthrough=("ConflictException",),
            )
        except ClientError:
            # Created by a concurrent run of the same request meanwhile: continue with that user,
            # after the same checks as for any existing user.
            user_id = self.user_id(user_name, operation=operation)
            if user_id is None:
                raise
            return user_id, False
        return str(answer["UserId"]), True

    def _check_same_person(self, user_name: str, user_id: str, *, email: str, employee_id: str) -> None:
        operation = "ensure_user"
        user = self.describe_user(user_id, operation=operation)
        where = f"user {user_name!r} in identity store {self.identity_store_id}"
        if user.get("UserType") == DISABLED_USER_TYPE:
            raise IdentityCenterConflict(
                f"{where} was disabled by offboarding; re-enabling an identity is a decision of its own, "
                "not part of onboarding",
                operation=operation,
            )
        emails = {str(e.get("Value", "")).lower() for e in user.get("Emails") or []}
        if email.lower() not in emails:
            raise IdentityCenterConflict(
                f"{where} exists with another email address: the user name may belong to another person",
                operation=operation,
            )
        recorded = ((user.get("Extensions") or {}).get(ENTERPRISE_EXTENSION) or {}).get("employeeNumber")
        if recorded is not None and recorded != employee_id:
            raise IdentityCenterConflict(
                f"{where} has employee number {recorded}, not {employee_id}", operation=operation
            )

    # -- offboarding --
    def disable_user(self, user_name: str) -> IdentityResult:
        """Remove every group membership of ``user_name`` and mark it disabled; never delete it.

        :param user_name: the user name.

        :raises IdentityCenterValidationError: bad input (nothing was called).
        :raises IdentityCenterNotFound: no such user (nothing was written).
        """
        operation = "disable_user"
        _refuse(operation, [p for p in (_user_name_problem(user_name),) if p])
        self._require_capability(operation, OFFBOARDING_CAPABILITY)
        user_id = self._require_user(operation, user_name)
        user = self.describe_user(user_id, operation=operation)
        removed = []
        for membership in self._memberships(operation, user_id):
            name = self._group_name(operation, membership["GroupId"])
            try:
                self._call(
                    operation,
                    "delete_group_membership",
                    MembershipId=membership["MembershipId"],
                    passthrough=("ResourceNotFoundException",),
                )
            except ClientError:
                continue  # removed meanwhile
            removed.append(name)
        marked = user.get("UserType") != DISABLED_USER_TYPE
        if marked:
            self._call(
                operation,
                "update_user",
                UserId=user_id,
                Operations=[{"AttributePath": "userType", "AttributeValue": DISABLED_USER_TYPE}],
            )
        return IdentityResult(
            identity_store_id=self.identity_store_id,
            user_name=user_name,
            user_id=user_id,
            changed=marked or bool(removed),
            disabled=True,
            groups_removed=tuple(sorted(removed)),
            user_status=user.get("UserStatus"),
        )


def session_revocation_plan(result: IdentityResult) -> SessionRevocationPlan:
    """The Deny policy and manual steps that end the sessions of a user :meth:`disable_user` disabled.

    The policy is AWS's documented one ("Use a Deny policy to revoke active user permissions", IAM
    Identity Center user guide): attach it (or add the user id to it) as a service control policy
    in the management account. Nothing here calls AWS.
    """
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "DenyOffboardedIdentityCenterUser",
                "Effect": "Deny",
                "Action": ["*"],
                "Resource": "*",
                "Condition": {"StringEquals": {"identitystore:userId": [result.user_id]}},
            }
        ],
    }
    steps = (
        f"In the IAM Identity Center console, user {result.user_name}: Active sessions - delete every "
        "session (ends the AWS access portal session and, within up to an hour, CLI sessions).",
        "If the user's status is still Enabled: Disable user access (no API exists for it).",
        f"Role sessions already opened from permission sets last until their session duration ends; to "
        f"cut them now, add user id {result.user_id} to the Deny policy of the management account's "
        "service control policy.",
    )
    return SessionRevocationPlan(
        identity_store_id=result.identity_store_id, user_id=result.user_id, deny_policy=policy, steps=steps
    )


# --- construction on a capability session -------------------------------------------------------
def identity_store_id_from_extras(extras: Mapping[str, Any], tenant: str) -> str:
    """``identity_store_id`` of the connection extras: a string, or a mapping tenant -> id."""
    value = extras.get(STORE_ID_EXTRA)
    if isinstance(value, Mapping):
        value = value.get(tenant)
    if value is None:
        raise IdentityCenterValidationError(
            f"no identity store id for tenant {tenant!r}: pass identity_store_id or set the connection "
            f"extra {STORE_ID_EXTRA!r}",
            operation="configure",
        )
    return check_identity_store_id(value)
