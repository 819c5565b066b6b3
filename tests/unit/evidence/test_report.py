"""The evidence report (include/evidence/report.py): figures, wording, escaping, and a headless render."""

from __future__ import annotations

import re
import subprocess
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from devstack import chromium
from include.evidence import report

START = datetime(2026, 11, 1, tzinfo=UTC)
END = datetime(2026, 12, 1, tzinfo=UTC)
SLA = {"soc": {"fast_path": 600.0}, "support": {"fast_path": 120.0}}
ATTACK = "<script>document.title='pwned'</script><img src=x onerror=alert(1)>"
PLAN = "ab" * 32


def rec(seq: int, kind: str, actor: str, run: str | None, **fields: Any) -> dict[str, Any]:
    dag_id = fields.pop("dag_id", "soc_contain_host")
    return {
        "seq": seq,
        "at": fields.pop("at", f"2026-11-{(seq % 28) + 1:02d}T10:{seq % 60:02d}:00.000000Z"),
        "kind": kind,
        "actor": actor,
        "domain": fields.pop("domain", "soc"),
        "tenant": fields.pop("tenant", "acme"),
        "correlation_id": fields.pop("correlation_id", f"INC-{run}" if run else None),
        "dag_id": dag_id if run else None,
        "run_id": run,
        "task_id": fields.pop("task_id", None),
        "subject": fields.pop("subject", None),
        "details": fields.pop("details", {}),
        "prev_hash": "0" * 64,
        "hash": "1" * 64,
    }


def mixed_month(comment: str = "isolate it, confirmed with the customer") -> list[dict[str, Any]]:
    """Two SOC runs (one approved with an escalation and a change, one failed after a retry) and a
    support run over its SLA."""
    return [
        rec(
            1,
            "run.triggered",
            "alice",
            "r1",
            details={"how": "ui", "bundle_name": "dags", "bundle_version": "3f2c9e1", "conf": {}},
        ),
        rec(
            2,
            "approval.requested",
            "airflow",
            "r1",
            task_id="approve",
            details={
                "action": "isolate host",
                "step": 1,
                "steps": 1,
                "any_of": ["soc_lead"],
                "to": ["lead@secops.example"],
                "deadline": "2026-11-02T11:00:00+00:00",
            },
        ),
        rec(
            3,
            "approval.escalated",
            "airflow",
            "r1",
            task_id="approve",
            details={
                "action": "isolate host",
                "gate_step": 1,
                "step": "reminder",
                "to": ["lead@secops.example"],
            },
        ),
        rec(
            4,
            "approval.escalated",
            "airflow",
            "r1",
            task_id="approve",
            details={
                "action": "isolate host",
                "gate_step": 1,
                "step": "escalation",
                "to": ["oncall@secops.example"],
            },
        ),
        rec(
            5,
            "approval.answered",
            "bob",
            "r1",
            task_id="approve",
            details={"action": "isolate host", "step": 1, "outcome": "approved", "comment": comment},
        ),
        rec(
            6,
            "approval.second_factor",
            "bob",
            "r1",
            task_id="approve",
            details={"method": "totp", "token_serial": "TOTP0001", "verdict": "accept"},
        ),
        rec(
            7,
            "side_effect",
            "worker",
            "r1",
            task_id="isolate",
            details={
                "system": "aws",
                "operation": "isolate-host",
                "object_id": "i-0abc",
                "created": True,
                "capability": "ec2-isolate",
            },
        ),
        rec(
            8,
            "side_effect",
            "worker",
            "r1",
            task_id="plan",
            details={
                "system": "terraform",
                "operation": "apply",
                "object_id": "acme/network",
                "plan_sha256": PLAN,
            },
        ),
        rec(
            9,
            "side_effect",
            "worker",
            "r1",
            task_id="comment",
            details={
                "system": "request_tracker",
                "operation": "comment",
                "object_id": "77",
                "ticket_id": "42",
            },
        ),
        rec(10, "run.finished", "scheduler", "r1", details={"state": "success", "duration_seconds": 300.0}),
        rec(11, "run.triggered", "carol", "r2", details={"how": "rest_api"}),
        rec(
            12,
            "task.finished",
            "worker",
            "r2",
            task_id="isolate",
            details={"state": "up_for_retry", "try_number": 1, "error_type": "ConnectorError"},
        ),
        rec(
            13,
            "task.finished",
            "worker",
            "r2",
            task_id="isolate",
            details={"state": "failed", "try_number": 2, "error_type": "ConnectorError"},
        ),
        rec(14, "run.finished", "scheduler", "r2", details={"state": "failed", "duration_seconds": 700.0}),
        rec(
            15,
            "run.triggered",
            "scheduler",
            "r3",
            dag_id="support_triage",
            domain="support",
            details={"how": "timetable"},
        ),
        rec(
            16,
            "run.finished",
            "scheduler",
            "r3",
            dag_id="support_triage",
            domain="support",
            details={"state": "success", "duration_seconds": 150.0},
        ),
        rec(17, "auth.login_refused", "mallory", None, subject="login"),
    ]


def page(records: list[dict[str, Any]] | None = None, **kwargs: Any) -> str:
    kwargs.setdefault("sla", SLA)
    kwargs.setdefault("display_name", "ACME Corp")
    kwargs.setdefault("generated_at", END)
    return report.render(
        mixed_month() if records is None else records, tenant="acme", start=START, end=END, **kwargs
    )


class Elements(HTMLParser):
    """The element names and the text of a page, as a browser's parser sees them."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str | None]] = []
        self.chunks: list[str] = []
        self.current = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs += attrs
        self.current = tag

    def handle_data(self, data: str) -> None:
        if self.current != "style":
            self.chunks.append(data)

    @property
    def text(self) -> str:
        return re.sub(r"\s+", " ", "".join(self.chunks))


def parse(html: str) -> Elements:
    parser = Elements()
    parser.feed(html)
    return parser


def test_summary_figures() -> None:
    text = parse(page()).text
    assert "3 workflow runs touched this tenant; 1 failed." in text
    assert (
        "1 approval asked: 1 approved, 0 rejected, 0 unanswered by the deadline; "
        "1 needed a reminder, 1 escalated." in text
    )
    assert "3 changes made: 1 on tickets, 2 in cloud or directory systems." in text
    assert "1 step retried" in text


def test_sla_figures_as_the_kpi_report_computes_them() -> None:
    runs, loose = report.runs_of(mixed_month())
    assert [r.run_id for r in runs] == ["r1", "r2", "r3"]
    assert [r["seq"] for r in loose] == [17]
    soc, support = report.sla_figures(runs, SLA, {})
    # soc: 300 s on time, 700 s late against 600 s; p50 of [300, 700] = 500, p95 = 680 (linear)
    assert (soc.domain, soc.finished, soc.on_time, soc.late, soc.p50_s, soc.p95_s) == (
        "soc",
        2,
        1,
        1,
        500.0,
        680.0,
    )
    assert (support.on_time, support.late, support.sla_s) == (0, 1, (120.0,))
    # a kind with no SLA is neither on time nor late
    (soc_infra, _) = report.sla_figures(runs, SLA, {"soc_contain_host": "infrastructure_change"})
    assert (soc_infra.on_time, soc_infra.late, soc_infra.no_sla) == (0, 0, 2)


def test_per_run_story_in_plain_words() -> None:
    text = parse(page()).text
    assert (
        "Started 2026-11-02 10:01 UTC by alice through the web interface, "
        "workflow code dags at version 3f2c9e1." in text
    )
    assert (
        "Asked 2026-11-03 10:02 UTC of soc_lead (notified: lead@secops.example); "
        "deadline 2026-11-02 11:00 UTC." in text
    )
    assert "Reminder sent 2026-11-04 10:03 UTC to lead@secops.example." in text
    assert "Escalated 2026-11-05 10:04 UTC to oncall@secops.example." in text
    assert "Approved 2026-11-06 10:05 UTC by bob, comment: “isolate it, confirmed with the customer”." in text
    assert "Answer confirmed with a one-time code (token TOTP0001)." in text
    assert "through the REST API" in text
    assert "through the schedule" in text
    assert f"approved plan SHA-256 {PLAN}" in text
    assert "entry 77 on ticket 42" in text
    assert "INC-r1" in text
    assert "step isolate will be retried, attempt 1 (ConnectorError)" in text
    assert "step isolate failed, attempt 2 (ConnectorError)" in text
    assert "auth.login_refused by mallory" in text
    assert "{" not in text, "no raw JSON in the page's text"


def test_a_timed_out_gate_shows_its_notice_and_the_steps_never_sent() -> None:
    """A gate whose escalation was missed (the triggerer not running from its time to the deadline):
    the timeout notice is not a reminder, the missed step is named, and the figures count neither a
    reminder nor an escalation."""
    gate = {"action": "isolate host", "gate_step": 1}
    records = [
        rec(1, "run.triggered", "alice", "r9", details={"how": "ui", "conf": {}}),
        rec(
            2,
            "approval.requested",
            "airflow",
            "r9",
            task_id="approve",
            details={"action": "isolate host", "step": 1},
        ),
        rec(
            3,
            "approval.escalated",
            "airflow",
            "r9",
            task_id="approve",
            details={**gate, "step": "timeout", "to": ["oncall@secops.example"]},
        ),
        rec(
            4,
            "approval.answered",
            "timeout",
            "r9",
            task_id="approve",
            details={
                "action": "isolate host",
                "step": 1,
                "outcome": "timed_out",
                "missed_steps": ["escalation"],
            },
        ),
    ]
    text = parse(page(records)).text
    assert "Timeout notice sent 2026-11-04 10:03 UTC to oncall@secops.example." in text
    assert "Never sent (the triggerer was not running from their time to the deadline): escalation." in text
    assert "Reminder sent" not in text
    assert "0 needed a reminder, 0 escalated." in text


def test_user_input_is_inert() -> None:
    records = mixed_month(comment=ATTACK)
    records[0]["details"]["conf"] = {"x": ATTACK}
    records[0]["actor"] = ATTACK
    records[6]["details"]["object_id"] = '"><script>alert(2)</script>'
    html = page(records, display_name=ATTACK)
    parsed = parse(html)
    assert "script" not in parsed.tags
    assert "img" not in parsed.tags
    assert not [name for name, _ in parsed.attrs if name.startswith("on")]
    assert "<script>document.title='pwned'</script>" in parsed.text  # shown as text, escaped
    assert "&lt;script&gt;" in html
    assert "Content-Security-Policy" in html
    assert "default-src 'none'" in html


def test_control_and_bidi_characters_cannot_hide_text() -> None:
    records = mixed_month(comment="ok\u202e\n<b>forged</b>")
    text = parse(page(records)).text
    assert "\u202e" not in text
    assert "\\u202e" in text
    assert "\\n" in text


def test_foreign_tenant_record_refused() -> None:
    records = mixed_month()
    records[4]["tenant"] = "globex"
    with pytest.raises(ValueError, match="record seq 5 belongs to another tenant"):
        page(records)


def test_domain_report_refuses_other_domains() -> None:
    with pytest.raises(ValueError, match="record seq 15 is of another domain"):
        page(domain="soc")
    html = page([r for r in mixed_month() if r["domain"] == "soc"], domain="soc")
    assert "area soc" in parse(html).text


def test_an_answer_whose_request_predates_the_period_counts_as_asked() -> None:
    records = [r for r in mixed_month() if r["kind"] != "approval.requested"]
    text = parse(page(records)).text
    assert "1 approval asked: 1 approved" in text


def test_period_of_instants_shows_seconds() -> None:
    start = datetime(2026, 11, 4, 14, 0, 5, tzinfo=UTC)
    html = report.render([], tenant="acme", start=start, end=END, sla=SLA, display_name="ACME Corp")
    assert "period from 2026-11-04 14:00:05 UTC up to 2026-12-01 00:00 UTC" in parse(html).text


def test_empty_period() -> None:
    text = parse(page([])).text
    assert "0 workflow runs touched this tenant" in text
    assert "0 approvals asked" in text
    assert "No workflow run touched this tenant in the period." in text


def test_plots_are_inline_svg() -> None:
    html = page()
    assert html.count("<svg") == 2
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in html


@pytest.mark.skipif(not chromium.BINARY.exists(), reason="Debian chromium is not installed")
def test_renders_in_headless_chromium(tmp_path: Path) -> None:
    source = tmp_path / "report.html"
    source.write_text(page(mixed_month(comment=ATTACK)), encoding="utf-8")
    shot = tmp_path / "report.png"
    common = [
        str(chromium.BINARY),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    dom = subprocess.run(
        [*common, "--dump-dom", source.as_uri()], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    assert "<title>Evidence report: ACME Corp" in dom, "the script in a comment must not have run"
    assert "pwned" not in dom.split("</title>")[0]
    for heading in ("Summary", "Service levels", "Runs", "1. soc_contain_host", "Approvals", "Changes made"):
        assert heading in dom
    subprocess.run(
        [*common, f"--screenshot={shot}", "--window-size=1100,1800", source.as_uri()],
        capture_output=True,
        timeout=120,
        check=True,
    )
    from PIL import Image

    with Image.open(shot) as image:
        grey = image.convert("L")
        colours = grey.getcolors(maxcolors=256 * 256) or []
        dark = sum(count for count, level in colours if isinstance(level, int) and level < 128)
        assert image.size == (1100, 1800)
        assert len(colours) > 10, "the screenshot is blank"
        assert dark > 1000, "the screenshot has no text"
