"""Approval policy, who may answer, what requests and alerts say, and the ladder trigger."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from include.approvals import messages
from include.approvals.messages import RequestFacts
from include.approvals.respondents import assigned_respondents, may_answer
from include.policies.approvals import Ladder, load_approvals
from include.policies.loader import PolicyError
from include.workflows.alerts import SlaMissNotifier

T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


# --------------------------------------------------------------------------------------------
# The approval policy


def test_deployed_policy_rules():
    policy = load_approvals()
    soc = policy.rule("soc", "host-isolate")
    assert [step.any_of for step in soc.steps] == [("soc_lead", "soc_oncall")]
    assert soc.steps[0].emails == ("soc-lead@secops.example", "soc-oncall@secops.example")
    assert soc.ladder == Ladder(
        timedelta(minutes=5),
        timedelta(minutes=10),
        timedelta(minutes=15),
        # The domain's addresses, then the escalation group's (security_officer's email).
        ("soc-oncall@secops.example", "soc-lead@secops.example", "security-officer@secops.example"),
    )
    assert soc.escalate_to == ("security_officer",)
    hr = policy.rule("hr", "identity-disable")
    assert [step.any_of for step in hr.steps] == [("hr_lead",), ("security_officer",)]
    assert hr.steps_for(destructive=True) == hr.steps  # no destroy_steps: the same either way
    terraform = policy.rule("implementation", "terraform-apply")
    assert [s.any_of for s in terraform.steps_for(destructive=False)] == [("cloud_lead",)]
    assert [s.any_of for s in terraform.steps_for(destructive=True)] == [
        ("cloud_lead",),
        ("security_officer",),
    ]
    assert terraform.max_steps == 2
    onboarding = policy.rule("hr", "identity-admin")
    assert [s.any_of for s in onboarding.steps_for(destructive=False)] == [("hr_lead",)]
    assert [s.any_of for s in onboarding.steps_for(destructive=False, privileged=True)] == [
        ("hr_lead",),
        ("security_officer",),
    ]
    assert (onboarding.max_steps, onboarding.conditional) == (2, True)
    assert not policy.rule("soc", "host-isolate").conditional


def test_a_destructive_change_asks_the_destroy_steps_even_when_also_privileged():
    terraform = load_approvals().rule("implementation", "terraform-apply")
    assert terraform.steps_for(destructive=True, privileged=True) == terraform.destroy_steps
    assert terraform.steps_for(destructive=False, privileged=True) == terraform.steps  # none declared


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        pytest.param(
            lambda d: d["actions"]["soc"]["host-isolate"]["steps"][0]["any_of"].append("hr_lead"),
            "actions.soc.host-isolate.steps.0.any_of.2: group 'hr_lead' does not approve in 'soc'",
            id="group-of-another-domain",
        ),
        pytest.param(
            lambda d: d["actions"]["soc"]["host-isolate"]["steps"][0]["any_of"].append("ghost_team"),
            "actions.soc.host-isolate.steps.0.any_of.2: 'ghost_team' is not a declared group",
            id="unknown-group",
        ),
        pytest.param(
            lambda d: d["actions"]["soc"].update({"invoice-post": {"steps": [{"any_of": ["soc_lead"]}]}}),
            "actions.soc.invoice-post: capability 'invoice-post' is not granted to domain 'soc'",
            id="capability-not-granted",
        ),
        pytest.param(
            lambda d: d["actions"]["soc"]["host-isolate"].update({"timeout": "1h"}),
            "actions.soc.host-isolate: timeout 1:00:00 is longer than the policy's 0:15:00: "
            "a workflow may tighten its approval ladder, never loosen it",
            id="loosened-ladder",
        ),
        pytest.param(
            lambda d: d["actions"]["soc"].pop("host-isolate"),
            "actions.soc: privileged capability 'host-isolate' is granted to 'soc' "
            "but has no approval rule there",
            id="privileged-without-rule",
        ),
        pytest.param(
            lambda d: d["groups"].update({"soc_operator": d["groups"]["soc_lead"]}),
            "groups.soc_operator: the name is already a domain or platform role; pick another",
            id="group-shadows-a-domain-role",
        ),
        pytest.param(
            lambda d: d["actions"]["implementation"]["terraform-apply"]["destroy_steps"].append(
                {"any_of": ["soc_oncall"]}
            ),
            "actions.implementation.terraform-apply.destroy_steps.2.any_of.0: "
            "group 'soc_oncall' does not approve in 'implementation'",
            id="destroy-step-of-another-domain",
        ),
        pytest.param(
            lambda d: d["actions"]["soc"]["host-isolate"].update({"steps": []}),
            "actions.soc.host-isolate.steps: [] should be non-empty",
            id="no-steps",
        ),
    ],
)
def test_invalid_policy_is_refused_with_the_key_path(approvals_problems, change, problem):
    assert problem in approvals_problems(change)


def test_unknown_action_names_what_is_declared():
    with pytest.raises(PolicyError, match=r"no approval rule for action 'host-isolate' in domain 'support'"):
        load_approvals().rule("support", "host-isolate")


def test_ladder_may_only_tighten():
    ladder = load_approvals().rule("soc", "host-isolate").ladder
    tight = ladder.tightened(remind_after=timedelta(seconds=8), escalate_after=timedelta(seconds=16))
    assert (tight.remind_after, tight.escalate_after, tight.timeout) == (
        timedelta(seconds=8),
        timedelta(seconds=16),
        timedelta(minutes=15),
    )
    with pytest.raises(ValueError, match="timeout 1 day, 0:00:00 is longer than the policy's 0:15:00"):
        ladder.tightened(timeout=timedelta(days=1))
    with pytest.raises(ValueError, match="escalation ladder out of order"):
        ladder.tightened(escalate_after=timedelta(minutes=2))
    with pytest.raises(ValueError, match="unknown ladder step"):
        ladder.tightened(snooze=timedelta(seconds=1))


# --------------------------------------------------------------------------------------------
# Who may answer


def test_assigned_respondents_are_roles_and_exclusions():
    assert assigned_respondents(["soc_lead", "soc_oncall"], ["lea", None, "lea"]) == [
        {"id": "role:soc_lead", "name": "any member of soc_lead"},
        {"id": "role:soc_oncall", "name": "any member of soc_oncall"},
        {"id": "not:lea", "name": "not lea (four-eyes)"},
    ]
    with pytest.raises(ValueError, match="at least one approver role"):
        assigned_respondents([], [])


ASSIGNED = {"role:soc_lead", "role:soc_oncall", "not:lea"}


@pytest.mark.parametrize(
    ("username", "user_id", "roles", "allowed"),
    [
        pytest.param("sam", "3", {"soc_lead"}, True, id="approver-role"),
        pytest.param("omar", "4", {"soc_oncall", "viewer"}, True, id="other-approver-role"),
        pytest.param("lea", "2", {"soc_lead", "soc_operator"}, False, id="triggering-user"),
        pytest.param("hank", "5", {"hr_lead"}, False, id="other-domain"),
        pytest.param("admin", "1", {"Admin"}, False, id="admin-is-not-an-approver"),
        pytest.param("nobody", "9", set(), False, id="no-roles"),
    ],
)
def test_may_answer(username, user_id, roles, allowed):
    assert may_answer(ASSIGNED, user_id=user_id, username=username, roles=roles) is allowed


def test_plain_user_ids_still_work():
    assert may_answer({"7"}, user_id="7", username="x", roles=set())
    assert not may_answer({"7", "not:x"}, user_id="7", username="x", roles=set())


# --------------------------------------------------------------------------------------------
# What requests and emails say


def facts(**overrides: Any) -> RequestFacts:
    values: dict[str, Any] = {
        "domain": "soc",
        "action": "host-isolate",
        "subject": "Isolate ws-0042",
        "body": "Isolate host **ws-0042** of tenant **acme**.",
        "step": 1,
        "steps": 1,
        "approver_roles": ["soc_lead", "soc_oncall"],
        "excluded": ["lea"],
        "triggered_by": "lea",
        "correlation_id": "corr-123",
        "run_url": "http://127.0.0.1:8080/dags/d/runs/r",
        "answer_url": "http://127.0.0.1:8080/dags/d/runs/r/tasks/t/required_actions",
        "requested_at": T0,
        "remind_at": T0 + timedelta(minutes=5),
        "escalate_at": T0 + timedelta(minutes=10),
        "deadline": T0 + timedelta(minutes=15),
        "escalate_to": ["soc-lead@secops.example"],
    }
    return RequestFacts(**{**values, **overrides})


def test_facts_survive_the_trip_through_trigger_kwargs():
    original = facts()
    assert RequestFacts.from_dict(original.as_dict()) == original


def test_request_body_says_what_who_and_when():
    body = messages.request_body(facts())
    assert body.startswith("Isolate host **ws-0042** of tenant **acme**.")
    assert "**Correlation id:** `corr-123`" in body
    assert "**Triggered by:** lea" in body
    assert "any member of soc_lead, soc_oncall; not lea (four-eyes)" in body
    assert "**No answer by 2026-11-28 12:15:00 UTC = Reject**" in body


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (59, "59s"), (61, "1m 01s"), (3725, "1h 02m 05s"), (-5, "0s")],
)
def test_waited(seconds, text):
    assert messages.waited(T0, T0 + timedelta(seconds=seconds)) == text


def test_ladder_emails_say_how_long_and_what_comes_next():
    subject, html = messages.reminder_email(facts(), T0 + timedelta(minutes=5, seconds=2))
    assert subject == "[Reminder][soc] host-isolate waiting 5m 02s for approval: Isolate ws-0042"
    assert "Escalation at 2026-11-28 12:10:00 UTC" in html
    subject, html = messages.escalation_email(facts(), T0 + timedelta(minutes=10))
    assert subject == "[Escalation][soc] host-isolate unanswered for 10m 00s: Isolate ws-0042"
    subject, html = messages.timeout_email(facts(), ["isolate_host"])
    assert subject == "[Approval timed out][soc] host-isolate rejected (fail-safe): Isolate ws-0042"
    assert "No answer within 15m 00s" in html
    assert "Skipped, not executed: isolate_host." in html
    assert "corr-123" in html


def test_html_escapes_what_users_typed():
    _, html = messages.request_email(facts(subject="<script>x</script>"))
    assert "<script>" not in html
    assert "&lt;script&gt;" in html


# --------------------------------------------------------------------------------------------
# SLA miss email


def test_sla_miss_email_says_which_run_how_late_and_links_it():
    notifier = SlaMissNotifier(
        to=["soc-alerts@secops.example"],
        from_email="orchestrator@secops.example",
        smtp_conn_id="smtp_alerts",
        domain="soc",
        kind="fast_path",
        sla_seconds=300,
        base_url="http://127.0.0.1:8080/",
    )
    context = {
        "dag_run": {
            "dag_id": "soc_isolate_host",
            "dag_run_id": "manual__1",
            "state": "running",
            "queued_at": "2026-11-28T12:00:00Z",
            "conf": {"correlation_id": "corr-77"},
        },
        "deadline": {"id": "d-1", "deadline_time": T0 + timedelta(minutes=5)},
    }
    notifier.compose(context, T0 + timedelta(minutes=5, seconds=3))
    assert (
        notifier.subject
        == "[SLA miss][soc] soc_isolate_host run manual__1 exceeded its fast path SLA of 0:05:00"
    )
    assert "<th align='left'>Late by</th><td>3s</td>" in notifier.html_content
    assert "<th align='left'>Running for</th><td>5m 03s</td>" in notifier.html_content
    assert "corr-77" in notifier.html_content
    assert 'href="http://127.0.0.1:8080/dags/soc_isolate_host/runs/manual__1"' in notifier.html_content
    assert notifier.custom_headers["Message-ID"] == "<sla-miss-d-1@orchestrator.secops.example>"


# --------------------------------------------------------------------------------------------
# The ladder trigger (side effects replaced; the timing logic is what is under test)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    async def sleep(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def ladder_trigger(monkeypatch):
    from include.triggers import approval as module

    clock = Clock()
    sent: list[tuple[str, list[str]]] = []
    stored: list[list[dict]] = []

    async def fake_send(to, subject, html, **kwargs):
        sent.append((subject.split("]")[0] + "]", list(to)))
        return {"to": list(to), "subject": subject}

    monkeypatch.setattr(module, "utcnow", lambda: clock.now)
    monkeypatch.setattr(module.asyncio, "sleep", clock.sleep)
    monkeypatch.setattr(module, "asend_email", fake_send)

    def build(recorded: list[dict] | None = None, answer_at: datetime | None = None):
        trigger = module.ApprovalLadderTrigger(
            ti_id="0190d8a1-0000-7000-8000-000000000000",
            options=["Approve", "Reject"],
            params={},
            defaults=["Reject"],
            timeout_datetime=T0 + timedelta(minutes=15),
            poke_interval=5.0,
            facts=facts().as_dict(),
            approver_emails=["soc-lead@secops.example", "soc-oncall@secops.example"],
            target={"dag_id": "d", "run_id": "r", "task_id": "t", "map_index": -1},
        )

        async def recorded_steps():
            return list(recorded or [])

        async def record(ladder, entry):
            ladder.append(entry)
            stored.append(list(ladder))

        async def response():
            if answer_at is not None and clock.now >= answer_at:
                return "answered"
            return None

        async def timeout():
            return "timed out"

        async def save(ladder):
            stored.append(list(ladder))

        trigger._recorded = recorded_steps
        trigger._record = record
        trigger._save = save
        trigger._handle_response = response
        trigger._handle_timeout = timeout
        return trigger

    return build, sent, stored, clock


def events_of(trigger) -> list[Any]:
    async def collect():
        return [event async for event in trigger.run()]

    return asyncio.run(collect())


def test_nobody_answers_reminder_then_escalation_then_timeout(ladder_trigger):
    build, sent, stored, clock = ladder_trigger
    assert events_of(build()) == ["timed out"]
    assert sent == [
        ("[Reminder]", ["soc-lead@secops.example", "soc-oncall@secops.example"]),
        ("[Escalation]", ["soc-lead@secops.example"]),
    ]
    assert [entry["step"] for entry in stored[-1]] == ["reminder", "escalation"]
    assert clock.now >= T0 + timedelta(minutes=15)


def test_an_answer_stops_the_ladder(ladder_trigger):
    build, sent, _, _ = ladder_trigger
    assert events_of(build(answer_at=T0 + timedelta(minutes=7))) == ["answered"]
    assert [kind for kind, _ in sent] == ["[Reminder]"]


def test_a_restarted_trigger_does_not_send_a_step_twice(ladder_trigger):
    build, sent, _, _ = ladder_trigger
    events_of(build(recorded=[{"step": "requested"}, {"step": "reminder"}]))
    assert [kind for kind, _ in sent] == ["[Escalation]"]


def test_a_trigger_back_after_the_deadline_rejects_and_records_the_missed_steps(ladder_trigger, monkeypatch):
    """The triggerer was down (or stalled) from before the reminder until past the deadline: the
    restarted trigger applies the fail-safe reject at once and sends no reminder or escalation that
    could no longer be answered; both are recorded as missed, with the time they were due."""
    from include.triggers import approval as module

    build, sent, stored, clock = ladder_trigger
    clock.now = T0 + timedelta(minutes=20)
    cards: list[str] = []

    async def card(stage, facts, **kwargs):
        cards.append(stage)
        return {}

    monkeypatch.setattr(module, "anotify_channels", card)
    assert events_of(build(recorded=[{"step": "requested"}])) == ["timed out"]
    assert sent == []
    assert cards == []  # no request card for a request already rejected
    assert stored[-1][1:] == [
        {
            "step": "reminder_missed",
            "due": (T0 + timedelta(minutes=5)).isoformat(),
            "at": clock.now.isoformat(),
        },
        {
            "step": "escalation_missed",
            "due": (T0 + timedelta(minutes=10)).isoformat(),
            "at": clock.now.isoformat(),
        },
    ]
    assert messages.missed_steps(stored[-1]) == [
        ("reminder", T0 + timedelta(minutes=5)),
        ("escalation", T0 + timedelta(minutes=10)),
    ]


def test_a_trigger_back_before_the_deadline_sends_the_overdue_steps(ladder_trigger):
    """Back after the escalation's time but before the deadline: the overdue steps are sent at once
    (late, but still useful), nothing is recorded as missed."""
    build, sent, stored, clock = ladder_trigger
    clock.now = T0 + timedelta(minutes=12)
    assert events_of(build(recorded=[{"step": "requested"}])) == ["timed out"]
    assert [kind for kind, _ in sent] == ["[Reminder]", "[Escalation]"]
    assert [entry["step"] for entry in stored[-1]] == ["requested", "reminder", "escalation"]


def test_the_timeout_notice_names_the_missed_steps():
    missed = [("escalation", T0 + timedelta(minutes=10))]
    _, html = messages.timeout_email(facts(), ["isolate_host"], missed)
    assert "Not sent: the escalation (due 2026-11-28 12:10:00 UTC)" in html
    assert "(the triggerer down or stalled); check the triggerer." in html
    assert "Not sent" not in messages.timeout_email(facts(), ["isolate_host"])[1]
    # only well-formed missed entries count; a sent step is not missed
    assert messages.missed_steps([{"step": "escalation"}, {"step": "reminder_missed"}]) == []
