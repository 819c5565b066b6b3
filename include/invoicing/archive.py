"""Write-once copies of invoices and their validation results in the audit bucket (S3 Object Lock).

The bucket is the audit trail's export bucket (connection ``audit_store``, extras ``export_bucket``,
``region_name``, ``aws_conn_id``): created with Object Lock if missing, exactly as the seal does, so
either can run first. Layout, one folder per milestone invoice next to the audit log's ``audit/``:

``invoices/<tenant>/<contract>/<milestone>/validation-<export sha256[:16]>-suite-<suite sha256[:8]>.json``
    the validation of one export by one version of the suite, written when the export is validated
    (passed or not: why a milestone was not invoiced is evidence too);
``invoices/<tenant>/<contract>/<milestone>/invoice.json``
    the invoice as Business Central holds it once posted (number, date, customer, totals, lines), the
    totals finance approved, the export's hash and the key of its validation.

Each object is written with ``If-None-Match: *`` and an explicit COMPLIANCE retention (the invoicing
policy's ``archive.retention_days``): never replaced, not even by the bucket owner, until it
expires. Documents hold nothing that differs between runs (no run ids, times or approvers: those
are on the audit trail, linked by the correlation id), so a re-run writes the same bytes and finds
the object already there, which is success. Different bytes under the same key mean the ERP or the
export no longer match what was archived: the run fails and says so, and the archived copy stays.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from include.connectors.erp.business_central import Invoice

DOCUMENT_VERSION = 1


class ArchiveConflictError(RuntimeError):
    """The key holds different content; the archived object is kept, nothing is replaced."""


@dataclass(frozen=True)
class ArchivedObject:
    key: str
    sha256: str
    written: bool  # False: the identical object was there already (an earlier run)
    version_id: str | None
    retain_until: datetime | None  # the object's COMPLIANCE retention (an existing object's own)

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "sha256": self.sha256,
            "written": self.written,
            "version_id": self.version_id,
            "retain_until": self.retain_until.isoformat() if self.retain_until else None,
        }


@dataclass(frozen=True)
class ArchiveTarget:
    bucket: str
    region: str
    aws_conn_id: str
    bucket_retention_days: int  # the bucket's default rule (the audit trail's); objects set their own

    @classmethod
    def from_audit_connection(cls) -> ArchiveTarget:
        from airflow.sdk import BaseHook

        from include.audit.emit import AUDIT_CONN_ID
        from include.audit.seal import ExportSettings

        settings = ExportSettings.from_extras(dict(BaseHook.get_connection(AUDIT_CONN_ID).extra_dejson))
        return cls(settings.bucket, settings.region, settings.aws_conn_id, settings.retention_days)

    def s3(self) -> Any:
        """An S3 client on the bucket, which exists with Object Lock once this returns."""
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        from include.audit.export import ensure_locked_bucket
        from include.connectors.aws import STANDARD_RETRIES

        client = S3Hook(
            aws_conn_id=self.aws_conn_id, region_name=self.region, config=STANDARD_RETRIES
        ).get_conn()
        ensure_locked_bucket(
            client, self.bucket, region=self.region, retention_days=self.bucket_retention_days
        )
        return client


def document_bytes(document: Mapping[str, Any]) -> bytes:
    """Canonical, readable JSON (sorted keys, indented, UTF-8): equal documents give equal bytes."""
    return (json.dumps(document, sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def retain_until(days: int, now: datetime | None = None) -> datetime:
    return (now or datetime.now(UTC)) + timedelta(days=days)


def put_write_once(s3: Any, bucket: str, key: str, body: bytes, *, until: datetime) -> ArchivedObject:
    """Write ``body`` once under COMPLIANCE retention; an identical object already there is success.

    :raises ArchiveConflictError: the key holds other bytes.
    """
    digest = hashlib.sha256(body).hexdigest()
    try:
        response = s3.put_object(
            Bucket=bucket,
            Key=key,
            Body=body,
            ContentType="application/json",
            IfNoneMatch="*",
            ObjectLockMode="COMPLIANCE",
            ObjectLockRetainUntilDate=until,
        )
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") != "PreconditionFailed":
            raise
        existing = s3.get_object(Bucket=bucket, Key=key)
        found = existing["Body"].read()
        if found != body:
            raise ArchiveConflictError(
                f"s3://{bucket}/{key} already holds a different document (SHA-256 "
                f"{hashlib.sha256(found).hexdigest()[:12]}..., this run's {digest[:12]}...): what is "
                "archived "
                "no longer matches Business Central or the export; the archived copy is kept, check both"
            ) from None
        return ArchivedObject(
            key, digest, False, existing.get("VersionId"), existing.get("ObjectLockRetainUntilDate")
        )
    return ArchivedObject(key, digest, True, response.get("VersionId"), until)


def suite_sha256() -> str:
    """The expectation suite's file hash: which version of the rules validated an export."""
    from include.validation.billable_lines import SUITE_FILE

    return hashlib.sha256(Path(SUITE_FILE).read_bytes()).hexdigest()


def validation_key(archive_prefix: str, export_sha256: str, suite_hash: str) -> str:
    return f"{archive_prefix}validation-{export_sha256[:16]}-suite-{suite_hash[:8]}.json"


def invoice_key(archive_prefix: str) -> str:
    return f"{archive_prefix}invoice.json"


def validation_document(
    request: Mapping[str, Any],
    validation: Mapping[str, Any],
    *,
    export_uri: str,
    export_sha256: str,
    suite: str,
) -> dict[str, Any]:
    return {
        "document": "billable-lines-validation",
        "version": DOCUMENT_VERSION,
        "tenant": request["tenant"],
        "contract_id": request["contract_id"],
        "milestone_id": request["milestone_id"],
        "period": {"start": request["period_start"], "end": request["period_end"]},
        "external_reference": request["external_reference"],
        "export": {"uri": export_uri, "sha256": export_sha256},
        "suite": {"name": "billable_lines", "sha256": suite},
        "result": dict(validation),
    }


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def invoice_document(
    request: Mapping[str, Any],
    invoice: Invoice,
    lines: Sequence[Mapping[str, Any]],
    *,
    approved_totals: Mapping[str, Any],
    export_uri: str,
    export_sha256: str,
    validation: str,
) -> dict[str, Any]:
    """The posted invoice as Business Central returned it, with what was approved and where it came from.

    Only fields that do not change after posting: not ``status`` or ``remainingAmount`` (they move
    when the customer pays), not line ids or ETags.
    """
    return {
        "document": "milestone-invoice",
        "version": DOCUMENT_VERSION,
        "tenant": request["tenant"],
        "contract_id": request["contract_id"],
        "milestone_id": request["milestone_id"],
        "period": {"start": request["period_start"], "end": request["period_end"]},
        "external_reference": invoice.external_reference,
        "erp": {
            "system": "Dynamics 365 Business Central",
            "invoice_id": invoice.id,
            "number": invoice.number,
            "customer_number": invoice.customer_number,
            "invoice_date": invoice.invoice_date,
            "totals": invoice.totals.as_dict(),
            "lines": [
                {
                    "description": _text(line.get("description")),
                    "type": _text(line.get("lineType")),
                    "account": _text(line.get("lineObjectNumber")),
                    "quantity": _text(line.get("quantity")),
                    "unit_price": _text(line.get("unitPrice")),
                    "tax_code": _text(line.get("taxCode")),
                    "net": _text(line.get("amountExcludingTax")),
                    "vat": _text(line.get("totalTaxAmount")),
                    "gross": _text(line.get("amountIncludingTax")),
                }
                for line in lines
            ],
        },
        "approved_totals": dict(approved_totals),
        "export": {"uri": export_uri, "sha256": export_sha256},
        "validation": validation,
    }
