"""The KPI report's figures aggregated inside PostgreSQL (issue 24): answers in seconds over a month.

:func:`kpi_summary` sends a handful of aggregate queries to Airflow's metadata DB and gets back a
few hundred rows whatever the window holds: the per-domain and per-tenant KPIs
(``percentile_cont`` for the percentiles, ``count(*) FILTER`` for the counts), the latency box per
domain, the success-rate series, the approval waits and the 25 longest runs over their SLA. The
Python path (:func:`include.metrics.measure.task_measurements` then :mod:`include.metrics.kpi`)
reads one row per task instance and stays the reference: :func:`summarize` builds the same
:class:`KpiSummary` from those rows, and a test compares both on a seeded metadata DB.

Same definitions as :mod:`include.metrics.measure` (tags, tenant, queue wait, approval outcome,
escalations), written in SQL:

- durations and waits are rounded to the millisecond before the percentiles, as
  :func:`include.metrics.measure.seconds` does, and percentiles to the millisecond after (in
  ``float8``, so a value may come out one millisecond apart from Python's ``round``);
- a run counts only with at least one task instance (the Python path joins them);
- ``dag_run.conf`` is read when it is a JSON object (Airflow writes it so); escalations are
  counted in the gate's ``approval_ladder`` XCom whether it is stored as a JSON array or as the
  JSON text of one (Airflow 3 stores ``json.dumps`` of the value).

PostgreSQL only (``percentile_cont``, ``FILTER``, JSONB); the Python path serves other databases.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from include.connectors.context import CORRELATION_CONF_KEY, default_correlation_id
from include.metrics.kpi import (
    FINISHED_RUN_STATES,
    GroupBy,
    Kpi,
    RunFigures,
    SlaTable,
    kpis,
    percentile,
    runs_of,
    success_rate_series,
)
from include.metrics.measure import (
    DEFAULT_KIND,
    INTERNAL_TENANT_DOMAINS,
    LADDER_XCOM_KEY,
    UNKNOWN,
    TaskMeasurement,
)

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

MAX_LISTED_MISSES = 25
WORK_MEM = "64MB"
GROUPING_DOMAIN, GROUPING_TENANT = 3, 5  # GROUPING(domain, tenant, bucket) of the two KPI tables
LATENCY_QUANTILES = (5, 25, 50, 75, 95)
"""The latency box per domain: whiskers p5 and p95, box p25..p75, line at p50."""


@dataclass(frozen=True)
class LatencyBox:
    domain: str
    p5: float
    p25: float
    p50: float
    p75: float
    p95: float
    sla_s: tuple[float, ...]


@dataclass(frozen=True)
class Gate:
    """One answered or timed-out approval gate (the approval plot's points)."""

    domain: str
    wait_s: float
    outcome: str


@dataclass(frozen=True)
class KpiSummary:
    """Everything the report shows, small whatever the window holds."""

    runs: int
    task_instances: int
    by_domain: list[Kpi]
    by_tenant: list[Kpi]
    latency: list[LatencyBox]
    success_series: dict[str, list[tuple[datetime, float]]]
    bucket_s: float
    gates: list[Gate]
    misses: list[RunFigures]  # the longest first, at most MAX_LISTED_MISSES
    miss_count: int
    extra: dict[str, Any] = field(default_factory=dict, compare=False)


def success_bucket(since: datetime, until: datetime) -> float:
    """The success-rate plot's bucket: the smallest of 5m/15m/1h/6h/1d giving <= 48 points, else 1w."""
    span = max((until - since).total_seconds(), 1.0)
    return float(next((b for b in (300, 900, 3600, 6 * 3600, 86400) if span / b <= 48), 7 * 86400))


# --- the Python reference --------------------------------------------------------------------


def summarize(
    tasks: Sequence[TaskMeasurement],
    sla: SlaTable,
    since: datetime,
    until: datetime,
    *,
    now: datetime | None = None,
) -> KpiSummary:
    """The summary from measured task rows (already filtered to the report's scope)."""
    runs = runs_of(tasks, sla, now)
    durations: dict[str, list[float]] = defaultdict(list)
    slas: dict[str, set[float]] = defaultdict(set)
    for run in runs:
        if run.duration_s is not None:
            durations[run.domain].append(run.duration_s)
            if run.sla_s is not None:
                slas[run.domain].add(run.sla_s)
    latency = []
    for domain in sorted(durations):
        p5, p25, p50, p75, p95 = (float(percentile(durations[domain], p) or 0.0) for p in LATENCY_QUANTILES)
        latency.append(LatencyBox(domain, p5, p25, p50, p75, p95, tuple(sorted(slas[domain]))))
    bucket = success_bucket(since, until)
    gates = [
        Gate(t.domain, t.approval_wait_s, t.approval_outcome)
        for t in tasks
        if t.approval_wait_s is not None and t.approval_outcome is not None
    ]
    missed = sorted((r for r in runs if r.sla_missed), key=lambda r: -(r.duration_s or 0))
    return KpiSummary(
        runs=len(runs),
        task_instances=len(tasks),
        by_domain=kpis(tasks, sla, "domain", now),
        by_tenant=kpis(tasks, sla, "tenant", now),
        latency=latency,
        success_series=success_rate_series(runs, bucket),
        bucket_s=bucket,
        gates=sorted(gates, key=lambda g: (g.domain, g.wait_s, g.outcome)),
        misses=missed[:MAX_LISTED_MISSES],
        miss_count=len(missed),
    )


# --- the SQL path --------------------------------------------------------------------------

_FINISHED = ", ".join(f"'{state}'" for state in sorted(FINISHED_RUN_STATES))
_INTERNAL = " ".join(f"WHEN '{d}' THEN '{t}'" for d, t in sorted(INTERNAL_TENANT_DOMAINS.items()))
# Only these constants are interpolated into the SQL below; every value is a bind parameter.
_FALSY_JSON = ", ".join(f"'{v}'::jsonb" for v in ("null", "{}", "[]", '""', "false", "0"))

# One row per run in the scope, with its domain, kind, tenant, SLA, duration and SLA verdict.
_RUNS_CTE = f"""
tags AS (
    SELECT dag_id,
           CASE WHEN count(*) FILTER (WHERE name LIKE 'domain:%') = 1
                THEN max(substr(name, 8)) FILTER (WHERE name LIKE 'domain:%') END AS domain,
           CASE WHEN count(*) FILTER (WHERE name LIKE 'kind:%') = 1
                THEN max(substr(name, 6)) FILTER (WHERE name LIKE 'kind:%') END AS kind
    FROM dag_tag GROUP BY dag_id
),
sla AS (
    SELECT * FROM unnest(CAST(:sla_domains AS text[]), CAST(:sla_kinds AS text[]),
                         CAST(:sla_seconds AS float8[])) AS s(domain, kind, seconds)
),
base AS (
    SELECT dr.id, dr.dag_id, dr.run_id, COALESCE(dr.state, 'none') AS state,
           CASE WHEN jsonb_typeof(dr.conf -> 'tenant') = 'string' THEN dr.conf ->> 'tenant' END
               AS conf_tenant,
           CASE WHEN jsonb_typeof(dr.conf) = 'object' THEN dr.conf ->> '{CORRELATION_CONF_KEY}' END
               AS correlation_id,
           COALESCE(dr.queued_at, dr.start_date) AS queued, dr.end_date,
           COALESCE(t.domain, '{UNKNOWN}') AS domain, COALESCE(t.kind, '{DEFAULT_KIND}') AS kind
    FROM dag_run dr LEFT JOIN tags t ON t.dag_id = dr.dag_id
    -- COALESCE(queued_at, start_date) in [since, until), spelt so the planner's column statistics
    -- apply (it guessed 250 rows for the COALESCE and chose nested loops over 300,000 tasks)
    WHERE ((dr.queued_at >= :since AND dr.queued_at < :until)
           OR (dr.queued_at IS NULL AND dr.start_date >= :since AND dr.start_date < :until))
      AND (CAST(:dag_ids AS text[]) IS NULL OR dr.dag_id = ANY(CAST(:dag_ids AS text[])))
),
runs AS (
    SELECT b.*, s.seconds AS sla_s,
           CASE WHEN b.state IN ({_FINISHED})
                THEN round(date_part('epoch', b.end_date - b.queued) * 1000) / 1000 END AS duration_s,
           CASE WHEN b.conf_tenant <> '' THEN b.conf_tenant
                ELSE CASE b.domain {_INTERNAL} ELSE '{UNKNOWN}' END END AS tenant
    FROM base b LEFT JOIN sla s ON s.domain = b.domain AND s.kind = b.kind
),
candidates AS (
    SELECT r.*,
           COALESCE(r.sla_s IS NOT NULL AND (
               CASE WHEN r.state IN ({_FINISHED})
                    THEN CAST(r.duration_s AS float8)
                    ELSE date_part('epoch', CAST(:now AS timestamptz) - r.queued) END) > r.sla_s,
           false) AS sla_missed
    FROM runs r
    WHERE (CAST(:domain AS text) IS NULL OR r.domain = :domain)
      AND (CAST(:tenant AS text) IS NULL OR r.tenant = :tenant)
)"""  # noqa: S608 (module constants only, values are bind parameters)
# The runs of the scope that have task instances (the Python path joins them: a run without any
# is not counted); the KPI query gets the same set from its task rows instead.
_SCOPED_CTE = """
scoped AS (
    SELECT * FROM candidates c
    WHERE EXISTS (SELECT 1 FROM task_instance ti WHERE ti.dag_id = c.dag_id AND ti.run_id = c.run_id)
)"""

# One row per task instance of those runs, with its queue wait, approval figures and escalations.
_TASKS_CTE = f"""
tasks AS (
    SELECT r.id AS run_pk, r.domain, r.tenant,
           GREATEST(COALESCE(ti.try_number, 0) - 1, 0) AS retries,
           CASE WHEN round(date_part('epoch', ti.start_date - ti.queued_dttm) * 1000) / 1000 >= 0
                THEN round(date_part('epoch', ti.start_date - ti.queued_dttm) * 1000) / 1000
                END AS queue_wait,
           CASE WHEN h.created_at IS NULL THEN NULL
                WHEN h.responded_at IS NULL THEN 'pending'
                WHEN COALESCE(CAST(h.responded_by AS jsonb) NOT IN ({_FALSY_JSON}), false) THEN 'answered'
                ELSE 'timed_out' END AS outcome,
           CASE WHEN h.responded_at IS NOT NULL
                THEN round(date_part('epoch', h.responded_at - h.created_at) * 1000) / 1000
                END AS approval_wait,
           CASE jsonb_typeof(x.value)
                WHEN 'array' THEN (SELECT count(*) FROM jsonb_array_elements(x.value) e
                                   WHERE jsonb_typeof(e) = 'object' AND e ->> 'step' = 'escalation')
                WHEN 'string' THEN regexp_count(x.value #>> '{{}}', '"step"\\s*:\\s*"escalation"')
                ELSE 0 END AS escalations
    FROM candidates r
    JOIN task_instance ti ON ti.dag_id = r.dag_id AND ti.run_id = r.run_id
    LEFT JOIN hitl_detail h ON h.ti_id = ti.id
    LEFT JOIN xcom x ON x.dag_run_id = r.id AND x.task_id = ti.task_id AND x.map_index = ti.map_index
         AND x.key = :ladder_key
)"""  # noqa: S608 (module constants only, values are bind parameters)

_KPI_SQL = f"""
WITH {_RUNS_CTE},
{_TASKS_CTE},
scoped AS (SELECT * FROM candidates WHERE id IN (SELECT run_pk FROM tasks)),
run_kpis AS (
    SELECT GROUPING(domain, tenant, bucket) AS grouping, domain, tenant, bucket,
           count(*) AS runs,
           count(*) FILTER (WHERE state IN ({_FINISHED})) AS finished,
           count(*) FILTER (WHERE state = 'success') AS succeeded,
           percentile_cont(CAST(:quantiles AS float8[])) WITHIN GROUP (ORDER BY CAST(duration_s AS float8))
               AS durations,
           array_agg(DISTINCT sla_s) FILTER (WHERE sla_s IS NOT NULL) AS slas,
           array_agg(DISTINCT sla_s) FILTER (WHERE sla_s IS NOT NULL AND duration_s IS NOT NULL) AS box_slas,
           count(*) FILTER (WHERE sla_missed) AS misses
    FROM (SELECT *, CASE WHEN state IN ({_FINISHED}) AND queued IS NOT NULL
                         THEN floor(date_part('epoch', queued) / :bucket) * :bucket END AS bucket
          FROM scoped) s
    GROUP BY GROUPING SETS ((domain), (tenant), (domain, bucket))
),
task_kpis AS (
    SELECT GROUPING(domain, tenant) AS grouping, domain, tenant,
           count(*) AS tasks,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY CAST(queue_wait AS float8)) AS q50,
           percentile_cont(0.95) WITHIN GROUP (ORDER BY CAST(queue_wait AS float8)) AS q95,
           count(*) FILTER (WHERE outcome IN ('answered', 'timed_out')) AS approvals,
           count(*) FILTER (WHERE outcome = 'timed_out') AS timeouts,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY CAST(approval_wait AS float8))
               FILTER (WHERE outcome IN ('answered', 'timed_out')) AS a50,
           max(approval_wait) FILTER (WHERE outcome IN ('answered', 'timed_out')) AS amax,
           sum(retries) AS retries, sum(escalations) AS escalations
    FROM tasks GROUP BY GROUPING SETS ((domain), (tenant))
)
-- grouping (domain, tenant, bucket): 3 = per domain (bit 2 tenant, bit 1 bucket), 5 = per tenant,
-- 2 = per domain and success bucket (success series only; no task figures)
SELECT r.grouping, COALESCE(r.domain, r.tenant) AS key, r.bucket, r.runs, r.finished, r.succeeded,
       r.durations, r.slas, r.box_slas, r.misses,
       t.tasks, t.q50, t.q95, t.approvals, t.timeouts, t.a50, t.amax, t.retries, t.escalations
FROM run_kpis r LEFT JOIN task_kpis t
     ON r.grouping <> 2 AND t.grouping = r.grouping >> 1
        AND COALESCE(t.domain, t.tenant) = COALESCE(r.domain, r.tenant)
ORDER BY r.grouping, key, r.bucket
"""  # noqa: S608 (module constants only, values are bind parameters)

_GATES_SQL = f"""
WITH {_RUNS_CTE}
SELECT r.domain, CAST(round(date_part('epoch', h.responded_at - h.created_at) * 1000) / 1000 AS float8)
           AS wait,
       CASE WHEN COALESCE(CAST(h.responded_by AS jsonb) NOT IN ({_FALSY_JSON}), false) THEN 'answered'
            ELSE 'timed_out' END AS outcome
FROM candidates r
JOIN task_instance ti ON ti.dag_id = r.dag_id AND ti.run_id = r.run_id
JOIN hitl_detail h ON h.ti_id = ti.id
WHERE h.responded_at IS NOT NULL
ORDER BY 1, 2, 3
"""  # noqa: S608 (module constants only, values are bind parameters)

_MISSES_SQL = f"""
WITH {_RUNS_CTE}, {_SCOPED_CTE}
SELECT dag_id, run_id, domain, tenant, kind, state, queued, CAST(duration_s AS float8) AS duration_s,
       sla_s, correlation_id
FROM scoped WHERE sla_missed
ORDER BY COALESCE(duration_s, 0) DESC, queued, dag_id COLLATE "C", run_id COLLATE "C"
LIMIT :limit
"""  # noqa: S608 (module constants only, values are bind parameters)


def _ms(value: Any) -> float | None:
    return None if value is None else round(float(value), 3)


def _kpi(group: GroupBy, row: Any) -> Kpi:
    finished = int(row.finished)
    durations = row.durations or [None] * len(LATENCY_QUANTILES)
    return Kpi(
        group=group,
        key=row.key,
        runs=int(row.runs),
        finished=finished,
        succeeded=int(row.succeeded),
        success_rate=round(int(row.succeeded) / finished, 4) if finished else None,
        duration_p50_s=_ms(durations[LATENCY_QUANTILES.index(50)]),
        duration_p95_s=_ms(durations[LATENCY_QUANTILES.index(95)]),
        sla_s=tuple(sorted(float(s) for s in row.slas or ())),
        sla_misses=int(row.misses),
        queue_wait_p50_s=_ms(row.q50),
        queue_wait_p95_s=_ms(row.q95),
        approvals=int(row.approvals),
        approval_timeouts=int(row.timeouts),
        approval_wait_p50_s=_ms(row.a50),
        approval_wait_max_s=None if row.amax is None else float(row.amax),
        retries=int(row.retries or 0),
        escalations=int(row.escalations or 0),
    )


def _box(row: Any) -> LatencyBox | None:
    if not row.durations or row.durations[0] is None:
        return None  # no finished run in this domain
    p5, p25, p50, p75, p95 = (round(float(v), 3) for v in row.durations)
    return LatencyBox(row.key, p5, p25, p50, p75, p95, tuple(sorted(float(s) for s in row.box_slas or ())))


def kpi_summary(
    connection: Connection,
    since: datetime,
    until: datetime,
    sla: SlaTable,
    *,
    now: datetime | None = None,
    domain: str | None = None,
    tenant: str | None = None,
    dag_ids: Collection[str] | None = None,
) -> KpiSummary:
    """The report's figures for the runs queued in ``[since, until)``, aggregated by PostgreSQL.

    :param connection: a SQLAlchemy connection to the Airflow metadata DB (PostgreSQL).
    :param dag_ids: only these DAGs (the ones the user may read); ``None``: every DAG.
    :param now: unfinished runs older than their SLA at ``now`` count as misses; ``None``: never.
    """
    from sqlalchemy import text

    entries = [(d, k, float(s)) for d, kinds in sla.items() for k, s in kinds.items()]
    params: dict[str, Any] = {
        "since": since,
        "until": until,
        "now": now,
        "domain": domain,
        "tenant": tenant,
        "dag_ids": sorted(dag_ids) if dag_ids is not None else None,
        "sla_domains": [e[0] for e in entries],
        "sla_kinds": [e[1] for e in entries],
        "sla_seconds": [e[2] for e in entries],
        "ladder_key": LADDER_XCOM_KEY,
    }
    # This transaction only: the sorts of a month (300,000 task instances) fit in memory.
    connection.execute(text(f"SET LOCAL work_mem = '{WORK_MEM}'"))
    # The planner cannot estimate the runs of a window (they come out of a CTE) and picked nested
    # loops into hitl_detail and xcom for each of 300,000 task instances; hash joins take half.
    connection.execute(text("SET LOCAL enable_nestloop = off"))
    bucket = success_bucket(since, until)
    by_domain: list[Kpi] = []
    by_tenant: list[Kpi] = []
    latency: list[LatencyBox] = []
    series: dict[str, list[tuple[datetime, float]]] = defaultdict(list)
    tasks = 0
    statement = text(_KPI_SQL)
    quantiles = [p / 100 for p in LATENCY_QUANTILES]
    for row in connection.execute(statement, {**params, "bucket": bucket, "quantiles": quantiles}):
        if row.grouping == GROUPING_DOMAIN:
            by_domain.append(_kpi("domain", row))
            tasks += int(row.tasks)
            box = _box(row)
            if box is not None:
                latency.append(box)
        elif row.grouping == GROUPING_TENANT:
            by_tenant.append(_kpi("tenant", row))
        elif row.bucket is not None and int(row.finished):
            when = datetime.fromtimestamp(float(row.bucket), since.tzinfo)
            series[row.key].append((when, int(row.succeeded) / int(row.finished)))
    gates = [Gate(r.domain, float(r.wait), r.outcome) for r in connection.execute(text(_GATES_SQL), params)]
    # Sorted here, not by the database's collation, as the Python path sorts them.
    by_domain.sort(key=lambda k: k.key)
    by_tenant.sort(key=lambda k: k.key)
    latency.sort(key=lambda b: b.domain)
    gates.sort(key=lambda g: (g.domain, g.wait_s, g.outcome))
    misses = [
        RunFigures(
            dag_id=r.dag_id,
            run_id=r.run_id,
            domain=r.domain,
            tenant=r.tenant,
            correlation_id=str(r.correlation_id or default_correlation_id(r.dag_id, r.run_id)),
            workflow_kind=r.kind,
            state=r.state,
            queued_at=r.queued,
            duration_s=r.duration_s,
            sla_s=r.sla_s,
            sla_missed=True,
            retries=0,  # not shown in the misses table
            escalations=0,
        )
        for r in connection.execute(text(_MISSES_SQL), {**params, "limit": MAX_LISTED_MISSES})
    ]
    return KpiSummary(
        runs=sum(k.runs for k in by_domain),
        task_instances=tasks,
        by_domain=by_domain,
        by_tenant=by_tenant,
        latency=latency,
        success_series=dict(sorted(series.items())),
        bucket_s=bucket,
        gates=gates,
        misses=misses,
        miss_count=sum(k.sla_misses for k in by_domain),
    )
