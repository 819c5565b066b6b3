"""The access policy (include/policies/access.yaml): groups -> roles, local accounts, recheck interval."""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from include.policies.access import ACCESS_FILE, load_access, load_access_file, policy_roles
from include.policies.approvals import load_approvals
from include.policies.checks import CheckContext, check_access_policy
from include.policies.loader import POLICY_DIR, PolicyError, load_domain_policy


@pytest.fixture
def document() -> dict[str, Any]:
    return yaml.safe_load(ACCESS_FILE.read_text(encoding="utf-8"))


def _load(tmp_path: Path, document: dict[str, Any]) -> Any:
    path = tmp_path / "access.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return load_access_file(path)


def _problems(tmp_path: Path, document: dict[str, Any]) -> str:
    with pytest.raises(PolicyError) as caught:
        _load(tmp_path, document)
    return str(caught.value)


def test_deployed_policy_grants_every_domain_and_approver_role() -> None:
    access = load_access()
    granted = {role for group in access.groups.values() for role in group.roles}
    domains = load_domain_policy()
    for domain in domains.domains.values():
        assert {domain.operator_role, domain.approver_role} <= granted
    assert set(load_approvals().groups) <= granted
    assert access.groups_granting("Admin") == ["orchestrator-admins"]
    assert access.recheck_interval == timedelta(seconds=30)
    # One role per group: a person's roles are exactly their groups (tests rely on it).
    assert all(len(group.roles) == 1 for group in access.groups.values())
    assert access.local_accounts == {"admin", "approval-verifier"}


def test_roles_of_groups_ignores_groups_outside_the_policy() -> None:
    access = load_access()
    assert access.roles_of_groups(["soc-lead", "soc-operator", "vpn-users", "Domain Admins"]) == {
        "soc_operator",
        "soc_lead",
    }
    assert access.roles_of_groups([]) == set()


@pytest.mark.parametrize(
    ("name", "local"),
    [("admin", True), ("ADMIN", True), ("approval-verifier", True), ("admin2", False), ("pat.admin", False)],
)
def test_local_accounts_compare_like_fab_finds_users(name: str, local: bool) -> None:
    assert load_access().is_local_account(name) is local


def test_unknown_role_is_refused(tmp_path: Path, document: dict[str, Any]) -> None:
    document["groups"]["soc-lead"]["roles"].append("soc_superuser")
    assert "groups.soc-lead.roles.1: role 'soc_superuser' does not exist" in _problems(tmp_path, document)


def test_admin_from_a_group_not_listed_as_admin_group_is_refused(
    tmp_path: Path, document: dict[str, Any]
) -> None:
    document["groups"]["auditors"]["roles"].append("Admin")
    assert "only admin_groups may grant Admin; 'auditors' is not one" in _problems(tmp_path, document)


def test_nobody_gets_the_verifier_service_role(tmp_path: Path, document: dict[str, Any]) -> None:
    document["groups"]["cloud-lead"]["roles"].append("approval_verifier")
    assert "no person's group may grant it" in _problems(tmp_path, document)


def test_an_approver_group_nobody_is_granted_is_refused(tmp_path: Path, document: dict[str, Any]) -> None:
    document["groups"]["security-officer"]["roles"] = ["Viewer"]
    assert "no directory group grants 'security_officer' (approvals.yaml group" in _problems(
        tmp_path, document
    )


def test_a_domain_role_nobody_is_granted_is_refused(tmp_path: Path, document: dict[str, Any]) -> None:
    del document["groups"]["support-operator"]
    assert "no directory group grants 'support_operator' (domain 'support' operator role)" in _problems(
        tmp_path, document
    )


def test_invalid_group_cn_is_refused(tmp_path: Path, document: dict[str, Any]) -> None:
    document["groups"]["Bad Group*"] = {"description": "not a cn", "roles": ["Viewer"]}
    assert "'Bad Group*' is not a directory group cn" in _problems(tmp_path, document)


def test_admin_group_must_be_a_group(tmp_path: Path, document: dict[str, Any]) -> None:
    document["admin_groups"].append("domain-admins")
    assert "admin_groups.1: 'domain-admins' is not a group of this policy" in _problems(tmp_path, document)


def test_break_glass_is_not_a_service_account_and_recheck_stays_short(
    tmp_path: Path, document: dict[str, Any]
) -> None:
    document["local_accounts"]["service_accounts"].append("admin")
    document["recheck_interval"] = "1h"
    problems = _problems(tmp_path, document)
    assert "'admin' is the break-glass account" in problems
    assert "recheck_interval: 1h is longer than 0:05:00" in problems


def test_policy_roles_are_what_policy_sync_creates() -> None:
    from include.policies.sync import policy_roles as sync_roles

    domains = load_domain_policy()
    assert policy_roles(domains, load_approvals()) == set(sync_roles(domains))


def _policy_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "policies"
    folder.mkdir()
    for name in ("domains.yaml", "approvals.yaml", "capabilities.yaml", "access.yaml"):
        shutil.copy(POLICY_DIR / name, folder / name)
    return folder


def test_policy_check_rule_names_the_file_and_the_problem(tmp_path: Path) -> None:
    folder = _policy_dir(tmp_path)
    context = CheckContext(dags_folder=tmp_path, policy_file=folder / "domains.yaml")
    assert check_access_policy(context) == []
    document = yaml.safe_load((folder / "access.yaml").read_text())
    document["groups"]["soc-oncall"]["roles"].append("Admin")
    (folder / "access.yaml").write_text(yaml.safe_dump(document))
    violations = check_access_policy(CheckContext(dags_folder=tmp_path, policy_file=folder / "domains.yaml"))
    assert [v.rule for v in violations] == ["access-policy"]
    assert violations[0].location.endswith("access.yaml")
    assert "only admin_groups may grant Admin; 'soc-oncall' is not one" in violations[0].message


def test_policy_check_rule_is_registered() -> None:
    from include.policies.checks import RULES

    assert check_access_policy in RULES
