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
for. The tables' owner runs :meth:`AuditStore.ensure_schema` at set-up; the role every writer
connects as holds only INSERT and SELECT on them (:func:`grant_statements`), so it can neither
change a row nor drop or disable a trigger. The server should keep ``synchronous_commit`` on (the
test clusters turn it off for speed).

``details`` is stored as its canonical JSON text, not JSONB: JSONB rewrites numbers (``1e+20``
comes back as ``100000000000000000000``), which would change the hash. Query it with
``audit_details_field(details, 'key')`` (the text of one top-level key, a NUL read as U+FFFD,
NULL for a row tampered into non-JSON), or with ``details::jsonb`` where no string holds a NUL
(PostgreSQL refuses the ``\\u0000`` escape there, which the record schema allows).

Lookups for ``audit trace`` (:meth:`AuditStore.trace`, :mod:`include.audit.trace`) find the runs an
identifier belongs to: a correlation id, a run id, a ticket id (``details.ticket_id``, or the
``object_id`` of a ticketing system's side effect) or a side effect's ``object_id``, each through an
index (``run_id``; expression indexes on ``audit_details_field(details, 'ticket_id')`` and, for side
effects, ``'object_id'``), then read every record of those runs from one snapshot.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import queue
import threading
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from types import TracebackType
from typing import Any, Final, NamedTuple

import psycopg
from psycopg import sql

from include.audit.records import (
    CHECKPOINT_FIELDS,
    CHECKPOINT_OPTIONAL_FIELDS,
    GENESIS_HASH,
    RECORD_FIELDS,
    AuditRecord,
    Checkpoint,
    build_checkpoint,
    canonical_json,
    format_at,
    link_record,
    validate_event,
)
from include.audit.signing import CheckpointKeys, CheckpointSigner
from include.audit.verify import HashedRecord, VerifyReport, hash_record, verify, verify_stream_hashed
from include.evidence.proof import TenantCommitment, commit_segment, covering_checkpoints

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
    # Not ``(details::jsonb) ->> key``: PostgreSQL's JSON types refuse a whole document when any
    # string in it holds the ``\u0000`` escape that canonical JSON writes for a NUL (which the
    # record schema allows), so an index on that expression would make such an append fail. This
    # accessor reads a NUL as U+FFFD instead (a ``\\u0000`` that is an escaped backslash followed
    # by "u0000" stays valid JSON after the replacement, only that string changes), and answers
    # NULL for text that does not parse at all (a row tampered in SQL). E'' literals: the same
    # whatever the session's standard_conforming_strings. PARALLEL UNSAFE: the EXCEPTION block is
    # a subtransaction, which PostgreSQL refuses in a parallel plan ("cannot start subtransactions
    # during a parallel operation": a trace over 3 million records hit it); the lookups are index
    # scans, which need no parallel workers.
    """
    CREATE OR REPLACE FUNCTION audit_details_field(details text, field text) RETURNS text
        LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL UNSAFE AS $$
    BEGIN
        RETURN replace(details, E'\\\\u0000', E'\\\\ufffd')::json ->> field;
    EXCEPTION WHEN data_exception THEN
        RETURN NULL;
    END
    $$
    """,
    "CREATE INDEX IF NOT EXISTS audit_record_run_id ON audit_record (run_id)",
    """
    CREATE INDEX IF NOT EXISTS audit_record_ticket_id
        ON audit_record (audit_details_field(details, 'ticket_id'))
    """,
    """
    CREATE INDEX IF NOT EXISTS audit_record_object_id
        ON audit_record (audit_details_field(details, 'object_id')) WHERE kind = 'side_effect'
    """,
    """
    CREATE TABLE IF NOT EXISTS audit_checkpoint (
        checkpoint_seq bigint PRIMARY KEY CHECK (checkpoint_seq >= 1),
        last_seq bigint NOT NULL,
        last_hash char(64) NOT NULL,
        count bigint NOT NULL,
        at timestamptz NOT NULL,
        key_id text NOT NULL,
        algorithm text NOT NULL,
        prev_checkpoint_signature text NOT NULL UNIQUE,
        signature text NOT NULL UNIQUE
    )
    """,
    # Checkpoints (helper SIGN, issue 19): asymmetric signatures are longer than 64 hex digits
    # (Ed25519: 128, ECDSA DER: ~140) and name their algorithm. A table created before keeps its
    # rows, which are HMAC-SHA256 checkpoints: they get that algorithm (include/audit/signing.py).
    "ALTER TABLE audit_checkpoint ADD COLUMN IF NOT EXISTS algorithm text NOT NULL DEFAULT 'hmac-sha256'",
    "ALTER TABLE audit_checkpoint ALTER COLUMN algorithm DROP DEFAULT",
    """
    ALTER TABLE audit_checkpoint
        ALTER COLUMN prev_checkpoint_signature TYPE text,
        ALTER COLUMN signature TYPE text
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
    # Per-tenant commitments (issue 25, include/evidence/proof.py): a checkpoint signs the root of a
    # tree with one leaf per tenant; each tenant's leaf and inclusion path are kept here for its
    # evidence packs (the other slots of the tree are random and kept nowhere). Checkpoints sealed
    # before have no tenant_root (NULL) and no rows here.
    "ALTER TABLE audit_checkpoint ADD COLUMN IF NOT EXISTS tenant_root char(64)",
    """
    CREATE TABLE IF NOT EXISTS audit_tenant_commitment (
        checkpoint_seq bigint NOT NULL CHECK (checkpoint_seq >= 1),
        leaf_index integer NOT NULL CHECK (leaf_index >= 0),
        tenant text,
        count bigint NOT NULL CHECK (count >= 0),
        digest char(64) NOT NULL,
        since bigint NOT NULL,
        salt char(64) NOT NULL,
        path text NOT NULL,
        PRIMARY KEY (checkpoint_seq, leaf_index)
    )
    """,
    """
    CREATE INDEX IF NOT EXISTS audit_tenant_commitment_tenant
        ON audit_tenant_commitment (tenant, checkpoint_seq)
    """,
    """
    CREATE OR REPLACE TRIGGER audit_tenant_commitment_append_only
        BEFORE UPDATE OR DELETE ON audit_tenant_commitment
        FOR EACH ROW EXECUTE FUNCTION audit_refuse_change()
    """,
    """
    CREATE OR REPLACE TRIGGER audit_tenant_commitment_no_truncate BEFORE TRUNCATE ON audit_tenant_commitment
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
_CHECKPOINT_ALL_FIELDS: Final = (*CHECKPOINT_FIELDS, *CHECKPOINT_OPTIONAL_FIELDS)
_CHECKPOINT_COLUMNS: Final = ", ".join(_CHECKPOINT_ALL_FIELDS)
_CHECKPOINT_VALUES: Final = ", ".join(["%s"] * len(_CHECKPOINT_ALL_FIELDS))
# The seal's per-tenant commitments (include/evidence/proof.py).
_SEGMENT_ROWS_SQL: Final = (
    "SELECT seq, hash, tenant FROM audit_record WHERE seq > %s AND seq <= %s ORDER BY seq"
)
_LATEST_COMMITTED_SQL: Final = """
    SELECT c.checkpoint_seq, c.last_seq FROM audit_checkpoint c
    WHERE c.tenant_root IS NOT NULL ORDER BY c.checkpoint_seq DESC LIMIT 1
"""
_KNOWN_TENANTS_SQL: Final = "SELECT tenant, since FROM audit_tenant_commitment WHERE checkpoint_seq = %s"
_TENANTS_IN_SQL: Final = "SELECT DISTINCT tenant FROM audit_record WHERE seq > %s AND seq <= %s"
_COMMITMENT_COLUMNS: Final = "checkpoint_seq, leaf_index, tenant, count, digest, since, salt, path"
_INSERT_COMMITMENT_SQL: Final = (
    f"INSERT INTO audit_tenant_commitment ({_COMMITMENT_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"  # noqa: S608
)
_TENANT_COMMITMENTS_SQL: Final = (
    f"SELECT {_COMMITMENT_COLUMNS} FROM audit_tenant_commitment"  # noqa: S608 - fixed column list
    " WHERE {tenant} AND checkpoint_seq >= %s AND checkpoint_seq <= %s ORDER BY checkpoint_seq, leaf_index"
)
_TENANT_RECORDS_SQL: Final = (
    f"SELECT {_RECORD_COLUMNS} FROM audit_record"  # noqa: S608 - the schema's own column list
    " WHERE seq > %s AND seq <= %s AND {tenant} ORDER BY seq"
)
_UNSEALED_BEFORE_SQL: Final = "SELECT count(*) FROM audit_record WHERE seq > %s AND at < %s"
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
# The verify read: ``at`` formatted by the server as :func:`include.audit.records.format_at` formats it
# (the same text for years 1000-9999; any other instant comes as a timestamp and is formatted here).
_AT_IN_RANGE: Final = "at >= '1000-01-01 00:00:00+00' AND at < '10000-01-01 00:00:00+00'"
_VERIFY_COLUMNS: Final = ", ".join(
    f"CASE WHEN {_AT_IN_RANGE} THEN to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') END,"
    f" CASE WHEN {_AT_IN_RANGE} THEN NULL ELSE at END"
    if name == "at"
    else name
    for name in RECORD_FIELDS
)
_VERIFY_RECORDS_SQL: Final = (
    f"SELECT {_VERIFY_COLUMNS} FROM audit_record WHERE seq >= %s AND seq <= %s ORDER BY seq"  # noqa: S608
)
_VERIFY_FETCH_ROWS: Final = 5_000
_PARALLEL_MIN_RECORDS: Final = 50_000
"""A verify reading at least this many records hashes them in reading processes (:data:`_READERS`)."""
_BATCH: Final = 2_000
_READERS: Final = 2
"""Reading processes of a parallel verify (reading and hashing is about three times the classifying)."""
_READ_CHUNK: Final = 10_000
"""Records per seq range a reading process takes in turn."""
_QUEUED_BATCHES: Final = 8  # at most this many batches in flight: memory stays bounded

MATCH_CORRELATION_ID: Final = "correlation id"
MATCH_RUN_ID: Final = "run id"
MATCH_TICKET_ID: Final = "ticket id"
MATCH_OBJECT_ID: Final = "object id"
MATCH_ORDER: Final = (MATCH_CORRELATION_ID, MATCH_RUN_ID, MATCH_TICKET_ID, MATCH_OBJECT_ID)
"""What :meth:`AuditStore.correlations_for` tries an identifier as, in this order (first that matches)."""

TICKETING_SYSTEMS: Final = ("request_tracker", "jira")
"""Side-effect ``system`` values whose ``object_id`` is a ticket (or an entry of one)."""


class TraceMatch(NamedTuple):
    """One run an identifier was found in: how it matched, and the run's correlation id and ids."""

    matched_as: str
    correlation_id: str | None
    dag_id: str | None
    run_id: str | None


# Fixed condition per kind of identifier: the index each one uses is named in the comment.
_MATCH_CONDITIONS: Final = {
    MATCH_CORRELATION_ID: "correlation_id = %(id)s",  # audit_record_correlation_id
    MATCH_RUN_ID: "run_id = %(id)s",  # audit_record_run_id
    MATCH_TICKET_ID: (  # audit_record_ticket_id, audit_record_object_id
        "(audit_details_field(details, 'ticket_id') = %(id)s"
        " OR (kind = 'side_effect' AND audit_details_field(details, 'object_id') = %(id)s"
        " AND audit_details_field(details, 'system') = ANY(%(ticketing)s::text[])))"
    ),
    MATCH_OBJECT_ID: (  # audit_record_object_id
        "kind = 'side_effect' AND audit_details_field(details, 'object_id') = %(id)s"
    ),
}
_MATCH_SQL: Final = (
    "SELECT correlation_id, dag_id, run_id, min(seq) AS first_seq FROM audit_record"
    " WHERE {condition}{filters} GROUP BY correlation_id, dag_id, run_id ORDER BY first_seq"
)
_RECORDS_FOR_SQL: Final = (
    f"SELECT {_RECORD_COLUMNS} FROM audit_record"  # noqa: S608 - the schema's own column list
    " WHERE (correlation_id = ANY(%(correlation_ids)s::text[])"
    " OR (run_id = ANY(%(run_ids)s::text[]) AND EXISTS ("
    " SELECT 1 FROM unnest(%(dag_ids)s::text[], %(run_ids)s::text[]) AS run (dag_id, run_id)"
    " WHERE run.run_id = audit_record.run_id AND run.dag_id IS NOT DISTINCT FROM audit_record.dag_id)))"
    "{filters} ORDER BY seq"
)


def grant_statements(*, writers: Iterable[str] = (), readers: Iterable[str] = ()) -> list[sql.Composed]:
    """What the audit tables' owner grants: ``writers`` INSERT and SELECT, ``readers`` SELECT.

    Every table of the schema, so a table added to it later is covered too; PUBLIC and the named
    roles lose everything else first (no UPDATE, DELETE, TRUNCATE, TRIGGER or REFERENCES: a
    writer's UPDATE is refused for privilege before the append-only trigger is even reached, and
    only the owner may ALTER or DROP a table). Idempotent.
    """
    writer_ids = [sql.Identifier(role) for role in writers]
    reader_ids = [sql.Identifier(role) for role in readers]
    everyone = [sql.SQL("PUBLIC"), *writer_ids, *reader_ids]
    statements = [
        sql.SQL("REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {}").format(sql.SQL(", ").join(everyone)),
        sql.SQL("REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {}").format(sql.SQL(", ").join(everyone)),
    ]
    if writer_ids:
        writers_sql = sql.SQL(", ").join(writer_ids)
        statements.append(
            sql.SQL("GRANT INSERT, SELECT ON ALL TABLES IN SCHEMA public TO {}").format(writers_sql)
        )
        statements.append(
            sql.SQL("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {}").format(writers_sql)
        )
    if reader_ids:
        statements.append(
            sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {}").format(
                sql.SQL(", ").join(reader_ids)
            )
        )
    return statements


def _filters(domain: str | None, tenant: str | None) -> str:
    """Fixed SQL fragments for the given filters (their values are parameters)."""
    return (" AND domain = %(domain)s" if domain is not None else "") + (
        " AND tenant = %(tenant)s" if tenant is not None else ""
    )


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


def _verify_row_to_record(row: tuple[Any, ...]) -> dict[str, Any]:
    """A row of :data:`_VERIFY_RECORDS_SQL` as :func:`_row_to_record` reads the stored row."""
    seq, at_text, at, *rest = row
    record = dict(zip(RECORD_FIELDS, (seq, at_text if at_text is not None else at, *rest), strict=True))
    if at_text is None and isinstance(at, datetime):
        record["at"] = format_at(at)
    with contextlib.suppress(TypeError, ValueError):
        record["details"] = json.loads(record["details"])
    return record


def _hashed_rows(cursor: psycopg.ServerCursor[tuple[Any, ...]]) -> Iterator[HashedRecord]:
    while rows := cursor.fetchmany(_VERIFY_FETCH_ROWS):
        for row in rows:
            yield hash_record(_verify_row_to_record(row))


def _verify_reader(
    dsn: str, connect_timeout: int, snapshot: str, chunks: list[tuple[int, int]], out: Any
) -> None:
    """A reading process of a parallel verify: in snapshot ``snapshot``, hash the records of each
    ``(first, last)`` seq range of ``chunks``, in order.

    Puts lists of :func:`include.audit.verify.hash_record` results on ``out`` and ``None`` after each
    chunk; on an error, its type and message (never the DSN) instead, and stops.
    """
    try:
        with (
            psycopg.connect(
                dsn, autocommit=True, connect_timeout=connect_timeout, application_name="audit-verify"
            ) as conn,
            conn.transaction(),
        ):
            conn.execute(_SNAPSHOT_SQL)
            conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot)))
            for number, (first, last) in enumerate(chunks):
                with conn.cursor(name=f"audit_verify_{number}") as cursor:
                    cursor.execute(_VERIFY_RECORDS_SQL, (first, last))
                    batch: list[HashedRecord] = []
                    for hashed in _hashed_rows(cursor):
                        batch.append(hashed)
                        if len(batch) >= _BATCH:
                            out.put(batch)
                            batch = []
                    if batch:
                        out.put(batch)
                out.put(None)
    except Exception as exc:  # handed to the parent, which raises it
        out.put(f"{type(exc).__name__}: {exc}")


def _cores_to_spare() -> bool:
    """More than one CPU, and a process that may start children (a daemonic one may not)."""
    return (os.cpu_count() or 1) > 1 and not multiprocessing.current_process().daemon


def _chunks(first: int, last: int, size: int) -> list[tuple[int, int]]:
    """``(first, last)`` seq ranges of ``size`` covering ``first``..``last``; the final one open-ended."""
    bounds = list(range(first, max(last, first) + 1, size))
    return [(low, low + size - 1) for low in bounds[:-1]] + [(bounds[-1], _MAX_SEQ)]


def _received(outs: list[Any], readers: list[Any], chunks: int) -> Iterator[HashedRecord]:
    """What the readers put on their queues, chunk ``i`` from reader ``i % len(readers)``: the
    records in ``seq`` order, as one reader would have read them."""
    for number in range(chunks):
        out, reader = outs[number % len(outs)], readers[number % len(readers)]
        while True:
            try:
                item = out.get(timeout=5)
            except queue.Empty:
                if not reader.is_alive():
                    raise RuntimeError(
                        "audit verify: a reading process ended without finishing "
                        f"(exit code {reader.exitcode})"
                    ) from None
                continue
            if item is None:
                break
            if isinstance(item, str):
                raise RuntimeError(f"audit verify: a reading process failed: {item}")
            yield from item


def _row_to_checkpoint(row: tuple[Any, ...]) -> dict[str, Any]:
    checkpoint = dict(zip(_CHECKPOINT_ALL_FIELDS, row, strict=True))
    for name in CHECKPOINT_OPTIONAL_FIELDS:  # absent, not null: the form that was signed
        if checkpoint[name] is None:
            del checkpoint[name]
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

    def ensure_schema(
        self, *, owner: str | None = None, writers: Iterable[str] = (), readers: Iterable[str] = ()
    ) -> None:
        """Create the tables, indexes and append-only triggers if missing; safe to run concurrently.

        Set-up only, never on a writer's path: run it as the tables' owner (or as a superuser
        with ``owner``), then the writers get INSERT and SELECT and the readers SELECT, nothing
        else (see :func:`grant_statements`).

        :param owner: the role that is to own the tables (``SET LOCAL ROLE``); ``None``: the
            connection's own role.
        :param writers: roles that append records and checkpoints.
        :param readers: roles that only read (``audit trace``, ``audit verify``).
        """
        grants = grant_statements(writers=writers, readers=readers)
        with self._lock:
            conn = self._connection()
            with conn.transaction():
                if owner is not None:
                    conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(owner)))
                conn.execute(_LOCK_SQL, (CHAIN_LOCK,))
                for statement in _SCHEMA:
                    conn.execute(statement)
                for grant in grants:
                    conn.execute(grant)

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

    def seal(self, signer: CheckpointSigner) -> Checkpoint | None:
        """Sign a checkpoint over every record appended so far.

        :param signer: the sealing step's signer (:mod:`include.audit.signing`; its private key is
            never seen here). Its key id is fetched before the chain is locked; the signature itself
            is made under the lock (one KMS round trip at most, once per seal).
        :returns: the new checkpoint, or ``None`` when nothing was appended since the last one.
        """
        if not signer.key_id:
            raise ValueError("signer: no key id")
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
                rows = conn.execute(_SEGMENT_ROWS_SQL, (last_seq, head_seq)).fetchall()
                root, commitments = commit_segment(
                    number + 1, rows, self._known_tenants(conn, number, last_seq)
                )
                checkpoint = build_checkpoint(
                    checkpoint_seq=number + 1,
                    last_seq=head_seq,
                    last_hash=head_hash,
                    count=count + len(rows),
                    at=format_at(now),
                    prev_checkpoint_signature=prev_signature,
                    signer=signer,
                    tenant_root=root,
                )
                values = {**checkpoint.to_dict(), "at": now}
                conn.execute(
                    _INSERT_CHECKPOINT_SQL, tuple(values.get(name) for name in _CHECKPOINT_ALL_FIELDS)
                )
                with conn.cursor() as cursor:
                    cursor.executemany(
                        _INSERT_COMMITMENT_SQL,
                        [
                            (
                                c.checkpoint_seq,
                                c.index,
                                c.tenant,
                                c.count,
                                c.digest,
                                c.since,
                                c.salt,
                                json.dumps(c.path),
                            )
                            for c in commitments
                        ],
                    )
        return checkpoint

    @staticmethod
    def _known_tenants(
        conn: psycopg.Connection[tuple[Any, ...]], number: int, last_seq: int
    ) -> dict[Any, int]:
        """``{tenant: since}`` of every tenant with a leaf so far (every checkpoint carries each one on).

        The latest checkpoint with commitments names them; the tenants of records sealed after it
        by checkpoints without commitments (sealed before them: a one-time scan at the upgrade)
        join them as new.
        """
        latest = conn.execute(_LATEST_COMMITTED_SQL).fetchone()
        committed, committed_last_seq = latest if latest else (0, 0)
        known: dict[Any, int] = (
            dict(conn.execute(_KNOWN_TENANTS_SQL, (committed,)).fetchall()) if latest else {}
        )
        if committed != number and last_seq > committed_last_seq:
            for (tenant,) in conn.execute(_TENANTS_IN_SQL, (committed_last_seq, last_seq)).fetchall():
                known.setdefault(tenant, number + 1)
        return known

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

    def _correlations(
        self,
        conn: psycopg.Connection[tuple[Any, ...]],
        identifier: str,
        domain: str | None,
        tenant: str | None,
    ) -> list[TraceMatch]:
        params = {"id": identifier, "ticketing": list(TICKETING_SYSTEMS), "domain": domain, "tenant": tenant}
        for matched_as in MATCH_ORDER:
            query = _MATCH_SQL.format(
                condition=_MATCH_CONDITIONS[matched_as], filters=_filters(domain, tenant)
            )
            rows = conn.execute(query, params).fetchall()
            if rows:
                return [TraceMatch(matched_as, *row[:3]) for row in rows]
        return []

    def _records_for(
        self,
        conn: psycopg.Connection[tuple[Any, ...]],
        correlation_ids: Iterable[str],
        runs: Iterable[tuple[str | None, str]],
        domain: str | None,
        tenant: str | None,
    ) -> list[dict[str, Any]]:
        pairs = list(runs)
        params = {
            "correlation_ids": list(correlation_ids),
            "dag_ids": [dag_id for dag_id, _ in pairs],
            "run_ids": [run_id for _, run_id in pairs],
            "domain": domain,
            "tenant": tenant,
        }
        with conn.cursor(name="audit_trace") as cursor:
            cursor.itersize = _FETCH_ROWS
            cursor.execute(_RECORDS_FOR_SQL.format(filters=_filters(domain, tenant)), params)
            return [_row_to_record(row) for row in cursor]

    def correlations_for(
        self, identifier: str, *, domain: str | None = None, tenant: str | None = None
    ) -> list[TraceMatch]:
        """The runs ``identifier`` names, tried as each of :data:`MATCH_ORDER` until one matches.

        A ticket id matches ``details.ticket_id`` of any record and the ``object_id`` of a side
        effect of a :data:`TICKETING_SYSTEMS` system; an object id, the ``object_id`` of any side
        effect (an ARN, a security-group id). Only records in ``domain`` / ``tenant`` (when given)
        count, so a per-tenant view never names another tenant's runs.

        :returns: one :class:`TraceMatch` per (correlation id, dag id, run id), in order of their
            first record; empty when nothing matches.
        """
        with self._lock:
            conn = self._connection()
            with conn.transaction():
                conn.execute(_SNAPSHOT_SQL)
                return self._correlations(conn, identifier, domain, tenant)

    def records_for(
        self,
        correlation_ids: Iterable[str],
        runs: Iterable[tuple[str | None, str]] = (),
        *,
        domain: str | None = None,
        tenant: str | None = None,
    ) -> list[dict[str, Any]]:
        """Every record with one of ``correlation_ids`` or of one of ``runs`` (``(dag_id, run_id)``
        pairs), in ``domain`` / ``tenant`` when given, in ``seq`` order, as stored."""
        with self._lock:
            conn = self._connection()
            with conn.transaction():
                conn.execute(_SNAPSHOT_SQL)
                return self._records_for(conn, correlation_ids, runs, domain, tenant)

    def trace(
        self, identifier: str, *, domain: str | None = None, tenant: str | None = None
    ) -> tuple[list[TraceMatch], list[dict[str, Any]]]:
        """:meth:`correlations_for` then :meth:`records_for` of what matched, from one snapshot.

        :returns: the matches and the records of every matched correlation id and run.
        """
        with self._lock:
            conn = self._connection()
            with conn.transaction():
                conn.execute(_SNAPSHOT_SQL)
                matches = self._correlations(conn, identifier, domain, tenant)
                if not matches:
                    return [], []
                correlation_ids = list(dict.fromkeys(m.correlation_id for m in matches if m.correlation_id))
                runs = list(dict.fromkeys((m.dag_id, m.run_id) for m in matches if m.run_id is not None))
                return matches, self._records_for(conn, correlation_ids, runs, domain, tenant)

    def tenant_evidence(
        self, tenant: str | None, *, start: datetime, end: datetime
    ) -> tuple[list[dict[str, Any]], list[TenantCommitment], list[dict[str, Any]], int]:
        """What an evidence pack of ``tenant`` for ``start`` <= at < ``end`` is built from, one snapshot.

        :returns: every checkpoint; the tenant's commitments and its records in the segments that
            cover the period (:func:`include.evidence.proof.covering_checkpoints`); and how many
            records (any tenant's) in the period are not sealed yet.
        """
        condition = "tenant IS NULL" if tenant is None else "tenant = %s"
        extra: tuple[Any, ...] = () if tenant is None else (tenant,)
        with self._lock:
            conn = self._connection()
            with conn.transaction():
                conn.execute(_SNAPSHOT_SQL)
                checkpoints = [_row_to_checkpoint(row) for row in conn.execute(_SELECT_CHECKPOINTS_SQL)]
                newest = checkpoints[-1]["last_seq"] if checkpoints else 0
                row = conn.execute(_UNSEALED_BEFORE_SQL, (newest, end)).fetchone()
                unsealed = int(row[0]) if row else 0
                cover = covering_checkpoints(checkpoints, start=format_at(start), end=format_at(end))
                if cover is None:
                    return checkpoints, [], [], unsealed
                first, last = cover
                last_seqs = {cp["checkpoint_seq"]: cp["last_seq"] for cp in checkpoints}
                first_seq, last_seq = last_seqs.get(first - 1, 0), last_seqs[last]
                commitments = [
                    TenantCommitment(
                        checkpoint_seq=r[0],
                        index=r[1],
                        tenant=r[2],
                        count=r[3],
                        digest=r[4],
                        since=r[5],
                        salt=r[6],
                        path=tuple(json.loads(r[7])),
                    )
                    for r in conn.execute(
                        _TENANT_COMMITMENTS_SQL.format(tenant=condition), (*extra, first, last)
                    )
                ]
                with conn.cursor(name="audit_evidence") as cursor:
                    cursor.itersize = _FETCH_ROWS
                    cursor.execute(
                        _TENANT_RECORDS_SQL.format(tenant=condition), (first_seq, last_seq, *extra)
                    )
                    records = [_row_to_record(row) for row in cursor]
                return checkpoints, commitments, records, unsealed

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

    def verify(
        self, keys: CheckpointKeys | None, *, after_checkpoint: int = 0, parallel: bool | None = None
    ) -> VerifyReport:
        """Verify the log against its checkpoints, streamed (:func:`include.audit.verify.verify_stream`).

        One snapshot; records come through a server-side cursor in ``seq`` order, so memory is
        bounded by the largest sealed segment, not by the log. Hashing each record (decoding,
        canonical JSON, SHA-256) is about three quarters of the work: for a large read two reading
        processes do it, taking seq ranges in turn from the same snapshot (``pg_export_snapshot``),
        while this one classifies the records in ``seq`` order through bounded queues; the
        verdicts are the same either way.

        :param after_checkpoint: 0: every record (a full verify). N: only the records after
            checkpoint N's ``last_seq`` (an incremental verify, anchored by N's signed hash; every
            checkpoint's place in the chain is still checked, signatures from N on).
        :param parallel: ``None``: reading processes when at least 50,000 records are to be read,
            more than one CPU is there and this process may start children (on a saturated
            machine they can cost more than they save: ``False`` then); ``True``/``False``: force.
        :raises include.audit.verify.IncrementalBaseError: checkpoint N is missing or not trusted.
        :raises RuntimeError: the second process failed (its error named).
        """
        with self._lock:
            conn = self._connection()
            with conn.transaction():
                conn.execute(_SNAPSHOT_SQL)
                checkpoints = [_row_to_checkpoint(row) for row in conn.execute(_SELECT_CHECKPOINTS_SQL)]
                first = 1
                if after_checkpoint:
                    sealed = [
                        cp["last_seq"] for cp in checkpoints if cp["checkpoint_seq"] == after_checkpoint
                    ]
                    first = (sealed[0] + 1) if len(sealed) == 1 else _MAX_SEQ  # else: refused below
                if parallel is None:
                    row = conn.execute("SELECT max(seq) FROM audit_record").fetchone()
                    to_read = (row[0] if row and row[0] is not None else 0) - first + 1
                    parallel = to_read >= _PARALLEL_MIN_RECORDS and _cores_to_spare()
                if parallel:
                    return self._verify_parallel(conn, checkpoints, keys, first, after_checkpoint)
                with conn.cursor(name="audit_verify") as cursor:
                    cursor.execute(_VERIFY_RECORDS_SQL, (first, _MAX_SEQ))
                    return verify_stream_hashed(
                        _hashed_rows(cursor), checkpoints, keys, after_checkpoint=after_checkpoint
                    )

    def _verify_parallel(
        self,
        conn: psycopg.Connection[tuple[Any, ...]],
        checkpoints: list[dict[str, Any]],
        keys: CheckpointKeys | None,
        first: int,
        after_checkpoint: int,
    ) -> VerifyReport:
        row = conn.execute("SELECT pg_export_snapshot(), max(seq) FROM audit_record").fetchone()
        assert row is not None
        snapshot, last = row[0], row[1] if row[1] is not None else first
        chunks = _chunks(first, last, _READ_CHUNK)
        spawn = multiprocessing.get_context("spawn")
        outs = [spawn.Queue(maxsize=_QUEUED_BATCHES) for _ in range(_READERS)]
        readers = [
            spawn.Process(
                target=_verify_reader,
                args=(self.dsn, self.connect_timeout, snapshot, chunks[number::_READERS], outs[number]),
                name=f"audit-verify-reader-{number}",
                daemon=True,
            )
            for number in range(_READERS)
        ]
        for reader in readers:
            reader.start()
        try:
            return verify_stream_hashed(
                _received(outs, readers, len(chunks)), checkpoints, keys, after_checkpoint=after_checkpoint
            )
        finally:
            for reader, out in zip(readers, outs, strict=True):
                if reader.is_alive():
                    reader.terminate()
                reader.join(10)
                out.close()
                out.cancel_join_thread()

    def verify_in_memory(self, keys: CheckpointKeys | None) -> VerifyReport:
        """The whole log read into memory, then :func:`include.audit.verify.verify` (the reference)."""
        records, checkpoints = self.snapshot()
        return verify(records, checkpoints, keys)
