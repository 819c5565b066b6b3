"""The KPI report: one self-contained HTML page (tables and plots), opened offline or served in the UI.

The plots are PNGs rendered with matplotlib's Agg backend and embedded as ``data:`` URIs, so the
file needs no network and no other file. matplotlib is imported only when a report is rendered:
the API server imports the KPI page plugin at start, and DAG parsing never touches this module.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from html import escape
from typing import TYPE_CHECKING, Any

from include.metrics.aggregate import MAX_LISTED_MISSES, Gate, KpiSummary, LatencyBox, summarize
from include.metrics.kpi import Kpi, RunFigures, SlaTable
from include.metrics.measure import TaskMeasurement

if TYPE_CHECKING:
    from matplotlib.figure import Figure

TITLE = "Workflow KPIs"
KPI_COLUMNS = (
    "Runs",
    "Success rate",
    "Duration p50",
    "Duration p95",
    "SLA",
    "SLA misses",
    "Queue wait p50",
    "Queue wait p95",
    "Approvals",
    "Approval wait p50",
    "Approval wait max",
    "Approval timeouts",
    "Retries",
    "Escalations",
)
CSS = """
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#1a202c}
h1{font-size:1.4rem}h2{font-size:1.1rem;margin-top:2rem}
table{border-collapse:collapse;font-size:.85rem}
th,td{border:1px solid #cbd5e0;padding:.3rem .5rem;text-align:right}td{white-space:nowrap}
th:first-child,td:first-child{text-align:left}th{background:#edf2f7}
td.miss{color:#c53030;font-weight:600}.meta{color:#4a5568;font-size:.85rem}
img{max-width:100%;border:1px solid #e2e8f0;margin:.5rem 0}
"""


@dataclass(frozen=True)
class ReportScope:
    since: datetime
    until: datetime
    domain: str | None = None
    tenant: str | None = None

    def keeps(self, task: TaskMeasurement) -> bool:
        return (self.domain is None or task.domain == self.domain) and (
            self.tenant is None or task.tenant == self.tenant
        )


def duration_text(value: float | None) -> str:
    """``1.25s``, ``2m 05s``, ``1h 02m``; ``-`` for none."""
    if value is None:
        return "-"
    if value < 60:
        return f"{value:.2f}s"
    minutes, secs = divmod(round(value), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _kpi_cells(kpi: Kpi) -> list[tuple[str, str]]:
    """(text, css class) per column of :data:`KPI_COLUMNS`."""
    return [
        (str(kpi.runs), ""),
        (_rate(kpi.success_rate), ""),
        (duration_text(kpi.duration_p50_s), ""),
        (duration_text(kpi.duration_p95_s), "miss" if _over_sla(kpi.duration_p95_s, kpi.sla_s) else ""),
        (" / ".join(duration_text(s) for s in kpi.sla_s) or "-", ""),
        (str(kpi.sla_misses), "miss" if kpi.sla_misses else ""),
        (duration_text(kpi.queue_wait_p50_s), ""),
        (duration_text(kpi.queue_wait_p95_s), ""),
        (str(kpi.approvals), ""),
        (duration_text(kpi.approval_wait_p50_s), ""),
        (duration_text(kpi.approval_wait_max_s), ""),
        (str(kpi.approval_timeouts), "miss" if kpi.approval_timeouts else ""),
        (str(kpi.retries), ""),
        (str(kpi.escalations), ""),
    ]


def _over_sla(value: float | None, slas: Sequence[float]) -> bool:
    return value is not None and len(slas) == 1 and value > slas[0]


def kpi_table(title: str, rows: Sequence[Kpi]) -> str:
    head = "".join(f"<th>{escape(c)}</th>" for c in (title, *KPI_COLUMNS))
    body = "".join(
        "<tr><td>{}</td>{}</tr>".format(
            escape(k.key),
            "".join(
                f'<td class="{cls}">{escape(text)}</td>' if cls else f"<td>{escape(text)}</td>"
                for text, cls in _kpi_cells(k)
            ),
        )
        for k in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _misses_table(missed: Sequence[RunFigures], total: int) -> str:
    if not missed:
        return "<p>No run missed its SLA in this window.</p>"
    rows = "".join(
        f"<tr><td>{escape(r.dag_id)}</td><td>{escape(r.run_id)}</td><td>{escape(r.tenant)}</td>"
        f"<td>{escape(r.correlation_id)}</td><td>{escape(r.state)}</td>"
        f"<td>{duration_text(r.duration_s)}</td><td>{duration_text(r.sla_s)}</td></tr>"
        for r in missed[:MAX_LISTED_MISSES]
    )
    more = f"<p>... and {total - MAX_LISTED_MISSES} more.</p>" if total > MAX_LISTED_MISSES else ""
    return (
        "<table><thead><tr><th>DAG</th><th>Run</th><th>Tenant</th><th>Correlation id</th>"
        f"<th>State</th><th>Duration</th><th>SLA</th></tr></thead><tbody>{rows}</tbody></table>{more}"
    )


# --- plots -------------------------------------------------------------------------------


def _png(figure: Figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _new_figure(height: float) -> Any:
    from matplotlib.figure import Figure

    # Figure() directly, not pyplot: no global state, no GUI backend, safe in the API server.
    return Figure(figsize=(9, height))


def latency_plot(boxes: Sequence[LatencyBox]) -> str | None:
    """End-to-end duration per domain (box p25..p75, line p50, whiskers p5..p95), SLA marked.

    Drawn from the percentiles alone (``Axes.bxp``), so a month of runs costs what a day does.
    """
    if not boxes:
        return None
    figure = _new_figure(1.0 + 0.6 * len(boxes))
    axes = figure.subplots()
    stats = [
        {"label": b.domain, "whislo": b.p5, "q1": b.p25, "med": b.p50, "q3": b.p75, "whishi": b.p95}
        for b in boxes
    ]
    axes.bxp(stats, orientation="horizontal", showfliers=False)
    for position, box in enumerate(boxes, start=1):
        for sla in box.sla_s:
            axes.plot([sla, sla], [position - 0.35, position + 0.35], color="#c53030", linewidth=2)
    axes.set_xscale("log")
    axes.set_xlabel("queued -> end (seconds, log scale; whiskers p5 and p95); red: the domain's SLA")
    axes.set_title("End-to-end latency per domain")
    return _png(figure)


def success_plot(
    series: dict[str, list[tuple[datetime, float]]], bucket: float, since: datetime, until: datetime
) -> str | None:
    if not series:
        return None
    figure = _new_figure(3.2)
    axes = figure.subplots()
    for domain, points in series.items():
        axes.plot([p[0] for p in points], [p[1] * 100 for p in points], marker="o", label=domain)
    axes.set_ylim(-5, 105)
    axes.set_xlim(since, until)  # the whole window, even when only one bucket has runs
    axes.set_ylabel("success rate (%)")
    axes.set_title(f"Success rate over time ({duration_text(bucket)} buckets, by queue time)")
    axes.legend(loc="lower left", fontsize="small")
    figure.autofmt_xdate()
    return _png(figure)


def approval_plot(gates: Sequence[Gate]) -> str | None:
    if not gates:
        return None
    names = sorted({g.domain for g in gates})
    figure = _new_figure(1.0 + 0.6 * len(names))
    axes = figure.subplots()
    for outcome, color in (("answered", "#2f855a"), ("timed_out", "#c53030")):
        points = [(g.wait_s, names.index(g.domain) + 1) for g in gates if g.outcome == outcome]
        if points:
            axes.scatter([p[0] for p in points], [p[1] for p in points], color=color, label=outcome, s=20)
    axes.set_yticks(range(1, len(names) + 1), names)
    axes.set_ylim(0.5, len(names) + 0.5)
    axes.set_xlim(0, max(g.wait_s for g in gates) * 1.15 + 1)
    axes.set_xlabel("requested -> answered (seconds)")
    axes.set_title("Approval wait per gate")
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small")
    return _png(figure)


def _image(title: str, png: str | None) -> str:
    if png is None:
        return f"<p>{escape(title)}: no data in this window.</p>"
    return f'<img alt="{escape(title)}" src="data:image/png;base64,{png}">'


def render_report(
    tasks: Sequence[TaskMeasurement], scope: ReportScope, sla: SlaTable, *, now: datetime | None = None
) -> str:
    """The report as one HTML document for the measured tasks in ``scope`` (the Python path)."""
    kept = [t for t in tasks if scope.keeps(t)]
    return render_summary(summarize(kept, sla, scope.since, scope.until, now=now), scope)


def render_summary(summary: KpiSummary, scope: ReportScope) -> str:
    """The report as one HTML document from its figures (:mod:`include.metrics.aggregate`)."""
    filters = "".join(
        f", {label} <b>{escape(value)}</b>"
        for label, value in (("domain", scope.domain), ("tenant", scope.tenant))
        if value
    )
    sections = [
        f"<h1>{TITLE}</h1>",
        f'<p class="meta">Runs queued from <b>{scope.since.isoformat()}</b> '
        f"to <b>{scope.until.isoformat()}</b>"
        f"{filters}: {summary.runs} runs, {summary.task_instances} task instances. Durations are "
        "queued -> end; the SLA is the domain's for the workflow's kind (domains.yaml).</p>",
        "<h2>Per domain</h2>",
        kpi_table("Domain", summary.by_domain),
        "<h2>Per tenant</h2>",
        kpi_table("Tenant", summary.by_tenant),
        "<h2>Latency distribution</h2>",
        _image("End-to-end latency per domain", latency_plot(summary.latency)),
        "<h2>Success rate over time</h2>",
        _image(
            "Success rate over time",
            success_plot(summary.success_series, summary.bucket_s, scope.since, scope.until),
        ),
        "<h2>Approval wait</h2>",
        _image("Approval wait per gate", approval_plot(summary.gates)),
        "<h2>Runs over their SLA</h2>",
        _misses_table(summary.misses, summary.miss_count),
    ]
    body = "\n".join(sections)
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{TITLE}</title>'
        f"<style>{CSS}</style></head><body>\n{body}\n</body></html>\n"
    )
