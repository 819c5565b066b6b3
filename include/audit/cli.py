"""``python -m include.cli audit verify``: check the audit log in PostgreSQL, for auditors and cron.

Prints the report (one line per problem, naming the record and the kind of damage) and exits 1 on
any damage, so a scheduled run or a CI job fails loudly. The checkpoint keys come from a JSON file
``{"<key_id>": "<hex key>"}`` (e.g. written from the secrets backend for the run); without one the
chain is still checked but checkpoint signatures are not, and the report says so.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

DSN_ENV = "AUDIT_STORE_DSN"


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


def _handle_verify(args: argparse.Namespace) -> int:
    from include.audit.store import AuditStore

    keys: dict[str, bytes] | None = None
    if args.key_file is not None:
        try:
            keys = load_keys(args.key_file)
        except (OSError, ValueError) as error:
            print(f"audit verify: {error}", file=sys.stderr)
            return 2
    with AuditStore(args.dsn) as store:
        report = store.verify(keys)
    print(report)
    return 0 if report.ok else 1


def register(subparsers: Any) -> None:
    """Add ``audit verify`` to the ``include.cli`` command line."""
    audit = subparsers.add_parser(
        "audit", help="tamper-evident audit trail (verify the chain and checkpoints)"
    )
    commands = audit.add_subparsers(dest="audit_command", required=True)
    verify = commands.add_parser(
        "verify", help="verify the audit log; exit 1 on any damage", description=__doc__
    )
    verify.add_argument(
        "--dsn",
        default=os.environ.get(DSN_ENV),
        required=DSN_ENV not in os.environ,
        help=f"PostgreSQL DSN of the audit store (default: ${DSN_ENV})",
    )
    verify.add_argument(
        "--key-file", type=Path, help='JSON {"<key_id>": "<hex key>"} of the checkpoint signing keys'
    )
    verify.set_defaults(handler=_handle_verify)
