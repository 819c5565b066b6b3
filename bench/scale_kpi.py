"""The KPI report over 30 days of history (issue 24): goal under 5 s for 300,000 task instances.

On a PostgreSQL cluster of its own (devstack profile ``kpi-bench``, 127.0.0.1:43432, wiped at the
start and stopped at the end), with Airflow 3.3.2's metadata schema made by ``airflow db migrate``:

1. :func:`generate_history` writes a month of realistic runs in bulk SQL (``generate_series``,
   seeded, so two runs write the same rows): the DAG catalogue of :data:`DAGS` (support many and
   fast, HR/invoicing few with approvals, SOC with short approvals, implementation Terraform-long,
   one untagged DAG), tenants spread over the runs (HR acts for ``secops``), per run its task
   instances in sequence, retries, failures, running runs, gates resumed from deferral (no queue
   wait), Airflow's ``hitl_detail`` row per gate (answered, timed out or pending) and the gate's
   ``approval_ladder`` XCom stored as Airflow stores it (the JSON text of the list), with
   reminders and escalations after the domain's thresholds;
2. the report is built ``--repeats`` times as the CLI and the UI page build it
   (:func:`include.metrics.aggregate.kpi_summary` then
   :func:`include.metrics.report.render_summary`), and once the old way (every task instance read
   and measured in Python) when ``--python-path`` is given, for comparison.

Result keys (flat, for ``bench/results/``): ``kpi_task_instances``, ``kpi_runs``, ``kpi_tenants``,
``kpi_migrate_s`` (``airflow db migrate``), ``kpi_generate_s``, ``kpi_query_p50_s`` (the SQL
aggregation), ``kpi_render_p50_s`` (HTML and plots), ``kpi_report_p50_s`` and
``kpi_report_max_s`` (both together: what a user waits for; goal ``KPI_REPORT_GOAL_S`` = 5 s),
``kpi_report_min_s``, ``kpi_report_goal_met`` (1/0: the p50 under the goal), ``kpi_query_cpu_p50_s`` (CPU
seconds of the PostgreSQL processes for the query: its cost whatever else the shared box runs),
``kpi_render_cpu_p50_s``, ``kpi_load_average`` (1-minute load at the end), ``kpi_python_path_s``
(0 when not measured).

By hand: ``python -m bench.scale_kpi`` (about a minute on the 2-core box at 300k task instances).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from devstack.config import VENV_BIN, Profile

PROFILE = Profile(name="kpi-bench", api_port=0, pg_port=43432, moto_port=0, smtp_port=0)
DATABASE = "kpi_bench"
KPI_REPORT_GOAL_S = 5.0
WINDOW = timedelta(days=30)
DEFAULT_TASK_INSTANCES = 300_000
DEFAULT_TENANTS = 300


@dataclass(frozen=True)
class DagShape:
    """One workflow of the catalogue: how often it runs and what a run looks like."""

    dag_id: str
    tags: tuple[str, ...]
    weight: int  # runs of this DAG per sum(weights) runs
    tasks: int
    gate: bool  # its second task is an approval gate (hitl_detail + ladder)
    median_s: float  # typical run duration (the tail is exponential)
    approval_median_s: float = 0.0
    escalate_after_s: float = 0.0
    approval_timeout_s: float = 0.0
    tenant: bool = True  # conf carries a customer tenant (HR does not: it acts for secops)


DAGS: tuple[DagShape, ...] = (
    DagShape("support_ticket_triage", ("domain:support", "kind:fast_path"), 60, 3, False, 20),
    DagShape("support_bulk_update", ("domain:support", "kind:fast_path"), 12, 4, False, 60),
    DagShape("support_evidence_attach", ("domain:support", "kind:fast_path"), 6, 3, False, 40),
    DagShape("soc_contain_host", ("domain:soc", "kind:fast_path"), 5, 5, True, 240, 90, 600, 1800),
    DagShape("soc_disable_account", ("domain:soc", "kind:fast_path"), 4, 4, True, 180, 60, 600, 1800),
    DagShape("hr_onboarding", ("domain:hr", "kind:fast_path"), 2, 6, True, 1500, 3600, 86400, 172800, False),
    DagShape("hr_offboarding", ("domain:hr", "kind:fast_path"), 2, 6, True, 1200, 1800, 86400, 172800, False),
    DagShape(
        "invoice_from_contract", ("domain:invoicing", "kind:fast_path"), 3, 5, True, 900, 1800, 14400, 86400
    ),
    DagShape(
        "implementation_tenant_provisioning",
        ("domain:implementation", "kind:infrastructure_change"),
        2,
        6,
        True,
        2400,
        1200,
        7200,
        28800,
    ),
    DagShape("legacy_cleanup", (), 1, 2, False, 30),  # no tags: domain "unknown"
)


def mean_tasks_per_run(dags: tuple[DagShape, ...] = DAGS) -> float:
    return sum(d.weight * d.tasks for d in dags) / sum(d.weight for d in dags)


def runs_for(task_instances: int, dags: tuple[DagShape, ...] = DAGS) -> int:
    """How many runs give about ``task_instances`` task instances with this catalogue's mix."""
    return max(1, round(task_instances / mean_tasks_per_run(dags)))


def _catalogue_sql(dags: tuple[DagShape, ...]) -> tuple[str, dict[str, Any]]:
    """The catalogue as a VALUES list (bind parameters only), expanded ``weight`` times."""
    rows, params = [], {}
    for i, d in enumerate(dags):
        rows.append(f"(:d{i}, :w{i}, :t{i}, :g{i}, :m{i}, :am{i}, :ea{i}, :to{i}, :tn{i}, :dom{i})")
        params.update(
            {
                f"d{i}": d.dag_id,
                f"w{i}": d.weight,
                f"t{i}": d.tasks,
                f"g{i}": d.gate,
                f"m{i}": d.median_s,
                f"am{i}": d.approval_median_s,
                f"ea{i}": d.escalate_after_s,
                f"to{i}": d.approval_timeout_s,
                f"tn{i}": d.tenant,
                f"dom{i}": next((t.removeprefix("domain:") for t in d.tags if t.startswith("domain:")), ""),
            }
        )
    return ", ".join(rows), params


# The whole history in five statements. random() after setseed() is deterministic per session.
# Durations: exponential around the DAG's median (ln 2 scaling), a long tail as real runs have.
_RUNS_SQL = """
CREATE TEMP TABLE gen_dag (dag_id text, weight int, tasks int, gate bool, median_s float8,
    approval_median_s float8, escalate_after_s float8, approval_timeout_s float8, tenant bool,
    domain text);
INSERT INTO gen_dag VALUES {catalogue};
CREATE TEMP TABLE gen_slot AS
    SELECT row_number() OVER (ORDER BY d.dag_id, s) - 1 AS slot, d.*
    FROM gen_dag d, generate_series(1, d.weight) s;
CREATE TEMP TABLE gen_run AS
WITH g AS (
    SELECT n, random() AS r_at, random() AS r_dur, random() AS r_state, random() AS r_start
    FROM generate_series(1, :runs) n
)
SELECT g.n, s.dag_id, s.tasks, s.gate, s.approval_median_s, s.escalate_after_s, s.approval_timeout_s,
       s.domain,
       CASE WHEN s.tenant THEN 'tenant-' || lpad(CAST((g.n * 7919) % :tenants + 1 AS text), 3, '0') END
           AS tenant,
       CAST(:since AS timestamptz) + (:window_s * g.r_at) * interval '1 second' AS queued,
       g.r_start * 2.0 AS start_delay_s,
       -ln(1 - g.r_dur * 0.9999) * s.median_s / ln(2) AS duration_s,
       CASE WHEN g.n % 211 = 0 THEN 'running' WHEN g.r_state < 0.04 THEN 'failed' ELSE 'success' END
           AS state
FROM g JOIN gen_slot s ON s.slot = g.n % (SELECT count(*) FROM gen_slot);
ALTER TABLE gen_run ADD COLUMN run_id text;
UPDATE gen_run SET run_id = 'manual__' || to_char(queued, 'YYYY-MM-DD"T"HH24:MI:SS.US') || '_' || n;
"""

_INSERT_SQL = """
INSERT INTO dag_run (dag_id, run_id, queued_at, logical_date, start_date, end_date, state, run_type,
                     triggered_by, conf, run_after, data_interval_start, data_interval_end, clear_number,
                     span_status)
SELECT dag_id, run_id, queued, NULL,
       queued + start_delay_s * interval '1 second',
       CASE WHEN state = 'running' THEN NULL
            ELSE queued + (start_delay_s + duration_s) * interval '1 second' END,
       state, 'manual', 'rest_api',
       CASE WHEN tenant IS NULL THEN CAST('{{}}' AS jsonb) ELSE jsonb_build_object('tenant', tenant) END,
       queued, NULL, NULL, 0, 'ended'
FROM gen_run;
CREATE TEMP TABLE gen_ti AS
SELECT dr.id AS dag_run_id, dr.dag_id, dr.run_id, g.state AS run_state, g.gate, g.domain,
       g.approval_median_s, g.escalate_after_s, g.approval_timeout_s, k, g.tasks,
       CASE WHEN g.gate AND k = 1 THEN 'approve' ELSE 'step_' || k END AS task_id,
       dr.start_date + (g.duration_s * k / g.tasks) * interval '1 second' AS t_start,
       dr.start_date + (g.duration_s * (k + 1) / g.tasks) * interval '1 second' AS t_end,
       random() AS r_queue, random() AS r_try, random() AS r_wait, random() AS r_outcome
FROM gen_run g
JOIN dag_run dr ON dr.dag_id = g.dag_id AND dr.run_id = g.run_id
CROSS JOIN LATERAL generate_series(0, g.tasks - 1) k;
INSERT INTO task_instance (id, task_id, dag_id, run_id, map_index, start_date, end_date, duration, state,
                           try_number, max_tries, pool, pool_slots, queue, priority_weight, operator,
                           queued_dttm, span_status)
SELECT CAST(md5(dag_run_id || '/' || task_id) AS uuid), task_id, dag_id, run_id, -1, t_start,
       CASE WHEN run_state = 'running' AND k = tasks - 1 THEN NULL ELSE t_end END,
       CASE WHEN run_state = 'running' AND k = tasks - 1 THEN NULL
            ELSE extract(epoch FROM t_end - t_start) END,
       CASE WHEN k < tasks - 1 THEN 'success' ELSE run_state END,
       CASE WHEN r_try < 0.01 THEN 3 WHEN r_try < 0.05 THEN 2 ELSE 1 END, 3, 'default_pool', 1, 'default',
       1, CASE WHEN task_id = 'approve' THEN 'ApprovalOperator' ELSE 'PythonOperator' END,
       -- a gate resumed from deferral is queued again after its first start: no queue wait stored
       CASE WHEN task_id = 'approve' AND r_queue < 0.5 THEN t_end - interval '1 second'
            ELSE t_start - (r_queue * 1.5) * interval '1 second' END,
       'ended'
FROM gen_ti;
CREATE TEMP TABLE gen_gate AS
SELECT t.*, CAST(md5(dag_run_id || '/' || task_id) AS uuid) AS ti_id,
       CASE WHEN run_state = 'running' AND k = tasks - 1 THEN NULL
            WHEN r_outcome < 0.08 THEN approval_timeout_s
            ELSE LEAST(-ln(1 - r_wait * 0.9999) * approval_median_s / ln(2), approval_timeout_s) END
           AS wait_s
FROM gen_ti t WHERE task_id = 'approve';
INSERT INTO hitl_detail (ti_id, options, subject, body, defaults, multiple, params, assignees, created_at,
                         responded_at, responded_by, chosen_options, params_input)
SELECT ti_id, CAST('["Approve", "Reject"]' AS json), 'Approve ' || dag_id, NULL, NULL, false,
       CAST('{{}}' AS json), NULL, t_start,
       t_start + wait_s * interval '1 second',
       CASE WHEN wait_s IS NULL OR r_outcome < 0.08 THEN NULL
            ELSE CAST('{{"id": "7", "name": "approver"}}' AS json) END,
       CASE WHEN wait_s IS NULL THEN NULL WHEN r_outcome < 0.08 THEN CAST('["Reject"]' AS json)
            ELSE CAST('["Approve"]' AS json) END,
       CAST('{{}}' AS json)
FROM gen_gate;
INSERT INTO xcom (dag_run_id, task_id, map_index, key, dag_id, run_id, value, timestamp)
SELECT dag_run_id, task_id, -1, :ladder_key, dag_id, run_id,
       to_jsonb(CAST(jsonb_build_array(jsonb_build_object('step', 'requested', 'at', t_start))
           || CASE WHEN COALESCE(wait_s, 0) > escalate_after_s / 2
                   THEN jsonb_build_array(jsonb_build_object('step', 'reminder')) ELSE '[]' END
           || CASE WHEN COALESCE(wait_s, 0) > escalate_after_s
                   THEN jsonb_build_array(jsonb_build_object('step', 'escalation')) ELSE '[]' END
           || CASE WHEN r_outcome < 0.08 THEN jsonb_build_array(jsonb_build_object('step', 'timeout'))
                   ELSE '[]' END AS text)),
       t_start
FROM gen_gate;
"""


def generate_history(
    connection: Any,
    *,
    runs: int,
    tenants: int,
    since: datetime,
    window: timedelta = WINDOW,
    seed: float = 0.24,
    dags: tuple[DagShape, ...] = DAGS,
) -> dict[str, int]:
    """Write ``runs`` runs queued in ``[since, since + window)`` into an empty metadata DB.

    :param connection: a SQLAlchemy connection to a metadata DB made by ``airflow db migrate``
        (committed by the caller).
    :returns: the row counts written (``dag_run``, ``task_instance``, ``hitl_detail``, ``xcom``).
    """
    from sqlalchemy import text

    catalogue, params = _catalogue_sql(dags)
    connection.execute(text("SELECT setseed(:seed)"), {"seed": seed})
    bundle = "dags-folder"
    connection.execute(
        text("INSERT INTO dag_bundle (name, active) VALUES (:b, true) ON CONFLICT DO NOTHING"), {"b": bundle}
    )
    for d in dags:
        connection.execute(
            text(
                "INSERT INTO dag (dag_id, bundle_name, is_paused, is_stale, max_active_tasks, "
                "max_active_runs, max_consecutive_failed_dag_runs, has_task_concurrency_limits, "
                "fileloc, timetable_type, partition_mapper_info) "
                "VALUES (:d, :b, false, false, 16, 16, 0, false, :f, 'NullTimetable', CAST('{}' AS json))"
            ),
            {"d": d.dag_id, "b": bundle, "f": f"{d.dag_id}.py"},
        )
        for tag in d.tags:
            connection.execute(
                text("INSERT INTO dag_tag (name, dag_id) VALUES (:n, :d)"), {"n": tag, "d": d.dag_id}
            )
    common = {
        **params,
        "runs": runs,
        "tenants": tenants,
        "since": since,
        "window_s": window.total_seconds(),
        "ladder_key": "approval_ladder",
    }
    for sql in (_RUNS_SQL.format(catalogue=catalogue), _INSERT_SQL.format()):
        for statement in (s.strip() for s in sql.split(";")):
            if statement:
                names = {k: v for k, v in common.items() if f":{k}" in statement}
                connection.execute(text(statement), names)
    counts = {
        table: int(connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())  # noqa: S608
        for table in ("dag_run", "task_instance", "hitl_detail", "xcom")
    }
    for table in ("gen_gate", "gen_ti", "gen_run", "gen_slot", "gen_dag"):
        connection.execute(text(f"DROP TABLE {table}"))
    return counts


def migrate(dsn: str) -> float:
    """``airflow db migrate`` on ``dsn`` (Airflow 3.3.2's schema); the seconds it took."""
    env = {
        **os.environ,
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": dsn,
        "AIRFLOW_HOME": str(PROFILE.root / "airflow"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
    }
    began = time.monotonic()
    result = subprocess.run(
        [str(VENV_BIN / "airflow"), "db", "migrate"], env=env, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"airflow db migrate failed for the kpi-bench database: {result.stderr[-2000:]}")
    return time.monotonic() - began


def _cpu_seconds(stat: str) -> float:
    """utime + stime of one ``/proc/<pid>/stat`` line, in seconds."""
    fields = stat.rsplit(")", 1)[1].split()  # the command may hold spaces; fields after it are fixed
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cluster_cpu_seconds(postmaster: int) -> float:
    """CPU seconds used so far by the postmaster and its children (backends, parallel workers).

    The query's own cost, whatever else the shared box runs: wall time under contention says more
    about the neighbours than about the query.
    """
    total = 0.0
    for stat_path in Path("/proc").glob("[0-9]*/stat"):
        try:
            stat = stat_path.read_text()
        except OSError:  # the process ended meanwhile
            continue
        pid, ppid = int(stat_path.parent.name), int(stat.rsplit(")", 1)[1].split()[1])
        if pid == postmaster or ppid == postmaster:
            total += _cpu_seconds(stat)
    return total


def run(
    task_instances: int = DEFAULT_TASK_INSTANCES,
    tenants: int = DEFAULT_TENANTS,
    repeats: int = 3,
    python_path: bool = False,
) -> dict[str, Any]:
    """Start the profile's PostgreSQL, build the history, time the report; stop it. Flat figures."""
    from sqlalchemy import create_engine

    from devstack import postgres
    from include.metrics.aggregate import kpi_summary
    from include.metrics.kpi import sla_table
    from include.metrics.measure import task_measurements
    from include.metrics.report import ReportScope, render_report, render_summary

    until = datetime(2026, 6, 1, tzinfo=UTC)
    since = until - WINDOW
    postgres.ensure_installed()
    postgres.initialise(PROFILE, fresh=True)
    postgres.start(PROFILE)
    try:
        postgres.create_database(PROFILE, DATABASE)
        dsn = postgres.dsn(PROFILE, postgres.DB_USER, DATABASE, driver="psycopg2")
        migrate_s = migrate(dsn)
        engine = create_engine(dsn)
        began = time.monotonic()
        with engine.begin() as connection:
            counts = generate_history(connection, runs=runs_for(task_instances), tenants=tenants, since=since)
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            from sqlalchemy import text

            connection.execute(text("ANALYZE"))
        generate_s = time.monotonic() - began
        sla = sla_table()
        scope = ReportScope(since=since, until=until)
        postmaster = postgres.postmaster_pid(PROFILE) or 0
        queries, renders, totals, query_cpu, render_cpu = [], [], [], [], []
        for _ in range(repeats):
            cpu0, t0 = cluster_cpu_seconds(postmaster), time.monotonic()
            with engine.connect() as connection:
                summary = kpi_summary(connection, since, until, sla, now=until)
            cpu1, t1, own1 = cluster_cpu_seconds(postmaster), time.monotonic(), time.process_time()
            html = render_summary(summary, scope)
            t2, own2 = time.monotonic(), time.process_time()
            queries.append(t1 - t0)
            renders.append(t2 - t1)
            totals.append(t2 - t0)
            query_cpu.append(cpu1 - cpu0)
            render_cpu.append(own2 - own1)
        python_s = 0.0
        if python_path:
            t0 = time.monotonic()
            with engine.connect() as connection:
                tasks = task_measurements(connection, since, until)
            render_report(tasks, scope, sla, now=until)
            python_s = time.monotonic() - t0
        engine.dispose()
    finally:
        postgres.stop(PROFILE)
    report_p50 = statistics.median(totals)
    return {
        "kpi_task_instances": counts["task_instance"],
        "kpi_runs": counts["dag_run"],
        "kpi_gates": counts["hitl_detail"],
        "kpi_tenants": tenants,
        "kpi_migrate_s": round(migrate_s, 2),
        "kpi_generate_s": round(generate_s, 2),
        "kpi_query_p50_s": round(statistics.median(queries), 3),
        "kpi_render_p50_s": round(statistics.median(renders), 3),
        "kpi_report_p50_s": round(report_p50, 3),
        "kpi_report_min_s": round(min(totals), 3),
        "kpi_report_max_s": round(max(totals), 3),
        "kpi_query_cpu_p50_s": round(statistics.median(query_cpu), 3),
        "kpi_render_cpu_p50_s": round(statistics.median(render_cpu), 3),
        "kpi_load_average": round(os.getloadavg()[0], 2),
        "kpi_report_goal_s": KPI_REPORT_GOAL_S,
        "kpi_report_goal_met": int(report_p50 < KPI_REPORT_GOAL_S),
        "kpi_report_html_bytes": len(html.encode()),
        "kpi_python_path_s": round(python_s, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--task-instances", type=int, default=DEFAULT_TASK_INSTANCES)
    parser.add_argument("--tenants", type=int, default=DEFAULT_TENANTS)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--python-path", action="store_true", help="also time the old per-row report")
    parser.add_argument("--out", default=None, help="also write the figures as JSON here")
    args = parser.parse_args()
    figures = run(args.task_instances, args.tenants, args.repeats, args.python_path)
    for key, value in figures.items():
        print(f"{key:28} {value}")
    if args.out:
        Path(args.out).write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
