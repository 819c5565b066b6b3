"""The approval door: which hand-made changes through the REST API would bypass an approval.

An approval gate's state is set by an approver's answer, and a privileged step runs only after
it. Airflow lets anyone with "Task Instances: edit" on a DAG (and every Admin) set any task's
state by hand, so marking a waiting gate "success" would run the privileged step with nobody's
approval. The API server refuses these requests, for every role
(:class:`include.auth.middleware.ApprovalDoorMiddleware`); this module decides which ones:

- ``approval-gate`` / ``privileged-step``: setting the state of a gate or of a privileged step by
  hand (one task, a mapped index, a task group, a bulk update, or another task whose
  ``include_upstream`` / ``include_downstream`` reaches one);
- ``run-success-before-approval``: marking a run "success" while one of its gates or privileged
  steps has not finished (marking it failed or queued stays allowed);
- ``approval-xcom``: writing XCom by hand in a DAG that has a gate (its XComs hold the approval
  record and the values the approval question is built from);
- ``approval-state-store``: writing or deleting a task's state-store keys by hand in a DAG that
  has a gate (a resumable task reads its own state from there when it runs again);
- ``unclassified-step``: setting the state of a task whose operator class (in the platform's own
  packages) the API server cannot import, so cannot tell whether it needs an approval.

Everything else passes; clearing stays allowed (a cleared gate asks again). Accepted state changes
and clears are returned as a :class:`Change` so the middleware can put them on the audit trail.

Which tasks are guarded (gates, privileged steps) is :mod:`include.approvals.guarded`'s answer.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from typing import Any, Final, NamedTuple, Protocol

from include.approvals.guarded import DagShape, TaskKind

API_PREFIX: Final = "/api/v2/dags/"
WRITE_METHODS: Final = frozenset({"PATCH", "POST", "PUT", "DELETE"})
FINISHED_STATES: Final = frozenset({"success", "failed", "skipped", "upstream_failed", "removed"})

RULE_RUN_SUCCESS: Final = "run-success-before-approval"
RULE_XCOM: Final = "approval-xcom"
RULE_STATE_STORE: Final = "approval-state-store"

_RELATIVES_FLAGS: Final = ("include_upstream", "include_downstream")


# --- The manual change a request is making (read by the audit listener in the API server) ----


@dataclass(frozen=True)
class ManualChange:
    """A state change by hand being applied: the id its ``manual.change`` record carries, and who."""

    change_id: str
    actor: str


_MANUAL_CHANGE: ContextVar[ManualChange | None] = ContextVar("orchestrator_manual_change", default=None)


# Set by the middleware around every write it watches: whoever records a refusal of the request
# (the door itself, the auth manager refusing an answer) marks it, so it is recorded once.
_REFUSAL_RECORDED: ContextVar[dict[str, Any] | None] = ContextVar("approval_door_refusal", default=None)


def refusal_recording() -> ContextVar[dict[str, Any] | None]:
    """The context variable the middleware sets around a watched write (a mutable flag)."""
    return _REFUSAL_RECORDED


def mark_refusal_recorded() -> dict[str, Any]:
    """This request's refusal is on the audit trail already (no generic ``api.refused`` record).

    :returns: the request's target as the middleware read it from the path (``dag_id``,
        ``run_id``, ``task_id``; empty outside a watched request), for the record.
    """
    state = _REFUSAL_RECORDED.get()
    if state is None:
        return {}
    state["recorded"] = True
    return {key: state.get(key) for key in ("dag_id", "run_id", "task_id")}


def current_write() -> tuple[str, str] | None:
    """``(method, path)`` of the watched public-API write this code runs for (the path without the
    app's root path), or ``None`` outside one: the auth manager tells a run started by hand from
    the other writes the same FAB permission allows (:mod:`include.auth.fab`)."""
    state = _REFUSAL_RECORDED.get()
    if state is None or not state.get("method") or not state.get("path"):
        return None
    return str(state["method"]), str(state["path"])


def path_target(path: str) -> dict[str, str | None]:
    """``dag_id``, ``run_id``, ``task_id`` named by a public API path (``None`` where absent or ``~``)."""
    parts = path[len(API_PREFIX) :].split("/") if path.startswith(API_PREFIX) else []

    def part(index: int, after: str | None = None) -> str | None:
        if len(parts) <= index or not parts[index] or parts[index] == "~":
            return None
        return parts[index] if after is None or parts[index - 1] == after else None

    return {"dag_id": part(0), "run_id": part(2, "dagRuns"), "task_id": part(4, "taskInstances")}


def current_manual_change() -> ManualChange | None:
    """The manual change of the request this code runs for, or ``None`` (not in such a request)."""
    return _MANUAL_CHANGE.get()


def manual_change_context() -> ContextVar[ManualChange | None]:
    """The context variable itself, for the middleware that sets it around a request."""
    return _MANUAL_CHANGE


class DagLookup(Protocol):
    """Where the door reads DAGs and runs (the metadata DB in the API server; a fake in tests)."""

    def shape(self, dag_id: str, run_id: str | None) -> DagShape | None:
        """The DAG's latest version merged with the run's own version (``None``: no such DAG)."""

    def task_states(self, dag_id: str, run_id: str) -> Mapping[str, Collection[str | None]]:
        """Task id -> the states of its task instances in the run (several when mapped)."""


# --- Routes ---------------------------------------------------------------------------------


class RouteKind(StrEnum):
    TASK_STATE = "task_state"
    TASK_STATE_BULK = "task_state_bulk"
    GROUP_STATE = "task_group_state"
    RUN_STATE = "run_state"
    RUN_STATE_BULK = "run_state_bulk"
    XCOM_WRITE = "xcom_write"
    STATE_STORE_WRITE = "state_store_write"
    CLEAR_TASKS = "clear_task_instances"
    CLEAR_RUN = "clear_run"
    CLEAR_RUNS = "clear_runs"
    TASK_DELETE = "task_delete"


class Route(NamedTuple):
    """A public API route the door inspects, with its path parameters."""

    kind: RouteKind
    dag_id: str
    run_id: str = ""
    task_id: str = ""
    map_index: str | None = None
    group_id: str = ""


def route_path(scope: Mapping[str, Any]) -> str:
    """The path the app routes on (the request path without the app's ``root_path``)."""
    path: str = scope.get("path", "")
    root = scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] == "/":
        return path[len(root) :]
    return path


def match_route(method: str, path: str) -> Route | None:
    """The inspected route ``method path`` goes to in Airflow 3.3's public API, else ``None``.

    Cheap for everything else (a method and prefix check); mirrors Starlette's matching, in the
    order the routers are included (XCom and task state store before task instances)."""
    if method not in WRITE_METHODS or not path.startswith(API_PREFIX):
        return None
    parts = path[len(API_PREFIX) :].split("/")
    if not parts[0]:
        return None
    if method == "PUT":
        return _match_state_store(parts)
    if method == "PATCH":
        return _match_patch(parts)
    if method == "POST":
        return _match_post(parts)
    if len(parts) >= 6 and parts[5] == "state-store":
        return _match_state_store(parts)
    if len(parts) >= 7:
        return _match_xcom(parts)
    return _match_task_delete(parts)


def _match_task_delete(parts: list[str]) -> Route | None:
    # DELETE .../taskInstances/{task_id} and .../taskInstances/{task_id}/{map_index}
    if _task_parts(parts) and len(parts) in (5, 6) and all(parts[4:]):
        return Route(
            RouteKind.TASK_DELETE, parts[0], parts[2], parts[4], parts[5] if len(parts) == 6 else None
        )
    return None


def _task_parts(parts: list[str]) -> bool:
    """``{dag}/dagRuns/{run}/taskInstances/...`` with non-empty dag and run ids."""
    return len(parts) >= 4 and parts[1] == "dagRuns" and bool(parts[2]) and parts[3] == "taskInstances"


def _match_xcom(parts: list[str]) -> Route | None:
    # .../taskInstances/{task_id}/xcomEntries/{xcom_key:path}: the key may hold slashes
    if _task_parts(parts) and len(parts) >= 7 and parts[4] and parts[5] == "xcomEntries":
        return Route(RouteKind.XCOM_WRITE, parts[0], parts[2], parts[4])
    return None


def _match_state_store(parts: list[str]) -> Route | None:
    # PUT/PATCH/DELETE .../taskInstances/{task_id}/state-store/{key:path}, DELETE .../state-store
    if _task_parts(parts) and len(parts) >= 6 and parts[4] and parts[5] == "state-store":
        return Route(RouteKind.STATE_STORE_WRITE, parts[0], parts[2], parts[4])
    return None


def _match_patch(parts: list[str]) -> Route | None:
    dag_id, count = parts[0], len(parts)
    if count == 2 and parts[1] == "dagRuns":
        return Route(RouteKind.RUN_STATE_BULK, dag_id)
    if count == 3 and parts[1] == "dagRuns" and parts[2]:
        return Route(RouteKind.RUN_STATE, dag_id, parts[2])
    if count == 5 and parts[1] == "dagRuns" and parts[2] and parts[3] == "taskGroupInstances" and parts[4]:
        return Route(RouteKind.GROUP_STATE, dag_id, parts[2], group_id=parts[4])
    if not _task_parts(parts):
        return None
    if count >= 7 and parts[5] == "xcomEntries":
        return _match_xcom(parts)
    if count >= 6 and parts[5] == "state-store":
        return _match_state_store(parts)
    return _match_task_patch(parts)


def _match_task_patch(parts: list[str]) -> Route | None:
    dag_id, run_id, rest = parts[0], parts[2], parts[4:]
    if not rest:
        return Route(RouteKind.TASK_STATE_BULK, dag_id, run_id)
    if not all(rest) or rest[-1] == "dry_run" or len(rest) > 2:
        return None  # dry runs change nothing; hitlDetails and the like are not state updates
    return Route(RouteKind.TASK_STATE, dag_id, run_id, rest[0], rest[1] if len(rest) == 2 else None)


def _match_post(parts: list[str]) -> Route | None:
    if parts[1:] == ["clearTaskInstances"]:
        return Route(RouteKind.CLEAR_TASKS, parts[0])
    if parts[1:] == ["clearDagRuns"]:
        return Route(RouteKind.CLEAR_RUNS, parts[0])
    if len(parts) == 4 and parts[1] == "dagRuns" and parts[2] and parts[3] == "clear":
        return Route(RouteKind.CLEAR_RUN, parts[0], parts[2])
    if _task_parts(parts) and len(parts) == 6 and parts[4] and parts[5] == "xcomEntries":
        return Route(RouteKind.XCOM_WRITE, parts[0], parts[2], parts[4])
    return None


# --- Verdicts -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Refusal:
    """The request would bypass an approval: refuse it (403) with ``message``."""

    rule: str
    message: str
    dag_id: str
    run_id: str | None
    task_id: str | None
    task_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class Change:
    """An accepted state change or clear by hand, for the audit trail (``targets``: (dag, run))."""

    change: str
    targets: tuple[tuple[str, str | None], ...]
    details: Mapping[str, Any]
    task_id: str | None = None


Verdict = Refusal | Change | None

STOP_ADVICE: Final = "or mark the run failed to stop the run"


def inspect_request(
    route: Route, body: bytes, query: Mapping[str, Sequence[str]], lookup: DagLookup
) -> Verdict:
    """What to do with a request to ``route``: refuse it, record it, or let it through (``None``).

    A body Airflow itself would refuse (not JSON, not its model) passes: Airflow answers 422.
    """
    try:
        payload = json.loads(body) if body else {}
    except ValueError:
        return None
    inspector = _INSPECTORS[route.kind]
    try:
        return inspector(route, payload, query, lookup)
    except _NotValid:
        return None


class _NotValid(Exception):
    """The body is not what the route accepts (Airflow answers 422)."""


@cache
def _models() -> dict[str, Any]:
    from airflow.api_fastapi.core_api.datamodels import common, dag_run, task_instances

    return {
        "task": task_instances.PatchTaskInstanceBody,
        "task_bulk": common.BulkBody[task_instances.BulkTaskInstanceBody],
        "run": dag_run.DAGRunPatchBody,
        "run_bulk": common.BulkBody[dag_run.BulkDAGRunBody],
        "clear_tasks": task_instances.ClearTaskInstancesBody,
        "clear_run": dag_run.DAGRunClearBody,
        "clear_runs": dag_run.BulkDAGRunClearBody,
    }


def _model(name: str, payload: Any) -> Any:
    """``payload`` validated by the model Airflow's route reads it with (the same fields set)."""
    from pydantic import ValidationError

    try:
        return _models()[name].model_validate(payload)
    except (ValidationError, ValueError, TypeError) as error:
        raise _NotValid(name) from error


def _fields_set(body: Any, update_mask: Sequence[str] | None) -> set[str]:
    """The fields Airflow applies: those sent, narrowed to ``update_mask`` when one is given."""
    fields = set(body.model_fields_set)
    return fields & set(update_mask) if update_mask else fields


def _flags(body: Any) -> list[str]:
    return [flag for flag in _RELATIVES_FLAGS if getattr(body, flag)]


def _advice(kind: TaskKind, task_id: str, requested: str, flags: list[str], targeted: bool) -> str:
    if requested == task_id:
        if kind.kind == "gate":
            return f"Ask an approver to answer it, {STOP_ADVICE}."
        return f"Ask an approver to answer its approval request (Required actions), {STOP_ADVICE}."
    if targeted:
        return f"Set the other tasks of {requested} one by one, {STOP_ADVICE}."
    return f"Set {requested} without {' and '.join(flags)}, {STOP_ADVICE}."


def _state_refusal(
    shape: DagShape, run_id: str, targets: Collection[str], body: Any, requested: str
) -> Refusal | None:
    """Refuse a state change of ``targets`` (and the relatives ``body`` includes) touching a guarded task."""
    flags = _flags(body)
    reached = shape.reach(
        targets, upstream="include_upstream" in flags, downstream="include_downstream" in flags
    )
    guarded = sorted(
        reached & set(shape.kinds), key=lambda t: (t not in targets, shape.kinds[t].kind != "gate", t)
    )
    if not guarded:
        return None
    task_id, kind = guarded[0], shape.kinds[guarded[0]]
    targeted = task_id in targets
    message = kind.reason(task_id)
    if requested != task_id:
        how = requested if targeted else f"{requested} with {' and '.join(flags)}"
        message += f"; setting {how} would set it too"
    message += f". {_advice(kind, task_id, requested, flags, targeted)}"
    if len(guarded) > 1:
        message += f" (Also guarded: {', '.join(guarded[1:])}.)"
    return Refusal(kind.rule, message, shape.dag_id, run_id, task_id, tuple(guarded))


def _state_details(body: Any) -> dict[str, Any]:
    state = getattr(body, "new_state", None)
    flags = ("include_upstream", "include_downstream", "include_past", "include_future")
    return {"new_state": str(getattr(state, "value", state)), **{f: True for f in flags if getattr(body, f)}}


def _inspect_task_state(
    route: Route, payload: Any, query: Mapping[str, Sequence[str]], lookup: DagLookup
) -> Verdict:
    body = _model("task", payload)
    if "new_state" not in _fields_set(body, query.get("update_mask")):
        return None  # a note: allowed, not a state change
    shape = lookup.shape(route.dag_id, route.run_id)
    if shape is None:
        return None  # Airflow answers 404
    refusal = _state_refusal(shape, route.run_id, {route.task_id}, body, route.task_id)
    if refusal:
        return refusal
    details = {"task_id": route.task_id, "map_index": route.map_index, **_state_details(body)}
    return Change(RouteKind.TASK_STATE, ((route.dag_id, route.run_id),), details, route.task_id)


def _inspect_group_state(
    route: Route, payload: Any, query: Mapping[str, Sequence[str]], lookup: DagLookup
) -> Verdict:
    body = _model("task", payload)
    if "new_state" not in _fields_set(body, query.get("update_mask")):
        return None
    shape = lookup.shape(route.dag_id, route.run_id)
    if shape is None or route.group_id not in shape.groups:
        return None  # Airflow answers 404
    requested = f"task group {route.group_id}"
    refusal = _state_refusal(shape, route.run_id, shape.groups[route.group_id], body, requested)
    if refusal:
        return refusal
    details = {"task_group": route.group_id, **_state_details(body)}
    return Change(RouteKind.GROUP_STATE, ((route.dag_id, route.run_id),), details)


def _delete_refusal(shape: DagShape, run_id: str, task_id: str) -> Refusal | None:
    kind = shape.kinds.get(task_id)
    if kind is None:
        return None
    message = (
        f"{kind.reason(task_id)}; deleting its task instance would drop it (and an approval request) "
        f"without a trace. Ask an approver to answer it, {STOP_ADVICE}."
    )
    return Refusal(kind.rule, message, shape.dag_id, run_id, task_id, (task_id,))


def _inspect_task_delete(
    route: Route, payload: Any, query: Mapping[str, Sequence[str]], lookup: DagLookup
) -> Verdict:
    shape = lookup.shape(route.dag_id, route.run_id)
    if shape is None:
        return None  # Airflow answers 404
    refusal = _delete_refusal(shape, route.run_id, route.task_id)
    if refusal:
        return refusal
    details = {"task_id": route.task_id, "map_index": route.map_index}
    return Change(RouteKind.TASK_DELETE, ((route.dag_id, route.run_id),), details, route.task_id)


def _bulk_delete_refusal(route: Route, action: Any, lookup: DagLookup) -> Refusal | None:
    for entity in action.entities:
        task_id = entity if isinstance(entity, str) else getattr(entity, "task_id", None)
        dag_id = (
            route.dag_id if isinstance(entity, str) else (getattr(entity, "dag_id", None) or route.dag_id)
        )
        run_id = (
            route.run_id if isinstance(entity, str) else (getattr(entity, "dag_run_id", None) or route.run_id)
        )
        shape = lookup.shape(dag_id, run_id) if task_id and "~" not in (dag_id, run_id) else None
        refusal = _delete_refusal(shape, run_id, str(task_id)) if shape else None
        if refusal:
            return refusal
    return None


def _inspect_task_bulk(
    route: Route, payload: Any, query: Mapping[str, Sequence[str]], lookup: DagLookup
) -> Verdict:
    body = _model("task_bulk", payload)
    entities: list[dict[str, Any]] = []
    for action in body.actions:
        if getattr(action, "action", None) == "delete":
            refusal = _bulk_delete_refusal(route, action, lookup)
            if refusal:
                return refusal
            continue
        if getattr(action, "action", None) != "update":
            continue  # create is refused by Airflow
        for entity in action.entities:
            if isinstance(entity, str) or "new_state" not in _fields_set(entity, action.update_mask):
                continue
            dag_id, run_id = entity.dag_id or route.dag_id, entity.dag_run_id or route.run_id
            if "~" in (dag_id, run_id):
                continue  # Airflow refuses a wildcard left unresolved
            shape = lookup.shape(dag_id, run_id)
            refusal = (
                _state_refusal(shape, run_id, {entity.task_id}, entity, entity.task_id) if shape else None
            )
            if refusal:
                return refusal
            entities.append(
                {"dag_id": dag_id, "run_id": run_id, "task_id": entity.task_id, "map_index": entity.map_index}
                | _state_details(entity)
            )
    if not entities:
        return None
    targets = tuple(dict.fromkeys((e["dag_id"], e["run_id"]) for e in entities))
    task_id = entities[0]["task_id"] if len(entities) == 1 else None
    return Change(RouteKind.TASK_STATE_BULK, targets, {"entities": entities}, task_id)


def _run_success_refusal(lookup: DagLookup, dag_id: str, run_id: str) -> Refusal | None:
    shape = lookup.shape(dag_id, run_id)
    if shape is None or not shape.kinds:
        return None
    states = lookup.task_states(dag_id, run_id)
    for task_id in sorted(shape.kinds, key=lambda t: (shape.kinds[t].kind != "gate", t)):
        waiting = sorted({str(state) for state in states.get(task_id, ()) if state not in FINISHED_STATES})
        if waiting:
            kind = shape.kinds[task_id]
            message = (
                f"{dag_id} run {run_id} cannot be marked success while {task_id} ({kind.label}) is "
                f"{'/'.join(waiting)}: a run with an approval succeeds only through the approver's answer, "
                f"never by hand. Ask an approver to answer the request in Required actions, {STOP_ADVICE}."
            )
            return Refusal(RULE_RUN_SUCCESS, message, dag_id, run_id, task_id, (task_id,))
    return None


def _run_state(body: Any) -> str:
    return str(getattr(body.state, "value", body.state))


def _inspect_run_state(
    route: Route, payload: Any, query: Mapping[str, Sequence[str]], lookup: DagLookup
) -> Verdict:
    body = _model("run", payload)
    if "state" not in _fields_set(body, query.get("update_mask")) or body.state is None:
        return None
    state = _run_state(body)
    if state == "success":
        refusal = _run_success_refusal(lookup, route.dag_id, route.run_id)
        if refusal:
            return refusal
    return Change(RouteKind.RUN_STATE, ((route.dag_id, route.run_id),), {"state": state})


def _inspect_run_bulk(
    route: Route, payload: Any, query: Mapping[str, Sequence[str]], lookup: DagLookup
) -> Verdict:
    body = _model("run_bulk", payload)
    runs: list[dict[str, Any]] = []
    for action in body.actions:
        if getattr(action, "action", None) != "update":
            continue
        for entity in action.entities:
            if isinstance(entity, str) or entity.state is None:
                continue  # Airflow applies a run's state whatever the update_mask says
            dag_id, run_id = entity.dag_id or route.dag_id, entity.dag_run_id
            if "~" in (dag_id, run_id):
                continue
            state = _run_state(entity)
            refusal = _run_success_refusal(lookup, dag_id, run_id) if state == "success" else None
            if refusal:
                return refusal
            runs.append({"dag_id": dag_id, "run_id": run_id, "state": state})
    if not runs:
        return None
    targets = tuple(dict.fromkeys((r["dag_id"], r["run_id"]) for r in runs))
    return Change(RouteKind.RUN_STATE_BULK, targets, {"runs": runs})


def _refuse_in_gated_dag(route: Route, lookup: DagLookup, rule: str, what: str, why: str) -> Verdict:
    """Refuse a hand-made write of ``what`` in a DAG with an approval gate (``why`` says what it holds)."""
    shape = lookup.shape(route.dag_id, route.run_id)
    if shape is None or not shape.gates:
        return None
    message = (
        f"{what} of {route.task_id} is not written by hand: {route.dag_id} has an approval gate "
        f"({', '.join(shape.gates)}), and {why}. To change a value, clear the task that writes it (it "
        "runs again and the gate asks again)."
    )
    return Refusal(rule, message, route.dag_id, route.run_id, route.task_id, (route.task_id,))


def _inspect_xcom(
    route: Route, payload: Any, query: Mapping[str, Sequence[str]], lookup: DagLookup
) -> Verdict:
    why = "its XComs hold the approval record and the values the approval question is built from"
    return _refuse_in_gated_dag(route, lookup, RULE_XCOM, "XCom", why)


def _inspect_state_store(
    route: Route, payload: Any, query: Mapping[str, Sequence[str]], lookup: DagLookup
) -> Verdict:
    why = "a task that runs again resumes from what it kept there"
    return _refuse_in_gated_dag(route, lookup, RULE_STATE_STORE, "The state store", why)


def _clear_options(body: Any, names: Iterable[str]) -> dict[str, Any]:
    return {name: value for name in names if (value := getattr(body, name, None))}


def _inspect_clear_tasks(
    route: Route, payload: Any, query: Mapping[str, Sequence[str]], lookup: DagLookup
) -> Verdict:
    body = _model("clear_tasks", payload)
    if body.dry_run:
        return None
    details = {
        "task_ids": [list(t) if isinstance(t, tuple) else t for t in body.task_ids or ()] or None,
        "start_date": body.start_date.isoformat() if body.start_date else None,
        "end_date": body.end_date.isoformat() if body.end_date else None,
        **_clear_options(
            body,
            (
                "only_failed",
                "only_running",
                "include_upstream",
                "include_downstream",
                "include_past",
                "include_future",
            ),
        ),
    }
    return Change(RouteKind.CLEAR_TASKS, ((route.dag_id, body.dag_run_id),), details)


def _inspect_clear_run(
    route: Route, payload: Any, query: Mapping[str, Sequence[str]], lookup: DagLookup
) -> Verdict:
    body = _model("clear_run", payload)
    if body.dry_run:
        return None
    return Change(
        RouteKind.CLEAR_RUN,
        ((route.dag_id, route.run_id),),
        _clear_options(body, ("only_failed", "only_new")),
    )


def _inspect_clear_runs(
    route: Route, payload: Any, query: Mapping[str, Sequence[str]], lookup: DagLookup
) -> Verdict:
    body = _model("clear_runs", payload)
    if body.dry_run:
        return None
    targets = tuple((run.dag_id or route.dag_id, run.dag_run_id) for run in body.dag_runs) or (
        (route.dag_id, None),
    )
    details = {
        **_clear_options(body, ("only_failed", "only_new", "partition_key")),
        "runs": [{"dag_id": dag_id, "run_id": run_id} for dag_id, run_id in targets if run_id],
    }
    return Change(RouteKind.CLEAR_RUNS, targets, details)


_INSPECTORS: Final = {
    RouteKind.TASK_STATE: _inspect_task_state,
    RouteKind.TASK_STATE_BULK: _inspect_task_bulk,
    RouteKind.GROUP_STATE: _inspect_group_state,
    RouteKind.RUN_STATE: _inspect_run_state,
    RouteKind.RUN_STATE_BULK: _inspect_run_bulk,
    RouteKind.XCOM_WRITE: _inspect_xcom,
    RouteKind.STATE_STORE_WRITE: _inspect_state_store,
    RouteKind.CLEAR_TASKS: _inspect_clear_tasks,
    RouteKind.CLEAR_RUN: _inspect_clear_run,
    RouteKind.CLEAR_RUNS: _inspect_clear_runs,
    RouteKind.TASK_DELETE: _inspect_task_delete,
}
