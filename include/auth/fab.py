"""The FAB auth manager, plus role-based answers to approval requests.

Configured as ``[core] auth_manager = include.auth.fab.ApprovalAwareFabAuthManager``. Everything
is FAB's, except who may answer a human-in-the-loop request: Airflow's default compares the
user's id with the request's assigned user ids; this one reads role and four-eyes entries
(:mod:`include.approvals.respondents`), so the API server itself refuses an answer from the
person who triggered the run or from someone outside the approver groups (403), before any
state changes.

It also installs the approval door (:mod:`include.auth.middleware`): no one, Admin included, sets
the state of an approval gate or a privileged step by hand, marks a run waiting for an approval
"success", or writes the XComs of a DAG with a gate; each attempt is refused (403) and recorded,
and every accepted state change by hand is recorded too.

The ``auditor`` role reads everything and starts only the runs a DAG grants it (the on-demand
evidence packs). FAB cannot grant starting a run without edit on the DAG, which also allows
pausing, unpausing and backfilling it; :meth:`ApprovalAwareFabAuthManager.is_authorized_dag`
decides every other write of an auditor by their other roles' grants only.

(The class name keeps "FabAuthManager" in it: Airflow enables FAB-only code paths, such as
syncing DAG access_control to roles, by looking for that string in the configured class path.)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from airflow.providers.fab.auth_manager.fab_auth_manager import FabAuthManager
from airflow.providers.fab.auth_manager.models import Role, User, assoc_user_role
from airflow.utils.session import create_session
from sqlalchemy import select

from include.approvals.respondents import may_answer

if TYPE_CHECKING:
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails
    from starlette.middleware import _MiddlewareFactory

# The one write the auditor role's grants allow: starting a run by hand (POST .../dagRuns, the
# UI's trigger form included). FAB ties it to edit on the DAG, which also allows pausing,
# unpausing and a backfill (scheduled-type runs: for platform_evidence_packs the monthly packs of
# every customer, with the platform's seal); those are decided without the auditor's grants.
RUN_BY_HAND_ROUTE: Final = re.compile(r"^/api/v2/dags/[^/]+/dagRuns$")


@dataclass(frozen=True)
class _Grants:
    """Who FAB's checks see when a decision must not count some of a user's roles: FAB reads a
    user's permissions only from ``perms`` (``FabAuthManager._get_user_permissions``)."""

    perms: frozenset[tuple[str, str]]


def _permissions_without(user_id: int, excluded: str) -> frozenset[tuple[str, str]]:
    """(action, resource) of every role of the user but ``excluded``, read fresh from FAB's tables."""
    from airflow.providers.fab.auth_manager.models import Action, Permission, Resource, assoc_permission_role

    with create_session() as session:
        rows = session.execute(
            select(Action.name, Resource.name)
            .select_from(Permission)
            .join(Action, Permission.action_id == Action.id)
            .join(Resource, Permission.resource_id == Resource.id)
            .join(assoc_permission_role, assoc_permission_role.c.permission_view_id == Permission.id)
            .join(Role, Role.id == assoc_permission_role.c.role_id)
            .join(assoc_user_role, assoc_user_role.c.role_id == Role.id)
            .where(assoc_user_role.c.user_id == user_id, Role.name != excluded)
        )
        return frozenset((str(action), str(resource)) for action, resource in rows)


def _run_by_hand(method: str, access_entity: DagAccessEntity | None) -> bool:
    """The request is ``POST /api/v2/dags/{dag_id}/dagRuns`` (start a run), as the door saw it."""
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity

    from include.approvals.door import current_write

    if method != "POST" or access_entity != DagAccessEntity.RUN:
        return False
    write = current_write()
    return write is not None and write[0] == "POST" and RUN_BY_HAND_ROUTE.match(write[1]) is not None


def _role_names(user_id: int) -> set[str]:
    # Read the roles fresh: the user object handed to the auth manager may be detached from its
    # session, and role membership must be current at the moment of the answer.
    with create_session() as session:
        query = (
            select(Role.name)
            .join(assoc_user_role, assoc_user_role.c.role_id == Role.id)
            .where(assoc_user_role.c.user_id == user_id)
        )
        return set(session.scalars(query))


class ApprovalAwareFabAuthManager(FabAuthManager):
    def get_fastapi_middlewares(self) -> list[tuple[_MiddlewareFactory[Any], dict[str, Any]]]:
        """FAB's middlewares, then the approval door (:mod:`include.auth.middleware`) and the limit
        on failed token requests (:mod:`include.auth.login_limit`)."""
        from include.auth.login_limit import LoginLimitMiddleware
        from include.auth.middleware import ApprovalDoorMiddleware

        public_role = self._get_auth_role_public()
        door: dict[str, Any] = {"anonymous_actor": f"anonymous ({public_role})"} if public_role else {}
        ours: list[tuple[_MiddlewareFactory[Any], dict[str, Any]]] = [
            (ApprovalDoorMiddleware, door),
            (LoginLimitMiddleware, {}),
        ]
        return [*super().get_fastapi_middlewares(), *ours]

    def is_authorized_dag(
        self,
        *,
        method: Any,
        user: User,
        access_entity: DagAccessEntity | None = None,
        details: DagDetails | None = None,
    ) -> bool:
        """FAB's answer, except for a holder of the ``auditor`` role: it reads everything and starts
        the runs a DAG grants it (``platform_evidence_packs``: a pack on demand), nothing else. Any
        other change (pause, unpause, delete, a backfill, ...) is decided by their other roles' grants
        only (docs/policies.md, "Access control"). FAB cannot grant "start a run" without "edit the
        DAG", hence this check here rather than in the DAG's access_control."""
        from include.policies.sync import AUDITOR_ROLE

        allowed = super().is_authorized_dag(
            method=method, user=user, access_entity=access_entity, details=details
        )
        if not allowed or method == "GET" or not isinstance(user, User) or user.id is None:
            return allowed
        if _run_by_hand(method, access_entity) or AUDITOR_ROLE not in _role_names(user.id):
            return True
        others = _Grants(_permissions_without(user.id, AUDITOR_ROLE))
        return super().is_authorized_dag(
            method=method,
            user=others,  # type: ignore[arg-type]
            access_entity=access_entity,
            details=details,
        )

    def deserialize_user(self, token: dict[str, Any]) -> User:  # type: ignore[override]
        """FAB's (the user exists and is active), then the leaver check: a directory user's token is
        refused once their directory entry is locked or gone, asked again at most every
        ``recheck_interval`` (access.yaml) per user; an unreachable directory refuses (fail closed).
        Local accounts (break-glass, service accounts) have no directory entry to ask."""
        from include.auth.directory import standing
        from include.policies.access import load_access

        user = super().deserialize_user(token)
        name = user.get_name() if isinstance(user, User) else None
        if not isinstance(name, str) or load_access().is_local_account(name):
            return user
        if not standing().allows(name):
            raise ValueError(f"User with id {token['sub']} is locked or gone in the directory")
        return user

    def is_authorized_hitl_task(self, *, assigned_users: set[str], user: Any) -> bool:
        from include.policies.access import load_access

        if not isinstance(user, User) or user.id is None:
            return False
        roles, standing_problem = _answer_roles(user)
        if standing_problem is not None:
            _audit_refusal(
                user.get_name(), roles, assigned_users, rule="directory-locked", message=standing_problem
            )
            return False
        now = datetime.now(UTC)
        # ``now``: escalation groups' entries (``after:<time>:role:<group>``) open at their time; the
        # answer's responded_at, set by Airflow after this check, is never earlier than this.
        allowed = may_answer(
            assigned_users, user_id=str(user.id), username=user.get_name(), roles=roles, now=now
        )
        if allowed and not load_access().is_local_account(user.get_name()):
            _store_roles(user.id, roles)
        if not allowed:
            pending = _pending_escalation(assigned_users, roles, now)
            _audit_refusal(
                user.get_name(),
                roles,
                assigned_users,
                **(
                    {
                        "rule": "escalation-pending",
                        "message": f"{user.get_name()} may answer as {', '.join(pending[1])} only after "
                        f"escalation at {pending[0].isoformat()}",
                    }
                    if pending and f"not:{user.get_name()}" not in assigned_users
                    else {}
                ),
            )
        return allowed


def _store_roles(user_id: int, roles: set[str]) -> None:
    """The directory roles an answer was judged by become the user's FAB roles (when they differ),
    so the privileged step's own check (include/approvals/verify.py, which reads roles through the
    REST API) judges by the same membership rather than by the one of the user's last login."""
    from sqlalchemy import delete, insert

    with create_session() as session:
        current = set(
            session.scalars(
                select(Role.name)
                .join(assoc_user_role, assoc_user_role.c.role_id == Role.id)
                .where(assoc_user_role.c.user_id == user_id)
            )
        )
        if current == roles:
            return
        role_ids = list(session.scalars(select(Role.id).where(Role.name.in_(sorted(roles)))))
        session.execute(delete(assoc_user_role).where(assoc_user_role.c.user_id == user_id))
        if role_ids:
            session.execute(insert(assoc_user_role), [{"user_id": user_id, "role_id": i} for i in role_ids])


def _answer_roles(user: User) -> tuple[set[str], str | None]:
    """The roles an approval answer is judged by, and why the user may not answer at all (or None).

    A directory user's roles come fresh from the directory (no cache: an answer is the moment that
    counts), through their groups and access.yaml; a locked or removed account, or a directory
    that cannot be asked, answers nothing. Local accounts keep their roles in the FAB database.
    """
    from include.auth.directory import DirectoryUnavailable, lookup, roles_for
    from include.policies.access import load_access

    name = user.get_name()
    if load_access().is_local_account(name):
        return _role_names(user.id), None
    try:
        person = lookup(name)
    except DirectoryUnavailable as exc:
        return set(), f"{name} may not answer: the directory could not be asked ({exc})"
    if person is None or person.locked:
        state = "gone from" if person is None else "locked in"
        return set(), f"{name} may not answer: the account is {state} the directory"
    return roles_for(person), None


def _audit_refusal(
    username: str, roles: set[str], assigned: set[str], *, rule: str | None = None, message: str | None = None
) -> None:
    """A refused answer is a policy violation on the audit trail: who tried, against which rule."""
    from include.approvals.door import mark_refusal_recorded
    from include.approvals.respondents import EXCLUDE_PREFIX
    from include.audit.emit import emit
    from include.audit.records import POLICY_VIOLATION
    from include.auth.middleware import run_audit_fields

    target = mark_refusal_recorded()  # this record is the attempt's; the door writes no second one
    four_eyes = f"{EXCLUDE_PREFIX}{username}" in assigned
    emit(
        {
            "kind": POLICY_VIOLATION,
            "actor": username,
            **run_audit_fields(target.get("dag_id"), target.get("run_id")),
            **{key: value for key, value in target.items() if value},
            "subject": "approval answer refused",
            "details": {
                "rule": rule or ("four-eyes" if four_eyes else "approver-group"),
                "message": message
                or (
                    f"{username} may not answer: excluded (triggered the run or answered an earlier step)"
                    if four_eyes
                    else f"{username} is in none of the approver groups asked"
                ),
                "assigned": sorted(assigned),
                "roles": sorted(roles),
            },
        }
    )


def _pending_escalation(
    assigned: set[str], roles: set[str], now: datetime
) -> tuple[datetime, list[str]] | None:
    """The earliest time and the groups by which a refused user could answer later (escalation)."""
    from include.approvals.respondents import AFTER_PREFIX, parse_escalation

    parsed = [parse_escalation(entry) for entry in assigned if entry.startswith(AFTER_PREFIX)]
    pending = sorted((at, role) for at, role in filter(None, parsed) if role in roles and now < at)
    return (pending[0][0], sorted({role for _, role in pending})) if pending else None
