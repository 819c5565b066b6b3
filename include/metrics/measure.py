"""Per-task measurements of the runs queued in a time window, read from Airflow's metadata DB.

Why the metadata DB: it is the one place where every component (scheduler, worker, API server,
triggerer) has already written what happened, in the same transaction as the state change, so
the figures cannot disagree with what the UI shows. Airflow 3 does not emit
``task.queued_duration`` for Task SDK workers, so queue wait is computed here from the task
instance's timestamps.

Sources, per figure:

- duration: ``task_instance.end_date - start_date`` (for a deferred task, wait included);
- queue wait: ``start_date - queued_dttm`` of the last try. A task resumed from deferral keeps its
  first ``start_date`` but is queued again, so ``queued_dttm`` is later than ``start_date``: its
  first queue wait is no longer stored and the figure is left empty rather than made up;
- approval wait: Airflow's own ``hitl_detail`` row of the gate: ``created_at`` (written when the
  gate asks) to ``responded_at`` (written by the API server when a person answers, or by the
  trigger at the fail-safe timeout, ``responded_by`` then empty). Preferred over the gate's XCom
  ``approval`` record (written by our code only when the gate resumes, so a crashed resume loses
  it) and over the audit trail (another database, and a spooled record lands late);
- escalations: the ``escalation`` entries of the gate's XCom ``approval_ladder``, which the
  trigger appends as it climbs (the ladder has no other store in the metadata DB);
- retries: ``try_number - 1`` (Airflow counts a try when it schedules it);
- domain: the DAG's ``domain:<name>`` tag; workflow kind (which SLA applies): its ``kind:`` tag;
- tenant: ``dag_run.conf["tenant"]``; HR workflows act for the internal tenant ``secops``;
- correlation id: ``conf["correlation_id"]`` or the id every connector derives from the run
  (:func:`include.connectors.context.default_correlation_id`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from include.connectors.context import CORRELATION_CONF_KEY, default_correlation_id

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

DOMAIN_TAG = "domain:"
KIND_TAG = "kind:"
DEFAULT_KIND = "fast_path"
UNKNOWN = "unknown"
# Domains whose workflows act for the company itself, not for a customer.
INTERNAL_TENANT_DOMAINS = {"hr": "secops"}
LADDER_XCOM_KEY = "approval_ladder"  # include.triggers.approval.LADDER_XCOM_KEY (no Airflow import here)

TASKS_SQL = """
SELECT ti.dag_id, ti.run_id, ti.task_id, ti.map_index, ti.state, ti.try_number, ti.operator,
       ti.queued_dttm, ti.start_date, ti.end_date,
       dr.state AS run_state, dr.conf AS run_conf, dr.queued_at AS run_queued_at,
       dr.start_date AS run_start, dr.end_date AS run_end,
       h.created_at AS approval_requested_at, h.responded_at AS approval_answered_at,
       h.responded_by AS approval_responded_by, h.chosen_options AS approval_options,
       ladder.value AS approval_ladder
FROM dag_run dr
JOIN task_instance ti ON ti.dag_id = dr.dag_id AND ti.run_id = dr.run_id
LEFT JOIN hitl_detail h ON h.ti_id = ti.id
LEFT JOIN xcom ladder ON ladder.dag_run_id = dr.id AND ladder.task_id = ti.task_id
     AND ladder.map_index = ti.map_index AND ladder.key = :ladder_key
WHERE COALESCE(dr.queued_at, dr.start_date) >= :since AND COALESCE(dr.queued_at, dr.start_date) < :until
ORDER BY COALESCE(dr.queued_at, dr.start_date), ti.dag_id, ti.run_id, ti.task_id, ti.map_index
"""
TAGS_SQL = "SELECT dag_id, name FROM dag_tag"


@dataclass(frozen=True)
class TaskMeasurement:
    """One task instance (its last try) of one run, with the run's own figures alongside."""

    dag_id: str
    run_id: str
    task_id: str
    map_index: int
    domain: str
    tenant: str
    correlation_id: str
    workflow_kind: str
    state: str
    operator: str | None
    retries: int
    duration_s: float | None
    queue_wait_s: float | None
    approval_wait_s: float | None
    approval_outcome: str | None  # answered / timed_out / pending; None: not an approval gate
    escalations: int
    run_state: str
    run_queued_at: datetime | None
    run_end: datetime | None
    run_duration_s: float | None  # queued -> end: what the SLA deadline measures
    extra: dict[str, Any] = field(default_factory=dict, compare=False)


def seconds(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return round((end - start).total_seconds(), 3)


def _json(value: Any) -> Any:
    # JSON columns come back parsed from psycopg2; an XCom value may itself be a JSON string.
    if isinstance(value, str | bytes):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def domain_and_kind(tags: Iterable[str]) -> tuple[str, str]:
    """The DAG's one ``domain:`` tag and its ``kind:`` tag (defaults: ``unknown``, ``fast_path``)."""
    tags = list(tags)
    domains = [t.removeprefix(DOMAIN_TAG) for t in tags if t.startswith(DOMAIN_TAG)]
    kinds = [t.removeprefix(KIND_TAG) for t in tags if t.startswith(KIND_TAG)]
    return (domains[0] if len(domains) == 1 else UNKNOWN, kinds[0] if len(kinds) == 1 else DEFAULT_KIND)


def tenant_of(conf: Mapping[str, Any], domain: str) -> str:
    tenant = conf.get("tenant")
    if isinstance(tenant, str) and tenant:
        return tenant
    return INTERNAL_TENANT_DOMAINS.get(domain, UNKNOWN)


def queue_wait(queued: datetime | None, started: datetime | None) -> float | None:
    """``started - queued``; ``None`` when queued after the start (a resume from deferral)."""
    wait = seconds(queued, started)
    return wait if wait is not None and wait >= 0 else None


def approval_figures(row: Mapping[str, Any]) -> tuple[float | None, str | None, int]:
    """(wait in seconds, outcome, escalations) of an approval gate; (None, None, 0) for other tasks."""
    requested = row.get("approval_requested_at")
    ladder = _json(row.get("approval_ladder"))
    escalations = (
        sum(1 for e in ladder if isinstance(e, Mapping) and e.get("step") == "escalation")
        if isinstance(ladder, list)
        else 0
    )
    if requested is None:
        return None, None, escalations
    answered = row.get("approval_answered_at")
    if answered is None:
        return None, "pending", escalations
    outcome = "answered" if _json(row.get("approval_responded_by")) else "timed_out"
    return seconds(requested, answered), outcome, escalations


def measure(row: Mapping[str, Any], tags: Iterable[str]) -> TaskMeasurement:
    """One :class:`TaskMeasurement` from one row of :data:`TASKS_SQL` and the DAG's tags."""
    domain, kind = domain_and_kind(tags)
    conf = _json(row.get("run_conf")) or {}
    conf = conf if isinstance(conf, Mapping) else {}
    correlation = conf.get(CORRELATION_CONF_KEY) or default_correlation_id(row["dag_id"], row["run_id"])
    approval_wait, outcome, escalations = approval_figures(row)
    return TaskMeasurement(
        dag_id=row["dag_id"],
        run_id=row["run_id"],
        task_id=row["task_id"],
        map_index=int(row.get("map_index", -1)),
        domain=domain,
        tenant=tenant_of(conf, domain),
        correlation_id=str(correlation),
        workflow_kind=kind,
        state=str(row.get("state") or "none"),
        operator=row.get("operator"),
        retries=max(int(row.get("try_number") or 0) - 1, 0),
        duration_s=seconds(row.get("start_date"), row.get("end_date")),
        queue_wait_s=queue_wait(row.get("queued_dttm"), row.get("start_date")),
        approval_wait_s=approval_wait,
        approval_outcome=outcome,
        escalations=escalations,
        run_state=str(row.get("run_state") or "none"),
        run_queued_at=row.get("run_queued_at") or row.get("run_start"),
        run_end=row.get("run_end"),
        run_duration_s=seconds(row.get("run_queued_at") or row.get("run_start"), row.get("run_end")),
    )


def task_measurements(connection: Connection, since: datetime, until: datetime) -> list[TaskMeasurement]:
    """Every task instance of the runs queued in ``[since, until)``, measured.

    :param connection: a SQLAlchemy connection to the Airflow metadata DB (PostgreSQL).
    """
    from sqlalchemy import text

    tags: dict[str, list[str]] = {}
    for dag_id, name in connection.execute(text(TAGS_SQL)):
        tags.setdefault(dag_id, []).append(name)
    rows = connection.execute(
        text(TASKS_SQL), {"since": since, "until": until, "ladder_key": LADDER_XCOM_KEY}
    ).mappings()
    return [measure(dict(row), tags.get(row["dag_id"], ())) for row in rows]
