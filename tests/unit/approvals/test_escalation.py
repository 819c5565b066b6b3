"""Escalation widens who may answer: the time-gated ``after:`` entries (include/approvals/respondents.py),
the policy's escalation groups and their checks (include/policies/approvals.py), and what the gate writes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.sdk.exceptions import TaskDeferred

from include.approvals.respondents import (
    escalation_entry,
    escalation_respondents,
    escalation_time,
    may_answer,
    parse_escalation,
)
from include.policies.approvals import load_approvals

T = datetime(2026, 12, 7, 1, 30, 0, tzinfo=UTC)
ENTRY = "after:2026-12-07T01:30:00Z:role:security_officer"
ASKED = {"role:soc_lead", "role:soc_oncall", "not:dora", ENTRY}


# --------------------------------------------------------------------------------------------
# The entries


def test_the_escalation_time_is_rounded_up_to_the_second_never_down() -> None:
    assert escalation_time(T) == T
    assert escalation_time(T + timedelta(microseconds=1)) == T + timedelta(seconds=1)
    assert escalation_time(datetime(2026, 12, 7, 2, 30, tzinfo=UTC).astimezone()) == datetime(
        2026, 12, 7, 2, 30, tzinfo=UTC
    )
    with pytest.raises(ValueError, match="without a time zone"):
        escalation_time(datetime(2026, 12, 7, 1, 30))


def test_entries_round_trip() -> None:
    assert escalation_entry("security_officer", T - timedelta(microseconds=1)) == ENTRY
    assert parse_escalation(ENTRY) == (T, "security_officer")
    (respondent,) = escalation_respondents(["security_officer"], T)
    assert respondent["id"] == ENTRY
    assert "after escalation at 2026-12-07T01:30:00+00:00" in respondent["name"]
    with pytest.raises(ValueError, match="not a role name"):
        escalation_entry("Security Officer", T)


@pytest.mark.parametrize(
    ("now", "username", "roles", "allowed"),
    [
        pytest.param(T - timedelta(microseconds=1), "seb", {"security_officer"}, False, id="just-before"),
        pytest.param(T, "seb", {"security_officer"}, True, id="at-the-time"),
        pytest.param(T + timedelta(hours=1), "seb", {"security_officer"}, True, id="after"),
        pytest.param(None, "seb", {"security_officer"}, False, id="no-clock-fails-closed"),
        pytest.param(
            T + timedelta(hours=1), "dora", {"security_officer"}, False, id="trigger-stays-excluded"
        ),
        pytest.param(T + timedelta(hours=1), "hank", {"hr_lead"}, False, id="another-domains-group"),
        pytest.param(T + timedelta(hours=1), "ava", {"auditor"}, False, id="auditor"),
        pytest.param(T - timedelta(hours=1), "sam", {"soc_lead"}, True, id="regular-approver-any-time"),
    ],
)
def test_may_answer_honours_the_escalation_time(
    now: datetime | None, username: str, roles: set[str], allowed: bool
) -> None:
    assert may_answer(ASKED, user_id="9", username=username, roles=roles, now=now) is allowed


@pytest.mark.parametrize(
    "entry",
    [
        pytest.param("after:2026-12-07T01:30:00+00:00:role:security_officer", id="offset-not-z"),
        pytest.param("after:2026-12-07T01:30:00.5Z:role:security_officer", id="fractions"),
        pytest.param("after:2026-13-07T01:30:00Z:role:security_officer", id="month-13"),
        pytest.param("after:2026-12-07T01:30:00Z:security_officer", id="no-role-prefix"),
        pytest.param("after:2026-12-07T01:30:00Z:role:security_officer\n", id="trailing-newline"),
        pytest.param("after:٢٠٢٦-12-07T01:30:00Z:role:security_officer", id="non-ascii-digits"),
        pytest.param("after:2026-12-07T01:30:00Z:role:", id="no-role"),
        pytest.param("after::role:security_officer", id="no-time"),
        pytest.param("after:2026-12-07T01:30:00Z:role:security_officer:role:admin", id="two-roles"),
    ],
)
def test_a_malformed_entry_grants_nothing(entry: str) -> None:
    assert parse_escalation(entry) is None
    far = T + timedelta(days=3650)
    assert not may_answer(
        {entry}, user_id=entry, username="seb", roles={"security_officer", "admin"}, now=far
    )


# --------------------------------------------------------------------------------------------
# The policy


def test_soc_escalates_to_security_officers_who_get_the_escalation_mail() -> None:
    policy = load_approvals()
    for action in (
        "host-isolate",
        "identity-disable",
        "perimeter-block",
        "entra-user-disable",
        "entra-user-enable",
    ):
        rule = policy.rule("soc", action)
        assert rule.escalate_to == ("security_officer",)
        assert rule.ladder.escalate_to[-1] == policy.groups["security_officer"].email
    assert policy.rule("hr", "identity-disable").escalate_to == ()


@pytest.mark.parametrize(
    ("change", "problems"),
    [
        pytest.param(
            lambda d: d["actions"]["soc"]["host-isolate"].update({"escalate_to": ["ghost_team"]}),
            ["actions.soc.host-isolate.escalate_to.0: 'ghost_team' is not a declared group"],
            id="unknown-group",
        ),
        pytest.param(
            lambda d: d["actions"]["soc"]["host-isolate"].update({"escalate_to": ["finance_controller"]}),
            ["actions.soc.host-isolate.escalate_to.0: group 'finance_controller' does not approve in 'soc'"],
            id="group-of-another-domain",
        ),
        pytest.param(
            lambda d: d["actions"]["soc"]["host-isolate"].update({"escalate_to": ["soc_lead"]}),
            [
                "actions.soc.host-isolate.escalate_to.0: 'soc_lead' already answers a step of this action; "
                "an escalation group must be another group (four-eyes)"
            ],
            id="already-a-step-group",
        ),
        pytest.param(
            lambda d: d["actions"]["hr"]["identity-disable"].update({"escalate_to": ["security_officer"]}),
            [
                "actions.hr.identity-disable.escalate_to: escalation groups only on a one-step action: "
                "with 2 steps one escalation group could approve two of them (four-eyes)",
                "actions.hr.identity-disable.escalate_to.0: 'security_officer' already answers a step of "
                "this action; an escalation group must be another group (four-eyes)",
            ],
            id="multi-step-action",
        ),
        pytest.param(
            lambda d: d["actions"]["implementation"]["terraform-apply"].update({"escalate_to": ["soc_lead"]}),
            [
                "actions.implementation.terraform-apply.escalate_to: escalation groups only on a one-step "
                "action: with 2 steps one escalation group could approve two of them (four-eyes)",
                "actions.implementation.terraform-apply.escalate_to.0: group 'soc_lead' does not approve in "
                "'implementation'",
            ],
            id="destroy-steps-count-too",
        ),
        pytest.param(
            lambda d: d["actions"]["soc"]["host-isolate"].update({"escalate_to": ["Security Officer"]}),
            [
                "actions.soc.host-isolate.escalate_to.0: 'Security Officer' does not match "
                "'^[a-z][a-z0-9_]{2,63}$'"
            ],
            id="not-a-role-name",
        ),
    ],
)
def test_an_invalid_escalation_is_refused_naming_the_key(
    approvals_problems: Any, change: Any, problems: list[str]
) -> None:
    reported = approvals_problems(change)
    for problem in problems:
        assert problem in reported


# --------------------------------------------------------------------------------------------
# The gate


def _ask(monkeypatch: pytest.MonkeyPatch, *, drill: bool, answer: dict[str, Any] | None = None) -> Any:
    from include.operators import approval as module
    from include.workflows.approval import approval_gate
    from tests.unit.approvals.test_drill import _dag_with

    upserts: list[dict[str, Any]] = []
    audited: list[dict[str, Any]] = []
    monkeypatch.setattr(module, "upsert_hitl_detail", lambda **kwargs: upserts.append(kwargs))
    monkeypatch.setattr(module, "send_email", lambda to, subject, html, **kw: {"to": to})
    monkeypatch.setattr(module, "task_event", lambda context, kind, **kwargs: {"kind": kind, **kwargs})
    monkeypatch.setattr(module, "audit_emit", audited.append)
    dag = _dag_with(lambda: approval_gate("host-isolate", subject="Isolate", body="Isolate web-01"))
    gate = dag.get_task("approve_host_isolate")
    ti = SimpleNamespace(
        id="0190d8a1-0000-7000-8000-000000000000",
        dag_id=dag.dag_id,
        run_id="manual__1",
        task_id=gate.task_id,
        map_index=-1,
        xcom_push=lambda **kwargs: None,
        xcom_pull=lambda **kwargs: [],
    )
    context = {
        "ti": ti,
        "task": gate,
        "dag_run": SimpleNamespace(triggering_user_name="lea", conf={}),
        "params": {"host": "web-01", "approval_drill": drill},
        "run_id": "manual__1",
    }
    with pytest.raises(TaskDeferred) as deferred:
        gate.execute(context)
    return SimpleNamespace(
        gate=gate, context=context, deferred=deferred.value, upserts=upserts, audited=audited
    )


@pytest.mark.parametrize("drill", [False, True], ids=["policy-ladder", "drill-ladder"])
def test_the_gate_asks_the_escalation_group_from_request_time_plus_escalate_after(
    monkeypatch: pytest.MonkeyPatch, drill: bool
) -> None:
    from include.operators.approval import RequestFacts

    asked = _ask(monkeypatch, drill=drill)
    facts = RequestFacts.from_dict(asked.deferred.kwargs["facts"])
    escalate_after = timedelta(seconds=20) if drill else timedelta(minutes=10)
    assert facts.escalate_at == facts.requested_at + escalate_after
    (upsert,) = asked.upserts
    ids = [user["id"] for user in upsert["assigned_users"]]
    assert ids == [
        "role:soc_lead",
        "role:soc_oncall",
        "not:lea",
        escalation_entry("security_officer", facts.requested_at + escalate_after),
    ]
    assert "security-officer@secops.example" in facts.escalate_to  # the group's mail at escalation


@pytest.mark.parametrize(
    ("after", "expected"),
    [(timedelta(seconds=-1), False), (timedelta(seconds=1), True)],
    ids=["before", "after"],
)
def test_the_answer_record_says_whether_it_came_after_escalation(
    monkeypatch: pytest.MonkeyPatch, after: timedelta, expected: bool
) -> None:
    from include.operators.approval import RequestFacts

    asked = _ask(monkeypatch, drill=True)
    facts = asked.deferred.kwargs["facts"]
    opened = escalation_time(RequestFacts.from_dict(facts).escalate_at)
    monkeypatch.setattr(asked.gate, "skip", lambda **kwargs: None)
    event = {
        "chosen_options": ["Approve"],
        "responded_by_user": {"id": "4", "name": "seb"},
        "responded_at": opened + after,
        "params_input": {"comment": "on call did not answer"},
    }
    asked.gate.execute_complete(asked.context, event, facts=facts)
    answered = asked.audited[-1]
    assert (answered["kind"], answered["actor"]) == ("approval.answered", "seb")
    assert answered["details"]["after_escalation"] is expected
    assert answered["details"]["escalation_groups"] == ["security_officer"]
    assert answered["details"]["escalated_at"] == opened.isoformat()
