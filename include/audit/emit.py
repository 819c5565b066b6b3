"""Write audit records from anywhere in the platform: scheduler, workers, triggerer, dag-processor.

The audit trail is written by the platform, never by DAG authors: the listener plugin
(``include/audit/listener.py``: runs triggered and finished, task end states, policy violations),
the approval gate and its trigger (requests, escalation steps, answers) and the connector
operators (side effects) call :func:`emit`. Each process keeps one :class:`AuditStore` whose DSN
comes from the ``audit_store`` connection, so from the secrets backend like every credential.

An audit write must never fail the work it records, and must never be lost either: when the store
cannot be reached (or the connection is missing) the event goes to a local spool file
(``$AIRFLOW_HOME/audit-spool/<pid>.jsonl``, or ``ORCH_AUDIT_SPOOL``) with an ERROR log line, and
:func:`drain_spool` (run by the sealing DAG before every seal) appends it later. A spooled event
is appended after events written meanwhile; its ``details.spooled_at`` keeps the original time.

Record conventions (what each kind's ``details`` hold) are in docs/audit.md ("Records") and in
the callers; :mod:`include.audit.trace` reads them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

from include.audit.records import AuditRecord, utc_now, validate_event

# Imported here, not on first use: every Airflow component loads the audit listener plugin (and
# with it this module) at start, so processes forked from it (LocalExecutor workers, then each task
# process) inherit psycopg already imported instead of paying ~0.1-0.3 s per task on its first
# audit write (measured: importing psycopg is most of a cold write).
from include.audit.store import AuditStore

AUDIT_CONN_ID: Final = "audit_store"
SPOOL_ENV: Final = "ORCH_AUDIT_SPOOL"
DISABLE_ENV: Final = "ORCH_AUDIT_DISABLED"
"""Set to ``1`` to write nothing (benchmarks measuring the platform without its audit trail)."""

log = logging.getLogger(__name__)

_STATE_LOCK = threading.Lock()
_STORES: dict[tuple[int, str], Any] = {}
_down_until: dict[tuple[int, str], float] = {}
RETRY_AFTER_FAILURE_SECONDS: Final = 30.0
"""After a failed write, a process spools without trying the store for this long."""
_DSNS: dict[tuple[int, str], str] = {}


def dsn_from_connection(conn: Any) -> str:
    """A libpq URL from an Airflow connection (login, password, host, port, schema = database)."""
    user = quote(conn.login, safe="") if conn.login else ""
    password = f":{quote(conn.password, safe='')}" if conn.password else ""
    auth = f"{user}{password}@" if user else ""
    return f"postgresql://{auth}{conn.host}:{conn.port or 5432}/{conn.schema or 'audit'}"


def _dsn(conn_id: str) -> str:
    key = (os.getpid(), conn_id)
    if key not in _DSNS:
        from airflow.sdk import BaseHook

        _DSNS[key] = dsn_from_connection(BaseHook.get_connection(conn_id))
    return _DSNS[key]


def store(conn_id: str = AUDIT_CONN_ID) -> Any:
    """This process's :class:`~include.audit.store.AuditStore` for ``conn_id`` (lazily connected)."""
    key = (os.getpid(), conn_id)
    with _STATE_LOCK:
        if key not in _STORES:
            _STORES[key] = AuditStore(_dsn(conn_id), connect_timeout=5)
        return _STORES[key]


def spool_dir() -> Path:
    configured = os.environ.get(SPOOL_ENV)
    if configured:
        return Path(configured)
    home = os.environ.get("AIRFLOW_HOME") or str(Path.home() / "airflow")
    return Path(home) / "audit-spool"


def _spool(event: Mapping[str, Any], reason: str) -> None:
    folder = spool_dir()
    folder.mkdir(parents=True, exist_ok=True)
    details = {**event.get("details", {}), "spooled_at": utc_now()}
    line = json.dumps({**event, "details": details}, sort_keys=True)
    with (folder / f"{os.getpid()}.jsonl").open("a", encoding="utf-8") as handle:
        handle.write(line + "\n")
    # The reason names the failure (connection refused, missing connection), never the DSN.
    log.error("audit store unavailable (%s): %s event spooled to %s", reason, event.get("kind"), folder)


def _clean(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The validated event; details the record would refuse are replaced by the refusal, not lost."""
    try:
        return validate_event(fields)
    except ValueError as error:
        # The message names the field (``details.comment``), never the value that looked secret.
        refused = {"refused_details": str(error)}
        return validate_event({**fields, "details": refused})


def emit(fields: Mapping[str, Any], *, conn_id: str = AUDIT_CONN_ID) -> AuditRecord | None:
    """Append one event (an :class:`~include.audit.records.AuditEvent`); never raises.

    :returns: the appended record, or ``None`` when it was spooled (or auditing is disabled).
    """
    if os.environ.get(DISABLE_ENV) == "1":
        return None
    try:
        event = _clean(fields)
    except ValueError as error:  # a malformed kind or actor: a platform bug, say so loudly
        log.error("audit event refused: %s", error)
        return None
    if time.monotonic() < _down_until.get((os.getpid(), conn_id), 0.0):
        _spool(event, "store marked unavailable after a failure")
        return None
    try:
        record: AuditRecord = store(conn_id).append(event)
    except Exception as error:
        with contextlib.suppress(Exception):
            _close(conn_id)
        # Don't try again for a while: the scheduler writes run events in its loop, and waiting
        # for a connect timeout on every event would stall scheduling while the store is down.
        _down_until[(os.getpid(), conn_id)] = time.monotonic() + RETRY_AFTER_FAILURE_SECONDS
        _spool(event, type(error).__name__)
        return None
    return record


async def aemit(fields: Mapping[str, Any], *, conn_id: str = AUDIT_CONN_ID) -> AuditRecord | None:
    """:func:`emit` from async code (triggers): the blocking write runs in a worker thread."""
    from asgiref.sync import sync_to_async

    result: AuditRecord | None = await sync_to_async(emit)(fields, conn_id=conn_id)
    return result


def _close(conn_id: str) -> None:
    key = (os.getpid(), conn_id)
    with _STATE_LOCK:
        audit = _STORES.pop(key, None)
        _DSNS.pop(key, None)
    if audit is not None:
        audit.close()


def drain_spool(target: Any, folder: Path | None = None) -> int:
    """Append every spooled event to ``target`` (an AuditStore); return how many.

    Each file is claimed by renaming it first, so two drains never append the same event; a file
    whose append fails part-way keeps its remaining lines (in a new spool file) for the next drain.
    """
    folder = folder or spool_dir()
    if not folder.is_dir():
        return 0
    appended = 0
    for path in sorted(folder.glob("*.jsonl")):
        claimed = path.with_suffix(f".draining-{os.getpid()}")
        try:
            path.rename(claimed)
        except FileNotFoundError:
            continue  # another drain took it
        lines = [line for line in claimed.read_text(encoding="utf-8").splitlines() if line.strip()]
        for index, line in enumerate(lines):
            try:
                target.append(json.loads(line))
            except Exception:
                rest = folder / f"{path.stem}-rest-{os.getpid()}.jsonl"
                rest.write_text("\n".join(lines[index:]) + "\n", encoding="utf-8")
                claimed.unlink()
                raise
            appended += 1
        claimed.unlink()
    return appended


def task_event(
    context: Mapping[str, Any],
    kind: str,
    *,
    details: Mapping[str, Any],
    tenant: str | None = None,
    actor: str = "worker",
    subject: str | None = None,
) -> dict[str, Any]:
    """An event of the running task: domain, correlation id, dag/run/task ids from its context."""
    from include.connectors.context import RunContext
    from include.policies.loader import domain_tags

    run = RunContext.from_airflow_context(context, tenant or "")
    task = context.get("task")
    domains = domain_tags(task.dag) if task is not None and getattr(task, "dag", None) else []
    return {
        "kind": kind,
        "actor": actor,
        "domain": domains[0] if len(domains) == 1 else None,
        "tenant": tenant or None,
        "correlation_id": run.correlation_id,
        "dag_id": run.dag_id,
        "run_id": run.run_id,
        "task_id": run.task_id,
        "subject": subject,
        "details": dict(details),
    }


def side_effect(
    context: Mapping[str, Any],
    *,
    system: str,
    operation: str,
    object_id: str,
    tenant: str | None,
    created: bool | None = None,
    **details: Any,
) -> AuditRecord | None:
    """Record one side effect a connector performed (``side_effect``); see docs/audit.md ("Records").

    ``details`` may add ``ticket_id``, ``capability``, ``role_arn``, ``summary`` and the like.
    """
    fields = {"system": system, "operation": operation, "object_id": object_id, **details}
    if created is not None:
        fields["created"] = created
    return emit(task_event(context, "side_effect", details=fields, tenant=tenant, subject=object_id))
