"""The login's directory reader (include/auth/directory.py) on a real OpenLDAP (Debian's slapd).

Runs a slapd of its own (profile ``login-itest``, 127.0.0.1:23479) built fresh for this module and
stopped at its end; never the shared stacks. People are made, moved and locked with
devstack/directory_seed.py (the admin), read back through the read-only ``ldap_login`` account.
"""

from __future__ import annotations

import os
import tempfile

# Airflow reads its configuration when first imported: keep it away from any real installation.
if "AIRFLOW_HOME" not in os.environ:
    os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="orchestrator-itest-airflow-")
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")

import json
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import ldap3
import pytest

from devstack import directory_seed, openldap
from devstack.config import HOST, Profile
from include.auth import directory as directory_module
from include.auth.directory import (
    Directory,
    DirectoryUnavailable,
    StandingCache,
    roles_for,
    settings_from_connection,
)
from include.connectors.ldap import LdapSettings

PROFILE = Profile(name="login-itest", api_port=0, pg_port=0, moto_port=0, smtp_port=0, ldap_port=23479)
PEOPLE = f"{openldap.PEOPLE_OU},{openldap.SUFFIX}"
LEAD = directory_seed.SEEDED["lee-soclead"]  # soc-operator, soc-lead, soc-approver


@dataclass
class _Conn:
    """What LdapSettings reads of an Airflow Connection."""

    host: str
    port: int
    login: str
    password: str
    extra_dejson: dict[str, Any] = field(default_factory=dict)
    conn_id: str = "ldap_login"


def _settings(**extra: Any) -> LdapSettings:
    definition = directory_seed.login_connection(PROFILE)
    conn = _Conn(
        host=str(definition["host"]),
        port=int(definition["port"]),  # type: ignore[call-overload]
        login=str(definition["login"]),
        password=str(definition["password"]),
        extra_dejson={**definition["extra"], **extra},  # type: ignore[dict-item]
    )
    return settings_from_connection(conn)


@pytest.fixture(scope="module")
def slapd() -> Iterator[Profile]:
    openldap.ensure_installed()
    openldap.initialise(PROFILE, fresh=True)
    openldap.start(PROFILE)
    try:
        yield PROFILE
    finally:
        openldap.stop(PROFILE)


@pytest.fixture(scope="module")
def reader(slapd: Profile) -> Directory:
    return Directory(_settings())


@pytest.fixture
def person(slapd: Profile, request: pytest.FixtureRequest) -> tuple[str, str]:
    """A fresh SOC lead of this test (uid from the test's name); returns (uid, password)."""
    uid = "p." + request.node.name.removeprefix("test_").replace("_", "")[:24]
    return uid, directory_seed.add_person(slapd, uid, LEAD)


def _bind(dn: str, password: str) -> ldap3.Connection:
    conn = ldap3.Connection(
        ldap3.Server(HOST, port=PROFILE.ldap_port, get_info=ldap3.NONE), user=dn, password=password
    )
    conn.bind()
    return conn


def test_right_password_gives_the_person_and_their_groups(reader: Directory, person: tuple[str, str]) -> None:
    uid, password = person
    found = reader.authenticate(uid, password)
    assert found is not None
    assert found.dn == f"uid={uid},{PEOPLE}"
    assert found.uid == uid
    assert found.mail == f"{uid}@secops.example"
    assert found.groups == frozenset(LEAD)
    assert not found.locked
    assert roles_for(found) == {"soc_operator", "soc_lead", "soc_approver"}
    # Upper case is the same person (LDAP and FAB compare user names case-insensitively).
    assert reader.authenticate(uid.upper(), password) == found


def test_wrong_and_empty_passwords_are_refused(reader: Directory, person: tuple[str, str]) -> None:
    uid, password = person
    assert reader.authenticate(uid, password + "x") is None
    assert reader.authenticate(uid, "") is None
    assert reader.authenticate(uid, " ") is None
    assert reader.authenticate("nobody.here", password) is None


def test_locked_account_is_refused_with_its_right_password(
    slapd: Profile, reader: Directory, person: tuple[str, str]
) -> None:
    uid, password = person
    directory_seed.lock(slapd, uid)
    assert reader.authenticate(uid, password) is None
    found = reader.lookup(uid)
    assert found is not None
    assert found.locked
    assert roles_for(found) == set()
    # The directory's own ppolicy refuses the bind too (belt and braces).
    assert not _bind(f"uid={uid},{PEOPLE}", password).bound
    # Re-adding the person (the seed at the next start) lifts the lock.
    directory_seed.add_person(slapd, uid, LEAD, password=password)
    assert reader.authenticate(uid, password) is not None


@pytest.mark.parametrize("uid", ["*)(uid=*", "*", "p.a)(|(uid=*", "admin\\2a", "p.a,ou=people", "", "x" * 40])
def test_injection_and_malformed_uids_find_nobody(
    reader: Directory, person: tuple[str, str], uid: str
) -> None:
    _, password = person
    assert reader.lookup(uid) is None
    assert reader.authenticate(uid, password) is None


def test_moving_groups_is_seen_at_the_next_lookup(
    slapd: Profile, reader: Directory, person: tuple[str, str]
) -> None:
    uid, _ = person
    directory_seed.set_groups(slapd, uid, ["hr-lead", "auditors"])
    found = reader.lookup(uid)
    assert found is not None
    assert found.groups == frozenset({"hr-lead", "auditors"})
    assert roles_for(found) == {"hr_lead", "auditor"}
    directory_seed.set_groups(slapd, uid, [])
    found = reader.lookup(uid)
    assert found is not None
    assert found.groups == frozenset()
    assert roles_for(found) == set()


def test_reader_cannot_read_passwords_nor_write(slapd: Profile, person: tuple[str, str]) -> None:
    uid, _ = person
    conn = _bind(openldap.READER_DN, openldap.reader_password(slapd))
    assert conn.bound
    conn.search(PEOPLE, f"(uid={uid})", attributes=["userPassword", "uid"])
    [entry] = [item for item in conn.response if item["type"] == "searchResEntry"]
    assert entry["attributes"]["uid"] == [uid]
    assert not entry["attributes"].get("userPassword")
    conn.modify(f"uid={uid},{PEOPLE}", {"mail": [(ldap3.MODIFY_REPLACE, ["evil@example.com"])]})
    assert conn.result["result"] == 50  # insufficientAccessRights
    conn.modify(
        f"cn=orchestrator-admins,{openldap.GROUPS_OU},{openldap.SUFFIX}",
        {"member": [(ldap3.MODIFY_ADD, [f"uid={uid},{PEOPLE}"])]},
    )
    assert conn.result["result"] in (32, 50)  # no such object / insufficient access: never success


def test_unreachable_directory_raises_and_the_leaver_check_fails_closed(slapd: Profile) -> None:
    settings = _settings()
    dead = Directory(LdapSettings(**{**settings.__dict__, "port": 1, "connect_timeout": 1.0}))
    with pytest.raises(DirectoryUnavailable, match="unreachable"):
        dead.lookup("p.anyone")
    cache = StandingCache(30, lookup_person=dead.lookup)
    assert cache.allows("p.anyone") is False
    wrong_reader = Directory(LdapSettings(**{**settings.__dict__, "password": "not-it"}))
    with pytest.raises(DirectoryUnavailable, match="refused the reader") as caught:
        wrong_reader.lookup("p.anyone")
    assert "not-it" not in str(caught.value)


def test_clear_text_to_a_remote_host_is_refused() -> None:
    settings = _settings()
    with pytest.raises(ValueError, match="use_ssl"):
        LdapSettings(**{**settings.__dict__, "host": "ldap.example.com"})
    conn = _Conn(
        host="ldap.example.com", port=389, login="cn=reader", password="pw", extra_dejson={"base_dn": "dc=x"}
    )
    with pytest.raises(DirectoryUnavailable, match=r"in clear to ldap\.example\.com"):
        settings_from_connection(conn)


def test_connection_from_the_secrets_path(
    slapd: Profile, person: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """directory() reads ldap_login as Airflow does (an AIRFLOW_CONN_ variable here)."""
    uid, password = person
    monkeypatch.setenv("AIRFLOW_CONN_LDAP_LOGIN", json.dumps(directory_seed.login_connection(slapd)))
    directory_module.reset()
    try:
        assert directory_module.authenticate(uid, password) is not None
        assert "password" not in repr(directory_module.directory().settings).lower().replace("bind_dn", "")
    finally:
        directory_module.reset()


def test_leaver_check_cost_and_lock_seen_within_the_interval(
    slapd: Profile, reader: Directory, person: tuple[str, str]
) -> None:
    """Figures: one directory lookup (the recheck) and one cached answer (every other request)."""
    uid, _ = person
    now = [0.0]
    cache = StandingCache(30, lookup_person=reader.lookup, clock=lambda: now[0])
    lookups = []
    for _ in range(20):
        began = time.perf_counter()
        assert reader.lookup(uid) is not None
        lookups.append(time.perf_counter() - began)
    assert cache.allows(uid)
    hits = []
    for _ in range(2000):
        began = time.perf_counter()
        cache.allows(uid)
        hits.append(time.perf_counter() - began)
    lookup_ms = statistics.median(lookups) * 1000
    hit_us = statistics.median(hits) * 1e6
    print(f"\nleaver check: directory lookup median {lookup_ms:.2f} ms; cached hit median {hit_us:.2f} us")
    assert hit_us * 10 < lookup_ms * 1000
    directory_seed.lock(slapd, uid)
    now[0] = 29.0
    assert cache.allows(uid)  # still within the interval: the cached answer
    now[0] = 30.5
    assert not cache.allows(uid)  # past it: asked again, refused


def test_lookups_share_one_reader_bind(
    slapd: Profile, person: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reader binds once per process, not per lookup: a bind costs slapd a password hash."""
    uid, _ = person
    source = Directory(_settings())
    opened: list[str] = []
    real_open = Directory._open

    def counting_open(self: Directory, user: str, password: str) -> ldap3.Connection:
        opened.append(user)
        return real_open(self, user, password)

    monkeypatch.setattr(Directory, "_open", counting_open)
    try:
        for _ in range(5):
            assert source.lookup(uid) is not None
        assert opened == [source.settings.bind_dn]
        # A person's own bind (the login) is a connection of its own, never the reader's.
        assert source.authenticate(uid, person[1]) is not None
        assert opened == [source.settings.bind_dn, f"uid={uid},{PEOPLE}"]
        assert source.lookup(uid) is not None
        assert len(opened) == 2
    finally:
        source.close()


def test_a_restarted_directory_is_asked_again_on_a_new_connection(
    slapd: Profile, person: tuple[str, str]
) -> None:
    """The kept reader connection dies with slapd; the next lookup reconnects, and a lock made
    while it was kept is seen (nothing is answered from the old connection)."""
    uid, _ = person
    source = Directory(_settings())
    try:
        assert source.lookup(uid) is not None
        openldap.stop(slapd)
        with pytest.raises(DirectoryUnavailable):
            source.lookup(uid)
        openldap.start(slapd)
        directory_seed.lock(slapd, uid)
        found = source.lookup(uid)
        assert found is not None
        assert found.locked
    finally:
        source.close()
