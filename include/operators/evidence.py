"""Delivery of evidence packs (issue 25): which packs a run builds, where they are kept, who is told.

``platform_evidence_packs`` builds, on the first of each month, every customer's pack of the
previous month, and on demand (an auditor's trigger form) one tenant's pack of a chosen period.
:func:`pack_requests` turns the run into the list of packs to build: a scheduled run gets every
customer tenant; a run triggered by hand must name exactly one tenant and gets that tenant only,
whatever else its conf holds (a tenant-scoped run never builds, reads or stores another tenant's
pack). :class:`EvidencePackOperator` then, per request:

1. builds the pack with :func:`include.evidence.pack.build_pack` from the audit store, trusting the
   checkpoint public keys published in the audit export bucket (what an outside auditor trusts);
2. checks the pack names the requested tenant (``build_pack`` has verified it already, or raised);
3. writes every file of the pack to the evidence bucket (next to the audit export; Object Lock,
   COMPLIANCE mode, the tenant's ``evidence_pack`` retention of ``retention.yaml``) under
   ``evidence/<tenant>/<period>[/<domain>]/<pack id>/``, the pack id being the first 16 hex
   digits of the manifest's SHA-256: a re-run of the same period with the same records writes
   nothing new (``If-None-Match``), a changed pack lands in a folder of its own;
4. tells the tenant: a comment on the tenant's ticket when the run names one (the ticket must carry
   the tenant's ``Tenant`` field, or nothing is posted), else a mail to the tenant's
   ``security_contact`` (``include/policies/tenants.yaml``). The notice holds where the pack is and
   its manifest's SHA-256, never a download credential.

Every stored pack and every notice is a ``side_effect`` audit record of the tenant.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any, Final

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from include.audit.emit import side_effect as audit_side_effect

DEFAULT_RETENTION_DAYS: Final = 7 * 366
"""Seven years (leap days included) when the retention policy names no period for evidence packs."""
EVIDENCE_PREFIX: Final = "evidence/"
EVIDENCE_BUCKET_SUFFIX: Final = "-evidence"
MAX_PERIOD_DAYS: Final = 366
TICKET_SYSTEM: Final = "request_tracker"
_TICKET_ID = re.compile(r"^[0-9]{1,12}$")


class EvidenceRequestError(AirflowFailException):
    """The run asks for a pack it may not have (no tenant, a bad period, another tenant's ticket)."""


@dataclass(frozen=True)
class PackRequest:
    """One pack to build: whose, which period ``[start, end)`` (UTC), which domain, told where.

    :ivar ticket_id: the tenant's ticket to comment on; ``None``: mail the security contact.
    :ivar seal_first: the monthly run's pack: when the period's end is not sealed yet (a quiet
        month end), the platform's seal runs before the build instead of the build failing.
    """

    tenant: str
    start: datetime
    end: datetime
    domain: str | None = None
    ticket_id: str | None = None
    seal_first: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "domain": self.domain,
            "ticket_id": self.ticket_id,
            "seal_first": self.seal_first,
        }

    @classmethod
    def from_dict(cls, value: Mapping[str, Any]) -> PackRequest:
        """:raises EvidenceRequestError: a field is missing or malformed."""
        try:
            return cls(
                tenant=str(value["tenant"]),
                start=_utc(datetime.fromisoformat(str(value["start"]))),
                end=_utc(datetime.fromisoformat(str(value["end"]))),
                domain=value.get("domain") or None,
                ticket_id=value.get("ticket_id") or None,
                seal_first=value.get("seal_first") is True,
            )
        except (KeyError, TypeError, ValueError) as error:
            raise EvidenceRequestError(
                f"evidence pack request {dict(value)!r} is malformed: {error}"
            ) from None

    def period_text(self) -> str:
        """``2026-11-01_2026-12-01`` for whole days, else ``20261104T140000Z_20261104T180000Z``."""
        if all(t.time() == time(0) for t in (self.start, self.end)):
            return f"{self.start.date().isoformat()}_{self.end.date().isoformat()}"
        return f"{self.start:%Y%m%dT%H%M%SZ}_{self.end:%Y%m%dT%H%M%SZ}"

    def prefix(self, pack_id: str) -> str:
        """``evidence/<tenant>/<period>[/<domain>]/<pack id>/``."""
        scope = f"{self.tenant}/{self.period_text()}"
        if self.domain:
            scope += f"/{self.domain}"
        return f"{EVIDENCE_PREFIX}{scope}/{pack_id}/"

    def describe(self) -> str:
        """``2026-11-01 to 2026-11-30`` (whole days, the last included), else the two instants."""
        if all(t.time() == time(0) for t in (self.start, self.end)):
            return f"{self.start.date().isoformat()} to {(self.end - timedelta(days=1)).date().isoformat()}"
        return f"{self.start:%Y-%m-%d %H:%M:%S} UTC up to {self.end:%Y-%m-%d %H:%M:%S} UTC"


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def previous_month(moment: datetime | date) -> tuple[datetime, datetime]:
    """``[first day of the month before moment's, first day of moment's month)``, UTC midnights."""
    first = date(moment.year, moment.month, 1)
    before = first - timedelta(days=1)
    return _midnight(date(before.year, before.month, 1)), _midnight(first)


def _bound(value: Any, name: str, *, last_day: bool) -> datetime | None:
    """A period bound from the form: a day (``YYYY-MM-DD``; as ``period_end`` the day is included)
    or an instant (``YYYY-MM-DDTHH:MM[:SS]``, UTC unless it names an offset)."""
    if value in (None, ""):
        return None
    text = str(value).strip()
    try:
        if len(text) == 10:
            day = _midnight(date.fromisoformat(text))
            return day + timedelta(days=1) if last_day else day
        return _utc(datetime.fromisoformat(text.replace("Z", "+00:00")))
    except ValueError:
        raise EvidenceRequestError(
            f"param {name}: {value!r} is neither a day (YYYY-MM-DD) nor an instant (YYYY-MM-DDTHH:MM:SSZ)"
        ) from None


def pack_requests(
    params: Mapping[str, Any],
    *,
    manual: bool,
    run_after: datetime,
    customers: Sequence[str],
    known_tenants: Sequence[str],
) -> list[PackRequest]:
    """The packs this run builds.

    :param params: the run's params: ``tenant``, ``period_start``, ``period_end`` (a day, included,
        or an instant, excluded), ``domain``, ``ticket_id``.
    :param manual: the run was triggered by hand (then exactly one tenant, named in ``tenant``).
    :param run_after: when the run was due (a scheduled run packs the month before this one).
    :param customers: the tenants a scheduled run packs.
    :param known_tenants: the tenants a run by hand may name.
    :raises EvidenceRequestError: a run by hand without a known tenant, or with a bad period.
    """
    if not manual:
        start, end = previous_month(run_after)
        return [PackRequest(tenant, start, end, seal_first=True) for tenant in sorted(customers)]
    tenant = params.get("tenant")
    if not isinstance(tenant, str) or tenant not in known_tenants:
        raise EvidenceRequestError(
            f"an evidence pack on demand is for one tenant: param tenant must be one of "
            f"{', '.join(sorted(known_tenants))}, got {tenant!r}"
        )
    default_start, default_end = previous_month(run_after)
    start = _bound(params.get("period_start"), "period_start", last_day=False) or default_start
    end = _bound(params.get("period_end"), "period_end", last_day=True) or default_end
    if end <= start:
        raise EvidenceRequestError(
            f"the period ends ({end.isoformat()}) before it starts ({start.isoformat()})"
        )
    if (end - start).days > MAX_PERIOD_DAYS:
        raise EvidenceRequestError(
            f"the period {start.date()} to {end.date()} is longer than {MAX_PERIOD_DAYS} days"
        )
    if end > _utc(run_after) + timedelta(days=1):
        raise EvidenceRequestError(f"period_end {end.isoformat()} is in the future")
    ticket = params.get("ticket_id")
    if ticket not in (None, "") and not _TICKET_ID.match(str(ticket)):
        raise EvidenceRequestError(f"param ticket_id: {ticket!r} is not a ticket number")
    domain = params.get("domain") or None
    return [PackRequest(tenant, start, end, domain, str(ticket) if ticket not in (None, "") else None)]


def evidence_bucket(extras: Mapping[str, Any]) -> str:
    """The evidence bucket: extra ``evidence_bucket`` of ``audit_store``, else the export bucket's
    name with :data:`EVIDENCE_BUCKET_SUFFIX` (the same account, region and credentials)."""
    bucket = extras.get("evidence_bucket")
    if isinstance(bucket, str) and bucket:
        return bucket
    export = extras.get("export_bucket")
    if not isinstance(export, str) or not export:
        raise ValueError("connection audit_store: neither extra 'evidence_bucket' nor 'export_bucket' is set")
    return f"{export}{EVIDENCE_BUCKET_SUFFIX}"


def retention_days(tenant: str | None) -> int:
    """Days ``tenant``'s evidence pack stays locked: the retention policy's ``evidence_pack`` period
    (``include/policies/retention.yaml``; ``None``: the default class, the bucket's default rule),
    else :data:`DEFAULT_RETENTION_DAYS` where that policy is not deployed."""
    try:
        from include.policies.retention import retention_for
    except ImportError:
        return DEFAULT_RETENTION_DAYS
    return retention_for("evidence_pack", tenant).days


def log_reaches(store: Any, end: datetime) -> bool:
    """Whether the audit log's first record is before ``end`` (else the period predates the log:
    a monthly run on a new deployment has nothing to pack, which is not a failure)."""
    first = store.records(1, 1)
    return bool(first) and str(first[0]["at"]) < end.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def pack_files(path: Path) -> list[tuple[str, Path]]:
    """``(name inside the pack, file)`` for a pack folder (every file, sorted) or a single file."""
    if path.is_file():
        return [(path.name, path)]
    if not path.is_dir():
        raise FileNotFoundError(f"evidence pack {path} does not exist")
    return sorted((p.relative_to(path).as_posix(), p) for p in path.rglob("*") if p.is_file())


def manifest_digest(files: Sequence[tuple[str, Path]]) -> str:
    """SHA-256 of the pack's ``manifest.json``: what the notice names, so the tenant can check the
    copy they get.

    :raises FileNotFoundError: the pack has no manifest.json.
    """
    for name, file in files:
        if name == "manifest.json":
            return hashlib.sha256(file.read_bytes()).hexdigest()
    raise FileNotFoundError("the evidence pack has no manifest.json")


def manifest_tenant(manifest: Any) -> str | None:
    """The tenant a manifest names (``tenant`` key, or ``scope.tenant``), ``None`` if it names none."""
    if not isinstance(manifest, Mapping):
        return None
    if isinstance(manifest.get("tenant"), str):
        return str(manifest["tenant"])
    scope = manifest.get("scope")
    if isinstance(scope, Mapping) and isinstance(scope.get("tenant"), str):
        return str(scope["tenant"])
    return None


def store_pack(
    s3: Any, bucket: str, prefix: str, files: Sequence[tuple[str, Path]], retain_until: datetime
) -> list[dict[str, Any]]:
    """Write each file under ``prefix`` with a COMPLIANCE lock until ``retain_until``; an object
    already there is left as it is (never overwritten).

    :returns: per file ``{"key", "sha256", "written"}``.
    """
    from include.audit.export import _put_segment

    stored = []
    for name, file in files:
        body = file.read_bytes()
        key = f"{prefix}{name}"
        content_type = "text/html" if name.endswith(".html") else "application/octet-stream"
        if name.endswith(".pdf"):
            content_type = "application/pdf"
        if name.endswith((".json", ".jsonl")):
            content_type = "application/json"
        version = _put_segment(s3, bucket, key, body, retain_until, content_type=content_type)
        stored.append(
            {"key": key, "sha256": hashlib.sha256(body).hexdigest(), "written": version is not None}
        )
    return stored


def notice(request: PackRequest, display_name: str, location: str, digest: str) -> str:
    """The plain-text notice: which pack, where it is kept, the manifest's SHA-256, how to check it."""
    scope = f" (area {request.domain})" if request.domain else ""
    return (
        f"The evidence pack of {display_name}{scope} for {request.describe()} "
        f"is ready.\n\nIt is kept write-once (S3 Object Lock, compliance mode) at:\n  {location}\n\n"
        f"Manifest SHA-256: {digest}\n\nAsk your service manager for a copy. Check it offline with "
        "`python -m include.cli evidence verify PACK` or the openssl/sha256sum steps of its README; the "
        "manifest's SHA-256 must be the one above."
    )


class EvidencePackOperator(BaseOperator):
    """Build one tenant's evidence pack, store it under Object Lock, tell the tenant (module doc).

    XCom: ``{"tenant", "start", "end", "bucket", "prefix", "manifest_sha256", "objects", "notice",
    "report_pdf", "sealed_first"}`` (the request's fields too).

    :param request: a :meth:`PackRequest.as_dict` (templated: the plan task's output, mapped).
    :param audit_conn_id: the audit store's connection (its extras name the buckets and region).
    :param ticket_system: the ticketing system a notice is commented on.
    :param smtp_conn_id: the SMTP connection of the mail notice; default the relay's.
    """

    template_fields: Sequence[str] = ("request",)

    def __init__(
        self,
        *,
        request: Any,
        audit_conn_id: str = "audit_store",
        ticket_system: str = TICKET_SYSTEM,
        smtp_conn_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.request = request
        self.audit_conn_id = audit_conn_id
        self.ticket_system = ticket_system
        self.smtp_conn_id = smtp_conn_id

    # --- seams (replaced in unit tests) ---------------------------------------------------

    def settings(self) -> tuple[dict[str, Any], Any, Any]:
        """``(audit_store extras, S3 client, audit store)``."""
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook
        from airflow.sdk import BaseHook

        from include.audit.emit import store
        from include.connectors.aws import STANDARD_RETRIES

        extras = dict(BaseHook.get_connection(self.audit_conn_id).extra_dejson)
        s3 = S3Hook(
            aws_conn_id=str(extras.get("aws_conn_id", "aws_default")),
            region_name=str(extras.get("region_name", "eu-west-1")),
            config=STANDARD_RETRIES,
        ).get_conn()
        return extras, s3, store()

    def seal(self) -> object:
        """The platform's seal (:func:`include.audit.seal.run_seal`, the ``platform_audit_seal``
        task body: this DAG is of the ``platform`` domain, the one the ``audit-seal`` capability
        allows); a pass overlapping the scheduled one is harmless (every step is idempotent)."""
        from include.audit.seal import run_seal

        self.log.info("the period's end is not sealed yet: running the platform's seal before the build")
        return run_seal()

    def build(self, store: Any, request: PackRequest, keys: Any, out_dir: Path) -> Any:
        """:func:`include.evidence.pack.build_pack` (it verifies the pack it wrote, or raises); a
        monthly request seals first when its period's end is not sealed (:attr:`PackRequest.seal_first`)."""
        from include.evidence.pack import build_pack

        return build_pack(
            store,
            tenant=request.tenant,
            start=request.start,
            end=request.end,
            keys=keys,
            domain=request.domain,
            out_dir=out_dir,
            parallel=False,  # inside an Airflow task: no reader processes
            seal=self.seal if request.seal_first else None,
        )

    def tell(self, context: Any, request: PackRequest, text: str) -> dict[str, Any]:
        """Comment on the tenant's ticket, or mail its security contact; record the side effect."""
        from include.policies.tenants import load_tenants

        tenant = load_tenants().tenant(request.tenant)
        subject = f"Evidence pack {tenant.display_name} {request.start.date().isoformat()}"
        if request.ticket_id:
            from include.connectors.context import RunContext
            from include.connectors.idempotency import idempotency_key
            from include.connectors.ticketing import ticketing_hook
            from include.connectors.ticketing.interface import TicketingHook

            hook = ticketing_hook(self.ticket_system, None, request.tenant)
            ticket = hook.get_ticket(request.ticket_id)
            if ticket.fields.get(TicketingHook.TENANT_FIELD) != request.tenant:
                raise EvidenceRequestError(
                    f"ticket {request.ticket_id} is not a ticket of tenant {request.tenant}: "
                    "the pack's location is not posted there"
                )
            run = RunContext.from_airflow_context(context, request.tenant)
            entry = hook.comment(
                request.ticket_id,
                text,
                idempotency_key=idempotency_key(run, f"evidence-{request.period_text()}"),
            )
            audit_side_effect(
                context,
                system=self.ticket_system,
                operation="comment",
                object_id=entry.entry_id,
                tenant=request.tenant,
                created=entry.created,
                ticket_id=request.ticket_id,
                summary=subject,
            )
            return {"via": "ticket", "ticket_id": request.ticket_id, "entry_id": entry.entry_id}
        if not tenant.security_contact:
            raise EvidenceRequestError(
                f"tenant {request.tenant} has no security_contact in tenants.yaml and the run names no "
                "ticket: nobody to tell"
            )
        from html import escape

        from include.connectors.smtp import SmtpRelayHook

        html = "<pre>" + escape(text) + "</pre>"
        SmtpRelayHook(self.smtp_conn_id, tenant=request.tenant).send([tenant.security_contact], subject, html)
        audit_side_effect(
            context,
            system="smtp",
            operation="mail",
            object_id=tenant.security_contact,
            tenant=request.tenant,
            summary=subject,
        )
        return {"via": "mail", "to": tenant.security_contact}

    def execute(self, context: Any) -> dict[str, Any]:
        import tempfile

        from include.audit.export import ensure_locked_bucket, read_public_keys
        from include.audit.signing import CheckpointKeys
        from include.policies.tenants import load_tenants

        request = PackRequest.from_dict(self.request)
        extras, s3, store = self.settings()
        if not log_reaches(store, request.end):
            raise AirflowSkipException(
                f"the audit log has no record before {request.end.isoformat()}: "
                f"nothing to pack for {request.tenant} (the platform was not running then)"
            )
        export_bucket, bucket = str(extras.get("export_bucket")), evidence_bucket(extras)
        region = str(extras.get("region_name", "eu-west-1"))
        ensure_locked_bucket(s3, bucket, region=region, retention_days=retention_days(None))
        days = retention_days(request.tenant)
        keys = CheckpointKeys.of(*read_public_keys(s3, export_bucket).values())
        if not keys.public:
            raise AirflowFailException(
                f"no checkpoint public key published in s3://{export_bucket}/audit/public-keys/: "
                "run platform_audit_seal first"
            )
        with tempfile.TemporaryDirectory(prefix=f"evidence-{request.tenant}-") as folder:
            result = self.build(store, request, keys, Path(folder) / "pack")
            pdf_absent = getattr(result, "report_pdf_absent", None)
            if pdf_absent:  # the pack is whole without it (docs/evidence.md, "The PDF")
                self.log.warning("evidence pack of %s has no report.pdf: %s", request.tenant, pdf_absent)
            files = pack_files(Path(result.path))
            named = manifest_tenant(json.loads(dict(files)["manifest.json"].read_text("utf-8")))
            if result.tenant != request.tenant or named != request.tenant:
                raise AirflowFailException(
                    f"the pack built for tenant {request.tenant} names tenant "
                    f"{named if named != request.tenant else result.tenant}: not stored"
                )
            digest = manifest_digest(files)
            prefix = request.prefix(digest[:16])
            retain_until = datetime.now(UTC) + timedelta(days=days)
            objects = store_pack(s3, bucket, prefix, files, retain_until)
        location = f"s3://{bucket}/{prefix}"
        self.log.info(
            "evidence pack of %s %s..%s: %d files at %s (manifest sha256 %s, locked %d days)",
            request.tenant,
            request.start,
            request.end,
            len(objects),
            location,
            digest,
            days,
        )
        audit_side_effect(
            context,
            system="s3",
            operation="store-evidence-pack",
            object_id=location,
            tenant=request.tenant,
            created=any(o["written"] for o in objects),
            manifest_sha256=digest,
            retention_days=days,
            summary=f"evidence pack {request.describe()}",
        )
        display = load_tenants().tenant(request.tenant).display_name
        told = self.tell(context, request, notice(request, display, location, digest))
        return {
            **request.as_dict(),
            "bucket": bucket,
            "prefix": prefix,
            "manifest_sha256": digest,
            "objects": objects,
            "notice": told,
            "report_pdf": bool(getattr(result, "report_pdf", False)),
            "sealed_first": bool(getattr(result, "sealed_first", False)),
        }
