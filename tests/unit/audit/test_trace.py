"""``audit trace`` formatting without a database: sentences, sanitising, grouping, integrity."""

from __future__ import annotations

from typing import Any

import pytest

from include.audit.records import GENESIS_HASH, build_record
from include.audit.store import TraceMatch
from include.audit.trace import Trace, clean, describe, side_effect_target, tickets_of

AT = "2026-03-04T05:06:07.123456Z"


def _chain(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records as the store returns them (plain dicts, hashes linked)."""
    records, prev = [], GENESIS_HASH
    for seq, event in enumerate(events, start=1):
        record = build_record(event, seq=seq, at=AT, prev_hash=prev)
        records.append(record.to_dict())
        prev = record.hash
    return records


def _run(correlation_id: str = "corr-1", **fields: Any) -> dict[str, Any]:
    return {"correlation_id": correlation_id, "dag_id": "dag", "run_id": "run-1", "tenant": "acme", **fields}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("looks good", "looks good"),
        ("für prod", "für prod"),  # non-ASCII text stays readable
        ("a\nb\r\tc", "a\\nb\\r\\tc"),
        ("\x1b[2Jcleared", "\\x1b[2Jcleared"),  # a terminal escape cannot clear the screen
        ("evil\u202etxt.exe", "evil\\u202etxt.exe"),  # a bidi override cannot reorder the line
        ("one\u2028two", "one\\u2028two"),
        ("nul\x00", "nul\\x00"),
        ("private\U000f0000use", "private\\U000f0000use"),
        ({"b": 1, "a": [True, None]}, '{"a":[true,null],"b":1}'),
        (float("nan"), "nan"),
    ],
)
def test_clean_keeps_every_value_on_one_printable_line(value: Any, expected: str) -> None:
    assert clean(value) == expected


def test_clean_shortens_long_values() -> None:
    assert clean("x" * 500, 20) == "x" * 17 + "..."


@pytest.mark.parametrize(
    ("details", "expected"),
    [
        (
            {"system": "request_tracker", "operation": "create_ticket", "object_id": "42", "ticket_id": "42"},
            "ticket 42",
        ),
        (
            {"system": "request_tracker", "operation": "comment", "object_id": "7", "ticket_id": "42"},
            "entry 7 on ticket 42",
        ),
        ({"system": "jira", "operation": "create_ticket", "object_id": "OPS-7"}, "ticket OPS-7"),
        ({"system": "aws", "operation": "create_security_group", "object_id": "sg-1"}, "sg-1"),
        (
            {"system": "aws", "operation": "tag", "object_id": "sg-1", "ticket_id": "SEC-1"},
            "sg-1 on ticket SEC-1",
        ),
        ({"system": "terraform", "operation": "apply"}, "(no object id)"),
        ({"system": "jira", "operation": "comment", "ticket_id": "SEC-1"}, "(no object id) on ticket SEC-1"),
    ],
)
def test_side_effect_target(details: dict[str, Any], expected: str) -> None:
    assert side_effect_target(details) == expected


@pytest.mark.parametrize(
    "kind",
    [
        "run.triggered",
        "run.finished",
        "task.finished",
        "approval.requested",
        "approval.escalated",
        "approval.answered",
        "side_effect",
        "policy.violation",
        "something.new",
    ],
)
@pytest.mark.parametrize(
    "details",
    [
        {},
        {
            "step": [1],
            "steps": {"x": 1},
            "to": "not-a-list",
            "tasks": ["a"],
            "conf": "text",
            "map_index": True,
        },
        {"state": None, "duration_seconds": "soon", "try_number": None, "any_of": None, "created": "yes"},
        "not a JSON object",
        None,
    ],
)
def test_describe_never_fails_on_odd_details(kind: str, details: Any) -> None:
    sentence = describe({"kind": kind, "actor": "x", "task_id": None, "details": details})
    assert isinstance(sentence, str)
    assert sentence
    assert "\n" not in sentence
    if not isinstance(details, dict):
        assert sentence == "details unreadable: not a JSON object (see the integrity line)"


def test_a_story_of_odd_records_still_prints() -> None:
    odd = {"step": [1], "steps": {"n": 2}, "ticket_id": {"id": 1}, "system": "jira", "object_id": ["x"]}
    records = _chain(
        [
            _run(kind=kind, actor="x", task_id=None, details=odd)
            for kind in ("approval.requested", "approval.answered", "side_effect", "run.finished")
        ]
    )
    text = Trace("corr-1", [TraceMatch("correlation id", "corr-1", "dag", "run-1")], records).to_text()
    assert '  tickets: {"id":1}' in text.splitlines()
    assert text.splitlines()[-1].startswith("integrity: 4 records, own hashes OK")


def test_approval_answer_sentences() -> None:
    def answer(**details: Any) -> str:
        return describe({"kind": "approval.answered", "actor": "lead_bob", "details": details})

    assert (
        answer(action="a", step=1, steps=1, outcome="approved", option="Approve", comment="looks good")
        == 'approval answered: approved by lead_bob (step 1/1) "looks good"'
    )
    assert (
        answer(step=2, outcome="rejected", option="Reject", comment="")
        == "approval answered: rejected by lead_bob (step 2)"
    )
    assert (
        answer(step=1, outcome="approved", option="Approve with conditions")
        == "approval answered: approved by lead_bob (step 1), option Approve with conditions"
    )
    assert (
        answer(step=1, steps=2, outcome="timed_out")
        == "approval answered: timed out (step 1/2), no answer before the deadline"
    )
    assert answer(step=1, outcome="timed_out", missed_steps=["reminder", "escalation"]) == (
        "approval answered: timed out (step 1), no answer before the deadline; "
        "never sent (triggerer not running): reminder, escalation"
    )
    # A comment cannot add a line to the story.
    assert answer(outcome="approved", comment='ok"\n  #9  forged') == (
        'approval answered: approved by lead_bob "ok"\\n  #9  forged"'
    )


def test_story_groups_per_correlation_summarises_and_takes_steps_from_the_request() -> None:
    records = _chain(
        [
            _run(
                kind="run.triggered",
                actor="alice",
                details={"how": "ui", "bundle_name": "dags", "bundle_version": "v1", "ticket_id": "SEC-1"},
            ),
            _run(
                "corr-2",
                kind="run.triggered",
                actor="scheduler",
                run_id="run-2",
                details={"how": "timetable"},
            ),
            _run(
                kind="approval.requested",
                actor="airflow",
                task_id="gate",
                details={"action": "deploy", "step": 1, "steps": 2, "any_of": ["leads"], "deadline": "D"},
            ),
            _run(
                kind="approval.answered",
                actor="bob",
                task_id="gate",
                details={"action": "deploy", "step": 1, "outcome": "approved"},  # no "steps" here
            ),
            _run(
                kind="approval.requested",
                actor="airflow",
                task_id="gate2",
                details={"action": "deploy", "step": 2, "steps": 2, "any_of": ["cab"], "deadline": "D2"},
            ),
            _run(
                kind="side_effect",
                actor="worker",
                details={"system": "aws", "operation": "apply", "object_id": "sg-9", "created": True},
            ),
        ]
    )
    trace = Trace("SEC-1", [TraceMatch("ticket id", "corr-1", "dag", "run-1")], records)

    text = trace.to_text()
    lines = text.splitlines()
    assert lines[0] == "audit trace 'SEC-1': matched as ticket id; 2 correlation ids: corr-1, corr-2"
    assert [story.correlation_id for story in trace.stories()] == ["corr-1", "corr-2"]
    assert "  run dag/run-1: triggered by alice via ui, bundle dags version v1" in lines
    assert "  run dag/run-2: triggered by scheduler via timetable" in lines
    assert any(line.endswith("approval answered: approved by bob (step 1/2)") for line in lines)
    assert "      deploy step 1/2: approved by bob" in lines
    assert "      deploy step 2/2: no answer recorded (deadline D2)" in lines
    assert "      aws apply -> sg-9 (created)" in lines
    assert "    final state dag/run-1: not finished in this view (no run.finished record)" in lines
    assert lines[-1].startswith("integrity: 6 records, own hashes OK")


def test_integrity_names_records_whose_own_hash_does_not_match() -> None:
    records = _chain([_run(kind="task.finished", actor="worker", details={"state": "success"})] * 3)
    records[1] = {**records[1], "actor": "mallory"}
    records[2] = {**records[2], "details": '{"state":'}  # tampered into text that does not parse
    trace = Trace("corr-1", [TraceMatch("correlation id", "corr-1", "dag", "run-1")], records)

    assert trace.bad_hashes() == [2, 3]
    assert trace.integrity()["mismatched_seqs"] == [2, 3]
    lines = trace.to_text().splitlines()
    assert [line[:4] for line in lines if "#" in line[:4]] == ["  #1", " !#2", " !#3"]
    assert "details unreadable: not a JSON object" in next(line for line in lines if "#3" in line)
    assert lines[-1].startswith(
        "integrity: 3 records, 2 whose own hash does NOT match (altered after writing): seq 2, 3"
    )


def test_json_carries_the_records_unchanged() -> None:
    records = _chain([_run(kind="run.triggered", actor="alice", details={"how": "ui"})])
    document = Trace("corr-1", [TraceMatch("correlation id", "corr-1", "dag", "run-1")], records).to_json()
    assert document["records"] is records
    assert "message" not in document


def test_nothing_found() -> None:
    trace = Trace("SEC-9\n", [], [], tenant="acme")
    expected = (
        "no audit record matches 'SEC-9\\n' in tenant 'acme' "
        "(looked for correlation id, run id, ticket id, object id)"
    )
    assert trace.to_text() == expected
    assert trace.to_json()["message"] == expected
    assert not trace.found


def test_tickets_of() -> None:
    records = [
        {"kind": "run.triggered", "details": {"ticket_id": "SEC-1"}},
        {"kind": "side_effect", "details": {"system": "jira", "object_id": "OPS-2"}},
        {"kind": "side_effect", "details": {"system": "jira", "object_id": "10001", "ticket_id": "SEC-1"}},
        {"kind": "side_effect", "details": {"system": "aws", "object_id": "sg-1"}},
        {"kind": "side_effect", "details": "tampered"},
    ]
    assert tickets_of(records) == ["SEC-1", "OPS-2"]
