"""``python -m include.cli evidence build`` and ``evidence verify``: a tenant's evidence pack.

``evidence verify PACK --public-key K`` needs only the pack (a directory, or a .zip of one) and the
platform's public key(s) (``audit/public-keys/<key id>.pem`` next to the audit export; the pack's
own ``keys/`` are never trusted). It prints one line per problem and exits 0 when the pack is
intact and complete, 1 on any problem (a missing, altered or foreign record, a bad signature, a
manifest mismatch: each named), 3 when it is intact but cannot prove completeness for part of the
period (segments sealed before per-tenant commitments, or a period ending after the newest
checkpoint: named as warnings), 2 on a usage error.

``evidence build --tenant T --start 2026-11-01 --end 2026-12-01 --out DIR --public-key K`` builds
one from the audit store (``--dsn`` or ``$AUDIT_STORE_DSN``; a reader's role is enough); it
verifies the chain first and fails (exit 1) on any damage, writing nothing. ``--platform``
instead of ``--tenant``: the platform's own records (no tenant). ``--zip`` also writes DIR.zip.
docs/evidence.md describes the pack and the completeness argument.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from include.audit.cli import DSN_ENV, redact

EXIT_INCOMPLETE = 3


def _instant(text: str) -> datetime:
    """``2026-11-01`` (midnight UTC) or an ISO-8601 instant with a zone."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: not a date (2026-11-01) or ISO-8601 instant") from None
    if moment.tzinfo is None:
        if len(text) > 10:
            raise argparse.ArgumentTypeError(f"{text!r}: give the zone (Z or +01:00), or a date")
        moment = moment.replace(tzinfo=UTC)
    return moment


def _public_keys(paths: list[Path]) -> Any:
    from include.audit.signing import load_public_key_files

    return load_public_key_files(paths)


def _unzipped(path: Path, work: Path) -> Path:
    with zipfile.ZipFile(path) as archive:
        for name in archive.namelist():
            target = (work / name).resolve()
            if not target.is_relative_to(work.resolve()):
                raise ValueError(f"{path}: entry {name!r} points outside the pack")
        archive.extractall(work)
    entries = list(work.iterdir())
    return entries[0] if len(entries) == 1 and entries[0].is_dir() else work


def _handle_verify(args: argparse.Namespace) -> int:
    from include.evidence.verify import verify_pack

    if not args.public_key:
        print("evidence verify: --public-key is required (the platform's published key)", file=sys.stderr)
        return 2
    try:
        keys = _public_keys(args.public_key)
    except (OSError, ValueError) as error:
        print(f"evidence verify: {error}", file=sys.stderr)
        return 2
    pack: Path = args.pack
    with tempfile.TemporaryDirectory(prefix="evidence-") as work:
        if pack.is_file() and zipfile.is_zipfile(pack):
            try:
                pack = _unzipped(pack, Path(work))
            except (OSError, ValueError, zipfile.BadZipFile) as error:
                print(f"evidence verify: {error}", file=sys.stderr)
                return 1
        elif not pack.is_dir():
            print(f"evidence verify: {pack}: not a pack directory or .zip", file=sys.stderr)
            return 2
        report = verify_pack(pack, keys)
    print(report)
    if not report.ok:
        return 1
    return 0 if report.complete else EXIT_INCOMPLETE


def _handle_build(args: argparse.Namespace) -> int:
    from include.audit.signing import CheckpointKeys
    from include.audit.store import AuditStore
    from include.evidence.pack import EvidencePackError, build_pack

    if not args.public_key:
        print("evidence build: --public-key is required (the chain is verified first)", file=sys.stderr)
        return 2
    if (args.tenant is None) == (not args.platform):
        print("evidence build: give --tenant T or --platform", file=sys.stderr)
        return 2
    args.dsn = args.dsn or os.environ.get(DSN_ENV)
    if not args.dsn:
        print(f"evidence build: --dsn or ${DSN_ENV} is required", file=sys.stderr)
        return 2
    try:
        keys = CheckpointKeys(_public_keys(args.public_key))
        with AuditStore(args.dsn) as store:
            result = build_pack(
                store,
                tenant=args.tenant,
                start=args.start,
                end=args.end,
                keys=keys,
                domain=args.domain,
                out_dir=args.out,
                parallel=None,
                report=not args.no_report,
                pdf=not args.no_pdf,
            )
    except (EvidencePackError, ValueError, OSError) as error:
        print(f"evidence build: {redact(str(error), args.dsn)}", file=sys.stderr)
        return 1
    except Exception as error:  # a database error: never the DSN's password
        print(f"evidence build: {type(error).__name__}: {redact(str(error), args.dsn)}", file=sys.stderr)
        return 1
    if args.zip:
        shutil.make_archive(str(args.out), "zip", root_dir=args.out.parent, base_dir=args.out.name)
    print(
        f"evidence pack {result.path}: tenant {result.tenant!r}, {result.start} .. {result.end}, "
        f"{result.records_in_period} records in the period ({result.records} in the pack), "
        f"checkpoints {result.first_checkpoint}..{result.last_checkpoint}, "
        f"manifest sha256 {result.manifest_sha256}"
    )
    for warning in result.warnings:
        print(f"WARNING: {warning}")
    if result.report_pdf_absent and not args.no_pdf:
        print(f"note: no report.pdf: {result.report_pdf_absent}")
    print(
        f"chain verified in {result.verify_seconds:.2f}s, "
        f"pack written and checked in {result.write_seconds:.2f}s"
    )
    return 0 if result.complete else EXIT_INCOMPLETE


def register(subparsers: Any) -> None:
    """Add ``evidence build`` and ``evidence verify`` to the ``include.cli`` command line."""
    evidence = subparsers.add_parser(
        "evidence", help="per-tenant evidence packs: build one from the audit store, verify one offline"
    )
    commands = evidence.add_subparsers(dest="evidence_command", required=True)
    verify = commands.add_parser(
        "verify",
        help="verify a pack offline; exit 1 on any problem, 3 when completeness is not proven",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verify.add_argument("pack", type=Path, help="the pack directory, or a .zip of it")
    verify.add_argument(
        "--public-key",
        type=Path,
        action="append",
        default=[],
        help="the platform's PEM public key (repeatable)",
    )
    verify.set_defaults(handler=_handle_verify)
    build = commands.add_parser(
        "build",
        help="build a tenant's pack for a period from the audit store",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    build.add_argument("--dsn", default=None, help=f"PostgreSQL DSN of the audit store (default: ${DSN_ENV})")
    build.add_argument("--tenant", help="the tenant id (tenants.yaml)")
    build.add_argument("--platform", action="store_true", help="the platform's own records (no tenant)")
    build.add_argument("--domain", help="only this domain's records in full (an internal audit)")
    build.add_argument(
        "--start", type=_instant, required=True, help="first instant (2026-11-01 = midnight UTC)"
    )
    build.add_argument("--end", type=_instant, required=True, help="end, exclusive")
    build.add_argument("--out", type=Path, required=True, help="a new or empty directory")
    build.add_argument("--zip", action="store_true", help="also write OUT.zip")
    build.add_argument("--no-report", action="store_true", help="no report.html (and no report.pdf)")
    build.add_argument("--no-pdf", action="store_true", help="no report.pdf (headless Chromium not run)")
    build.add_argument(
        "--public-key",
        type=Path,
        action="append",
        default=[],
        help="trusted checkpoint public key (repeatable)",
    )
    build.set_defaults(handler=_handle_build)
