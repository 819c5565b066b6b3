"""Make Airflow match the domain policy: one pool per domain, the domain roles. Idempotent.

``python -m include.cli policy-sync`` runs in the Airflow environment (it talks to the metadata
DB), from ``make run``, from the test session and from a deployment job after migrations.
Running it twice changes nothing the second time, and it says so.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from include.policies.loader import Policy, load_domain_policy


@dataclass
class SyncReport:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    unmanaged: list[str] = field(default_factory=list)

    @property
    def changed(self) -> int:
        return len(self.created) + len(self.updated)

    def lines(self, kind: str) -> list[str]:
        out = [
            f"{kind}: {len(self.created)} created, {len(self.updated)} updated, "
            f"{len(self.unchanged)} unchanged"
        ]
        out += [f"  + {name}" for name in self.created]
        out += [f"  ~ {name}" for name in self.updated]
        if self.unmanaged:
            out.append(f"  not in policy (left alone): {', '.join(self.unmanaged)}")
        return out


def _pool_description(policy: Policy, name: str) -> str:
    domain = policy.domains[name]
    return f"Domain {name} (managed by include/policies/domains.yaml): {domain.description}"


def sync_pools(policy: Policy) -> SyncReport:
    """Create or update one pool per domain with the policy's slot count.

    Deferred tasks do not occupy pool slots (include_deferred=False): a connector that defers to
    wait out a rate limit must not block its domain's other work; approval waits never do.
    """
    from airflow.models.pool import Pool
    from airflow.utils.session import create_session

    report = SyncReport()
    with create_session() as session:
        existing = {str(pool.pool): pool for pool in Pool.get_pools(session=session)}
        for name, domain in sorted(policy.domains.items()):
            wanted = (domain.pool_slots, _pool_description(policy, name), False)
            current = existing.get(domain.pool)
            if (
                current is not None
                and (current.slots, current.description, current.include_deferred) == wanted
            ):
                report.unchanged.append(domain.pool)
                continue
            (report.updated if current is not None else report.created).append(domain.pool)
            Pool.create_or_update_pool(
                domain.pool, slots=wanted[0], description=wanted[1], include_deferred=False, session=session
            )
        managed = {d.pool for d in policy.domains.values()} | {Pool.DEFAULT_POOL_NAME}
        report.unmanaged = sorted(set(existing) - managed)
    return report


# Global permissions per kind of role. FAB checks a DAG sub-entity (runs, task instances, HITL
# details, ...) twice: the entity type globally (these) and the DAG itself (each DAG's
# access_control, set by the workflow factory per domain). So a global "Task Instances: can_edit"
# lets an operator clear task instances only of the DAGs their domain role may edit.
WEBSITE = (("can_read", "Website"), ("can_read", "My Profile"))
OPERATOR_GLOBAL_PERMISSIONS = (
    *WEBSITE,
    ("can_read", "DAG Runs"),
    ("can_edit", "DAG Runs"),
    ("can_read", "Task Instances"),
    ("can_edit", "Task Instances"),
    ("can_read", "Task Logs"),
    ("can_read", "XComs"),
    ("can_read", "HITL Detail"),
)
APPROVER_GLOBAL_PERMISSIONS = (
    *WEBSITE,
    ("can_read", "HITL Detail"),
    ("can_edit", "HITL Detail"),
    # To see the run they approve.
    ("can_read", "Task Instances"),
    ("can_read", "DAG Runs"),
    ("can_read", "Task Logs"),
)
# Read-only, every domain: global "DAGs: can_read" covers all DAGs; no edit, no create anywhere,
# no connections, variables or configuration (where secrets live).
AUDITOR_ROLE = "auditor"
AUDITOR_GLOBAL_PERMISSIONS = (
    *WEBSITE,
    ("can_read", "DAGs"),
    ("can_read", "DAG Runs"),
    ("can_read", "Task Instances"),
    ("can_read", "Task Logs"),
    ("can_read", "HITL Detail"),
    ("can_read", "Audit Logs"),
    ("can_read", "XComs"),
    ("can_read", "DAG Code"),
    ("can_read", "DAG Versions"),
    ("can_read", "Pools"),
    ("can_read", "ImportError"),
)


# The service account privileged steps read approvals with (include/approvals/verify.py): the
# HITL details of every DAG's runs, and users' roles (to re-check a responder's group). Read only.
VERIFIER_ROLE = "approval_verifier"
VERIFIER_GLOBAL_PERMISSIONS = (
    ("can_read", "DAGs"),
    ("can_read", "DAG Runs"),
    ("can_read", "Task Instances"),
    ("can_read", "HITL Detail"),
    ("can_read", "Users"),
)


def approver_roles(policy: Policy) -> list[str]:
    """The domain approver roles and the approver groups of the approval policy."""
    from include.policies.approvals import load_approvals

    return sorted({d.approver_role for d in policy.domains.values()} | set(load_approvals().groups))


def policy_roles(policy: Policy) -> list[str]:
    roles = {AUDITOR_ROLE, VERIFIER_ROLE, *approver_roles(policy)}
    for domain in policy.domains.values():
        roles.add(domain.operator_role)
    return sorted(roles)


def sync_roles(policy: Policy) -> SyncReport:
    """Create the domain roles, the approver groups and the auditor role in the FAB auth manager.

    Per-DAG permissions for these roles come from each DAG's ``access_control`` (set by the
    workflow factory) when the DAG is synced; the role must exist first. Each kind of role also
    gets its global permissions (the ``*_GLOBAL_PERMISSIONS`` above); permissions granted by hand
    are left alone.
    """
    from airflow.providers.fab.auth_manager.cli_commands.utils import get_application_builder

    report = SyncReport()
    approvers = set(approver_roles(policy))
    operators = {d.operator_role for d in policy.domains.values()}

    def wanted(name: str) -> tuple[tuple[str, str], ...]:
        if name == AUDITOR_ROLE:
            return AUDITOR_GLOBAL_PERMISSIONS
        if name == VERIFIER_ROLE:
            return VERIFIER_GLOBAL_PERMISSIONS
        return (APPROVER_GLOBAL_PERMISSIONS if name in approvers else ()) + (
            OPERATOR_GLOBAL_PERMISSIONS if name in operators else ()
        )

    with get_application_builder() as appbuilder:
        sm = appbuilder.sm
        for name in policy_roles(policy):
            role = sm.find_role(name)
            created = role is None
            if role is None:
                role = sm.add_role(name)
            granted = False
            for action, resource in wanted(name):
                permission = sm.create_permission(action, resource)
                if permission not in role.permissions:
                    sm.add_permission_to_role(role, permission)
                    granted = True
            if created:
                report.created.append(name)
            else:
                (report.updated if granted else report.unchanged).append(name)
    return report


def sync_policy(policy: Policy, *, roles: bool = True) -> Iterator[str]:
    """Sync pools, then roles, yielding each report as soon as it is done.

    A generator on purpose: the pool report must be printed before the role sync starts, because
    loading the FAB app for roles writes its own warnings to stdout.
    """
    yield from sync_pools(policy).lines("pools")
    if roles:
        yield from sync_roles(policy).lines("roles")


def _handle(args: argparse.Namespace) -> int:
    for line in sync_policy(load_domain_policy(), roles=not args.skip_roles):
        print(line, flush=True)
    return 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "policy-sync", help="create/update pools and roles from include/policies (needs the Airflow DB)"
    )
    parser.add_argument("--skip-roles", action="store_true", help="only sync pools")
    parser.set_defaults(handler=_handle)
