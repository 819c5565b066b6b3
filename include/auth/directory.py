"""The company directory as the login sees it: read-only, through the Airflow connection ``ldap_login``.

The connection (``conn_type`` ldap) names the directory and the orchestrator's read-only service
account: ``host``, ``port``, ``login`` (the reader's DN), ``password``, and in ``extra``:
``base_dn``, ``people_ou`` (``ou=people``), ``groups_ou`` (``ou=groups``), ``use_ssl`` (LDAPS,
port 636), ``use_tls`` (StartTLS on 389), ``ca_certs_file`` (the CA bundle to verify the server
with), ``connect_timeout_seconds`` (default 3) and ``timeout_seconds`` (default 5). A clear-text
connection is refused to anything but a loopback address: the people's passwords travel in it.

- :meth:`Directory.authenticate`: find the person with the reader (by ``uid``, filter escaped),
  refuse a locked entry (``pwdAccountLockedTime``: how offboarding disables an account,
  include/connectors/ldap.py) and an empty password (an LDAP "unauthenticated bind" would
  succeed with any DN and no password), then bind as the person's DN with their password: the
  directory checks it (and its ppolicy refuses a locked account's bind too).
- :meth:`Directory.lookup`: the person and their groups, without a password (the leaver check of
  :mod:`include.auth.fab`).
- :func:`roles_for`: the Airflow roles a person's groups grant (``include/policies/access.yaml``).

Why ldap3 and not FAB's own LDAP login: FAB's ``auth_user_ldap`` needs python-ldap, which has no
wheel here (a C build against libldap); ldap3 (pure Python) is already the project's LDAP client.

The directory being unreachable raises :class:`DirectoryUnavailable`: callers refuse (fail closed),
never let someone in because the directory could not say no.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import ldap3
from ldap3.core.exceptions import LDAPException
from ldap3.utils.conv import escape_filter_chars

from include.connectors.ldap import LdapSettings
from include.policies.access import AccessPolicy, load_access

log = logging.getLogger(__name__)

LOGIN_CONN_ID = "ldap_login"
UID_PATTERN = re.compile(r"^[a-z][a-z0-9._-]{1,31}$")
PASSWORD_MAX = 256
PERSON_CLASS = "inetOrgPerson"
GROUP_CLASS = "groupOfNames"
LOCK_ATTRIBUTE = "pwdAccountLockedTime"
_PERSON_ATTRIBUTES = ("uid", "givenName", "sn", "mail", LOCK_ATTRIBUTE)
_INVALID_CREDENTIALS = 49
# How long the connection settings read from the secrets backend are reused in one process: a
# rotated reader password is picked up within this time, without a secrets call per request.
SETTINGS_TTL_SECONDS = 300.0


class DirectoryUnavailable(Exception):
    """The directory could not be asked (unreachable, timed out, the reader refused): refuse."""


@dataclass(frozen=True)
class DirectoryPerson:
    """A person of the directory as the login needs them (never a password)."""

    dn: str
    uid: str
    given_name: str
    surname: str
    mail: str
    locked: bool
    groups: frozenset[str]


def settings_from_connection(conn: Any) -> LdapSettings:
    """Settings from an Airflow ``Connection`` (``ldap_login``): read as the HR hook reads its
    own, with shorter waits (a person is waiting at the login page).

    :raises DirectoryUnavailable: a setting is missing or cannot be right, naming it.
    """
    conn_id = str(getattr(conn, "conn_id", None) or LOGIN_CONN_ID)
    try:
        return LdapSettings.from_connection(conn, conn_id, connect_timeout=3.0, timeout=5.0)
    except ValueError as exc:
        raise DirectoryUnavailable(str(exc)) from None


def valid_uid(username: object) -> str | None:
    """``username`` as a directory uid (lower-cased), or None when it cannot be one."""
    if not isinstance(username, str):
        return None
    uid = username.lower()
    return uid if UID_PATTERN.fullmatch(uid) else None


def _first(attributes: dict[str, Any], name: str) -> str:
    value = attributes.get(name)
    if isinstance(value, list):
        value = value[0] if value else ""
    return "" if value is None else str(value)


class Directory:
    """The login's view of the directory; a fresh connection per call (thread-safe, no pool)."""

    def __init__(self, settings: LdapSettings) -> None:
        self.settings = settings
        # One bound reader connection, kept between lookups: binding costs the directory a password
        # hash (about 50 ms of slapd's CPU with SHA-512 crypt, 100k rounds) and a lookup then takes
        # about 1 ms. ldap3's synchronous connection is not thread-safe: one lookup at a time.
        self._reader_lock = threading.Lock()
        self._kept: ldap3.Connection | None = None

    def close(self) -> None:
        """Unbind the kept reader connection (the next lookup opens a new one)."""
        with self._reader_lock:
            self._drop_kept()

    def _drop_kept(self) -> None:
        conn, self._kept = self._kept, None
        if conn is not None:
            with suppress(Exception):
                conn.unbind()

    # --- public ---------------------------------------------------------------------------
    def authenticate(self, uid: str, password: str) -> DirectoryPerson | None:
        """The person when ``password`` is theirs and the account is not locked; else None.

        :raises DirectoryUnavailable: the directory could not be asked.
        """
        uid_ok = valid_uid(uid)
        if uid_ok is None or not isinstance(password, str) or not password or len(password) > PASSWORD_MAX:
            return None
        person = self.lookup(uid_ok)
        if person is None or person.locked:
            return None
        return person if self.verify_password(person, password) else None

    def verify_password(self, person: DirectoryPerson, password: str) -> bool:
        """Whether the directory accepts ``password`` for ``person`` (a bind as their DN).

        An empty or over-long password is refused without asking: with no password an LDAP
        simple bind is "unauthenticated" and succeeds for any DN.

        :raises DirectoryUnavailable: the directory could not be asked.
        """
        if person.locked or not isinstance(password, str) or not password or len(password) > PASSWORD_MAX:
            return False
        return self._bind_as(person.dn, password)

    def lookup(self, uid: str) -> DirectoryPerson | None:
        """The person ``uid`` and their groups, or None when there is no such person.

        :raises DirectoryUnavailable: the directory could not be asked.
        """
        uid_ok = valid_uid(uid)
        if uid_ok is None:
            return None
        with self._reader_lock:
            reused = self._kept is not None and not self._kept.closed
            try:
                found = self._find(self._reader(), uid_ok)
            except DirectoryUnavailable:
                if not reused:
                    raise
                # The kept connection may have gone stale (directory restarted, idle timeout):
                # once more on a fresh one; its failure is the directory's answer.
                found = self._find(self._reader(), uid_ok)
        if found is None:
            return None
        entry, groups = found
        dn = str(entry["dn"])
        attributes = entry.get("attributes", {})
        return DirectoryPerson(
            dn=dn,
            uid=_first(attributes, "uid") or uid_ok,
            given_name=_first(attributes, "givenName"),
            surname=_first(attributes, "sn"),
            mail=_first(attributes, "mail"),
            locked=bool(attributes.get(LOCK_ATTRIBUTE)),
            groups=groups,
        )

    # --- connections ----------------------------------------------------------------------
    def _open(self, user: str, password: str) -> ldap3.Connection:
        # Never log or format the connection: ldap3's repr of a Connection shows the password.
        conn = ldap3.Connection(
            self.settings.server(),
            user=user,
            password=password,
            receive_timeout=self.settings.receive_timeout,
            raise_exceptions=False,
            auto_referrals=False,
            read_only=True,
        )
        try:
            conn.open()
            if self.settings.use_tls and not self.settings.use_ssl and not conn.start_tls():
                raise DirectoryUnavailable(f"StartTLS with {self.settings.url} failed")
        except LDAPException as exc:
            raise DirectoryUnavailable(
                f"directory {self.settings.url} (connection {self.settings.conn_id!r}) unreachable: "
                f"{type(exc).__name__}"
            ) from None
        return conn

    def _find(self, conn: ldap3.Connection, uid: str) -> tuple[dict[str, Any], frozenset[str]] | None:
        try:
            entry = self._search_one(
                conn,
                self.settings.people_dn,
                f"(&(objectClass={PERSON_CLASS})(uid={escape_filter_chars(uid)}))",
                list(_PERSON_ATTRIBUTES),
            )
            if entry is None:
                return None
            return entry, self._groups_of(conn, str(entry["dn"]))
        except DirectoryUnavailable:
            self._drop_kept()
            raise

    def _reader(self) -> ldap3.Connection:
        """The kept reader connection, bound; opened and bound first if there is none.

        Called with :attr:`_reader_lock` held.
        """
        if self._kept is not None and not self._kept.closed:
            return self._kept
        settings = self.settings
        conn = self._open(settings.bind_dn, settings.password)
        try:
            bound = conn.bind()
        except LDAPException as exc:
            with suppress(Exception):
                conn.unbind()
            raise DirectoryUnavailable(
                f"directory {settings.url}: reader bind failed: {type(exc).__name__}"
            ) from None
        if not bound:
            description = (conn.result or {}).get("description")
            with suppress(Exception):
                conn.unbind()
            raise DirectoryUnavailable(
                f"directory {settings.url} refused the reader {settings.bind_dn} "
                f"(connection {settings.conn_id!r}): {description}"
            )
        self._kept = conn
        return conn

    def _bind_as(self, dn: str, password: str) -> bool:
        conn = self._open(dn, password)
        try:
            try:
                if conn.bind():
                    return True
            except LDAPException as exc:
                raise DirectoryUnavailable(
                    f"directory {self.settings.url}: bind failed: {type(exc).__name__}"
                ) from None
            code = (conn.result or {}).get("result")
            if code != _INVALID_CREDENTIALS:
                # Not "wrong password": busy, unavailable... the directory could not say yes.
                log.warning(
                    "directory %s refused the bind of %s: %s",
                    self.settings.url,
                    dn,
                    (conn.result or {}).get("description"),
                )
            return False
        finally:
            with suppress(Exception):
                conn.unbind()

    def _search(
        self, conn: ldap3.Connection, base: str, search_filter: str, attributes: list[str]
    ) -> list[dict[str, Any]]:
        try:
            conn.search(
                base,
                search_filter,
                search_scope=ldap3.SUBTREE,
                attributes=attributes,
                time_limit=self.settings.receive_timeout,
            )
        except LDAPException as exc:
            raise DirectoryUnavailable(
                f"directory {self.settings.url}: search failed: {type(exc).__name__}"
            ) from None
        code = (conn.result or {}).get("result")
        if code not in (0, 32):  # success, noSuchObject (an empty OU)
            raise DirectoryUnavailable(
                f"directory {self.settings.url}: search under {base} failed: "
                f"{(conn.result or {}).get('description')}"
            )
        return [entry for entry in conn.response or [] if entry.get("type") == "searchResEntry"]

    def _search_one(
        self, conn: ldap3.Connection, base: str, search_filter: str, attributes: list[str]
    ) -> dict[str, Any] | None:
        found = self._search(conn, base, search_filter, attributes)
        if len(found) > 1:
            # Two people with one uid: refuse rather than pick one.
            log.error(
                "directory %s: %d entries match one uid under %s; refusing",
                self.settings.url,
                len(found),
                base,
            )
            return None
        return found[0] if found else None

    def _groups_of(self, conn: ldap3.Connection, dn: str) -> frozenset[str]:
        found = self._search(
            conn,
            self.settings.groups_dn,
            f"(&(objectClass={GROUP_CLASS})(member={escape_filter_chars(dn)}))",
            ["cn"],
        )
        return frozenset(_first(entry.get("attributes", {}), "cn") for entry in found) - {""}


# --- the process's directory, from the connection ---------------------------------------------
_lock = threading.Lock()
_cached: tuple[float, Directory] | None = None


def directory(conn_id: str = LOGIN_CONN_ID) -> Directory:
    """The directory of connection ``conn_id`` (settings reused for :data:`SETTINGS_TTL_SECONDS`).

    :raises DirectoryUnavailable: the connection is missing or incomplete.
    """
    global _cached
    with _lock:
        now = time.monotonic()
        if (
            _cached is not None
            and _cached[1].settings.conn_id == conn_id
            and now - _cached[0] < SETTINGS_TTL_SECONDS
        ):
            return _cached[1]
    from airflow.sdk import BaseHook

    try:
        conn = BaseHook.get_connection(conn_id)
    except Exception as exc:  # any failure to read it means no directory
        raise DirectoryUnavailable(
            f"connection {conn_id!r} could not be read: {type(exc).__name__}"
        ) from None
    found = Directory(settings_from_connection(conn))
    with _lock:
        replaced, _cached = _cached, (time.monotonic(), found)
    if replaced is not None and replaced[1] is not found:
        replaced[1].close()  # its reader connection may carry a rotated password
    return found


def reset() -> None:
    """Forget the cached connection settings (tests; a rotated reader password)."""
    global _cached, _standing
    with _lock:
        replaced, _cached = _cached, None
        _standing = None
    if replaced is not None:
        replaced[1].close()


class StandingCache:
    """Whether a directory user may still act, asked again at most every ``ttl`` seconds per user.

    The leaver check of a token (:meth:`include.auth.fab.ApprovalAwareFabAuthManager.deserialize_user`):
    a person locked or removed in the directory is refused within ``ttl`` of it. An unreachable
    directory refuses everyone (fail closed), logged once until it answers again; that outcome is
    kept for :attr:`unavailable_ttl` seconds only, so a directory outage does not make every
    request wait for a connect timeout.
    """

    unavailable_ttl = 5.0

    def __init__(self, ttl: float, *, lookup_person: Any = None, clock: Any = time.monotonic) -> None:
        self.ttl = ttl
        self._lookup = lookup_person or lookup
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[float, bool]] = {}
        self._outage_logged = False

    def allows(self, uid: str) -> bool:
        """True when ``uid`` exists in the directory and is not locked (answer at most ``ttl`` old)."""
        key = uid.lower()
        now = self._clock()
        with self._lock:
            cached = self._entries.get(key)
            if cached is not None and now < cached[0]:
                return cached[1]
        try:
            person = self._lookup(key)
        except DirectoryUnavailable as exc:
            with self._lock:
                if not self._outage_logged:
                    log.error("directory unavailable, refusing directory users' tokens: %s", exc)
                    self._outage_logged = True
                self._entries[key] = (now + min(self.ttl, self.unavailable_ttl), False)
            return False
        allowed = person is not None and not person.locked
        with self._lock:
            if self._outage_logged:
                log.warning("directory reachable again")
                self._outage_logged = False
            if len(self._entries) > 10_000:  # bounded: drop whatever has expired
                self._entries = {k: v for k, v in self._entries.items() if v[0] > now}
            self._entries[key] = (now + self.ttl, allowed)
        return allowed

    def forget(self, uid: str) -> None:
        """Ask the directory about ``uid`` at the next check (e.g. right after a login)."""
        with self._lock:
            self._entries.pop(uid.lower(), None)


_standing: StandingCache | None = None


def standing() -> StandingCache:
    """The process's :class:`StandingCache`, its TTL the access policy's ``recheck_interval``."""
    global _standing
    with _lock:
        if _standing is None:
            _standing = StandingCache(load_access().recheck_interval.total_seconds())
        return _standing


def authenticate(uid: str, password: str) -> DirectoryPerson | None:
    """:meth:`Directory.authenticate` on the ``ldap_login`` directory."""
    return directory().authenticate(uid, password)


def lookup(uid: str) -> DirectoryPerson | None:
    """:meth:`Directory.lookup` on the ``ldap_login`` directory."""
    return directory().lookup(uid)


def roles_for(person: DirectoryPerson | None, policy: AccessPolicy | None = None) -> set[str]:
    """The Airflow roles ``person``'s groups grant (none for no person or a locked one)."""
    if person is None or person.locked:
        return set()
    return (policy or load_access()).roles_of_groups(person.groups)
