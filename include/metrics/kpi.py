"""The KPIs of the report, per domain and per tenant, computed from :class:`TaskMeasurement` rows.

Pure functions on plain data (no database, no Airflow), so the figures are tested on fixed rows.

- runs: every run queued in the window; success rate: successful / finished runs;
- end-to-end duration p50/p95: queued -> end of the finished runs (what the SLA deadline measures);
- SLA misses: finished runs longer than their domain's SLA for the workflow's kind
  (``include/policies/domains.yaml``), plus unfinished runs already older than it at ``now``;
- queue wait p50/p95: over the task instances; approval wait p50/max: over the answered or
  timed-out gates; retries and escalations: totals.

Percentiles interpolate linearly between the closest ranks (numpy's default), so p50 of
``[1, 2, 3, 4]`` is 2.5.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from include.metrics.measure import TaskMeasurement

FINISHED_RUN_STATES = frozenset({"success", "failed"})
GroupBy = Literal["domain", "tenant"]
# domain -> workflow kind -> SLA in seconds
SlaTable = Mapping[str, Mapping[str, float]]


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100) by linear interpolation; ``None`` for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return round(ordered[low] + (ordered[high] - ordered[low]) * (rank - low), 3)


@dataclass(frozen=True)
class RunFigures:
    dag_id: str
    run_id: str
    domain: str
    tenant: str
    correlation_id: str
    workflow_kind: str
    state: str
    queued_at: datetime | None
    duration_s: float | None
    sla_s: float | None
    sla_missed: bool
    retries: int
    escalations: int


def sla_table() -> dict[str, dict[str, float]]:
    """The SLA per domain and workflow kind, from the domain policy."""
    from include.policies.loader import load_domain_policy

    return {
        name: {kind: sla.total_seconds() for kind, sla in domain.sla.items()}
        for name, domain in load_domain_policy().domains.items()
    }


def runs_of(tasks: Iterable[TaskMeasurement], sla: SlaTable, now: datetime | None = None) -> list[RunFigures]:
    """One :class:`RunFigures` per run, in the order the runs first appear."""
    by_run: dict[tuple[str, str], list[TaskMeasurement]] = defaultdict(list)
    for task in tasks:
        by_run[(task.dag_id, task.run_id)].append(task)
    runs = []
    for group in by_run.values():
        first = group[0]
        limit = sla.get(first.domain, {}).get(first.workflow_kind)
        finished = first.run_state in FINISHED_RUN_STATES
        duration = first.run_duration_s
        if not finished and now is not None and first.run_queued_at is not None:
            age = (now - first.run_queued_at).total_seconds()
        else:
            age = None
        elapsed = duration if finished else age
        runs.append(
            RunFigures(
                dag_id=first.dag_id,
                run_id=first.run_id,
                domain=first.domain,
                tenant=first.tenant,
                correlation_id=first.correlation_id,
                workflow_kind=first.workflow_kind,
                state=first.run_state,
                queued_at=first.run_queued_at,
                duration_s=duration if finished else None,
                sla_s=limit,
                sla_missed=limit is not None and elapsed is not None and elapsed > limit,
                retries=sum(t.retries for t in group),
                escalations=sum(t.escalations for t in group),
            )
        )
    return runs


@dataclass(frozen=True)
class Kpi:
    group: GroupBy
    key: str
    runs: int
    finished: int
    succeeded: int
    success_rate: float | None
    duration_p50_s: float | None
    duration_p95_s: float | None
    sla_s: tuple[float, ...]  # the SLAs that applied to the group's runs (one per workflow kind)
    sla_misses: int
    queue_wait_p50_s: float | None
    queue_wait_p95_s: float | None
    approvals: int
    approval_timeouts: int
    approval_wait_p50_s: float | None
    approval_wait_max_s: float | None
    retries: int
    escalations: int


def _key(group: GroupBy) -> Callable[[TaskMeasurement | RunFigures], str]:
    return (lambda item: item.domain) if group == "domain" else (lambda item: item.tenant)


def kpis(
    tasks: Sequence[TaskMeasurement], sla: SlaTable, group: GroupBy, now: datetime | None = None
) -> list[Kpi]:
    """The KPIs per domain or per tenant, sorted by key."""
    key = _key(group)
    runs_by: dict[str, list[RunFigures]] = defaultdict(list)
    for run in runs_of(tasks, sla, now):
        runs_by[key(run)].append(run)
    tasks_by: dict[str, list[TaskMeasurement]] = defaultdict(list)
    for task in tasks:
        tasks_by[key(task)].append(task)
    result = []
    for name in sorted(runs_by):
        runs, group_tasks = runs_by[name], tasks_by[name]
        finished = [r for r in runs if r.state in FINISHED_RUN_STATES]
        succeeded = sum(1 for r in finished if r.state == "success")
        durations = [r.duration_s for r in finished if r.duration_s is not None]
        queue_waits = [t.queue_wait_s for t in group_tasks if t.queue_wait_s is not None]
        gates = [t for t in group_tasks if t.approval_outcome in ("answered", "timed_out")]
        approval_waits = [t.approval_wait_s for t in gates if t.approval_wait_s is not None]
        result.append(
            Kpi(
                group=group,
                key=name,
                runs=len(runs),
                finished=len(finished),
                succeeded=succeeded,
                success_rate=round(succeeded / len(finished), 4) if finished else None,
                duration_p50_s=percentile(durations, 50),
                duration_p95_s=percentile(durations, 95),
                sla_s=tuple(sorted({r.sla_s for r in runs if r.sla_s is not None})),
                sla_misses=sum(1 for r in runs if r.sla_missed),
                queue_wait_p50_s=percentile(queue_waits, 50),
                queue_wait_p95_s=percentile(queue_waits, 95),
                approvals=len(gates),
                approval_timeouts=sum(1 for t in gates if t.approval_outcome == "timed_out"),
                approval_wait_p50_s=percentile(approval_waits, 50),
                approval_wait_max_s=max(approval_waits) if approval_waits else None,
                retries=sum(t.retries for t in group_tasks),
                escalations=sum(t.escalations for t in group_tasks),
            )
        )
    return result


def success_rate_series(
    runs: Iterable[RunFigures], bucket_seconds: float
) -> dict[str, list[tuple[datetime, float]]]:
    """Per domain: (bucket start, success rate of the runs finished that were queued in it)."""
    buckets: dict[str, dict[float, list[bool]]] = defaultdict(lambda: defaultdict(list))
    tz = None
    for run in runs:
        if run.state not in FINISHED_RUN_STATES or run.queued_at is None:
            continue
        tz = run.queued_at.tzinfo
        stamp = run.queued_at.timestamp()
        buckets[run.domain][stamp - stamp % bucket_seconds].append(run.state == "success")
    return {
        domain: [
            (datetime.fromtimestamp(start, tz), sum(outcomes) / len(outcomes))
            for start, outcomes in sorted(points.items())
        ]
        for domain, points in sorted(buckets.items())
    }
