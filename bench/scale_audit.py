"""The audit log at scale (issue 24): verify, incremental verify, trace and append at three sizes.

A PostgreSQL cluster of its own (profile ``scale-audit``, 127.0.0.1:41472, started fresh and stopped
at the end; like every local cluster here it runs with fsync and synchronous_commit off). The
history is generated, not replayed: runs of real-looking records (a trigger, an approval asked and
answered, side effects on tickets and cloud resources, the task's end) over a year, across 300
tenants, chained with the production code (:func:`include.audit.records.link_record`: the same
canonical JSON and SHA-256), written by ``COPY``, and sealed every :data:`SEAL_EVERY` records
(about 15 minutes of a 10,000-runs-a-day platform) by checkpoints signed with a real Ed25519 key
(:func:`include.audit.records.build_checkpoint`). The log grows in place from one size to the next.

Per size (``<label>`` is ``100k``, ``1M``, ``3M``...; every value a plain number):

``<label>_records``                   records in the log
``<label>_generate_s``                seconds to generate and COPY the records added for this size
``<label>_verify_full_s``             ``audit verify`` (streamed, full) in a fresh process, seconds
``<label>_verify_records_per_s``      records verified per second
``<label>_verify_peak_rss_mb``        peak RSS of that verifying process, MB
``<label>_verify_reader_peak_rss_mb`` peak RSS of the largest of its reading processes, MB (0: none;
                                      :meth:`AuditStore.verify` hashes in two above 50,000 records)
``<label>_verify_incremental_s``      incremental verify after 1,000 new records (appended, sealed)
``<label>_trace_p50_ms``              ``audit trace <ticket id>`` (lookup and every record), p50 ms
``<label>_trace_index_only``          1 when EXPLAIN shows no sequential scan for the trace queries
``<label>_append_8_writers_p50_ms``   :meth:`AuditStore.append` p50 with 8 writer processes, ms

and once: ``empty_append_8_writers_p50_ms`` (the same on an empty table), ``seal_every``,
``ed25519_checkpoints`` (checkpoints in the largest log).

``python -m bench.scale_audit [--sizes 100000 1000000 3000000] [--json FILE]``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import random
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from devstack import postgres
from devstack.config import Profile
from include.audit.records import (
    CHECKPOINT_FIELDS,
    GENESIS_HASH,
    RECORD_FIELDS,
    build_checkpoint,
    canonical_json,
    format_at,
    link_record,
    validate_event,
)
from include.audit.signing import CheckpointKeys, Ed25519Signer

PROFILE: Final = Profile(name="scale-audit", api_port=0, pg_port=41472, moto_port=0, smtp_port=0)
DEFAULT_SIZES: Final = (100_000, 1_000_000, 3_000_000)
SEAL_EVERY: Final = 500
INCREMENT: Final = 1_000
WRITERS: Final = 8
PER_WRITER: Final = 150
TRACE_SAMPLES: Final = 25
TENANTS: Final = tuple(f"tenant-{n:03d}" for n in range(300))
DOMAINS: Final = ("support", "hr", "invoicing", "implementation", "soc")
START: Final = datetime(2026, 1, 1, tzinfo=UTC)
YEAR_SECONDS: Final = 365 * 24 * 3600


def label(size: int) -> str:
    """``100k``, ``1M``, ``2.5M``: the key prefix of a size."""
    if size >= 1_000_000:
        return f"{size / 1_000_000:g}M"
    if size >= 1_000:
        return f"{size / 1_000:g}k"
    return str(size)


def _run_events(rng: random.Random, run: int) -> list[dict[str, Any]]:
    """One workflow run's records (validated events), as the platform writes them."""
    domain = DOMAINS[run % len(DOMAINS)]
    tenant = TENANTS[rng.randrange(len(TENANTS))]
    dag_id = f"{domain}_workflow_{run % 7}"
    run_id = f"scheduled__{run:09d}"
    ticket = f"RT-{run}"
    base = {
        "domain": domain,
        "tenant": tenant,
        "correlation_id": f"corr-{run:09d}",
        "dag_id": dag_id,
        "run_id": run_id,
    }
    events: list[dict[str, Any]] = [
        {**base, "kind": "run.triggered", "actor": "scheduler", "details": {"ticket_id": ticket}},
        {
            **base,
            "kind": "side_effect",
            "actor": "worker",
            "task_id": "update_ticket",
            "subject": ticket,
            "details": {"system": "request_tracker", "operation": "comment", "object_id": ticket},
        },
    ]
    if run % 3 == 0:
        events += [
            {
                **base,
                "kind": "approval.requested",
                "actor": "worker",
                "task_id": "approve",
                "details": {"ticket_id": ticket, "approvers": ["cab"]},
            },
            {
                **base,
                "kind": "approval.answered",
                "actor": f"user{rng.randrange(50)}",
                "task_id": "approve",
                "details": {"ticket_id": ticket, "decision": "approve", "second_factor": "totp"},
            },
            {
                **base,
                "kind": "side_effect",
                "actor": "worker",
                "task_id": "apply",
                "subject": f"sg-{run:012x}",
                "details": {"system": "aws", "operation": "authorize_ingress", "object_id": f"sg-{run:012x}"},
            },
        ]
    events.append(
        {
            **base,
            "kind": "task.finished",
            "actor": "worker",
            "task_id": "close",
            "details": {"state": "success", "try_number": 1, "duration_seconds": round(rng.random() * 30, 3)},
        }
    )
    return [validate_event(event) for event in events]


class Generator:
    """Extends a log in PostgreSQL with generated history: chained, COPYed, sealed."""

    def __init__(self, dsn: str, signer: Ed25519Signer, seed: int = 24) -> None:
        self.dsn = dsn
        self.signer = signer
        self.rng = random.Random(seed)
        self.seq = 0
        self.hash = GENESIS_HASH
        self.run = 0
        self.checkpoint = 0
        self.checkpoint_signature = GENESIS_HASH
        self.pending: list[dict[str, Any]] = []

    def _events(self) -> Iterator[dict[str, Any]]:
        while True:
            if not self.pending:
                self.run += 1
                self.pending = _run_events(self.rng, self.run)
            yield self.pending.pop(0)

    def grow_to(self, size: int, spread_until: int) -> float:
        """Append records until the log holds ``size``; their times spread over the year as if
        the log will hold ``spread_until``. Returns seconds taken."""
        import psycopg

        started = time.perf_counter()
        step = YEAR_SECONDS / max(spread_until, 1)
        events = self._events()
        columns = ", ".join(RECORD_FIELDS)
        checkpoints: list[tuple[Any, ...]] = []
        with psycopg.connect(self.dsn, autocommit=False) as conn:
            with conn.cursor() as cursor, cursor.copy(f"COPY audit_record ({columns}) FROM STDIN") as copy:
                while self.seq < size:
                    self.seq += 1
                    moment = START + timedelta(seconds=self.seq * step)
                    record = link_record(
                        next(events), seq=self.seq, at=format_at(moment), prev_hash=self.hash
                    )
                    self.hash = record.hash
                    values = record.to_dict()
                    values["at"] = moment
                    values["details"] = canonical_json(record.details)
                    copy.write_row(tuple(values[name] for name in RECORD_FIELDS))
                    if self.seq % SEAL_EVERY == 0 or self.seq == size:
                        checkpoints.append(self._seal(moment))
            names = ", ".join(CHECKPOINT_FIELDS)
            marks = ", ".join(["%s"] * len(CHECKPOINT_FIELDS))
            with conn.cursor() as cursor:
                cursor.executemany(f"INSERT INTO audit_checkpoint ({names}) VALUES ({marks})", checkpoints)  # noqa: S608
            conn.commit()
        return time.perf_counter() - started

    def _seal(self, moment: datetime) -> tuple[Any, ...]:
        self.checkpoint += 1
        checkpoint = build_checkpoint(
            checkpoint_seq=self.checkpoint,
            last_seq=self.seq,
            last_hash=self.hash,
            count=self.seq,
            at=format_at(moment),
            prev_checkpoint_signature=self.checkpoint_signature,
            signer=self.signer,
        )
        self.checkpoint_signature = checkpoint.signature
        values = {**checkpoint.to_dict(), "at": moment}
        return tuple(values[name] for name in CHECKPOINT_FIELDS)


def _verify_child(dsn: str, pem: bytes, results: Any) -> None:
    """A fresh process: a full streamed verify, its time and its own peak RSS."""
    from include.audit.signing import load_public_key
    from include.audit.store import AuditStore

    keys = CheckpointKeys.of(load_public_key(pem, "bench key"))
    started = time.perf_counter()
    with AuditStore(dsn) as store:
        report = store.verify(keys)
    seconds = time.perf_counter() - started
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    readers_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # the largest reading process
    results.put(
        {
            "seconds": seconds,
            "ok": report.ok,
            "records": report.records,
            "peak_kb": peak_kb,
            "readers_kb": readers_kb,
        }
    )


def _writer(dsn: str, writer: int, barrier: Any, results: Any) -> None:
    from include.audit.store import AuditStore

    with AuditStore(dsn) as store:
        store.head()
        barrier.wait(120)
        latencies = []
        for n in range(PER_WRITER):
            event = {
                "kind": "task.finished",
                "actor": f"worker:{writer}",
                "domain": "support",
                "tenant": TENANTS[writer],
                "correlation_id": f"bench-{writer}-{n}",
                "details": {"state": "success", "n": n},
            }
            started = time.perf_counter()
            store.append(event)
            latencies.append(time.perf_counter() - started)
    results.put(latencies)


def append_p50_ms(dsn: str) -> float:
    """p50 of :meth:`AuditStore.append` with :data:`WRITERS` processes appending at once."""
    spawn = multiprocessing.get_context("spawn")
    barrier, results = spawn.Barrier(WRITERS), spawn.Queue()
    workers = [spawn.Process(target=_writer, args=(dsn, n, barrier, results)) for n in range(WRITERS)]
    for worker in workers:
        worker.start()
    latencies = [value for _ in workers for value in results.get(timeout=600)]
    for worker in workers:
        worker.join(60)
    return statistics.median(latencies) * 1000


def _verify_full(dsn: str, pem: bytes) -> dict[str, Any]:
    spawn = multiprocessing.get_context("spawn")
    results = spawn.Queue()
    child = spawn.Process(target=_verify_child, args=(dsn, pem, results))
    child.start()
    outcome: dict[str, Any] = results.get(timeout=3600)
    child.join(60)
    return outcome


def _trace(dsn: str, generator: Generator) -> tuple[float, bool]:
    """p50 ms of ``trace`` for random existing tickets, and whether EXPLAIN avoids sequential scans."""
    import psycopg

    from include.audit.store import (
        _MATCH_CONDITIONS,
        _MATCH_SQL,
        MATCH_TICKET_ID,
        TICKETING_SYSTEMS,
        AuditStore,
    )

    rng = random.Random(7)
    tickets = [f"RT-{rng.randrange(1, generator.run)}" for _ in range(TRACE_SAMPLES)]
    times = []
    with AuditStore(dsn) as store:
        store.trace(tickets[0])  # connected, plan cached
        for ticket in tickets:
            started = time.perf_counter()
            matches, records = store.trace(ticket)
            times.append(time.perf_counter() - started)
            if not matches or not records:
                raise RuntimeError(f"trace {ticket}: nothing found in the generated log")
    query = _MATCH_SQL.format(condition=_MATCH_CONDITIONS[MATCH_TICKET_ID], filters="")
    with psycopg.connect(dsn) as conn:
        plan = conn.execute(
            f"EXPLAIN {query}", {"id": tickets[0], "ticketing": list(TICKETING_SYSTEMS)}
        ).fetchall()
    text = "\n".join(row[0] for row in plan)
    return statistics.median(times) * 1000, "Seq Scan" not in text


def _incremental(dsn: str, signer: Ed25519Signer, keys: CheckpointKeys) -> float:
    """Append :data:`INCREMENT` records through the store, seal, and time the incremental verify."""
    from include.audit.store import AuditStore

    with AuditStore(dsn) as store:
        store.seal(signer)
        for n in range(INCREMENT):
            store.append({"kind": "task.finished", "actor": "worker", "details": {"n": n}})
        checkpoint = store.seal(signer)
        assert checkpoint is not None
    started = time.perf_counter()
    with AuditStore(dsn) as store:
        report = store.verify(keys, after_checkpoint=checkpoint.checkpoint_seq - 1)
    seconds = time.perf_counter() - started
    if not report.ok or report.records != INCREMENT:
        raise RuntimeError(f"incremental verify: {report}")
    return seconds


def _sync_generator(dsn: str, generator: Generator) -> None:
    """Pick up the head and the checkpoint chain after appends and seals made by the store."""
    import psycopg

    with psycopg.connect(dsn) as conn:
        seq, head = conn.execute(
            "SELECT seq, hash FROM audit_record ORDER BY seq DESC LIMIT 1"
        ).fetchone() or (
            0,
            GENESIS_HASH,
        )
        last = conn.execute(
            "SELECT checkpoint_seq, last_seq, signature FROM audit_checkpoint"
            " ORDER BY checkpoint_seq DESC LIMIT 1"
        ).fetchone()
    generator.seq, generator.hash = seq, head.strip()
    if last is not None:
        generator.checkpoint, generator.checkpoint_signature = last[0], last[2]


def run(sizes: Sequence[int] = DEFAULT_SIZES, *, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Measure at each size (ascending; the log grows in place); see the module doc for the keys."""
    from include.audit.store import AuditStore

    sizes = sorted(sizes)
    signer = Ed25519Signer.generate()
    keys = CheckpointKeys.of(signer.public_key)
    pem = signer.public_key_pem()
    result: dict[str, Any] = {"seal_every": SEAL_EVERY}
    postgres.ensure_installed()
    postgres.initialise(PROFILE, fresh=True)
    postgres.start(PROFILE)
    try:
        postgres.create_database(PROFILE, "audit_empty")
        postgres.create_database(PROFILE, "audit_scale")
        empty = postgres.dsn(PROFILE, postgres.DB_USER, "audit_empty")
        dsn = postgres.dsn(PROFILE, postgres.DB_USER, "audit_scale")
        for target in (empty, dsn):
            with AuditStore(target) as store:
                store.ensure_schema()
        result["empty_append_8_writers_p50_ms"] = round(append_p50_ms(empty), 3)
        log(f"empty table: append p50 with {WRITERS} writers {result['empty_append_8_writers_p50_ms']} ms")
        generator = Generator(dsn, signer)
        for size in sizes:
            name = label(size)
            _sync_generator(dsn, generator)
            seconds = generator.grow_to(size, spread_until=sizes[-1])
            import psycopg

            with psycopg.connect(dsn, autocommit=True) as conn:  # as autovacuum would, after a bulk load
                conn.execute("VACUUM ANALYZE audit_record")
            result[f"{name}_generate_s"] = round(seconds, 1)
            log(f"{name}: generated and COPYed to {size} records in {seconds:.1f} s")
            full = _verify_full(dsn, pem)
            if not full["ok"]:
                raise RuntimeError(f"{name}: the generated log does not verify")
            result[f"{name}_records"] = full["records"]
            result[f"{name}_verify_full_s"] = round(full["seconds"], 2)
            result[f"{name}_verify_records_per_s"] = round(full["records"] / full["seconds"])
            result[f"{name}_verify_peak_rss_mb"] = round(full["peak_kb"] / 1024, 1)
            result[f"{name}_verify_reader_peak_rss_mb"] = round(full["readers_kb"] / 1024, 1)
            rate, peak = result[f"{name}_verify_records_per_s"], result[f"{name}_verify_peak_rss_mb"]
            reader = result[f"{name}_verify_reader_peak_rss_mb"]
            log(
                f"{name}: full verify {full['seconds']:.1f} s ({rate} records/s), peak RSS {peak} MB"
                f" (a reading process: {reader} MB)"
            )
            incremental = result[f"{name}_verify_incremental_s"] = round(_incremental(dsn, signer, keys), 3)
            log(f"{name}: incremental verify after {INCREMENT} new records {incremental} s")
            p50, index_only = _trace(dsn, generator)
            result[f"{name}_trace_p50_ms"] = round(p50, 2)
            result[f"{name}_trace_index_only"] = int(index_only)
            log(f"{name}: trace p50 {p50:.2f} ms, index scans only: {index_only}")
            result[f"{name}_append_8_writers_p50_ms"] = round(append_p50_ms(dsn), 3)
            log(f"{name}: append p50 with {WRITERS} writers {result[f'{name}_append_8_writers_p50_ms']} ms")
        result["ed25519_checkpoints"] = generator.checkpoint
    finally:
        postgres.stop(PROFILE)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scale_audit", description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES))
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    if any(size < SEAL_EVERY for size in args.sizes):
        parser.error(f"--sizes: each at least {SEAL_EVERY}")
    result = run(args.sizes)
    text = json.dumps(result, indent=2, sort_keys=True)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
