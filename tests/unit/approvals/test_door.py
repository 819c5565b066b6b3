"""The approval door: which tasks are guarded, which requests are refused, what is recorded.

Classification is checked on the real workflows (parsed, serialized and read back as the API
server reads them); request matching and verdicts on a fake lookup with the shape of
``soc_disable_account``; the middleware on a small ASGI app standing in for Airflow's.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route as StarletteRoute
from starlette.testclient import TestClient

from include.approvals.door import (
    RULE_RUN_SUCCESS,
    RULE_STATE_STORE,
    RULE_XCOM,
    Change,
    Refusal,
    Route,
    RouteKind,
    current_manual_change,
    inspect_request,
    match_route,
    route_path,
)
from include.approvals.guarded import (
    RULE_GATE,
    RULE_PRIVILEGED,
    RULE_UNCLASSIFIED,
    DagShape,
    TaskKind,
    classify_operator,
    shape_of,
)
from include.auth.middleware import ApprovalDoorMiddleware, request_token

DAG = "soc_disable_account"
PLAIN_DAG = "support_triage"
GATE = "approve_identity_disable"
PRIVILEGED = "disable_account"
GATE_CLASS = "include.operators.approval.ApprovalGateOperator"
DISABLE_CLASS = "include.operators.iam.DisableAccountOperator"
CHAIN = ["inspect_account", "open_ticket", GATE, PRIVILEGED, "evidence"]
RUN = "manual__2026-05-04T10:00:00+00:00"
BASE = f"/api/v2/dags/{DAG}/dagRuns/{RUN}"
REPO = Path(__file__).resolve().parents[3]

GATE_MESSAGE = (
    "approve_identity_disable is an approval gate: its state is set only by an approver's answer "
    "(Required actions), never by hand. Ask an approver to answer it, or mark the run failed to stop "
    "the run."
)
PRIVILEGED_MESSAGE = (
    "disable_account is a privileged step (capability identity-disable): it runs only after its "
    "approval, and its state is never set by hand. Ask an approver to answer its approval request "
    "(Required actions), or mark the run failed to stop the run."
)
GATE_REASON = (
    "approve_identity_disable is an approval gate: its state is set only by an approver's answer "
    "(Required actions), never by hand"
)
XCOM_MESSAGE = (
    "XCom of {task} is not written by hand: soc_disable_account has an approval gate "
    "(approve_identity_disable), and its XComs hold the approval record and the values the approval "
    "question is built from. To change a value, clear the task that writes it (it runs again and the "
    "gate asks again)."
)


def _chain_shape(dag_id: str, tasks: list[str], kinds: Mapping[str, TaskKind], **extra: Any) -> DagShape:
    return DagShape(
        dag_id=dag_id,
        domain="soc",
        kinds=kinds,
        upstream={t: frozenset(tasks[i - 1 : i]) for i, t in enumerate(tasks)},
        downstream={t: frozenset(tasks[i + 1 : i + 2]) for i, t in enumerate(tasks)},
        **extra,
    )


SOC = _chain_shape(
    DAG,
    CHAIN,
    {
        GATE: TaskKind("gate", GATE_CLASS),
        PRIVILEGED: TaskKind("privileged", DISABLE_CLASS, "identity-disable"),
    },
    groups={"approval": frozenset({GATE}), "reporting": frozenset({"evidence"})},
)
PLAIN = _chain_shape(PLAIN_DAG, ["classify", "route_ticket"], {}, groups={"all": frozenset({"classify"})})


class FakeLookup:
    """Two DAGs (one with a gate, one without) and the task states of their runs."""

    def __init__(self, states: Mapping[str, Collection[str | None]] | None = None) -> None:
        self.states = states if states is not None else {GATE: {"deferred"}, PRIVILEGED: {None}}
        self.asked: list[tuple[str, str | None]] = []

    def shape(self, dag_id: str, run_id: str | None) -> DagShape | None:
        self.asked.append((dag_id, run_id))
        return {DAG: SOC, PLAIN_DAG: PLAIN}.get(dag_id)

    def task_states(self, dag_id: str, run_id: str) -> Mapping[str, Collection[str | None]]:
        return self.states if dag_id == DAG else {}

    def audit_fields(self, dag_id: str, run_id: str | None) -> dict[str, Any]:
        return {"domain": "soc", "tenant": "globex", "correlation_id": "corr-0123456789abcdef"}


def verdict(
    method: str,
    path: str,
    body: Any,
    query: Mapping[str, list[str]] | None = None,
    lookup: FakeLookup | None = None,
) -> Refusal | Change | None:
    route = match_route(method, path)
    assert route is not None, f"{method} {path} is not inspected"
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return inspect_request(route, raw, query or {}, lookup or FakeLookup())


# --- Classification -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def served_shapes() -> dict[str, DagShape]:
    """The real workflows as the API server reads them: parsed, serialized, deserialized."""
    from airflow.serialization.serialized_objects import DagSerialization

    from include.policies.checks import load_dag_folder

    shapes = {}
    for path in ("soc/disable_account.py", "hr/offboarding.py"):
        for dag in load_dag_folder(REPO / "dags" / path).dags:
            served = DagSerialization.from_dict(DagSerialization.to_dict(dag))
            shapes[dag.dag_id] = shape_of(served)
    return shapes


def test_soc_disable_account_has_one_gate_and_one_privileged_step(served_shapes: dict[str, DagShape]) -> None:
    shape = served_shapes[DAG]
    assert dict(shape.kinds) == {
        GATE: TaskKind("gate", GATE_CLASS),
        PRIVILEGED: TaskKind("privileged", DISABLE_CLASS, "identity-disable"),
    }
    assert shape.domain == "soc"
    assert shape.gates == [GATE]
    assert shape.reach({"open_ticket"}, upstream=False, downstream=True) == {
        "open_ticket",
        GATE,
        PRIVILEGED,
        "evidence",
        "change_failed",
    }
    assert shape.reach({"evidence"}, upstream=True, downstream=False) == set(CHAIN)
    assert shape.reach({"open_ticket"}, upstream=False, downstream=False) == {"open_ticket"}


def test_hr_offboarding_gates_are_a_task_group_and_mapped_steps_count(
    served_shapes: dict[str, DagShape],
) -> None:
    shape = served_shapes["hr_offboarding"]
    steps = ("approve_identity_disable.step_1_hr_lead", "approve_identity_disable.step_2_security_officer")
    assert {task for task, kind in shape.kinds.items() if kind.kind == "gate"} == set(steps)
    assert {task: kind.capability for task, kind in shape.kinds.items() if kind.kind == "privileged"} == {
        "disable_identity": "identity-disable",
        "disable_directory_account": "identity-disable",
        "revoke_tenant_keys": "identity-disable",  # a mapped task
    }
    assert shape.groups["approve_identity_disable"] == frozenset(steps)
    assert shape.domain == "hr"
    # the failure comment hangs after every privileged step, and is not one itself
    for step in ("disable_identity", "disable_directory_account", "revoke_tenant_keys"):
        assert shape.reach({step}, upstream=False, downstream=True) == {step, "evidence", "change_failed"}
    assert "change_failed" not in shape.kinds


@pytest.mark.parametrize(
    ("module", "name", "expected"),
    [
        pytest.param(
            "include.operators.approval", "ApprovalGateOperator", TaskKind("gate", GATE_CLASS), id="gate"
        ),
        pytest.param(
            "include.operators.iam",
            "DisableAccountOperator",
            TaskKind("privileged", DISABLE_CLASS, "identity-disable"),
            id="privileged",
        ),
        pytest.param("include.operators.iam", "InspectAccountOperator", None, id="not-privileged"),
        pytest.param("include.operators.ticketing", "CreateTicketOperator", None, id="no-capability"),
        pytest.param(
            "airflow.providers.standard.operators.bash", "BashOperator", None, id="outside-packages"
        ),
        pytest.param("os", "system", None, id="never-imported"),
        pytest.param("unusual_prefix_0123_disable_account", "Local", None, id="dag-file"),
        pytest.param(None, "ApprovalGateOperator", None, id="no-module"),
        pytest.param(
            "include.operators.gone",
            "VanishedOperator",
            TaskKind("unclassified", "include.operators.gone.VanishedOperator"),
            id="does-not-import",
        ),
        pytest.param(
            "include.operators.approval",
            "XCOM_KEY",
            TaskKind("unclassified", "include.operators.approval.XCOM_KEY"),
            id="not-a-class",
        ),
    ],
)
def test_classify_operator(module: str | None, name: str, expected: TaskKind | None) -> None:
    assert classify_operator(module, name) == expected


def test_merged_versions_keep_every_guard_and_edge() -> None:
    old = _chain_shape(DAG, ["a", "gate", "b"], {"gate": TaskKind("gate", GATE_CLASS)})
    new = _chain_shape(DAG, ["a", "b"], {"b": TaskKind("privileged", DISABLE_CLASS, "identity-disable")})
    merged = new.merged(old)
    assert set(merged.kinds) == {"gate", "b"}
    assert merged.reach({"a"}, upstream=False, downstream=True) == {"a", "gate", "b"}


def test_reach_skips_downstream_teardowns_as_airflow_does() -> None:
    shape = _chain_shape(DAG, ["a", "cleanup", "c"], {}, teardowns=frozenset({"cleanup"}))
    assert shape.reach({"a"}, upstream=False, downstream=True) == {"a", "c"}


# --- Routes -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        pytest.param(
            "PATCH", f"{BASE}/taskInstances/{GATE}", Route(RouteKind.TASK_STATE, DAG, RUN, GATE), id="ti"
        ),
        pytest.param(
            "PATCH",
            f"{BASE}/taskInstances/{GATE}/-1",
            Route(RouteKind.TASK_STATE, DAG, RUN, GATE, "-1"),
            id="ti-map-index",
        ),
        pytest.param("PATCH", f"{BASE}/taskInstances/{GATE}/dry_run", None, id="ti-dry-run"),
        pytest.param("PATCH", f"{BASE}/taskInstances/{GATE}/3/dry_run", None, id="ti-map-index-dry-run"),
        pytest.param(
            "PATCH", f"{BASE}/taskInstances", Route(RouteKind.TASK_STATE_BULK, DAG, RUN), id="ti-bulk"
        ),
        pytest.param(
            "PATCH",
            "/api/v2/dags/~/dagRuns/~/taskInstances",
            Route(RouteKind.TASK_STATE_BULK, "~", "~"),
            id="ti-bulk-wildcards",
        ),
        pytest.param("PATCH", f"{BASE}/taskInstances/{GATE}/-1/hitlDetails", None, id="hitl-answer"),
        pytest.param(
            "PATCH",
            f"{BASE}/taskInstances/{GATE}/state-store/k",
            Route(RouteKind.STATE_STORE_WRITE, DAG, RUN, GATE),
            id="state-store-patch",
        ),
        pytest.param(
            "PUT",
            f"{BASE}/taskInstances/{GATE}/state-store/a/b",
            Route(RouteKind.STATE_STORE_WRITE, DAG, RUN, GATE),
            id="state-store-put-key-with-slash",
        ),
        pytest.param(
            "DELETE",
            f"{BASE}/taskInstances/{GATE}/state-store",
            Route(RouteKind.STATE_STORE_WRITE, DAG, RUN, GATE),
            id="state-store-delete-all",
        ),
        pytest.param("PUT", f"{BASE}/taskInstances/{GATE}", None, id="put-elsewhere"),
        pytest.param("PATCH", f"{BASE}/taskInstances/{GATE}/", None, id="trailing-slash"),
        pytest.param(
            "PATCH",
            f"{BASE}/taskGroupInstances/approval",
            Route(RouteKind.GROUP_STATE, DAG, RUN, group_id="approval"),
            id="group",
        ),
        pytest.param("PATCH", f"{BASE}/taskGroupInstances/approval/dry_run", None, id="group-dry-run"),
        pytest.param("PATCH", BASE, Route(RouteKind.RUN_STATE, DAG, RUN), id="run"),
        pytest.param(
            "PATCH", f"/api/v2/dags/{DAG}/dagRuns", Route(RouteKind.RUN_STATE_BULK, DAG), id="run-bulk"
        ),
        pytest.param("PATCH", f"/api/v2/dags/{DAG}", None, id="pause"),
        pytest.param(
            "POST",
            f"{BASE}/taskInstances/{GATE}/xcomEntries",
            Route(RouteKind.XCOM_WRITE, DAG, RUN, GATE),
            id="xcom-create",
        ),
        pytest.param(
            "PATCH",
            f"{BASE}/taskInstances/{GATE}/xcomEntries/approval",
            Route(RouteKind.XCOM_WRITE, DAG, RUN, GATE),
            id="xcom-update",
        ),
        pytest.param(
            "PATCH",
            f"{BASE}/taskInstances/{GATE}/xcomEntries/dry_run",
            Route(RouteKind.XCOM_WRITE, DAG, RUN, GATE),
            id="xcom-key-dry-run",  # the XCom router is included first: an XCom update
        ),
        pytest.param(
            "DELETE",
            f"{BASE}/taskInstances/{GATE}/xcomEntries/a/b",
            Route(RouteKind.XCOM_WRITE, DAG, RUN, GATE),
            id="xcom-delete-key-with-slash",
        ),
        pytest.param(
            "DELETE",
            f"{BASE}/taskInstances/{GATE}",
            Route(RouteKind.TASK_DELETE, DAG, RUN, GATE),
            id="ti-delete",
        ),
        pytest.param(
            "DELETE",
            f"{BASE}/taskInstances/{GATE}/3",
            Route(RouteKind.TASK_DELETE, DAG, RUN, GATE, "3"),
            id="ti-delete-mapped",
        ),
        pytest.param("GET", f"{BASE}/taskInstances/{GATE}", None, id="read"),
        pytest.param(
            "POST",
            f"/api/v2/dags/{DAG}/clearTaskInstances",
            Route(RouteKind.CLEAR_TASKS, DAG),
            id="clear-tis",
        ),
        pytest.param("POST", f"{BASE}/clear", Route(RouteKind.CLEAR_RUN, DAG, RUN), id="clear-run"),
        pytest.param(
            "POST", f"/api/v2/dags/{DAG}/clearDagRuns", Route(RouteKind.CLEAR_RUNS, DAG), id="clear-runs"
        ),
        pytest.param("POST", f"/api/v2/dags/{DAG}/dagRuns", None, id="trigger"),
        pytest.param("PATCH", "/execution/task-instances/0193/state", None, id="execution-api"),
        pytest.param("PATCH", f"/ui{BASE}/taskInstances/{GATE}", None, id="not-the-public-api"),
    ],
)
def test_match_route(method: str, path: str, expected: Route | None) -> None:
    assert match_route(method, path) == expected


def test_route_path_strips_the_apps_root_path() -> None:
    scope = {"path": f"/airflow{BASE}", "root_path": "/airflow"}
    assert route_path(scope) == BASE
    assert route_path({"path": BASE, "root_path": ""}) == BASE


# --- Task state ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "rule", "message"),
    [
        pytest.param(
            f"{BASE}/taskInstances/{GATE}", {"new_state": "success"}, RULE_GATE, GATE_MESSAGE, id="gate"
        ),
        pytest.param(
            f"{BASE}/taskInstances/{GATE}/-1",
            {"new_state": "SUCCESS"},
            RULE_GATE,
            GATE_MESSAGE,
            id="gate-map-index",
        ),
        pytest.param(
            f"{BASE}/taskInstances/{GATE}", {"new_state": "failed"}, RULE_GATE, GATE_MESSAGE, id="gate-failed"
        ),
        pytest.param(
            f"{BASE}/taskInstances/{PRIVILEGED}",
            {"new_state": "skipped"},
            RULE_PRIVILEGED,
            PRIVILEGED_MESSAGE,
            id="privileged",
        ),
        pytest.param(
            f"{BASE}/taskInstances/open_ticket",
            {"new_state": "success", "include_downstream": True},
            RULE_GATE,
            f"{GATE_REASON}; setting open_ticket with include_downstream would set it too. Set open_ticket "
            "without include_downstream, or mark the run failed to stop the run. "
            "(Also guarded: disable_account.)",
            id="include-downstream",
        ),
        pytest.param(
            f"{BASE}/taskInstances/evidence",
            {"new_state": "failed", "include_upstream": "true", "include_past": True},
            RULE_GATE,
            f"{GATE_REASON}; setting evidence with include_upstream would set it too. Set evidence without "
            "include_upstream, or mark the run failed to stop the run. (Also guarded: disable_account.)",
            id="include-upstream-as-string",
        ),
    ],
)
def test_setting_a_guarded_task_is_refused(path: str, body: Any, rule: str, message: str) -> None:
    refusal = verdict("PATCH", path, body)
    assert isinstance(refusal, Refusal)
    assert (refusal.rule, refusal.message, refusal.dag_id, refusal.run_id) == (rule, message, DAG, RUN)


@pytest.mark.parametrize(
    ("path", "body", "query"),
    [
        pytest.param(f"{BASE}/taskInstances/{GATE}", {"note": "asked on chat"}, None, id="note-only"),
        pytest.param(
            f"{BASE}/taskInstances/{GATE}",
            {"note": "x", "new_state": "success"},
            {"update_mask": ["note"]},
            id="state-outside-update-mask",
        ),
        pytest.param(
            f"{BASE}/taskInstances/{GATE}", {"new_state": "bogus"}, None, id="invalid-airflow-says-422"
        ),
        pytest.param(f"{BASE}/taskInstances/{GATE}", b"{not json", None, id="not-json"),
        pytest.param(
            f"/api/v2/dags/nope/dagRuns/{RUN}/taskInstances/t", {"new_state": "success"}, None, id="no-dag"
        ),
        pytest.param(
            f"/api/v2/dags/~/dagRuns/~/taskInstances/{GATE}", {"new_state": "success"}, None, id="wildcard"
        ),
    ],
)
def test_passes_without_a_verdict(path: str, body: Any, query: dict[str, list[str]] | None) -> None:
    assert verdict("PATCH", path, body, query) is None


def test_setting_another_task_is_accepted_and_recorded() -> None:
    change = verdict(
        "PATCH", f"{BASE}/taskInstances/open_ticket/-1", {"new_state": "success", "include_future": True}
    )
    assert change == Change(
        RouteKind.TASK_STATE,
        ((DAG, RUN),),
        {"task_id": "open_ticket", "map_index": "-1", "new_state": "success", "include_future": True},
        "open_ticket",
    )


def test_a_task_group_with_a_gate_is_refused_and_one_without_is_recorded() -> None:
    refusal = verdict("PATCH", f"{BASE}/taskGroupInstances/approval", {"new_state": "success"})
    assert isinstance(refusal, Refusal)
    assert refusal.message == (
        f"{GATE_REASON}; setting task group approval would set it too. Set the other tasks of task group "
        "approval one by one, or mark the run failed to stop the run."
    )
    reached = verdict(
        "PATCH", f"{BASE}/taskGroupInstances/reporting", {"new_state": "success", "include_upstream": True}
    )
    assert isinstance(reached, Refusal)
    assert reached.task_ids == (GATE, PRIVILEGED)
    change = verdict("PATCH", f"{BASE}/taskGroupInstances/reporting", {"new_state": "success"})
    assert change == Change(
        RouteKind.GROUP_STATE, ((DAG, RUN),), {"task_group": "reporting", "new_state": "success"}
    )
    assert verdict("PATCH", f"{BASE}/taskGroupInstances/missing", {"new_state": "success"}) is None


# --- Bulk task instances ------------------------------------------------------------------------


def _bulk(*entities: Any, update_mask: list[str] | None = None, action: str = "update") -> dict[str, Any]:
    body: dict[str, Any] = {"action": action, "entities": list(entities)}
    if update_mask is not None:
        body["update_mask"] = update_mask
    return {"actions": [body]}


def test_bulk_checks_every_entity() -> None:
    body = _bulk(
        {"task_id": "open_ticket", "new_state": "success"}, {"task_id": GATE, "new_state": "success"}
    )
    refusal = verdict("PATCH", f"{BASE}/taskInstances", body)
    assert isinstance(refusal, Refusal)
    assert (refusal.rule, refusal.message, refusal.task_id) == (RULE_GATE, GATE_MESSAGE, GATE)


def test_bulk_entity_naming_another_dag_is_checked_against_that_dag() -> None:
    lookup = FakeLookup()
    body = _bulk(
        {"task_id": PRIVILEGED, "dag_id": DAG, "dag_run_id": RUN, "map_index": 0, "new_state": "success"}
    )
    refusal = verdict("PATCH", f"/api/v2/dags/{PLAIN_DAG}/dagRuns/r9/taskInstances", body, lookup=lookup)
    assert isinstance(refusal, Refusal)
    assert (refusal.rule, refusal.dag_id, refusal.run_id) == (RULE_PRIVILEGED, DAG, RUN)
    assert lookup.asked == [(DAG, RUN)]


def test_bulk_with_wildcards_uses_each_entitys_run() -> None:
    body = _bulk({"task_id": "open_ticket", "dag_id": DAG, "dag_run_id": RUN, "new_state": "success"})
    change = verdict("PATCH", "/api/v2/dags/~/dagRuns/~/taskInstances", body)
    assert change == Change(
        RouteKind.TASK_STATE_BULK,
        ((DAG, RUN),),
        {
            "entities": [
                {
                    "dag_id": DAG,
                    "run_id": RUN,
                    "task_id": "open_ticket",
                    "map_index": None,
                    "new_state": "success",
                }
            ]
        },
        "open_ticket",
    )
    unresolved = _bulk({"task_id": GATE, "new_state": "success"})  # Airflow refuses it: 400 per entity
    assert verdict("PATCH", "/api/v2/dags/~/dagRuns/~/taskInstances", unresolved) is None


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(_bulk({"task_id": GATE, "note": "hi"}), id="note-only"),
        pytest.param(
            _bulk({"task_id": GATE, "new_state": "success", "note": "x"}, update_mask=["note"]), id="masked"
        ),
        pytest.param(_bulk("open_ticket", action="delete"), id="delete-unguarded"),
        pytest.param(_bulk({"task_id": GATE, "new_state": "success"}, action="create"), id="create"),
    ],
)
def test_bulk_without_a_state_change_passes(body: Any) -> None:
    assert verdict("PATCH", f"{BASE}/taskInstances", body) is None


# --- Run state ----------------------------------------------------------------------------------


def test_run_success_while_the_gate_waits_is_refused() -> None:
    refusal = verdict("PATCH", BASE, {"state": "success"})
    assert isinstance(refusal, Refusal)
    assert (refusal.rule, refusal.task_id) == (RULE_RUN_SUCCESS, GATE)
    assert refusal.message == (
        f"{DAG} run {RUN} cannot be marked success while approve_identity_disable (an approval gate) is "
        "deferred: a run with an approval succeeds only through the approver's answer, never by hand. Ask an "
        "approver to answer the request in Required actions, or mark the run failed to stop the run."
    )


def test_run_success_while_the_privileged_step_is_pending_is_refused() -> None:
    lookup = FakeLookup({GATE: {"success"}, PRIVILEGED: {None, "success"}, "evidence": {None}})
    refusal = verdict("PATCH", BASE, {"state": "success"}, lookup=lookup)
    assert isinstance(refusal, Refusal)
    assert refusal.message.startswith(
        f"{DAG} run {RUN} cannot be marked success while disable_account (a privileged step, capability "
        "identity-disable) is None: "
    )


@pytest.mark.parametrize(
    ("body", "query", "states", "expected"),
    [
        pytest.param({"state": "failed"}, None, None, {"state": "failed"}, id="failed"),
        pytest.param({"state": "queued"}, None, None, {"state": "queued"}, id="queued"),
        pytest.param(
            {"state": "success"},
            None,
            {GATE: {"success"}, PRIVILEGED: {"skipped"}, "evidence": {None}},
            {"state": "success"},
            id="success-after-the-approval",
        ),
        pytest.param({"note": "x"}, None, None, None, id="note-only"),
        pytest.param({"state": "success", "note": "x"}, {"update_mask": ["note"]}, None, None, id="masked"),
        pytest.param({"state": "running"}, None, None, None, id="invalid-airflow-says-422"),
    ],
)
def test_run_state_changes_allowed(
    body: Any, query: dict[str, list[str]] | None, states: dict[str, set[str | None]] | None, expected: Any
) -> None:
    result = verdict("PATCH", BASE, body, query, FakeLookup(states))
    if expected is None:
        assert result is None
    else:
        assert result == Change(RouteKind.RUN_STATE, ((DAG, RUN),), expected)


def test_bulk_run_success_is_refused_and_failed_recorded() -> None:
    success = {"actions": [{"action": "update", "entities": [{"dag_run_id": RUN, "state": "success"}]}]}
    refusal = verdict("PATCH", f"/api/v2/dags/{DAG}/dagRuns", success)
    assert isinstance(refusal, Refusal)
    assert (refusal.rule, refusal.run_id) == (RULE_RUN_SUCCESS, RUN)
    failed = {
        "actions": [{"action": "update", "entities": [{"dag_id": DAG, "dag_run_id": RUN, "state": "failed"}]}]
    }
    change = verdict("PATCH", "/api/v2/dags/~/dagRuns", failed)
    assert change == Change(
        RouteKind.RUN_STATE_BULK, ((DAG, RUN),), {"runs": [{"dag_id": DAG, "run_id": RUN, "state": "failed"}]}
    )


# --- XCom ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        pytest.param(
            "POST", f"{BASE}/taskInstances/{GATE}/xcomEntries", {"key": "approval", "value": {}}, id="create"
        ),
        pytest.param(
            "PATCH", f"{BASE}/taskInstances/{GATE}/xcomEntries/approval", {"value": {}}, id="update"
        ),
        pytest.param("DELETE", f"{BASE}/taskInstances/{GATE}/xcomEntries/approval", b"", id="delete"),
    ],
)
def test_xcom_writes_in_a_dag_with_a_gate_are_refused(method: str, path: str, body: Any) -> None:
    refusal = verdict(method, path, body)
    assert isinstance(refusal, Refusal)
    assert (refusal.rule, refusal.message) == (RULE_XCOM, XCOM_MESSAGE.format(task=GATE))


def test_xcom_of_any_task_of_a_gated_dag_is_refused_and_other_dags_pass() -> None:
    refusal = verdict("PATCH", f"{BASE}/taskInstances/inspect_account/xcomEntries/return_value", {"value": 1})
    assert isinstance(refusal, Refusal)
    assert refusal.message == XCOM_MESSAGE.format(task="inspect_account")
    path = f"/api/v2/dags/{PLAIN_DAG}/dagRuns/r9/taskInstances/classify/xcomEntries"
    assert verdict("POST", path, {"key": "k", "value": 1}) is None


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        pytest.param(
            "PUT", f"{BASE}/taskInstances/inspect_account/state-store/cursor", {"value": 1}, id="put"
        ),
        pytest.param(
            "PATCH", f"{BASE}/taskInstances/inspect_account/state-store/cursor", {"value": 1}, id="patch"
        ),
        pytest.param("DELETE", f"{BASE}/taskInstances/inspect_account/state-store/cursor", b"", id="delete"),
        pytest.param("DELETE", f"{BASE}/taskInstances/inspect_account/state-store", b"", id="delete-all"),
    ],
)
def test_state_store_writes_in_a_dag_with_a_gate_are_refused(method: str, path: str, body: Any) -> None:
    refusal = verdict(method, path, body)
    assert isinstance(refusal, Refusal)
    assert refusal.rule == RULE_STATE_STORE
    assert refusal.task_id == "inspect_account"
    assert "inspect_account" in refusal.message
    assert DAG in refusal.message
    plain = f"/api/v2/dags/{PLAIN_DAG}/dagRuns/r9/taskInstances/classify/state-store/cursor"
    assert verdict(method, plain, body) is None


# --- Clears -------------------------------------------------------------------------------------


def test_clears_are_allowed_and_recorded_unless_dry_run() -> None:
    clear = f"/api/v2/dags/{DAG}/clearTaskInstances"
    assert verdict("POST", clear, {"dag_run_id": RUN, "task_ids": [GATE]}) is None  # dry run by default
    change = verdict(
        "POST",
        clear,
        {"dry_run": False, "dag_run_id": RUN, "task_ids": [GATE, [PRIVILEGED, 0]], "only_failed": False},
    )
    assert change == Change(
        RouteKind.CLEAR_TASKS,
        ((DAG, RUN),),
        {"task_ids": [GATE, [PRIVILEGED, 0]], "start_date": None, "end_date": None},
    )
    assert verdict("POST", f"{BASE}/clear", {"dry_run": False}) == Change(
        RouteKind.CLEAR_RUN, ((DAG, RUN),), {}
    )
    runs = verdict(
        "POST", f"/api/v2/dags/{DAG}/clearDagRuns", {"dry_run": False, "dag_runs": [{"dag_run_id": RUN}]}
    )
    assert runs == Change(RouteKind.CLEAR_RUNS, ((DAG, RUN),), {"runs": [{"dag_id": DAG, "run_id": RUN}]})


def test_unclassified_rule_names_the_operator() -> None:
    kind = TaskKind("unclassified", "include.operators.gone.VanishedOperator")
    assert kind.rule == RULE_UNCLASSIFIED
    assert kind.reason("t") == (
        "t runs include.operators.gone.VanishedOperator, which the API server could not import to check "
        "whether it needs an approval, so its state is not set by hand"
    )


# --- The middleware -----------------------------------------------------------------------------


class Airflow:
    """Stands in for Airflow's app: records what reached it and the manual change it ran under."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.seen: list[dict[str, Any]] = []

    def app(self) -> Starlette:
        async def endpoint(request: Request) -> JSONResponse:
            change = current_manual_change()
            self.seen.append({"path": request.url.path, "body": await request.body(), "change": change})
            return JSONResponse({"ok": True}, status_code=self.status)

        methods = ["GET", "POST", "PATCH", "DELETE"]
        return Starlette(routes=[StarletteRoute("/{path:path}", endpoint, methods=methods)])


@pytest.fixture
def door() -> dict[str, Any]:
    airflow = Airflow()
    records: list[dict[str, Any]] = []
    asked: list[str] = []

    async def resolve_user(scope: Any) -> str | None:
        asked.append(scope["path"])
        token = request_token(scope)
        return {"dora-token": "dora_soc_op", "admin-token": "admin"}.get(token or "")

    app = ApprovalDoorMiddleware(
        airflow.app(), lookup=FakeLookup(), resolve_user=resolve_user, audit=records.append
    )
    return {"client": TestClient(app), "airflow": airflow, "records": records, "asked": asked}


def _as(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_refusal_is_403_reaches_nothing_and_is_one_policy_violation(door: dict[str, Any]) -> None:
    response = door["client"].patch(
        f"{BASE}/taskInstances/{GATE}", json={"new_state": "success"}, headers=_as("admin-token")
    )
    assert response.status_code == 403
    assert response.json() == {"detail": GATE_MESSAGE, "rule": RULE_GATE, "task_id": GATE}
    assert door["airflow"].seen == []
    assert door["records"] == [
        {
            "kind": "policy.violation",
            "actor": "admin",
            "domain": "soc",
            "tenant": "globex",
            "correlation_id": "corr-0123456789abcdef",
            "dag_id": DAG,
            "run_id": RUN,
            "task_id": GATE,
            "subject": f"{DAG}.{GATE}",
            "details": {
                "rule": RULE_GATE,
                "dag_id": DAG,
                "run_id": RUN,
                "task_id": GATE,
                "task_ids": [GATE],
                "method": "PATCH",
                "path": f"{BASE}/taskInstances/{GATE}",
                "message": GATE_MESSAGE,
            },
        }
    ]


def test_the_ui_cookie_identifies_the_user_too(door: dict[str, Any]) -> None:
    door["client"].cookies.set("_token", "dora-token")
    response = door["client"].patch(BASE, json={"state": "success"})
    assert response.status_code == 403
    assert [r["actor"] for r in door["records"]] == ["dora_soc_op"]


def test_accepted_change_reaches_airflow_unchanged_and_is_recorded(door: dict[str, Any]) -> None:
    body = json.dumps({"new_state": "success"}).encode()
    response = door["client"].patch(
        f"{BASE}/taskInstances/open_ticket",
        content=body,
        headers={**_as("dora-token"), "Content-Type": "application/json"},
    )
    assert response.status_code == 200
    (seen,) = door["airflow"].seen
    assert seen["body"] == body
    assert seen["change"].actor == "dora_soc_op"
    (record,) = door["records"]
    assert record["kind"] == "manual.change"
    assert (record["actor"], record["dag_id"], record["run_id"], record["task_id"]) == (
        "dora_soc_op",
        DAG,
        RUN,
        "open_ticket",
    )
    assert record["details"] == {
        "change": "task_state",
        "change_id": seen["change"].change_id,
        "method": "PATCH",
        "path": f"{BASE}/taskInstances/open_ticket",
        "status_code": 200,
        "task_id": "open_ticket",
        "map_index": None,
        "new_state": "success",
    }
    assert current_manual_change() is None


def test_a_change_airflow_refuses_is_recorded_as_refused_not_as_a_change(door: dict[str, Any]) -> None:
    door["airflow"].status = 409
    response = door["client"].patch(BASE, json={"state": "failed"}, headers=_as("dora-token"))
    assert response.status_code == 409
    (record,) = door["records"]
    assert (record["kind"], record["actor"], record["dag_id"], record["run_id"]) == (
        "api.refused",
        "dora_soc_op",
        DAG,
        RUN,
    )
    assert record["details"] == {"method": "PATCH", "path": BASE, "status_code": 409}


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        pytest.param("DELETE", f"{BASE}/taskInstances/{GATE}", None, id="delete-gate"),
        pytest.param("PATCH", f"{BASE}/taskInstances", _bulk(GATE, action="delete"), id="bulk-delete-gate"),
    ],
)
def test_deleting_a_gate_is_refused(method: str, path: str, body: Any) -> None:
    refused = verdict(method, path, body)
    assert isinstance(refused, Refusal)
    assert (refused.rule, refused.task_id) == ("approval-gate", GATE)
    assert refused.message.startswith(f"{GATE_REASON}; deleting its task instance would drop it")


def test_unauthenticated_requests_are_left_to_airflow(door: dict[str, Any]) -> None:
    response = door["client"].patch(f"{BASE}/taskInstances/{GATE}", json={"new_state": "success"})
    assert response.status_code == 200  # the stand-in has no auth; Airflow answers 401
    assert door["records"] == []


def test_requests_it_does_not_inspect_are_not_read(door: dict[str, Any]) -> None:
    client = door["client"]
    client.patch(
        "/execution/task-instances/0193/state", json={"state": "success"}, headers=_as("admin-token")
    )
    client.get(f"{BASE}/taskInstances/{GATE}", headers=_as("admin-token"))
    client.patch(
        f"{BASE}/taskInstances/{GATE}/dry_run", json={"new_state": "success"}, headers=_as("admin-token")
    )
    assert door["asked"] == []  # not even the token was looked at
    assert len(door["airflow"].seen) == 3
    assert door["records"] == []


def test_anonymous_requests_are_checked_when_public_access_is_on(door: dict[str, Any]) -> None:
    records: list[dict[str, Any]] = []

    async def nobody(scope: Any) -> None:
        return None

    app = ApprovalDoorMiddleware(
        Airflow().app(),
        lookup=FakeLookup(),
        resolve_user=nobody,
        audit=records.append,
        anonymous_actor="anonymous (Viewer)",
    )
    response = TestClient(app).patch(f"{BASE}/taskInstances/{GATE}", json={"new_state": "success"})
    assert response.status_code == 403
    assert [r["actor"] for r in records] == ["anonymous (Viewer)"]


def test_a_lookup_failure_refuses_with_503(door: dict[str, Any]) -> None:
    class Broken(FakeLookup):
        def shape(self, dag_id: str, run_id: str | None) -> DagShape | None:
            raise ConnectionError("metadata DB down")

    async def admin(scope: Any) -> str:
        return "admin"

    airflow = Airflow()
    app = ApprovalDoorMiddleware(airflow.app(), lookup=Broken(), resolve_user=admin, audit=lambda e: None)
    response = TestClient(app).patch(f"{BASE}/taskInstances/{GATE}", json={"new_state": "success"})
    assert response.status_code == 503
    assert airflow.seen == []


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param([(b"authorization", b"Bearer abc")], "abc", id="bearer"),
        pytest.param(
            [(b"authorization", b"bearer abc"), (b"cookie", b"_token=xyz")], "abc", id="bearer-wins"
        ),
        pytest.param(
            [(b"authorization", b"Basic Zm9v"), (b"cookie", b"a=1; _token=xyz")], "xyz", id="cookie"
        ),
        pytest.param([(b"authorization", b"Bearer ")], None, id="empty-bearer"),
        pytest.param([], None, id="none"),
    ],
)
def test_request_token(headers: list[tuple[bytes, bytes]], expected: str | None) -> None:
    assert request_token({"headers": headers}) == expected


def test_the_auth_manager_keeps_fabs_middlewares_and_adds_the_door(monkeypatch: pytest.MonkeyPatch) -> None:
    from include.auth.fab import ApprovalAwareFabAuthManager
    from include.auth.login_limit import LoginLimitMiddleware

    manager = ApprovalAwareFabAuthManager()
    assert manager.get_fastapi_middlewares() == [(ApprovalDoorMiddleware, {}), (LoginLimitMiddleware, {})]
    monkeypatch.setenv("AIRFLOW__FAB__AUTH_ROLE_PUBLIC", "Viewer")
    (fab, door, limit) = manager.get_fastapi_middlewares()
    assert fab[0].__name__ == "FabAuthRolePublicMiddleware"
    assert door == (ApprovalDoorMiddleware, {"anonymous_actor": "anonymous (Viewer)"})
    assert limit == (LoginLimitMiddleware, {})


# --- The audit listener's record of a state set by hand -----------------------------------------


def test_listener_names_the_manual_change_not_a_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from include.approvals.door import ManualChange, manual_change_context
    from include.audit import listener as audit_listener

    written: list[dict[str, Any]] = []
    monkeypatch.setattr(audit_listener, "emit", written.append)
    fields = {"dag_id": DAG, "run_id": RUN, "task_id": "evidence", "map_index": -1, "try_number": 1}
    server_ti = type("TaskInstance", (SimpleNamespace,), {"__module__": "airflow.models.taskinstance"})(
        **fields
    )
    token = manual_change_context().set(ManualChange("c0ffee", "admin"))
    try:
        audit_listener.on_task_instance_failed(
            None, server_ti, "TaskInstance's state was manually set to `failed`."
        )
    finally:
        manual_change_context().reset(token)
    audit_listener.on_task_instance_failed(None, server_ti, "heartbeat timeout")  # the scheduler's own
    audit_listener.on_task_instance_success(None, SimpleNamespace(**fields))  # the Task SDK's, on a worker
    assert [
        (r["actor"], r["details"].get("manual_change"), r["details"].get("changed_by")) for r in written
    ] == [
        ("api", "c0ffee", "admin"),
        ("scheduler", None, None),
        ("worker", None, None),
    ]
