"""Evidence packs from a real PostgreSQL audit store: seal with per-tenant commitments, build a
tenant's pack, verify it offline; tampering in the pack is named, tampering in the store stops the build.

Runs on a PostgreSQL cluster of its own (profile ``evidence-itest``, 127.0.0.1:25682), started fresh
for this module and stopped at its end; one database per test. The last test measures build and
verify of one tenant's records among ten times as many (printed; run with ``-s`` to see them):
20,000 by default, ``EVIDENCE_SCALE=100000`` for the figures in docs/evidence.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from devstack import postgres
from devstack.config import Profile
from include.audit.records import (
    GENESIS_HASH,
    RECORD_FIELDS,
    build_checkpoint,
    canonical_json,
    format_at,
    link_record,
    validate_event,
)
from include.audit.signing import CheckpointKeys, Ed25519Signer
from include.audit.store import AuditStore
from include.cli.__main__ import main as cli_main
from include.evidence.pack import EvidencePackError, build_pack, sha256_file
from include.evidence.verify import verify_pack
from tests.support.stores import postgres_cluster

PROFILE = Profile(name="evidence-itest", api_port=0, pg_port=25682, moto_port=0, smtp_port=0)
SIGNER = Ed25519Signer.generate()
KEYS = CheckpointKeys.of(SIGNER.public_key)
SCALE = int(os.environ.get("EVIDENCE_SCALE", "20000"))


@pytest.fixture(scope="module")
def cluster() -> Iterator[Profile]:
    with postgres_cluster(PROFILE):
        yield PROFILE


@pytest.fixture
def store(cluster: Profile, request: pytest.FixtureRequest) -> Iterator[AuditStore]:
    digest = hashlib.sha256(request.node.name.encode()).hexdigest()[:8]
    name = "ev_" + re.sub(r"[^a-z0-9]+", "_", request.node.name.lower())[:32] + "_" + digest
    postgres.create_database(cluster, name)
    with AuditStore(postgres.dsn(cluster, postgres.DB_USER, name)) as audit:
        audit.ensure_schema()
        audit.ensure_schema()  # idempotent, with the new table and column
        yield audit


def _now(store: AuditStore) -> datetime:
    with psycopg.connect(store.dsn) as conn:
        row = conn.execute("SELECT clock_timestamp()").fetchone()
    assert row is not None
    moment: datetime = row[0]
    return moment


def _event(tenant: str | None, n: int, domain: str = "soc") -> dict[str, Any]:
    return {
        "kind": "task.finished",
        "actor": "worker",
        "tenant": tenant,
        "domain": domain,
        "dag_id": f"{domain}_flow",
        "run_id": f"run-{tenant}-{n // 4}",
        "details": {"state": "success", "marker": f"{tenant}-marker-{n}"},
    }


def _mixed_day(store: AuditStore) -> tuple[datetime, datetime]:
    """A sealed record before the period; three sealed segments of acme and globex (and the
    platform) in it; one record and a seal after it. Returns the period."""
    store.append(_event("acme", 0))
    store.seal(SIGNER)
    start = _now(store)
    n = 0
    for _segment in range(3):
        for _ in range(12):
            n += 1
            tenant = ("acme", "globex", "globex", None)[n % 4]
            store.append(_event(tenant, n, domain="hr" if n % 3 else "soc"))
        store.seal(SIGNER)
    end = _now(store)
    store.append(_event("globex", 99))
    store.seal(SIGNER)
    return start, end


def _build(store: AuditStore, tmp_path: Path, start: datetime, end: datetime, **kwargs: Any) -> Any:
    kwargs.setdefault("pdf", False)  # report.pdf: the CLI test here, tests/unit/evidence/test_evidence_pdf.py
    return build_pack(
        store, tenant="acme", start=start, end=end, keys=KEYS, out_dir=tmp_path / "pack", **kwargs
    )


def _rehash_manifest(pack: Path) -> None:
    manifest = json.loads((pack / "manifest.json").read_text())
    manifest["files"] = {name: sha256_file(pack / name) for name in manifest["files"]}
    (pack / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    (pack / "SHA256SUMS").write_text("".join(f"{d}  {n}\n" for n, d in manifest["files"].items()))


def test_seal_commits_every_tenant_and_carries_them_on(store: AuditStore) -> None:
    _mixed_day(store)
    checkpoints = store.checkpoints()
    assert all(len(cp["tenant_root"]) == 64 for cp in checkpoints)
    assert store.verify(KEYS).ok
    with psycopg.connect(store.dsn) as conn:
        rows = conn.execute(
            "SELECT checkpoint_seq, tenant, count, since FROM audit_tenant_commitment ORDER BY 1, 2"
        ).fetchall()
    by_checkpoint: dict[int, dict[str | None, tuple[int, int]]] = {}
    for number, tenant, count, since in rows:
        by_checkpoint.setdefault(number, {})[tenant] = (count, since)
    assert by_checkpoint[1] == {"acme": (1, 1)}
    assert by_checkpoint[2] == {"acme": (3, 1), "globex": (6, 2), None: (3, 2)}
    assert by_checkpoint[5] == {"acme": (0, 1), "globex": (1, 2), None: (0, 2)}  # carried on, count 0


def test_the_commitment_table_is_append_only(store: AuditStore) -> None:
    _mixed_day(store)
    with psycopg.connect(store.dsn, autocommit=True) as conn:
        for statement in (
            "UPDATE audit_tenant_commitment SET count = 0",
            "DELETE FROM audit_tenant_commitment",
            "TRUNCATE audit_tenant_commitment",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
                conn.execute(statement)


def test_acme_pack_verifies_holds_nothing_of_globex_and_names_tampering(
    store: AuditStore, tmp_path: Path
) -> None:
    start, end = _mixed_day(store)
    result = _build(store, tmp_path, start, end)
    acme = [r for r in store.records() if r["tenant"] == "acme" and r["seq"] > 1]
    lines = (result.path / "records.jsonl").read_text().splitlines(keepends=True)
    assert [json.loads(line) for line in lines] == acme
    assert result.records_in_period == len(acme) == 9
    assert result.complete, result.warnings
    assert (result.first_checkpoint, result.last_checkpoint) == (2, 5)  # the first at/after the end
    report = verify_pack(result.path, [SIGNER.public_key])
    assert report.complete, str(report)
    text = "\n".join(p.read_bytes().decode("utf-8", "replace") for p in result.path.rglob("*") if p.is_file())
    assert "globex" not in text
    assert "None-marker" not in text
    html = (result.path / "report.html").read_text()
    assert "<html" in html.lower()

    # one record deleted from the pack: named by seq
    gone = json.loads(lines[3])["seq"]
    (result.path / "records.jsonl").write_text("".join(lines[:3] + lines[4:]))
    report = verify_pack(result.path, [SIGNER.public_key])
    assert f"record seq {gone}: missing from records.jsonl (committed by checkpoint 3)" in report.problems
    assert "manifest mismatch: records.jsonl (its sha256 is not the manifest's: altered)" in report.problems

    # one byte altered (and the manifest recomputed by the forger): named by seq and file
    altered = lines[1].replace('"success"', '"suc-ess"')
    seq = json.loads(lines[1])["seq"]
    (result.path / "records.jsonl").write_text("".join([lines[0], altered, *lines[2:]]))
    _rehash_manifest(result.path)
    report = verify_pack(result.path, [SIGNER.public_key])
    assert report.problems == [
        f"record seq {seq} (records.jsonl line 2): altered (its content does not hash to its hash)"
    ]

    # one of globex's records added: named as foreign
    theirs = next(r for r in store.records() if r["tenant"] == "globex" and r["seq"] > 1)
    records = sorted([*(json.loads(line) for line in lines), theirs], key=lambda r: r["seq"])
    (result.path / "records.jsonl").write_text("".join(canonical_json(r) + "\n" for r in records))
    _rehash_manifest(result.path)
    report = verify_pack(result.path, [SIGNER.public_key])
    assert any(
        f"record seq {theirs['seq']}" in p and "foreign record: belongs to tenant 'globex'" in p
        for p in report.problems
    ), str(report)


def test_a_record_of_acme_deleted_in_the_store_fails_the_build_loudly(
    store: AuditStore, tmp_path: Path
) -> None:
    start, end = _mixed_day(store)
    victim = next(r["seq"] for r in store.records() if r["tenant"] == "acme" and r["seq"] > 1)
    with psycopg.connect(store.dsn, autocommit=True) as conn:  # the tables' owner
        conn.execute("ALTER TABLE audit_record DISABLE TRIGGER audit_record_append_only")
        conn.execute("DELETE FROM audit_record WHERE seq = %s", (victim,))
        conn.execute("ALTER TABLE audit_record ENABLE TRIGGER audit_record_append_only")
    with pytest.raises(EvidencePackError, match=rf"damaged, no pack built(.|\n)*{victim}"):
        _build(store, tmp_path, start, end)
    assert not (tmp_path / "pack").exists()


def test_an_acme_commitment_deleted_in_the_store_fails_the_build(store: AuditStore, tmp_path: Path) -> None:
    start, end = _mixed_day(store)
    with psycopg.connect(store.dsn, autocommit=True) as conn:
        conn.execute("ALTER TABLE audit_tenant_commitment DISABLE TRIGGER USER")
        conn.execute("DELETE FROM audit_tenant_commitment WHERE tenant = 'acme' AND checkpoint_seq = 3")
    with pytest.raises(EvidencePackError, match=r"checkpoint 3.*commitment of the tenant is missing"):
        _build(store, tmp_path, start, end)


def test_records_of_the_period_not_sealed_refuse_the_build(store: AuditStore, tmp_path: Path) -> None:
    store.append(_event("acme", 0))
    store.seal(SIGNER)
    start = _now(store)
    store.append(_event("acme", 1))
    with pytest.raises(EvidencePackError, match="1 records of the period are not sealed yet"):
        _build(store, tmp_path, start, _now(store))


def test_a_month_end_not_sealed_yet_is_sealed_before_the_build(store: AuditStore, tmp_path: Path) -> None:
    store.append(_event("acme", 0))
    store.seal(SIGNER)
    start = _now(store)
    store.append(_event("acme", 1))
    store.append(_event("globex", 2))
    end = _now(store)
    seals: list[Any] = []

    def seal() -> None:  # the platform's seal (run_seal in the DAG), on this store
        seals.append(store.seal(SIGNER))

    result = _build(store, tmp_path, start, end, seal=seal)
    assert result.sealed_first
    assert len(seals) == 1
    assert seals[0] is not None
    assert result.complete, result.warnings
    assert result.records_in_period == 1
    assert verify_pack(result.path, KEYS).complete
    again = _build(store, tmp_path / "again", start, end, seal=seal)
    assert not again.sealed_first, "sealed already: no second seal"
    assert len(seals) == 1


def _legacy_append(store: AuditStore, events: list[dict[str, Any]]) -> None:
    """Records and an old-style checkpoint (no tenant_root), as a store before the upgrade wrote."""
    records = store.records()
    prev_hash = records[-1]["hash"] if records else GENESIS_HASH
    checkpoints = store.checkpoints()
    with psycopg.connect(store.dsn, autocommit=True) as conn:
        for event in events:
            seq = (records[-1]["seq"] if records else 0) + 1
            now = _now(store)
            record = link_record(validate_event(event), seq=seq, at=format_at(now), prev_hash=prev_hash)
            values = {**record.to_dict(), "at": now, "details": canonical_json(record.details)}
            marks = ", ".join(["%s"] * len(RECORD_FIELDS))
            conn.execute(
                f"INSERT INTO audit_record ({', '.join(RECORD_FIELDS)}) VALUES ({marks})",  # noqa: S608
                tuple(values[name] for name in RECORD_FIELDS),
            )
            records.append(record.to_dict())
            prev_hash = record.hash
        last = checkpoints[-1] if checkpoints else None
        checkpoint = build_checkpoint(
            checkpoint_seq=len(checkpoints) + 1,
            last_seq=records[-1]["seq"],
            last_hash=prev_hash,
            count=len(records),
            at=format_at(_now(store)),
            prev_checkpoint_signature=last["signature"] if last else GENESIS_HASH,
            signer=SIGNER,
        )
        fields = checkpoint.to_dict()
        conn.execute(
            f"INSERT INTO audit_checkpoint ({', '.join(fields)}) VALUES ({', '.join(['%s'] * len(fields))})",  # noqa: S608
            tuple(fields.values()),
        )


def test_an_upgraded_store_carries_legacy_tenants_and_flags_legacy_segments(
    store: AuditStore, tmp_path: Path
) -> None:
    _legacy_append(store, [_event("acme", 0), _event("initech", 1)])
    start = _now(store)
    _legacy_append(store, [_event("acme", 2), _event("globex", 3)])
    store.append(_event("acme", 4))
    store.seal(SIGNER)  # the first checkpoint with commitments: every tenant of the log gets a leaf
    with psycopg.connect(store.dsn) as conn:
        tenants = conn.execute(
            "SELECT tenant, count, since FROM audit_tenant_commitment"
            " WHERE checkpoint_seq = 3 ORDER BY tenant"
        ).fetchall()
    assert tenants == [("acme", 1, 3), ("globex", 0, 3), ("initech", 0, 3)]
    end = _now(store)
    store.append(_event("globex", 5))
    store.seal(SIGNER)
    assert store.verify(KEYS).ok
    result = _build(store, tmp_path, start, end)
    assert not result.complete
    assert any("checkpoint 2" in w and "sealed before per-tenant commitments" in w for w in result.warnings)
    assert cli_main(["evidence", "verify", str(result.path), "--public-key", str(_key_file(tmp_path))]) == 3


def _key_file(tmp_path: Path) -> Path:
    path = tmp_path / "platform.pem"
    path.write_bytes(SIGNER.public_key_pem())
    return path


def test_the_cli_builds_zips_and_verifies(
    store: AuditStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    start, end = _mixed_day(store)
    key = _key_file(tmp_path)
    out = tmp_path / "acme-2026-11"
    argv = ["evidence", "build", "--dsn", store.dsn, "--tenant", "acme", "--out", str(out), "--zip"]
    argv += ["--start", start.isoformat(), "--end", end.isoformat(), "--public-key", str(key)]
    assert cli_main(argv) == 0, capsys.readouterr()
    assert "9 records in the period" in capsys.readouterr().out
    # with Chromium on the machine the pack carries report.pdf, and verify checks it like any file
    assert (out / "report.pdf").exists() == Path("/usr/bin/chromium").exists()
    assert cli_main(["evidence", "verify", str(out) + ".zip", "--public-key", str(key)]) == 0
    assert "VERIFIED: intact and complete" in capsys.readouterr().out
    (out / "records.jsonl").write_text("")
    assert cli_main(["evidence", "verify", str(out), "--public-key", str(key)]) == 1
    assert "missing from records.jsonl" in capsys.readouterr().out
    assert cli_main(["evidence", "verify", str(out)]) == 2
    wrong = store.dsn.replace(postgres.DB_USER + ":", "nobody:")
    bad = ["evidence", "build", "--dsn", wrong, "--tenant", "acme", "--out", str(tmp_path / "x")]
    bad += ["--start", "2026-11-01", "--end", "2026-12-01", "--public-key", str(key)]
    assert cli_main(bad) == 1
    err = capsys.readouterr().err
    assert postgres.password(PROFILE, postgres.DB_USER) not in err


def _bulk(store: AuditStore, events: Iterator[dict[str, Any]], count: int, first_at: datetime) -> None:
    """``count`` records by COPY (the chain built here, as the store would), then one seal."""
    records = store.records(max(store.head()[0], 1)) if store.head()[0] else []
    seq, prev_hash = (records[-1]["seq"], records[-1]["hash"]) if records else (0, GENESIS_HASH)
    with psycopg.connect(store.dsn) as conn, conn.cursor() as cursor:
        with cursor.copy(f"COPY audit_record ({', '.join(RECORD_FIELDS)}) FROM STDIN") as copy:
            for _ in range(count):
                seq += 1
                moment = first_at + timedelta(milliseconds=seq)
                record = link_record(next(events), seq=seq, at=format_at(moment), prev_hash=prev_hash)
                prev_hash = record.hash
                values = {**record.to_dict(), "at": moment, "details": canonical_json(record.details)}
                copy.write_row(tuple(values[name] for name in RECORD_FIELDS))
        conn.commit()


def test_build_and_verify_a_tenant_among_ten_times_as_many(store: AuditStore, tmp_path: Path) -> None:
    def events() -> Iterator[dict[str, Any]]:
        n = 0
        while True:
            n += 1
            yield validate_event(_event("acme" if n % 10 == 0 else f"tenant{n % 7}", n))

    stream = events()
    first_at = datetime(2026, 11, 1, tzinfo=UTC)
    seal_seconds = []
    for _ in range(10):
        _bulk(store, stream, SCALE // 10, first_at)
        began = time.perf_counter()
        store.seal(SIGNER)
        seal_seconds.append(time.perf_counter() - began)
    last_at = datetime.fromisoformat(store.checkpoints()[-1]["at"].replace("Z", "+00:00"))
    began = time.perf_counter()
    result = build_pack(
        store,
        tenant="acme",
        start=datetime(2026, 10, 1, tzinfo=UTC),
        end=last_at,
        keys=KEYS,
        out_dir=tmp_path / "pack",
        parallel=False,
    )
    build_seconds = time.perf_counter() - began
    began = time.perf_counter()
    report = verify_pack(result.path, [SIGNER.public_key])
    verify_seconds = time.perf_counter() - began
    size = sum(p.stat().st_size for p in result.path.rglob("*") if p.is_file())
    print(
        f"\nevidence pack, {SCALE // 10:,} of {SCALE:,} records (10 segments): seal per segment "
        f"median {sorted(seal_seconds)[5] * 1000:.0f} ms; build {build_seconds:.2f} s (chain verify "
        f"{result.verify_seconds:.2f} s, write+self-check {result.write_seconds:.2f} s); "
        f"offline verify {verify_seconds:.2f} s; pack {size / 1e6:.1f} MB"
    )
    assert report.complete, str(report)
    assert result.records == SCALE // 10
