"""People and groups of the local directory, so the walk-through logs in with no user administration.

At stack start (devstack/stack.py, after OpenLDAP) :func:`seed` puts :data:`SEEDED` into the
profile's OpenLDAP, as its admin: each person (``uid=<uid>,ou=people``) with a generated password
kept in ``.local/<profile>/secrets/people/<uid>`` (0600; never printed, never on a command line:
the directory hashes it, RFC 3062 Password Modify) and the groups (``groupOfNames``
``cn=<name>,ou=groups``) of ``include/policies/access.yaml`` that grant their roles. Re-seeding is
idempotent: a seeded person keeps the password in their file, their memberships are set again,
and a lock left by an earlier demo (offboarding) is lifted.

The tests use :func:`add_person`, :func:`set_groups` and :func:`lock` to make their own people,
move them between groups and lock them as offboarding does.

The login reads the directory through the Airflow connection ``ldap_login``
(:func:`login_connection`): the read-only service account, never the admin.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import ldap3

from devstack import openldap
from devstack.config import HOST, Profile
from devstack.processes import ServiceError

LOGIN_CONN_ID = "ldap_login"
# The directory's uid rule, minus ".": privacyIDEA token serials (TOTP-<uid>) allow [0-9A-Za-z_-] only.
UID_OK = re.compile(r"^[a-z][a-z0-9_-]{1,31}$")
MAIL_DOMAIN = "secops.example"
LOCKED_FOREVER = "000001010000Z"  # ppolicy: an administrative lock with no expiry (as offboarding)
PLACEHOLDER_MEMBER = ""  # keeps a groupOfNames valid once its last member has left (as the connector)

# uid -> the directory groups (access.yaml) the person is in: one person per kind of user. No dots
# in these uids: each gets a TOTP token whose serial (TOTP-<uid>) privacyIDEA limits to [0-9A-Za-z_-].
PLATFORM_ADMIN = "pat-admin"  # the tests' and benchmarks' admin client (not the break-glass admin)
SEEDED: dict[str, list[str]] = {
    PLATFORM_ADMIN: ["orchestrator-admins"],
    "sam-analyst": ["soc-operator", "soc-oncall"],
    "lee-soclead": ["soc-operator", "soc-lead", "soc-approver"],
    "kim-soclead": ["soc-operator", "soc-lead", "soc-approver"],
    "hana-hrlead": ["hr-operator", "hr-lead", "hr-approver"],
    "hugo-hrops": ["hr-operator"],
    "omar-secofficer": ["security-officer"],
    "fay-controller": ["invoicing-operator", "finance-controller", "invoicing-approver"],
    "fred-finance": ["invoicing-operator"],
    "cleo-cloudlead": ["implementation-operator", "cloud-lead", "implementation-approver"],
    "carl-cloudeng": ["implementation-operator"],
    "ava-auditor": ["auditors"],
}


def groups_for_roles(roles: Iterable[str]) -> list[str]:
    """The directory groups that grant exactly ``roles`` (access.yaml): what a test puts a person in
    to give them those Airflow roles, and no other.

    :raises ValueError: a role no group grants on its own.
    """
    from include.policies.access import load_access

    access = load_access()
    groups = []
    for role in roles:
        alone = [name for name in access.groups_granting(role) if access.groups[name].roles == (role,)]
        if not alone:
            raise ValueError(f"no directory group grants {role!r} alone (include/policies/access.yaml)")
        groups.append(alone[0])
    return sorted(set(groups))


def people_dn(uid: str) -> str:
    return f"uid={uid},{openldap.PEOPLE_OU},{openldap.SUFFIX}"


def group_dn(name: str) -> str:
    return f"cn={name},{openldap.GROUPS_OU},{openldap.SUFFIX}"


def password_file(profile: Profile, uid: str) -> Path:
    """Where person ``uid``'s password is kept (0600)."""
    return profile.root / "secrets" / "people" / uid


def password_of(profile: Profile, uid: str) -> str:
    """The password kept for ``uid`` (:func:`add_person` wrote it)."""
    return password_file(profile, uid).read_text().strip()


def admin_login(profile: Profile) -> tuple[str, str]:
    """User name and password of the platform admin the tests and benchmarks use (a directory
    person in orchestrator-admins; the break-glass local admin is for emergencies only)."""
    return PLATFORM_ADMIN, password_of(profile, PLATFORM_ADMIN)


def login_connection(profile: Profile) -> dict[str, object]:
    """The Airflow connection ``ldap_login``: the login's read-only view of the directory."""
    return {
        "conn_type": "ldap",
        "host": HOST,
        "port": profile.ldap_port,
        "login": openldap.READER_DN,
        "password": openldap.reader_password(profile),
        "extra": {
            "base_dn": openldap.SUFFIX,
            "people_ou": openldap.PEOPLE_OU,
            "groups_ou": openldap.GROUPS_OU,
            "use_tls": False,  # loopback only; production: use_ssl (LDAPS) and ca_certs_file
            "connect_timeout_seconds": 3,
            "timeout_seconds": 5,
        },
    }


@contextmanager
def _admin(profile: Profile) -> Iterator[ldap3.Connection]:
    server = ldap3.Server(HOST, port=profile.ldap_port, get_info=ldap3.NONE, connect_timeout=5)
    # Never log or format this object: ldap3's repr of a Connection shows the password.
    conn = ldap3.Connection(
        server,
        user=openldap.ADMIN_DN,
        password=openldap.admin_password(profile),
        receive_timeout=10,
        raise_exceptions=False,
    )
    try:
        if not conn.bind():
            raise ServiceError(
                f"admin bind to {openldap.url(profile)} refused: {conn.result.get('description')}"
            )
        yield conn
    finally:
        with suppress(Exception):
            conn.unbind()


def _check(conn: ldap3.Connection, what: str, *, ok: tuple[int, ...] = ()) -> int:
    code = int((conn.result or {}).get("result", -1))
    if code != 0 and code not in ok:
        raise ServiceError(f"{what} failed: {(conn.result or {}).get('description')} ({code})")
    return code


def _person_exists(conn: ldap3.Connection, uid: str) -> bool:
    conn.search(people_dn(uid), "(objectClass=inetOrgPerson)", search_scope=ldap3.BASE, attributes=["uid"])
    return _check(conn, f"reading {people_dn(uid)}", ok=(32,)) == 0 and bool(conn.entries)


def _ensure_person(conn: ldap3.Connection, uid: str) -> None:
    if _person_exists(conn, uid):
        return
    given, _, family = uid.replace(".", "-").partition("-")
    attributes = {
        "uid": uid,
        "givenName": given.capitalize(),
        "sn": (family or given).capitalize(),
        "cn": f"{given.capitalize()} {(family or given).capitalize()}",
        "mail": f"{uid}@{MAIL_DOMAIN}",
    }
    conn.add(people_dn(uid), ["inetOrgPerson"], attributes)
    _check(conn, f"adding {people_dn(uid)}", ok=(68,))


def _all_groups(conn: ldap3.Connection) -> dict[str, list[str]]:
    base = f"{openldap.GROUPS_OU},{openldap.SUFFIX}"
    conn.search(base, "(objectClass=groupOfNames)", attributes=["cn", "member"])
    _check(conn, f"listing groups under {base}")
    found = {}
    for entry in conn.response or []:
        if entry.get("type") == "searchResEntry":
            attrs = entry["attributes"]
            cn = attrs["cn"][0] if isinstance(attrs["cn"], list) else attrs["cn"]
            found[str(cn)] = [str(m) for m in attrs.get("member", [])]
    return found


def _set_memberships(conn: ldap3.Connection, uid: str, groups: Iterable[str]) -> None:
    dn = people_dn(uid)
    wanted = set(groups)
    existing = _all_groups(conn)
    for name in sorted(wanted - set(existing)):
        conn.add(group_dn(name), ["groupOfNames"], {"cn": name, "member": [dn]})
        _check(conn, f"adding {group_dn(name)}")
    for name, members in existing.items():
        mine = [m for m in members if m.lower() == dn.lower()]
        if name in wanted and not mine:
            change = [(ldap3.MODIFY_ADD, [dn])]
            if PLACEHOLDER_MEMBER in members:
                change.append((ldap3.MODIFY_DELETE, [PLACEHOLDER_MEMBER]))
        elif name not in wanted and mine:
            change = [(ldap3.MODIFY_DELETE, mine)]
            if len(mine) == len(members):
                change.append((ldap3.MODIFY_ADD, [PLACEHOLDER_MEMBER]))
        else:
            continue
        conn.modify(group_dn(name), {"member": change})
        _check(conn, f"changing the members of {group_dn(name)}")


def _keep_password(profile: Profile, uid: str, password: str) -> None:
    path = password_file(profile, uid)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_text(password)


def add_person(profile: Profile, uid: str, groups: list[str], *, password: str | None = None) -> str:
    """Create (or restore) person ``uid`` in exactly ``groups`` (created when missing); return the password.

    The password is ``password``, else the one kept for ``uid``, else a new random one; it is set
    in the directory (which hashes it), which also lifts a lock, and kept in :func:`password_file`.
    """
    path = password_file(profile, uid)
    chosen = password or (path.read_text().strip() if path.exists() else secrets.token_urlsafe(18))
    with _admin(profile) as conn:
        _ensure_person(conn, uid)
        conn.extend.standard.modify_password(user=people_dn(uid), new_password=chosen)
        _check(conn, f"setting the password of {people_dn(uid)}")
        # ppolicy drops pwdAccountLockedTime on a password change; say so explicitly anyway.
        conn.modify(people_dn(uid), {"pwdAccountLockedTime": [(ldap3.MODIFY_DELETE, [])]})
        _check(conn, f"unlocking {people_dn(uid)}", ok=(16,))  # 16: was not locked
        _set_memberships(conn, uid, groups)
    _keep_password(profile, uid, chosen)
    return chosen


def set_groups(profile: Profile, uid: str, groups: list[str]) -> None:
    """Make ``uid`` a member of exactly ``groups`` (created when missing)."""
    with _admin(profile) as conn:
        if not _person_exists(conn, uid):
            raise ServiceError(f"{people_dn(uid)} does not exist")
        _set_memberships(conn, uid, groups)


def lock(profile: Profile, uid: str) -> None:
    """Lock ``uid`` as offboarding does (``pwdAccountLockedTime``); password and groups stay, so
    only the lock refuses them."""
    with _admin(profile) as conn:
        conn.modify(people_dn(uid), {"pwdAccountLockedTime": [(ldap3.MODIFY_REPLACE, [LOCKED_FOREVER])]})
        _check(conn, f"locking {people_dn(uid)}")


def seed(profile: Profile) -> list[str]:
    """Put :data:`SEEDED` into the directory; one printable line per person (never a password)."""
    lines = []
    for uid, groups in SEEDED.items():
        add_person(profile, uid, groups)
        lines.append(f"{uid:16} {', '.join(groups):22} password in {password_file(profile, uid)}")
    return lines
