"""Entry point: ``python -m include.cli <command> ...``.

Each command lives in its own module exposing ``register(subparsers)``; the module is imported
here so ``--help`` lists every command, but heavy imports (Airflow, boto3) stay inside handlers.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMAND_MODULES = (
    "include.policies.checks",
    "include.policies.sync",
    "include.cli.change_summary",
    "include.audit.cli",
    "include.metrics.cli",
    "include.cli.mfa",
    "include.evidence.cli",
    "include.intake.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m include.cli", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
