"""Load and validate the HR role mapping (``include/policies/hr_roles.yaml``).

A job role of the HR record (``soc-analyst``, ``finance``, ...) decides which groups a new employee
joins, in AWS IAM Identity Center and in the directory. The mapping is data reviewed by pull
request, not code: a line in the diff shows exactly what access a role gains. Onboarding reads it
through :func:`role_mapping`; offboarding does not need it (it removes every membership).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal

from include.policies.loader import POLICY_DIR, PolicyError, PolicyFile

HR_ROLES_FILE = POLICY_DIR / "hr_roles.yaml"

System = Literal["identity_center", "directory"]
SYSTEMS: tuple[System, ...] = ("identity_center", "directory")
_LABEL: dict[System, str] = {"identity_center": "Identity Center", "directory": "directory"}
_FIELD: dict[System, str] = {"identity_center": "identity_center_groups", "directory": "directory_groups"}


@dataclass(frozen=True)
class Group:
    name: str
    description: str
    privileged: bool


@dataclass(frozen=True)
class RoleMapping:
    """The groups an employee of ``role`` joins; ``privileged`` roles need a security officer's approval."""

    role: str
    description: str
    privileged: bool
    identity_center_groups: tuple[str, ...]
    directory_groups: tuple[str, ...]

    def as_xcom(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "privileged": self.privileged,
            "identity_center_groups": list(self.identity_center_groups),
            "directory_groups": list(self.directory_groups),
        }


@dataclass(frozen=True)
class HrRolePolicy:
    source: Path
    roles: dict[str, RoleMapping]
    groups: dict[System, dict[str, Group]]

    def role(self, name: str) -> RoleMapping:
        """The mapping of a job role.

        :param name: the job role of the HR record.
        :raises PolicyError: an unknown role, naming every known one.
        """
        try:
            return self.roles[name]
        except (KeyError, TypeError):
            known = ", ".join(sorted(self.roles))
            raise PolicyError(f"unknown HR role {name!r}: known roles in {self.source} are {known}") from None


def _check_listed(
    names: list[str], system: System, catalogue: dict[str, Any], where: str
) -> tuple[list[str], set[str]]:
    """Problems of one group list (unknown names) and the names that are declared and privileged."""
    problems, privileged = [], set()
    declared = ", ".join(sorted(catalogue))
    for index, name in enumerate(names):
        if name not in catalogue:
            problems.append(
                f"{where}.{index}: unknown {_LABEL[system]} group {name!r} (declared: {declared})"
            )
        elif catalogue[name].get("privileged", False):
            privileged.add(name)
    return problems, privileged


def _check_baseline(document: dict[str, Any]) -> list[str]:
    problems = []
    for system in SYSTEMS:
        field = _FIELD[system]
        where = f"baseline.{field}"
        unknown, privileged = _check_listed(
            document["baseline"][field], system, document["groups"][system], where
        )
        problems += unknown
        for index, name in enumerate(document["baseline"][field]):
            if name in privileged:
                problems.append(
                    f"{where}.{index}: {name!r} is privileged; a baseline group is given to every employee"
                )
    return problems


def _check_role(name: str, raw: dict[str, Any], document: dict[str, Any]) -> list[str]:
    where = f"roles.{name}"
    problems: list[str] = []
    privileged: list[str] = []
    for system in SYSTEMS:
        field = _FIELD[system]
        listed = raw[field]
        unknown, found = _check_listed(listed, system, document["groups"][system], f"{where}.{field}")
        problems += unknown
        baseline = [g for g in document["baseline"][field] if g in document["groups"][system]]
        # A privileged baseline group is reported once, under baseline, not under every role.
        privileged += [f"{g!r} ({_LABEL[system]})" for g in listed if g in found and g not in baseline]
        for group in baseline:
            if group not in listed:
                problems.append(f"{where}.{field}: missing baseline group {group!r}")
    declared = raw.get("privileged", False)
    if privileged and not declared:
        problems.append(
            f"{where}.privileged: false, but it grants the privileged group(s) {', '.join(privileged)}"
        )
    if declared and not privileged and not problems:
        problems.append(f"{where}.privileged: true, but none of its groups is privileged")
    return problems


def _check_unused(document: dict[str, Any]) -> list[str]:
    problems = []
    for system in SYSTEMS:
        used = {g for raw in document["roles"].values() for g in raw[_FIELD[system]]}
        for name in document["groups"][system]:
            if name not in used:
                problems.append(f"groups.{system}.{name}: declared, but no role uses it")
    return problems


def _rules(document: dict[str, Any]) -> list[str]:
    messages = _check_baseline(document)
    for name, raw in document["roles"].items():
        messages += _check_role(name, raw, document)
    return messages + _check_unused(document)


def _build(document: dict[str, Any], source: Path) -> HrRolePolicy:
    groups: dict[System, dict[str, Group]] = {
        system: {
            name: Group(name=name, description=raw["description"], privileged=raw.get("privileged", False))
            for name, raw in document["groups"][system].items()
        }
        for system in SYSTEMS
    }
    roles = {
        name: RoleMapping(
            role=name,
            description=raw["description"],
            privileged=raw.get("privileged", False),
            identity_center_groups=tuple(raw["identity_center_groups"]),
            directory_groups=tuple(raw["directory_groups"]),
        )
        for name, raw in document["roles"].items()
    }
    return HrRolePolicy(source=source, roles=roles, groups=groups)


HR_ROLES = PolicyFile("hr_roles", "HR role mapping", build=_build, rules=_rules)


def load_hr_roles_file(path: Path) -> HrRolePolicy:
    """Load and validate one HR role mapping file.

    :param path: the file to load.
    :raises PolicyError: the file is unreadable or invalid; the message lists every problem.
    """
    return HR_ROLES.load(path)


@cache
def load_hr_roles() -> HrRolePolicy:
    """The deployed HR role mapping (``hr_roles.yaml``), loaded once per process."""
    return HR_ROLES.load(HR_ROLES_FILE)


def known_roles() -> list[str]:
    """The job roles an HR record may name, sorted."""
    return sorted(load_hr_roles().roles)


def role_mapping(role: str) -> RoleMapping:
    """The groups an employee of ``role`` joins.

    :param role: the job role of the HR record (``soc-analyst``, ...).
    :raises PolicyError: an unknown role, naming every known one.
    """
    return load_hr_roles().role(role)
