"""Build a tenant's evidence pack for a period: its records, the signed proof that they are all of
them, and a manifest; docs/evidence.md describes the layout and the argument.

:func:`build_pack` first verifies the audit chain from the segment before the period to the head
(any damage: :class:`EvidencePackError`, no pack), then checks the tenant's records read from the
store against the commitments sealed with each checkpoint, writes the pack, and finally verifies
the pack it wrote with :func:`include.evidence.verify.verify_pack` (the same check an auditor
runs); a pack that would not verify is removed and the build fails.

Pack layout (a directory; ``python -m include.cli evidence build --zip`` also zips it)::

    records.jsonl          the tenant's records of every covered segment, seq order, one canonical
                           JSON object per line, exactly as hashed (each record's hash recomputes)
    proof.json             the period, the covering checkpoints (as signed), per segment the
                           tenant's commitment, inclusion path and (seq, hash) list
    checkpoints/<n>.msg    checkpoint n's signed bytes; <n>.sig its raw signature (for openssl)
    keys/<key id>.pem      public keys that signed the checkpoints (informative: trust the ones
                           the platform publishes, not these)
    summary.json           figures of the period
    report.html            the readable report (include/evidence/report.py), when the tenant is one
    report.pdf             report.html printed by headless Chromium (include/evidence/pdf.py); absent
                           where Chromium is not installed (summary.json ``report_pdf`` says why)
    manifest.json          sha256 of every file above; SHA256SUMS the same for ``sha256sum -c``
    manifest.sig           (when built with a signer) signature over manifest.json's bytes
"""

from __future__ import annotations

import hashlib
import importlib
import json
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from include.audit.records import canonical_json, checkpoint_message, format_at, record_hash
from include.audit.signing import CheckpointKeys, CheckpointSigner, load_public_key, public_key_pem
from include.evidence.pdf import BINARY as CHROMIUM
from include.evidence.pdf import PDF_FILE, PdfRenderError, PdfUnavailable, render_pdf
from include.evidence.proof import TenantCommitment, covering_checkpoints, tenant_digest
from include.evidence.verify import (
    MANIFEST_FILE,
    MANIFEST_FORMAT,
    MANIFEST_SIG_FILE,
    PACK_FORMAT,
    PROOF_FILE,
    RECORDS_FILE,
    REPORT_FILE,
    SUMMARY_FILE,
    SUMS_FILE,
    UNHASHED,
    sha256_file,
    verify_pack,
)

COMMITTED: Final = "committed"
PDF_DETAIL_RUNS: Final = 100
"""report.pdf details at most this many runs (report.html all of them): printing is linear in
the page's length (measured: ~0.1 s a run), and a PDF of a thousand pages is read by nobody."""
NOT_COMMITTED: Final = "sealed before per-tenant commitments"


class EvidencePackError(RuntimeError):
    """No pack: the store is damaged, the period is not sealed, or the pack would not verify."""


@dataclass(frozen=True)
class PackResult:
    """What :func:`build_pack` wrote.

    :ivar path: the pack directory. :ivar tenant: :ivar domain: :ivar start: :ivar end: as asked
        (``start``/``end`` in :data:`include.audit.records.AT_FORMAT`).
    :ivar records: records in ``records.jsonl`` (the tenant's, in every covered segment).
    :ivar records_in_period: those with ``start`` <= at < ``end``.
    :ivar first_checkpoint: :ivar last_checkpoint: the covering checkpoints (segments first..last).
    :ivar complete: completeness is proven for the whole period (every covered segment committed
        and the last checkpoint at or after ``end``); ``False``: see ``warnings``.
    :ivar warnings: what the pack cannot prove, worded for the reader.
    :ivar files: ``{name: sha256}`` as in the manifest. :ivar manifest_sha256: of manifest.json.
    :ivar verify_seconds: :ivar write_seconds: time spent on the chain check and on writing.
    :ivar report_pdf: report.pdf is in the pack. :ivar report_pdf_absent: why not (``None``: it is,
        or the pack has no report at all).
    :ivar sealed_first: the platform's seal ran before the build (the period's end was not sealed).
    """

    path: Path
    tenant: str | None
    domain: str | None
    start: str
    end: str
    records: int
    records_in_period: int
    first_checkpoint: int
    last_checkpoint: int
    complete: bool
    warnings: tuple[str, ...]
    files: Mapping[str, str]
    manifest_sha256: str
    verify_seconds: float
    write_seconds: float
    report_pdf: bool = False
    report_pdf_absent: str | None = None
    sealed_first: bool = False


def key_file_name(key_id: str) -> str:
    """``sha256:ab..`` -> ``sha256-ab...pem`` (a file name on every system)."""
    return key_id.replace(":", "-") + ".pem"


def _check_stored(
    where: str,
    checkpoint: Mapping[str, Any],
    commitment: TenantCommitment | None,
    since: int | None,
    entries: list[list[Any]],
) -> None:
    """The store's side: the tenant's records of a committed segment are the ones sealed."""
    if commitment is None:
        if entries or (since is not None and int(checkpoint["checkpoint_seq"]) >= since):
            raise EvidencePackError(f"{where}: the sealed commitment of the tenant is missing from the store")
        return
    pairs = [(int(seq), str(value)) for seq, value in entries]
    if commitment.count != len(pairs) or commitment.digest != tenant_digest(pairs):
        raise EvidencePackError(
            f"{where}: the store's records ({len(pairs)}) do not match the sealed commitment "
            f"({commitment.count}): a record deleted, altered or re-labelled after sealing"
        )
    if commitment.root() != checkpoint["tenant_root"]:
        raise EvidencePackError(f"{where}: the stored inclusion path does not reach the signed root")


def _segments(
    checkpoints: Sequence[Mapping[str, Any]],
    first: int,
    last: int,
    records: Sequence[Mapping[str, Any]],
    commitments: Sequence[TenantCommitment],
    tenant: str | None,
) -> list[dict[str, Any]]:
    """Per covered segment: bounds, status, the tenant's (seq, hash) list and commitment, checked
    against each other here (a mismatch means the store changed after sealing)."""
    by_number = {int(cp["checkpoint_seq"]): cp for cp in checkpoints}
    by_checkpoint = {c.checkpoint_seq: c for c in commitments}
    since = min((c.since for c in commitments), default=None)
    segments: list[dict[str, Any]] = []
    position = 0
    for number in range(first, last + 1):
        checkpoint = by_number.get(number)
        if checkpoint is None or (number > 1 and number - 1 not in by_number):
            raise EvidencePackError(f"checkpoint {number} or its predecessor is missing from the store")
        low = int(by_number[number - 1]["last_seq"]) + 1 if number > 1 else 1
        high = int(checkpoint["last_seq"])
        entries: list[list[Any]] = []
        while position < len(records) and int(records[position]["seq"]) <= high:
            entries.append([int(records[position]["seq"]), str(records[position]["hash"])])
            position += 1
        commitment = by_checkpoint.get(number)
        committed = checkpoint.get("tenant_root") is not None
        if committed:
            where = f"tenant {tenant!r}, segment of checkpoint {number} (seq {low}..{high})"
            _check_stored(where, checkpoint, commitment, since, entries)
        segments.append(
            {
                "checkpoint_seq": number,
                "first_seq": low,
                "last_seq": high,
                "status": COMMITTED if committed else NOT_COMMITTED,
                "commitment": commitment.to_dict() if commitment is not None else None,
                "records": entries,
            }
        )
    if position != len(records):
        raise EvidencePackError(f"store returned record seq {records[position]['seq']} outside the segments")
    return segments


def _summary(
    records: Sequence[Mapping[str, Any]],
    in_period: Sequence[Mapping[str, Any]],
    segments: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    runs = {(r.get("dag_id"), r.get("run_id")) for r in in_period if r.get("run_id")}
    return {
        "records_in_pack": len(records),
        "records_in_period": len(in_period),
        "records_outside_period": len(records) - len(in_period),
        "runs_in_period": len(runs),
        "by_kind": dict(sorted(Counter(str(r.get("kind")) for r in in_period).items())),
        "by_domain": dict(sorted(Counter(str(r.get("domain")) for r in in_period).items())),
        "first_record_at": in_period[0]["at"] if in_period else None,
        "last_record_at": in_period[-1]["at"] if in_period else None,
        "segments": len(segments),
        "segments_committed": sum(1 for s in segments if s["status"] == COMMITTED),
        "segments_not_committed": [s["checkpoint_seq"] for s in segments if s["status"] != COMMITTED],
    }


def _render_report(
    records: Sequence[Mapping[str, Any]],
    *,
    tenant: str,
    start: datetime,
    end: datetime,
    domain: str | None,
    detail_limit: int | None = None,
) -> str:
    """H2's renderer (include/evidence/report.py); a pack for a tenant is not built without it."""
    try:
        report = importlib.import_module("include.evidence.report")
    except ImportError as error:
        raise EvidencePackError(
            f"include/evidence/report.py cannot be imported ({error}): no report.html"
        ) from None
    html: str = report.render(
        records, tenant=tenant, start=start, end=end, domain=domain, detail_limit=detail_limit
    )
    return html


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


@dataclass
class _Evidence:
    """What a pack is written from, read and checked."""

    tenant: str | None
    domain: str | None
    start: datetime
    end: datetime
    checkpoints: list[dict[str, Any]]
    first: int
    last: int
    segments: list[dict[str, Any]]
    shown: list[dict[str, Any]]
    withheld: list[int]
    in_period: list[dict[str, Any]]
    verify_seconds: float

    @property
    def period(self) -> dict[str, str]:
        return {"start": format_at(self.start), "end": format_at(self.end)}

    def used_checkpoints(self) -> list[dict[str, Any]]:
        """The covering checkpoints and the one before them (the period's left boundary)."""
        by_number = {int(cp["checkpoint_seq"]): cp for cp in self.checkpoints}
        return [by_number[n] for n in range(max(self.first - 1, 1), self.last + 1)]


def _read_evidence(
    store: Any,
    *,
    tenant: str | None,
    start: datetime,
    end: datetime,
    keys: CheckpointKeys,
    domain: str | None,
    parallel: bool | None,
) -> _Evidence:
    """Verify the chain from the period's segments to the head, then read and check the tenant's
    records and commitments (:class:`EvidencePackError` on any damage)."""
    start_text, end_text = format_at(start), format_at(end)
    who = f"evidence pack of tenant {tenant!r} for {start_text} .. {end_text}"
    cover = covering_checkpoints(store.checkpoints(), start=start_text, end=end_text)
    if cover is None:
        unsealed = store.tenant_evidence(tenant, start=start, end=end)[3]
        raise EvidencePackError(
            f"{who}: {unsealed} records of the period are not sealed yet; run the seal "
            "(platform_audit_seal) after the period's end and build again"
            if unsealed
            else f"{who}: no checkpoint at or after the period's start: nothing to prove"
        )
    began = time.monotonic()
    verified = store.verify(keys, after_checkpoint=max(cover[0] - 1, 0), parallel=parallel)
    verify_seconds = time.monotonic() - began
    if not verified.ok:
        raise EvidencePackError(f"{who}: the audit store is damaged, no pack built:\n{verified}")
    checkpoints, commitments, records, unsealed = store.tenant_evidence(tenant, start=start, end=end)
    if unsealed:
        raise EvidencePackError(
            f"{who}: {unsealed} records of the period are not sealed yet; run the seal "
            "(platform_audit_seal) after the period's end and build again"
        )
    cover = covering_checkpoints(checkpoints, start=start_text, end=end_text)
    assert cover is not None  # a checkpoint seen above is still there (append-only)
    for record in records:
        if record_hash(record) != record["hash"] or record.get("tenant") != tenant:
            raise EvidencePackError(f"{who}: record seq {record['seq']} in the store is not what was hashed")
    segments = _segments(checkpoints, cover[0], cover[1], records, commitments, tenant)
    shown = [r for r in records if domain is None or r.get("domain") == domain]
    return _Evidence(
        tenant=tenant,
        domain=domain,
        start=start,
        end=end,
        checkpoints=checkpoints,
        first=cover[0],
        last=cover[1],
        segments=segments,
        shown=shown,
        withheld=[int(r["seq"]) for r in records if domain is not None and r.get("domain") != domain],
        in_period=[r for r in shown if start_text <= str(r["at"]) < end_text],
        verify_seconds=verify_seconds,
    )


def _json_bytes(value: Any) -> bytes:
    return (json.dumps(value, indent=1, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def _write_pdf(out_dir: Path, chromium: Path, evidence: _Evidence, runs: int) -> str | None:
    """report.pdf from report.html (a period of more than :data:`PDF_DETAIL_RUNS` runs: from a copy
    detailing the first of them, printed from outside the pack); ``None`` when written, else why
    not (the pack builds on)."""
    try:
        if runs <= PDF_DETAIL_RUNS:
            render_pdf(out_dir / REPORT_FILE, out_dir / PDF_FILE, binary=chromium, dated=evidence.end)
            return None
        assert evidence.tenant is not None
        printed = _render_report(
            evidence.in_period,
            tenant=evidence.tenant,
            start=evidence.start,
            end=evidence.end,
            domain=evidence.domain,
            detail_limit=PDF_DETAIL_RUNS,
        )
        with tempfile.TemporaryDirectory(prefix="evidence-print-") as scratch:
            source = Path(scratch) / REPORT_FILE
            source.write_text(printed, encoding="utf-8")
            render_pdf(source, out_dir / PDF_FILE, binary=chromium, dated=evidence.end)
    except (PdfUnavailable, PdfRenderError) as error:
        return str(error)
    return None


def _write_contents(
    out_dir: Path, evidence: _Evidence, keys: CheckpointKeys, report: bool, pdf: Path | None
) -> str | None:
    """Everything but the manifest: records, proof, checkpoint twins, keys, report (and its PDF
    with ``pdf``, Chromium's path), summary. Returns why report.pdf is absent (``None``: it is
    there, or no report was asked for)."""
    _write(out_dir / RECORDS_FILE, "".join(canonical_json(r) + "\n" for r in evidence.shown).encode("utf-8"))
    used = evidence.used_checkpoints()
    for checkpoint in used:
        number = int(checkpoint["checkpoint_seq"])
        _write(out_dir / "checkpoints" / f"{number}.msg", checkpoint_message(checkpoint))
        _write(out_dir / "checkpoints" / f"{number}.sig", bytes.fromhex(str(checkpoint["signature"])))
    for key_id in sorted({str(cp["key_id"]) for cp in used}):
        public = keys.public.get(key_id)
        if public is not None:
            _write(out_dir / "keys" / key_file_name(key_id), public_key_pem(public))
    proof = {
        "format": PACK_FORMAT,
        "tenant": evidence.tenant,
        "domain": evidence.domain,
        "period": evidence.period,
        "boundary": {
            "before": evidence.first - 1 if evidence.first > 1 else None,
            "first": evidence.first,
            "last": evidence.last,
        },
        "checkpoints": used,
        "segments": evidence.segments,
        "withheld": evidence.withheld,
    }
    _write(out_dir / PROOF_FILE, _json_bytes(proof))
    absent: str | None = None
    if report and evidence.tenant is not None:
        html = _render_report(
            evidence.in_period,
            tenant=evidence.tenant,
            start=evidence.start,
            end=evidence.end,
            domain=evidence.domain,
        )
        _write(out_dir / REPORT_FILE, html.encode("utf-8"))
    figures = _summary(evidence.shown, evidence.in_period, evidence.segments)
    runs = int(figures["runs_in_period"])
    if report and evidence.tenant is not None:
        absent = "not asked for (built without a PDF)"
        if pdf is not None:
            absent = _write_pdf(out_dir, pdf, evidence, runs)
    summary: dict[str, Any] = {
        "tenant": evidence.tenant,
        "domain": evidence.domain,
        "period": evidence.period,
        **figures,
    }
    if report and evidence.tenant is not None:
        summary["report_pdf"] = PDF_FILE if absent is None else None
        if absent is not None:
            summary["report_pdf_absent"] = absent
        elif runs > PDF_DETAIL_RUNS:
            summary["report_pdf_details_runs"] = PDF_DETAIL_RUNS
    _write(out_dir / SUMMARY_FILE, _json_bytes(summary))
    return absent


def _write_manifest(
    out_dir: Path, evidence: _Evidence, signer: CheckpointSigner | None
) -> tuple[dict[str, str], bytes]:
    """manifest.json and SHA256SUMS over every file written so far; manifest.sig with ``signer``."""
    if signer is not None:  # before the manifest: listed in it like every other key
        _write(out_dir / "keys" / key_file_name(signer.key_id), signer.public_key_pem())
    files = {
        path.relative_to(out_dir).as_posix(): sha256_file(path)
        for path in sorted(out_dir.rglob("*"))
        if path.is_file() and path.relative_to(out_dir).as_posix() not in UNHASHED
    }
    manifest: dict[str, Any] = {
        "format": MANIFEST_FORMAT,
        "tenant": evidence.tenant,
        "period": evidence.period,
        "files": files,
    }
    if signer is not None:
        manifest["signed_by"] = {"key_id": signer.key_id, "algorithm": signer.algorithm}
    manifest_bytes = _json_bytes(manifest)
    _write(out_dir / MANIFEST_FILE, manifest_bytes)
    _write(
        out_dir / SUMS_FILE, "".join(f"{digest}  {name}\n" for name, digest in files.items()).encode("utf-8")
    )
    if signer is not None:
        _write(out_dir / MANIFEST_SIG_FILE, signer.sign(manifest_bytes))
    return files, manifest_bytes


def _end_not_sealed(store: Any, end: datetime) -> bool:
    """No checkpoint at or after ``end``: records of the period may be unsealed, and nothing
    pins the period's end (what a seal before the build fixes)."""
    checkpoints = store.checkpoints()
    return not checkpoints or str(checkpoints[-1]["at"]) < format_at(end)


def build_pack(
    store: Any,
    *,
    tenant: str | None,
    start: datetime,
    end: datetime,
    keys: CheckpointKeys,
    domain: str | None = None,
    out_dir: Path,
    signer: CheckpointSigner | None = None,
    parallel: bool | None = False,
    report: bool = True,
    pdf: bool = True,
    chromium: Path = CHROMIUM,
    seal: Callable[[], object] | None = None,
) -> PackResult:
    """Build ``tenant``'s evidence pack for ``start`` <= at < ``end`` into ``out_dir``.

    :param store: an :class:`include.audit.store.AuditStore` (a reader's DSN is enough).
    :param tenant: the tenant id (``None``: the platform's own records, no report.html).
    :param start: :param end: timezone-aware; ``end`` exclusive.
    :param keys: the trusted checkpoint public keys (the chain is verified with them first).
    :param domain: only this domain's records in full (an internal audit); the tenant's other
        records of the covered segments stay in proof.json as (seq, hash) so completeness still
        checks, but their content is withheld.
    :param out_dir: a directory that does not exist yet or is empty.
    :param signer: signs manifest.json when given (docs/evidence.md: what that adds).
    :param parallel: passed to :meth:`AuditStore.verify` (``False`` inside an Airflow task).
    :param report: write report.html (``False``: records and proofs only).
    :param pdf: also print it to report.pdf with ``chromium`` (headless); where that binary is
        missing or fails, the pack is built without report.pdf and summary.json says why.
    :param seal: the platform's seal (e.g. :func:`include.audit.seal.run_seal` inside a task),
        called once before anything is read when the newest checkpoint is older than ``end`` (the
        period's last records are not sealed yet, or nothing shows the period's end complete:
        a quiet month end between two seals). ``None``: such a period fails as below.
    :raises EvidencePackError: damage in the store, records of the period not sealed yet, nothing
        sealed in the period, or a pack that would not verify (the message says which).
    :raises ValueError: naive datetimes, ``start`` >= ``end``, a non-empty ``out_dir``.
    """
    if format_at(start) >= format_at(end):
        raise ValueError(f"period: start {format_at(start)} is not before end {format_at(end)}")
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ValueError(f"{out_dir}: not empty; a pack is written into a new or empty directory")
    sealed_first = seal is not None and _end_not_sealed(store, end)
    if sealed_first:
        assert seal is not None
        seal()
    evidence = _read_evidence(
        store, tenant=tenant, start=start, end=end, keys=keys, domain=domain, parallel=parallel
    )
    began = time.monotonic()
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        absent = _write_contents(out_dir, evidence, keys, report, chromium if pdf else None)
        files, manifest_bytes = _write_manifest(out_dir, evidence, signer)
        write_seconds = time.monotonic() - began
        trusted = [*keys.public.values(), *([load_public_key(signer.public_key_pem())] if signer else [])]
        checked = verify_pack(out_dir, trusted)
        if not checked.ok:
            raise EvidencePackError(f"the pack written does not verify, removed:\n{checked}")
    except BaseException:
        shutil.rmtree(out_dir, ignore_errors=True)
        raise
    return PackResult(
        path=out_dir,
        tenant=tenant,
        domain=domain,
        start=evidence.period["start"],
        end=evidence.period["end"],
        records=len(evidence.shown),
        records_in_period=len(evidence.in_period),
        first_checkpoint=evidence.first,
        last_checkpoint=evidence.last,
        complete=checked.complete,
        warnings=tuple(checked.warnings),
        files=files,
        manifest_sha256=hashlib.sha256(manifest_bytes).hexdigest(),
        verify_seconds=evidence.verify_seconds,
        write_seconds=write_seconds,
        report_pdf=PDF_FILE in files,
        report_pdf_absent=absent,
        sealed_first=sealed_first,
    )
