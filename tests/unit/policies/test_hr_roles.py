"""HR role mapping: the deployed mapping, role look-up, and exact errors for broken files."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from include.policies.hr_roles import (
    HR_ROLES_FILE,
    RoleMapping,
    known_roles,
    load_hr_roles,
    load_hr_roles_file,
    role_mapping,
)
from include.policies.loader import PolicyError
from tests.support.documents import delete_at as _delete
from tests.support.documents import node_at
from tests.support.documents import set_at as _set

RAW = yaml.safe_load(HR_ROLES_FILE.read_text(encoding="utf-8"))
IC_DECLARED = ", ".join(sorted(RAW["groups"]["identity_center"]))
DIR_DECLARED = ", ".join(sorted(RAW["groups"]["directory"]))
ROLES = sorted(RAW["roles"])
GROUP_PATTERN = "^[a-z][a-z0-9-]{0,62}[a-z0-9]$"
ROLE_PATTERN = "^[a-z][a-z0-9-]{0,38}[a-z0-9]$"


def exactly(message: str) -> str:
    return f"^{re.escape(message)}$"


# --- the deployed mapping ---------------------------------------------------------------------


def test_deployed_mapping_covers_the_company_roles():
    assert known_roles() == [
        "cloud-engineer",
        "cloud-lead",
        "detection-engineer",
        "finance",
        "hr",
        "hr-lead",
        "implementation-engineer",
        "security-officer",
        "soc-analyst",
        "soc-lead",
        "support-engineer",
    ]
    assert role_mapping("soc-analyst") == RoleMapping(
        role="soc-analyst",
        description="SOC analyst (tier 1/2) working the alert queues of the tenants.",
        privileged=False,
        identity_center_groups=("all-staff", "soc-analysts"),
        directory_groups=("staff", "soc"),
    )


@pytest.mark.parametrize("role", ROLES)
def test_every_role_gets_the_baseline_and_only_declared_groups(role: str):
    mapping = role_mapping(role)
    policy = load_hr_roles()

    assert mapping.identity_center_groups[0] == "all-staff"
    assert "staff" in mapping.directory_groups
    assert set(mapping.identity_center_groups) <= set(policy.groups["identity_center"])
    assert set(mapping.directory_groups) <= set(policy.groups["directory"])
    privileged = [
        g for g in mapping.identity_center_groups if policy.groups["identity_center"][g].privileged
    ] + [g for g in mapping.directory_groups if policy.groups["directory"][g].privileged]
    assert mapping.privileged == bool(privileged)


def test_privileged_roles_are_the_leads_and_security_officers():
    assert {r for r in ROLES if role_mapping(r).privileged} == {
        "soc-lead",
        "cloud-lead",
        "hr-lead",
        "security-officer",
    }


def test_xcom_form_is_ids_only():
    assert role_mapping("finance").as_xcom() == {
        "role": "finance",
        "privileged": False,
        "identity_center_groups": ["all-staff", "billing"],
        "directory_groups": ["staff", "finance"],
    }


@pytest.mark.parametrize("role", ["ceo", "SOC-Analyst", "", None, ["soc-analyst"]])
def test_unknown_role_lists_the_known_ones(role: Any):
    with pytest.raises(
        PolicyError,
        match=exactly(f"unknown HR role {role!r}: known roles in {HR_ROLES_FILE} are " + ", ".join(ROLES)),
    ):
        role_mapping(role)


# --- broken files: every problem names file, key path and problem -----------------------------


def _rename(section: str, old: str, new: str) -> Callable[[dict[str, Any]], None]:
    def edit(document: dict[str, Any]) -> None:
        parent = node_at(document, section.split("/"))
        parent[new] = parent.pop(old)

    return edit


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        pytest.param(
            _set("roles/soc-analyst/identity_center_groups", ["all-staff", "soc-analyst"]),
            "roles.soc-analyst.identity_center_groups.1: unknown Identity Center group 'soc-analyst' "
            f"(declared: {IC_DECLARED})",
            id="unknown-identity-center-group",
        ),
        pytest.param(
            _set("roles/finance/directory_groups", ["staff", "finance", "accounting"]),
            "roles.finance.directory_groups.2: unknown directory group 'accounting' "
            f"(declared: {DIR_DECLARED})",
            id="unknown-directory-group",
        ),
        pytest.param(
            _set("roles/finance/identity_center_groups", ["billing"]),
            "roles.finance.identity_center_groups: missing baseline group 'all-staff'",
            id="missing-baseline-identity-center",
        ),
        pytest.param(
            _set("roles/support-engineer/directory_groups", ["support"]),
            "roles.support-engineer.directory_groups: missing baseline group 'staff'",
            id="missing-baseline-directory",
        ),
        pytest.param(
            _delete("roles/soc-lead/privileged"),
            "roles.soc-lead.privileged: false, but it grants the privileged group(s) "
            "'soc-leads' (Identity Center)",
            id="privileged-group-in-unprivileged-role",
        ),
        pytest.param(
            _set("roles/hr/directory_groups", ["staff", "hr", "hr-leads"]),
            "roles.hr.privileged: false, but it grants the privileged group(s) 'hr-leads' (directory)",
            id="privileged-directory-group-in-unprivileged-role",
        ),
        pytest.param(
            _set("roles/finance/privileged", True),
            "roles.finance.privileged: true, but none of its groups is privileged",
            id="privileged-role-without-privileged-group",
        ),
        pytest.param(
            _set(
                "groups/identity_center/red-team", {"description": "Red team - offensive testing accounts."}
            ),
            "groups.identity_center.red-team: declared, but no role uses it",
            id="unused-group",
        ),
        pytest.param(
            _set("baseline/directory_groups", ["staff", "everyone"]),
            f"baseline.directory_groups.1: unknown directory group 'everyone' (declared: {DIR_DECLARED})",
            id="unknown-baseline-group",
        ),
        pytest.param(
            _set("groups/identity_center/all-staff/privileged", True),
            "baseline.identity_center_groups.0: 'all-staff' is privileged; a baseline group is given to "
            "every employee",
            id="privileged-baseline-group",
        ),
        pytest.param(
            _set("roles/hr/identity_center_groups", ["all-staff", "all-staff"]),
            "roles.hr.identity_center_groups: ['all-staff', 'all-staff'] has non-unique elements",
            id="duplicate-group",
        ),
        pytest.param(
            _set("roles/hr/identity_center_groups", []),
            "roles.hr.identity_center_groups: [] should be non-empty",
            id="no-groups",
        ),
        pytest.param(
            _set("roles/hr/directory_groups", ["staff", "HR Team"]),
            f"roles.hr.directory_groups.1: 'HR Team' does not match '{GROUP_PATTERN}'",
            id="bad-group-name",
        ),
        pytest.param(
            _delete("roles/hr/description"),
            "roles.hr: 'description' is a required property",
            id="missing-description",
        ),
        pytest.param(
            _set("roles/hr/privileged", "no"),
            "roles.hr.privileged: 'no' is not of type 'boolean'",
            id="privileged-not-boolean",
        ),
        pytest.param(
            _set("roles/hr/aws_groups", ["all-staff"]),
            "roles.hr: Additional properties are not allowed ('aws_groups' was unexpected)",
            id="unknown-role-key",
        ),
        pytest.param(
            _rename("roles", "soc-analyst", "SOC_Analyst"),
            f"roles: 'SOC_Analyst' does not match '{ROLE_PATTERN}'",
            id="bad-role-name",
        ),
        pytest.param(
            _rename("groups/directory", "soc", "SOC"),
            f"groups.directory: 'SOC' does not match '{GROUP_PATTERN}'",
            id="bad-catalogue-name",
        ),
        pytest.param(
            _set("groups/directory/soc", {"description": "short"}),
            "groups.directory.soc.description: 'short' is too short",
            id="short-group-description",
        ),
        pytest.param(
            _delete("baseline"),
            "<root>: 'baseline' is a required property",
            id="missing-baseline",
        ),
        pytest.param(
            _set("version", 2),
            "version: 1 was expected",
            id="unknown-version",
        ),
    ],
)
def test_invalid_mapping_names_file_key_and_problem(edit, problem, write_policy):
    document = yaml.safe_load(HR_ROLES_FILE.read_text(encoding="utf-8"))
    edit(document)
    path = write_policy(document, "hr_roles.yaml")

    with pytest.raises(PolicyError, match=exactly(f"invalid HR role mapping:\n  {path}: {problem}")):
        load_hr_roles_file(path)


def test_every_problem_is_reported_at_once(write_policy):
    document = yaml.safe_load(HR_ROLES_FILE.read_text(encoding="utf-8"))
    _set("roles/finance/identity_center_groups", ["billing", "payroll"])(document)
    _delete("roles/cloud-lead/privileged")(document)
    path = write_policy(document, "hr_roles.yaml")

    with pytest.raises(PolicyError) as raised:
        load_hr_roles_file(path)

    assert str(raised.value).splitlines() == [
        "invalid HR role mapping:",
        f"  {path}: roles.cloud-lead.privileged: false, but it grants the privileged group(s) "
        "'cloud-admins' (Identity Center)",
        f"  {path}: roles.finance.identity_center_groups.1: unknown Identity Center group 'payroll' "
        f"(declared: {IC_DECLARED})",
        f"  {path}: roles.finance.identity_center_groups: missing baseline group 'all-staff'",
    ]


def test_not_a_mapping_not_yaml_and_missing_file(write_policy, tmp_path: Path):
    path = write_policy("- soc-analyst\n- finance\n", "hr_roles.yaml")
    with pytest.raises(
        PolicyError,
        match=exactly(
            f"invalid HR role mapping:\n  {path}: <root>: ['soc-analyst', 'finance'] is not of type 'object'"
        ),
    ):
        load_hr_roles_file(path)

    path = write_policy("roles: [unclosed\n", "hr_roles.yaml")
    with pytest.raises(PolicyError, match=r"hr_roles\.yaml: line 2 column 1: not valid YAML: "):
        load_hr_roles_file(path)

    missing = tmp_path / "nowhere.yaml"
    with pytest.raises(
        PolicyError, match=exactly(f"{missing}: cannot read policy file: No such file or directory")
    ):
        load_hr_roles_file(missing)
