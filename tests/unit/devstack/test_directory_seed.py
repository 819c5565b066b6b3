"""The local directory's seeded people (devstack/directory_seed.py), against the access policy."""

from __future__ import annotations

import pytest

from devstack import directory_seed
from devstack.config import Profile
from include.policies.access import load_access
from include.policies.approvals import load_approvals


def test_groups_for_roles_grant_exactly_those_roles() -> None:
    access = load_access()
    for roles in (["soc_lead"], ["soc_operator", "soc_oncall"], ["Admin"], ["auditor", "hr_lead"]):
        assert access.roles_of_groups(directory_seed.groups_for_roles(roles)) == set(roles)
    with pytest.raises(ValueError, match="approval_verifier"):
        directory_seed.groups_for_roles(["approval_verifier"])


def test_seeded_people_cover_every_approver_group_and_four_eyes() -> None:
    access = load_access()
    roles = {uid: access.roles_of_groups(groups) for uid, groups in directory_seed.SEEDED.items()}
    for uid, groups in directory_seed.SEEDED.items():
        assert set(groups) <= set(access.groups), uid
        assert directory_seed.UID_OK.fullmatch(uid), uid
    for group in load_approvals().groups:
        assert any(group in granted for granted in roles.values()), group
    assert sum("soc_lead" in granted for granted in roles.values()) >= 2  # two leads: four-eyes
    assert [uid for uid, granted in roles.items() if "Admin" in granted] == ["pat-admin"]


def test_login_connection_is_the_read_only_account_and_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(directory_seed.openldap, "reader_password", lambda profile: "reader-pw")
    profile = Profile(name="seed-unit", api_port=0, pg_port=0, moto_port=0, smtp_port=0, ldap_port=3)
    connection = directory_seed.login_connection(profile)
    assert connection["login"] == "cn=orchestrator-reader,ou=services,dc=secops,dc=example"
    assert connection["host"] == "127.0.0.1"
    assert connection["port"] == 3
    assert connection["password"] == "reader-pw"
