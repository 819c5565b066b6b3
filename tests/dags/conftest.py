"""DAG integrity tests: parse every file in dags/ offline and report each file's parse time."""

from __future__ import annotations

import os
import tempfile

import pytest

# Airflow reads its configuration when first imported: keep it away from any real installation.
if "AIRFLOW_HOME" not in os.environ:
    os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="orchestrator-dags-airflow-")
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")

from include.policies.checks import DEFAULT_PARSE_BUDGET_SECONDS

PARSE_SECONDS_PROPERTY = "parse_seconds"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """A table of per-file parse times, from what test_imports_without_error recorded."""
    times = {
        report.nodeid.partition("[")[2].rstrip("]"): value
        for reports in terminalreporter.stats.values()
        for report in reports
        for name, value in getattr(report, "user_properties", ())
        if name == PARSE_SECONDS_PROPERTY and getattr(report, "when", "call") == "call"
    }
    if not times:
        return
    budget = DEFAULT_PARSE_BUDGET_SECONDS
    terminalreporter.section(f"DAG parse times (dags/, budget {budget:.2f} s per file)")
    width = max(len(name) for name in times)
    for name, seconds in sorted(times.items(), key=lambda item: -item[1]):
        flag = "  OVER BUDGET" if seconds > budget else ""
        terminalreporter.write_line(f"{name:<{width}}  {seconds:7.3f} s{flag}")
