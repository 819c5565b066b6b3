"""``python -m include.cli audit verify`` and ``audit trace``: the audit log in PostgreSQL, for
auditors and cron.

``audit verify`` prints the report (one line per problem, naming the record and the kind of
damage) and exits 1 on any damage, so a scheduled run or a CI job fails loudly. Checkpoint
signatures are checked with public keys only: ``--public-key FILE`` (PEM, repeatable for rotated
keys; published next to the export as ``audit/public-keys/<key id>.pem``). Without one it refuses
(exit 2): a chain without checked signatures is what anyone who can write the tables can rebuild.
``--no-signatures`` checks the chain alone and says so instead of "intact".
The log is streamed (memory bounded by a sealed segment); ``--after-checkpoint N`` verifies only the
records after checkpoint N (incremental; the checkpoint chain is still checked whole).
``audit verify-export`` verifies the exported segments on their own: ``--bucket`` (and ``--prefix``)
or ``--dir`` (a local copy), with the same ``--public-key`` files; no database needed.
``--legacy-hmac-key-file`` (``{"<key_id>": "<hex key>"}``) checks checkpoints signed with HMAC
before the upgrade (not needed once an asymmetric checkpoint follows them).

``audit trace <id>`` tells the whole story of one ticket, run or cloud resource (see
:mod:`include.audit.trace`): exit 0 when records were found, 1 when none match, 2 on a usage or
connection error (the message never carries the DSN's password).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

DSN_ENV = "AUDIT_STORE_DSN"

TRACE_DESCRIPTION = """\
The whole story of one ticket, run or cloud resource from the audit log.

<id> is tried, in this order, as: a correlation id (also the CorrelationId tag of the cloud
resources a run made), a run id, a ticket id (details.ticket_id, or the object id of a ticketing
side effect), an object id of a side effect (an ARN, a security-group id). Every record of each
matched run is printed in order, per correlation id, with a summary of approvals, changes and the
final run state, and each record's own hash is re-checked (the chain and checkpoints: `audit verify`).

--domain / --tenant restrict both the lookup and the story to records carrying exactly that domain /
tenant (records without one are left out): the per-domain / per-tenant view for auditors.

Exit status: 0 found, 1 nothing matches, 2 usage or connection error.
"""
_URL_PASSWORD = re.compile(r"(://[^:/@\s]*:)[^@\s]*(@)")
_KEYWORD_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def load_keys(path: Path) -> dict[str, bytes]:
    """``{"key_id": "hex"}`` from ``path``.

    :raises ValueError: not a JSON object of hex strings.
    """
    document = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(document, dict):
        raise ValueError(f"{path}: expected a JSON object {{key_id: hex key}}")
    try:
        return {str(key_id): bytes.fromhex(value) for key_id, value in document.items()}
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path}: every key must be a hex string ({error})") from error


NO_KEY_MESSAGE = (
    "audit verify: refusing to call the log intact without a public key: anyone who can write the "
    "audit tables can rebuild the hash chain, only a checkpoint signature tells a forged log from "
    "the real one. Pass --public-key FILE (the PEM published as audit/public-keys/<key id>.pem next "
    "to the export), or --no-signatures to check the chain alone."
)


def _verify_keys(args: argparse.Namespace) -> Any:
    """The keys ``audit verify`` trusts, ``None`` for --no-signatures.

    :raises ValueError, OSError: a key file that cannot be read (named in the message).
    """
    from include.audit.signing import CheckpointKeys, load_public_key_files

    if args.no_signatures:
        return None
    public = load_public_key_files(args.public_key)
    legacy = load_keys(args.legacy_hmac_key_file) if args.legacy_hmac_key_file is not None else {}
    for key_id in public:
        print(f"trusting public key {key_id}", file=sys.stderr)
    return CheckpointKeys(public, legacy)


def _handle_verify(args: argparse.Namespace) -> int:
    from include.audit.store import AuditStore

    if not args.public_key and not args.no_signatures:
        print(NO_KEY_MESSAGE, file=sys.stderr)
        return 2
    if args.public_key and args.no_signatures:
        print("audit verify: --public-key and --no-signatures contradict each other", file=sys.stderr)
        return 2
    try:
        keys = _verify_keys(args)
    except (OSError, ValueError) as error:
        print(f"audit verify: {error}", file=sys.stderr)
        return 2
    from include.audit.verify import IncrementalBaseError

    try:
        with AuditStore(args.dsn) as store:
            report = store.verify(keys, after_checkpoint=args.after_checkpoint)
    except IncrementalBaseError as error:
        print(f"audit verify: {error}", file=sys.stderr)
        return 1
    print(report)
    return 0 if report.ok else 1


def _handle_verify_export(args: argparse.Namespace) -> int:
    from include.audit.export import AuditExportError, verify_export

    if not args.public_key and not args.no_signatures:
        print(NO_KEY_MESSAGE.replace("audit verify", "audit verify-export", 1), file=sys.stderr)
        return 2
    if (args.bucket is None) == (args.dir is None):
        print("audit verify-export: give exactly one of --bucket and --dir", file=sys.stderr)
        return 2
    try:
        keys = _verify_keys(args)
    except (OSError, ValueError) as error:
        print(f"audit verify-export: {error}", file=sys.stderr)
        return 2
    if args.dir is not None:
        if not args.dir.is_dir():
            print(f"audit verify-export: --dir {args.dir}: not a folder", file=sys.stderr)
            return 2
        s3, location = None, str(args.dir)
    else:
        import boto3

        s3, location = boto3.client("s3", region_name=args.region), args.bucket
    try:
        report = verify_export(s3, location, keys, prefix=args.prefix)
    except AuditExportError as error:
        print(f"audit verify-export: {error}", file=sys.stderr)
        return 1
    print(report)
    return 0 if report.ok else 1


def _add_key_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--public-key",
        type=Path,
        action="append",
        default=[],
        help="PEM public key of a checkpoint signing key (repeat for rotated keys)",
    )
    parser.add_argument(
        "--no-signatures",
        action="store_true",
        help="check the chain without checkpoint signatures (the report then never says intact)",
    )
    parser.add_argument(
        "--legacy-hmac-key-file",
        type=Path,
        help='JSON {"<key_id>": "<hex key>"} of retired HMAC keys, for checkpoints sealed before the upgrade',
    )


def redact(text: str, dsn: str | None) -> str:
    """``text`` (an error message) without the password of ``dsn``, in any form it could take."""
    secrets: set[str] = set()
    if dsn:
        try:
            password = urlsplit(dsn).password if "://" in dsn else None
        except ValueError:
            password = None
        if password:
            secrets.add(password)
        match = _KEYWORD_PASSWORD.search(dsn)
        if match:
            secrets.add(match.group(2).strip("'"))
        with contextlib.suppress(Exception):  # an unparsable DSN: the patterns below still apply
            from psycopg.conninfo import conninfo_to_dict

            parsed = conninfo_to_dict(dsn).get("password")
            if parsed:
                secrets.add(str(parsed))
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    text = _URL_PASSWORD.sub(r"\1***\2", text)
    return _KEYWORD_PASSWORD.sub(r"\1***", text)


def _trace_error(error: Exception, dsn: str) -> str:
    import psycopg

    if isinstance(error, psycopg.errors.UndefinedTable):
        return "the database has no audit tables (not an audit store, or nothing was ever set up there)"
    if isinstance(error, psycopg.errors.UndefinedFunction):
        return (
            "the audit store's schema predates `audit trace` (function audit_details_field missing): "
            "run AuditStore.ensure_schema() once (the local stack does at start) to add it and its indexes"
        )
    if isinstance(error, psycopg.OperationalError):
        return f"cannot reach the audit store: {redact(str(error).strip(), dsn)}"
    return f"{type(error).__name__}: {redact(str(error).strip(), dsn)}"


def _handle_trace(args: argparse.Namespace) -> int:
    import psycopg

    from include.audit.store import AuditStore
    from include.audit.trace import Trace

    identifier = args.id.strip()
    if not identifier:
        print("audit trace: <id> must not be empty", file=sys.stderr)
        return 2
    if not args.dsn:
        print(f"audit trace: no audit store: pass --dsn or set ${DSN_ENV}", file=sys.stderr)
        return 2
    try:
        with AuditStore(args.dsn) as store:
            matches, records = store.trace(identifier, domain=args.domain, tenant=args.tenant)
    except psycopg.Error as error:
        print(f"audit trace: {_trace_error(error, args.dsn)}", file=sys.stderr)
        return 2
    trace = Trace(identifier, matches, records, domain=args.domain, tenant=args.tenant)
    if args.json:
        print(json.dumps(trace.to_json(), indent=2, ensure_ascii=False))
    else:
        print(trace.to_text())
    return 0 if trace.found else 1


def _add_dsn(parser: argparse.ArgumentParser, *, required: bool) -> None:
    parser.add_argument(
        "--dsn",
        default=os.environ.get(DSN_ENV),
        required=required and DSN_ENV not in os.environ,
        help=f"PostgreSQL DSN of the audit store (default: ${DSN_ENV})",
    )


def register(subparsers: Any) -> None:
    """Add ``audit verify`` and ``audit trace`` to the ``include.cli`` command line."""
    audit = subparsers.add_parser(
        "audit", help="tamper-evident audit trail (verify the chain and checkpoints, trace a ticket or run)"
    )
    commands = audit.add_subparsers(dest="audit_command", required=True)
    verify = commands.add_parser(
        "verify",
        help="verify the audit log; exit 1 on any damage, 2 without a public key",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_dsn(verify, required=True)
    _add_key_options(verify)
    verify.add_argument(
        "--after-checkpoint",
        type=int,
        default=0,
        metavar="N",
        help="incremental: only the records after checkpoint N (signed), checkpoint chain in full",
    )
    verify.set_defaults(handler=_handle_verify)
    export = commands.add_parser(
        "verify-export",
        help="verify the exported segments on their own (bucket or local copy); exit 1 on damage",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    export.add_argument("--bucket", help="the export bucket (AWS credentials from the environment)")
    export.add_argument("--prefix", default="audit/", help="key prefix of the segments (default: audit/)")
    export.add_argument("--region", default=None, help="the bucket's region")
    export.add_argument("--dir", type=Path, help="a local copy of the prefix instead (aws s3 sync)")
    _add_key_options(export)
    export.set_defaults(handler=_handle_verify_export)
    trace = commands.add_parser(
        "trace",
        help="the whole story of one ticket / run / cloud resource; exit 1 when nothing matches",
        description=TRACE_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    trace.add_argument("id", help="a correlation id, run id, ticket id or object id (ARN, sg-...)")
    _add_dsn(trace, required=False)  # checked by the handler: exit 2 with a message of its own
    trace.add_argument("--domain", help="only records of this domain")
    trace.add_argument("--tenant", help="only records of this tenant")
    trace.add_argument(
        "--json",
        action="store_true",
        help='machine-readable {"query", "matched_as", "correlation_ids", "records", "integrity", ...}',
    )
    trace.set_defaults(handler=_handle_trace)
