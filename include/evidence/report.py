"""The evidence pack's readable report: one self-contained HTML page for a customer's security officer.

:func:`render` turns a tenant's audit records of one period (dicts shaped like
:meth:`include.audit.store.AuditStore.records_for` returns them) into a page that reads without
knowing Airflow: a summary (runs per workflow, approvals asked, answered and escalated, changes
made, failures, SLA figures), two small plots (inline SVG, no script), then one section per run:
who started it and how, from which bundle version; each approval (asked of whom, reminders and
escalations, who answered, with the comment, and the second factor); the changes (tickets, cloud
changes with their correlation id, Terraform applies with the plan's SHA-256); failures and retries.

Records hold user input (comments, run conf, ticket subjects), so every value is passed through
:func:`include.audit.trace.clean` (control and bidi-override characters escaped, long values cut)
and then HTML-escaped; the page also carries a Content-Security-Policy that forbids scripts and any
network fetch, so a value that were ever to slip through could not run or call home.

SLA figures are computed as the KPI report computes them (:mod:`include.metrics.kpi`): a finished
run is late when its duration exceeds its domain's SLA for the workflow's kind
(``include/policies/domains.yaml``); p50/p95 interpolate linearly (:func:`include.metrics.kpi.percentile`).
The duration here is the run's own, as the audit log recorded it (``run.finished``); the KPI report
also counts the time a run waited in the queue, so its figures may be a few seconds longer.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from html import escape
from typing import Any, Final

from include.audit.records import (
    APPROVAL_ANSWERED,
    APPROVAL_ESCALATED,
    APPROVAL_REQUESTED,
    APPROVAL_SECOND_FACTOR,
    RUN_TRIGGERED,
    SIDE_EFFECT,
    TASK_FINISHED,
)
from include.audit.trace import RUN_FINISHED, clean, is_ticketing, side_effect_target
from include.metrics.kpi import SlaTable, percentile
from include.metrics.measure import DEFAULT_KIND

TITLE: Final = "Evidence report"
RETRY_STATES: Final = frozenset({"up_for_retry", "up_for_reschedule"})
FAILED_STATES: Final = frozenset({"failed", "upstream_failed"})
HOW: Final = {
    "ui": "the web interface",
    "rest_api": "the REST API",
    "timetable": "the schedule",
    "cli": "the command line",
    "asset": "a data event",
    "operator": "another workflow",
    "backfill": "a backfill",
    "test": "a test",
}
OUTCOME: Final = {
    "approved": "approved",
    "rejected": "rejected",
    "timed_out": "no answer before the deadline",
}
NUDGE_WORDS: Final = {
    "reminder": "Reminder sent",
    "escalation": "Escalated",
    "timeout": "Timeout notice sent",
}
CSP: Final = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
CSS: Final = """
body{font-family:system-ui,'Liberation Sans',sans-serif;margin:1.5rem auto;max-width:62rem;color:#1a202c;
line-height:1.45}
h1{font-size:1.5rem;margin-bottom:.2rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #cbd5e0}
h3{font-size:1rem;margin:1.4rem 0 .3rem}h4{font-size:.9rem;margin:.8rem 0 .2rem;color:#2d3748}
table{border-collapse:collapse;font-size:.85rem;margin:.3rem 0}
th,td{border:1px solid #cbd5e0;padding:.25rem .5rem;text-align:left;vertical-align:top}
th{background:#edf2f7}td.n{text-align:right}td.when{white-space:nowrap}.meta{color:#4a5568;font-size:.85rem}
.run{border:1px solid #e2e8f0;border-radius:6px;padding:.2rem 1rem .8rem;margin:1rem 0}
.bad{color:#c53030;font-weight:600}.ok{color:#276749}.quote{font-style:italic}
.figures{display:flex;flex-wrap:wrap;gap:1rem}.figure{border:1px solid #e2e8f0;padding:.5rem}
code{font-size:.8rem;word-break:break-all}ul{margin:.2rem 0}
@media print{body{margin:0;max-width:none;font-size:10.5pt}tr,li,.figure,.meta{break-inside:avoid}
h2,h3,h4{break-after:avoid}.run{break-inside:auto}}
"""
_FOOTER_UNSAFE = re.compile(r"[^0-9A-Za-z .,:()/&+_-]")


def print_css(display_name: str, start: Any, end: Any) -> str:
    """The printed page (report.pdf): A4, and a footer on every page naming the tenant, the period
    and "page N of M", so a printed sheet that goes astray still says what it belongs to. The
    footer is a CSS string: the name keeps only characters that cannot end it (no quote, backslash
    or angle bracket)."""
    label = _FOOTER_UNSAFE.sub("", f"{TITLE}: {display_name}, {when(start)} to {when(end)}")[:150]
    small = "font-family:system-ui,'Liberation Sans',sans-serif;font-size:8pt;color:#4a5568"
    return (
        f'@page{{size:A4;margin:15mm 14mm 16mm;@bottom-left{{content:"{label}";{small}}}'
        f'@bottom-right{{content:"Page " counter(page) " of " counter(pages);{small}}}}}'
    )


def text(value: Any, limit: int = 160) -> str:
    """``value`` safe to place in HTML text or an attribute: one printable line, escaped."""
    return escape(clean("" if value is None else value, limit), quote=True)


def when(value: Any) -> str:
    """``2026-11-04 13:02 UTC`` for a record time or a datetime; the value itself (escaped) otherwise."""
    if isinstance(value, datetime):
        moment = value.astimezone(UTC) if value.tzinfo else value
        return moment.strftime("%Y-%m-%d %H:%M:%S UTC" if moment.second else "%Y-%m-%d %H:%M UTC")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, str) and len(value) >= 16 and value[10] == "T":
        return text(f"{value[:10]} {value[11:16]} UTC", 40)
    return text(value, 40)


def duration(seconds: float | None) -> str:
    """``45 s``, ``2 min 05 s``, ``1 h 02 min``; ``-`` for none."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    """``1 run``, ``2 runs`` (the count in bold)."""
    return f"<b>{count}</b> {noun if count == 1 else nouns or noun + 's'}"


def _details(record: Mapping[str, Any]) -> Mapping[str, Any]:
    details = record.get("details")
    return details if isinstance(details, Mapping) else {}


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _names(values: Any) -> str:
    if isinstance(values, list | tuple):
        return ", ".join(text(v, 80) for v in values) or "nobody named"
    return text(values, 80) if values not in (None, "") else "nobody named"


@dataclass
class Gate:
    """One approval step of a run: the request, its reminders/escalations, the answer."""

    task_id: str
    step: str
    request: Mapping[str, Any] | None = None
    nudges: list[Mapping[str, Any]] = field(default_factory=list)
    answer: Mapping[str, Any] | None = None
    second_factor: Mapping[str, Any] | None = None

    @property
    def escalated(self) -> bool:
        return any(_details(n).get("step") == "escalation" for n in self.nudges)

    @property
    def outcome(self) -> str | None:
        if self.answer is None:
            return None
        return str(_details(self.answer).get("outcome") or "unknown")


@dataclass
class Run:
    """Everything the records say about one workflow run."""

    dag_id: str
    run_id: str
    records: list[Mapping[str, Any]] = field(default_factory=list)

    def first(self, kind: str) -> Mapping[str, Any] | None:
        return next((r for r in self.records if r.get("kind") == kind), None)

    def last(self, kind: str) -> Mapping[str, Any] | None:
        return next((r for r in reversed(self.records) if r.get("kind") == kind), None)

    @property
    def domain(self) -> str:
        return next((str(r["domain"]) for r in self.records if r.get("domain")), "")

    @property
    def correlation_id(self) -> str:
        return next((str(r["correlation_id"]) for r in self.records if r.get("correlation_id")), "")

    @property
    def state(self) -> str:
        finished = self.last(RUN_FINISHED)
        return str(_details(finished).get("state") or "unknown") if finished else "not finished"

    @property
    def duration_s(self) -> float | None:
        finished = self.last(RUN_FINISHED)
        return _number(_details(finished).get("duration_seconds")) if finished else None

    @property
    def started_at(self) -> Any:
        return self.records[0].get("at") if self.records else None

    def gates(self) -> list[Gate]:
        gates: dict[tuple[str, str], Gate] = {}
        for record in self.records:
            kind = record.get("kind")
            details = _details(record)
            task_id = str(record.get("task_id") or "")
            if kind == APPROVAL_REQUESTED:
                gates.setdefault((task_id, str(details.get("step"))), Gate(task_id, str(details.get("step"))))
                gates[(task_id, str(details.get("step")))].request = record
            elif kind == APPROVAL_ESCALATED:
                key = (task_id, str(details.get("gate_step")))
                gates.setdefault(key, Gate(*key)).nudges.append(record)
            elif kind == APPROVAL_ANSWERED:
                key = (task_id, str(details.get("step")))
                gates.setdefault(key, Gate(*key)).answer = record
        for record in self.records:  # the second factor of the answer at that gate
            if record.get("kind") == APPROVAL_SECOND_FACTOR:
                task_id = str(record.get("task_id") or "")
                for gate in gates.values():
                    if gate.task_id == task_id and gate.second_factor is None and gate.answer is not None:
                        gate.second_factor = record
                        break
        return list(gates.values())

    def changes(self) -> list[Mapping[str, Any]]:
        return [r for r in self.records if r.get("kind") == SIDE_EFFECT]

    def troubles(self) -> list[Mapping[str, Any]]:
        """Task ends that were failures or retries."""
        return [
            r
            for r in self.records
            if r.get("kind") == TASK_FINISHED and (_details(r).get("state") in FAILED_STATES | RETRY_STATES)
        ]

    def retries(self) -> int:
        return sum(1 for r in self.troubles() if _details(r).get("state") in RETRY_STATES)

    def failed_tasks(self) -> int:
        return sum(1 for r in self.troubles() if _details(r).get("state") in FAILED_STATES)


@dataclass(frozen=True)
class Sla:
    """SLA figures of one domain for the period (as the KPI report computes them)."""

    domain: str
    finished: int
    on_time: int
    late: int
    no_sla: int
    p50_s: float | None
    p95_s: float | None
    sla_s: tuple[float, ...]


def runs_of(records: Iterable[Mapping[str, Any]]) -> tuple[list[Run], list[Mapping[str, Any]]]:
    """The records grouped per run (in order of first record), and the records of no run."""
    runs: dict[tuple[str, str], Run] = {}
    loose: list[Mapping[str, Any]] = []
    for record in records:
        run_id = record.get("run_id")
        if not run_id:
            loose.append(record)
            continue
        key = (str(record.get("dag_id") or "?"), str(run_id))
        runs.setdefault(key, Run(*key)).records.append(record)
    return list(runs.values()), loose


def sla_figures(runs: Sequence[Run], sla: SlaTable, kinds: Mapping[str, str]) -> list[Sla]:
    """Per domain: finished runs, on time / late against the domain's SLA, duration p50/p95."""
    by_domain: dict[str, list[Run]] = defaultdict(list)
    for run in runs:
        by_domain[run.domain or "unknown"].append(run)
    figures = []
    for name in sorted(by_domain):
        durations: list[float] = []
        on_time = late = no_sla = 0
        limits: set[float] = set()
        for run in by_domain[name]:
            seconds = run.duration_s
            if seconds is None:
                continue
            durations.append(seconds)
            limit = sla.get(name, {}).get(kinds.get(run.dag_id, DEFAULT_KIND))
            if limit is None:
                no_sla += 1
            elif seconds > limit:
                late += 1
                limits.add(float(limit))
            else:
                on_time += 1
                limits.add(float(limit))
        figures.append(
            Sla(
                name,
                len(durations),
                on_time,
                late,
                no_sla,
                percentile(durations, 50),
                percentile(durations, 95),
                tuple(sorted(limits)),
            )
        )
    return figures


# --- plots (inline SVG) ----------------------------------------------------------------------


def runs_per_day_svg(runs: Sequence[Run]) -> str:
    """Bars: runs started per day, the failed part in red. Empty string for no runs."""
    days: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for run in runs:
        day = str(run.started_at or "")[:10]
        if len(day) != 10:
            continue
        days[day][1 if run.state == "failed" else 0] += 1
    if not days:
        return ""
    ordered = sorted(days.items())
    width, height, pad = 640, 180, 30
    top = max(ok + bad for ok, bad in days.values())
    step = (width - 2 * pad) / len(ordered)
    bar = min(max(step * 0.7, 1.0), 40.0)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 20}" '
        f'role="img" aria-label="Runs per day"><title>Runs per day</title>',
        f'<line x1="{pad}" y1="{height}" x2="{width - pad}" y2="{height}" stroke="#4a5568"/>',
        f'<text x="4" y="{pad - 8}" font-size="11" fill="#4a5568">'
        f"Runs started per day (at most {top}); blue: ran without failing, red: failed</text>",
    ]
    for index, (day, (ok, bad)) in enumerate(ordered):
        x = pad + index * step
        ok_h = (height - pad) * ok / top
        bad_h = (height - pad) * bad / top
        parts.append(
            f'<rect x="{x:.1f}" y="{height - ok_h:.1f}" width="{bar:.1f}" height="{ok_h:.1f}" fill="#3182ce">'
            f"<title>{text(day)}: {ok} ran without failing</title></rect>"
        )
        if bad:
            parts.append(
                f'<rect x="{x:.1f}" y="{height - ok_h - bad_h:.1f}" width="{bar:.1f}" height="{bad_h:.1f}" '
                f'fill="#e53e3e"><title>{text(day)}: {bad} failed</title></rect>'
            )
        if len(ordered) <= 12 or index % max(len(ordered) // 8, 1) == 0:
            parts.append(
                f'<text x="{x:.1f}" y="{height + 14}" font-size="10" fill="#4a5568">{text(day[5:])}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)


def durations_svg(figures: Sequence[Sla]) -> str:
    """Per domain: p50 and p95 duration bars and the SLA as a line. Empty string when nothing finished."""
    rows = [f for f in figures if f.p95_s is not None]
    if not rows:
        return ""
    width, label, row_h = 640, 110, 34
    top = max(max(f.p95_s or 0.0, *f.sla_s) for f in rows) or 1.0
    scale = (width - label - 20) / top
    height = row_h * len(rows) + 24
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
        'aria-label="Run duration against the SLA"><title>Run duration against the SLA</title>'
    ]
    for index, figure in enumerate(rows):
        y = 6 + index * row_h
        parts.append(
            f'<text x="0" y="{y + 16}" font-size="12" fill="#1a202c">{text(figure.domain, 16)}</text>'
        )
        p95 = (figure.p95_s or 0.0) * scale
        p50 = (figure.p50_s or 0.0) * scale
        parts.append(
            f'<rect x="{label}" y="{y}" width="{p95:.1f}" height="22" fill="#bee3f8">'
            f"<title>95% of runs within {duration(figure.p95_s)}</title></rect>"
            f'<rect x="{label}" y="{y + 5}" width="{p50:.1f}" height="12" fill="#3182ce">'
            f"<title>half of the runs within {duration(figure.p50_s)}</title></rect>"
        )
        for limit in figure.sla_s:
            x = label + limit * scale
            parts.append(
                f'<line x1="{x:.1f}" y1="{y - 2}" x2="{x:.1f}" y2="{y + 24}" stroke="#c53030" '
                'stroke-width="2">'
                f"<title>SLA {duration(limit)}</title></line>"
            )
    parts.append(
        f'<text x="{label}" y="{height - 4}" font-size="10" fill="#4a5568">'
        "dark: half of the runs, light: 95% of the runs, red line: the SLA</text></svg>"
    )
    return "".join(parts)


# --- sections --------------------------------------------------------------------------------


def _trigger(run: Run) -> str:
    record = run.first(RUN_TRIGGERED)
    if record is None:
        return "<p>Started: not recorded in this period (the run began before it).</p>"
    details = _details(record)
    how = details.get("how")
    how_text = HOW.get(str(how), text(how or "an unknown way", 40))
    bundle = ""
    if details.get("bundle_name") or details.get("bundle_version"):
        bundle = f", workflow code {text(details.get('bundle_name') or '?', 60)}"
        if details.get("bundle_version"):
            bundle += f" at version <code>{text(details['bundle_version'], 80)}</code>"
    ticket = (
        f", for ticket {text(details['ticket_id'], 80)}" if details.get("ticket_id") not in (None, "") else ""
    )
    return (
        f"<p>Started {when(record.get('at'))} by <b>{text(record.get('actor') or '?', 80)}</b> "
        f"through {how_text}{bundle}{ticket}.</p>"
    )


def _answer_items(gate: Gate) -> list[str]:
    """The answer (or its absence), missed ladder steps and the second factor, for :func:`_gate_html`."""
    items: list[str] = []
    if gate.answer is None:
        items.append('<span class="bad">No answer recorded in this period.</span>')
    else:
        details = _details(gate.answer)
        outcome = gate.outcome or "unknown"
        words = OUTCOME.get(outcome, text(outcome, 30))
        css = "ok" if outcome == "approved" else "bad"
        if outcome == "timed_out":
            items.append(f'<span class="bad">{words}</span> ({when(gate.answer.get("at"))}).')
            missed = details.get("missed_steps")
            if isinstance(missed, list) and missed:
                items.append(
                    '<span class="bad">Never sent (the triggerer was not running from their time to the '
                    f"deadline): {text(', '.join(str(step) for step in missed), 80)}.</span>"
                )
        else:
            line = (
                f'<span class="{css}">{words.capitalize()}</span> {when(gate.answer.get("at"))} by '
                f"<b>{text(gate.answer.get('actor') or '?', 80)}</b>"
            )
            if details.get("comment") not in (None, ""):
                line += f', comment: <span class="quote">&ldquo;{text(details["comment"], 400)}&rdquo;</span>'
            items.append(line + ".")
        if gate.second_factor is not None:
            serial = _details(gate.second_factor).get("token_serial")
            items.append(
                "Answer confirmed with a one-time code"
                + (f" (token {text(serial, 40)})" if serial else "")
                + "."
            )
    return items


def _gate_html(gate: Gate) -> str:
    items = []
    request = gate.request
    action = text(_details(request or gate.answer or {}).get("action") or gate.task_id or "approval", 80)
    if request is not None:
        details = _details(request)
        asked = f"Asked {when(request.get('at'))} of {_names(details.get('any_of'))}"
        if details.get("to"):
            asked += f" (notified: {_names(details.get('to'))})"
        if details.get("excluded"):
            asked += f"; not allowed to answer: {_names(details.get('excluded'))}"
        if details.get("deadline"):
            asked += f"; deadline {when(details.get('deadline'))}"
        items.append(asked + ".")
    for nudge in gate.nudges:
        details = _details(nudge)
        word = NUDGE_WORDS.get(str(details.get("step")), "Reminder sent")
        items.append(f"{word} {when(nudge.get('at'))} to {_names(details.get('to'))}.")
    items.extend(_answer_items(gate))
    step = f" (step {text(gate.step, 10)})" if gate.step not in ("", "None") else ""
    lis = "".join(f"<li>{item}</li>" for item in items)
    return f"<li><b>{action}</b>{step}<ul>{lis}</ul></li>"


def _change_row(record: Mapping[str, Any]) -> str:
    details = _details(record)
    system = text(details.get("system") or "?", 40)
    operation = text(details.get("operation") or "?", 60)
    what = text(side_effect_target(details), 200)
    if details.get("created") is False:
        what += " (already in place)"
    notes = []
    if details.get("plan_sha256"):
        notes.append(f"approved plan SHA-256 <code>{text(details['plan_sha256'], 64)}</code>")
    if details.get("capability"):
        notes.append(f"permission set {text(details['capability'], 60)}")
    if details.get("summary"):
        notes.append(text(details["summary"], 200))
    kind = "ticket" if is_ticketing(details) else "change"
    return (
        f'<tr><td class="when">{when(record.get("at"))}</td><td>{kind}</td>'
        f"<td>{system}: {operation}</td><td>{what}</td>"
        f"<td><code>{text(record.get('correlation_id') or '-', 80)}</code></td>"
        f"<td>{'; '.join(notes)}</td></tr>"
    )


def _trouble_item(record: Mapping[str, Any]) -> str:
    details = _details(record)
    state = details.get("state")
    word = "will be retried" if state in RETRY_STATES else "failed"
    attempt = f", attempt {text(details['try_number'], 6)}" if details.get("try_number") is not None else ""
    reason = f" ({text(details['error_type'], 60)})" if details.get("error_type") else ""
    step = text(record.get("task_id") or "?", 80)
    return f"<li>{when(record.get('at'))}: step {step} {word}{attempt}{reason}</li>"


def _run_html(run: Run, number: int) -> str:
    state = run.state
    css = "ok" if state == "success" else "bad"
    words = {"success": "finished successfully", "failed": "failed"}.get(state, text(state, 30))
    parts = [
        f'<section class="run" id="run-{number}"><h3>{number}. {text(run.dag_id, 100)}</h3>',
        f'<p class="meta">Run <code>{text(run.run_id, 120)}</code>, area {text(run.domain or "-", 40)}, '
        f"correlation id <code>{text(run.correlation_id or '-', 120)}</code></p>",
        _trigger(run),
        f'<p>Outcome: <span class="{css}">{words}</span>'
        + (f" after {duration(run.duration_s)}" if run.duration_s is not None else "")
        + ".</p>",
    ]
    gates = run.gates()
    parts.append("<h4>Approvals</h4>")
    parts.append(
        "<ul>" + "".join(_gate_html(g) for g in gates) + "</ul>"
        if gates
        else "<p>No approval was needed.</p>"
    )
    changes = run.changes()
    parts.append("<h4>Changes made</h4>")
    if changes:
        parts.append(
            "<table><tr><th>When</th><th>Kind</th><th>System</th><th>What</th><th>Correlation id</th>"
            "<th>Notes</th></tr>" + "".join(_change_row(r) for r in changes) + "</table>"
        )
    else:
        parts.append("<p>No change was recorded.</p>")
    troubles = run.troubles()
    if troubles:
        parts.append(
            "<h4>Failures and retries</h4><ul>" + "".join(_trouble_item(r) for r in troubles) + "</ul>"
        )
    parts.append("</section>")
    return "".join(parts)


def _summary(runs: Sequence[Run], figures: Sequence[Sla]) -> str:
    by_workflow: dict[str, Counter[str]] = defaultdict(Counter)
    for run in runs:
        counter = by_workflow[run.dag_id]
        counter["runs"] += 1
        counter[run.state] += 1
    gates = [g for run in runs for g in run.gates()]
    asked = len(gates)  # a gate answered in the period was asked, even if before it
    outcomes = Counter(g.outcome for g in gates if g.outcome is not None)
    escalated = sum(1 for g in gates if g.escalated)
    reminded = sum(1 for g in gates if any(_details(n).get("step") == "reminder" for n in g.nudges))
    changes = [c for run in runs for c in run.changes()]
    tickets = sum(1 for c in changes if is_ticketing(_details(c)))
    failed_runs = sum(1 for run in runs if run.state == "failed")
    retries = sum(run.retries() for run in runs)
    rows = "".join(
        f"<tr><td>{text(dag_id, 100)}</td><td class='n'>{c['runs']}</td><td class='n'>{c['success']}</td>"
        f"<td class='n'>{c['failed']}</td><td class='n'>{c['runs'] - c['success'] - c['failed']}</td></tr>"
        for dag_id, c in sorted(by_workflow.items())
    )
    parts = [
        "<h2>Summary</h2>",
        "<ul>",
        f"<li>{plural(len(runs), 'workflow run')} touched this tenant; <b>{failed_runs}</b> failed.</li>",
        f"<li>{plural(asked, 'approval')} asked: {outcomes['approved']} approved, {outcomes['rejected']} "
        f"rejected, {outcomes['timed_out']} unanswered by the deadline; {reminded} needed a reminder, "
        f"<b>{escalated}</b> escalated.</li>",
        f"<li>{plural(len(changes), 'change')} made: {tickets} on tickets, {len(changes) - tickets} in "
        "cloud or directory systems.</li>",
        f"<li>{plural(retries, 'step')} retried after a temporary error.</li>",
        "</ul>",
    ]
    if rows:
        parts.append(
            "<h3>Runs by workflow</h3><table><tr><th>Workflow</th><th>Runs</th><th>Succeeded</th>"
            f"<th>Failed</th><th>Other</th></tr>{rows}</table>"
        )
    if figures:
        sla_rows = "".join(
            f"<tr><td>{text(f.domain, 40)}</td><td class='n'>{f.finished}</td><td class='n'>{f.on_time}</td>"
            f"<td class='n{' bad' if f.late else ''}'>{f.late}</td><td class='n'>{duration(f.p50_s)}</td>"
            f"<td class='n'>{duration(f.p95_s)}</td>"
            f"<td class='n'>{', '.join(duration(s) for s in f.sla_s) or '-'}</td></tr>"
            for f in figures
        )
        parts.append(
            "<h3>Service levels</h3><p>How long finished runs took, against the agreed time (SLA). "
            "&ldquo;Half of the runs&rdquo; (p50) and &ldquo;95% of the runs&rdquo; (p95) finished within "
            "the time shown.</p><table><tr><th>Area</th><th>Finished runs</th><th>On time</th><th>Late</th>"
            f"<th>Half within</th><th>95% within</th><th>SLA</th></tr>{sla_rows}</table>"
        )
    plots = [p for p in (runs_per_day_svg(runs), durations_svg(figures)) if p]
    if plots:
        parts.append(
            '<div class="figures">' + "".join(f'<div class="figure">{p}</div>' for p in plots) + "</div>"
        )
    return "".join(parts)


def _loose_html(loose: Sequence[Mapping[str, Any]]) -> str:
    if not loose:
        return ""
    items = "".join(
        f"<li>{when(r.get('at'))}: {text(r.get('kind'), 40)} by {text(r.get('actor') or '?', 60)}"
        + (f" on {text(r.get('subject'), 100)}" if r.get("subject") else "")
        + "</li>"
        for r in loose
    )
    return f"<h2>Other events</h2><p>Events not part of a workflow run.</p><ul>{items}</ul>"


def render(
    records: Iterable[Mapping[str, Any]],
    *,
    tenant: str,
    start: datetime | date | str,
    end: datetime | date | str,
    domain: str | None = None,
    sla: SlaTable | None = None,
    workflow_kinds: Mapping[str, str] | None = None,
    display_name: str | None = None,
    generated_at: datetime | None = None,
    detail_limit: int | None = None,
) -> str:
    """The report of ``tenant``'s records for the period ``[start, end)`` as one HTML document.

    :param records: the tenant's audit records, as :meth:`AuditStore.records_for` returns them.
    :param tenant: the tenant id; a record naming another tenant is refused.
    :param start: the period's first instant (or day).
    :param end: the period's end (exclusive).
    :param domain: the domain of an internal, per-domain report (``None``: every domain).
    :param sla: domain -> workflow kind -> SLA seconds (default: ``include/policies/domains.yaml``).
    :param workflow_kinds: dag_id -> workflow kind (``fast_path`` when not named).
    :param display_name: the tenant's name for the title (default: from ``tenants.yaml``, else the id).
    :param generated_at: the time shown as "prepared" (default: none shown, so the same records
        give the same bytes and a rebuilt pack the same manifest).
    :param detail_limit: detail only the first this many runs (the summary still counts them all)
        and say where the others are: the printed copy of a busy period (report.pdf).
    :raises ValueError: a record of another tenant or domain is among ``records`` (naming its seq).
    """
    rows = list(records)
    for record in rows:
        owner = record.get("tenant")
        if owner not in (None, "") and owner != tenant:
            raise ValueError(
                f"evidence report of tenant {tenant!r}: "
                f"record seq {record.get('seq')} belongs to another tenant"
            )
        if domain is not None and record.get("domain") not in (None, "", domain):
            raise ValueError(
                f"evidence report of domain {domain!r}: record seq {record.get('seq')} is of another domain"
            )
    if sla is None:
        from include.metrics.kpi import sla_table

        sla = sla_table()
    if display_name is None:
        display_name = _display_name(tenant)
    runs, loose = runs_of(rows)
    figures = sla_figures(runs, sla, workflow_kinds or {})
    scope = f" &mdash; area {text(domain, 40)}" if domain else ""
    title = f"{TITLE}: {text(display_name, 100)}, {when(start)} to {when(end)}"
    prepared = f"; prepared {when(generated_at)}" if generated_at else ""
    body = [
        f"<h1>{TITLE}: {text(display_name, 100)}{scope}</h1>",
        f'<p class="meta">Tenant <code>{text(tenant, 40)}</code>; period from {when(start)} up to '
        f"{when(end)}{prepared}; {len(rows)} audit records.</p>",
        "<p>This report lists everything the managed service did for this tenant in the period: who "
        "started each workflow, who approved it, and what it changed. It is generated from the signed "
        "audit log; the records themselves and the proof that none is missing or altered travel with it "
        "in the same evidence pack.</p>",
        _summary(runs, figures),
        "<h2>Runs</h2>",
        _cut_note(len(runs), detail_limit),
        "".join(_run_html(run, index) for index, run in enumerate(runs[:detail_limit], start=1))
        or "<p>No workflow run touched this tenant in the period.</p>",
        _cut_note(len(runs), detail_limit),
        _loose_html(loose),
    ]
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{title}</title><style>{CSS}{print_css(display_name, start, end)}</style></head><body>"
        + "".join(body)
        + "</body></html>\n"
    )


def _cut_note(total: int, limit: int | None) -> str:
    """Where the runs a shortened (printed) copy leaves out are; empty when none is left out."""
    if limit is None or total <= limit:
        return ""
    return (
        f'<p class="meta"><strong>This printed copy details the first {limit} of the {total} runs</strong> '
        "(the summary above counts them all). Every run is detailed in report.html, and every record is "
        "in records.jsonl, in the same evidence pack.</p>"
    )


def _display_name(tenant: str) -> str:
    from include.policies.loader import PolicyError
    from include.policies.tenants import load_tenants

    try:
        return load_tenants().tenant(tenant).display_name
    except PolicyError:
        return tenant
