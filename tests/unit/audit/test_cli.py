"""``audit verify``: refuses to call a log intact without a public key, and says so when told
``--no-signatures``. The store is replaced by the in-memory log (the real one: tests/integration/audit)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from include.audit import store as audit_store
from include.audit.memory import MemoryAuditLog
from include.audit.signing import Ed25519Signer
from include.audit.verify import verify
from include.cli.__main__ import main as cli_main

SIGNER = Ed25519Signer.generate()


class _Store:
    log = MemoryAuditLog()

    def __init__(self, dsn: str, **_: Any) -> None:
        self.dsn = dsn

    def __enter__(self) -> _Store:
        return self

    def __exit__(self, *_: Any) -> None:
        return None

    def verify(self, keys: Any, *, after_checkpoint: int = 0) -> Any:
        assert after_checkpoint == 0  # what these tests ask for
        return verify(self.log.record_dicts(), self.log.checkpoint_dicts(), keys)


@pytest.fixture
def sealed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    log = MemoryAuditLog()
    for n in range(3):
        log.append({"kind": "run.triggered", "actor": "jdoe", "details": {"n": n}})
    log.seal(SIGNER)
    _Store.log = log
    monkeypatch.setattr(audit_store, "AuditStore", _Store)
    pem = tmp_path / "audit.pem"
    pem.write_bytes(SIGNER.public_key_pem())
    return pem


def test_without_a_public_key_verify_refuses(sealed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["audit", "verify", "--dsn", "postgresql://x@127.0.0.1:1/audit"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "refusing to call the log intact without a public key" in captured.err
    assert "--no-signatures" in captured.err


def test_no_signatures_checks_the_chain_and_says_so(sealed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["audit", "verify", "--dsn", "d", "--no-signatures"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("audit chain consistent: 3 records")
    assert "intact" not in out
    assert "checkpoint signatures NOT checked (--no-signatures)" in out


def test_with_the_public_key_the_log_is_intact(sealed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["audit", "verify", "--dsn", "d", "--public-key", str(sealed)]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("audit log intact: 3 records")
    assert f"trusting public key {SIGNER.key_id}" in captured.err


def test_another_public_key_names_the_checkpoint(
    sealed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "other.pem"
    other.write_bytes(Ed25519Signer.generate().public_key_pem())
    assert cli_main(["audit", "verify", "--dsn", "d", "--public-key", str(other)]) == 1
    assert (
        f"checkpoint 1: checkpoint_invalid (no trusted public key for key id '{SIGNER.key_id}'"
        in capsys.readouterr().out
    )


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        pytest.param(["--public-key", "PEM", "--no-signatures"], "contradict each other", id="both"),
        pytest.param(["--public-key", "missing.pem"], "missing.pem", id="missing-file"),
    ],
)
def test_usage_errors(
    sealed: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    args = [str(sealed) if arg == "PEM" else arg for arg in extra]
    assert cli_main(["audit", "verify", "--dsn", "d", *args]) == 2
    assert message in capsys.readouterr().err
