"""The approval door in the API server: an ASGI middleware the auth manager installs.

:meth:`include.auth.fab.ApprovalAwareFabAuthManager.get_fastapi_middlewares` adds
:class:`ApprovalDoorMiddleware` to the API server's app. For the few public-API writes that can
change a task's or a run's state by hand (:func:`include.approvals.door.match_route`) it reads the
user from the request's token (the ``Authorization: Bearer`` header, else the UI's ``_token``
cookie), then the body, and asks :func:`include.approvals.door.inspect_request`:

- a request that would bypass an approval gets **403** with a ``detail`` naming the rule, the task
  and what to do instead, for every role including Admin, and one ``policy.violation`` audit
  record naming the user (nothing reaches Airflow's route);
- an accepted state change or clear goes on to Airflow; when Airflow answers 2xx, one
  ``manual.change`` record names the user, what and where (written before the answer is passed
  on, so whoever reads the trail after the answer finds it). While Airflow applies it, the audit
  listener sees :func:`include.approvals.door.current_manual_change`, so the ``task.finished``
  records of the tasks set by hand point at that record instead of claiming a worker.

Every other request (the Execution API's task updates under ``/execution`` included) costs a
method and a path-prefix check. A request without a valid token is left to Airflow (401/403) and
is not audited as anyone's, unless FAB's public role lets such requests in: then they are checked
too, as ``anonymous (<role>)``. The DAG's shape (gates, privileged steps, edges) is cached per DAG
version, so an inspected request reads two or three small rows.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Collection, Mapping, MutableMapping
from typing import Any, Final
from urllib.parse import parse_qs

from airflow.api_fastapi.auth.managers.base_auth_manager import COOKIE_NAME_JWT_TOKEN

from include.approvals import second_factor
from include.approvals.door import (
    WRITE_METHODS,
    Change,
    Refusal,
    Route,
    Verdict,
    inspect_request,
    manual_change_context,
    mark_refusal_recorded,
    match_route,
    path_target,
    refusal_recording,
    route_path,
)
from include.approvals.door import ManualChange as _ManualChange
from include.approvals.guarded import DagShape, shape_of
from include.audit.records import API_REFUSED, APPROVAL_SECOND_FACTOR, MANUAL_CHANGE, POLICY_VIOLATION

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
UserResolver = Callable[[Scope], Awaitable[str | None]]
AuditWriter = Callable[[Mapping[str, Any]], Any]
# (username, code) -> (verdict, server message, token serial); raises when the MFA server cannot answer.
CodeChecker = Callable[[str, str], tuple[str, str, str | None]]

SHAPE_CACHE_SIZE: Final = 256
# Writes whose refusal by Airflow (4xx: no permission, a bad body, a conflict) is recorded too, so
# every attempt to change something is on the audit trail naming who tried.
WATCHED_PREFIXES: Final = ("/api/v2/", "/auth/fab/v1/")
UNAVAILABLE_DETAIL: Final = (
    "The approval check could not read this DAG's tasks from the metadata database, so this change "
    "was not applied. Try again."
)


# --- The metadata DB ------------------------------------------------------------------------


class MetadataLookup:
    """DAG shapes and task states from Airflow's metadata DB; shapes cached per DAG version.

    A request may touch a run of an older version than the latest (a Git commit creates a new
    version) while Airflow computes the tasks it sets from the latest one: both are merged, so a
    task guarded in either version stays guarded.
    """

    def __init__(self, cache_size: int = SHAPE_CACHE_SIZE) -> None:
        self._shapes: OrderedDict[tuple[str, str], DagShape] = OrderedDict()
        self._size = cache_size
        self._lock = threading.Lock()

    def shape(self, dag_id: str, run_id: str | None) -> DagShape | None:
        from airflow.utils.session import create_session

        with create_session() as session:
            versions = self._versions(session, dag_id, run_id)
            shapes = [self._shape(session, version_id, dag_hash) for version_id, dag_hash in versions]
        found = [shape for shape in shapes if shape is not None]
        if not found:
            return None
        merged = found[0]
        for other in found[1:]:
            merged = merged.merged(other)
        return merged

    @staticmethod
    def _versions(session: Any, dag_id: str, run_id: str | None) -> list[tuple[Any, str]]:
        from airflow.models.dag_version import DagVersion
        from airflow.models.dagrun import DagRun
        from airflow.models.serialized_dag import SerializedDagModel as Serialized
        from sqlalchemy import select

        latest = session.execute(
            select(Serialized.dag_version_id, Serialized.dag_hash)
            .join(DagVersion, Serialized.dag_version_id == DagVersion.id)
            .where(Serialized.dag_id == dag_id)
            .order_by(DagVersion.version_number.desc())
            .limit(1)
        ).first()
        versions = [tuple(latest)] if latest else []
        if run_id and run_id != "~":
            run_version = session.execute(
                select(Serialized.dag_version_id, Serialized.dag_hash)
                .join(DagRun, DagRun.created_dag_version_id == Serialized.dag_version_id)
                .where(DagRun.dag_id == dag_id, DagRun.run_id == run_id)
            ).first()
            if run_version and tuple(run_version) not in versions:
                versions.append(tuple(run_version))
        return versions

    def _shape(self, session: Any, version_id: Any, dag_hash: str) -> DagShape | None:
        key = (str(version_id), dag_hash)
        with self._lock:
            if key in self._shapes:
                self._shapes.move_to_end(key)
                return self._shapes[key]
        from airflow.models.serialized_dag import SerializedDagModel as Serialized
        from sqlalchemy import select

        row = session.scalar(select(Serialized).where(Serialized.dag_version_id == version_id))
        dag = row.dag if row is not None else None
        if dag is None:
            return None
        shape = shape_of(dag)
        with self._lock:
            self._shapes[key] = shape
            while len(self._shapes) > self._size:
                self._shapes.popitem(last=False)
        return shape

    def task_states(self, dag_id: str, run_id: str) -> Mapping[str, Collection[str | None]]:
        from airflow.models.taskinstance import TaskInstance
        from airflow.utils.session import create_session
        from sqlalchemy import select

        states: dict[str, set[str | None]] = {}
        with create_session() as session:
            rows = session.execute(
                select(TaskInstance.task_id, TaskInstance.state).where(
                    TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id
                )
            )
            for task_id, state in rows:
                states.setdefault(task_id, set()).add(None if state is None else str(state))
        return states

    def audit_fields(self, dag_id: str, run_id: str | None) -> dict[str, Any]:
        """Domain, tenant and correlation id of a run, as the audit listener records them."""
        from airflow.models.dagrun import DagRun
        from airflow.utils.session import create_session
        from sqlalchemy import select

        from include.connectors.context import CORRELATION_CONF_KEY, default_correlation_id

        shape = self.shape(dag_id, run_id)
        fields: dict[str, Any] = {
            "domain": shape.domain if shape else None,
            "tenant": None,
            "correlation_id": None,
        }
        if not run_id or run_id == "~":
            return fields
        with create_session() as session:
            row = session.execute(
                select(DagRun.conf).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id)
            ).first()
        if row is None:
            return fields
        conf = dict(row[0] or {})
        tenant = conf.get("tenant")
        fields["tenant"] = tenant if isinstance(tenant, str) and tenant else None
        fields["correlation_id"] = str(
            conf.get(CORRELATION_CONF_KEY) or default_correlation_id(dag_id, run_id)
        )
        return fields


_MFA_HOOK_SECONDS: Final = 300.0
_mfa_hook: tuple[float, Any] | None = None
_mfa_lock = threading.Lock()


def check_code_with_mfa_server(username: str, code: str) -> tuple[str, str, str | None]:
    """The MFA server's verdict on ``code`` for ``username`` (one hook per process, renewed every
    5 minutes so a rotated validate key is picked up without a restart)."""
    import time

    from include.connectors.mfa import MfaHook

    global _mfa_hook
    with _mfa_lock:
        now = time.monotonic()
        if _mfa_hook is None or now - _mfa_hook[0] > _MFA_HOOK_SECONDS:
            _mfa_hook = (now, MfaHook())
        hook = _mfa_hook[1]
    result = hook.check(username, code)
    return str(result.verdict), result.message, result.serial


@functools.cache
def _shared_lookup() -> MetadataLookup:
    return MetadataLookup()


def run_audit_fields(dag_id: str | None, run_id: str | None) -> dict[str, Any]:
    """Domain, tenant and correlation id of a run for a record written in the API server (never raises)."""
    if not dag_id:
        return {}
    try:
        return _shared_lookup().audit_fields(dag_id, run_id)
    except Exception:
        log.warning("no audit fields for %s/%s", dag_id, run_id, exc_info=True)
        return {}


# --- The request ----------------------------------------------------------------------------


def request_token(scope: Scope) -> str | None:
    """The token Airflow authenticates the request with, read as its ``get_user`` reads it: a
    ``Bearer`` Authorization header wins over the UI's cookie."""
    from fastapi.security.utils import get_authorization_scheme_param
    from starlette.datastructures import Headers
    from starlette.requests import cookie_parser

    headers = Headers(scope=scope)
    scheme, credentials = get_authorization_scheme_param(headers.get("authorization"))
    if scheme.lower() == "bearer" and credentials:
        return credentials
    return cookie_parser(headers.get("cookie", "")).get(COOKIE_NAME_JWT_TOKEN) or None


async def user_from_token(scope: Scope) -> str | None:
    """The name of the request's user, or ``None`` when it carries no valid token."""
    token = request_token(scope)
    if token is None:
        return None
    from airflow.api_fastapi.app import get_auth_manager

    try:
        user = await get_auth_manager().get_user_from_token(token)
    except Exception:
        return None  # expired, revoked or forged: Airflow answers it
    name = user.get_name()
    return str(name) if name else None


async def _read_body(receive: Receive) -> tuple[bytes, bool]:
    """The whole request body, and whether the client is still there."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"".join(chunks), False
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks), True


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands the app the body read already, then the client's next messages."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replay() -> Message:
        return pending.pop() if pending else await receive()

    return replay


async def _json_response(send: Send, status: int, content: Mapping[str, Any]) -> None:
    body = json.dumps(content).encode("utf-8")
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


# --- The middleware -------------------------------------------------------------------------


class ApprovalDoorMiddleware:
    """Refuse hand-made changes that would bypass an approval; audit the ones accepted.

    :param app: the ASGI app it wraps.
    :param lookup: where DAG shapes and task states come from (default: the metadata DB).
    :param resolve_user: the request's user name from its token (default: the auth manager's).
    :param audit: the audit writer (default: :func:`include.audit.emit.emit`, which never raises).
    :param anonymous_actor: who an unauthenticated request is, when the auth manager lets one in
        (FAB's public role): such requests are then checked too. ``None`` (the default): they are
        left to Airflow, which refuses them.
    :param check_code: checks an approval answer's one-time code for a user
        (:mod:`include.approvals.second_factor`; default: the MFA server through
        :class:`include.connectors.mfa.MfaHook`).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        lookup: Any = None,
        resolve_user: UserResolver | None = None,
        audit: AuditWriter | None = None,
        anonymous_actor: str | None = None,
        check_code: CodeChecker | None = None,
    ) -> None:
        self.app = app
        self.anonymous_actor = anonymous_actor
        self.lookup = lookup if lookup is not None else MetadataLookup()
        self.resolve_user = resolve_user or user_from_token
        self._audit = audit
        self.check_code = check_code or check_code_with_mfa_server

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in WRITE_METHODS:
            await self.app(scope, receive, send)
            return
        path = route_path(scope)
        route = match_route(scope["method"], path)
        if route is None and not path.startswith(WATCHED_PREFIXES):
            await self.app(scope, receive, send)
            return
        state: dict[str, Any] = {
            "recorded": False,
            "method": scope["method"],
            "path": path,
            **path_target(path),
        }
        token = refusal_recording().set(state)
        try:
            watched = self._recording_refusals(scope, send, state)
            answer = second_factor.answer_target(scope["method"], path)
            if answer is not None:
                await self._answer(answer, scope, receive, watched)
            elif route is None:
                await self.app(scope, receive, watched)
            else:
                await self._guard(route, scope, receive, watched)
        finally:
            refusal_recording().reset(token)

    def _recording_refusals(self, scope: Scope, send: Send, state: dict[str, Any]) -> Send:
        """``send``, recording a refused write (4xx but 401) as ``api.refused`` unless recorded already."""
        from starlette.concurrency import run_in_threadpool

        async def watched(message: Message) -> None:
            if message["type"] == "http.response.start":
                status = int(message["status"])
                if 400 <= status < 500 and status != 401 and not state["recorded"]:
                    actor = await self.resolve_user(scope) or self.anonymous_actor
                    if actor is not None:
                        await run_in_threadpool(self._record_refused, actor, scope, status)
            await send(message)

        return watched

    async def _guard(self, route: Route, scope: Scope, receive: Receive, send: Send) -> None:
        from starlette.concurrency import run_in_threadpool

        actor = await self.resolve_user(scope) or self.anonymous_actor
        if actor is None:
            await self.app(scope, receive, send)  # Airflow refuses it (401/403)
            return
        body, connected = await _read_body(receive)
        if not connected:
            return
        replay = _replay(body, receive)
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        try:
            verdict: Verdict = await run_in_threadpool(inspect_request, route, body, query, self.lookup)
        except Exception:
            log.exception("approval door: cannot check %s %s", scope["method"], scope["path"])
            await _json_response(send, 503, {"detail": UNAVAILABLE_DETAIL})
            return
        if isinstance(verdict, Refusal):
            await run_in_threadpool(self._record_refusal, verdict, actor, scope)
            content = {"detail": verdict.message, "rule": verdict.rule, "task_id": verdict.task_id}
            await _json_response(send, 403, content)
        elif isinstance(verdict, Change):
            await self._apply_change(verdict, actor, scope, replay, send)
        else:
            await self.app(scope, replay, send)

    async def _answer(
        self, target: second_factor.AnswerTarget, scope: Scope, receive: Receive, send: Send
    ) -> None:
        """An approval answer goes on only with a fresh one-time code of its user, and without it."""
        from starlette.concurrency import run_in_threadpool

        actor = await self.resolve_user(scope)
        if actor is None:
            await self.app(scope, receive, send)  # no valid token: Airflow answers 401
            return
        body, connected = await _read_body(receive)
        if not connected:
            return
        taken = second_factor.take_code(body)
        if taken.code is None:
            verdict, message, serial = "missing", "", None
        else:
            try:
                verdict, message, serial = await run_in_threadpool(self.check_code, actor, taken.code)
            except Exception as error:
                # Never the code: the hooks' errors name the server and the status only.
                log.warning("approval door: MFA server could not check a code of %s: %s", actor, error)
                await _json_response(send, 503, {"detail": second_factor.UNAVAILABLE_DETAIL})
                return
        if verdict != "accept":
            await run_in_threadpool(self._record_second_factor_refusal, target, actor, verdict, message)
            content = {
                "detail": second_factor.refusal_detail(verdict, message),
                "rule": second_factor.RULE,
                "verdict": verdict,
                "task_id": target.task_id,
            }
            await _json_response(send, 403, content)
            return

        async def record_then_send(message: Message) -> None:
            if message["type"] == "http.response.start" and 200 <= int(message["status"]) < 300:
                await run_in_threadpool(self._record_second_factor, target, actor, serial)
            await send(message)

        await self.app(scope, _replay(taken.body, receive), record_then_send)

    async def _apply_change(
        self, change: Change, actor: str, scope: Scope, receive: Receive, send: Send
    ) -> None:
        from starlette.concurrency import run_in_threadpool

        manual = _ManualChange(change_id=uuid.uuid4().hex, actor=actor)

        async def record_then_send(message: Message) -> None:
            # Recorded before the client hears "done", so whoever reads the trail next sees it.
            if message["type"] == "http.response.start" and 200 <= int(message["status"]) < 300:
                await run_in_threadpool(self._record_change, change, manual, scope, int(message["status"]))
            await send(message)

        token = manual_change_context().set(manual)
        try:
            await self.app(scope, receive, record_then_send)
        finally:
            manual_change_context().reset(token)

    # --- audit records ---

    def _emit(self, event: Mapping[str, Any]) -> None:
        if self._audit is not None:
            self._audit(event)
            return
        from include.audit.emit import emit

        emit(event)

    def _fields(self, dag_id: str, run_id: str | None) -> dict[str, Any]:
        audit_fields = getattr(self.lookup, "audit_fields", None)
        if audit_fields is None:
            return {}
        try:
            return dict(audit_fields(dag_id, run_id))
        except Exception:
            log.warning("approval door: no audit fields for %s/%s", dag_id, run_id, exc_info=True)
            return {}

    def _record_second_factor_refusal(
        self, target: second_factor.AnswerTarget, actor: str, verdict: str, message: str
    ) -> None:
        mark_refusal_recorded()
        self._emit(
            {
                "kind": POLICY_VIOLATION,
                "actor": actor,
                **self._fields(target.dag_id, target.run_id),
                "dag_id": target.dag_id,
                "run_id": target.run_id,
                "task_id": target.task_id,
                "subject": "approval answer refused",
                "details": {
                    "rule": second_factor.RULE,
                    "verdict": verdict,
                    "server_message": message,
                    "message": f"{actor}'s answer refused: one-time code {verdict}",
                },
            }
        )

    def _record_second_factor(
        self, target: second_factor.AnswerTarget, actor: str, serial: str | None
    ) -> None:
        """The answer Airflow accepted was made with a verified second factor (which token)."""
        self._emit(
            {
                "kind": APPROVAL_SECOND_FACTOR,
                "actor": actor,
                **self._fields(target.dag_id, target.run_id),
                "dag_id": target.dag_id,
                "run_id": target.run_id,
                "task_id": target.task_id,
                "subject": f"{target.dag_id}.{target.task_id}",
                "details": {"method": second_factor.METHOD, "token_serial": serial, "verdict": "accept"},
            }
        )

    def _record_refused(self, actor: str, scope: Scope, status: int) -> None:
        """A write Airflow refused (permission, validation, conflict): who tried what."""
        path = route_path(scope)
        target = path_target(path)
        dag_id, run_id, task_id = target["dag_id"], target["run_id"], target["task_id"]
        self._emit(
            {
                "kind": API_REFUSED,
                "actor": actor,
                **(self._fields(dag_id, run_id) if dag_id else {}),
                "dag_id": dag_id,
                "run_id": run_id,
                "task_id": task_id,
                "subject": f"{scope['method']} {path} refused ({status})",
                "details": {"method": scope["method"], "path": path, "status_code": status},
            }
        )

    def _record_refusal(self, refusal: Refusal, actor: str, scope: Scope) -> None:
        mark_refusal_recorded()
        details = {
            "rule": refusal.rule,
            "dag_id": refusal.dag_id,
            "run_id": refusal.run_id or None,
            "task_id": refusal.task_id or None,
            "task_ids": list(refusal.task_ids),
            "method": scope["method"],
            "path": scope["path"],
            "message": refusal.message,
        }
        self._emit(
            {
                "kind": POLICY_VIOLATION,
                "actor": actor,
                **self._fields(refusal.dag_id, refusal.run_id),
                "dag_id": refusal.dag_id,
                "run_id": refusal.run_id or None,
                "task_id": refusal.task_id or None,
                "subject": f"{refusal.dag_id}.{refusal.task_id}" if refusal.task_id else refusal.dag_id,
                "details": details,
            }
        )

    def _record_change(self, change: Change, manual: _ManualChange, scope: Scope, status: int) -> None:
        """One ``manual.change`` record per run the change names (one, nearly always)."""
        for dag_id, run_id in change.targets:
            details = {
                "change": change.change,
                "change_id": manual.change_id,
                "method": scope["method"],
                "path": scope["path"],
                "status_code": status,
                **change.details,
            }
            self._emit(
                {
                    "kind": MANUAL_CHANGE,
                    "actor": manual.actor,
                    **self._fields(dag_id, run_id),
                    "dag_id": dag_id,
                    "run_id": run_id or None,
                    "task_id": change.task_id,
                    "subject": f"{change.change} by hand",
                    "details": details,
                }
            )
