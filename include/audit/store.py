"""The audit log in PostgreSQL: one hash chain per database, appended by many processes at once.

Every worker process appends its own records, so two appends can race for the same head. Each
append takes a transaction-level advisory lock (:data:`CHAIN_LOCK`), then reads the head in a new
statement (under READ COMMITTED each statement sees what committed before it began, so it sees the
previous holder's row), links the record to it, inserts and commits, which releases the lock. The
primary key on ``seq`` and the unique ``prev_hash`` back this up: a writer that skipped the lock
fails instead of forking the chain. Timestamps come from the database clock under the lock, so
``at`` never goes backwards along the chain whichever host wrote the record.

The tables are append-only by trigger (UPDATE, DELETE, TRUNCATE refused), which stops accidents
and application bugs, not the table's owner: that is what the hash chain, the signed checkpoints
(:meth:`AuditStore.seal`) and the export to write-once storage (:mod:`include.audit.export`) are
for. In production the writers' role should hold only INSERT and SELECT on these tables, and the
server should keep ``synchronous_commit`` on (the test clusters turn it off for speed).

``details`` is stored as its canonical JSON text, not JSONB: JSONB rewrites numbers (``1e+20``
comes back as ``100000000000000000000``), which would change the hash. Query it with
``details::jsonb``.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Mapping
from datetime import datetime
from types import TracebackType
from typing import Any, Final

import psycopg

from include.audit.records import (
    CHECKPOINT_FIELDS,
    GENESIS_HASH,
    RECORD_FIELDS,
    AuditRecord,
    Checkpoint,
    build_checkpoint,
    canonical_json,
    check_key,
    format_at,
    link_record,
    validate_event,
)
from include.audit.verify import KeyLookup, VerifyReport, verify

CHAIN_LOCK: Final = 0x6175646974636861
"""``pg_advisory_xact_lock`` key of the chain head (ASCII "auditcha"); appends and seals take it."""

_SCHEMA: Final = (
    """
    CREATE TABLE IF NOT EXISTS audit_record (
        seq bigint PRIMARY KEY CHECK (seq >= 1),
        at timestamptz NOT NULL,
        kind text NOT NULL,
        actor text NOT NULL,
        domain text,
        tenant text,
        correlation_id text,
        dag_id text,
        run_id text,
        task_id text,
        subject text,
        details text NOT NULL,
        prev_hash char(64) NOT NULL UNIQUE,
        hash char(64) NOT NULL UNIQUE
    )
    """,
    "CREATE INDEX IF NOT EXISTS audit_record_correlation_id ON audit_record (correlation_id)",
    "CREATE INDEX IF NOT EXISTS audit_record_run ON audit_record (dag_id, run_id)",
    "CREATE INDEX IF NOT EXISTS audit_record_at ON audit_record (at)",
    """
    CREATE TABLE IF NOT EXISTS audit_checkpoint (
        checkpoint_seq bigint PRIMARY KEY CHECK (checkpoint_seq >= 1),
        last_seq bigint NOT NULL,
        last_hash char(64) NOT NULL,
        count bigint NOT NULL,
        at timestamptz NOT NULL,
        key_id text NOT NULL,
        prev_checkpoint_signature char(64) NOT NULL UNIQUE,
        signature char(64) NOT NULL UNIQUE
    )
    """,
    """
    CREATE OR REPLACE FUNCTION audit_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'audit table % is append-only: % refused', TG_TABLE_NAME, TG_OP
            USING ERRCODE = 'insufficient_privilege';
    END
    $$
    """,
    """
    CREATE OR REPLACE TRIGGER audit_record_append_only BEFORE UPDATE OR DELETE ON audit_record
        FOR EACH ROW EXECUTE FUNCTION audit_refuse_change()
    """,
    """
    CREATE OR REPLACE TRIGGER audit_record_no_truncate BEFORE TRUNCATE ON audit_record
        FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change()
    """,
    """
    CREATE OR REPLACE TRIGGER audit_checkpoint_append_only BEFORE UPDATE OR DELETE ON audit_checkpoint
        FOR EACH ROW EXECUTE FUNCTION audit_refuse_change()
    """,
    """
    CREATE OR REPLACE TRIGGER audit_checkpoint_no_truncate BEFORE TRUNCATE ON audit_checkpoint
        FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change()
    """,
)
_LOCK_SQL: Final = "SELECT pg_advisory_xact_lock(%s)"
# A statement of its own after the lock: its snapshot includes the previous holder's commit.
_HEAD_SQL: Final = """
    SELECT clock_timestamp(), head.seq, head.hash
    FROM (VALUES (1)) AS one
    LEFT JOIN LATERAL (SELECT seq, hash FROM audit_record ORDER BY seq DESC LIMIT 1) AS head ON true
"""
_RECORD_COLUMNS: Final = ", ".join(RECORD_FIELDS)
_RECORD_VALUES: Final = ", ".join(["%s"] * len(RECORD_FIELDS))
_INSERT_RECORD_SQL: Final = f"INSERT INTO audit_record ({_RECORD_COLUMNS}) VALUES ({_RECORD_VALUES})"  # noqa: S608
_LAST_CHECKPOINT_SQL: Final = (
    "SELECT checkpoint_seq, last_seq, count, signature FROM audit_checkpoint "
    "ORDER BY checkpoint_seq DESC LIMIT 1"
)
_CHECKPOINT_COLUMNS: Final = ", ".join(CHECKPOINT_FIELDS)
_CHECKPOINT_VALUES: Final = ", ".join(["%s"] * len(CHECKPOINT_FIELDS))
_INSERT_CHECKPOINT_SQL: Final = (
    f"INSERT INTO audit_checkpoint ({_CHECKPOINT_COLUMNS}) VALUES ({_CHECKPOINT_VALUES})"  # noqa: S608
)
# Column lists are the schema's own constants, never input.
_SELECT_RECORDS_SQL: Final = (
    f"SELECT {_RECORD_COLUMNS} FROM audit_record WHERE seq >= %s AND seq <= %s ORDER BY seq"  # noqa: S608
)
_SELECT_CHECKPOINTS_SQL: Final = f"SELECT {_CHECKPOINT_COLUMNS} FROM audit_checkpoint ORDER BY checkpoint_seq"  # noqa: S608
_SNAPSHOT_SQL: Final = "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"
_FETCH_ROWS: Final = 5000
_MAX_SEQ: Final = 2**63 - 1


def _row_to_record(row: tuple[Any, ...]) -> dict[str, Any]:
    """A stored row as the verifier sees it: ``at`` formatted, ``details`` parsed if it parses.

    Nothing is repaired: a ``details`` text tampered into non-JSON stays text, and fails its hash.
    """
    record = dict(zip(RECORD_FIELDS, row, strict=True))
    if isinstance(record["at"], datetime):
        record["at"] = format_at(record["at"])
    with contextlib.suppress(TypeError, ValueError):
        record["details"] = json.loads(record["details"])
    return record


def _row_to_checkpoint(row: tuple[Any, ...]) -> dict[str, Any]:
    checkpoint = dict(zip(CHECKPOINT_FIELDS, row, strict=True))
    if isinstance(checkpoint["at"], datetime):
        checkpoint["at"] = format_at(checkpoint["at"])
    return checkpoint


def _record_params(record: AuditRecord, at: datetime) -> tuple[Any, ...]:
    values = record.to_dict()
    values["at"] = at  # the exact instant ``record.at`` formats, as timestamptz
    values["details"] = canonical_json(record.details)
    return tuple(values[name] for name in RECORD_FIELDS)


class AuditStore:
    """The audit log of one PostgreSQL database (tables ``audit_record`` and ``audit_checkpoint``).

    One connection per process (re-opened after a fork), used by one thread at a time. Methods
    raise :class:`psycopg.Error` when the database does; an append whose commit failed may or may
    not have been written, so retrying it can record the event twice (never break the chain).

    :param dsn: a libpq connection string or URL.
    :param connect_timeout: seconds to wait for a connection.
    """

    def __init__(self, dsn: str, *, connect_timeout: int = 10) -> None:
        self.dsn = dsn
        self.connect_timeout = connect_timeout
        self._conn: psycopg.Connection[tuple[Any, ...]] | None = None
        self._pid = 0
        self._lock = threading.Lock()

    def _connection(self) -> psycopg.Connection[tuple[Any, ...]]:
        if self._conn is not None and self._pid == os.getpid() and not self._conn.closed:
            return self._conn
        # autocommit: every unit of work is an explicit ``transaction()`` block (BEGIN ... COMMIT).
        self._conn = psycopg.connect(
            self.dsn, autocommit=True, connect_timeout=self.connect_timeout, application_name="audit"
        )
        self._pid = os.getpid()
        return self._conn

    def close(self) -> None:
        """Close this process's connection (a connection inherited through fork is left alone)."""
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None

    def __enter__(self) -> AuditStore:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def ensure_schema(self) -> None:
        """Create the tables, indexes and append-only triggers if missing; safe to run concurrently."""
        with self._lock:
            conn = self._connection()
            with conn.transaction():
                conn.execute(_LOCK_SQL, (CHAIN_LOCK,))
                for statement in _SCHEMA:
                    conn.execute(statement)

    def append(self, fields: Mapping[str, Any]) -> AuditRecord:
        """Append one event as the next record of the chain and return it (committed).

        :param fields: an :class:`~include.audit.records.AuditEvent`.
        :raises ValueError: a malformed event (checked before the chain is locked).
        """
        event = validate_event(fields)
        with self._lock:
            conn = self._connection()
            # Pipelined: BEGIN, the lock and the head read leave in one round trip, the insert and
            # COMMIT in another, so the lock is held for about two round trips instead of four.
            # Same latency on loopback (measured: CPU-bound); it bounds throughput on a remote DB.
            with conn.pipeline(), conn.transaction():
                conn.execute(_LOCK_SQL, (CHAIN_LOCK,))
                row = conn.execute(_HEAD_SQL).fetchone()
                assert row is not None
                now, head_seq, head_hash = row
                record = link_record(
                    event,
                    seq=(head_seq or 0) + 1,
                    at=format_at(now),
                    prev_hash=head_hash or GENESIS_HASH,
                )
                conn.execute(_INSERT_RECORD_SQL, _record_params(record, now))
        return record

    def seal(self, key: bytes, key_id: str) -> Checkpoint | None:
        """Sign a checkpoint over every record appended so far.

        :param key: the HMAC key (from the secrets backend; never stored here).
        :param key_id: the key's name, written into the checkpoint for verification after rotation.
        :returns: the new checkpoint, or ``None`` when nothing was appended since the last one.
        """
        check_key(key)
        with self._lock:
            conn = self._connection()
            with conn.transaction():
                conn.execute(_LOCK_SQL, (CHAIN_LOCK,))
                last = conn.execute(_LAST_CHECKPOINT_SQL).fetchone()
                head = conn.execute(_HEAD_SQL).fetchone()
                assert head is not None
                now, head_seq, head_hash = head
                number, last_seq, count, prev_signature = last or (0, 0, 0, GENESIS_HASH)
                if head_seq is None or head_seq == last_seq:
                    return None
                added = conn.execute(
                    "SELECT count(*) FROM audit_record WHERE seq > %s AND seq <= %s", (last_seq, head_seq)
                ).fetchone()
                checkpoint = build_checkpoint(
                    checkpoint_seq=number + 1,
                    last_seq=head_seq,
                    last_hash=head_hash,
                    count=count + (added[0] if added else 0),
                    at=format_at(now),
                    key_id=key_id,
                    prev_checkpoint_signature=prev_signature,
                    key=key,
                )
                values = {**checkpoint.to_dict(), "at": now}
                conn.execute(_INSERT_CHECKPOINT_SQL, tuple(values[name] for name in CHECKPOINT_FIELDS))
        return checkpoint

    def head(self) -> tuple[int, str]:
        """``(seq, hash)`` of the last record, ``(0, GENESIS_HASH)`` for an empty log."""
        with self._lock:
            row = self._connection().execute(_HEAD_SQL).fetchone()
        assert row is not None
        return (row[1], row[2]) if row[1] is not None else (0, GENESIS_HASH)

    def _read(
        self, conn: psycopg.Connection[tuple[Any, ...]], first: int, last: int | None
    ) -> list[dict[str, Any]]:
        with conn.cursor(name="audit_records") as cursor:
            cursor.itersize = _FETCH_ROWS
            cursor.execute(_SELECT_RECORDS_SQL, (first, _MAX_SEQ if last is None else last))
            return [_row_to_record(row) for row in cursor]

    def records(self, first: int = 1, last: int | None = None) -> list[dict[str, Any]]:
        """Records ``first``..``last`` (inclusive; ``None``: to the end) in ``seq`` order, as stored."""
        with self._lock:
            conn = self._connection()
            with conn.transaction():
                conn.execute(_SNAPSHOT_SQL)
                return self._read(conn, first, last)

    def checkpoints(self) -> list[dict[str, Any]]:
        """Every checkpoint in ``checkpoint_seq`` order, as stored."""
        with self._lock:
            rows = self._connection().execute(_SELECT_CHECKPOINTS_SQL).fetchall()
        return [_row_to_checkpoint(row) for row in rows]

    def snapshot(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Every record and checkpoint from one consistent snapshot (no seal or append in between)."""
        with self._lock:
            conn = self._connection()
            with conn.transaction():
                conn.execute(_SNAPSHOT_SQL)
                checkpoints = [_row_to_checkpoint(row) for row in conn.execute(_SELECT_CHECKPOINTS_SQL)]
                return self._read(conn, 1, None), checkpoints

    def verify(self, key_for: KeyLookup | Mapping[str, bytes] | None) -> VerifyReport:
        """Verify the whole log against its checkpoints (see :func:`include.audit.verify.verify`)."""
        records, checkpoints = self.snapshot()
        return verify(records, checkpoints, key_for)
