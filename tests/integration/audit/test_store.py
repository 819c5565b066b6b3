"""The audit store on a real PostgreSQL: 8 processes appending at once keep one gapless chain, a row
changed behind the store's back is named, and sealed segments land in S3 under Object Lock.

Runs on a PostgreSQL cluster of its own (profile ``audit-itest``, 127.0.0.1:25472), started fresh
for this module and stopped at its end; never the shared stacks. One database per test. S3 is an
in-process moto server. Append latency (the audit overhead per task) is printed, single writer and
under 8 writers: that cluster runs with fsync and synchronous_commit off, as every local cluster of
this project does, so the figures are the lock-and-round-trip cost, not a disk flush.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import random
import re
import statistics
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import boto3
import psycopg
import pytest
from botocore.exceptions import ClientError

from devstack import postgres
from devstack.config import HOST, Profile
from include.audit.export import (
    AuditExportError,
    ensure_locked_bucket,
    export_sealed_segments,
    read_exported_segments,
)
from include.audit.records import GENESIS_HASH, build_checkpoint, canonical_json, record_hash
from include.audit.signing import HMAC_SHA256, CheckpointKeys, Ed25519Signer, hmac_sha256
from include.audit.store import AuditStore
from include.audit.verify import DELETED, MODIFIED, REORDERED, TRUNCATED, verify
from include.cli.__main__ import main as cli_main
from tests.support.stores import postgres_cluster

PROFILE = Profile(name="audit-itest", api_port=0, pg_port=25472, moto_port=0, smtp_port=0)
SIGNER = Ed25519Signer.generate()
KEYS = CheckpointKeys.of(SIGNER.public_key)
WRITERS = 8
PER_WRITER = 500  # the single writer's latency sample
# Appends per writer in the concurrent test, 2,000 in all. Every one of them is contended (p50 ~8x
# the single writer's: each waits for the others' turns on the chain lock), so a writer that skipped
# or lost the lock meets another within its first appends (a duplicate seq or prev_hash: the writer
# fails, and with it the test); 4,000 proved nothing 2,000 do not and took twice as long (9.7 s on an
# idle 2-core machine, ~2 min on a loaded one). bench/scale_audit.py measures the 8-writer latency.
CONCURRENT_PER_WRITER = 250
START_TIMEOUT = 120.0
REGION = "eu-west-1"


@pytest.fixture(scope="module")
def cluster() -> Iterator[Profile]:
    with postgres_cluster(PROFILE):
        yield PROFILE


def _database(profile: Profile, name: str) -> str:
    postgres.create_database(profile, name)
    return postgres.dsn(profile, postgres.DB_USER, name)


@pytest.fixture
def store(cluster: Profile, request: pytest.FixtureRequest) -> Iterator[AuditStore]:
    """An empty audit store in a database of the test's own."""
    digest = hashlib.sha256(request.node.name.encode()).hexdigest()[:8]  # parametrized ids differ at the end
    name = "audit_" + re.sub(r"[^a-z0-9]+", "_", request.node.name.lower())[:32] + "_" + digest
    with AuditStore(_database(cluster, name)) as audit:
        audit.ensure_schema()
        audit.ensure_schema()  # idempotent
        yield audit


def _event(writer: int, n: int) -> dict[str, Any]:
    return {
        "kind": "side_effect",
        "actor": f"worker:{writer}",
        "domain": "network",
        "tenant": "acme",
        "correlation_id": str(uuid.uuid4()),
        "dag_id": "firewall_change",
        "run_id": f"manual__2026-03-04T05:06:{writer:02d}+00:00",
        "task_id": "apply",
        "subject": f"aws_security_group.web-{writer}",
        "details": {"writer": writer, "n": n, "change": {"add": 1, "destroy": 0}, "note": "für prod"},
    }


def _percentiles(seconds: list[float]) -> tuple[float, float]:
    cuts = statistics.quantiles([s * 1000 for s in seconds], n=100)
    return cuts[49], cuts[94]


def _writer(dsn: str, writer: int, count: int, barrier: Any, results: Any) -> None:
    """One worker process: append ``count`` records as fast as it can, timing each append."""
    with AuditStore(dsn) as audit:
        audit.head()  # connected before the start line
        barrier.wait(START_TIMEOUT)
        latencies: list[float] = []
        appended: list[tuple[int, str, int]] = []
        for n in range(count):
            started = time.perf_counter()
            record = audit.append(_event(writer, n))
            latencies.append(time.perf_counter() - started)
            appended.append((record.seq, record.hash, n))
    results.put({"writer": writer, "latencies": latencies, "appended": appended})


def _run_writers(dsn: str, audit: AuditStore) -> tuple[list[dict[str, Any]], int, float]:
    """8 spawned writers at once; meanwhile this process seals every ~0.2 s. Returns the writers'
    reports, the checkpoints written during the run and the wall time."""
    spawn = multiprocessing.get_context("spawn")
    barrier = spawn.Barrier(WRITERS + 1)
    results = spawn.Queue()
    workers = [
        spawn.Process(target=_writer, args=(dsn, writer, CONCURRENT_PER_WRITER, barrier, results))
        for writer in range(WRITERS)
    ]
    for worker in workers:
        worker.start()
    reports: list[dict[str, Any]] = []
    seals = 0
    try:
        barrier.wait(START_TIMEOUT)
        started = time.monotonic()
        deadline = started + 300
        while len(reports) < WRITERS and time.monotonic() < deadline:
            seals += audit.seal(SIGNER) is not None
            try:
                reports.append(results.get(timeout=0.2))
            except Exception:  # noqa: S112 - queue.Empty: keep sealing while the writers run
                continue
        elapsed = time.monotonic() - started
    finally:
        for worker in workers:
            worker.join(timeout=30)
            if worker.is_alive():
                worker.kill()
    assert len(reports) == WRITERS, "a writer did not finish"
    return reports, seals, elapsed


def test_single_writer_latency(store: AuditStore, capsys: pytest.CaptureFixture[str]) -> None:
    latencies = []
    for n in range(PER_WRITER):
        started = time.perf_counter()
        store.append(_event(0, n))
        latencies.append(time.perf_counter() - started)
    started = time.perf_counter()
    checkpoint = store.seal(SIGNER)
    seal_ms = (time.perf_counter() - started) * 1000

    assert checkpoint is not None
    assert checkpoint.last_seq == PER_WRITER
    report = store.verify(KEYS)
    assert report.ok, str(report)
    p50, p95 = _percentiles(latencies)
    with capsys.disabled():
        print(
            f"\naudit append latency, 1 writer, {PER_WRITER} records: p50 {p50:.2f} ms, p95 {p95:.2f} ms; "
            f"seal of {PER_WRITER} records {seal_ms:.1f} ms"
        )


def test_eight_concurrent_writers_keep_one_gapless_chain(
    store: AuditStore, capsys: pytest.CaptureFixture[str]
) -> None:
    reports, seals, elapsed = _run_writers(store.dsn, store)
    final = store.seal(SIGNER)
    seals += final is not None

    appended = {
        seq: (digest, report["writer"], n) for report in reports for seq, digest, n in report["appended"]
    }
    total = WRITERS * CONCURRENT_PER_WRITER
    assert len(appended) == total  # no seq handed out twice
    assert sorted(appended) == list(range(1, total + 1))  # gapless

    records = store.records()
    assert [r["seq"] for r in records] == list(range(1, total + 1))
    for record in records:  # none lost, none altered: what each writer got back is what is stored
        digest, writer, n = appended[record["seq"]]
        assert (record["hash"], record["details"]["writer"], record["details"]["n"]) == (digest, writer, n)
    for report in reports:  # each writer's appends are in its own order along the chain
        seqs = [seq for seq, _, _ in report["appended"]]
        assert seqs == sorted(seqs)
    ats = [r["at"] for r in records]
    assert ats == sorted(ats)  # the database clock, read under the lock: never backwards

    report = store.verify(KEYS)
    assert report.ok, str(report)
    assert report.sealed_seq == total
    assert report.checkpoints == seals >= 2  # sealed during the run too, between appends

    latencies = [latency for report in reports for latency in report["latencies"]]
    p50, p95 = _percentiles(latencies)
    with capsys.disabled():
        print(
            f"\naudit append latency, {WRITERS} writers x {CONCURRENT_PER_WRITER} records: p50 {p50:.2f} ms, "
            f"p95 {p95:.2f} ms; {total} records in {elapsed:.1f} s ({total / elapsed:.0f}/s), "
            f"{seals} checkpoints sealed meanwhile"
        )


def _fill(audit: AuditStore, count: int, *, seal_every: int = 0) -> None:
    for n in range(count):
        audit.append(_event(n % 3, n))
        if seal_every and (n + 1) % seal_every == 0:
            audit.seal(SIGNER)


def _tamper(dsn: str, statement: str) -> None:
    """What a superuser can do: switch the triggers off for the session, then change rows."""
    database = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
    with psycopg.connect(postgres.admin_dsn(PROFILE, str(database)), autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")
        conn.execute(statement)


def test_the_tables_refuse_updates_deletes_and_truncation(store: AuditStore) -> None:
    _fill(store, 3, seal_every=3)
    with psycopg.connect(store.dsn, autocommit=True) as conn:
        for statement in (
            "UPDATE audit_record SET actor = 'mallory' WHERE seq = 2",
            "DELETE FROM audit_record WHERE seq = 3",
            "TRUNCATE audit_record",
            "UPDATE audit_checkpoint SET last_seq = 1",
            "DELETE FROM audit_checkpoint",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
                conn.execute(statement)
    assert store.verify(KEYS).ok


def test_rows_changed_in_sql_are_named(store: AuditStore) -> None:
    _fill(store, 60, seal_every=25)  # sealed up to 50, 10 unsealed
    _tamper(store.dsn, "UPDATE audit_record SET actor = 'mallory' WHERE seq = 17")
    _tamper(store.dsn, """UPDATE audit_record SET details = '{"decision":"approve"}' WHERE seq = 30""")

    report = store.verify(KEYS)
    assert report.damage() == {(17, MODIFIED), (30, MODIFIED)}
    assert "record 17: modified (hash mismatch)" in str(report).splitlines()

    _tamper(store.dsn, "DELETE FROM audit_record WHERE seq = 40 OR seq > 45")
    report = store.verify(KEYS)
    assert report.damage() == {(17, MODIFIED), (30, MODIFIED), (40, DELETED)} | {
        (seq, TRUNCATED) for seq in range(46, 51)
    }
    assert "records 46-50: truncated (log ends at record 45; checkpoint 2 sealed up to record 50)" in str(
        report
    )


def test_rows_whose_seqs_were_swapped_in_sql_are_named(store: AuditStore) -> None:
    _fill(store, 10, seal_every=10)
    _tamper(
        store.dsn,
        "UPDATE audit_record SET seq = 1000 WHERE seq = 3;"
        "UPDATE audit_record SET seq = 3 WHERE seq = 4;"
        "UPDATE audit_record SET seq = 4 WHERE seq = 1000",
    )

    report = store.verify(KEYS)
    assert report.damage() == {(3, MODIFIED), (4, MODIFIED), (3, REORDERED), (4, REORDERED)}
    assert "record 4: modified (seq field altered (reads 3, hash matches 4))" in str(report)


def test_cli_verify_exits_1_on_damage(
    store: AuditStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _fill(store, 12, seal_every=6)
    public_key = tmp_path / "audit.pem"
    public_key.write_bytes(SIGNER.public_key_pem())
    verify_cmd = ["audit", "verify", "--dsn", store.dsn, "--public-key", str(public_key)]

    assert cli_main(verify_cmd) == 0
    assert capsys.readouterr().out.startswith("audit log intact: 12 records (last seq 12), 2 checkpoints")

    _tamper(store.dsn, "UPDATE audit_record SET subject = 'SEC-1' WHERE seq = 4")
    assert cli_main(verify_cmd) == 1
    assert capsys.readouterr().out.splitlines() == [
        "audit log DAMAGED: 1 problem(s) in 12 records and 2 checkpoints",
        "record 4: modified (hash mismatch)",
    ]
    assert cli_main(["audit", "verify", "--dsn", store.dsn]) == 2  # no key: refuses
    assert "refusing to call the log intact" in capsys.readouterr().err


@pytest.mark.parametrize(
    "forger",
    [
        pytest.param(lambda: Ed25519Signer.generate(), id="ed25519"),
        pytest.param(lambda: _Hmac(bytes.fromhex("6b" * 32)), id="hmac"),
    ],
)
def test_forged_chain_fails_verify(
    store: AuditStore, tmp_path: Path, capsys: pytest.CaptureFixture[str], forger: Any
) -> None:
    """As the tables' owner: rewrite a sealed record, relink the chain after it, re-sign every
    checkpoint with what a task could hold. The chain is consistent again; the signatures are not."""
    _fill(store, 12, seal_every=6)
    records, checkpoints = store.snapshot()
    records[2]["actor"] = "mallory"
    prev = records[1]["hash"]
    for record in records[2:]:
        record["prev_hash"] = prev
        record["hash"] = prev = record_hash(record)
    signer, prev_signature, forged = forger(), GENESIS_HASH, []
    for checkpoint in checkpoints:
        body = {k: checkpoint[k] for k in ("checkpoint_seq", "last_seq", "count", "at")}
        new = build_checkpoint(
            **body,
            last_hash=records[checkpoint["last_seq"] - 1]["hash"],
            prev_checkpoint_signature=prev_signature,
            signer=signer,
        )
        forged.append(new)
        prev_signature = new.signature
    statements = ["DELETE FROM audit_record", "DELETE FROM audit_checkpoint"]
    for record in records:
        statements.append(
            psycopg.sql.SQL("INSERT INTO audit_record ({}) VALUES ({})").format(
                psycopg.sql.SQL(", ").join(map(psycopg.sql.Identifier, record)),
                psycopg.sql.SQL(", ").join(
                    psycopg.sql.Literal(canonical_json(v) if k == "details" else v) for k, v in record.items()
                ),
            )
        )
    for checkpoint in forged:
        values = checkpoint.to_dict()
        statements.append(
            psycopg.sql.SQL("INSERT INTO audit_checkpoint ({}) VALUES ({})").format(
                psycopg.sql.SQL(", ").join(map(psycopg.sql.Identifier, values)),
                psycopg.sql.SQL(", ").join(map(psycopg.sql.Literal, values.values())),
            )
        )
    for statement in statements:
        _tamper(store.dsn, statement)

    public_key = tmp_path / "audit.pem"
    public_key.write_bytes(SIGNER.public_key_pem())
    assert cli_main(["audit", "verify", "--dsn", store.dsn, "--no-signatures"]) == 0
    assert capsys.readouterr().out.startswith("audit chain consistent: 12 records")  # never "intact"
    assert cli_main(["audit", "verify", "--dsn", store.dsn, "--public-key", str(public_key)]) == 1
    out = capsys.readouterr().out
    assert out.startswith("audit log DAMAGED")
    assert "checkpoint 1: checkpoint_invalid (" in out
    assert "checkpoint 2: checkpoint_invalid (" in out


class _Hmac:
    """A task's old HMAC key, as a signer (what the sealing step used before)."""

    algorithm = HMAC_SHA256
    key_id = "audit-key-1"

    def __init__(self, key: bytes) -> None:
        self.key = key

    def sign(self, message: bytes) -> bytes:
        return bytes.fromhex(hmac_sha256(self.key, message))


@pytest.fixture(scope="module")
def s3() -> Iterator[Any]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address=HOST, port=0)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield boto3.client(
            "s3",
            endpoint_url=f"http://{host}:{port}",
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
    finally:
        server.stop()


def test_sealed_segments_are_exported_under_compliance_lock(store: AuditStore, s3: Any) -> None:
    bucket = f"audit-itest-{uuid.uuid4().hex[:12]}"
    ensure_locked_bucket(s3, bucket, region=REGION, retention_days=30)
    ensure_locked_bucket(s3, bucket, region=REGION, retention_days=30)  # idempotent
    _fill(store, 130, seal_every=40)  # 3 checkpoints (40, 80, 120), 10 unsealed (sealed below)

    segments = export_sealed_segments(store, s3, bucket, retention_days=30)
    today = datetime.now(UTC)
    assert [(s.first_seq, s.last_seq, s.checkpoint_seq, s.written) for s in segments] == [
        (1, 40, 1, True),
        (41, 80, 2, True),
        (81, 120, 3, True),
    ]
    assert segments[0].key == f"audit/{today:%Y/%m/%d}/1-40.jsonl"
    assert [s.written for s in export_sealed_segments(store, s3, bucket)] == [False] * 3  # never rewritten
    _fill(store, 30, seal_every=30)  # checkpoint 4: the 10 unsealed + 30 = 121-160
    later = export_sealed_segments(store, s3, bucket, retention_days=30, after_checkpoint=3)
    assert [(s.first_seq, s.last_seq, s.written) for s in later] == [(121, 160, True)]

    records, checkpoints = read_exported_segments(s3, bucket)
    exported = verify(records, checkpoints, KEYS)
    assert exported.ok, str(exported)
    assert (exported.records, exported.sealed_seq) == (160, 160)

    head = s3.head_object(Bucket=bucket, Key=segments[0].key)
    assert head["ObjectLockMode"] == "COMPLIANCE"
    assert head["ObjectLockRetainUntilDate"] > today + timedelta(days=29)
    version = segments[0].version_id
    with pytest.raises(ClientError) as refused:
        s3.delete_object(Bucket=bucket, Key=segments[0].key, VersionId=version)
    assert refused.value.response["Error"]["Code"] == "AccessDenied"
    with pytest.raises(ClientError) as refused:
        s3.delete_object(
            Bucket=bucket, Key=segments[0].key, VersionId=version, BypassGovernanceRetention=True
        )
    assert refused.value.response["Error"]["Code"] == "AccessDenied"
    batch = s3.delete_objects(
        Bucket=bucket, Delete={"Objects": [{"Key": segments[1].key, "VersionId": segments[1].version_id}]}
    )
    assert [error["Code"] for error in batch["Errors"]] == ["AccessDenied"]
    # A plain delete only stacks a delete marker: the locked version is still there.
    s3.delete_object(Bucket=bucket, Key=segments[0].key)
    body = s3.get_object(Bucket=bucket, Key=segments[0].key, VersionId=version)["Body"].read()
    assert body.decode().splitlines()[0].startswith('{"actor":"worker:0"')


def test_a_damaged_segment_is_not_exported(store: AuditStore, s3: Any) -> None:
    bucket = f"audit-itest-{uuid.uuid4().hex[:12]}"
    ensure_locked_bucket(s3, bucket, region=REGION, retention_days=1)
    _fill(store, 20, seal_every=10)
    _tamper(store.dsn, "UPDATE audit_record SET actor = 'mallory' WHERE seq = 15")

    with pytest.raises(AuditExportError, match=r"segment 11-20 \(checkpoint 2\): record 15 is damaged"):
        export_sealed_segments(store, s3, bucket, retention_days=1)
    keys = [item["Key"] for item in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert [key.rsplit("/", 1)[1] for key in keys] == ["1-10.jsonl"]  # the intact segment before it


def test_a_bucket_without_object_lock_is_refused(s3: Any) -> None:
    bucket = f"audit-itest-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    with pytest.raises(AuditExportError, match="exists without Object Lock"):
        ensure_locked_bucket(s3, bucket, region=REGION)


def test_a_seal_pass_drains_the_spool_seals_exports_once_and_verifies(
    store: AuditStore, s3: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from include.audit.seal import AuditDamaged, ExportSettings, seal_and_export

    settings = ExportSettings(
        bucket=f"audit-itest-{uuid.uuid4().hex[:12]}", region=REGION, retention_days=1, aws_conn_id="-"
    )
    spool = tmp_path / "spool"
    spool.mkdir()
    monkeypatch.setenv("ORCH_AUDIT_SPOOL_KEYS", str(tmp_path / "spool-keys"))
    from include.audit.emit import spool_key, spool_line

    key = spool_key("scheduler", create=True)
    assert key is not None
    signed = spool_line(
        {"kind": "task.finished", "actor": "worker", "details": {"spooled_at": "x"}}, "scheduler", key
    )
    unsigned = json.dumps({"kind": "task.finished", "actor": "mallory"})
    (spool / "scheduler-4242.jsonl").write_text(signed + "\n" + unsigned + "\n")
    _fill(store, 25)
    import include.audit.seal as seal_module
    from include.audit.emit import drain_spool

    monkeypatch.setattr(seal_module, "drain_spool", lambda target: drain_spool(target, spool))
    first = seal_and_export(store, s3, settings, SIGNER, KEYS)
    assert first["drained_from_spool"] == 1
    assert first["quarantined"] == ["scheduler-4242.jsonl:2"]
    assert (first["checkpoint_seq"], first["sealed_up_to"]) == (1, 27)
    assert [(s["first_seq"], s["last_seq"], s["written"]) for s in first["exported"]] == [(1, 27, True)]
    assert first["ok"] is True
    assert first["key_id"] == SIGNER.key_id
    assert [r["kind"] for r in store.records(26, 27)] == ["task.finished", "audit.spool_quarantined"]
    published = s3.get_object(Bucket=settings.bucket, Key=first["public_key"])["Body"].read()
    assert published == SIGNER.public_key_pem()

    # The next pass: bucket (now non-empty) left as it is, only the new segment exported.
    _fill(store, 5)
    second = seal_and_export(store, s3, settings, SIGNER, KEYS)
    assert [(s["first_seq"], s["last_seq"]) for s in second["exported"]] == [(28, 32)]
    assert seal_and_export(store, s3, settings, SIGNER, KEYS)["exported"] == []

    # Damage in an old segment: the incremental pass (records after the checkpoint before the
    # newest) does not read it; the scheduled full verify names it.
    _tamper(store.dsn, "UPDATE audit_record SET actor = 'mallory' WHERE seq = 3")
    _fill(store, 2)
    incremental = seal_and_export(store, s3, settings, SIGNER, KEYS)
    assert (incremental["verified_after_checkpoint"], incremental["verified_records"]) == (2, 2)
    with pytest.raises(AuditDamaged, match="record 3"):
        seal_and_export(store, s3, settings, SIGNER, KEYS, full_verify=True)
    # Damage in the newest segment: the very next pass names it (the export's own check of the
    # segment it is about to copy sees it first; the incremental verify would too).
    _fill(store, 3)
    _tamper(store.dsn, "UPDATE audit_record SET actor = 'mallory' WHERE seq = 36")
    with pytest.raises((AuditDamaged, AuditExportError), match="record 36"):
        seal_and_export(store, s3, settings, SIGNER, KEYS)


_LEGACY_CHECKPOINT_TABLE = """
    CREATE TABLE audit_checkpoint (
        checkpoint_seq bigint PRIMARY KEY CHECK (checkpoint_seq >= 1),
        last_seq bigint NOT NULL,
        last_hash char(64) NOT NULL,
        count bigint NOT NULL,
        at timestamptz NOT NULL,
        key_id text NOT NULL,
        prev_checkpoint_signature char(64) NOT NULL UNIQUE,
        signature char(64) NOT NULL UNIQUE
    )
"""


def test_upgrade_keeps_hmac_checkpoints_and_the_first_new_seal_pins_them(cluster: Profile) -> None:
    """A store sealed with HMAC before issue 19: ensure_schema migrates it, verify needs the old key
    until the first asymmetric seal, and not after it."""
    from include.audit.store import _SCHEMA

    dsn = _database(cluster, "audit_upgrade_from_hmac")
    legacy_key = bytes.fromhex("6b" * 32)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(_LEGACY_CHECKPOINT_TABLE)
        conn.execute(_SCHEMA[0])  # audit_record: unchanged since
    with AuditStore(dsn) as audit:
        for n in range(6):
            audit.append(_event(0, n))
        records = audit.records()
        prev_signature = GENESIS_HASH
        with psycopg.connect(dsn, autocommit=True) as conn:
            for number, last in ((1, 3), (2, 6)):
                body = {
                    "checkpoint_seq": number,
                    "last_seq": last,
                    "last_hash": records[last - 1]["hash"],
                    "count": last,
                    "at": records[last - 1]["at"],
                    "key_id": "audit-key-1",
                    "prev_checkpoint_signature": prev_signature,
                }
                signature = hmac_sha256(legacy_key, canonical_json(body).encode())  # as sealed before
                conn.execute(
                    "INSERT INTO audit_checkpoint (checkpoint_seq, last_seq, last_hash, count, at, key_id,"
                    " prev_checkpoint_signature, signature) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                    (*body.values(), signature),
                )
                prev_signature = signature

        audit.ensure_schema()
        assert [c["algorithm"] for c in audit.checkpoints()] == ["hmac-sha256", "hmac-sha256"]
        legacy = CheckpointKeys(KEYS.public, {"audit-key-1": legacy_key})
        assert audit.verify(legacy).ok
        before = audit.verify(KEYS)
        assert before.checkpoint_damage() == {(1, "checkpoint_invalid"), (2, "checkpoint_invalid")}

        audit.append(_event(0, 6))
        checkpoint = audit.seal(SIGNER)
        assert checkpoint is not None
        assert (checkpoint.checkpoint_seq, checkpoint.algorithm) == (3, "ed25519")
        assert len(checkpoint.signature) == 128  # wider than the old char(64)
        report = audit.verify(KEYS)
        assert report.ok, str(report)
        assert str(report).startswith("audit log intact: 7 records (last seq 7), 3 checkpoints")


@pytest.mark.parametrize("parallel", [False, True], ids=["one-process", "reader-process"])
def test_streamed_verify_names_what_the_in_memory_verify_names(
    store: AuditStore, parallel: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store's verify (server-side cursor, segment by segment; records hashed in this process
    or by reading processes that share its snapshot, in chunks of 7 here) against the reference."""
    monkeypatch.setattr("include.audit.store._READ_CHUNK", 7)
    _fill(store, 120, seal_every=25)
    assert store.verify(KEYS).ok
    _tamper(store.dsn, "UPDATE audit_record SET actor = 'mallory' WHERE seq = 30")
    _tamper(store.dsn, "DELETE FROM audit_record WHERE seq BETWEEN 49 AND 52")  # across checkpoint 2
    _tamper(store.dsn, "UPDATE audit_record SET seq = 1000 WHERE seq = 75")  # at checkpoint 3's end
    _tamper(store.dsn, "UPDATE audit_record SET details = 'not json' WHERE seq = 110")  # unsealed
    streamed, reference = store.verify(KEYS, parallel=parallel), store.verify_in_memory(KEYS)
    assert streamed.damage() == reference.damage(), f"{streamed}\n---\n{reference}"
    assert (streamed.records, streamed.last_seq) == (reference.records, reference.last_seq)
    assert streamed.checkpoint_damage() == reference.checkpoint_damage()
    assert {(30, MODIFIED), (49, DELETED), (52, DELETED), (110, MODIFIED)} <= streamed.damage()


def test_the_verify_read_formats_at_exactly_as_format_at_does(store: AuditStore) -> None:
    """The server formats ``at`` for the verify read; the hash needs the very text format_at gives."""
    from include.audit.records import RECORD_FIELDS, format_at
    from include.audit.store import _VERIFY_RECORDS_SQL, _verify_row_to_record

    rng = random.Random(24)
    kathmandu = timezone(timedelta(hours=5, minutes=45))
    instants = [
        datetime(999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),  # outside the server's range
        datetime(1000, 1, 1, tzinfo=UTC),
        datetime(1970, 1, 1, tzinfo=UTC),
        datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC),  # no microseconds: still six digits
        datetime(2026, 3, 4, 5, 6, 7, 120000, tzinfo=kathmandu),
        datetime(2026, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        *(
            datetime(2000, 1, 1, tzinfo=UTC) + timedelta(microseconds=rng.randrange(10**17))
            for _ in range(200)
        ),
    ]
    columns = ", ".join(RECORD_FIELDS)
    marks = ", ".join(["%s"] * len(RECORD_FIELDS))
    with psycopg.connect(store.dsn, autocommit=True) as conn:
        conn.execute("SET TimeZone = 'Asia/Kathmandu'")  # the session's zone must not matter
        conn.execute("CREATE TEMP TABLE audit_record (LIKE audit_record)")  # shadows the real one
        for seq, at in enumerate(instants, 1):
            values: dict[str, Any] = dict.fromkeys(RECORD_FIELDS)
            values.update(seq=seq, at=at, kind="k", actor="a", details="{}", prev_hash="p", hash="h")
            conn.execute(
                f"INSERT INTO audit_record ({columns}) VALUES ({marks})",  # noqa: S608
                tuple(values[name] for name in RECORD_FIELDS),
            )
        rows = conn.execute(_VERIFY_RECORDS_SQL, (1, 2**63 - 1)).fetchall()
        conn.execute("SET TimeZone = 'UTC'")  # Python's datetime ends at 9999 in the session's zone
        stored = [row[0] for row in conn.execute("SELECT at FROM audit_record ORDER BY seq")]
    assert [_verify_row_to_record(row)["at"] for row in rows] == [format_at(at) for at in stored]
    assert [row[1] is None for row in rows[:3]] == [True, False, False]  # server-formatted in range


def test_a_failing_reader_process_is_named_without_the_dsn(store: AuditStore) -> None:
    _fill(store, 5)
    assert store.verify(KEYS, parallel=True).ok
    password = psycopg.conninfo.conninfo_to_dict(store.dsn)["password"]
    store.verify(KEYS)  # this process is connected; the reader connects anew, to a closed port
    store.dsn = store.dsn.replace(f":{PROFILE.pg_port}/", ":1/")
    with pytest.raises(RuntimeError, match="a reading process failed: OperationalError") as caught:
        store.verify(KEYS, parallel=True)
    assert str(password) not in str(caught.value)


def test_incremental_verify_reads_only_after_the_checkpoint_and_refuses_a_bad_start(
    store: AuditStore,
) -> None:
    from include.audit.verify import IncrementalBaseError

    _fill(store, 100, seal_every=25)  # checkpoints 1-4, sealing 25, 50, 75, 100
    _fill(store, 10)
    report = store.verify(KEYS, after_checkpoint=3)
    assert report.ok, report
    assert (report.records, report.after_checkpoint, report.last_seq) == (35, 3, 110)
    _tamper(store.dsn, "UPDATE audit_record SET actor = 'mallory' WHERE seq = 10")
    assert store.verify(KEYS, after_checkpoint=3).ok  # old damage: only the full verify reads it
    assert (10, MODIFIED) in store.verify(KEYS).damage()
    _tamper(store.dsn, "UPDATE audit_record SET actor = 'mallory' WHERE seq = 80")
    assert store.verify(KEYS, after_checkpoint=3).damage() == {(80, MODIFIED)}
    # A checkpoint row rewritten to skip ahead fails its signature: no incremental start from it.
    _tamper(store.dsn, "UPDATE audit_checkpoint SET last_seq = 105 WHERE checkpoint_seq = 3")
    with pytest.raises(IncrementalBaseError, match="checkpoint 3"):
        store.verify(KEYS, after_checkpoint=3)
    with pytest.raises(IncrementalBaseError, match="checkpoint 9"):
        store.verify(KEYS, after_checkpoint=9)


@pytest.mark.parametrize(
    ("matched_as", "index"),
    [
        ("correlation id", "audit_record_correlation_id"),
        ("run id", "audit_record_run_id"),
        ("ticket id", "audit_record_ticket_id"),
        ("object id", "audit_record_object_id"),
    ],
)
def test_trace_lookups_use_their_index(store: AuditStore, matched_as: str, index: str) -> None:
    """EXPLAIN with sequential scans off-limits: each lookup the trace makes is an index scan."""
    from include.audit.store import _MATCH_CONDITIONS, _MATCH_SQL, _RECORDS_FOR_SQL, TICKETING_SYSTEMS

    _fill(store, 50)
    database = psycopg.conninfo.conninfo_to_dict(store.dsn)["dbname"]
    with psycopg.connect(postgres.admin_dsn(PROFILE, str(database)), autocommit=True) as conn:
        # Enough rows for the planner to prefer an index on its own (no enable_seqscan games):
        conn.execute("SET session_replication_role = replica")
        conn.execute(
            "INSERT INTO audit_record SELECT n + 1000, now(), 'side_effect', 'w', 'd', 't', 'c' || n,"
            " 'dag', 'run' || n, 'task', 's',"
            " json_build_object('object_id', 'sg-' || n, 'system', 'jira', 'ticket_id', 'T-' || n)::text,"
            " md5(n::text) || md5('p' || n), md5(n::text) || md5('h' || n)"
            " FROM generate_series(1, 20000) AS n"
        )
        conn.execute("ANALYZE audit_record")
        query = _MATCH_SQL.format(condition=_MATCH_CONDITIONS[matched_as], filters="")
        plan = "\n".join(
            row[0]
            for row in conn.execute(
                f"EXPLAIN {query}", {"id": "T-77", "ticketing": list(TICKETING_SYSTEMS)}
            ).fetchall()
        )
        assert "Seq Scan" not in plan, plan
        assert index in plan, plan
        records_plan = "\n".join(
            row[0]
            for row in conn.execute(
                f"EXPLAIN {_RECORDS_FOR_SQL.format(filters='')}",
                {"correlation_ids": ["c77"], "dag_ids": ["dag"], "run_ids": ["run77"]},
            ).fetchall()
        )
        assert "Seq Scan" not in records_plan, records_plan


def test_trace_works_in_a_parallel_plan_and_an_older_schema_is_brought_in_line(store: AuditStore) -> None:
    """audit_details_field has an EXCEPTION block (a subtransaction), which a parallel plan refuses:
    it is PARALLEL UNSAFE, and ensure_schema re-marks a function created SAFE before."""
    _fill(store, 30)
    database = psycopg.conninfo.conninfo_to_dict(store.dsn)["dbname"]
    forced = psycopg.conninfo.make_conninfo(
        store.dsn,
        options="-c force_parallel_mode=on -c parallel_setup_cost=0 -c parallel_tuple_cost=0"
        " -c min_parallel_table_scan_size=0 -c enable_indexscan=off -c enable_bitmapscan=off",
    )
    with psycopg.connect(postgres.admin_dsn(PROFILE, str(database)), autocommit=True) as conn:
        conn.execute("ALTER FUNCTION audit_details_field(text, text) PARALLEL SAFE")
    with AuditStore(forced) as parallel, pytest.raises(psycopg.errors.InvalidTransactionState):
        parallel.trace("no-such-ticket")  # tried as a ticket id: the function, in a parallel plan
    store.ensure_schema()
    with psycopg.connect(store.dsn) as conn:
        marked = conn.execute(
            "SELECT proparallel FROM pg_proc WHERE proname = 'audit_details_field'"
        ).fetchone()
    assert marked == ("u",)
    with AuditStore(forced) as parallel:
        assert parallel.trace("no-such-ticket") == ([], [])
        matches, records = parallel.trace(store.records(1, 1)[0]["run_id"])
        assert matches
        assert records
