"""A milestone invoice request, its PSA export, the validation and the totals: everything before the ERP.

**The request** (:class:`MilestoneRequest`): tenant, contract, milestone, the milestone period and
where the PSA put its export (an object key in the PSA export bucket). Its **external reference**
(Business Central's "External Document No.", Code[35]) is derived from tenant, contract and
milestone only, so every run for the same milestone finds the same invoice (SCALE-3):
``ACME/CT-2026-014/M3``, readable on the invoice; a combination longer than 35 characters keeps
its first 26 and ends in ``~`` and 8 hex digits of its SHA-256, still one per milestone.

**The export** lives in S3, in the bucket named by connection ``psa_exports`` (extras ``bucket``,
``aws_conn_id``, ``region_name``): the PSA writes one file per milestone (CSV or JSON, the columns
of :mod:`include.validation.billable_lines`). Its SHA-256 is taken when it is validated; the
finance controller approves that hash, and the invoice is made from a file with the same hash or
not at all (an export replaced after the approval is refused, not invoiced).

**Validation** is the Great Expectations suite (amounts, VAT rates, currency, known customer, no
duplicates, dates in the period) plus one rule of this workflow: every line is for the requested
tenant (an export mixing customers is a wrong export, not two invoices). Problems are sentences a
finance person can act on.

**Totals**: Business Central computes VAT per VAT rate on the document total (not per line), so
the totals approved and later compared with the ERP's are computed the same way from the validated
net per rate; the suite's per-line sums are kept in the validation result.

Imports are light (no pandas, Great Expectations or boto3 at module level): the DAG file imports the
Param patterns from here at parse time.
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from include.validation.billable_lines import BillableLinesResult, Record, Totals

PSA_CONN_ID: Final = "psa_exports"
MAX_EXPORT_BYTES: Final = 20 * 1024 * 1024
MAX_PERIOD_DAYS: Final = 366
MAX_REFERENCE: Final = 35  # Sales Header "External Document No.", Code[35]
ARCHIVE_PREFIX: Final = "invoices/"
CENT: Final = Decimal("0.01")
MAX_LISTED: Final = 25

# The trigger form's patterns (the DAG's Params use them; the first task checks them again).
CONTRACT_PATTERN: Final = r"^[A-Z0-9][A-Z0-9.-]{1,19}(?!\n)$"
MILESTONE_PATTERN: Final = r"^[A-Z0-9][A-Z0-9.-]{0,11}(?!\n)$"
EXPORT_KEY_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_.=/-]{0,400}\.(csv|json)(?!\n)$"
REQUEST_FIELDS: Final = ("tenant", "contract_id", "milestone_id", "period_start", "period_end", "export_key")


class InvoiceRequestError(ValueError):
    """The request cannot be invoiced as given; the message is for the person who started the run."""


class ExportChangedError(RuntimeError):
    """The PSA export is not the file that was validated and approved."""


# --- the request ---------------------------------------------------------------------------------
def external_reference(tenant: str, contract_id: str, milestone_id: str) -> str:
    """``TENANT/CONTRACT/MILESTONE``; see the module docstring for the over-long form."""
    readable = "/".join((tenant.upper(), contract_id, milestone_id))
    if len(readable) <= MAX_REFERENCE:
        return readable
    digest = hashlib.sha256(readable.encode()).hexdigest()[:8].upper()
    return f"{readable[: MAX_REFERENCE - 9]}~{digest}"


def _date(params: Mapping[str, Any], name: str) -> date:
    value = params[name]
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise InvoiceRequestError(f"{name} {value!r} is not a date like 2026-10-31") from None


def _matches(params: Mapping[str, Any], name: str, pattern: str, example: str) -> str:
    value = params[name]
    if not isinstance(value, str) or not re.fullmatch(pattern, value):
        raise InvoiceRequestError(f"{name} {value!r} is not valid (expected something like {example})")
    return value


@dataclass(frozen=True)
class MilestoneRequest:
    tenant: str
    contract_id: str
    milestone_id: str
    period_start: date
    period_end: date
    export_key: str
    customer_number: str

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> MilestoneRequest:
        """Check the request (the trigger form checks the same; a REST call could skip the form).

        :raises InvoiceRequestError: what is missing or wrong, in words.
        """
        from include.policies.invoicing import load_invoicing
        from include.policies.loader import PolicyError

        missing = [name for name in REQUEST_FIELDS if params.get(name) in (None, "")]
        if missing:
            raise InvoiceRequestError(f"missing: {', '.join(missing)}")
        try:
            customer_number = load_invoicing().customer_number(str(params["tenant"]))
        except PolicyError as error:
            raise InvoiceRequestError(str(error)) from None
        start, end = _date(params, "period_start"), _date(params, "period_end")
        if start > end:
            raise InvoiceRequestError(f"the period ends ({end}) before it starts ({start})")
        days = (end - start).days + 1
        if days > MAX_PERIOD_DAYS:
            raise InvoiceRequestError(
                f"the period is {days} days long; a milestone period is at most {MAX_PERIOD_DAYS} days"
            )
        return cls(
            tenant=str(params["tenant"]),
            contract_id=_matches(params, "contract_id", CONTRACT_PATTERN, "CT-2026-014"),
            milestone_id=_matches(params, "milestone_id", MILESTONE_PATTERN, "M3"),
            period_start=start,
            period_end=end,
            export_key=_matches(params, "export_key", EXPORT_KEY_PATTERN, "exports/acme/CT-2026-014/M3.csv"),
            customer_number=customer_number,
        )

    @property
    def external_reference(self) -> str:
        return external_reference(self.tenant, self.contract_id, self.milestone_id)

    @property
    def archive_prefix(self) -> str:
        """``invoices/<tenant>/<contract>/<milestone>/`` in the audit bucket (one folder per invoice)."""
        return f"{ARCHIVE_PREFIX}{self.tenant}/{self.contract_id}/{self.milestone_id}/"

    @property
    def export_format(self) -> str:
        return "json" if self.export_key.lower().endswith(".json") else "csv"

    def as_xcom(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant,
            "contract_id": self.contract_id,
            "milestone_id": self.milestone_id,
            "period_start": self.period_start.isoformat(),
            "period_end": self.period_end.isoformat(),
            "export_key": self.export_key,
            "customer_number": self.customer_number,
            "external_reference": self.external_reference,
            "archive_prefix": self.archive_prefix,
        }


# --- the export ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ExportLocation:
    bucket: str
    key: str
    aws_conn_id: str
    region: str | None

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    @classmethod
    def from_connection(cls, key: str, conn_id: str = PSA_CONN_ID) -> ExportLocation:
        from airflow.sdk import BaseHook

        extras = dict(BaseHook.get_connection(conn_id).extra_dejson)
        bucket = extras.get("bucket")
        if not isinstance(bucket, str) or not bucket:
            raise InvoiceRequestError(
                f"connection {conn_id}: extra 'bucket' (the PSA export bucket) is missing"
            )
        return cls(
            bucket=bucket,
            key=key,
            aws_conn_id=str(extras.get("aws_conn_id") or "aws_default"),
            region=extras.get("region_name"),
        )

    def s3(self) -> Any:
        """An S3 client with the connection's credentials and endpoint (boto3 imported on use)."""
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        from include.connectors.aws import STANDARD_RETRIES

        return S3Hook(
            aws_conn_id=self.aws_conn_id, region_name=self.region, config=STANDARD_RETRIES
        ).get_conn()


def _missing(error: Exception) -> bool:
    code = str(getattr(error, "response", {}).get("Error", {}).get("Code", ""))
    return code in ("404", "NoSuchKey", "NotFound", "NoSuchBucket")


def head_export(s3: Any, location: ExportLocation) -> dict[str, Any]:
    """Size and version of the export; :raises InvoiceRequestError: missing, empty or too large."""
    from botocore.exceptions import ClientError

    try:
        head = s3.head_object(Bucket=location.bucket, Key=location.key)
    except ClientError as error:
        if _missing(error):
            raise InvoiceRequestError(
                f"the PSA export {location.uri} does not exist; check export_key (the PSA writes its "
                f"exports to bucket {location.bucket})"
            ) from None
        raise
    size = int(head.get("ContentLength") or 0)
    if size == 0:
        raise InvoiceRequestError(f"the PSA export {location.uri} is empty")
    if size > MAX_EXPORT_BYTES:
        raise InvoiceRequestError(
            f"the PSA export {location.uri} is {size:,} bytes; at most {MAX_EXPORT_BYTES:,} are read "
            "(split the milestone or raise the limit by pull request)"
        )
    return {"size": size, "version_id": head.get("VersionId"), "etag": str(head.get("ETag", "")).strip('"')}


def read_export(
    s3: Any, location: ExportLocation, *, expected_sha256: str | None = None
) -> tuple[bytes, str]:
    """The export's bytes and SHA-256; with ``expected_sha256``, refuse any other file."""
    body: bytes = s3.get_object(Bucket=location.bucket, Key=location.key)["Body"].read(MAX_EXPORT_BYTES + 1)
    if len(body) > MAX_EXPORT_BYTES:
        raise InvoiceRequestError(f"the PSA export {location.uri} is larger than {MAX_EXPORT_BYTES:,} bytes")
    digest = hashlib.sha256(body).hexdigest()
    if expected_sha256 is not None and digest != expected_sha256:
        raise ExportChangedError(
            f"the PSA export {location.uri} changed since it was validated and approved (SHA-256 "
            f"{digest[:12]}..., approved {expected_sha256[:12]}...); nothing is invoiced from a file "
            "nobody approved: start the workflow again to validate and approve the new export"
        )
    return body, digest


# --- validation ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class MilestoneValidation:
    """The suite's result plus this workflow's own rule; ``problems`` are sentences for finance."""

    success: bool
    problems: tuple[str, ...]
    line_count: int
    result: BillableLinesResult | None  # None: the export is not a list of billable lines at all

    def archive_document(self) -> dict[str, Any]:
        """JSON-safe and the same for the same export and suite (no timings): the archived result."""
        document: dict[str, Any] = {
            "success": self.success,
            "line_count": self.line_count,
            "problems": list(self.problems),
        }
        if self.result is not None:
            detail = self.result.to_dict(include_lines=True)
            detail.pop("run_seconds", None)
            document["suite"] = detail
        return document


def _other_customer_problems(
    records: Sequence[Record], request: MilestoneRequest, known: set[str]
) -> list[str]:
    """Lines of another (known) customer: the export is not this milestone's. Unknown customers are
    the suite's ``known_customer`` rule already."""
    others: dict[str, list[str]] = defaultdict(list)
    for row, record in enumerate(records, start=1):
        customer = record.get("customer_id")
        if customer and customer != request.tenant and customer in known:
            others[customer].append(str(record.get("line_id") or f"row {row}"))
    problems = []
    for customer, ids in sorted(others.items()):
        listed = ", ".join(ids[:10]) + (f" and {len(ids) - 10} more" if len(ids) > 10 else "")
        problems.append(
            f"{len(ids)} line{'s' if len(ids) != 1 else ''} ({listed}) "
            f"{'are' if len(ids) != 1 else 'is'} for customer {customer}, but this invoice is for "
            f"{request.tenant} (contract {request.contract_id}, "
            f"milestone {request.milestone_id}); the export must hold this milestone's lines only"
        )
    return problems


def validate_export(
    body: bytes, request: MilestoneRequest, *, known_customers: Sequence[str]
) -> MilestoneValidation:
    """Run the suite on the export (Great Expectations is imported here, ~10 s the first time)."""
    from include.validation.billable_lines import (
        BillableLinesFormatError,
        load_billable_lines,
        validate_billable_lines,
    )

    try:
        records = load_billable_lines(body, fmt="json" if request.export_format == "json" else "csv")
    except BillableLinesFormatError as error:
        return MilestoneValidation(False, (f"the export cannot be read as billable lines: {error}",), 0, None)
    result = validate_billable_lines(
        records,
        known_customers=known_customers,
        period_start=request.period_start,
        period_end=request.period_end,
    )
    problems = [p.message for p in result.problems]
    problems += _other_customer_problems(records, request, set(known_customers))
    return MilestoneValidation(not problems and result.success, tuple(problems), len(records), result)


# --- totals --------------------------------------------------------------------------------------
def _cents(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def invoice_totals(totals: Totals) -> dict[str, Any]:
    """The invoice's totals as Business Central computes them: VAT per rate on that rate's net total.

    Amounts are text (exact decimals through XCom); ``line_vat`` is the suite's sum of per-line VAT,
    kept so a difference between the two roundings can be shown, not hidden.
    """
    by_rate = {}
    vat = Decimal("0.00")
    for rate, (net, _) in totals.by_vat_rate.items():
        rate_vat = _cents(net * Decimal(rate))
        by_rate[rate] = {"net": str(net), "vat": str(rate_vat)}
        vat += rate_vat
    return {
        "currency": totals.currency,
        "net": str(totals.net),
        "vat": str(vat),
        "gross": str(totals.net + vat),
        "lines": totals.lines,
        "by_vat_rate": by_rate,
        "line_vat": str(totals.vat),
    }


def erp_lines(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The export's lines as the ERP connector takes them (the billable line id is the line reference)."""
    return [
        {
            "line_id": record["line_id"],
            "description": record["description"],
            "quantity": record["quantity"],
            "unit_price": record["unit_price"],
            "vat_rate": record["vat_rate"],
        }
        for record in records
    ]


def records_of(body: bytes, request: MilestoneRequest) -> list[Record]:
    """The export's lines as text records (no Great Expectations: the file was validated already)."""
    from include.validation.billable_lines import load_billable_lines

    return load_billable_lines(body, fmt="json" if request.export_format == "json" else "csv")
