"""The auditor role starts the runs a DAG grants it and changes nothing else (include/auth/fab.py).

FAB ties "start a run" to edit on the DAG: the auditor's grant on ``platform_evidence_packs`` would
also let it pause, unpause or backfill that DAG. The auth manager decides every write but a run
started by hand (``POST /api/v2/dags/{dag_id}/dagRuns``, as the door saw the request) without the
auditor's grants. FAB's own decision is the real one (``FabAuthManager.is_authorized_dag``); only
the users' permissions and roles, which FAB reads from its database, are given here.
"""

from __future__ import annotations

from typing import Any

import pytest
from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails
from airflow.providers.fab.auth_manager.models import User

from include.approvals import door

EVIDENCE = "platform_evidence_packs"
# What policy-sync and the DAG's access_control grant (include/policies/sync.py, dags/platform/).
AUDITOR = {("can_read", "DAGs"), ("can_read", "DAG Runs"), ("can_read", "Task Instances")} | {
    ("can_read", f"DAG:{EVIDENCE}"),
    ("can_edit", f"DAG:{EVIDENCE}"),
    ("can_read", f"DAG Run:{EVIDENCE}"),
    ("can_create", f"DAG Run:{EVIDENCE}"),
}
OPERATOR = {
    ("can_read", "DAG Runs"),
    ("can_edit", "DAG Runs"),
    ("can_read", f"DAG:{EVIDENCE}"),
    ("can_edit", f"DAG:{EVIDENCE}"),
    ("can_create", f"DAG Run:{EVIDENCE}"),
}
ROLES = {
    1: {"auditor": AUDITOR},
    2: {"platform_operator": OPERATOR},
    3: {"auditor": AUDITOR, "platform_operator": OPERATOR},
}
TRIGGER = ("POST", f"/api/v2/dags/{EVIDENCE}/dagRuns")


@pytest.fixture
def manager(monkeypatch: pytest.MonkeyPatch) -> Any:
    from include.auth import fab

    monkeypatch.setattr(fab, "_role_names", lambda user_id: set(ROLES[user_id]))
    monkeypatch.setattr(
        fab,
        "_permissions_without",
        lambda user_id, excluded: frozenset(
            p for role, perms in ROLES[user_id].items() if role != excluded for p in perms
        ),
    )
    return fab.ApprovalAwareFabAuthManager()


def user(user_id: int) -> User:
    person = User(id=user_id, username=f"user{user_id}", active=True)
    person._perms = {p for perms in ROLES[user_id].values() for p in perms}
    return person


def during(method: str, path: str) -> Any:
    """The door's context around a watched write (include/auth/middleware.py)."""
    return door.refusal_recording().set({"recorded": False, "method": method, "path": path})


def decide(
    manager: Any, user_id: int, method: str, entity: DagAccessEntity | None, request: tuple[str, str]
) -> bool:
    token = during(*request)
    try:
        return bool(
            manager.is_authorized_dag(
                method=method, user=user(user_id), access_entity=entity, details=DagDetails(id=EVIDENCE)
            )
        )
    finally:
        door.refusal_recording().reset(token)


PAUSE = ("PUT", None, ("PATCH", f"/api/v2/dags/{EVIDENCE}"))
BULK_PAUSE = ("PUT", None, ("PATCH", "/api/v2/dags"))
BACKFILL = ("POST", DagAccessEntity.RUN, ("POST", "/api/v2/backfills"))
RUN = ("POST", DagAccessEntity.RUN, TRIGGER)
READ = ("GET", DagAccessEntity.RUN, ("GET", f"/api/v2/dags/{EVIDENCE}/dagRuns"))


@pytest.mark.parametrize(
    ("what", "call", "auditor", "operator", "both"),
    [
        ("start a run", RUN, True, True, True),
        ("read runs", READ, True, True, True),
        ("pause", PAUSE, False, True, True),
        ("pause in bulk (?dag_id=)", BULK_PAUSE, False, True, True),
        ("backfill", BACKFILL, False, True, True),
    ],
)
def test_the_auditor_starts_runs_and_changes_nothing_else(
    manager: Any, what: str, call: tuple[str, Any, tuple[str, str]], auditor: bool, operator: bool, both: bool
) -> None:
    method, entity, request = call
    answers = [decide(manager, user_id, method, entity, request) for user_id in (1, 2, 3)]
    assert answers == [auditor, operator, both], what


def test_fab_alone_would_let_the_auditor_pause_and_backfill(manager: Any) -> None:
    """The finding this module guards: FAB's own answer for the auditor's grants."""
    from airflow.providers.fab.auth_manager.fab_auth_manager import FabAuthManager

    for method, entity, _ in (PAUSE, BACKFILL):
        assert FabAuthManager.is_authorized_dag(
            manager, method=method, user=user(1), access_entity=entity, details=DagDetails(id=EVIDENCE)
        )


def test_a_run_by_hand_outside_the_door_is_decided_without_the_auditor_grant(manager: Any) -> None:
    # No watched request around the check (a caller the door did not see): fail closed.
    assert not manager.is_authorized_dag(
        method="POST", user=user(1), access_entity=DagAccessEntity.RUN, details=DagDetails(id=EVIDENCE)
    )
    assert manager.is_authorized_dag(
        method="POST", user=user(2), access_entity=DagAccessEntity.RUN, details=DagDetails(id=EVIDENCE)
    )


def test_fab_refusals_stay_refusals(manager: Any) -> None:
    # Delete is granted to nobody here: refused whatever the request.
    assert not decide(manager, 1, "DELETE", None, ("DELETE", f"/api/v2/dags/{EVIDENCE}"))
    assert not decide(manager, 3, "DELETE", None, ("DELETE", f"/api/v2/dags/{EVIDENCE}"))
    # Another DAG: the auditor has no grant, not even to start a run.
    assert not manager.is_authorized_dag(
        method="POST",
        user=user(1),
        access_entity=DagAccessEntity.RUN,
        details=DagDetails(id="soc_isolate_device"),
    )


def test_the_door_names_the_watched_write() -> None:
    assert door.current_write() is None
    token = during(*TRIGGER)
    try:
        assert door.current_write() == TRIGGER
    finally:
        door.refusal_recording().reset(token)
    assert door.current_write() is None
