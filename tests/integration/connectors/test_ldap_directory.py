"""The directory connector on a real OpenLDAP (Debian's slapd), as the HR workflows use it.

Runs a slapd of its own (profile ``ldap-itest``, 127.0.0.1:23389) through devstack/openldap,
built fresh for this module and stopped at its end; never the shared stacks. The hook reads its
connection from ``AIRFLOW_CONN_LDAP_ITEST`` (the JSON the local Secrets Manager holds for
``ldap_default``), so it goes through ``BaseHook.get_connection`` as in a task. Every check of the
directory's state is made with a separate admin (or user) connection, not through the hook.
"""

from __future__ import annotations

import os
import tempfile

# Airflow reads its configuration when first imported: keep it away from any real installation.
if "AIRFLOW_HOME" not in os.environ:
    os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="orchestrator-itest-airflow-")
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")

import json
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import ldap3
import pytest
from ldap3.utils.log import EXTENDED, OFF, set_library_log_detail_level

from devstack import openldap
from devstack.config import HOST, Profile
from include.connectors.errors import RetryBudgetExhausted
from include.connectors.ldap import (
    DirectoryConflict,
    DirectoryError,
    DirectoryHook,
    DirectoryNotFound,
    DirectoryResult,
    DirectoryValidationError,
)

PROFILE = Profile(name="ldap-itest", api_port=0, pg_port=0, moto_port=0, smtp_port=0, ldap_port=23389)
CONN_ID = "ldap_itest"
PEOPLE = f"{openldap.PEOPLE_OU},{openldap.SUFFIX}"
GROUPS = f"{openldap.GROUPS_OU},{openldap.SUFFIX}"
FAST_RETRIES = {"retry_base_delay": 0.01, "retry_max_delay": 0.05, "retry_max_attempts": 3}
START_BUDGET_SECONDS = 5.0


def _connection_json(**overrides: Any) -> str:
    connection = openldap.ldap_connection(PROFILE)
    extra = {**connection["extra"], **FAST_RETRIES, **overrides.pop("extra", {})}  # type: ignore[dict-item]
    return json.dumps({**connection, **overrides, "extra": extra})


@pytest.fixture(scope="module")
def directory() -> Iterator[Profile]:
    openldap.ensure_installed()
    began = time.monotonic()
    openldap.initialise(PROFILE, fresh=True)
    openldap.start(PROFILE)
    elapsed = time.monotonic() - began
    print(f"\nslapd of {PROFILE.name}: initialised and listening in {elapsed:.2f}s")
    assert elapsed < START_BUDGET_SECONDS
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", _connection_json())
            yield PROFILE
    finally:
        openldap.stop(PROFILE)


@pytest.fixture
def hook(directory: Profile) -> DirectoryHook:
    return DirectoryHook(CONN_ID)


@pytest.fixture
def admin(directory: Profile) -> Iterator[ldap3.Connection]:
    """A plain admin connection of the test's own, to look at the directory behind the hook."""
    conn = ldap3.Connection(
        ldap3.Server(HOST, port=PROFILE.ldap_port, get_info=ldap3.NONE),
        user=openldap.ADMIN_DN,
        password=openldap.admin_password(PROFILE),
    )
    assert conn.bind(), conn.result
    yield conn
    conn.unbind()


def _person(uid: str, **changes: Any) -> dict[str, Any]:
    number = sum(map(ord, uid)) * 7 + len(uid)
    person: dict[str, Any] = {
        "given_name": "Ada",
        "surname": "Lovelace",
        "email": f"{uid}@secops.example",
        "employee_id": f"E{number:05d}",
        "title": "Analyst",
        "groups": ("soc-analysts", "vpn-users"),
        "initial_password": f"pw-{uid}-correct-horse",
    }
    person.update(changes)
    return person


def _bind_as(uid: str, password: str) -> ldap3.Connection | None:
    conn = ldap3.Connection(
        ldap3.Server(HOST, port=PROFILE.ldap_port, get_info=ldap3.NONE),
        user=f"uid={uid},{PEOPLE}",
        password=password,
    )
    return conn if conn.bind() else None


def _search(admin: ldap3.Connection, base: str, flt: str, attributes: list[str]) -> list[dict[str, Any]]:
    admin.search(base, flt, search_scope=ldap3.SUBTREE, attributes=attributes)
    return [
        dict(item["attributes"], dn=item["dn"]) for item in admin.response if item["type"] == "searchResEntry"
    ]


def _snapshot(admin: ldap3.Connection, uid: str) -> dict[str, Any]:
    """Every entry that mentions the person, with its entryCSN (changes on any write)."""
    dn = f"uid={uid},{PEOPLE}"
    people = _search(admin, PEOPLE, f"(uid={uid})", ["*", "entryCSN", "pwdAccountLockedTime"])
    groups = _search(admin, GROUPS, f"(member={dn})", ["cn", "member", "entryCSN"])
    return {"people": people, "groups": sorted(groups, key=lambda g: g["dn"])}


# --- the devstack module -----------------------------------------------------------------------
def test_slapd_runs_on_loopback_only_and_start_is_idempotent(directory: Profile) -> None:
    pid = (directory.pids / "openldap.pid").read_text()
    openldap.start(directory)  # already running: nothing happens
    assert (directory.pids / "openldap.pid").read_text() == pid
    listening = [
        line.split()[1]
        for line in open("/proc/net/tcp").read().splitlines()[1:]  # noqa: SIM115
        if line.split()[3] == "0A"  # LISTEN
    ]
    port = f"{directory.ldap_port:04X}"
    assert f"0100007F:{port}" in listening  # 127.0.0.1
    assert not [
        address for address in listening if address.endswith(f":{port}") and address != f"0100007F:{port}"
    ]
    config = (openldap.home(directory) / "config.ldif").read_text()
    assert openldap.admin_password(directory) not in config
    assert "olcRootPW: {CRYPT}$6$rounds=100000$" in config


# --- ensure_user -------------------------------------------------------------------------------
def test_create_user_with_groups_then_bind_as_the_user(hook: DirectoryHook, admin: ldap3.Connection) -> None:
    person = _person("ada.lovelace")
    result = hook.ensure_user("ada.lovelace", **person)

    assert result.created
    assert result.changed
    assert result.dn == f"uid=ada.lovelace,{PEOPLE}"
    assert set(result.groups_added) == {"soc-analysts", "vpn-users"}
    user = hook.get_user("ada.lovelace")
    assert user is not None
    assert {
        k: user[k] for k in ("given_name", "surname", "display_name", "email", "employee_id", "title")
    } == {
        "given_name": "Ada",
        "surname": "Lovelace",
        "display_name": "Ada Lovelace",
        "email": "ada.lovelace@secops.example",
        "employee_id": person["employee_id"],
        "title": "Analyst",
    }
    assert user["disabled"] is False
    assert user["groups"] == ["soc-analysts", "vpn-users"]
    assert not [key for key in user if "password" in key.lower()]
    assert hook.groups_of("ada.lovelace") == ["soc-analysts", "vpn-users"]

    # A real bind as the new person, who then reads their own entry.
    conn = _bind_as("ada.lovelace", person["initial_password"])
    assert conn is not None
    assert conn.extend.standard.who_am_i() == f"dn:uid=ada.lovelace,{PEOPLE}"
    conn.search(result.dn, "(objectClass=*)", search_scope=ldap3.BASE, attributes=["mail"])
    assert conn.response[0]["attributes"]["mail"] == ["ada.lovelace@secops.example"]
    conn.unbind()
    # The password is stored hashed by the server, never as given.
    stored = _search(admin, PEOPLE, "(uid=ada.lovelace)", ["userPassword"])[0]["userPassword"][0]
    assert stored.startswith("{CRYPT}$6$rounds=100000$")


def test_repeating_ensure_user_five_times_changes_nothing(
    hook: DirectoryHook, admin: ldap3.Connection
) -> None:
    person = _person("grace.hopper")
    first = hook.ensure_user("grace.hopper", **person)
    assert first.created
    before = _snapshot(admin, "grace.hopper")

    repeats = [hook.ensure_user("grace.hopper", **person) for _ in range(5)]

    assert all(not r.created and not r.changed for r in repeats), repeats
    assert all(r.groups_added == () and r.changed_attributes == () for r in repeats)
    assert _snapshot(admin, "grace.hopper") == before  # same entryCSNs: not one write
    assert len(before["people"]) == 1
    for group in before["groups"]:
        members = [m.lower() for m in group["member"]]
        assert members.count(f"uid=grace.hopper,{PEOPLE}".lower()) == 1
    assert _bind_as("grace.hopper", person["initial_password"]) is not None


def test_ensure_user_updates_what_differs_and_keeps_the_password(hook: DirectoryHook) -> None:
    person = _person("alan.turing", groups=("soc-analysts",))
    hook.ensure_user("alan.turing", **person)

    changed = hook.ensure_user(
        "alan.turing",
        **{
            **person,
            "title": "Lead Analyst",
            "groups": ("soc-leads",),
            "initial_password": "another-one-123",
        },
    )

    assert changed.changed
    assert not changed.created
    assert changed.changed_attributes == ("title",)
    assert changed.groups_added == ("soc-leads",)
    assert changed.groups_created == ("soc-leads",)
    user = hook.get_user("alan.turing")
    assert user is not None
    assert user["title"] == "Lead Analyst"
    assert user["groups"] == ["soc-analysts", "soc-leads"]  # ensure_user adds, never removes
    assert _bind_as("alan.turing", person["initial_password"]) is not None  # initial only
    assert _bind_as("alan.turing", "another-one-123") is None
    assert not hook.ensure_user("alan.turing", **{**person, "title": "Lead Analyst"}).changed


def test_concurrent_ensure_user_creates_one_entry(hook: DirectoryHook, admin: ldap3.Connection) -> None:
    person = _person("ida.rhodes", groups=("night-shift",))
    results: list[DirectoryResult] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(DirectoryHook(CONN_ID).ensure_user("ida.rhodes", **person))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert sum(r.created for r in results) == 1
    assert len(_search(admin, PEOPLE, "(uid=ida.rhodes)", ["uid"])) == 1
    group = _search(admin, GROUPS, "(cn=night-shift)", ["member"])
    assert len(group) == 1
    assert group[0]["member"] == [f"uid=ida.rhodes,{PEOPLE}"]


# --- disable_user ------------------------------------------------------------------------------
def test_disable_locks_keeps_the_entry_and_empties_its_groups(
    hook: DirectoryHook, admin: ldap3.Connection
) -> None:
    leaver = _person("joan.clarke", groups=("soc-analysts", "joan-only"))
    stayer = _person("mary.keller", groups=("soc-analysts",))
    hook.ensure_user("joan.clarke", **leaver)
    hook.ensure_user("mary.keller", **stayer)
    assert _bind_as("joan.clarke", leaver["initial_password"]) is not None

    result = hook.disable_user("joan.clarke")

    assert result.changed
    assert result.disabled
    assert not result.created
    assert result.groups_removed == ("joan-only", "soc-analysts")
    assert result.changed_attributes == ("pwdAccountLockedTime", "userPassword")
    assert _bind_as("joan.clarke", leaver["initial_password"]) is None
    entry = _search(admin, PEOPLE, "(uid=joan.clarke)", ["*", "userPassword", "pwdAccountLockedTime"])
    assert len(entry) == 1  # disabled, not deleted
    assert entry[0]["pwdAccountLockedTime"] == ["000001010000Z"]
    assert entry[0]["userPassword"] == []
    assert entry[0]["employeeNumber"] == [leaver["employee_id"]]
    assert hook.groups_of("joan.clarke") == []
    user = hook.get_user("joan.clarke")
    assert user is not None
    assert user["disabled"] is True
    assert user["groups"] == []
    # Other members stay; a group emptied by the leaver still exists (with the placeholder only).
    assert hook.groups_of("mary.keller") == ["soc-analysts"]
    assert _search(admin, GROUPS, "(cn=joan-only)", ["member"])[0]["member"] == [""]

    before = _snapshot(admin, "joan.clarke")
    repeat = hook.disable_user("joan.clarke")
    assert not repeat.changed
    assert repeat.disabled
    assert repeat.groups_removed == ()
    assert repeat.changed_attributes == ()
    assert _snapshot(admin, "joan.clarke") == before

    # Onboarding must not quietly bring a leaver back.
    with pytest.raises(DirectoryConflict, match="is disabled"):
        hook.ensure_user("joan.clarke", **leaver)
    assert _bind_as("joan.clarke", leaver["initial_password"]) is None
    assert hook.groups_of("joan.clarke") == []

    # A group emptied by a leaver takes a new member (and drops the placeholder).
    hook.ensure_user("mary.keller", **{**stayer, "groups": ("joan-only",)})
    assert _search(admin, GROUPS, "(cn=joan-only)", ["member"])[0]["member"] == [f"uid=mary.keller,{PEOPLE}"]


def test_the_ppolicy_lock_alone_refuses_the_bind(hook: DirectoryHook, admin: ldap3.Connection) -> None:
    """The lock refuses a correct password (the removed password is a second, independent lock)."""
    person = _person("edith.clarke", groups=())
    result = hook.ensure_user("edith.clarke", **person)
    admin.modify(result.dn, {"pwdAccountLockedTime": [(ldap3.MODIFY_REPLACE, ["000001010000Z"])]})
    assert admin.result["result"] == 0, admin.result
    assert _bind_as("edith.clarke", person["initial_password"]) is None
    admin.modify(result.dn, {"pwdAccountLockedTime": [(ldap3.MODIFY_DELETE, [])]})
    assert _bind_as("edith.clarke", person["initial_password"]) is not None


def test_disable_makes_any_lock_permanent_and_survives_ppolicy_unlocking(
    hook: DirectoryHook, admin: ldap3.Connection
) -> None:
    """A lock from failed binds is not "disabled"; and removing a password makes ppolicy drop the
    lock, so disable_user reads the entry again after removing it and locks it if needed."""
    person = _person("radia.perlman", groups=("vpn-users",))
    result = hook.ensure_user("radia.perlman", **person)
    for lock in ("20260101000000Z", "000001010000Z"):  # a dated lock, then an admin's own lock
        admin.modify(result.dn, {"pwdAccountLockedTime": [(ldap3.MODIFY_REPLACE, [lock])]})
        assert admin.result["result"] == 0, admin.result
    # Both the lock and a password present: the removal of the password drops the lock.
    disabled = hook.disable_user("radia.perlman")
    assert disabled.changed_attributes == ("pwdAccountLockedTime", "userPassword")
    entry = _search(admin, PEOPLE, "(uid=radia.perlman)", ["pwdAccountLockedTime", "userPassword"])[0]
    assert entry["pwdAccountLockedTime"] == ["000001010000Z"]
    assert entry["userPassword"] == []

    other = _person("vint.cerf", groups=())
    dated = hook.ensure_user("vint.cerf", **other)
    admin.modify(dated.dn, {"pwdAccountLockedTime": [(ldap3.MODIFY_REPLACE, ["20260101000000Z"])]})
    user = hook.get_user("vint.cerf")
    assert user is not None
    assert user["disabled"] is False
    assert "pwdAccountLockedTime" in hook.disable_user("vint.cerf").changed_attributes
    entry = _search(admin, PEOPLE, "(uid=vint.cerf)", ["pwdAccountLockedTime"])[0]
    assert entry["pwdAccountLockedTime"] == ["000001010000Z"]


# --- refusals ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("uid", "changes", "fragment"),
    [
        ("Bad.Uid", {}, "uid 'Bad.Uid' must match"),
        ("x", {}, "uid 'x' must match"),
        ("9lives", {}, "must match"),
        ("ok.uid", {"email": "not-an-address"}, "email 'not-an-address'"),
        ("ok.uid", {"email": "a@b"}, "email 'a@b'"),
        ("ok.uid", {"employee_id": "E 1"}, "employee_id 'E 1'"),
        ("ok.uid", {"given_name": " Ada"}, "given_name"),
        ("ok.uid", {"surname": ""}, "surname"),
        ("ok.uid", {"title": "x\nobjectClass: top"}, "control characters"),
        ("ok.uid", {"groups": ("vpn-users", "Bad Group")}, "group 'Bad Group'"),
        ("ok.uid", {"groups": "vpn-users"}, "groups must be a list"),
        ("ok.uid", {"initial_password": "short"}, "initial_password must be"),
    ],
)
def test_bad_input_is_refused_before_any_write(
    hook: DirectoryHook, admin: ldap3.Connection, uid: str, changes: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(DirectoryValidationError, match=fragment) as refused:
        hook.ensure_user(uid, **_person("ok.uid", **changes))
    if "initial_password" in changes:
        assert changes["initial_password"] not in str(refused.value)
    assert _search(admin, PEOPLE, "(|(uid=ok.uid)(uid=bad.uid)(uid=x)(uid=9lives))", ["uid"]) == []
    assert _search(admin, GROUPS, f"(member=uid=ok.uid,{PEOPLE})", ["cn"]) == []
    assert _search(admin, GROUPS, "(cn=bad group)", ["cn"]) == []


def test_validation_happens_before_any_connection(directory: Profile) -> None:
    """A refused input never reaches the network: here the connection points at a closed port."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AIRFLOW_CONN_LDAP_NOWHERE", _connection_json(port=1))
        hook = DirectoryHook("ldap_nowhere")
        with pytest.raises(DirectoryValidationError):
            hook.ensure_user("Nope", **_person("nope"))
        with pytest.raises(DirectoryValidationError):
            hook.disable_user("no/pe")
        assert hook.retry_count == 0
        # A valid call does try to connect, and gives up after the (short) retry budget.
        with pytest.raises(RetryBudgetExhausted, match="LDAPSocketOpenError"):
            hook.get_user("nope")
        assert hook.retry_count == 2


def test_not_found_errors_name_what_and_where(hook: DirectoryHook) -> None:
    assert hook.get_user("ghost.user") is None
    with pytest.raises(DirectoryNotFound) as missing:
        hook.disable_user("ghost.user")
    assert str(missing.value) == f"ldap disable_user: uid 'ghost.user' not found in {PEOPLE}"
    with pytest.raises(DirectoryNotFound, match=f"uid 'ghost.user' not found in {PEOPLE}"):
        hook.groups_of("ghost.user")


def test_employee_ids_and_uids_are_not_taken_over(hook: DirectoryHook, admin: ldap3.Connection) -> None:
    person = _person("hedy.lamarr")
    hook.ensure_user("hedy.lamarr", **person)

    with pytest.raises(DirectoryConflict, match=r"employee_id 'E\d+' already belongs to uid=hedy.lamarr"):
        hook.ensure_user("hedy.markey", **person)
    with pytest.raises(DirectoryConflict, match="belongs to employee_id"):
        hook.ensure_user("hedy.lamarr", **{**person, "employee_id": "E99999"})
    assert _search(admin, PEOPLE, "(uid=hedy.markey)", ["uid"]) == []
    user = hook.get_user("hedy.lamarr")
    assert user is not None
    assert user["employee_id"] == person["employee_id"]


def test_bad_admin_password_fails_at_once_and_says_where(directory: Profile) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AIRFLOW_CONN_LDAP_WRONG", _connection_json(password="not-the-admin-password"))
        hook = DirectoryHook("ldap_wrong")
        with pytest.raises(DirectoryError) as refused:
            hook.get_user("ada.lovelace")
    message = str(refused.value)
    assert f"bind as {openldap.ADMIN_DN} to ldap://{HOST}:{directory.ldap_port} refused" in message
    assert "invalidCredentials" in message
    assert "not-the-admin-password" not in message
    assert hook.retry_count == 0  # a refused bind is not retried


def test_clear_text_bind_to_a_remote_host_is_refused(directory: Profile) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AIRFLOW_CONN_LDAP_REMOTE", _connection_json(host="ldap.secops.example"))
        with pytest.raises(DirectoryError, match=r"in clear to ldap\.secops\.example: set use_ssl"):
            DirectoryHook("ldap_remote").get_user("ada.lovelace")


# --- secrets -----------------------------------------------------------------------------------
def test_admin_password_never_in_logs_or_errors(
    hook: DirectoryHook, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    secret = openldap.admin_password(PROFILE)
    person = _person("katherine.j")
    texts: list[str] = []
    caplog.set_level(logging.DEBUG)
    set_library_log_detail_level(EXTENDED)  # ldap3's own protocol log, at its most detailed
    try:
        texts.append(repr(hook.ensure_user("katherine.j", **person)))
        texts.append(repr(hook.ensure_user("katherine.j", **person)))
        texts.append(repr(hook.get_user("katherine.j")))
        texts.append(repr(hook.disable_user("katherine.j")))
        for call in (
            lambda: hook.disable_user("nobody.here"),
            lambda: hook.ensure_user("katherine.j", **person),
            lambda: hook.ensure_user("BAD", **person),
        ):
            with pytest.raises(DirectoryError) as failed:
                call()
            texts += [str(failed.value), repr(failed.value)]
    finally:
        set_library_log_detail_level(OFF)
    captured = capfd.readouterr()
    assert "ldap ensure_user" in captured.out + captured.err + caplog.text  # the hook did log
    assert caplog.records  # and ldap3 logged its protocol exchange
    for text in (caplog.text, captured.out, captured.err, *texts, repr(hook)):
        assert secret not in text
        assert person["initial_password"] not in text


# --- lifecycle (last: it restarts the module's slapd) ------------------------------------------
def test_restart_keeps_the_directory_and_fresh_wipes_it(directory: Profile, hook: DirectoryHook) -> None:
    hook.ensure_user("barbara.liskov", **_person("barbara.liskov"))
    assert openldap.stop(directory)
    assert not openldap.is_running(directory)
    assert not openldap.stop(directory)  # nothing left to stop
    began = time.monotonic()
    openldap.initialise(directory, fresh=False)  # already built: nothing to do
    openldap.start(directory)
    print(f"\nslapd restarted in {time.monotonic() - began:.2f}s")
    assert hook.get_user("barbara.liskov") is not None

    openldap.initialise(directory, fresh=True)  # stops it and builds an empty directory
    assert not openldap.is_running(directory)
    openldap.start(directory)
    assert hook.get_user("barbara.liskov") is None
    assert hook.ensure_user("barbara.liskov", **_person("barbara.liskov")).created
