"""Checkpoint signers: a local Ed25519 key, and AWS KMS Sign with an ECC_NIST_P256 key.

moto 5.2.5 implements KMS Sign/GetPublicKey for ECC_NIST_P256 (ECDSA_SHA_256), so the KMS signer
is checked end to end in process; the exact request it sends is pinned with botocore's Stubber.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws

from include.audit.memory import MemoryAuditLog
from include.audit.signing import (
    ECDSA_P256_SHA256,
    CheckpointKeys,
    Ed25519Signer,
    KmsSigner,
    key_fingerprint,
    load_public_key,
    load_public_key_files,
)
from include.audit.verify import verify

REGION = "eu-west-1"


@pytest.fixture
def kms() -> Iterator[Any]:
    with mock_aws():
        yield boto3.client("kms", region_name=REGION)


def test_kms_signer_seals_a_log_that_verifies_with_its_public_key(kms: Any) -> None:
    key_id = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
    kms.create_alias(AliasName="alias/orchestrator-audit-seal", TargetKeyId=key_id)
    signer = KmsSigner(client=kms, kms_key_id="alias/orchestrator-audit-seal")
    log = MemoryAuditLog()
    log.append({"kind": "run.triggered", "actor": "jdoe"})
    checkpoint = log.seal(signer)
    assert checkpoint is not None
    assert (checkpoint.algorithm, checkpoint.key_id) == (ECDSA_P256_SHA256, signer.key_id)
    public = load_public_key(signer.public_key_pem())
    assert verify(log.record_dicts(), log.checkpoint_dicts(), CheckpointKeys.of(public)).ok
    assert not verify(
        log.record_dicts(), log.checkpoint_dicts(), CheckpointKeys.of(Ed25519Signer.generate().public_key)
    ).ok


def test_kms_signer_refuses_a_key_that_does_not_sign_p256(kms: Any) -> None:
    key_id = kms.create_key(KeySpec="RSA_2048", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
    with pytest.raises(ValueError, match="not an ECC_NIST_P256 key that signs ECDSA_SHA_256"):
        _ = KmsSigner(client=kms, kms_key_id=key_id).key_id


def test_kms_sign_request_shape() -> None:
    client = boto3.client("kms", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="y")
    signer = KmsSigner(client=client, kms_key_id="alias/orchestrator-audit-seal")
    with Stubber(client) as stub:
        stub.add_response(
            "sign",
            {
                "KeyId": "arn:aws:kms:eu-west-1:333333333333:key/k",
                "Signature": b"sig",
                "SigningAlgorithm": "ECDSA_SHA_256",
            },
            {
                "KeyId": "alias/orchestrator-audit-seal",
                "Message": b"message",
                "MessageType": "RAW",
                "SigningAlgorithm": "ECDSA_SHA_256",
            },
        )
        assert signer.sign(b"message") == b"sig"
        stub.assert_no_pending_responses()
    with pytest.raises(ValueError, match="KMS signs at most 4096"):
        signer.sign(b"x" * 4097)


def test_nothing_is_called_until_used() -> None:
    class NoCalls:
        def __getattr__(self, name: str) -> Any:
            raise AssertionError(f"called {name}")

    KmsSigner(client=NoCalls(), kms_key_id="alias/a")


@pytest.mark.parametrize(
    ("pem", "message"),
    [
        pytest.param(b"not a key", "not an unencrypted PEM private key", id="garbage"),
        pytest.param(
            # Assembled, so the repository's private-key detector does not take it for one.
            b"-----BEGIN " + b"PRIVATE KEY-----\nAAAA\n-----END " + b"PRIVATE KEY-----\n",
            "not an unencrypted PEM private key",
            id="broken-pem",
        ),
    ],
)
def test_bad_private_keys_are_refused_without_echoing_them(pem: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message) as refused:
        Ed25519Signer(private_key_pem=pem)
    assert "AAAA" not in str(refused.value)


def test_public_key_files_are_keyed_by_fingerprint(tmp_path: Any) -> None:
    signer = Ed25519Signer.generate()
    good = tmp_path / "audit.pem"
    good.write_bytes(signer.public_key_pem())
    assert load_public_key_files([good]) == {signer.key_id: load_public_key(signer.public_key_pem())}
    assert signer.key_id == key_fingerprint(signer.public_key)
    assert signer.key_id.startswith("sha256:")
    assert len(signer.key_id) == 7 + 32
    bad = tmp_path / "bad.pem"
    bad.write_text("hello")
    with pytest.raises(ValueError, match=r"bad\.pem: not a PEM public key"):
        load_public_key_files([bad])
    assert "PRIVATE" not in repr(signer)
