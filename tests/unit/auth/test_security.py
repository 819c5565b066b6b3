"""The directory login (include/auth/security.py) and the leaver checks (include/auth/fab.py),
with the directory faked at its interface (lookup, verify_password) and FAB's user store in memory.

The real directory is in tests/integration/auth/test_directory_login.py; the whole path (UI login
form, /auth/token, FAB's database) in tests/e2e/test_directory_login.py.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from airflow.providers.fab.auth_manager.models import Role, User
from werkzeug.security import generate_password_hash

from include.auth import directory as directory_module
from include.auth.directory import DirectoryPerson, DirectoryUnavailable, StandingCache
from include.auth.security import DirectorySecurityManager
from include.policies.access import load_access

PEOPLE = "ou=people,dc=secops,dc=example"


@functools.cache
def _password_hash(password: str) -> str:
    """werkzeug's salted scrypt hash (~0.1 s each; every test's manager stores four), made once per
    password: whichever salt it drew, it checks the same."""
    return generate_password_hash(password)


def _person(uid: str, *groups: str, locked: bool = False) -> DirectoryPerson:
    return DirectoryPerson(
        dn=f"uid={uid},{PEOPLE}",
        uid=uid,
        given_name=uid.split(".")[0].capitalize(),
        surname="Person",
        mail=f"{uid}@secops.example",
        locked=locked,
        groups=frozenset(groups),
    )


@dataclass
class FakeDirectory:
    people: dict[str, DirectoryPerson] = field(default_factory=dict)
    passwords: dict[str, str] = field(default_factory=dict)
    down: bool = False
    asked: list[str] = field(default_factory=list)

    def lookup(self, uid: str) -> DirectoryPerson | None:
        self.asked.append(uid)
        if self.down:
            raise DirectoryUnavailable("directory ldap://127.0.0.1:1 unreachable")
        return self.people.get(uid.lower())

    def verify_password(self, person: DirectoryPerson, password: str) -> bool:
        return bool(password) and self.passwords.get(person.uid) == password


class FakeSecurityManager(DirectorySecurityManager):
    """The security manager over an in-memory user and role store (no Flask app, no database)."""

    def __init__(self, source: FakeDirectory) -> None:  # no FAB app: skip FAB's __init__
        self.source = source
        self.users: dict[str, User] = {}
        self.roles = {name: Role(name=name) for name in self._role_names()}
        self.rotated = 0

    @staticmethod
    def _role_names() -> set[str]:
        from include.policies.access import BUILTIN_ROLES, policy_roles
        from include.policies.approvals import load_approvals
        from include.policies.loader import load_domain_policy

        return set(BUILTIN_ROLES) | policy_roles(load_domain_policy(), load_approvals())

    def _directory(self) -> Any:
        return self.source

    def find_user(self, username: Any = None, email: Any = None) -> Any:
        if username:
            return self.users.get(username.lower())
        return next((u for u in self.users.values() if u.email == email), None)

    def find_role(self, name: Any) -> Any:
        return self.roles.get(name)

    def add_user(  # type: ignore[override]
        self, username: str, first_name: str, last_name: str, email: str, role: Any = None, **_: Any
    ) -> Any:
        user = User(username=username, first_name=first_name, last_name=last_name, email=email, active=True)
        user.roles = list(role or [])
        user.password = _password_hash("")  # what FAB's add_user stores for no password
        user.id = len(self.users) + 1
        self.users[username.lower()] = user
        return user

    def add_local(self, username: str, password: str, role: str = "Admin") -> User:
        user = self.add_user(username, "Local", "Account", f"{username}@secops.example", [self.roles[role]])
        user.password = _password_hash(password)
        return user

    def update_user_auth_stat(self, user: Any, success: bool = True) -> None:
        user.login_count = (user.login_count or 0) + (1 if success else 0)
        user.fail_login_count = 0 if success else (user.fail_login_count or 0) + 1

    def _rotate_session_id(self) -> None:
        self.rotated += 1


@pytest.fixture
def audit(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    from include.audit import emit as emit_module

    written: list[dict[str, Any]] = []
    monkeypatch.setattr(emit_module, "emit", lambda fields, **_: written.append(dict(fields)))
    return written


@pytest.fixture
def source() -> FakeDirectory:
    return FakeDirectory(
        people={
            "lee.soclead": _person("lee.soclead", "soc-operator", "soc-lead", "soc-approver", "vpn-users"),
            "ava.auditor": _person("ava.auditor", "auditors"),
            "gone.leaver": _person("gone.leaver", "soc-lead", locked=True),
            "no.roles": _person("no.roles", "vpn-users"),
            "admin": _person("admin", "orchestrator-admins"),  # a directory entry named like break-glass
        },
        passwords={
            "lee.soclead": "lee-pw",
            "ava.auditor": "ava-pw",
            "gone.leaver": "gone-pw",
            "admin": "dir-pw",
        },
    )


@pytest.fixture
def sm(source: FakeDirectory) -> FakeSecurityManager:
    manager = FakeSecurityManager(source)
    manager.add_local("admin", "break-glass-pw")
    manager.add_local("approval-verifier", "verifier-pw", role="Viewer")
    return manager


def _roles(user: Any) -> set[str]:
    return {role.name for role in user.roles}


def test_first_login_creates_the_user_with_exactly_the_roles_of_their_groups(sm: FakeSecurityManager) -> None:
    user = sm.auth_user_ldap("lee.soclead", "lee-pw")
    assert user is not None
    assert user.username == "lee.soclead"
    assert user.email == "lee.soclead@secops.example"
    assert user.first_name == "Lee"
    assert user.password is None  # no local password for a directory user
    assert _roles(user) == {"soc_operator", "soc_lead", "soc_approver"}
    assert sm.rotated == 1  # a UI login rotates the session id


def test_roles_are_set_again_at_every_login(sm: FakeSecurityManager, source: FakeDirectory) -> None:
    user = sm.auth_user_ldap("lee.soclead", "lee-pw", rotate_session_id=False)
    user.roles.append(sm.roles["Admin"])  # granted by hand in Airflow meanwhile
    source.people["lee.soclead"] = replace(
        source.people["lee.soclead"], groups=frozenset({"hr-operator", "hr-lead", "hr-approver"})
    )
    again = sm.auth_user_ldap("lee.soclead", "lee-pw", rotate_session_id=False)
    assert again is user
    assert _roles(again) == {"hr_operator", "hr_lead", "hr_approver"}
    assert sm.rotated == 0  # token logins do not rotate


def test_groups_granting_nothing_refuse_and_strip_roles(
    sm: FakeSecurityManager, source: FakeDirectory
) -> None:
    assert sm.auth_user_ldap("no.roles", "x") is None  # wrong password: nothing created either
    source.passwords["no.roles"] = "np-pw"
    assert sm.auth_user_ldap("no.roles", "np-pw") is None
    assert "no.roles" not in sm.users
    user = sm.auth_user_ldap("lee.soclead", "lee-pw")
    source.people["lee.soclead"] = replace(source.people["lee.soclead"], groups=frozenset())
    assert sm.auth_user_ldap("lee.soclead", "lee-pw") is None
    assert _roles(user) == set()


@pytest.mark.parametrize("password", ["wrong", "", None])
def test_wrong_or_missing_password_is_refused(sm: FakeSecurityManager, password: Any) -> None:
    assert sm.auth_user_ldap("lee.soclead", password) is None


def test_locked_account_is_refused_and_recorded(sm: FakeSecurityManager, audit: list[dict[str, Any]]) -> None:
    assert sm.auth_user_ldap("gone.leaver", "gone-pw", rotate_session_id=False) is None
    assert audit == [
        {
            "kind": "auth.login_refused",
            "actor": "gone.leaver",
            "subject": "login refused",
            "details": {"rule": "directory-locked", "how": "token"},
        }
    ]


def test_unknown_people_and_directory_outage_are_refused(
    sm: FakeSecurityManager, source: FakeDirectory, audit: list[dict[str, Any]]
) -> None:
    assert sm.auth_user_ldap("nobody.here", "pw") is None
    source.down = True
    assert sm.auth_user_ldap("lee.soclead", "lee-pw") is None
    assert audit == []


@pytest.mark.parametrize("name", ["*)(uid=*", "lee.soclead)(x", "", None, "a" * 40])
def test_malformed_names_never_reach_the_directory(
    sm: FakeSecurityManager, source: FakeDirectory, name: Any
) -> None:
    assert sm.auth_user_ldap(name, "pw") is None
    assert source.asked == []


def test_local_password_only_for_the_listed_local_accounts(
    sm: FakeSecurityManager, source: FakeDirectory
) -> None:
    # A directory user given a local password (by an admin, or left over) cannot use it.
    sm.auth_user_ldap("lee.soclead", "lee-pw")
    sm.users["lee.soclead"].password = generate_password_hash("typed-in-by-an-admin")
    assert sm.auth_user_db("lee.soclead", "typed-in-by-an-admin") is None
    assert sm.auth_user_db("lee.soclead@secops.example", "typed-in-by-an-admin") is None
    # A local user that is not in access.yaml's local accounts neither.
    sm.add_local("old.local", "old-pw")
    assert sm.auth_user_db("old.local", "old-pw") is None
    assert sm.auth_user_ldap("old.local", "old-pw") is None
    # The service account may.
    assert sm.auth_user_db("approval-verifier", "verifier-pw", rotate_session_id=False) is not None


def test_break_glass_never_asks_the_directory(sm: FakeSecurityManager, source: FakeDirectory) -> None:
    # The directory's own "admin" entry (password dir-pw) gets nothing: admin is a local account.
    assert sm.auth_user_ldap("admin", "dir-pw") is None
    assert sm.auth_user_ldap("ADMIN", "break-glass-pw") is sm.users["admin"]
    assert source.asked == []


def test_break_glass_logins_are_recorded_with_how(
    sm: FakeSecurityManager, audit: list[dict[str, Any]]
) -> None:
    # UI: the login form calls auth_user_ldap only.
    assert sm.auth_user_ldap("admin", "break-glass-pw") is sm.users["admin"]
    # /auth/token: auth_user_ldap (None for a local account), then auth_user_db.
    assert sm.auth_user_ldap("admin", "break-glass-pw", rotate_session_id=False) is None
    assert sm.auth_user_db("admin", "break-glass-pw", rotate_session_id=False) is sm.users["admin"]
    assert sm.auth_user_db("admin", "guess", rotate_session_id=False) is None
    assert [(r["kind"], r["actor"], r["details"]) for r in audit] == [
        ("auth.break_glass", "admin", {"how": "ui"}),
        ("auth.break_glass", "admin", {"how": "token"}),
        ("auth.login_refused", "admin", {"rule": "break-glass-password", "how": "token"}),
    ]


def test_service_account_logins_are_not_break_glass(
    sm: FakeSecurityManager, audit: list[dict[str, Any]]
) -> None:
    assert sm.auth_user_db("approval-verifier", "verifier-pw", rotate_session_id=False) is not None
    assert audit == []


# --- the leaver checks of the auth manager (include/auth/fab.py) -----------------------------
@pytest.fixture
def manager(monkeypatch: pytest.MonkeyPatch, source: FakeDirectory) -> Any:
    from airflow.providers.fab.auth_manager.fab_auth_manager import FabAuthManager

    from include.auth.fab import ApprovalAwareFabAuthManager

    users = {
        1: User(id=1, username="lee.soclead", active=True),
        2: User(id=2, username="admin", active=True),
        3: User(id=3, username="gone.leaver", active=True),
    }
    monkeypatch.setattr(FabAuthManager, "deserialize_user", lambda self, token: users[int(token["sub"])])
    cache = StandingCache(30, lookup_person=source.lookup)
    monkeypatch.setattr(directory_module, "_standing", cache)
    monkeypatch.setattr(directory_module, "lookup", source.lookup)
    return ApprovalAwareFabAuthManager()


def test_token_of_a_locked_or_gone_user_is_refused(manager: Any, source: FakeDirectory) -> None:
    assert manager.deserialize_user({"sub": "1"}).username == "lee.soclead"
    with pytest.raises(ValueError, match="locked or gone"):
        manager.deserialize_user({"sub": "3"})
    del source.people["lee.soclead"]
    directory_module.standing().forget("lee.soclead")
    with pytest.raises(ValueError, match="locked or gone"):
        manager.deserialize_user({"sub": "1"})


def test_token_check_is_cached_and_local_accounts_skip_the_directory(
    manager: Any, source: FakeDirectory
) -> None:
    for _ in range(5):
        manager.deserialize_user({"sub": "1"})
        manager.deserialize_user({"sub": "2"})
    assert source.asked == ["lee.soclead"]


def test_token_refused_while_the_directory_is_down(manager: Any, source: FakeDirectory) -> None:
    source.down = True
    with pytest.raises(ValueError, match="locked or gone"):
        manager.deserialize_user({"sub": "1"})
    assert manager.deserialize_user({"sub": "2"}).username == "admin"  # break-glass still works


def test_approval_answer_judged_by_fresh_directory_roles(
    manager: Any, source: FakeDirectory, monkeypatch: pytest.MonkeyPatch, audit: list[dict[str, Any]]
) -> None:
    from include.auth import fab

    monkeypatch.setattr(fab, "_role_names", lambda user_id: {"soc_lead"})  # the stale FAB roles
    monkeypatch.setattr("include.approvals.door.mark_refusal_recorded", lambda: {})
    stored: list[tuple[int, set[str]]] = []
    monkeypatch.setattr(fab, "_store_roles", lambda user_id, roles: stored.append((user_id, set(roles))))
    lee = User(id=1, username="lee.soclead", active=True)
    assert manager.is_authorized_hitl_task(assigned_users={"role:soc_lead"}, user=lee)
    # The roles it was judged by become its FAB roles, which the privileged step's check reads.
    assert [user_id for user_id, _ in stored] == [1]
    assert "soc_lead" in stored[0][1]
    # Moved out of soc-lead in the directory: refused at once, whatever FAB's tables say.
    source.people["lee.soclead"] = replace(source.people["lee.soclead"], groups=frozenset({"auditors"}))
    assert not manager.is_authorized_hitl_task(assigned_users={"role:soc_lead"}, user=lee)
    assert audit[-1]["details"]["rule"] == "approver-group"
    # Locked: refused with its own rule.
    source.people["lee.soclead"] = replace(source.people["lee.soclead"], locked=True)
    assert not manager.is_authorized_hitl_task(assigned_users={"role:soc_lead"}, user=lee)
    assert audit[-1]["kind"] == "policy.violation"
    assert audit[-1]["details"]["rule"] == "directory-locked"
    assert "locked in the directory" in audit[-1]["details"]["message"]
    assert source.asked.count("lee.soclead") == 3  # no cache on this path
    assert len(stored) == 1  # refused answers change no roles


def test_policy_is_the_deployed_one() -> None:
    assert load_access().break_glass == "admin"


def test_an_escalation_group_may_answer_only_after_escalation(
    manager: Any, source: FakeDirectory, monkeypatch: pytest.MonkeyPatch, audit: list[dict[str, Any]]
) -> None:
    from datetime import UTC, datetime, timedelta

    from include.approvals.respondents import escalation_entry
    from include.auth import fab

    monkeypatch.setattr("include.approvals.door.mark_refusal_recorded", lambda: {})
    monkeypatch.setattr(fab, "_store_roles", lambda user_id, roles: None)
    source.people["seb.officer"] = _person("seb.officer", "security-officer")
    source.people["hank.hr"] = _person("hank.hr", "hr-lead")
    seb = User(id=4, username="seb.officer", active=True)
    hank = User(id=5, username="hank.hr", active=True)
    now = datetime.now(UTC)

    def asked(escalate_at: datetime, *extra: str) -> set[str]:
        return {
            "role:soc_lead",
            "role:soc_oncall",
            "not:dora",
            escalation_entry("security_officer", escalate_at),
            *extra,
        }

    # Before the escalation time: refused, with its own rule and the time in the record.
    assert not manager.is_authorized_hitl_task(assigned_users=asked(now + timedelta(minutes=5)), user=seb)
    refusal = audit[-1]
    assert (refusal["kind"], refusal["actor"], refusal["details"]["rule"]) == (
        "policy.violation",
        "seb.officer",
        "escalation-pending",
    )
    assert refusal["details"]["message"].startswith(
        "seb.officer may answer as security_officer only after escalation at "
    )
    # After it: allowed.
    assert manager.is_authorized_hitl_task(assigned_users=asked(now - timedelta(seconds=1)), user=seb)
    # Four-eyes stays: excluded whatever the time or the group.
    assert not manager.is_authorized_hitl_task(
        assigned_users=asked(now - timedelta(seconds=1), "not:seb.officer"), user=seb
    )
    assert audit[-1]["details"]["rule"] == "four-eyes"
    # Another domain's approver group: never, before or after.
    assert not manager.is_authorized_hitl_task(assigned_users=asked(now - timedelta(hours=1)), user=hank)
    assert audit[-1]["details"]["rule"] == "approver-group"
    # The auditor: never.
    ava = User(id=6, username="ava.auditor", active=True)
    assert not manager.is_authorized_hitl_task(assigned_users=asked(now - timedelta(hours=1)), user=ava)
