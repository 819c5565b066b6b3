"""The audit record and checkpoint schema, and their one canonical form.

An auditor must be able to recompute every hash and signature from the stored fields alone, years
later and in another language, so there is exactly one byte form of a record:
``json.dumps(record_without_hash, sort_keys=True, separators=(",", ":"), ensure_ascii=False)``
encoded as UTF-8. ``hash`` is the SHA-256 of that form and ``prev_hash`` is the hash of the record
before it (64 zeros for the first): a hash chain, in the spirit of CloudTrail log file integrity
validation. A checkpoint (CloudTrail's "digest") seals the chain up to a record with an asymmetric
signature (Ed25519, or ECDSA P-256 in KMS: :mod:`include.audit.signing`) that only the sealing step
can make; checkpoints chain too.

Records are refused (``ValueError`` naming the field) when they could not be hashed the same way
twice (details that are not plain JSON) or when they would put a credential into a log that is
kept for years and exported to write-once storage (a details key named like a secret, or a value
in a known token format). :func:`redact_details` replaces just such values with :data:`REDACTED`
first (what :func:`include.audit.emit.emit` does), so the rest of the details is kept.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Required, TypedDict

from include.audit.signing import HMAC_SHA256, CheckpointSigner
from include.policies.secret_scan import secrets_in_value

GENESIS_HASH: Final = "0" * 64
"""``prev_hash`` of the first record and ``prev_checkpoint_signature`` of the first checkpoint."""

AT_FORMAT: Final = "%Y-%m-%dT%H:%M:%S.%fZ"
"""Timestamps: UTC, ISO-8601, always with microseconds (``2026-03-04T05:06:07.123456Z``)."""

MAX_DETAILS_BYTES: Final = 64 * 1024
"""A record is an event, not a payload: plans and outputs go to their own stores, by reference."""

REDACTED: Final = "[redacted]"
"""What replaces a credential-looking value (or the value of a key named like a secret)."""
AUDIT_SPOOL_QUARANTINED: Final = "audit.spool_quarantined"
"""A spooled line that was unsigned, altered or unreadable: moved aside, never appended as written."""

# Kinds the orchestrator writes; other dotted lower-case kinds are accepted (new event types
# should not need a schema change), these are the ones reports and queries rely on.
RUN_TRIGGERED: Final = "run.triggered"
APPROVAL_REQUESTED: Final = "approval.requested"
APPROVAL_ANSWERED: Final = "approval.answered"
APPROVAL_ESCALATED: Final = "approval.escalated"
APPROVAL_SECOND_FACTOR: Final = "approval.second_factor"
"""An approval answer Airflow accepted carried a one-time code the MFA server verified (which token)."""
SIDE_EFFECT: Final = "side_effect"
TASK_FINISHED: Final = "task.finished"
POLICY_VIOLATION: Final = "policy.violation"
MANUAL_CHANGE: Final = "manual.change"
API_REFUSED: Final = "api.refused"
"""A task or run state set, or tasks cleared, by hand through the REST API (who, what, where)."""
AUTH_BREAK_GLASS: Final = "auth.break_glass"
"""The break-glass local admin logged in (UI or token): who, how (include/auth/security.py)."""
AUTH_LOGIN_REFUSED: Final = "auth.login_refused"
"""A login a leaver or an attacker would make: a locked directory account, a wrong break-glass password."""
INTAKE_STARTED: Final = "intake.started"
"""An event from a queue (include/intake/) started a workflow run: source, event id, message id."""
INTAKE_DUPLICATE: Final = "intake.duplicate"
"""An event whose run already exists (sent twice, or redelivered): nothing new was started."""
INTAKE_REJECTED: Final = "intake.rejected"
"""An event refused before any run (invalid, unknown kind, params refused): dead-lettered, with the reason."""
NOTIFICATION_FAILED: Final = "notification.failed"
"""A Teams card or PagerDuty event that still failed after the connector's retries (approvals/channels.py)."""
KNOWN_KINDS: Final = frozenset(
    {
        NOTIFICATION_FAILED,
        INTAKE_STARTED,
        INTAKE_DUPLICATE,
        INTAKE_REJECTED,
        RUN_TRIGGERED,
        APPROVAL_REQUESTED,
        APPROVAL_ANSWERED,
        APPROVAL_ESCALATED,
        APPROVAL_SECOND_FACTOR,
        SIDE_EFFECT,
        TASK_FINISHED,
        POLICY_VIOLATION,
        MANUAL_CHANGE,
        API_REFUSED,
        AUTH_BREAK_GLASS,
        AUTH_LOGIN_REFUSED,
        AUDIT_SPOOL_QUARANTINED,
    }
)
_KIND = re.compile(r"[a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)*")
_HEX64 = re.compile(r"[0-9a-f]{64}")

# The fields a caller supplies (``AuditStore.append``), then the ones the chain assigns.
EVENT_FIELDS: Final = (
    "kind",
    "actor",
    "domain",
    "tenant",
    "correlation_id",
    "dag_id",
    "run_id",
    "task_id",
    "subject",
    "details",
)
OPTIONAL_TEXT_FIELDS: Final = ("domain", "tenant", "correlation_id", "dag_id", "run_id", "task_id", "subject")
CHAIN_FIELDS: Final = ("seq", "at", "prev_hash", "hash")
RECORD_FIELDS: Final = ("seq", "at", *EVENT_FIELDS, "prev_hash", "hash")
CHECKPOINT_FIELDS: Final = (
    "checkpoint_seq",
    "last_seq",
    "last_hash",
    "count",
    "at",
    "key_id",
    "algorithm",
    "prev_checkpoint_signature",
    "signature",
)
CHECKPOINT_OPTIONAL_FIELDS: Final = ("tenant_root",)
"""Signed when present, left out of the message when absent (``None``): ``tenant_root`` is the root of
the per-tenant commitment tree of the checkpoint's segment (issue 25, :mod:`include.evidence.proof`);
checkpoints sealed before it carry none and their signatures stay what they were."""

# A details key whose last word names a credential ("password", "db_password", "apiKey"); a key
# ending in another word ("token_name", "secret_arn", "password_rotated_at") names a reference or
# a fact about one, which an audit trail legitimately records. Same rule as the source scanner.
_SECRET_KEY_NAME = re.compile(
    r"(?:^|_)(?:password|passwd|passphrase|pwd|secret|token|api_?key|secret_(?:access_)?key|"
    r"private_?key|signing_key|hmac_key|credentials?|authorization|cookie|bearer)$"
)


# json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False), NaN refused; one
# encoder instance instead of one per call (json.dumps builds a new one for non-default options).
_CANONICAL: Final = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
)


class AuditEvent(TypedDict, total=False):
    """What a caller hands to :meth:`include.audit.store.AuditStore.append`.

    ``kind`` and ``actor`` are required; the rest may be left out (stored as null).
    """

    kind: Required[str]
    actor: Required[str]
    domain: str | None
    tenant: str | None
    correlation_id: str | None
    dag_id: str | None
    run_id: str | None
    task_id: str | None
    subject: str | None
    details: dict[str, Any]


@dataclass(frozen=True)
class AuditRecord:
    """One link of the chain. Build it with :func:`build_record`, never by hand.

    :ivar seq: position in the log, 1-based and gapless.
    :ivar at: when the store appended it (UTC, :data:`AT_FORMAT`).
    :ivar kind: what happened, e.g. ``approval.answered``.
    :ivar actor: who did it: a user name, ``scheduler``, a worker's service identity.
    :ivar subject: the object acted on: a ticket id, a resource address.
    :ivar details: a JSON object, free form, no credentials.
    :ivar prev_hash: ``hash`` of record ``seq - 1`` (:data:`GENESIS_HASH` for the first).
    :ivar hash: SHA-256 (hex) of the canonical JSON of every other field.
    """

    seq: int
    at: str
    kind: str
    actor: str
    domain: str | None
    tenant: str | None
    correlation_id: str | None
    dag_id: str | None
    run_id: str | None
    task_id: str | None
    subject: str | None
    details: dict[str, Any]
    prev_hash: str
    hash: str

    def to_dict(self) -> dict[str, Any]:
        """The record as a plain mapping (the form that is hashed, stored and exported)."""
        return {name: getattr(self, name) for name in RECORD_FIELDS}


@dataclass(frozen=True)
class Checkpoint:
    """A signed digest of the chain up to ``last_seq`` (CloudTrail's digest file).

    :ivar checkpoint_seq: position in the checkpoint chain, 1-based.
    :ivar last_seq: the last record sealed (every record up to it is covered).
    :ivar last_hash: that record's ``hash``: the whole chain before it follows by ``prev_hash``.
    :ivar count: records in the log at sealing time (``last_seq`` for a gapless log).
    :ivar key_id: which key signed it: the public key's fingerprint
        (:func:`include.audit.signing.key_fingerprint`; keys rotate, old public keys stay published).
    :ivar algorithm: ``ed25519`` or ``ecdsa-p256-sha256`` (``hmac-sha256``: a legacy checkpoint).
    :ivar prev_checkpoint_signature: the previous checkpoint's signature (genesis: 64 zeros).
    :ivar signature: the signature (hex) over :func:`checkpoint_message`.
    :ivar tenant_root: root (hex) of the per-tenant commitments of the records sealed by this
        checkpoint (:mod:`include.evidence.proof`); ``None`` for a checkpoint sealed before them.
    """

    checkpoint_seq: int
    last_seq: int
    last_hash: str
    count: int
    at: str
    key_id: str
    algorithm: str
    prev_checkpoint_signature: str
    signature: str
    tenant_root: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The checkpoint as a plain mapping (the form that is signed, stored and exported); an
        optional field that is ``None`` is left out."""
        body = {name: getattr(self, name) for name in CHECKPOINT_FIELDS}
        body.update({n: getattr(self, n) for n in CHECKPOINT_OPTIONAL_FIELDS if getattr(self, n) is not None})
        return body


def canonical_json(value: Any) -> str:
    """The one serialisation everything is hashed and signed over.

    :raises ValueError: NaN or infinity (not JSON). :raises TypeError: a non-JSON type.
    """
    return _CANONICAL.encode(value)


def record_hash(record: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the canonical JSON of ``record`` without its ``hash`` field.

    Every other field counts, including ones not in the schema: a field added to a stored record
    changes its hash like a changed one does.
    """
    body = dict(record)
    body.pop("hash", None)
    return hashlib.sha256(canonical_json(body).encode("utf-8")).hexdigest()


def checkpoint_message(checkpoint: Mapping[str, Any]) -> bytes:
    """What a checkpoint's signature covers: the canonical JSON (UTF-8) of every field but ``signature``.

    A legacy HMAC checkpoint (``algorithm`` ``hmac-sha256`` or absent) was signed before the
    ``algorithm`` field existed, so its message leaves that field out too. An optional field
    (:data:`CHECKPOINT_OPTIONAL_FIELDS`) that is ``None`` is left out as if absent.

    :raises ValueError, TypeError: content that is not JSON.
    """
    legacy = checkpoint.get("algorithm", HMAC_SHA256) == HMAC_SHA256
    body = {
        name: value
        for name, value in checkpoint.items()
        if name != "signature"
        and not (legacy and name == "algorithm")
        and not (name in CHECKPOINT_OPTIONAL_FIELDS and value is None)
    }
    return canonical_json(body).encode("utf-8")


def format_at(moment: datetime) -> str:
    """``moment`` (timezone-aware) as :data:`AT_FORMAT` in UTC.

    :raises ValueError: a naive datetime (its zone would be a guess).
    """
    if moment.tzinfo is None:
        raise ValueError("at: a timezone-aware datetime is required")
    return moment.astimezone(UTC).strftime(AT_FORMAT)


def utc_now() -> str:
    """The current time as :data:`AT_FORMAT` (the in-memory log's clock; the store uses the DB's)."""
    return format_at(datetime.now(UTC))


def normalise_key_name(name: str) -> str:
    """``apiKey`` / ``API-Key`` / ``api key`` -> ``api_key``: the form secret names are matched in."""
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name)
    return re.sub(r"[^a-z0-9]+", "_", snake.lower()).strip("_")


def is_secret_key_name(name: str) -> bool:
    """True when a details key names a credential (its last word is password, token, api_key, ...)."""
    return bool(_SECRET_KEY_NAME.search(normalise_key_name(name)))


def _check_json_scalar(value: Any, path: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{path}: {value!r} is not a JSON number")
    if isinstance(value, str):
        found = secrets_in_value(value)
        if found:
            raise ValueError(
                f"{path}: looks like a credential ({found[0]}); audit records must not carry one"
            )
        return
    if value is not None and not isinstance(value, bool | int | float):
        raise ValueError(f"{path}: {type(value).__name__} is not JSON-serialisable")


def _check_json_object(value: Mapping[Any, Any], path: str) -> None:
    for key, item in value.items():
        if not isinstance(key, str):
            raise ValueError(f"{path}: key {key!r} is not a string (JSON object keys are strings)")
        if is_secret_key_name(key) and item is not None and item != REDACTED:
            raise ValueError(
                f"{path}.{key}: key names a secret; audit records must not carry credentials "
                "(record a reference such as a secret name or id instead)"
            )
        _check_json_value(item, f"{path}.{key}")


def _check_json_value(value: Any, path: str) -> None:
    """Plain JSON only (objects with string keys, arrays, strings, finite numbers, booleans, null)."""
    if isinstance(value, Mapping):
        _check_json_object(value, path)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _check_json_value(item, f"{path}[{index}]")
    else:
        _check_json_scalar(value, path)


def _redact(value: Any, path: str, redacted: list[str]) -> Any:
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if isinstance(key, str) and is_secret_key_name(key) and item is not None:
                redacted.append(f"{path}.{key}")
                out[key] = REDACTED
            else:
                out[key] = _redact(item, f"{path}.{key}", redacted)
        return out
    if isinstance(value, list | tuple):
        return [_redact(item, f"{path}[{index}]", redacted) for index, item in enumerate(value)]
    if isinstance(value, str) and secrets_in_value(value):
        redacted.append(path)
        return REDACTED
    return value


def redact_details(details: Any) -> tuple[Any, list[str]]:
    """``details`` with each credential-looking value replaced by :data:`REDACTED`, and their paths.

    Only the offending value goes: the value of a key named like a secret (``password``,
    ``api_key``, ...; the key stays, so the record still says one was involved) and any string in a
    known credential format (an access key id inside a comment replaces that comment only). The
    other fields are kept as they are. Anything that is not a mapping is returned unchanged (for
    :func:`validate_details` to refuse with its own message).

    :returns: ``(redacted details, ["details.comment", ...])``.
    """
    if not isinstance(details, Mapping):
        return details, []
    paths: list[str] = []
    return _redact(details, "details", paths), paths


def validate_details(details: Any) -> dict[str, Any]:
    """Check ``details`` and return it in its JSON form (tuples become lists, a fresh copy).

    :param details: a JSON object (``None`` means ``{}``).
    :returns: the normalised object, identical after a store round trip.
    :raises ValueError: naming the offending field (``details.auth.password``).
    """
    if details is None:
        return {}
    if not isinstance(details, Mapping):
        raise ValueError(f"details: must be a JSON object, got {type(details).__name__}")
    _check_json_value(details, "details")
    text = canonical_json(details)
    if len(text.encode("utf-8")) > MAX_DETAILS_BYTES:
        raise ValueError(f"details: {len(text.encode('utf-8'))} bytes, more than {MAX_DETAILS_BYTES}")
    normalised: dict[str, Any] = json.loads(text)
    return normalised


def _check_text(name: str, value: Any, *, required: bool) -> None:
    if value is None and not required:
        return
    if not isinstance(value, str) or (required and not value.strip()):
        raise ValueError(f"{name}: must be a non-empty string" if required else f"{name}: must be a string")
    if "\x00" in value:
        raise ValueError(f"{name}: contains a NUL character")


def validate_event(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Check what a caller wants to append; return every event field, details normalised.

    :param fields: an :class:`AuditEvent`.
    :raises ValueError: naming the field: unknown, assigned by the chain, missing or malformed.
    """
    for name in fields:
        if name in CHAIN_FIELDS:
            raise ValueError(f"{name}: assigned by the audit chain, not by the caller")
        if name not in EVENT_FIELDS:
            raise ValueError(f"{name}: not an audit record field (put it in details)")
    kind = fields.get("kind")
    _check_text("kind", kind, required=True)
    if not _KIND.fullmatch(str(kind)):
        raise ValueError(f"kind: {kind!r} is not a dotted lower-case name such as 'approval.answered'")
    _check_text("actor", fields.get("actor"), required=True)
    for name in OPTIONAL_TEXT_FIELDS:
        _check_text(name, fields.get(name), required=False)
    event = {name: fields.get(name) for name in EVENT_FIELDS}
    event["details"] = validate_details(fields.get("details"))
    return event


def build_record(event: Mapping[str, Any], *, seq: int, at: str, prev_hash: str) -> AuditRecord:
    """The next link: ``event`` (validated here) at position ``seq`` after the record hashed ``prev_hash``.

    :raises ValueError: a malformed event, or chain fields that cannot be right.
    """
    return link_record(validate_event(event), seq=seq, at=at, prev_hash=prev_hash)


def link_record(event: Mapping[str, Any], *, seq: int, at: str, prev_hash: str) -> AuditRecord:
    """:func:`build_record` for an event :func:`validate_event` already returned (the store validates
    before it takes the chain lock, to keep the lock short).

    :raises ValueError: chain fields that cannot be right.
    """
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 1:
        raise ValueError(f"seq: must be an integer >= 1, got {seq!r}")
    if not _HEX64.fullmatch(prev_hash):
        raise ValueError("prev_hash: must be 64 lower-case hex digits")
    datetime.strptime(at, AT_FORMAT)  # raises ValueError naming the format
    body = {"seq": seq, "at": at, **{name: event[name] for name in EVENT_FIELDS}, "prev_hash": prev_hash}
    return AuditRecord(**body, hash=record_hash(body))


def build_checkpoint(
    *,
    checkpoint_seq: int,
    last_seq: int,
    last_hash: str,
    count: int,
    at: str,
    prev_checkpoint_signature: str,
    signer: CheckpointSigner,
    tenant_root: str | None = None,
) -> Checkpoint:
    """Sign a checkpoint with ``signer``; it records the signer's ``key_id`` and ``algorithm``.

    :param tenant_root: the segment's per-tenant commitment root (signed when given).

    :raises ValueError: a signer without a key id.
    """
    key_id, algorithm = signer.key_id, signer.algorithm
    if not key_id or not isinstance(key_id, str):
        raise ValueError("key_id: the signer must name its key")
    body: dict[str, Any] = {
        "checkpoint_seq": checkpoint_seq,
        "last_seq": last_seq,
        "last_hash": last_hash,
        "count": count,
        "at": at,
        "key_id": key_id,
        "algorithm": algorithm,
        "prev_checkpoint_signature": prev_checkpoint_signature,
    }
    if tenant_root is not None:
        if not _HEX64.fullmatch(tenant_root):
            raise ValueError("tenant_root: must be 64 lower-case hex digits")
        body["tenant_root"] = tenant_root
    return Checkpoint(**body, signature=signer.sign(checkpoint_message(body)).hex())
