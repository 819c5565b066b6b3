"""Seal the audit log and export it to write-once storage: the periodic job behind ``platform_audit_seal``.

One pass, in this order (each step is idempotent, so a retried or overlapping pass is harmless):

1. append the events that were spooled while the store was unreachable (:func:`drain_spool`);
2. sign a checkpoint over everything appended so far (HMAC-SHA256 with the current key);
3. export every sealed segment not yet in the bucket (Object Lock, COMPLIANCE mode);
4. verify the whole chain against every checkpoint, and fail loudly on any damage.

Keys come from Airflow connections, so from the secrets backend: ``audit_signing`` holds the
current key (login = key id, password = hex key). A retired key stays verifiable as connection
``audit_signing_<key_id>``: rotate by creating the new key under ``audit_signing`` and keeping the
old one under its id. The export bucket, region and retention are extras of ``audit_store``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from include.audit.emit import AUDIT_CONN_ID, drain_spool
from include.audit.export import DEFAULT_RETENTION_DAYS, ensure_locked_bucket, export_sealed_segments

SIGNING_CONN_ID: Final = "audit_signing"
_LAST_SEQ = re.compile(r"\d+-(\d+)\.jsonl$")


class AuditDamaged(RuntimeError):
    """The verifier found damage; the message lists every finding (record and kind)."""


@dataclass(frozen=True)
class ExportSettings:
    bucket: str
    region: str
    retention_days: int
    aws_conn_id: str

    @classmethod
    def from_extras(cls, extras: dict[str, Any]) -> ExportSettings:
        bucket = extras.get("export_bucket")
        if not isinstance(bucket, str) or not bucket:
            raise ValueError(f"connection {AUDIT_CONN_ID}: extra 'export_bucket' is missing")
        retention = extras.get("retention_days", DEFAULT_RETENTION_DAYS)
        if not isinstance(retention, int) or retention < 1:
            raise ValueError(f"connection {AUDIT_CONN_ID}: extra 'retention_days' must be a positive integer")
        return cls(
            bucket=bucket,
            region=str(extras.get("region_name", "eu-west-1")),
            retention_days=retention,
            aws_conn_id=str(extras.get("aws_conn_id", "aws_default")),
        )


def signing_key(conn_id: str = SIGNING_CONN_ID) -> tuple[str, bytes]:
    """``(key_id, key)`` of the current signing key (registered with the log masker as it is read)."""
    from airflow.sdk import BaseHook

    conn = BaseHook.get_connection(conn_id)
    if not conn.login or not conn.password:
        raise ValueError(f"connection {conn_id}: login (key id) and password (hex key) are required")
    try:
        key = bytes.fromhex(conn.password)
    except ValueError:
        raise ValueError(f"connection {conn_id}: password must be the key in hex") from None
    return conn.login, key


def key_lookup(current_id: str, current: bytes) -> Callable[[str], bytes | None]:
    """Key id -> key: the current key, else the retired key's own connection, else ``None``."""
    from airflow.sdk import BaseHook

    def key_for(key_id: str) -> bytes | None:
        if key_id == current_id:
            return current
        try:
            conn = BaseHook.get_connection(f"{SIGNING_CONN_ID}_{key_id}")
        except Exception:
            return None
        return bytes.fromhex(conn.password) if conn.password else None

    return key_for


def exported_watermark(
    s3: Any, bucket: str, checkpoints: list[dict[str, Any]], prefix: str = "audit/"
) -> int:
    """The checkpoint up to which every segment is in the bucket (0: none), from key names only."""
    last_seqs: set[int] = set()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            match = _LAST_SEQ.search(item["Key"])
            if match:
                last_seqs.add(int(match.group(1)))
    watermark = 0
    for checkpoint in checkpoints:  # contiguous from the first: a gap is exported again
        if checkpoint["last_seq"] not in last_seqs:
            break
        watermark = checkpoint["checkpoint_seq"]
    return watermark


def seal_and_export(
    store: Any,
    s3: Any,
    settings: ExportSettings,
    key_id: str,
    key: bytes,
    key_for: Callable[[str], bytes | None],
) -> dict[str, Any]:
    """One pass (see the module doc); returns what it did, for XCom and the task log.

    :raises AuditDamaged: the chain or a checkpoint is damaged (after sealing and exporting what
        could be; a damaged segment itself is never exported).
    """
    drained = drain_spool(store)
    checkpoint = store.seal(key, key_id)
    ensure_locked_bucket(s3, settings.bucket, region=settings.region, retention_days=settings.retention_days)
    watermark = exported_watermark(s3, settings.bucket, store.checkpoints())
    segments = export_sealed_segments(
        store, s3, settings.bucket, retention_days=settings.retention_days, after_checkpoint=watermark
    )
    report = store.verify(key_for)
    result = {
        "drained_from_spool": drained,
        "checkpoint_seq": checkpoint.checkpoint_seq if checkpoint else None,
        "sealed_up_to": checkpoint.last_seq if checkpoint else None,
        "exported": [
            {"key": s.key, "first_seq": s.first_seq, "last_seq": s.last_seq, "written": s.written}
            for s in segments
        ],
        "verified_records": report.records,
        "ok": report.ok,
    }
    if not report.ok:
        raise AuditDamaged(str(report))
    return result


def run_seal() -> dict[str, Any]:
    """The task body: settings, keys and clients from Airflow connections, then :func:`seal_and_export`."""
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook
    from airflow.sdk import BaseHook

    from include.audit.emit import store

    settings = ExportSettings.from_extras(dict(BaseHook.get_connection(AUDIT_CONN_ID).extra_dejson))
    key_id, key = signing_key()
    s3 = S3Hook(aws_conn_id=settings.aws_conn_id, region_name=settings.region).get_conn()
    return seal_and_export(store(), s3, settings, key_id, key, key_lookup(key_id, key))
