"""Load and validate the access policy (``include/policies/access.yaml``).

Who logs in how (issue 20): people through the company directory, their Airflow roles exactly what
their directory groups grant (:attr:`AccessPolicy.groups`, re-read at every login by
:mod:`include.auth.security`); a password in Airflow's own database only for the break-glass
admin and the listed service accounts; and how long a directory user's token is trusted before
the directory is asked again (:attr:`AccessPolicy.recheck_interval`, :mod:`include.auth.fab`).

The rules a schema cannot express (also ``policy-check``'s ``access-policy`` rule): every role
named exists (a FAB built-in or one ``policy-sync`` creates), every domain operator/approver role
and every approver group of ``approvals.yaml`` is granted by some directory group, only the
``admin_groups`` grant Admin, nobody's group grants the service accounts' role, and the recheck
interval stays short enough to call leavers "out at once".
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from functools import cache
from pathlib import Path
from typing import Any

from include.policies.approvals import ApprovalPolicy, load_approvals
from include.policies.loader import POLICY_DIR, Policy, PolicyFile, load_domain_policy, parse_duration

ACCESS_FILE = POLICY_DIR / "access.yaml"
# FAB's built-in roles (AUTH_ROLE_ADMIN and the ones Airflow's FAB provider creates at start).
ADMIN_ROLE = "Admin"
BUILTIN_ROLES = frozenset({ADMIN_ROLE, "Op", "User", "Viewer"})
# Longest recheck interval the policy accepts: beyond it a leaver is not "out at once".
MAX_RECHECK_INTERVAL = timedelta(minutes=5)


@dataclass(frozen=True)
class DirectoryGroup:
    """A directory group (``cn=<name>,ou=groups``) and the Airflow roles its members get."""

    name: str
    description: str
    roles: tuple[str, ...]


@dataclass(frozen=True)
class AccessPolicy:
    source: Path
    groups: dict[str, DirectoryGroup]
    admin_groups: frozenset[str]
    break_glass: str
    service_accounts: frozenset[str]
    recheck_interval: timedelta

    @property
    def local_accounts(self) -> frozenset[str]:
        """Every account that may log in with a local password (break-glass and service accounts)."""
        return frozenset({self.break_glass, *self.service_accounts})

    def is_local_account(self, username: str) -> bool:
        """Whether ``username`` (compared case-insensitively, as FAB finds users) is a local account."""
        return username.lower() in self.local_accounts

    def roles_of_groups(self, groups: Iterable[str]) -> set[str]:
        """The roles granted by the directory groups ``groups``; groups not in the policy grant none."""
        return {role for name in groups if (group := self.groups.get(name)) for role in group.roles}

    def groups_granting(self, role: str) -> list[str]:
        """The directory groups that grant ``role``, sorted (what to add a person to for it)."""
        return sorted(name for name, group in self.groups.items() if role in group.roles)


def policy_roles(domains: Policy, approvals: ApprovalPolicy) -> set[str]:
    """The roles ``policy-sync`` creates (include/policies/sync.py) for these policies."""
    from include.policies.sync import AUDITOR_ROLE, VERIFIER_ROLE

    roles = {AUDITOR_ROLE, VERIFIER_ROLE, *approvals.groups}
    for domain in domains.domains.values():
        roles.update((domain.operator_role, domain.approver_role))
    return roles


def _role_problems(document: dict[str, Any], known: frozenset[str] | set[str]) -> list[str]:
    from include.policies.sync import VERIFIER_ROLE

    problems = []
    builtins = ", ".join(sorted(BUILTIN_ROLES))
    for name, group in document["groups"].items():
        for index, role in enumerate(group["roles"]):
            where = f"groups.{name}.roles.{index}"
            if role not in known:
                problems.append(
                    f"{where}: role {role!r} does not exist (FAB built-ins: {builtins}; or a domain "
                    "role of domains.yaml, an approver group of approvals.yaml, auditor)"
                )
            elif role == ADMIN_ROLE and name not in document["admin_groups"]:
                problems.append(f"{where}: only admin_groups may grant {ADMIN_ROLE}; {name!r} is not one")
            elif role == VERIFIER_ROLE:
                problems.append(
                    f"{where}: {VERIFIER_ROLE!r} is the approval verifier service account's role; "
                    "no person's group may grant it"
                )
    return problems


def _coverage_problems(document: dict[str, Any], domains: Policy, approvals: ApprovalPolicy) -> list[str]:
    granted = {role for group in document["groups"].values() for role in group["roles"]}
    needed = {f"approvals.yaml group {name!r}": name for name in approvals.groups}
    for domain in domains.domains.values():
        needed[f"domain {domain.name!r} operator role"] = domain.operator_role
        needed[f"domain {domain.name!r} approver role"] = domain.approver_role
    return [
        f"groups: no directory group grants {role!r} ({what})"
        for what, role in sorted(needed.items())
        if role not in granted
    ]


def _rules(document: dict[str, Any], *, domains: Policy, approvals: ApprovalPolicy) -> list[str]:
    problems = _role_problems(document, BUILTIN_ROLES | policy_roles(domains, approvals))
    for index, name in enumerate(document["admin_groups"]):
        if name not in document["groups"]:
            problems.append(f"admin_groups.{index}: {name!r} is not a group of this policy")
    problems += _coverage_problems(document, domains, approvals)
    local = document["local_accounts"]
    if local["break_glass"] in local["service_accounts"]:
        problems.append(
            f"local_accounts.service_accounts: {local['break_glass']!r} is the break-glass account; "
            "it may not also be a service account"
        )
    if parse_duration(document["recheck_interval"]) > MAX_RECHECK_INTERVAL:
        problems.append(
            f"recheck_interval: {document['recheck_interval']} is longer than {MAX_RECHECK_INTERVAL}: "
            "a locked account's token would stay usable that long"
        )
    return problems


def _build(document: dict[str, Any], source: Path, **_: object) -> AccessPolicy:
    local = document["local_accounts"]
    return AccessPolicy(
        source=source,
        groups={
            name: DirectoryGroup(name, raw["description"], tuple(raw["roles"]))
            for name, raw in document["groups"].items()
        },
        admin_groups=frozenset(document["admin_groups"]),
        break_glass=local["break_glass"],
        service_accounts=frozenset(local["service_accounts"]),
        recheck_interval=parse_duration(document["recheck_interval"]),
    )


ACCESS = PolicyFile("access", "access policy", build=_build, rules=_rules)


def load_access_file(
    path: Path, domains: Policy | None = None, approvals: ApprovalPolicy | None = None
) -> AccessPolicy:
    """Load and validate one access policy file.

    :param path: the file to load.
    :param domains: the domain policy whose roles it grants; the deployed one by default.
    :param approvals: the approval policy whose groups it grants; the deployed one by default.
    :raises PolicyError: the file is unreadable or invalid; the message lists every problem.
    """
    return ACCESS.load(path, domains=domains or load_domain_policy(), approvals=approvals or load_approvals())


@cache
def load_access() -> AccessPolicy:
    """The deployed access policy (``access.yaml``), loaded once per process."""
    return load_access_file(ACCESS_FILE)
