"""Seal the audit log and export it to write-once storage: the periodic job behind ``platform_audit_seal``.

One pass, in this order (each step is idempotent, so a retried or overlapping pass is harmless):

1. append the events left in the spool folder (:func:`drain_spool`: MAC-checked, bad lines
   quarantined and reported);
2. publish the signing key's public half next to the export (``audit/public-keys/``);
3. sign a checkpoint over everything appended so far (Ed25519, or ECDSA P-256 in KMS);
4. export every sealed segment not yet in the bucket (Object Lock, COMPLIANCE mode);
5. verify against every checkpoint with public keys only, and fail loudly on damage: the records
   after the checkpoint before the newest one (incremental: the segment just sealed and the unsealed
   tail), or every record (a full verify) on a run started by hand and on the first scheduled
   pass of each UTC day (:func:`full_verify_due`; outside the DAG, when the newest checkpoint's
   number is a multiple of :data:`FULL_VERIFY_EVERY`). The checkpoint chain itself is checked in
   full every time (docs/audit.md, "At scale").

The signing key is not in a connection: connection ``audit_signing`` says only *where* it is and
holds no password (one with a password is refused). The key is read (or, with KMS, used) through
the ``audit-seal`` capability: a role in the ``secops`` account that only this DAG's domain
(``platform``) may assume, granted its own secret path ``orchestrator/secops/audit-seal/*`` and
``kms:Sign`` there (include/policies/capabilities.yaml); the tasks' secrets backend reads the
platform account's ``airflow/connections/*`` and never reaches it. Extras:

- ``{"signer": "secret", "tenant": "secops", "secret_id": "orchestrator/secops/audit-seal/signing-key"}``
  (an Ed25519 PKCS#8 PEM in Secrets Manager; the local stack), or
- ``{"signer": "kms", "tenant": "secops", "kms_key_id": "alias/orchestrator-audit-seal"}``
  (an ``ECC_NIST_P256`` SIGN_VERIFY key; production),
- ``previous_public_keys``: PEMs of retired signing keys, still trusted for old checkpoints.

The export bucket, region and retention are extras of ``audit_store``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from include.audit.emit import AUDIT_CONN_ID, drain_spool
from include.audit.export import (
    DEFAULT_RETENTION_DAYS,
    ensure_locked_bucket,
    export_sealed_segments,
    publish_public_key,
)
from include.audit.signing import (
    CheckpointKeys,
    CheckpointSigner,
    Ed25519Signer,
    KmsSigner,
    PublicKey,
    key_fingerprint,
    load_public_key,
)
from include.audit.verify import IncrementalBaseError

SIGNING_CONN_ID: Final = "audit_signing"
SEAL_CAPABILITY: Final = "audit-seal"
SIGNER_KINDS: Final = ("secret", "kms")
FULL_VERIFY_EVERY: Final = 96
"""A full verify when the newest checkpoint's number is a multiple of this (daily at 15 minutes)."""
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


@dataclass(frozen=True)
class SignerSettings:
    """Where the sealing step's signing key is (connection ``audit_signing``; no key in it).

    :ivar kind: ``secret`` (Ed25519 PEM in Secrets Manager) or ``kms``.
    :ivar tenant: the account (tenants.yaml) whose ``audit-seal`` role reads or signs.
    :ivar secret_id: the secret, under ``orchestrator/<tenant>/audit-seal/``.
    :ivar kms_key_id: the KMS key (ARN, id or alias).
    :ivar previous_public_keys: retired keys, still trusted for the checkpoints they signed.
    """

    kind: str
    tenant: str
    secret_id: str | None
    kms_key_id: str | None
    previous_public_keys: tuple[PublicKey, ...] = ()

    @classmethod
    def from_connection(cls, conn: Any) -> SignerSettings:
        """:raises ValueError: a password in the connection, or extras naming no usable key."""
        where = f"connection {SIGNING_CONN_ID}"
        if conn.password:
            raise ValueError(
                f"{where}: has a password; the checkpoint signing key must not sit in a connection "
                "every task can read (put it under the audit-seal capability's secret path or in KMS; "
                "docs/audit.md, 'Upgrading')"
            )
        extras: Mapping[str, Any] = conn.extra_dejson
        kind, tenant = extras.get("signer"), extras.get("tenant")
        if kind not in SIGNER_KINDS:
            raise ValueError(
                f"{where}: extra 'signer' must be one of {', '.join(SIGNER_KINDS)}, got {kind!r}"
            )
        if not isinstance(tenant, str) or not tenant:
            raise ValueError(f"{where}: extra 'tenant' (the account of the audit-seal role) is missing")
        secret_id, kms_key_id = extras.get("secret_id"), extras.get("kms_key_id")
        if kind == "secret":
            prefix = f"orchestrator/{tenant}/{SEAL_CAPABILITY}/"
            if not isinstance(secret_id, str) or not secret_id.startswith(prefix):
                raise ValueError(f"{where}: extra 'secret_id' must name a secret under {prefix}")
        elif not isinstance(kms_key_id, str) or not kms_key_id:
            raise ValueError(f"{where}: extra 'kms_key_id' is missing")
        previous = extras.get("previous_public_keys") or []
        if not isinstance(previous, list):
            raise ValueError(f"{where}: extra 'previous_public_keys' must be a list of PEM strings")
        keys = tuple(
            load_public_key(str(pem).encode(), f"{where}: previous_public_keys[{index}]")
            for index, pem in enumerate(previous)
        )
        return cls(kind, tenant, secret_id, kms_key_id, keys)


def build_signer(settings: SignerSettings, context: Mapping[str, Any], aws_conn_id: str) -> CheckpointSigner:
    """The signer, through the ``audit-seal`` capability's role (checked: this DAG's domain may use it)."""
    from include.connectors.aws import capability_client
    from include.connectors.context import RunContext

    run = RunContext.from_airflow_context(context, settings.tenant)
    if settings.kind == "kms":
        kms = capability_client(
            SEAL_CAPABILITY, settings.tenant, "kms", run_context=run, aws_conn_id=aws_conn_id
        )
        assert settings.kms_key_id is not None
        return KmsSigner(client=kms, kms_key_id=settings.kms_key_id)
    from airflow.sdk.log import mask_secret

    secrets = capability_client(
        SEAL_CAPABILITY, settings.tenant, "secretsmanager", run_context=run, aws_conn_id=aws_conn_id
    )
    pem = secrets.get_secret_value(SecretId=settings.secret_id)["SecretString"]
    mask_secret(pem)
    return Ed25519Signer(private_key_pem=pem.encode())


def trusted_keys(signer: CheckpointSigner, previous: tuple[PublicKey, ...] = ()) -> CheckpointKeys:
    """The public keys the seal's own verification trusts: the signer's and the retired ones."""
    current = load_public_key(signer.public_key_pem(), "signer")
    return CheckpointKeys({key_fingerprint(key): key for key in (current, *previous)})


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


def verify_scope(latest_checkpoint: int, *, full: bool | None = None) -> int:
    """Which verify a pass runs: 0 for a full one, N for incremental after checkpoint N.

    :param latest_checkpoint: the newest checkpoint's number after this pass sealed.
    :param full: force a full (True) or incremental (False) verify; ``None``: the schedule.
    """
    if latest_checkpoint <= 1 or full or (full is None and latest_checkpoint % FULL_VERIFY_EVERY == 0):
        return 0
    return latest_checkpoint - 1


def seal_and_export(
    store: Any,
    s3: Any,
    settings: ExportSettings,
    signer: CheckpointSigner,
    keys: CheckpointKeys,
    *,
    full_verify: bool | None = None,
) -> dict[str, Any]:
    """One pass (see the module doc); returns what it did, for XCom and the task log.

    :param keys: what the final verification trusts (:func:`trusted_keys`).
    :param full_verify: see :func:`verify_scope` (``None``: full on the schedule).
    :raises AuditDamaged: the chain or a checkpoint is damaged (after sealing and exporting what
        could be; a damaged segment itself is never exported).
    """
    drained = drain_spool(store)
    ensure_locked_bucket(s3, settings.bucket, region=settings.region, retention_days=settings.retention_days)
    public_key, _ = publish_public_key(
        s3, settings.bucket, signer.public_key_pem(), retention_days=settings.retention_days
    )
    checkpoint = store.seal(signer)
    watermark = exported_watermark(s3, settings.bucket, store.checkpoints())
    segments = export_sealed_segments(
        store, s3, settings.bucket, retention_days=settings.retention_days, after_checkpoint=watermark
    )
    checkpoints = store.checkpoints()
    latest = max((cp["checkpoint_seq"] for cp in checkpoints), default=0)
    after = verify_scope(latest, full=full_verify)
    # One process: this runs inside an Airflow task, whose process tree is not the place to spawn
    # reading processes (a Celery pool process may not; a spawned child re-imports the task's
    # __main__). A daily full verify of 10M records takes minutes that way; `audit verify` from a
    # shell uses the readers.
    try:
        report = store.verify(keys, after_checkpoint=after, parallel=False)
    except IncrementalBaseError:  # the checkpoint to start from is damaged: look at everything
        after = 0
        report = store.verify(keys, parallel=False)
    result = {
        "drained_from_spool": drained.appended,
        "quarantined": drained.quarantined,
        "key_id": signer.key_id,
        "public_key": public_key,
        "checkpoint_seq": checkpoint.checkpoint_seq if checkpoint else None,
        "sealed_up_to": checkpoint.last_seq if checkpoint else None,
        "exported": [
            {"key": s.key, "first_seq": s.first_seq, "last_seq": s.last_seq, "written": s.written}
            for s in segments
        ],
        "verified_records": report.records,
        "verified_after_checkpoint": after,
        "ok": report.ok,
    }
    if not report.ok:
        raise AuditDamaged(str(report))
    return result


def run_seal() -> dict[str, Any]:
    """The task body: settings from Airflow connections, the signer through ``audit-seal``, then
    :func:`seal_and_export`."""
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook
    from airflow.sdk import BaseHook, get_current_context

    from include.audit.emit import store
    from include.connectors.aws import STANDARD_RETRIES

    settings = ExportSettings.from_extras(dict(BaseHook.get_connection(AUDIT_CONN_ID).extra_dejson))
    signer_settings = SignerSettings.from_connection(BaseHook.get_connection(SIGNING_CONN_ID))
    context = get_current_context()
    signer = build_signer(signer_settings, context, settings.aws_conn_id)
    s3 = S3Hook(
        aws_conn_id=settings.aws_conn_id, region_name=settings.region, config=STANDARD_RETRIES
    ).get_conn()
    keys = trusted_keys(signer, signer_settings.previous_public_keys)
    return seal_and_export(store(), s3, settings, signer, keys, full_verify=full_verify_due(context))


def full_verify_due(context: Any) -> bool:
    """Whether this pass verifies every record: a run started by hand (the UI's "on demand"), and
    the first scheduled pass of each UTC day (its data interval ends in the day's first
    15 minutes), whatever the number of checkpoints: a quiet log still gets its daily full verify.

    :param context: the running task's Airflow context.
    """
    dag_run = context.get("dag_run")
    if dag_run is not None and getattr(dag_run, "run_type", None) == "manual":  # DagRunType is a str
        return True
    end = context.get("data_interval_end")
    return end is not None and end.hour == 0 and end.minute < 15
