"""The KPI report aggregated in PostgreSQL gives the figures of the per-row Python path.

Runs on a PostgreSQL cluster of its own (profile ``kpi-itest``, 127.0.0.1:43433), started fresh
for this module and stopped at its end; Airflow 3.3.2's metadata schema comes from
``airflow db migrate``. The history is the benchmark's generator (``bench/scale_kpi.py``, a few
thousand task instances) plus hand-written edge rows the generator never writes: a DAG with two
``domain:`` tags, a run never queued (start date only), a run without task instances, tenants
empty or not a string, a correlation id in ``conf``, a pending gate, ``responded_by`` as JSON
``null`` and ``{}``, a ladder stored as a JSON array, a task with ``try_number`` 0, and runs just
outside the window.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine
from sqlalchemy.engine import Engine

from bench.scale_kpi import generate_history, migrate
from devstack import postgres
from devstack.config import Profile
from include.cli.__main__ import main as cli_main
from include.metrics.aggregate import KpiSummary, kpi_summary, summarize
from include.metrics.kpi import sla_table
from include.metrics.measure import task_measurements
from include.metrics.report import ReportScope
from tests.support.stores import postgres_database

PROFILE = Profile(name="kpi-itest", api_port=0, pg_port=43433, moto_port=0, smtp_port=0)
DATABASE = "kpi_itest"
UNTIL = datetime(2026, 6, 1, tzinfo=UTC)
SINCE = UNTIL - timedelta(days=3)
EDGE_CORRELATION = "corr-edge-ticket-77"


def _edge_rows(connection: Any) -> None:
    """The cases the generator does not write (see the module docstring)."""
    sql = connection.exec_driver_sql
    sql(
        "INSERT INTO dag (dag_id, bundle_name, is_paused, is_stale, max_active_tasks, max_active_runs, "
        "max_consecutive_failed_dag_runs, has_task_concurrency_limits, fileloc, timetable_type, "
        "partition_mapper_info) VALUES ('edge_dual_tagged', 'dags-folder', false, false, 16, 16, 0, false, "
        "'x.py', 'NullTimetable', '{}')"
    )
    sql(
        "INSERT INTO dag_tag (name, dag_id) VALUES ('domain:soc', 'edge_dual_tagged'), "
        "('domain:hr', 'edge_dual_tagged')"
    )
    at = SINCE + timedelta(hours=5)

    def run(
        dag_id: str,
        run_id: str,
        conf: str,
        *,
        queued: datetime | None,
        start: datetime,
        end: datetime | None,
        state: str,
    ) -> int:
        row = sql(
            "INSERT INTO dag_run (dag_id, run_id, queued_at, start_date, end_date, state, run_type, conf, "
            "run_after, clear_number, span_status) "
            "VALUES (%s, %s, %s, %s, %s, %s, 'manual', %s::jsonb, %s, 0, "
            "'ended') RETURNING id",
            (dag_id, run_id, queued, start, end, state, conf, start),
        ).scalar_one()
        return int(row)

    def task(
        dag_id: str,
        run_id: str,
        task_id: str,
        ti_id: str,
        *,
        start: datetime,
        end: datetime | None,
        queued: datetime | None,
        try_number: int = 1,
        state: str = "success",
    ) -> None:
        sql(
            "INSERT INTO task_instance (id, task_id, dag_id, run_id, map_index, start_date, end_date, state, "
            "try_number, max_tries, pool, pool_slots, queued_dttm, span_status) VALUES (%s, %s, %s, %s, -1, "
            "%s, %s, %s, %s, 3, 'default_pool', 1, %s, 'ended')",
            (ti_id, task_id, dag_id, run_id, start, end, state, try_number, queued),
        )

    def gate(ti_id: str, *, created: datetime, responded: datetime | None, by: str | None) -> None:
        sql(
            "INSERT INTO hitl_detail (ti_id, options, subject, multiple, params, created_at, responded_at, "
            "responded_by, params_input) VALUES (%s, '[\"Approve\"]', 'edge', false, '{}', %s, %s, %s::json, "
            "'{}')",
            (ti_id, created, responded, by),
        )

    # Two domain tags: domain "unknown"; tenant not a string: "unknown"; try_number 0: no retry.
    run(
        "edge_dual_tagged",
        "e1",
        '{"tenant": 5}',
        queued=at,
        start=at,
        end=at + timedelta(seconds=50),
        state="success",
    )
    task(
        "edge_dual_tagged",
        "e1",
        "only",
        "00000000-0000-0000-0000-0000000000e1",
        start=at,
        end=at + timedelta(seconds=40),
        queued=at,
        try_number=0,
    )
    # Never queued (start date only), empty tenant on HR: secops; a correlation id; over HR's SLA;
    # its gate answered with responded_by JSON null (timed out) and a ladder as a JSON array.
    e2 = run(
        "hr_onboarding",
        "e2",
        f'{{"tenant": "", "correlation_id": "{EDGE_CORRELATION}"}}',
        queued=None,
        start=at,
        end=at + timedelta(hours=30),
        state="failed",
    )
    task(
        "hr_onboarding",
        "e2",
        "approve",
        "00000000-0000-0000-0000-0000000000e2",
        start=at,
        end=at + timedelta(hours=30),
        queued=at - timedelta(seconds=2),
        state="failed",
    )
    gate("00000000-0000-0000-0000-0000000000e2", created=at, responded=at + timedelta(hours=29), by="null")
    sql(
        "INSERT INTO xcom (dag_run_id, task_id, map_index, key, dag_id, run_id, value, timestamp) VALUES "
        "(%s, 'approve', -1, 'approval_ladder', 'hr_onboarding', 'e2', %s::jsonb, %s)",
        (e2, '[{"step": "requested"}, {"step": "escalation"}, {"step": "escalation"}, "escalation"]', at),
    )
    # A running SOC run with a pending gate and a gate whose responded_by is {} (timed out).
    run("soc_contain_host", "e3", '{"tenant": "tenant-001"}', queued=at, start=at, end=None, state="running")
    task(
        "soc_contain_host",
        "e3",
        "approve",
        "00000000-0000-0000-0000-0000000000e3",
        start=at,
        end=None,
        queued=at,
        state="deferred",
    )
    gate("00000000-0000-0000-0000-0000000000e3", created=at, responded=None, by=None)
    task(
        "soc_contain_host",
        "e3",
        "approve_2",
        "00000000-0000-0000-0000-0000000000e4",
        start=at,
        end=at + timedelta(seconds=30),
        queued=at,
    )
    gate("00000000-0000-0000-0000-0000000000e4", created=at, responded=at + timedelta(seconds=30), by="{}")
    # A run without task instances, and runs just outside the window: none is counted.
    run("soc_contain_host", "e5", '{"tenant": "tenant-001"}', queued=at, start=at, end=at, state="success")
    for name, moment in (("e6", SINCE - timedelta(microseconds=1)), ("e7", UNTIL)):
        run(
            "soc_contain_host",
            name,
            '{"tenant": "tenant-001"}',
            queued=moment,
            start=moment,
            end=moment + timedelta(seconds=1),
            state="success",
        )
        task(
            "soc_contain_host",
            name,
            "only",
            f"00000000-0000-0000-0000-0000000000{name}",
            start=moment,
            end=moment + timedelta(seconds=1),
            queued=moment,
        )


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    with postgres_database(PROFILE, DATABASE):
        dsn = postgres.dsn(PROFILE, postgres.DB_USER, DATABASE, driver="psycopg2")
        migrate(dsn)
        engine = create_engine(dsn)
        with engine.begin() as connection:
            generate_history(connection, runs=1200, tenants=12, since=SINCE, window=UNTIL - SINCE)
            _edge_rows(connection)
        yield engine
        engine.dispose()


def _python(
    engine: Engine, scope: ReportScope, now: datetime | None, dag_ids: set[str] | None = None
) -> KpiSummary:
    with engine.connect() as connection:
        tasks = task_measurements(connection, scope.since, scope.until)
    kept = [t for t in tasks if scope.keeps(t) and (dag_ids is None or t.dag_id in dag_ids)]
    return summarize(kept, sla_table(), scope.since, scope.until, now=now)


def _sql(
    engine: Engine, scope: ReportScope, now: datetime | None, dag_ids: set[str] | None = None
) -> KpiSummary:
    with engine.connect() as connection:
        return kpi_summary(
            connection,
            scope.since,
            scope.until,
            sla_table(),
            now=now,
            domain=scope.domain,
            tenant=scope.tenant,
            dag_ids=dag_ids,
        )


def _same(a: Any, b: Any) -> None:
    """Equal, floats to the millisecond (percentile_cont and Python round the last digit apart)."""
    if dataclasses.is_dataclass(a) and not isinstance(a, type):
        assert type(a) is type(b)
        for f in dataclasses.fields(a):
            if f.compare:
                _same(getattr(a, f.name), getattr(b, f.name))
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), (a, b)
        for x, y in zip(a, b, strict=True):
            _same(x, y)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            _same(a[key], b[key])
    elif isinstance(a, float) and isinstance(b, float | int):
        assert a == pytest.approx(b, abs=0.0011), (a, b)
    else:
        assert a == b


def _same_summary(sql: KpiSummary, python: KpiSummary) -> None:
    # The misses table shows neither retries nor escalations: the SQL path does not fetch them.
    python = dataclasses.replace(
        python, misses=[dataclasses.replace(r, retries=0, escalations=0) for r in python.misses]
    )
    _same(sql, python)


@pytest.mark.parametrize(
    ("scope", "now"),
    [
        pytest.param(ReportScope(SINCE, UNTIL), UNTIL, id="whole-window"),
        pytest.param(ReportScope(SINCE, UNTIL), None, id="no-now"),
        pytest.param(ReportScope(SINCE, UNTIL, domain="soc"), UNTIL, id="one-domain"),
        pytest.param(ReportScope(SINCE, UNTIL, tenant="tenant-003"), UNTIL, id="one-tenant"),
        pytest.param(ReportScope(SINCE, UNTIL, tenant="secops"), UNTIL, id="internal-tenant"),
        pytest.param(
            ReportScope(SINCE + timedelta(hours=20), UNTIL - timedelta(hours=20)), UNTIL, id="sub-window"
        ),
    ],
)
def test_sql_aggregation_gives_the_python_figures(
    engine: Engine, scope: ReportScope, now: datetime | None
) -> None:
    python = _python(engine, scope, now)
    assert python.runs > 0
    _same_summary(_sql(engine, scope, now), python)


def test_the_history_holds_the_cases_that_matter(engine: Engine) -> None:
    summary = _sql(engine, ReportScope(SINCE, UNTIL), UNTIL)
    domains = {k.key: k for k in summary.by_domain}
    tenants = {k.key: k for k in summary.by_tenant}
    assert set(domains) == {"hr", "implementation", "invoicing", "soc", "support", "unknown"}
    assert len(tenants) == 12 + 2  # the generator's, secops (HR) and unknown
    assert domains["hr"].escalations >= 2
    assert domains["soc"].approval_timeouts >= 1
    assert summary.miss_count > len(summary.misses) == 25
    assert summary.task_instances > 4000
    edge = next(
        r for r in _sql(engine, ReportScope(SINCE, UNTIL, tenant="secops"), UNTIL).misses if r.run_id == "e2"
    )
    assert (edge.correlation_id, edge.state, edge.duration_s) == (EDGE_CORRELATION, "failed", 30 * 3600.0)


def test_only_the_dags_a_user_may_read_are_counted(engine: Engine) -> None:
    scope = ReportScope(SINCE, UNTIL)
    soc_only = {"soc_contain_host", "soc_disable_account"}
    summary = _sql(engine, scope, UNTIL, dag_ids=soc_only)
    assert [k.key for k in summary.by_domain] == ["soc"]
    _same_summary(summary, _python(engine, scope, UNTIL, dag_ids=soc_only))
    nothing = _sql(engine, scope, UNTIL, dag_ids=set())
    assert (nothing.runs, nothing.by_domain, nothing.by_tenant, nothing.gates) == (0, [], [], [])


def test_filter_values_are_data_not_sql(engine: Engine) -> None:
    scope = ReportScope(SINCE, UNTIL, tenant="x' OR '1'='1", domain="soc' --")
    summary = _sql(engine, scope, UNTIL, dag_ids={"soc_contain_host' OR true --"})
    assert (summary.runs, summary.by_tenant) == (0, [])


def test_cli_writes_the_report_from_the_aggregates(
    engine: Engine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "report.html"
    dsn = engine.url.render_as_string(hide_password=False)
    code = cli_main(
        [
            "kpi",
            "report",
            "--since",
            SINCE.isoformat(),
            "--until",
            UNTIL.isoformat(),
            "--dsn",
            dsn,
            "--domain",
            "soc",
            "--out",
            str(out),
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    expected = _python(engine, ReportScope(SINCE, UNTIL, domain="soc"), None).runs
    assert f"kpi report: {expected} runs from" in captured.out
    html = out.read_text()
    assert f"{expected} runs" in html
    assert "<tr><td>soc</td>" in html
    assert "<tr><td>support</td>" not in html
    assert html.count('src="data:image/png;base64,') == 3


def test_cli_error_names_the_database_without_its_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dsn = "postgresql+psycopg2://airflow:s3cret-pw@127.0.0.1:1/nowhere"
    code = cli_main(["kpi", "report", "--dsn", dsn, "--out", str(tmp_path / "r.html")])
    err = capsys.readouterr().err
    assert code == 2
    assert "reading the metadata DB failed" in err
    assert "s3cret-pw" not in err
