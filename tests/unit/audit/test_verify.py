"""A forged chain re-signed with anything a task can read fails verification, with the reason named.

What a task could read before issue 19: the HMAC key of connection ``audit_signing``, any other
connection's password; and anyone can make a fresh Ed25519 key. Each forgery rewrites a sealed
record, rebuilds the hash chain after it and re-signs every checkpoint; only the real public key is
trusted. Legacy HMAC checkpoints (before the upgrade) stay verifiable: by their key, or because an
asymmetric checkpoint after them pins them.
"""

from __future__ import annotations

from typing import Any

import pytest

from include.audit.memory import MemoryAuditLog
from include.audit.records import (
    GENESIS_HASH,
    build_checkpoint,
    checkpoint_message,
    record_hash,
)
from include.audit.signing import HMAC_SHA256, CheckpointKeys, Ed25519Signer, hmac_sha256
from include.audit.verify import CHECKPOINT_INVALID, INSERTED, NOT_VOUCHED, verify

REAL = Ed25519Signer.generate()
TRUSTED = CheckpointKeys.of(REAL.public_key)
OLD_HMAC_KEY = bytes(range(32))
AT = "2026-03-04T05:06:{:02d}.000000Z"


class HmacSigner:
    """What a task could sign with before: an HMAC key it read (or any connection password)."""

    algorithm = HMAC_SHA256

    def __init__(self, key: bytes, key_id: str) -> None:
        self.key, self.key_id = key, key_id

    def sign(self, message: bytes) -> bytes:
        return bytes.fromhex(hmac_sha256(self.key, message))

    def public_key_pem(self) -> bytes:
        raise NotImplementedError


def _log(signers: list[Any], per_seal: int = 5) -> MemoryAuditLog:
    log = MemoryAuditLog()
    n = 0
    for signer in signers:
        for _ in range(per_seal):
            log.append({"kind": "approval.answered", "actor": "alice", "details": {"n": n}}, at=AT.format(n))
            n += 1
        log.seal(signer, at=AT.format(n))
    return log


def _forge(log: MemoryAuditLog, signer: Any, *, seq: int = 3, key_id: str | None = None) -> tuple[list, list]:
    """Rewrite record ``seq`` (approved by mallory), relink everything after it, re-sign every checkpoint."""
    records = log.record_dicts()
    records[seq - 1] = {**records[seq - 1], "actor": "mallory"}
    prev = records[seq - 2]["hash"] if seq > 1 else GENESIS_HASH
    for record in records[seq - 1 :]:
        record["prev_hash"] = prev
        record["hash"] = prev = record_hash(record)
    checkpoints, prev_signature = [], GENESIS_HASH
    for old in log.checkpoints:
        checkpoint = build_checkpoint(
            checkpoint_seq=old.checkpoint_seq,
            last_seq=old.last_seq,
            last_hash=records[old.last_seq - 1]["hash"],
            count=old.count,
            at=old.at,
            prev_checkpoint_signature=prev_signature,
            signer=signer,
        ).to_dict()
        if key_id is not None:  # claims the real key's id
            checkpoint["key_id"] = key_id
        checkpoints.append(checkpoint)
        prev_signature = checkpoint["signature"]
    return records, checkpoints


def test_the_real_chain_verifies_with_the_public_key_alone() -> None:
    log = _log([REAL, REAL])
    report = verify(log.record_dicts(), log.checkpoint_dicts(), TRUSTED)
    assert report.ok, str(report)
    assert str(report).startswith("audit log intact: 10 records")


@pytest.mark.parametrize(
    ("signer", "claimed_id", "reason"),
    [
        pytest.param(
            HmacSigner(OLD_HMAC_KEY, "audit-key-1"), None, NOT_VOUCHED, id="old-hmac-key-of-audit_signing"
        ),
        pytest.param(
            HmacSigner(b"hunter2-the-rt-connection-password", "rt_default"),
            None,
            NOT_VOUCHED,
            id="any-connection-password",
        ),
        pytest.param(Ed25519Signer.generate(), None, "no trusted public key for key id", id="fresh-ed25519"),
        pytest.param(
            Ed25519Signer.generate(),
            REAL.key_id,
            f"bad signature (ed25519, key {REAL.key_id})",
            id="claims-our-id",
        ),
    ],
)
def test_a_forged_chain_resigned_with_what_a_task_can_read_fails(
    signer: Any, claimed_id: str | None, reason: str
) -> None:
    records, checkpoints = _forge(_log([REAL, REAL]), signer, key_id=claimed_id)
    assert verify(records, checkpoints, None).ok  # the chain alone cannot tell: hence the signatures

    report = verify(records, checkpoints, TRUSTED)
    assert not report.ok
    assert report.checkpoint_damage() == {(1, CHECKPOINT_INVALID), (2, CHECKPOINT_INVALID)}
    assert f"checkpoint 1: checkpoint_invalid ({reason}" in str(report)
    assert str(report).startswith("audit log DAMAGED")


def test_even_with_the_old_hmac_key_given_an_hmac_checkpoint_after_asymmetric_ones_is_forged() -> None:
    """A task still holding the old key appends its own HMAC checkpoint after an upgrade."""
    log = _log([HmacSigner(OLD_HMAC_KEY, "audit-key-1"), REAL, REAL])
    records, checkpoints = log.record_dicts(), log.checkpoint_dicts()
    keys = CheckpointKeys(TRUSTED.public, {"audit-key-1": OLD_HMAC_KEY})
    assert verify(records, checkpoints, keys).ok

    forged = build_checkpoint(
        checkpoint_seq=4,
        last_seq=15,
        last_hash=records[-1]["hash"],
        count=15,
        at=AT.format(59),
        prev_checkpoint_signature=checkpoints[-1]["signature"],
        signer=HmacSigner(OLD_HMAC_KEY, "audit-key-1"),
    ).to_dict()
    report = verify(records, [*checkpoints, forged], keys)
    assert report.checkpoint_damage() == {(4, CHECKPOINT_INVALID)}
    assert (
        "checkpoint 4: checkpoint_invalid (HMAC-signed after asymmetric signing began (checkpoint 2)"
        in str(report)
    )


def test_legacy_hmac_checkpoints_are_pinned_by_the_first_asymmetric_one() -> None:
    """The upgrade: HMAC checkpoints 1-2, then the new signer. No HMAC key needed to verify."""
    legacy = HmacSigner(OLD_HMAC_KEY, "audit-key-1")
    log = _log([legacy, legacy, REAL])
    checkpoints = log.checkpoint_dicts()
    assert [c["algorithm"] for c in checkpoints] == ["hmac-sha256", "hmac-sha256", "ed25519"]
    # As stored before the upgrade: no algorithm field in what the HMAC covered.
    assert (
        hmac_sha256(
            OLD_HMAC_KEY, checkpoint_message({k: v for k, v in checkpoints[0].items() if k != "algorithm"})
        )
        == checkpoints[0]["signature"]
    )
    assert verify(log.record_dicts(), checkpoints, TRUSTED).ok

    # Before the first asymmetric seal, they are not trusted without their key.
    report = verify(log.record_dicts()[:10], checkpoints[:2], TRUSTED)
    assert report.checkpoint_damage() == {(1, CHECKPOINT_INVALID), (2, CHECKPOINT_INVALID)}
    assert NOT_VOUCHED in str(report)
    with_key = CheckpointKeys(TRUSTED.public, {"audit-key-1": OLD_HMAC_KEY})
    assert verify(log.record_dicts()[:10], checkpoints[:2], with_key).ok


def test_a_rewritten_legacy_segment_is_caught_by_the_asymmetric_checkpoint_after_it() -> None:
    legacy = HmacSigner(OLD_HMAC_KEY, "audit-key-1")
    log = _log([legacy, legacy, REAL])
    records = log.record_dicts()
    # The forger holds the old key: rewrites record 3, relinks, re-signs the HMAC checkpoints.
    forged_records, forged_checkpoints = _forge(log, legacy)
    forged_checkpoints[2] = log.checkpoint_dicts()[2]  # cannot re-sign the Ed25519 one
    report = verify(forged_records, forged_checkpoints, TRUSTED)
    assert not report.ok
    assert (3, "does not chain to checkpoint 2") in {(f.checkpoint, f.detail) for f in report.findings}
    assert (15, INSERTED) in report.damage()  # the sealed hash vouches for another record 15
    assert records[2]["actor"] == "alice"
