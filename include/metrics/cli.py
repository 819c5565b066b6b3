"""``python -m include.cli kpi report``: the KPI report for a window, as one offline HTML file.

Reads Airflow's metadata DB (``--dsn``, or ``AIRFLOW__DATABASE__SQL_ALCHEMY_CONN`` as every
Airflow component does). Exit 0 when written, 2 on a usage or connection error (the message
never carries the DSN's password).
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

DSN_ENV = "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"
DEFAULT_WINDOW = "24h"


def parse_moment(text: str, now: datetime) -> datetime:
    """An ISO-8601 time (naive means UTC), or a duration before ``now`` (``90m``, ``7d``)."""
    from include.policies.loader import parse_duration

    try:
        return now - parse_duration(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected an ISO-8601 time or a duration like 24h"
        ) from error
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _handle_report(args: argparse.Namespace) -> int:
    from sqlalchemy import create_engine

    from include.audit.cli import redact
    from include.metrics.aggregate import kpi_summary
    from include.metrics.kpi import sla_table
    from include.metrics.report import ReportScope, render_summary

    now = datetime.now(UTC)
    try:
        since, until = parse_moment(args.since, now), parse_moment(args.until, now) if args.until else now
    except argparse.ArgumentTypeError as error:
        print(f"kpi report: {error}", file=sys.stderr)
        return 2
    if since >= until:
        print(
            f"kpi report: --since {since.isoformat()} is not before --until {until.isoformat()}",
            file=sys.stderr,
        )
        return 2
    dsn = args.dsn or os.environ.get(DSN_ENV)
    if not dsn:
        print(f"kpi report: give --dsn or set {DSN_ENV}", file=sys.stderr)
        return 2
    scope = ReportScope(since=since, until=until, domain=args.domain, tenant=args.tenant)
    try:
        engine = create_engine(dsn)
        with engine.connect() as connection:
            summary = kpi_summary(
                connection, since, until, sla_table(), now=now, domain=args.domain, tenant=args.tenant
            )
    except Exception as error:  # connection and SQL errors alike: report without the secret
        print(f"kpi report: reading the metadata DB failed: {redact(str(error), dsn)}", file=sys.stderr)
        return 2
    args.out.write_text(render_summary(summary, scope), encoding="utf-8")
    print(f"kpi report: {summary.runs} runs from {since.isoformat()} to {until.isoformat()} -> {args.out}")
    return 0


def register(subparsers: Any) -> None:
    kpi = subparsers.add_parser("kpi", help="workflow KPIs per domain and tenant (PERF-3)")
    commands = kpi.add_subparsers(dest="kpi_command", required=True)
    report = commands.add_parser(
        "report",
        help="write the KPI report (HTML with plots) for a window",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    report.add_argument(
        "--since", default=DEFAULT_WINDOW, help="ISO-8601 time or a duration ago (default 24h)"
    )
    report.add_argument("--until", default=None, help="ISO-8601 time or a duration ago (default now)")
    report.add_argument("--domain", default=None, help="only this domain")
    report.add_argument("--tenant", default=None, help="only this tenant")
    report.add_argument("--out", type=Path, required=True, help="the HTML file to write")
    report.add_argument("--dsn", default=None, help=f"metadata DB URL (default ${DSN_ENV})")
    report.set_defaults(handler=_handle_report)
