"""Write audit records from anywhere in the platform: scheduler, workers, triggerer, dag-processor.

The audit trail is written by the platform, never by DAG authors: the listener plugin
(``include/audit/listener.py``: runs triggered and finished, task end states, policy violations),
the approval gate and its trigger (requests, escalation steps, answers) and the connector
operators (side effects) call :func:`emit`. Each process keeps one :class:`AuditStore` whose DSN
comes from the ``audit_store`` connection, so from the secrets backend like every credential.

An audit write must never fail the work it records, and must never be lost either: when the store
cannot be reached (or the connection is missing) the event goes to a local spool file
(``$AIRFLOW_HOME/audit-spool/<component>-<pid>.jsonl``, or ``ORCH_AUDIT_SPOOL``) with an ERROR log
line. Each spooled line carries an HMAC-SHA256 made with the writing component's spool key
(``$AIRFLOW_HOME/audit-spool-keys/<component>.key``, mode 0600, or ``ORCH_AUDIT_SPOOL_KEYS``).
The process drains its own spool on its next successful write, and the sealing DAG drains whatever
is left in the folder (files of processes that ended) before every seal (:func:`drain_spool`). A
line without a valid MAC, or that does not parse, is never appended as written: it is moved to
``quarantine/<file>`` and reported (an ``audit.spool_quarantined`` record naming file and line,
and an ERROR log line). A spooled event is appended after events written meanwhile; its
``details.spooled_at`` keeps the original time and ``details.spooled_by`` the component whose key
vouched for it. What this MAC does and does not stop: docs/audit.md ("Spool").

Record conventions (what each kind's ``details`` hold) are in docs/audit.md ("Records") and in
the callers; :mod:`include.audit.trace` reads them.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

from include.audit.records import (
    AUDIT_SPOOL_QUARANTINED,
    AuditRecord,
    canonical_json,
    redact_details,
    utc_now,
    validate_event,
)

# Imported here, not on first use: every Airflow component loads the audit listener plugin (and
# with it this module) at start, so processes forked from it (LocalExecutor workers, then each task
# process) inherit psycopg already imported instead of paying ~0.1-0.3 s per task on its first
# audit write (measured: importing psycopg is most of a cold write).
from include.audit.store import AuditStore

AUDIT_CONN_ID: Final = "audit_store"
SPOOL_ENV: Final = "ORCH_AUDIT_SPOOL"
SPOOL_KEYS_ENV: Final = "ORCH_AUDIT_SPOOL_KEYS"
COMPONENT_ENV: Final = "ORCH_AUDIT_COMPONENT"
"""Overrides the component name a process signs its spool lines as (else taken from its command)."""
SPOOL_VERSION: Final = 1
QUARANTINE_DIR: Final = "quarantine"
SPOOL_ACTOR: Final = "audit-spool"
# ``airflow <command>`` -> component; a task process (the Task SDK sets AIRFLOW_CTX_* before it runs
# the task) is ``task`` whatever process forked it.
_COMMAND_COMPONENTS: Final = {
    "scheduler": "scheduler",
    "triggerer": "triggerer",
    "api-server": "api-server",
    "dag-processor": "dag-processor",
    "celery": "worker",
    "standalone": "standalone",
}
_COMPONENT = re.compile(r"[a-z][a-z0-9-]{0,39}")
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


def _local_dir(env: str, name: str) -> Path:
    """``$<env>``, or ``$AIRFLOW_HOME/<name>``."""
    configured = os.environ.get(env)
    if configured:
        return Path(configured)
    home = os.environ.get("AIRFLOW_HOME") or str(Path.home() / "airflow")
    return Path(home) / name


def spool_dir() -> Path:
    return _local_dir(SPOOL_ENV, "audit-spool")


def spool_key_dir() -> Path:
    return _local_dir(SPOOL_KEYS_ENV, "audit-spool-keys")


def component_name() -> str:
    """The component this process writes spool lines as: ``scheduler``, ``task``, ``api-server``, ..."""
    configured = os.environ.get(COMPONENT_ENV)
    if configured:
        return configured
    if os.environ.get("AIRFLOW_CTX_DAG_ID"):
        return "task"
    command = next((arg for arg in sys.argv[1:3] if arg in _COMMAND_COMPONENTS), None)
    return _COMMAND_COMPONENTS[command] if command else "process"


def spool_key(component: str, *, create: bool = False) -> bytes | None:
    """The component's spool MAC key (32 random bytes, hex in a 0600 file); ``None`` if it has none.

    :param create: make the key when missing (the writer); the drainer only reads.
    :raises ValueError: a component name that is not ``[a-z][a-z0-9-]*`` (it names a file).
    """
    if not _COMPONENT.fullmatch(component):
        raise ValueError(f"component {component!r}: not a component name")
    path = spool_key_dir() / f"{component}.key"
    if create and not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Written whole under a temporary name, then linked into place: another process of the
        # component never reads a half-written key, and the first link wins.
        temporary = path.with_name(f".{component}.{os.getpid()}.{threading.get_ident()}.tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(secrets.token_hex(32))
        with contextlib.suppress(FileExistsError):
            os.link(temporary, path)
        temporary.unlink()
    try:
        return bytes.fromhex(path.read_text(encoding="ascii").strip())
    except FileNotFoundError:
        return None
    except ValueError:
        raise ValueError(f"spool key {path}: not hex") from None


def _mac(key: bytes, payload: Mapping[str, Any]) -> str:
    return hmac.new(key, canonical_json(payload).encode("utf-8"), hashlib.sha256).hexdigest()


def spool_line(event: Mapping[str, Any], component: str, key: bytes) -> str:
    """One spool line: ``{"v": 1, "component": ..., "event": {...}, "mac": HMAC-SHA256}``."""
    payload = {"v": SPOOL_VERSION, "component": component, "event": dict(event)}
    return canonical_json({**payload, "mac": _mac(key, payload)})


class SpoolLineError(ValueError):
    """A spool line that must not be appended: the message says why (never the line itself)."""


def read_spool_line(line: str, key_for: Callable[[str], bytes | None]) -> tuple[str, dict[str, Any]]:
    """``(component, event)`` of a spool line whose MAC is the component's.

    :raises SpoolLineError: not JSON, unsigned, unknown component, MAC wrong, or a malformed event.
    """
    try:
        document = json.loads(line)
    except ValueError:
        raise SpoolLineError("not JSON") from None
    if not isinstance(document, dict) or "mac" not in document:
        raise SpoolLineError("unsigned (no MAC)")
    component, mac = document.get("component"), document.pop("mac")
    if document.get("v") != SPOOL_VERSION or set(document) != {"v", "component", "event"}:
        raise SpoolLineError("not a spool line of this version")
    if not isinstance(component, str) or not _COMPONENT.fullmatch(component):
        raise SpoolLineError(f"component {str(component)[:40]!r} is not a component name")
    key = key_for(component)
    if key is None:
        raise SpoolLineError(f"no spool key for component {component!r}")
    try:
        expected = _mac(key, document)
    except (TypeError, ValueError):
        raise SpoolLineError("content is not canonical JSON") from None
    if not isinstance(mac, str) or not hmac.compare_digest(expected, mac):
        raise SpoolLineError(f"MAC does not match component {component!r}'s key (altered or forged)")
    event = document["event"]
    if not isinstance(event, dict):
        raise SpoolLineError("event is not an object")
    return component, event


_spooled_pids: set[int] = set()


def _append_locked(path: Path, line: str) -> None:
    """Append ``line`` under an exclusive lock, to the file still at ``path``.

    A drain claims a file by locking it and renaming it away; a writer that opened the old file
    just before sees (under the lock) that ``path`` is no longer that file and opens it again, so
    no line lands in a file already read.
    """
    while True:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                current = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                current = False
            if current:
                os.write(fd, (line + "\n").encode("utf-8"))
                return
        finally:
            os.close(fd)


def _spool(event: Mapping[str, Any], reason: str) -> None:
    folder = spool_dir()
    folder.mkdir(parents=True, exist_ok=True)
    component = component_name()
    key = spool_key(component, create=True)
    assert key is not None
    details = {**event.get("details", {}), "spooled_at": utc_now(), "spooled_by": component}
    _append_locked(
        folder / f"{component}-{os.getpid()}.jsonl", spool_line({**event, "details": details}, component, key)
    )
    _spooled_pids.add(os.getpid())
    # The reason names the failure (connection refused, missing connection), never the DSN.
    log.error("audit store unavailable (%s): %s event spooled to %s", reason, event.get("kind"), folder)


def _clean(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The validated event, credential-looking values replaced (only those: the rest is kept).

    Details the record would still refuse (not plain JSON, too large) are replaced by the refusal,
    which names the field, never the value.
    """
    details, redacted = redact_details(fields.get("details"))
    if redacted:
        log.warning(
            "audit event %s: credential-looking value(s) redacted: %s",
            fields.get("kind"),
            ", ".join(redacted),
        )
    try:
        return validate_event({**fields, "details": details} if "details" in fields else fields)
    except ValueError as error:
        if not str(error).startswith("details"):
            raise
        return validate_event({**fields, "details": {"refused_details": str(error)}})


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
    if os.getpid() in _spooled_pids:
        _drain_own_spool(conn_id)
    return record


def _drain_own_spool(conn_id: str) -> None:
    """The store answers again: append what this process spooled (never raises: emit must not)."""
    prefix = f"{component_name()}-{os.getpid()}"
    try:
        result = drain_spool(store(conn_id), spool_dir(), prefix=prefix)
    except Exception as error:
        log.error(
            "audit spool of this process not drained yet (%s); the next write or seal will",
            type(error).__name__,
        )
        return
    if not any(spool_dir().glob(f"{prefix}*.jsonl")):
        _spooled_pids.discard(os.getpid())
    if result.appended or result.quarantined:
        log.info("audit spool drained: %d appended, %d quarantined", result.appended, len(result.quarantined))


def _close(conn_id: str) -> None:
    key = (os.getpid(), conn_id)
    with _STATE_LOCK:
        audit = _STORES.pop(key, None)
        _DSNS.pop(key, None)
    if audit is not None:
        audit.close()


@dataclass
class DrainResult:
    """What a drain did: events appended, and ``file:line`` of each line quarantined."""

    appended: int = 0
    quarantined: list[str] = field(default_factory=list)


def _claim(path: Path) -> Path | None:
    """Rename ``path`` away under its lock (see :func:`_append_locked`); ``None`` if already taken."""
    claimed = path.with_name(f"{path.name}.draining-{os.getpid()}")
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if os.stat(path).st_ino != os.fstat(fd).st_ino:
                return None  # another drain renamed it meanwhile
            path.rename(claimed)
        except FileNotFoundError:
            return None
    finally:
        os.close(fd)
    return claimed


def _quarantine(target: Any, folder: Path, name: str, number: int, line: str, reason: str) -> str:
    """Report the line (a record, then an ERROR log line) and move it to ``quarantine/<name>``."""
    where = f"{name}:{number}"
    moved_to = f"{QUARANTINE_DIR}/{name}"
    target.append(
        {
            "kind": AUDIT_SPOOL_QUARANTINED,
            "actor": SPOOL_ACTOR,
            "subject": name,
            "details": {"file": name, "line": number, "reason": reason, "quarantine_file": moved_to},
        }
    )
    quarantine = folder / QUARANTINE_DIR
    quarantine.mkdir(mode=0o700, exist_ok=True)
    with (quarantine / name).open("a", encoding="utf-8") as handle:
        handle.write(line + "\n")
    log.error("audit spool line %s quarantined (%s), moved to %s", where, reason, folder / moved_to)
    return where


def _drain_file(target: Any, folder: Path, name: str, claimed: Path, result: DrainResult) -> None:
    lines = claimed.read_text(encoding="utf-8", errors="replace").splitlines()
    keys: dict[str, bytes | None] = {}

    def key_for(component: str) -> bytes | None:
        if component not in keys:
            keys[component] = spool_key(component)
        return keys[component]

    for index, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            try:
                _, event = read_spool_line(line, key_for)
                target.append(event)
                result.appended += 1
            except (SpoolLineError, ValueError) as error:  # ValueError: the event itself refused
                reason = str(error) if isinstance(error, SpoolLineError) else f"event refused: {error}"
                result.quarantined.append(_quarantine(target, folder, name, index + 1, line, reason))
        except Exception:
            # The store went away mid-drain: keep this line and the rest for the next drain.
            rest = folder / f"{Path(name).stem}.rest-{os.getpid()}-{index + 1}.jsonl"
            rest.write_text("\n".join(lines[index:]) + "\n", encoding="utf-8")
            claimed.unlink()
            raise
    claimed.unlink()


def drain_spool(target: Any, folder: Path | None = None, *, prefix: str = "") -> DrainResult:
    """Append every valid spooled event to ``target`` (an AuditStore); quarantine every other line.

    Each file is claimed (locked, then renamed) first, so two drains never append the same event and
    no writer appends to a file being drained. A line that is not JSON, carries no MAC or a MAC that
    is not its component's is moved to ``quarantine/<file>`` and reported, and the drain continues.
    A file whose drain fails part-way (the store went away) keeps its remaining lines, in a new
    spool file, for the next drain; the error is raised.

    :param prefix: only files whose name starts with it (a process's own: ``<component>-<pid>``).
    """
    folder = folder or spool_dir()
    result = DrainResult()
    if not folder.is_dir():
        return result
    for path in sorted(folder.glob(f"{prefix}*.jsonl")):
        claimed = _claim(path)
        if claimed is not None:
            _drain_file(target, folder, path.name, claimed, result)
    return result


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
