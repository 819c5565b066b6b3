"""The company directory (LDAP) for the HR workflows: :class:`DirectoryHook`, on ``ldap3``.

Layout (connection ``ldap_default``, extras ``base_dn``, ``people_ou``, ``groups_ou``):

- a person is ``uid=<uid>,ou=people,<base_dn>``, object class ``inetOrgPerson`` only: ``uid``,
  ``givenName``, ``sn``, ``cn`` and ``displayName`` (``"<given name> <surname>"``), ``mail``,
  ``employeeNumber`` (the HR employee id, unique under ``ou=people``) and ``title``. No
  ``posixAccount``: nothing logs in to Unix hosts through this directory, and uid/gid numbers
  would need an allocator; they can be added later without touching existing entries.
- a group is ``cn=<name>,ou=groups,<base_dn>``, a ``groupOfNames`` whose ``member`` values are
  the people's DNs. ``groupOfNames`` requires one member at least, so a group whose last member
  leaves keeps the empty DN ``""`` as a placeholder (never reported as a member).

Every operation is idempotent: it reads the current state, writes only the difference and says
so (``created``/``changed``), so a retried or re-run task converges on the same state.

- :meth:`DirectoryHook.ensure_user` creates or updates a person and adds it to groups (created if
  missing). It never removes a group membership, never changes an existing password
  (``initial_password`` is set only while the account has none) and never re-enables a disabled
  account: that is :class:`DirectoryConflict`, as is a uid that belongs to another employee id.
- :meth:`DirectoryHook.disable_user` disables, never deletes. It removes ``userPassword`` (no
  password, no simple bind, even on a server without ppolicy), then sets
  ``pwdAccountLockedTime: 000001010000Z``: the ppolicy overlay refuses every bind of such an entry,
  a lock that never expires. In that order because ppolicy drops the lock whenever
  ``userPassword`` changes; the flip side is the way back: an administrator who sets a new
  password re-enables the account (this hook never does). Then the person leaves every group; the
  result names the groups. The entry, its ``employeeNumber`` and its history stay for audit.
  "Disabled" (``get_user()["disabled"]``) means exactly that permanent lock.
- ``initial_password`` travels in an RFC 3062 Password Modify request, so the server hashes it
  with its own scheme whatever its configuration.

The admin bind password comes from the Airflow connection (so from the secrets backend) and is
never logged nor put in an error. The hook is a :class:`~include.connectors.base.ConnectorHook`:
each operation is one :meth:`~include.connectors.base.ConnectorHook.call` (rate limit and retry
policy from the extras), and only a directory that cannot be reached or answered (connection
errors, timeouts, ``busy``/``unavailable``) is retried; a retried operation starts over with a
fresh read on a new connection. Without ``use_ssl`` (LDAPS) or ``use_tls`` (StartTLS) the
bind password would cross the network in clear: :class:`LdapSettings`, the one reading of an
LDAP connection (this hook's and the login's, include/auth/directory.py), refuses that for any
host but loopback.
"""

from __future__ import annotations

import ipaddress
import re
import ssl
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, ClassVar, TypeVar

import ldap3
from ldap3.core.exceptions import LDAPCommunicationError, LDAPResponseTimeoutError
from ldap3.utils import log as ldap3_log
from ldap3.utils.conv import escape_filter_chars

from include.connectors.base import ConnectorHook
from include.connectors.errors import PermanentError, TransientError
from include.policies.tenants import STAFF_TENANT

T = TypeVar("T")
SYSTEM = "ldap"

UID_PATTERN = re.compile(r"^[a-z][a-z0-9._-]{1,31}$")
GROUP_PATTERN = re.compile(r"^[a-z][a-z0-9._-]{1,63}$")
EMPLOYEE_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,31}$")
EMAIL_PATTERN = re.compile(
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.[A-Za-z]{2,63}$"
)
NAME_MAX = 64
TITLE_MAX = 128
PASSWORD_MIN = 12
PASSWORD_MAX = 256


@dataclass(frozen=True)
class LdapSettings:
    """Where a directory is and who binds to it, from an Airflow connection of ``conn_type`` ldap.

    One reading of the connection for both of the directory's clients: :class:`DirectoryHook`
    (the HR workflows, as the admin) and :mod:`include.auth.directory` (the login, as the
    read-only account). The password is never in ``repr``.

    :param conn_id: the Airflow connection it was read from (named in errors).
    :param host: the directory's host.
    :param port: its port (389, or 636 with ``use_ssl``, when the connection has none).
    :param bind_dn: the DN that binds (the connection's ``login``).
    :param password: that DN's password.
    :param base_dn: extra ``base_dn``.
    :param people_ou: extra ``people_ou`` (``ou=people``).
    :param groups_ou: extra ``groups_ou`` (``ou=groups``).
    :param use_ssl: extra ``use_ssl``: LDAPS.
    :param use_tls: extra ``use_tls``: StartTLS.
    :param ca_certs_file: extra ``ca_certs_file``: the CA bundle the server's certificate is checked with.
    :param connect_timeout: extra ``connect_timeout_seconds``.
    :param timeout: extra ``timeout_seconds``: the longest wait for an answer.
    """

    conn_id: str
    host: str
    port: int
    bind_dn: str
    password: str = field(repr=False)
    base_dn: str
    people_ou: str = "ou=people"
    groups_ou: str = "ou=groups"
    use_ssl: bool = False
    use_tls: bool = False
    ca_certs_file: str | None = None
    connect_timeout: float = 5.0
    timeout: float = 30.0

    @classmethod
    def from_connection(
        cls, conn: Any, conn_id: str, *, connect_timeout: float = 5.0, timeout: float = 30.0
    ) -> LdapSettings:
        """The settings of ``conn`` (an Airflow ``Connection``).

        :param conn: the connection.
        :param conn_id: its id, for the messages.
        :param connect_timeout: the default of extra ``connect_timeout_seconds``.
        :param timeout: the default of extra ``timeout_seconds``.
        :raises ValueError: a setting is missing (every missing one is named), or clear text
            would carry the password to a host that is not loopback.
        """
        extra = conn.extra_dejson or {}
        missing = [
            name
            for name, value in (
                ("host", conn.host),
                ("login", conn.login),
                ("password", conn.password),
                ("extra.base_dn", extra.get("base_dn")),
            )
            if not value
        ]
        if missing:
            raise ValueError(f"connection {conn_id!r} lacks {', '.join(missing)}")
        use_ssl = _flag(extra.get("use_ssl", False))
        return cls(
            conn_id=conn_id,
            host=str(conn.host),
            port=int(conn.port or (636 if use_ssl else 389)),
            bind_dn=str(conn.login),
            password=str(conn.password),
            base_dn=str(extra["base_dn"]),
            people_ou=str(extra.get("people_ou", "ou=people")),
            groups_ou=str(extra.get("groups_ou", "ou=groups")),
            use_ssl=use_ssl,
            use_tls=_flag(extra.get("use_tls", False)),
            ca_certs_file=extra.get("ca_certs_file") or None,
            connect_timeout=float(extra.get("connect_timeout_seconds", connect_timeout)),
            timeout=float(extra.get("timeout_seconds", timeout)),
        )

    def __post_init__(self) -> None:
        if not (self.use_ssl or self.use_tls) and not _is_loopback(self.host):
            raise ValueError(
                f"refusing to send passwords in clear to {self.host}: set use_ssl (LDAPS) or "
                f"use_tls (StartTLS) in connection {self.conn_id!r}"
            )

    @property
    def url(self) -> str:
        return f"{'ldaps' if self.use_ssl else 'ldap'}://{self.host}:{self.port}"

    @property
    def people_dn(self) -> str:
        return f"{self.people_ou},{self.base_dn}"

    @property
    def groups_dn(self) -> str:
        return f"{self.groups_ou},{self.base_dn}"

    @property
    def receive_timeout(self) -> int:
        """:attr:`timeout` in whole seconds: ldap3 packs it into SO_RCVTIMEO as an integer."""
        return max(1, round(self.timeout))

    def server(self) -> ldap3.Server:
        """The ldap3 server: certificate required with LDAPS or StartTLS, no schema read."""
        tls = None
        if self.use_ssl or self.use_tls:
            tls = ldap3.Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=self.ca_certs_file)
        return ldap3.Server(
            self.host,
            port=self.port,
            use_ssl=self.use_ssl,
            get_info=ldap3.NONE,
            connect_timeout=self.connect_timeout,
            tls=tls,
        )


LOCKED_FOREVER = "000001010000Z"  # ppolicy: an administrative lock with no expiry
PLACEHOLDER_MEMBER = ""  # keeps a groupOfNames valid once its last member has left
PERSON_CLASS = "inetOrgPerson"
GROUP_CLASS = "groupOfNames"
_PERSON_ATTRIBUTES = (
    "uid",
    "givenName",
    "sn",
    "cn",
    "displayName",
    "mail",
    "employeeNumber",
    "title",
    "pwdAccountLockedTime",
    "createTimestamp",
    "modifyTimestamp",
)
# What ensure_user manages, as (LDAP attribute, key of the desired state).
_MANAGED = (
    ("givenName", "given_name"),
    ("sn", "surname"),
    ("cn", "cn"),
    ("displayName", "cn"),
    ("mail", "email"),
    ("title", "title"),
)
_SUCCESS = 0
_NO_SUCH_OBJECT = 32
_NO_SUCH_ATTRIBUTE = 16
_ENTRY_ALREADY_EXISTS = 68
_TYPE_OR_VALUE_EXISTS = 20
_CONSTRAINT_VIOLATION = 19
_OBJECT_CLASS_VIOLATION = 65
_BUSY = 51
_UNAVAILABLE = 52
_GROUP_CONVERGE_ATTEMPTS = 5
TRANSIENT_LDAP_ERRORS = (LDAPCommunicationError, LDAPResponseTimeoutError)
_LDAP3_LOG_LEVEL_LOCK = threading.Lock()


# --- errors ------------------------------------------------------------------------------------
class DirectoryError(PermanentError):
    """The directory refused an operation, or the request cannot succeed: retrying will not help."""

    def __init__(self, message: str, *, operation: str, result: str | None = None) -> None:
        super().__init__(message, system=SYSTEM, operation=operation)
        self.result = result  # the LDAP result name, e.g. "insufficientAccessRights"


class DirectoryValidationError(DirectoryError, ValueError):
    """Bad input, refused before any connection to the directory."""


class DirectoryNotFound(DirectoryError, LookupError):
    """The person (or the directory's base entry) does not exist."""


class DirectoryConflict(DirectoryError):
    """The directory holds something the request must not overwrite (another employee's uid,
    an employee id under another uid, a disabled account)."""


# --- validation (pure) -------------------------------------------------------------------------
def _refuse(operation: str, message: str) -> DirectoryValidationError:
    return DirectoryValidationError(message, operation=operation)


def validate_uid(uid: object, *, operation: str = "validate") -> str:
    if not isinstance(uid, str) or not UID_PATTERN.fullmatch(uid):
        raise _refuse(operation, f"uid {uid!r} must match {UID_PATTERN.pattern}")
    return uid


def validate_group(name: object, *, operation: str = "validate") -> str:
    if not isinstance(name, str) or not GROUP_PATTERN.fullmatch(name):
        raise _refuse(operation, f"group {name!r} must match {GROUP_PATTERN.pattern}")
    return name


def validate_email(email: object, *, operation: str = "validate") -> str:
    if not isinstance(email, str) or len(email) > 254 or not EMAIL_PATTERN.fullmatch(email):
        raise _refuse(operation, f"email {email!r} is not an address like name@example.com")
    return email


def validate_employee_id(employee_id: object, *, operation: str = "validate") -> str:
    if not isinstance(employee_id, str) or not EMPLOYEE_ID_PATTERN.fullmatch(employee_id):
        raise _refuse(operation, f"employee_id {employee_id!r} must match {EMPLOYEE_ID_PATTERN.pattern}")
    return employee_id


def validate_text(field: str, value: object, *, max_length: int, operation: str = "validate") -> str:
    """A display value: not empty, no surrounding blanks, no control characters, bounded."""
    if not isinstance(value, str) or not value or value != value.strip():
        raise _refuse(operation, f"{field} {value!r} must be a non-empty string without surrounding blanks")
    if len(value) > max_length:
        raise _refuse(operation, f"{field} is {len(value)} characters long, at most {max_length} allowed")
    if any(not ch.isprintable() for ch in value):
        raise _refuse(operation, f"{field} {value!r} contains control characters")
    return value


def validate_password(password: object, *, operation: str = "validate") -> str:
    """Length and shape only; the message never contains the password."""
    if not isinstance(password, str) or not PASSWORD_MIN <= len(password) <= PASSWORD_MAX:
        raise _refuse(
            operation, f"initial_password must be a string of {PASSWORD_MIN}-{PASSWORD_MAX} characters"
        )
    if any(not ch.isprintable() for ch in password):
        raise _refuse(operation, "initial_password contains control characters")
    return password


def validate_groups(groups: Iterable[str], *, operation: str = "validate") -> tuple[str, ...]:
    if isinstance(groups, str):
        raise _refuse(operation, f"groups must be a list of group names, got the string {groups!r}")
    return tuple(sorted({validate_group(group, operation=operation) for group in groups}))


# --- results -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class DirectoryResult:
    """What one call did. ``changed`` is False when the directory already was in the asked state."""

    uid: str
    dn: str
    created: bool = False
    changed: bool = False
    disabled: bool = False
    changed_attributes: tuple[str, ...] = ()
    groups_added: tuple[str, ...] = ()
    groups_created: tuple[str, ...] = ()
    groups_removed: tuple[str, ...] = ()

    def as_xcom(self) -> dict[str, Any]:
        return {
            "uid": self.uid,
            "dn": self.dn,
            "created": self.created,
            "changed": self.changed,
            "disabled": self.disabled,
            "changed_attributes": list(self.changed_attributes),
            "groups_added": list(self.groups_added),
            "groups_created": list(self.groups_created),
            "groups_removed": list(self.groups_removed),
        }


def _values(attributes: Mapping[str, Any], name: str) -> list[str]:
    value = attributes.get(name)
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return [str(item) for item in value]
    return [str(value)]


def _first(attributes: Mapping[str, Any], name: str) -> str | None:
    values = _values(attributes, name)
    return values[0] if values else None


# --- the hook ----------------------------------------------------------------------------------
class DirectoryHook(ConnectorHook):
    """Provision people and group memberships in the LDAP directory (see the module docstring).

    :param conn_id: the Airflow connection of the directory (host, port, admin bind DN and
        password; extras ``base_dn``, ``people_ou``, ``groups_ou``, ``use_ssl``, ``use_tls``,
        ``ca_certs_file``, ``connect_timeout_seconds``, ``timeout_seconds``, ``retry_*``); default
        ``ldap_default``.
    :param tenant: the tenant the calls are made for (its rate-limit bucket); default the staff
        tenant, whose directory this is.
    """

    system: ClassVar[str] = SYSTEM
    default_conn_name = "ldap_default"
    conn_type = "ldap"
    hook_name = "Directory (LDAP)"

    def __init__(self, conn_id: str | None = None, *, tenant: str = STAFF_TENANT, **kwargs: Any) -> None:
        super().__init__(conn_id, tenant=tenant, **kwargs)

    # --- lazily built from the connection ----------------------------------------------------
    @cached_property
    def settings(self) -> LdapSettings:
        """The directory's settings from the connection (read once per hook).

        :raises DirectoryError: a setting is missing, or the password would travel in clear.
        """
        try:
            return LdapSettings.from_connection(self.connection, self.conn_id, timeout=self.timeout)
        except ValueError as exc:
            raise DirectoryError(str(exc), operation="connect") from None

    @property
    def base_dn(self) -> str:
        return self.settings.base_dn

    @property
    def people_dn(self) -> str:
        return self.settings.people_dn

    @property
    def groups_dn(self) -> str:
        return self.settings.groups_dn

    @property
    def url(self) -> str:
        return self.settings.url

    def user_dn(self, uid: str) -> str:
        """The DN of person ``uid``.

        :param uid: the login name.
        """
        return f"uid={validate_uid(uid)},{self.people_dn}"

    def group_dn(self, name: str) -> str:
        """The DN of group ``name``.

        :param name: the group's ``cn``.
        """
        return f"cn={validate_group(name)},{self.groups_dn}"

    # --- public operations -------------------------------------------------------------------
    def ensure_user(
        self,
        uid: str,
        *,
        given_name: str,
        surname: str,
        email: str,
        employee_id: str,
        title: str | None = None,
        groups: Iterable[str] = (),
        initial_password: str | None = None,
    ) -> DirectoryResult:
        """Create or update person ``uid`` and add it to ``groups`` (created when missing).

        Memberships in other groups stay; an existing password is never changed.

        :param uid: the login name (``^[a-z][a-z0-9._-]{1,31}$``).
        :param given_name: the given name.
        :param surname: the surname.
        :param email: the work email address (``mail``).
        :param employee_id: the HR employee id (``employeeNumber``, unique under ``ou=people``).
        :param title: the job title; ``None`` leaves it as it is.
        :param groups: the groups the person must be in (created when missing).
        :param initial_password: set only while the account has no password; never logged.
        :raises DirectoryValidationError: bad input (nothing was sent).
        :raises DirectoryConflict: a disabled account, a uid held by another employee id, an
            employee id held by another uid.
        """
        operation = "ensure_user"
        validate_uid(uid, operation=operation)
        desired: dict[str, str | None] = {
            "given_name": validate_text("given_name", given_name, max_length=NAME_MAX, operation=operation),
            "surname": validate_text("surname", surname, max_length=NAME_MAX, operation=operation),
            "email": validate_email(email, operation=operation),
            "title": None
            if title is None
            else validate_text("title", title, max_length=TITLE_MAX, operation=operation),
        }
        desired["cn"] = f"{given_name} {surname}"
        validate_employee_id(employee_id, operation=operation)
        wanted_groups = validate_groups(groups, operation=operation)
        if initial_password is not None:
            validate_password(initial_password, operation=operation)

        def work(conn: ldap3.Connection) -> DirectoryResult:
            entry = self._read_person(conn, uid, operation)
            dn = entry["dn"] if entry is not None else self.user_dn(uid)
            holder = self._find_by_employee_id(conn, employee_id, operation)
            if holder is not None and holder.lower() != dn.lower():
                raise DirectoryConflict(
                    f"employee_id {employee_id!r} already belongs to {holder}, not to uid {uid!r}",
                    operation=operation,
                )
            created = False
            changed_attributes: list[str] = []
            if entry is None:
                created = self._add_person(conn, uid, employee_id, desired, operation)
                entry = self._read_person(conn, uid, operation)
                if entry is None:
                    raise DirectoryError(f"{dn} vanished right after it was added", operation=operation)
            if not created:
                self._check_may_update(entry, uid, employee_id, operation)
                changed_attributes = self._update_person(conn, entry, desired, operation)
            groups_added, groups_created = self._join_groups(conn, entry["dn"], wanted_groups, operation)
            if initial_password is not None and not self._has_password(conn, entry["dn"], operation):
                self._set_password(conn, entry["dn"], initial_password, operation)
                changed_attributes.append("userPassword")
            return DirectoryResult(
                uid=uid,
                dn=entry["dn"],
                created=created,
                changed=created or bool(changed_attributes or groups_added),
                changed_attributes=tuple(changed_attributes),
                groups_added=groups_added,
                groups_created=groups_created,
            )

        result = self._run(operation, work)
        self._log_result(operation, result)
        return result

    def disable_user(self, uid: str) -> DirectoryResult:
        """Lock the account and remove its password and group memberships; never delete it.

        :param uid: the login name.
        :raises DirectoryNotFound: no such person.
        """
        operation = "disable_user"
        validate_uid(uid, operation=operation)

        def work(conn: ldap3.Connection) -> DirectoryResult:
            entry = self._require_person(conn, uid, operation)
            dn = entry["dn"]
            changed_attributes: list[str] = []
            # Password first: ppolicy drops pwdAccountLockedTime on any change of userPassword.
            if self._has_password(conn, dn, operation):
                conn.modify(dn, {"userPassword": [(ldap3.MODIFY_DELETE, [])]})
                what = f"removing the password of {dn}"
                if self._check(conn, operation, what, ok=(_NO_SUCH_ATTRIBUTE,)) == _SUCCESS:
                    changed_attributes.append("userPassword")
                    entry = self._require_person(conn, uid, operation)
            if not entry["disabled"]:  # no lock, or a lock that expires (failed binds)
                conn.modify(dn, {"pwdAccountLockedTime": [(ldap3.MODIFY_REPLACE, [LOCKED_FOREVER])]})
                self._check(conn, operation, f"locking {dn} (pwdAccountLockedTime; is ppolicy loaded?)")
                changed_attributes.append("pwdAccountLockedTime")
            removed = tuple(
                name
                for name in self._groups_with_member(conn, dn, operation)
                if self._converge_membership(conn, name, dn, member=False, operation=operation)
            )
            return DirectoryResult(
                uid=uid,
                dn=dn,
                changed=bool(changed_attributes or removed),
                disabled=True,
                changed_attributes=tuple(sorted(changed_attributes)),
                groups_removed=removed,
            )

        result = self._run(operation, work)
        self._log_result(operation, result)
        return result

    def get_user(self, uid: str) -> dict[str, Any] | None:
        """The person as a plain dict (never a password attribute), or None when absent.

        :param uid: the login name.
        """
        operation = "get_user"
        validate_uid(uid, operation=operation)

        def work(conn: ldap3.Connection) -> dict[str, Any] | None:
            entry = self._read_person(conn, uid, operation)
            if entry is None:
                return None
            groups = self._groups_with_member(conn, entry["dn"], operation)
            return {
                "uid": entry["uid"],
                "dn": entry["dn"],
                "given_name": entry["givenName"],
                "surname": entry["sn"],
                "display_name": entry["displayName"],
                "email": entry["mail"],
                "employee_id": entry["employeeNumber"],
                "title": entry["title"],
                "disabled": entry["disabled"],
                "groups": groups,
                "created_at": entry["createTimestamp"],
                "modified_at": entry["modifyTimestamp"],
            }

        return self._run(operation, work)

    def groups_of(self, uid: str) -> list[str]:
        """The names of the groups ``uid`` is a member of, sorted.

        :param uid: the login name.
        :raises DirectoryNotFound: no such person.
        """
        operation = "groups_of"
        validate_uid(uid, operation=operation)

        def work(conn: ldap3.Connection) -> list[str]:
            entry = self._require_person(conn, uid, operation)
            return self._groups_with_member(conn, entry["dn"], operation)

        return self._run(operation, work)

    # --- connection and retries --------------------------------------------------------------
    def _run(self, operation: str, work: Callable[[ldap3.Connection], T]) -> T:
        """One logical operation on a fresh admin connection; retried whole on connection errors."""

        def attempt() -> T:
            try:
                with self._session(operation) as conn:
                    return work(conn)
            except TRANSIENT_LDAP_ERRORS as exc:
                # ldap3's socket messages name the address and the OS error, never the credentials.
                raise TransientError(
                    f"{type(exc).__name__} talking to {self.url}: {exc}", system=SYSTEM, operation=operation
                ) from None

        return self.call(operation, attempt)

    @contextmanager
    def _session(self, operation: str) -> Iterator[ldap3.Connection]:
        settings = self.settings
        # Never log or format this object: ldap3's repr of a Connection shows the password.
        ldap_conn = ldap3.Connection(
            settings.server(),
            user=settings.bind_dn,
            password=settings.password,
            receive_timeout=settings.receive_timeout,
            raise_exceptions=False,
            auto_referrals=False,
            read_only=False,
        )
        try:
            ldap_conn.open()
            if settings.use_tls and not settings.use_ssl and not ldap_conn.start_tls():
                raise DirectoryError(
                    f"StartTLS with {self.url} failed: {_describe(ldap_conn)}", operation=operation
                )
            if not ldap_conn.bind():
                raise DirectoryError(
                    f"bind as {settings.bind_dn} to {self.url} refused: {_describe(ldap_conn)}",
                    operation=operation,
                    result=ldap_conn.result.get("description") if ldap_conn.result else None,
                )
            yield ldap_conn
        finally:
            with suppress(Exception):
                ldap_conn.unbind()

    def _log_result(self, operation: str, result: DirectoryResult) -> None:
        self.log.info(
            "ldap %s %s: created=%s changed=%s attributes=%s groups +%s -%s",
            operation,
            result.dn,
            result.created,
            result.changed,
            list(result.changed_attributes),
            list(result.groups_added),
            list(result.groups_removed),
        )

    # --- reads -------------------------------------------------------------------------------
    def _check(self, conn: ldap3.Connection, operation: str, what: str, *, ok: tuple[int, ...] = ()) -> int:
        code = int(conn.result.get("result", -1)) if conn.result else -1
        if code == _SUCCESS or code in ok:
            return code
        description = conn.result.get("description") if conn.result else None
        if code in (_BUSY, _UNAVAILABLE):  # the server is up but cannot serve now: worth another try
            raise TransientError(
                f"{what} at {self.url}: {_describe(conn)}", system=SYSTEM, operation=operation
            )
        error_class = DirectoryNotFound if code == _NO_SUCH_OBJECT else DirectoryError
        raise error_class(f"{what} at {self.url}: {_describe(conn)}", operation=operation, result=description)

    def _search(
        self,
        conn: ldap3.Connection,
        base: str,
        search_filter: str,
        attributes: Iterable[str],
        operation: str,
        *,
        scope: str = ldap3.LEVEL,
    ) -> list[dict[str, Any]]:
        conn.search(base, search_filter, search_scope=scope, attributes=list(attributes))
        self._check(conn, operation, f"search {search_filter} under {base}")
        return [item for item in conn.response or [] if item.get("type") == "searchResEntry"]

    def _read_person(self, conn: ldap3.Connection, uid: str, operation: str) -> dict[str, Any] | None:
        found = self._search(
            conn,
            self.people_dn,
            f"(&(objectClass={PERSON_CLASS})(uid={escape_filter_chars(uid)}))",
            _PERSON_ATTRIBUTES,
            operation,
        )
        if not found:
            return None
        if len(found) > 1:
            names = ", ".join(item["dn"] for item in found)
            raise DirectoryConflict(
                f"uid {uid!r} is held by {len(found)} entries: {names}", operation=operation
            )
        attributes = found[0].get("attributes", {})
        entry: dict[str, Any] = {"dn": found[0]["dn"]}
        for name in _PERSON_ATTRIBUTES:
            entry[name] = _first(attributes, name)
        entry["uid"] = uid
        entry["disabled"] = entry.pop("pwdAccountLockedTime") == LOCKED_FOREVER
        return entry

    def _require_person(self, conn: ldap3.Connection, uid: str, operation: str) -> dict[str, Any]:
        entry = self._read_person(conn, uid, operation)
        if entry is None:
            raise DirectoryNotFound(f"uid {uid!r} not found in {self.people_dn}", operation=operation)
        return entry

    def _find_by_employee_id(self, conn: ldap3.Connection, employee_id: str, operation: str) -> str | None:
        found = self._search(
            conn,
            self.people_dn,
            f"(employeeNumber={escape_filter_chars(employee_id)})",
            ["1.1"],
            operation,
            scope=ldap3.SUBTREE,
        )
        return str(found[0]["dn"]) if found else None

    def _has_password(self, conn: ldap3.Connection, dn: str, operation: str) -> bool:
        # A presence filter: the hash itself is never read.
        return bool(self._search(conn, dn, "(userPassword=*)", ["1.1"], operation, scope=ldap3.BASE))

    def _groups_with_member(self, conn: ldap3.Connection, dn: str, operation: str) -> list[str]:
        found = self._search(
            conn,
            self.groups_dn,
            f"(&(objectClass={GROUP_CLASS})(member={escape_filter_chars(dn)}))",
            ["cn"],
            operation,
        )
        return sorted(_first(item.get("attributes", {}), "cn") or "" for item in found)

    def _read_group(self, conn: ldap3.Connection, name: str, operation: str) -> list[str] | None:
        """The group's member DNs (placeholder included), or None when it does not exist."""
        found = self._search(
            conn,
            self.groups_dn,
            f"(&(objectClass={GROUP_CLASS})(cn={escape_filter_chars(name)}))",
            ["member"],
            operation,
        )
        if not found:
            return None
        return _values(found[0].get("attributes", {}), "member")

    # --- writes ------------------------------------------------------------------------------
    def _add_person(
        self,
        conn: ldap3.Connection,
        uid: str,
        employee_id: str,
        desired: Mapping[str, str | None],
        operation: str,
    ) -> bool:
        """Add the entry; False when a concurrent call added it first (then it is updated instead)."""
        attributes: dict[str, Any] = {"uid": uid, "employeeNumber": employee_id}
        for attribute, key in _MANAGED:
            if desired[key] is not None:
                attributes[attribute] = desired[key]
        dn = self.user_dn(uid)
        conn.add(dn, [PERSON_CLASS], attributes)
        code = self._check(conn, operation, f"adding {dn}", ok=(_ENTRY_ALREADY_EXISTS, _CONSTRAINT_VIOLATION))
        if code == _CONSTRAINT_VIOLATION:  # the unique overlay: employeeNumber taken meanwhile
            raise DirectoryConflict(
                f"adding {dn} refused, employee_id {employee_id!r} is already in use: {_describe(conn)}",
                operation=operation,
            )
        return code == _SUCCESS

    def _check_may_update(self, entry: Mapping[str, Any], uid: str, employee_id: str, operation: str) -> None:
        if entry["disabled"]:
            raise DirectoryConflict(
                f"uid {uid!r} ({entry['dn']}) is disabled; ensure_user does not re-enable accounts",
                operation=operation,
            )
        if entry["employeeNumber"] != employee_id:
            raise DirectoryConflict(
                f"uid {uid!r} ({entry['dn']}) belongs to employee_id {entry['employeeNumber']!r}, "
                f"not {employee_id!r}",
                operation=operation,
            )

    def _update_person(
        self,
        conn: ldap3.Connection,
        entry: Mapping[str, Any],
        desired: Mapping[str, str | None],
        operation: str,
    ) -> list[str]:
        changes: dict[str, list[tuple[str, list[str]]]] = {}
        for attribute, key in _MANAGED:
            value = desired[key]
            if value is not None and entry[attribute] != value:
                changes[attribute] = [(ldap3.MODIFY_REPLACE, [value])]
        if changes:
            conn.modify(entry["dn"], changes)
            self._check(conn, operation, f"updating {', '.join(sorted(changes))} of {entry['dn']}")
        return sorted(changes)

    def _set_password(self, conn: ldap3.Connection, dn: str, password: str, operation: str) -> None:
        # RFC 3062 Password Modify: the server hashes it (olcPasswordHash), whatever its ppolicy says.
        with _ldap3_payloads_unlogged():
            conn.extend.standard.modify_password(user=dn, new_password=password)
        self._check(conn, operation, f"setting the initial password of {dn}")

    def _join_groups(
        self, conn: ldap3.Connection, dn: str, groups: tuple[str, ...], operation: str
    ) -> tuple[tuple[str, ...], tuple[str, ...]]:
        added: list[str] = []
        created: list[str] = []
        for name in groups:
            if self._read_group(conn, name, operation) is None:
                group_dn = self.group_dn(name)
                conn.add(group_dn, [GROUP_CLASS], {"cn": name, "member": [dn]})
                if (
                    self._check(conn, operation, f"adding {group_dn}", ok=(_ENTRY_ALREADY_EXISTS,))
                    == _SUCCESS
                ):
                    added.append(name)
                    created.append(name)
                    continue
            if self._converge_membership(conn, name, dn, member=True, operation=operation):
                added.append(name)
        return tuple(added), tuple(created)

    def _converge_membership(
        self, conn: ldap3.Connection, name: str, dn: str, *, member: bool, operation: str
    ) -> bool:
        """Make ``dn`` a member of group ``name`` or not; True if this call changed the group.

        A groupOfNames may not be empty: the placeholder goes in with the last member leaving and
        out with the first one joining, in the same modify. A concurrent change makes the modify
        fail as a whole (no such value / value exists): read again and retry.
        """
        group_dn = self.group_dn(name)
        for _ in range(_GROUP_CONVERGE_ATTEMPTS):
            members = self._read_group(conn, name, operation)
            if members is None:
                if member:
                    raise DirectoryNotFound(f"group {group_dn} vanished", operation=operation)
                return False
            mine = [value for value in members if value.lower() == dn.lower()]
            if bool(mine) == member:
                return False
            if member:
                change = [(ldap3.MODIFY_ADD, [dn])]
                if PLACEHOLDER_MEMBER in members:
                    change.append((ldap3.MODIFY_DELETE, [PLACEHOLDER_MEMBER]))
            else:
                change = [(ldap3.MODIFY_DELETE, mine)]
                if len(mine) == len(members):
                    change.append((ldap3.MODIFY_ADD, [PLACEHOLDER_MEMBER]))
            conn.modify(group_dn, {"member": change})
            what = f"{'adding' if member else 'removing'} {dn} {'to' if member else 'from'} {group_dn}"
            retry_on = (_NO_SUCH_ATTRIBUTE, _TYPE_OR_VALUE_EXISTS, _OBJECT_CLASS_VIOLATION)
            if self._check(conn, operation, what, ok=retry_on) == _SUCCESS:
                return True
        raise DirectoryError(
            f"group {group_dn} kept changing under {_GROUP_CONVERGE_ATTEMPTS} attempts", operation=operation
        )


@contextmanager
def _ldap3_payloads_unlogged() -> Iterator[None]:
    """ldap3's debug log (off unless someone turns it on) masks bind passwords but prints the payload
    of an extended operation: hold it at BASIC (no payloads) while a password travels that way."""
    with _LDAP3_LOG_LEVEL_LOCK:
        level = ldap3_log.get_library_log_detail_level()
        if level > ldap3_log.BASIC:
            ldap3_log.set_library_log_detail_level(ldap3_log.BASIC)
        try:
            yield
        finally:
            if level > ldap3_log.BASIC:
                ldap3_log.set_library_log_detail_level(level)


def _describe(conn: ldap3.Connection) -> str:
    """The LDAP result as ``name (code): server message``; built from the result only."""
    result = conn.result or {}
    text = f"{result.get('description', 'no result')} ({result.get('result', '?')})"
    message = str(result.get("message") or "").strip()
    return f"{text}: {message}" if message else text


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _flag(value: object) -> bool:
    return value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes")
