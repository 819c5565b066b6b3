"""Checkpoint signatures that a task cannot forge: asymmetric keys, verified with the public key alone.

A checkpoint used to be an HMAC made with a key every task could read through the secrets backend,
so whoever could rewrite the tables could also re-sign them. Now the private key is reachable only
by the sealing step (capability ``audit-seal``, its own secret path or KMS key, see docs/audit.md),
and anyone holding the public key (published next to the export) can check a checkpoint.

Signers (:class:`CheckpointSigner`):

- :class:`Ed25519Signer`: a local Ed25519 private key (PEM), e.g. read from the ``audit-seal``
  secret; algorithm :data:`ED25519`;
- :class:`KmsSigner`: AWS KMS ``Sign`` with an asymmetric ``ECC_NIST_P256`` key
  (``ECDSA_SHA_256``, message type ``RAW``); the private key never leaves KMS; algorithm
  :data:`ECDSA_P256_SHA256`.

A checkpoint names its ``key_id`` (:func:`key_fingerprint` of the public key: ``sha256:`` and the
first 32 hex digits of the SHA-256 of its DER SubjectPublicKeyInfo) and its ``algorithm``, so the
verifier picks the public key by fingerprint and never trusts a key the checkpoint brings along.
:data:`HMAC_SHA256` names the legacy checkpoints written before; see docs/audit.md ("Upgrading").
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Final, Protocol

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

ED25519: Final = "ed25519"
ECDSA_P256_SHA256: Final = "ecdsa-p256-sha256"
HMAC_SHA256: Final = "hmac-sha256"
"""Legacy: checkpoints signed with a shared HMAC key before asymmetric signing (never written now)."""
ASYMMETRIC: Final = frozenset({ED25519, ECDSA_P256_SHA256})

KMS_KEY_SPEC: Final = "ECC_NIST_P256"
KMS_SIGNING_ALGORITHM: Final = "ECDSA_SHA_256"
KMS_MAX_MESSAGE_BYTES: Final = 4096
"""KMS Sign takes at most 4096 bytes of RAW message; a checkpoint's canonical JSON is ~500."""

PublicKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey


class CheckpointSigner(Protocol):
    """What :meth:`include.audit.store.AuditStore.seal` needs: an id, an algorithm and ``sign``."""

    @property
    def key_id(self) -> str: ...

    @property
    def algorithm(self) -> str: ...

    def sign(self, message: bytes) -> bytes: ...

    def public_key_pem(self) -> bytes: ...


def _der(public_key: PublicKey) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def key_fingerprint(public_key: PublicKey) -> str:
    """``sha256:<32 hex>`` of the DER SubjectPublicKeyInfo: the ``key_id`` checkpoints carry."""
    return "sha256:" + hashlib.sha256(_der(public_key)).hexdigest()[:32]


def public_key_pem(public_key: PublicKey) -> bytes:
    """The public key as PEM (``-----BEGIN PUBLIC KEY-----``)."""
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def algorithm_of(public_key: Any) -> str:
    """The checkpoint algorithm a public key verifies.

    :raises ValueError: a key type (or curve) checkpoints are never signed with.
    """
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return ED25519
    if isinstance(public_key, ec.EllipticCurvePublicKey) and isinstance(public_key.curve, ec.SECP256R1):
        return ECDSA_P256_SHA256
    raise ValueError(f"{type(public_key).__name__}: not an Ed25519 or NIST P-256 public key")


class Ed25519Signer:
    """Signs with a local Ed25519 private key.

    :param private_key_pem: the PKCS#8 PEM (unencrypted) of the key; never logged or kept as text.
    :raises ValueError: not a PEM private key, or not an Ed25519 one.
    """

    algorithm = ED25519

    def __init__(self, *, private_key_pem: bytes) -> None:
        try:
            key = serialization.load_pem_private_key(private_key_pem, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            # Not the library's message: it could quote part of what it was handed.
            raise ValueError("audit signing key: not an unencrypted PEM private key") from None
        if not isinstance(key, ed25519.Ed25519PrivateKey):
            raise ValueError(f"audit signing key: an Ed25519 key is required, got {type(key).__name__}")
        self._key = key

    @classmethod
    def generate(cls) -> Ed25519Signer:
        """A fresh key (tests, and the local stack's first start)."""
        return cls(private_key_pem=new_private_key_pem())

    @cached_property
    def public_key(self) -> ed25519.Ed25519PublicKey:
        return self._key.public_key()

    @property
    def key_id(self) -> str:
        return key_fingerprint(self.public_key)

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)

    def public_key_pem(self) -> bytes:
        return public_key_pem(self.public_key)

    def __repr__(self) -> str:
        return f"Ed25519Signer(key_id={self.key_id!r})"  # never the key


def new_private_key_pem() -> bytes:
    """A fresh Ed25519 private key as PKCS#8 PEM (the local stack's first start, tests)."""
    return private_key_pem(ed25519.Ed25519PrivateKey.generate())


def private_key_pem(key: ed25519.Ed25519PrivateKey) -> bytes:
    """PKCS#8 PEM of an Ed25519 private key (what the ``audit-seal`` secret holds)."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


class KmsSigner:
    """Signs with AWS KMS: ``Sign`` with an asymmetric ``ECC_NIST_P256`` key, ``ECDSA_SHA_256``.

    Lazy: no call until :attr:`public_key` or :meth:`sign` is first used.

    :param client: a boto3 KMS client with ``kms:Sign`` and ``kms:GetPublicKey`` on the key (the
        ``audit-seal`` capability's session).
    :param kms_key_id: the key's ARN, id or alias (``alias/orchestrator-audit-seal``).
    """

    algorithm = ECDSA_P256_SHA256

    def __init__(self, *, client: Any, kms_key_id: str) -> None:
        if not kms_key_id:
            raise ValueError("kms_key_id: the KMS key (ARN, id or alias) is required")
        self.client = client
        self.kms_key_id = kms_key_id

    @cached_property
    def public_key(self) -> ec.EllipticCurvePublicKey:
        """The key's public half from ``GetPublicKey``, checked to be a P-256 signing key."""
        response = self.client.get_public_key(KeyId=self.kms_key_id)
        if KMS_SIGNING_ALGORITHM not in response.get("SigningAlgorithms", []):
            raise ValueError(
                f"KMS key {self.kms_key_id}: not an {KMS_KEY_SPEC} key that signs {KMS_SIGNING_ALGORITHM}"
            )
        key = serialization.load_der_public_key(response["PublicKey"])
        if algorithm_of(key) != ECDSA_P256_SHA256 or not isinstance(key, ec.EllipticCurvePublicKey):
            raise ValueError(f"KMS key {self.kms_key_id}: not a NIST P-256 key")
        return key

    @property
    def key_id(self) -> str:
        return key_fingerprint(self.public_key)

    def sign(self, message: bytes) -> bytes:
        if len(message) > KMS_MAX_MESSAGE_BYTES:
            raise ValueError(
                f"checkpoint message of {len(message)} bytes: KMS signs at most {KMS_MAX_MESSAGE_BYTES}"
            )
        response = self.client.sign(
            KeyId=self.kms_key_id,
            Message=message,
            MessageType="RAW",
            SigningAlgorithm=KMS_SIGNING_ALGORITHM,
        )
        signature: bytes = response["Signature"]
        return signature

    def public_key_pem(self) -> bytes:
        return public_key_pem(self.public_key)


def load_public_key(pem: bytes, source: str = "public key") -> PublicKey:
    """A checkpoint public key from PEM.

    :param source: named in the error (a file name).
    :raises ValueError: not a PEM public key, or of a type checkpoints are not signed with.
    """
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ValueError(f"{source}: not a PEM public key (-----BEGIN PUBLIC KEY-----)") from None
    try:
        algorithm_of(key)
    except ValueError as error:
        raise ValueError(f"{source}: {error}") from None
    assert isinstance(key, ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey)
    return key


def load_public_key_files(paths: Iterable[Path]) -> dict[str, PublicKey]:
    """``{key_id: public key}`` of PEM files (one key each).

    :raises ValueError: a file that is not a checkpoint public key (naming it). :raises OSError.
    """
    keys: dict[str, PublicKey] = {}
    for path in paths:
        key = load_public_key(path.read_bytes(), str(path))
        keys[key_fingerprint(key)] = key
    return keys


def verify_signature(public_key: PublicKey, algorithm: str, signature: bytes, message: bytes) -> bool:
    """True when ``signature`` is ``public_key``'s over ``message`` with ``algorithm``."""
    try:
        if algorithm == ED25519 and isinstance(public_key, ed25519.Ed25519PublicKey):
            public_key.verify(signature, message)
            return True
        if algorithm == ECDSA_P256_SHA256 and isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
            return True
    except InvalidSignature:
        return False
    return False


def hmac_sha256(key: bytes, message: bytes) -> str:
    """Legacy checkpoint signature: HMAC-SHA256 (hex)."""
    return hmac.new(key, message, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class CheckpointKeys:
    """What the verifier may trust.

    :ivar public: ``{key_id: public key}`` of the asymmetric signing keys (current and rotated).
    :ivar legacy_hmac: ``{key_id: key}`` of retired HMAC keys (only to check legacy checkpoints;
        an HMAC checkpoint after the first asymmetric one is refused whatever keys are given).
    """

    public: Mapping[str, PublicKey] = field(default_factory=dict)
    legacy_hmac: Mapping[str, bytes] = field(default_factory=dict)

    @classmethod
    def of(cls, *public_keys: PublicKey, legacy_hmac: Mapping[str, bytes] | None = None) -> CheckpointKeys:
        """Keys by their fingerprints."""
        return cls({key_fingerprint(key): key for key in public_keys}, dict(legacy_hmac or {}))
