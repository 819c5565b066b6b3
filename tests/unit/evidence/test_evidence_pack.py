"""Build and verify evidence packs on an in-memory chain: what a pack holds, and every tampering named.

The store here is :class:`MemoryStore`: the in-memory chain (include/audit/memory.py) sealed with the
same commitment maths as :meth:`include.audit.store.AuditStore.seal`; the real PostgreSQL store is
in tests/integration/evidence/.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from include.audit.memory import MemoryAuditLog
from include.audit.records import (
    GENESIS_HASH,
    build_checkpoint,
    canonical_json,
    checkpoint_message,
    format_at,
)
from include.audit.signing import CheckpointKeys, Ed25519Signer
from include.audit.verify import verify
from include.evidence.pack import EvidencePackError, PackResult, build_pack, sha256_file
from include.evidence.proof import TenantCommitment, commit_segment, covering_checkpoints
from include.evidence.verify import verify_pack

SIGNER = Ed25519Signer.generate()
KEYS = CheckpointKeys.of(SIGNER.public_key)
T0 = datetime(2026, 11, 1, tzinfo=UTC)


class MemoryStore:
    """The parts of AuditStore that build_pack uses, over a MemoryAuditLog."""

    def __init__(self) -> None:
        self.log = MemoryAuditLog()
        self.commitments: list[TenantCommitment] = []
        self.checkpoint_list: list[dict[str, Any]] = []
        self.clock = T0 - timedelta(days=1)

    def tick(self, minutes: int = 1) -> str:
        self.clock += timedelta(minutes=minutes)
        return format_at(self.clock)

    def append(self, tenant: str | None, kind: str = "task.finished", domain: str = "soc") -> dict[str, Any]:
        return self.log.append(
            {
                "kind": kind,
                "actor": "worker",
                "tenant": tenant,
                "domain": domain,
                "details": {"marker": f"{tenant}-marker-{len(self.log.records) + 1}"},
            },
            at=self.tick(),
        ).to_dict()

    def seal(self, *, legacy: bool = False) -> None:
        last = self.checkpoint_list[-1] if self.checkpoint_list else None
        last_seq = last["last_seq"] if last else 0
        number = len(self.checkpoint_list) + 1
        rows = [(r.seq, r.hash, r.tenant) for r in self.log.records if r.seq > last_seq]
        known = {c.tenant: c.since for c in self.commitments if c.checkpoint_seq == number - 1}
        root, commitments = commit_segment(number, rows, known)
        checkpoint = build_checkpoint(
            checkpoint_seq=number,
            last_seq=self.log.records[-1].seq,
            last_hash=self.log.records[-1].hash,
            count=len(self.log.records),
            at=self.tick(),
            prev_checkpoint_signature=last["signature"] if last else GENESIS_HASH,
            signer=SIGNER,
            tenant_root=None if legacy else root,
        )
        self.checkpoint_list.append(checkpoint.to_dict())
        if not legacy:
            self.commitments.extend(commitments)

    def checkpoints(self) -> list[dict[str, Any]]:
        return [dict(cp) for cp in self.checkpoint_list]

    def verify(self, keys: CheckpointKeys, *, after_checkpoint: int = 0, parallel: bool | None = None) -> Any:
        return verify(self.log.record_dicts(), self.checkpoints(), keys)

    def tenant_evidence(self, tenant: str | None, *, start: datetime, end: datetime) -> Any:
        checkpoints = self.checkpoints()
        newest = checkpoints[-1]["last_seq"] if checkpoints else 0
        unsealed = sum(1 for r in self.log.records if r.seq > newest and r.at < format_at(end))
        cover = covering_checkpoints(checkpoints, start=format_at(start), end=format_at(end))
        assert cover is not None
        first, last = cover
        low = checkpoints[first - 2]["last_seq"] if first > 1 else 0
        high = checkpoints[last - 1]["last_seq"]
        records = [r.to_dict() for r in self.log.records if low < r.seq <= high and r.tenant == tenant]
        commitments = [
            c for c in self.commitments if c.tenant == tenant and first <= c.checkpoint_seq <= last
        ]
        return checkpoints, commitments, records, unsealed


def _mixed_store() -> MemoryStore:
    """October (legacy-free), then November for acme and globex, sealed every few records."""
    store = MemoryStore()
    store.append("acme")
    store.append(None, kind="auth.login_refused", domain="platform")
    store.seal()  # checkpoint 1: before the period
    for day in range(3):
        store.clock = T0 + timedelta(days=day * 10, hours=1)
        for n in range(6):
            store.append("acme" if n % 2 else "globex", domain="hr" if n % 3 else "soc")
        store.seal()
    store.clock = T0 + timedelta(days=31)
    store.append("globex")
    store.append("acme")
    store.seal()  # after the period's end
    return store


def _build(store: MemoryStore, tmp_path: Path, tenant: str | None = "acme", **kwargs: Any) -> PackResult:
    return build_pack(
        store,
        tenant=tenant,
        start=T0,
        end=T0 + timedelta(days=30),
        keys=KEYS,
        out_dir=tmp_path / "pack",
        report=False,
        **kwargs,
    )


def _records(pack: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (pack / "records.jsonl").read_text().splitlines()]


def _rehash_manifest(pack: Path) -> None:
    """What a forger does after editing a file: recompute every hash of the manifest."""
    manifest = json.loads((pack / "manifest.json").read_text())
    manifest["files"] = {
        name: sha256_file(pack / name) for name in manifest["files"] if (pack / name).exists()
    }
    (pack / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    (pack / "SHA256SUMS").write_text("".join(f"{d}  {n}\n" for n, d in manifest["files"].items()))


def test_the_pack_holds_every_record_of_the_tenant_and_nothing_of_the_others(tmp_path: Path) -> None:
    store = _mixed_store()
    result = _build(store, tmp_path)
    acme = [r.to_dict() for r in store.log.records if r.tenant == "acme" and r.seq > 2]
    assert _records(result.path) == acme  # the last segment's record after the period is in too
    assert (result.records, result.records_in_period) == (10, 9)
    assert (result.first_checkpoint, result.last_checkpoint) == (2, 5)
    assert result.complete
    assert not result.warnings
    report = verify_pack(result.path, [SIGNER.public_key])
    assert report.complete, str(report)
    text = "\n".join(p.read_bytes().decode("utf-8", "replace") for p in result.path.rglob("*") if p.is_file())
    assert "globex" not in text
    for record in store.log.records:
        if record.tenant != "acme":
            assert f"{record.tenant}-marker-{record.seq}" not in text
            assert f'"seq":{record.seq},' not in text
    summary = json.loads((result.path / "summary.json").read_text())
    assert summary["records_in_period"] == 9
    assert summary["segments_committed"] == 4


def test_two_tenants_packs_are_disjoint(tmp_path: Path) -> None:
    store = _mixed_store()
    acme = _build(store, tmp_path / "a")
    globex = _build(store, tmp_path / "g", tenant="globex")
    acme_seqs = {r["seq"] for r in _records(acme.path)}
    globex_seqs = {r["seq"] for r in _records(globex.path)}
    assert acme_seqs
    assert globex_seqs
    assert acme_seqs.isdisjoint(globex_seqs)
    assert verify_pack(globex.path, KEYS).complete
    acme_proof = json.loads((acme.path / "proof.json").read_text())
    globex_proof = json.loads((globex.path / "proof.json").read_text())
    for a, g in zip(acme_proof["segments"], globex_proof["segments"], strict=True):
        assert a["commitment"]["salt"] != g["commitment"]["salt"]
        assert a["commitment"]["index"] != g["commitment"]["index"]


def test_the_platform_pack_and_a_domain_pack(tmp_path: Path) -> None:
    store = _mixed_store()
    platform = _build(store, tmp_path / "p", tenant=None)
    assert verify_pack(platform.path, [SIGNER.public_key]).ok
    hr = _build(store, tmp_path / "hr", domain="hr")
    records = _records(hr.path)
    assert records
    assert all(r["domain"] == "hr" for r in records)
    report = verify_pack(hr.path, [SIGNER.public_key])
    assert report.complete, str(report)
    assert any("withheld" in note for note in report.notes)


@pytest.mark.parametrize("forge_manifest", [False, True], ids=["as-is", "manifest-rehashed"])
def test_a_deleted_record_is_named(tmp_path: Path, forge_manifest: bool) -> None:
    result = _build(_mixed_store(), tmp_path)
    lines = (result.path / "records.jsonl").read_text().splitlines(keepends=True)
    gone = json.loads(lines[4])["seq"]
    (result.path / "records.jsonl").write_text("".join(lines[:4] + lines[5:]))
    if forge_manifest:
        _rehash_manifest(result.path)
    report = verify_pack(result.path, [SIGNER.public_key])
    assert not report.ok
    assert any(f"record seq {gone}: missing from records.jsonl" in p for p in report.problems), str(report)
    assert any("manifest mismatch: records.jsonl" in p for p in report.problems) is not forge_manifest


def test_a_record_deleted_from_records_and_proof_is_a_count_mismatch(tmp_path: Path) -> None:
    result = _build(_mixed_store(), tmp_path)
    records = _records(result.path)
    gone = records[4]["seq"]
    (result.path / "records.jsonl").write_text(
        "".join(canonical_json(r) + "\n" for r in records if r["seq"] != gone)
    )
    proof = json.loads((result.path / "proof.json").read_text())
    for segment in proof["segments"]:
        segment["records"] = [pair for pair in segment["records"] if pair[0] != gone]
    (result.path / "proof.json").write_text(json.dumps(proof))
    _rehash_manifest(result.path)
    report = verify_pack(result.path, [SIGNER.public_key])
    assert any("is not the committed one" in p and "listed" in p for p in report.problems), str(report)


def test_one_altered_byte_is_named_with_its_seq_and_file(tmp_path: Path) -> None:
    result = _build(_mixed_store(), tmp_path)
    text = (result.path / "records.jsonl").read_text()
    lines = text.splitlines(keepends=True)
    seq = json.loads(lines[2])["seq"]
    lines[2] = lines[2].replace('"worker"', '"wOrker"')
    (result.path / "records.jsonl").write_text("".join(lines))
    report = verify_pack(result.path, [SIGNER.public_key])
    assert (
        f"record seq {seq} (records.jsonl line 3): altered (its content does not hash to its hash)"
        in report.problems
    )
    assert "manifest mismatch: records.jsonl (its sha256 is not the manifest's: altered)" in report.problems


def test_a_record_of_another_tenant_added_is_named_foreign(tmp_path: Path) -> None:
    store = _mixed_store()
    result = _build(store, tmp_path)
    theirs = next(r.to_dict() for r in store.log.records if r.tenant == "globex" and r.seq > 3)
    records = sorted([*_records(result.path), theirs], key=lambda r: r["seq"])
    (result.path / "records.jsonl").write_text("".join(canonical_json(r) + "\n" for r in records))
    _rehash_manifest(result.path)
    report = verify_pack(result.path, [SIGNER.public_key])
    assert any(
        f"record seq {theirs['seq']}" in p and "belongs to tenant 'globex'" in p for p in report.problems
    )
    relabelled = {**theirs, "tenant": "acme"}
    records = sorted([*_records(result.path)[:-1], relabelled], key=lambda r: r["seq"])
    (result.path / "records.jsonl").write_text("".join(canonical_json(r) + "\n" for r in records))
    assert not verify_pack(result.path, [SIGNER.public_key]).ok


def test_a_bad_signature_and_a_foreign_key_are_named(tmp_path: Path) -> None:
    result = _build(_mixed_store(), tmp_path)
    other = Ed25519Signer.generate()
    report = verify_pack(result.path, [other.public_key])
    assert any("not a trusted key" in p for p in report.problems)
    proof = json.loads((result.path / "proof.json").read_text())
    proof["checkpoints"][1]["count"] += 1
    (result.path / "proof.json").write_text(json.dumps(proof))
    report = verify_pack(result.path, [SIGNER.public_key])
    assert any(p.startswith("checkpoint 2: bad signature") for p in report.problems), str(report)


def test_a_dropped_segment_or_leaf_is_named(tmp_path: Path) -> None:
    result = _build(_mixed_store(), tmp_path)
    proof = json.loads((result.path / "proof.json").read_text())
    dropped = proof["segments"][1]
    proof["segments"][1]["commitment"] = None
    proof["segments"][1]["records"] = []
    (result.path / "proof.json").write_text(json.dumps(proof))
    report = verify_pack(result.path, [SIGNER.public_key])
    number = dropped["checkpoint_seq"]
    assert any(
        f"segment of checkpoint {number}" in p and "commitment is missing" in p for p in report.problems
    )
    assert any("foreign record: not in the tenant's commitment" in p for p in report.problems), str(report)
    proof["segments"].pop(1)  # the whole segment gone
    (result.path / "proof.json").write_text(json.dumps(proof))
    report = verify_pack(result.path, [SIGNER.public_key])
    assert any("segments are not those of checkpoints" in p for p in report.problems)


def test_a_tampered_store_fails_the_build_loudly(tmp_path: Path) -> None:
    store = _mixed_store()
    victim = next(i for i, r in enumerate(store.log.records) if r.tenant == "acme" and r.seq > 5)
    del store.log.records[victim]
    with pytest.raises(EvidencePackError, match="damaged, no pack built"):
        _build(store, tmp_path)
    assert not (tmp_path / "pack").exists()


def test_unsealed_records_of_the_period_refuse_the_build(tmp_path: Path) -> None:
    store = _mixed_store()
    store.checkpoint_list.pop()  # the seal after the period's end has not run yet
    store.clock = T0 + timedelta(days=29)
    store.append("acme")
    with pytest.raises(EvidencePackError, match="not sealed yet"):
        _build(store, tmp_path)


def test_legacy_segments_are_flagged_as_unproven(tmp_path: Path) -> None:
    store = MemoryStore()
    store.append("acme")
    store.seal(legacy=True)
    store.clock = T0 + timedelta(hours=1)
    store.append("acme")
    store.append("globex")
    store.seal(legacy=True)
    store.clock = T0 + timedelta(days=2)
    store.append("acme")
    store.seal()
    store.clock = T0 + timedelta(days=31)
    store.append("acme")
    store.seal()
    result = _build(store, tmp_path)
    assert not result.complete
    assert any("sealed before per-tenant commitments" in w for w in result.warnings)
    report = verify_pack(result.path, [SIGNER.public_key])
    assert report.ok
    assert not report.complete


def test_the_period_ending_after_the_newest_checkpoint_is_a_warning(tmp_path: Path) -> None:
    store = _mixed_store()
    store.checkpoint_list.pop()
    store.log.records = store.log.records[:-2]
    result = _build(store, tmp_path)
    assert not result.complete
    assert any("cannot be shown complete" in w for w in result.warnings)


def test_a_signed_manifest_covers_the_summary(tmp_path: Path) -> None:
    result = _build(_mixed_store(), tmp_path, signer=SIGNER)
    assert verify_pack(result.path, [SIGNER.public_key]).complete
    summary = json.loads((result.path / "summary.json").read_text())
    summary["records_in_period"] = 1
    (result.path / "summary.json").write_text(json.dumps(summary))
    _rehash_manifest(result.path)
    report = verify_pack(result.path, [SIGNER.public_key])
    assert "manifest.sig: bad signature over manifest.json" in report.problems


def test_a_file_added_to_the_pack_is_named(tmp_path: Path) -> None:
    result = _build(_mixed_store(), tmp_path)
    (result.path / "extra.txt").write_text("x")
    assert (
        "manifest mismatch: extra.txt is in the pack but not in the manifest (added)"
        in verify_pack(result.path, [SIGNER.public_key]).problems
    )


DOCS = Path(__file__).resolve().parents[3] / "docs" / "evidence.md"


def _documented_script(tmp_path: Path) -> Path:
    """The shell procedure exactly as docs/evidence.md prints it."""
    text = DOCS.read_text()
    block = text.split("<!-- evidence-verify.sh -->\n```bash\n", 1)[1].split("\n```\n", 1)[0]
    script = tmp_path / "evidence-verify.sh"
    script.write_text(block + "\n")
    return script


def _shell(script: Path, pack: Path, key: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(script), str(pack), str(key)], capture_output=True, text=True, check=False, timeout=300
    )


@pytest.mark.skipif(
    any(shutil.which(tool) is None for tool in ("openssl", "jq", "xxd", "sha256sum")),
    reason="openssl, jq, xxd or sha256sum not installed",
)
def test_the_documented_shell_procedure_agrees_with_verify_pack(tmp_path: Path) -> None:
    """docs/evidence.md, 'Without this code': good packs pass, each tampering is named."""
    script = _documented_script(tmp_path)
    key = tmp_path / "platform.pem"
    key.write_bytes(SIGNER.public_key_pem())
    store = _mixed_store()
    signed = _build(store, tmp_path / "signed", signer=SIGNER).path
    checked = _shell(script, signed, key)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.strip() == "OK: intact and complete"
    assert _shell(script, _build(store, tmp_path / "hr", domain="hr").path, key).returncode == 0

    def tampered(name: str, change: Any) -> subprocess.CompletedProcess[str]:
        pack = _build(store, tmp_path / name).path
        records = _records(pack)
        change(pack, records)
        _rehash_manifest(pack)
        assert not verify_pack(pack, [SIGNER.public_key]).ok
        return _shell(script, pack, key)

    def write(pack: Path, records: list[dict[str, Any]]) -> None:
        (pack / "records.jsonl").write_text("".join(canonical_json(r) + "\n" for r in records))

    gone = _records(signed)[3]["seq"]
    deleted = tampered("deleted", lambda pack, records: write(pack, [r for r in records if r["seq"] != gone]))
    assert deleted.returncode == 1
    assert f"FAIL: record seq {gone} missing" in deleted.stdout

    altered_seq = _records(signed)[1]["seq"]

    def alter(pack: Path, records: list[dict[str, Any]]) -> None:
        lines = (pack / "records.jsonl").read_text().splitlines(keepends=True)
        lines[1] = lines[1].replace('"worker"', '"wOrker"')
        (pack / "records.jsonl").write_text("".join(lines))

    altered = tampered("altered", alter)
    assert f"FAIL: record seq {altered_seq} altered (records.jsonl)" in altered.stdout
    theirs = next(r.to_dict() for r in store.log.records if r.tenant == "globex" and r.seq > 3)
    foreign = tampered(
        "foreign", lambda pack, records: write(pack, sorted([*records, theirs], key=lambda r: r["seq"]))
    )
    assert f"FAIL: record seq {theirs['seq']}: belongs to tenant globex" in foreign.stdout

    def resign(pack: Path, records: list[dict[str, Any]]) -> None:
        proof = json.loads((pack / "proof.json").read_text())
        proof["checkpoints"][1]["count"] += 1
        (pack / "proof.json").write_text(json.dumps(proof))
        (pack / "checkpoints" / "2.msg").write_bytes(checkpoint_message(proof["checkpoints"][1]))

    forged = tampered("forged", resign)
    assert "FAIL: checkpoint 2: bad signature" in forged.stdout
    unsigned = tmp_path / "unsigned"
    shutil.copytree(signed, unsigned)
    (unsigned / "summary.json").write_text("{}")
    _rehash_manifest(unsigned)
    assert "FAIL: manifest.sig: bad signature" in _shell(script, unsigned, key).stdout


def test_a_manifest_naming_files_outside_the_pack_is_refused(tmp_path: Path) -> None:
    result = _build(_mixed_store(), tmp_path)
    manifest = json.loads((result.path / "manifest.json").read_text())
    manifest["files"]["../outside.txt"] = "0" * 64
    (result.path / "manifest.json").write_text(json.dumps(manifest))
    report = verify_pack(result.path, KEYS)
    assert "manifest mismatch: '../outside.txt' is not a plain file inside the pack" in report.problems
