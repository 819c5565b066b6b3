"""Copy sealed segments of the audit log to S3 under Object Lock in COMPLIANCE mode.

The database copy of the log can be rewritten by whoever owns it, and such a rewrite can include
the latest checkpoints; a copy nobody can change or delete until its retention date passes (not
the bucket owner, not the AWS account root) cannot. Each checkpoint's segment (the records it
sealed since the previous checkpoint, as JSON lines, then the checkpoint itself as the last line)
becomes one object, ``audit/<yyyy>/<mm>/<dd>/<first_seq>-<last_seq>.jsonl`` dated by the seal.

Objects are written with ``If-None-Match: *`` (an exported segment is never replaced; a re-run
skips it) and with an explicit COMPLIANCE retention, so they stay locked even if the bucket's
default retention rule is later loosened. A segment is checked before it leaves (hashes, links, the
checkpoint's last hash): a damaged log is not copied into storage that would keep it for years.

The public key of each checkpoint signing key goes next to the segments, as
``audit/public-keys/<key id>.pem`` (locked the same way), so an auditor holding only the bucket has
what `audit verify --public-key` needs; the key id is the key's fingerprint, which the auditor
compares with the one the deployment documents (anyone allowed to write to the bucket could add a
PEM; none can replace one).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final, Protocol

from botocore.exceptions import ClientError

from include.audit.records import AT_FORMAT, GENESIS_HASH, canonical_json, record_hash
from include.audit.signing import CheckpointKeys, PublicKey, key_fingerprint, load_public_key
from include.audit.verify import VerifyReport, verify_stream

KEY_PREFIX: Final = "audit/"
DEFAULT_RETENTION_DAYS: Final = 7 * 366
"""Seven years, a common retention for change and access records (SOX, ISO 27001 evidence)."""

PUBLIC_KEYS_FOLDER: Final = "public-keys/"
_SEGMENT_NAME = re.compile(r"(\d+)-(\d+)\.jsonl$")


class AuditExportError(RuntimeError):
    """A segment could not be exported (damaged log, or a bucket without Object Lock)."""


class SegmentSource(Protocol):
    """Where segments come from: :class:`include.audit.store.AuditStore` is one."""

    def checkpoints(self) -> list[dict[str, Any]]: ...

    def records(self, first: int = 1, last: int | None = None) -> list[dict[str, Any]]: ...


@dataclass(frozen=True)
class ExportedSegment:
    """One checkpoint's segment in the bucket.

    :ivar written: False when it was already there (exported by an earlier run).
    :ivar version_id: the S3 version written (``None`` when skipped).
    """

    key: str
    first_seq: int
    last_seq: int
    checkpoint_seq: int
    written: bool
    version_id: str | None = None


def segment_key(checkpoint: Mapping[str, Any], first_seq: int, prefix: str = KEY_PREFIX) -> str:
    """``audit/<yyyy>/<mm>/<dd>/<first_seq>-<last_seq>.jsonl``, dated by the checkpoint's ``at``."""
    sealed = datetime.strptime(checkpoint["at"], AT_FORMAT)
    return f"{prefix}{sealed:%Y/%m/%d}/{first_seq}-{checkpoint['last_seq']}.jsonl"


def segment_body(records: Sequence[Mapping[str, Any]], checkpoint: Mapping[str, Any]) -> bytes:
    """The records as canonical JSON lines, then ``{"checkpoint": {...}}`` as the last line."""
    lines = [canonical_json(dict(record)) for record in records]
    lines.append(canonical_json({"checkpoint": dict(checkpoint)}))
    return ("\n".join(lines) + "\n").encode("utf-8")


def parse_segment(body: bytes) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Inverse of :func:`segment_body`: ``(records, checkpoint)``.

    :raises AuditExportError: no checkpoint line at the end.
    """
    rows = [json.loads(line) for line in body.decode("utf-8").splitlines() if line.strip()]
    if not rows or set(rows[-1]) != {"checkpoint"}:
        raise AuditExportError("segment does not end with its checkpoint")
    return rows[:-1], rows[-1]["checkpoint"]


def _check_segment(
    records: list[dict[str, Any]], checkpoint: Mapping[str, Any], first_seq: int, prev_hash: str
) -> None:
    """The records sealed by ``checkpoint`` are all there, unmodified and linked, ending at its hash."""
    where = f"segment {first_seq}-{checkpoint['last_seq']} (checkpoint {checkpoint['checkpoint_seq']})"
    if len(records) != checkpoint["last_seq"] - first_seq + 1:
        raise AuditExportError(f"{where}: {len(records)} records in the store; run `audit verify`")
    for offset, record in enumerate(records):
        try:
            intact = record_hash(record) == record.get("hash")
        except (TypeError, ValueError):
            intact = False
        if record.get("seq") != first_seq + offset or not intact or record.get("prev_hash") != prev_hash:
            raise AuditExportError(f"{where}: record {first_seq + offset} is damaged; run `audit verify`")
        prev_hash = record["hash"]
    if prev_hash != checkpoint["last_hash"]:
        raise AuditExportError(f"{where}: last record differs from the sealed hash; run `audit verify`")


def ensure_locked_bucket(
    s3: Any, bucket: str, *, region: str, retention_days: int = DEFAULT_RETENTION_DAYS
) -> None:
    """Create ``bucket`` with Object Lock (versioning comes with it) and a COMPLIANCE default rule.

    Object Lock can only be turned on when a bucket is created: an existing bucket without it is
    refused rather than silently used.

    :raises AuditExportError: the bucket exists without Object Lock.
    """
    create: dict[str, Any] = {"Bucket": bucket, "ObjectLockEnabledForBucket": True}
    if region != "us-east-1":
        create["CreateBucketConfiguration"] = {"LocationConstraint": region}
    wanted = {
        "ObjectLockEnabled": "Enabled",
        "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": retention_days}},
    }
    try:
        s3.create_bucket(**create)
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") != "BucketAlreadyOwnedByYou":
            raise
        try:
            enabled = s3.get_object_lock_configuration(Bucket=bucket)["ObjectLockConfiguration"]
        except ClientError as missing:
            raise AuditExportError(f"bucket {bucket} exists without Object Lock") from missing
        if enabled.get("ObjectLockEnabled") != "Enabled":
            raise AuditExportError(f"bucket {bucket} exists without Object Lock") from error
        rule = enabled.get("Rule", {}).get("DefaultRetention", {})
        if (rule.get("Mode"), rule.get("Days"), rule.get("Years") or 0) == ("COMPLIANCE", retention_days, 0):
            return  # already as wanted (moto also refuses to change the rule of a non-empty bucket)
    s3.put_object_lock_configuration(Bucket=bucket, ObjectLockConfiguration=wanted)


def public_key_object(key_id: str, prefix: str = KEY_PREFIX) -> str:
    """``audit/public-keys/sha256-<fingerprint>.pem``."""
    return f"{prefix}{PUBLIC_KEYS_FOLDER}{key_id.replace(':', '-')}.pem"


def publish_public_key(
    s3: Any,
    bucket: str,
    pem: bytes,
    *,
    retention_days: int = DEFAULT_RETENTION_DAYS,
    prefix: str = KEY_PREFIX,
    now: datetime | None = None,
) -> tuple[str, bool]:
    """Put a checkpoint public key next to the segments (once, locked like them).

    :returns: ``(object key, written now)``.
    :raises ValueError: ``pem`` is not a checkpoint public key.
    """
    key_id = key_fingerprint(load_public_key(pem))
    key = public_key_object(key_id, prefix)
    retain_until = (now or datetime.now(UTC)) + timedelta(days=retention_days)
    version = _put_segment(s3, bucket, key, pem, retain_until, content_type="application/x-pem-file")
    return key, version is not None


def read_public_keys(s3: Any, bucket: str, prefix: str = KEY_PREFIX) -> dict[str, PublicKey]:
    """``{key_id: public key}`` of every PEM published under ``audit/public-keys/``.

    A PEM whose fingerprint is not its name is skipped: the name is what an auditor compares.
    """
    keys: dict[str, PublicKey] = {}
    folder = f"{prefix}{PUBLIC_KEYS_FOLDER}"
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=folder):
        for item in page.get("Contents", []):
            body = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
            try:
                public_key = load_public_key(body, item["Key"])
            except ValueError:
                continue
            key_id = key_fingerprint(public_key)
            if public_key_object(key_id, prefix) == item["Key"]:
                keys[key_id] = public_key
    return keys


def _put_segment(
    s3: Any,
    bucket: str,
    key: str,
    body: bytes,
    retain_until: datetime,
    *,
    content_type: str = "application/x-ndjson",
) -> str | None:
    """Write one locked object; ``None`` if the key already exists (never overwritten)."""
    try:
        response = s3.put_object(
            Bucket=bucket,
            Key=key,
            Body=body,
            ContentType=content_type,
            IfNoneMatch="*",
            ObjectLockMode="COMPLIANCE",
            ObjectLockRetainUntilDate=retain_until,
        )
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") == "PreconditionFailed":
            return None
        raise
    version: str = response.get("VersionId", "")  # always set: Object Lock buckets are versioned
    return version


def export_sealed_segments(
    source: SegmentSource,
    s3: Any,
    bucket: str,
    *,
    retention_days: int = DEFAULT_RETENTION_DAYS,
    prefix: str = KEY_PREFIX,
    after_checkpoint: int = 0,
    now: datetime | None = None,
) -> list[ExportedSegment]:
    """Export every sealed segment not exported yet, oldest first.

    :param source: the log (an :class:`~include.audit.store.AuditStore`).
    :param s3: a boto3 S3 client.
    :param retention_days: COMPLIANCE retention of each object from ``now``.
    :param after_checkpoint: skip the segments up to this checkpoint without reading them (the
        caller's watermark of what is known to be exported; 0 checks every segment).
    :returns: every segment considered, written now or found already there.
    :raises AuditExportError: a segment is damaged in the store (nothing from it is written).
    """
    retain_until = (now or datetime.now(UTC)) + timedelta(days=retention_days)
    exported: list[ExportedSegment] = []
    first_seq, prev_hash = 1, GENESIS_HASH
    for checkpoint in source.checkpoints():
        last_seq = checkpoint["last_seq"]
        if checkpoint["checkpoint_seq"] <= after_checkpoint:
            first_seq, prev_hash = last_seq + 1, checkpoint["last_hash"]
            continue
        key = segment_key(checkpoint, first_seq, prefix)
        records = source.records(first_seq, last_seq)
        _check_segment(records, checkpoint, first_seq, prev_hash)
        version = _put_segment(s3, bucket, key, segment_body(records, checkpoint), retain_until)
        exported.append(
            ExportedSegment(
                key=key,
                first_seq=first_seq,
                last_seq=last_seq,
                checkpoint_seq=checkpoint["checkpoint_seq"],
                written=version is not None,
                version_id=version or None,
            )
        )
        first_seq, prev_hash = last_seq + 1, checkpoint["last_hash"]
    return exported


def read_exported_segments(
    s3: Any, bucket: str, prefix: str = KEY_PREFIX
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every exported record and checkpoint, in log order, ready for :func:`include.audit.verify.verify`."""
    segments: list[tuple[int, list[dict[str, Any]], dict[str, Any]]] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            name = _SEGMENT_NAME.search(item["Key"])
            if name is None:
                continue
            body = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
            records, checkpoint = parse_segment(body)
            segments.append((int(name.group(1)), records, checkpoint))
    segments.sort(key=lambda segment: segment[0])
    return (
        [record for _, records, _ in segments for record in records],
        [checkpoint for _, _, checkpoint in segments],
    )


def _segment_names(s3: Any | None, location: str, prefix: str) -> list[tuple[int, str]]:
    """``(first_seq, key or path)`` of every segment under ``location``, in log order."""
    found: list[tuple[int, str]] = []
    if s3 is None:
        for path in Path(location).rglob("*.jsonl"):
            name = _SEGMENT_NAME.search(path.name)
            if name is not None:
                found.append((int(name.group(1)), str(path)))
    else:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=location, Prefix=prefix):
            for item in page.get("Contents", []):
                name = _SEGMENT_NAME.search(item["Key"])
                if name is not None and not item["Key"].startswith(f"{prefix}{PUBLIC_KEYS_FOLDER}"):
                    found.append((int(name.group(1)), item["Key"]))
    return sorted(found)


def iter_exported_segments(
    s3: Any | None, location: str, prefix: str = KEY_PREFIX
) -> Iterator[tuple[str, list[dict[str, Any]], dict[str, Any]]]:
    """``(key, records, checkpoint)`` of each exported segment in log order, one at a time.

    :param s3: a boto3 S3 client, or ``None`` to read a local copy (``aws s3 sync`` of the prefix).
    :param location: the bucket, or the local folder.
    :raises AuditExportError: a segment that does not end with its checkpoint (named).
    """
    for _, key in _segment_names(s3, location, prefix):
        body = (
            Path(key).read_bytes() if s3 is None else s3.get_object(Bucket=location, Key=key)["Body"].read()
        )
        try:
            records, checkpoint = parse_segment(body)
        except (AuditExportError, ValueError) as error:
            raise AuditExportError(f"{key}: {error}") from None
        yield key, records, checkpoint


def verify_export(
    s3: Any | None, location: str, keys: CheckpointKeys | None, prefix: str = KEY_PREFIX
) -> VerifyReport:
    """Verify an export on its own (the bucket, or a local copy of it, and the public keys).

    Two passes, one segment in memory at a time: the checkpoints (each segment's last line), then
    the records through :func:`include.audit.verify.verify_stream`, which classifies damage as the
    database verify does (a segment object missing shows as its records deleted and its checkpoint
    missing; a segment replaced by a forger fails its checkpoint's signature).
    """
    checkpoints = [checkpoint for _, _, checkpoint in iter_exported_segments(s3, location, prefix)]
    records = (record for _, segment, _ in iter_exported_segments(s3, location, prefix) for record in segment)
    return verify_stream(records, checkpoints, keys)
