"""Per-task measurement, KPIs and the report on fixed rows (no database)."""

from __future__ import annotations

import argparse
import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from include.connectors.context import default_correlation_id
from include.metrics.cli import parse_moment
from include.metrics.kpi import kpis, percentile, runs_of, sla_table, success_rate_series
from include.metrics.measure import TaskMeasurement, approval_figures, measure, queue_wait
from include.metrics.report import ReportScope, duration_text, render_report

T0 = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)
SLA = {"soc": {"fast_path": 300.0, "infrastructure_change": 1800.0}, "hr": {"fast_path": 1800.0}}
SOC_TAGS = ("domain:soc", "kind:fast_path", "soc")


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def row(**overrides: Any) -> dict[str, Any]:
    base = {
        "dag_id": "soc_contain_host",
        "run_id": "manual__1",
        "task_id": "isolate",
        "map_index": -1,
        "state": "success",
        "try_number": 1,
        "operator": "PythonOperator",
        "queued_dttm": at(1),
        "start_date": at(1.5),
        "end_date": at(4),
        "run_state": "success",
        "run_conf": {"tenant": "acme"},
        "run_queued_at": at(0),
        "run_start": at(0.5),
        "run_end": at(10),
        "approval_requested_at": None,
        "approval_answered_at": None,
        "approval_responded_by": None,
        "approval_options": None,
        "approval_ladder": None,
    }
    return {**base, **overrides}


def test_measure_reads_every_figure_of_a_task_row() -> None:
    m = measure(row(try_number=3, run_conf={"tenant": "acme", "correlation_id": "corr-ticket-42"}), SOC_TAGS)
    assert m == TaskMeasurement(
        dag_id="soc_contain_host",
        run_id="manual__1",
        task_id="isolate",
        map_index=-1,
        domain="soc",
        tenant="acme",
        correlation_id="corr-ticket-42",
        workflow_kind="fast_path",
        state="success",
        operator="PythonOperator",
        retries=2,
        duration_s=2.5,
        queue_wait_s=0.5,
        approval_wait_s=None,
        approval_outcome=None,
        escalations=0,
        run_state="success",
        run_queued_at=at(0),
        run_end=at(10),
        run_duration_s=10.0,
    )


@pytest.mark.parametrize(
    ("conf", "tags", "expected"),
    [
        pytest.param({}, ("domain:hr",), ("hr", "secops"), id="hr-acts-for-the-internal-tenant"),
        pytest.param({"tenant": "globex"}, ("domain:hr",), ("hr", "globex"), id="conf-wins"),
        pytest.param({}, ("domain:soc",), ("soc", "unknown"), id="no-tenant"),
        pytest.param(json.dumps({"tenant": "acme"}), (), ("unknown", "acme"), id="conf-as-json-text"),
        pytest.param({}, ("domain:soc", "domain:hr"), ("unknown", "unknown"), id="two-domain-tags"),
    ],
)
def test_domain_and_tenant(conf: Any, tags: tuple[str, ...], expected: tuple[str, str]) -> None:
    m = measure(row(run_conf=conf), tags)
    assert (m.domain, m.tenant) == expected
    assert m.correlation_id == default_correlation_id("soc_contain_host", "manual__1")


@pytest.mark.parametrize(
    ("queued", "started", "expected"),
    [
        pytest.param(at(1), at(3.25), 2.25, id="queued-then-started"),
        pytest.param(at(60), at(3), None, id="resumed-from-deferral"),
        pytest.param(None, at(3), None, id="never-queued"),
        pytest.param(at(1), None, None, id="not-started"),
    ],
)
def test_queue_wait(queued: datetime | None, started: datetime | None, expected: float | None) -> None:
    assert queue_wait(queued, started) == expected


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        pytest.param(
            {
                "approval_requested_at": at(5),
                "approval_answered_at": at(125),
                "approval_responded_by": {"id": "7"},
            },
            (120.0, "answered", 0),
            id="answered",
        ),
        pytest.param(
            {
                "approval_requested_at": at(5),
                "approval_answered_at": at(905),
                "approval_responded_by": None,
                "approval_ladder": json.dumps(
                    [{"step": "requested"}, {"step": "reminder"}, {"step": "escalation"}, {"step": "timeout"}]
                ),
            },
            (900.0, "timed_out", 1),
            id="timed-out-after-escalation",
        ),
        pytest.param(
            {
                "approval_requested_at": at(5),
                "approval_ladder": [{"step": "requested"}, {"step": "escalation"}],
            },
            (None, "pending", 1),
            id="still-waiting",
        ),
        pytest.param({}, (None, None, 0), id="not-a-gate"),
    ],
)
def test_approval_figures(fields: dict[str, Any], expected: tuple[Any, ...]) -> None:
    assert approval_figures(row(**fields)) == expected


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        pytest.param([1, 2, 3, 4], 50, 2.5, id="p50-even"),
        pytest.param([5, 1, 3], 50, 3, id="p50-odd-unsorted"),
        pytest.param(list(range(1, 21)), 95, 19.05, id="p95-interpolated"),
        pytest.param([7], 95, 7, id="one-value"),
        pytest.param([], 50, None, id="none"),
    ],
)
def test_percentile(values: list[float], q: float, expected: float | None) -> None:
    assert percentile(values, q) == expected


def soc_run(
    run_id: str, duration: float | None, state: str = "success", tenant: str = "acme", **task: Any
) -> list[dict[str, Any]]:
    end = at(duration) if duration is not None else None
    run = {"run_id": run_id, "run_state": state, "run_end": end, "run_conf": {"tenant": tenant}}
    return [row(**run, task_id="triage"), row(**run, task_id="isolate", **task)]


def fixed_tasks() -> list[TaskMeasurement]:
    rows = [
        *soc_run("r1", 60),
        *soc_run("r2", 120, try_number=2),
        *soc_run("r3", 400, tenant="globex"),  # over the 5 min SLA
        *soc_run("r4", 30, state="failed", tenant="globex"),
        *soc_run("r5", None, state="running"),
        *soc_run(
            "r6",
            200,
            approval_requested_at=at(10),
            approval_answered_at=at(130),
            approval_responded_by={"id": "3"},
            approval_ladder=[{"step": "requested"}, {"step": "escalation"}],
        ),
    ]
    hr = [
        row(
            dag_id="hr_onboarding",
            run_id="h1",
            run_conf={},
            run_end=at(3600),
            task_id="gate",
            approval_requested_at=at(1),
            approval_answered_at=at(601),
            approval_responded_by=None,
        )
    ]
    return [measure(r, SOC_TAGS) for r in rows] + [measure(r, ("domain:hr",)) for r in hr]


def test_kpis_per_domain() -> None:
    by_domain = {k.key: k for k in kpis(fixed_tasks(), SLA, "domain", now=at(360))}
    soc, hr = by_domain["soc"], by_domain["hr"]
    assert (soc.runs, soc.finished, soc.succeeded, soc.success_rate) == (6, 5, 4, 0.8)
    assert (soc.duration_p50_s, soc.duration_p95_s) == (120.0, 360.0)  # of 30, 60, 120, 200, 400
    # r3 finished over the SLA; r5 is still running 6 minutes after it was queued.
    assert (soc.sla_s, soc.sla_misses) == ((300.0,), 2)
    assert (soc.queue_wait_p50_s, soc.queue_wait_p95_s) == (0.5, 0.5)
    assert (soc.approvals, soc.approval_timeouts, soc.approval_wait_p50_s, soc.approval_wait_max_s) == (
        1,
        0,
        120.0,
        120.0,
    )
    assert (soc.retries, soc.escalations) == (1, 1)
    assert (hr.runs, hr.sla_misses, hr.approvals, hr.approval_timeouts, hr.approval_wait_max_s) == (
        1,
        1,
        1,
        1,
        600.0,
    )


def test_kpis_per_tenant() -> None:
    by_tenant = {k.key: k for k in kpis(fixed_tasks(), SLA, "tenant", now=at(360))}
    assert sorted(by_tenant) == ["acme", "globex", "secops"]
    assert (by_tenant["globex"].runs, by_tenant["globex"].success_rate, by_tenant["globex"].sla_misses) == (
        2,
        0.5,
        1,
    )
    assert by_tenant["secops"].sla_s == (1800.0,)


def test_unfinished_run_is_no_miss_without_now() -> None:
    runs = {r.run_id: r for r in runs_of(fixed_tasks(), SLA)}
    assert runs["r5"].sla_missed is False
    assert runs["r3"].sla_missed is True
    assert runs["r5"].duration_s is None


def test_success_rate_series_buckets_by_queue_time() -> None:
    tasks = [measure(r, SOC_TAGS) for r in soc_run("a", 10) + soc_run("b", 10, state="failed")]
    later = [measure(row(run_id="c", run_queued_at=at(3700), run_end=at(3710)), SOC_TAGS)]
    series = success_rate_series(runs_of(tasks + later, SLA), 3600)
    assert series == {"soc": [(T0, 0.5), (T0 + timedelta(hours=1), 1.0)]}


def test_sla_table_reads_the_domain_policy() -> None:
    table = sla_table()
    assert table["soc"] == {"fast_path": 300.0, "infrastructure_change": 1800.0}
    assert table["support"]["fast_path"] == 120.0


@pytest.mark.parametrize(
    ("value", "text"),
    [(None, "-"), (1.234, "1.23s"), (125, "2m 05s"), (3720, "1h 02m")],
)
def test_duration_text(value: float | None, text: str) -> None:
    assert duration_text(value) == text


def test_parse_moment() -> None:
    now = datetime(2026, 5, 4, 12, 0, tzinfo=UTC)
    assert parse_moment("90m", now) == datetime(2026, 5, 4, 10, 30, tzinfo=UTC)
    assert parse_moment("2026-05-01T00:00:00", now) == datetime(2026, 5, 1, tzinfo=UTC)
    with pytest.raises(argparse.ArgumentTypeError, match="expected an ISO-8601 time or a duration like 24h"):
        parse_moment("yesterday", now)


def test_report_renders_tables_and_embedded_plots() -> None:
    scope = ReportScope(since=T0, until=at(7200))
    html = render_report(fixed_tasks(), scope, SLA, now=at(360))
    assert html.startswith("<!DOCTYPE html>")
    assert "<tr><td>soc</td><td>6</td><td>80.0%</td><td>2m 00s</td>" in html
    assert "<tr><td>globex</td><td>2</td><td>50.0%</td>" in html
    images = [part.split('"', 1)[0] for part in html.split('src="data:image/png;base64,')[1:]]
    assert len(images) == 3  # latency, success rate, approval wait
    assert all(base64.b64decode(i).startswith(b"\x89PNG") for i in images)
    assert "<td>r3</td>" in html  # listed among the runs over their SLA
    assert "http" not in html.replace("<!DOCTYPE html>", "")


def test_report_scope_filters_domain_and_tenant() -> None:
    html = render_report(fixed_tasks(), ReportScope(since=T0, until=at(7200), tenant="globex"), SLA)
    assert "<tr><td>globex</td>" in html
    assert "<tr><td>acme</td>" not in html
    assert "Approval wait per gate: no data in this window." in html
    empty = render_report(fixed_tasks(), ReportScope(since=T0, until=at(60), domain="invoicing"), SLA)
    assert "0 runs, 0 task instances" in empty
    assert "End-to-end latency per domain: no data in this window." in empty
