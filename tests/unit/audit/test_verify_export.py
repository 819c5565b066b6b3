"""``audit verify-export``: an auditor with only a copy of the bucket and the public key.

The segments are the export's own bytes (:func:`include.audit.export.segment_body` under
:func:`~include.audit.export.segment_key`), written to a folder as ``aws s3 sync`` would; the S3
read path is exercised against moto in tests/integration/audit/test_store.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from include.audit.export import segment_body, segment_key
from include.audit.memory import MemoryAuditLog
from include.audit.records import record_hash
from include.audit.signing import Ed25519Signer
from include.cli.__main__ import main as cli_main

SIGNER = Ed25519Signer.generate()


@pytest.fixture
def export(tmp_path: Path) -> tuple[Path, Path]:
    """Four sealed segments of 10 records, exported to ``tmp_path/copy``, and the public key."""
    log = MemoryAuditLog()
    root = tmp_path / "copy"
    first = 1
    for segment in range(4):
        for n in range(10):
            log.append({"kind": "run.triggered", "actor": "jdoe", "details": {"n": segment * 10 + n}})
        checkpoint = log.seal(SIGNER)
        assert checkpoint is not None
        path = root / segment_key(checkpoint.to_dict(), first)
        path.parent.mkdir(parents=True, exist_ok=True)
        records = [r.to_dict() for r in log.records[first - 1 : checkpoint.last_seq]]
        path.write_bytes(segment_body(records, checkpoint.to_dict()))
        first = checkpoint.last_seq + 1
    pem = tmp_path / "audit.pem"
    pem.write_bytes(SIGNER.public_key_pem())
    return root, pem


def _run(root: Path, pem: Path) -> int:
    return cli_main(["audit", "verify-export", "--dir", str(root), "--public-key", str(pem)])


def _segments(root: Path) -> list[Path]:
    return sorted(root.rglob("*.jsonl"), key=lambda p: int(p.name.split("-")[0]))


def test_an_intact_export_verifies_with_the_public_key_alone(
    export: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(*export) == 0
    assert capsys.readouterr().out.startswith("audit log intact: 40 records (last seq 40), 4 checkpoints")


def test_a_rewritten_and_rehashed_record_in_a_segment_is_named(
    export: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    root, pem = export
    path = _segments(root)[1]
    lines = path.read_text().splitlines()
    record = json.loads(lines[3])  # seq 14
    record["actor"] = "mallory"
    record["hash"] = record_hash(record)
    lines[3] = json.dumps(record)
    path.write_text("\n".join(lines) + "\n")
    assert _run(root, pem) == 1
    assert "record 14: inserted" in capsys.readouterr().out


def test_a_missing_segment_is_named(export: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    root, pem = export
    _segments(root)[2].unlink()
    assert _run(root, pem) == 1
    out = capsys.readouterr().out
    assert "records 21-30: deleted" in out
    assert "checkpoint 3: checkpoint_invalid" in out


def test_another_key_is_not_trusted(
    export: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, _ = export
    other = tmp_path / "other.pem"
    other.write_bytes(Ed25519Signer.generate().public_key_pem())
    assert _run(root, other) == 1
    assert "no trusted public key" in capsys.readouterr().out


def test_usage_errors_are_named(export: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    root, pem = export
    assert cli_main(["audit", "verify-export", "--dir", str(root)]) == 2
    assert "without a public key" in capsys.readouterr().err
    assert cli_main(["audit", "verify-export", "--public-key", str(pem)]) == 2
    assert "exactly one of --bucket and --dir" in capsys.readouterr().err
    assert cli_main(["audit", "verify-export", "--dir", str(root / "nope"), "--public-key", str(pem)]) == 2
    assert "not a folder" in capsys.readouterr().err
    (root / "x").mkdir()
    (root / "x" / "1-3.jsonl").write_text('{"seq": 1}\n')
    assert _run(root, pem) == 1
    assert "does not end with its checkpoint" in capsys.readouterr().err
