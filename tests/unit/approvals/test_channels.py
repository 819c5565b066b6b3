"""What the approval channels send where (include/approvals/channels.py), without a network: the
hooks are replaced by recorders; the wire contract is tests/integration/connectors/test_teams_pagerduty.py."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from include.approvals import channels
from include.approvals.messages import RequestFacts
from include.connectors.errors import RetryBudgetExhausted
from include.connectors.pagerduty import PagerDutyEventsHook
from include.connectors.teams import TeamsWebhookHook

T0 = datetime(2026, 5, 4, 10, 0, tzinfo=UTC)
TARGET = {
    "dag_id": "soc_contain_host",
    "run_id": "manual__2026-05-04T10:00:00+00:00",
    "task_id": "approve",
    "map_index": -1,
}
SECRET = "/workflows/5f2b0c1e9d7a4b3c8e6f/triggers/manual/paths/invoke?sig=TOPSECRETSIG"
LOG = logging.getLogger("tests.channels")


def facts(domain: str = "soc", **changes: Any) -> RequestFacts:
    values: dict[str, Any] = {
        "domain": domain,
        "action": "isolate_host",
        "subject": "Isolate ws-001 for tenant acme",
        "body": "EDR alert 4711: ransomware behaviour on ws-001.",
        "step": 1,
        "steps": 1,
        "approver_roles": ["soc_approver"],
        "excluded": ["alice"],
        "triggered_by": "alice",
        "correlation_id": "corr-123",
        "run_url": "http://airflow.example/dags/soc_contain_host/runs/r1",
        "answer_url": "http://airflow.example/dags/soc_contain_host/runs/r1/tasks/approve/required_actions",
        "requested_at": T0,
        "remind_at": T0 + timedelta(minutes=5),
        "escalate_at": T0 + timedelta(minutes=10),
        "deadline": T0 + timedelta(minutes=15),
        "escalate_to": ["soc-leads@secops.example"],
    }
    values.update(changes)
    return RequestFacts(**values)


class Sent:
    def __init__(self) -> None:
        self.cards: list[tuple[str, dict[str, Any]]] = []
        self.events: list[tuple[str, str, str, dict[str, Any]]] = []
        self.fail_teams: Exception | None = None
        self.audit: list[dict[str, Any]] = []
        self.metrics: list[tuple[str, dict[str, Any]]] = []


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> Sent:
    record = Sent()

    def post_card(self: TeamsWebhookHook, card: dict[str, Any]) -> int:
        # What the real hook has cached after a lookup: the connection with its secret path.
        self.__dict__["connection"] = type("C", (), {"password": SECRET})()
        if record.fail_teams is not None:
            raise record.fail_teams
        record.cards.append((self.conn_id, card))
        return 202

    def send_event(self: PagerDutyEventsHook, action: str, key: str, **fields: Any) -> str:
        record.events.append((self.conn_id, action, key, fields))
        return key

    class Client:
        def incr(self, name: str, tags: dict[str, Any], count: int = 1) -> None:
            record.metrics.append((name, tags))

    monkeypatch.setattr(TeamsWebhookHook, "post_card", post_card)
    monkeypatch.setattr(PagerDutyEventsHook, "send_event", send_event)
    monkeypatch.setattr("include.audit.emit.emit", lambda fields, **_: record.audit.append(dict(fields)))
    monkeypatch.setattr("include.metrics.statsd.configured_client", lambda: Client())
    return record


def texts(card: dict[str, Any]) -> str:
    parts = [b.get("text", "") for b in card["body"]]
    parts += [
        f"{f['title']}={f['value']}" for b in card["body"] if b["type"] == "FactSet" for f in b["facts"]
    ]
    parts += [a["url"] for a in card.get("actions", [])]
    return "\n".join(parts)


def test_request_card_holds_question_deadline_and_deep_link() -> None:
    card = channels.teams_card("requested", facts(), T0)
    text = texts(card)
    assert card["type"] == "AdaptiveCard"
    assert "Isolate ws-001 for tenant acme" in text
    assert "2026-05-04 10:15:00 UTC" in text  # the deadline
    assert "2026-05-04 10:10:00 UTC" in text  # when it escalates
    answer = [a for a in card["actions"] if a["title"] == "Answer the request"]
    assert answer[0]["url"].endswith("/tasks/approve/required_actions")


def test_outcome_card_has_no_answer_button_and_says_who() -> None:
    card = channels.teams_card("answered", facts(), T0, outcome={"approved": True, "responded_by": "bob"})
    assert "Approved by bob" in card["body"][0]["text"]
    assert [a["title"] for a in card["actions"]] == ["Open the run"]
    rejected = channels.teams_card("timed_out", facts(drill=True), T0)
    assert rejected["body"][0]["text"].startswith("[DRILL] Timed out, rejected")


def test_relative_links_are_text_not_buttons() -> None:
    card = channels.teams_card(
        "requested", facts(answer_url="/dags/x/required_actions", run_url="/dags/x"), T0
    )
    assert "actions" not in card
    assert "/dags/x/required_actions" in texts(card)


def test_dedup_key_is_per_gate_and_bounded() -> None:
    assert channels.dedup_key(TARGET) == channels.dedup_key(dict(TARGET))
    assert channels.dedup_key(TARGET) != channels.dedup_key({**TARGET, "map_index": 0})
    long = channels.dedup_key({**TARGET, "run_id": "r" * 400})
    assert len(long) <= 255
    assert long.startswith("approval/sha256/")


@pytest.mark.parametrize(
    ("stage", "escalated", "actions"),
    [
        ("requested", False, []),
        ("reminder", False, []),
        ("escalation", False, ["trigger"]),
        ("answered", True, ["resolve"]),
        ("timed_out", True, ["resolve"]),
        ("answered", False, []),  # never paged: nothing to resolve
    ],
)
def test_soc_stage_routing(sent: Sent, stage: Any, escalated: bool, actions: list[str]) -> None:
    result = channels.notify(
        stage, facts(), target=TARGET, tenant="acme", log=LOG, now=T0, escalated=escalated
    )
    assert [conn for conn, _ in sent.cards] == ["teams_soc"]
    assert [action for _, action, _, _ in sent.events] == actions
    assert all(key == channels.dedup_key(TARGET) for _, _, key, _ in sent.events)
    assert result["teams"] == {"conn_id": "teams_soc", "status": 202, "retries": 0}
    assert ("pagerduty" in result) == bool(actions)
    assert not sent.audit


def test_page_says_what_and_where(sent: Sent) -> None:
    channels.notify("escalation", facts(), target=TARGET, tenant="acme", log=LOG, now=T0)
    (_, _, _, fields) = sent.events[0]
    assert fields["severity"] == "critical"
    assert "isolate_host" in fields["summary"]
    assert fields["custom_details"]["answer_url"].endswith("/required_actions")
    channels.notify("escalation", facts(drill=True), target=TARGET, tenant="acme", log=LOG, now=T0)
    assert sent.events[1][3]["severity"] == "info"
    assert sent.events[1][3]["summary"].startswith("[DRILL]")


def test_a_domain_without_pagerduty_is_never_paged(sent: Sent) -> None:
    channels.notify("escalation", facts("hr"), target=TARGET, tenant="acme", log=LOG, now=T0)
    assert [conn for conn, _ in sent.cards] == ["teams_hr"]
    assert sent.events == []


def test_failure_is_recorded_not_raised_and_names_no_secret(
    sent: Sent, caplog: pytest.LogCaptureFixture
) -> None:
    sent.fail_teams = RetryBudgetExhausted(
        f"teams post_card: gave up; last: POST {SECRET} -> HTTP 503",
        system="teams",
        operation="post_card",
        attempts=3,
    )
    with caplog.at_level(logging.WARNING, logger=LOG.name):
        result = channels.notify("requested", facts(), target=TARGET, tenant="acme", log=LOG, now=T0)
    assert "error" in result["teams"]
    assert "RetryBudgetExhausted" in result["teams"]["error"]
    assert "TOPSECRETSIG" not in repr(result)
    assert "TOPSECRETSIG" not in caplog.text
    (record,) = sent.audit
    assert record["kind"] == "notification.failed"
    assert record["details"]["channel"] == "teams"
    assert record["details"]["stage"] == "requested"
    assert "TOPSECRETSIG" not in repr(record)
    assert (
        "notification.failed",
        {"domain": "soc", "channel": "teams", "stage": "requested", "tenant": "acme"},
    ) in sent.metrics


def test_an_unexpected_error_keeps_only_its_class(sent: Sent) -> None:
    sent.fail_teams = ValueError(f"Invalid URL http://x{SECRET}")
    result = channels.notify("reminder", facts(), target=TARGET, tenant=None, log=LOG, now=T0)
    assert result["teams"]["error"] == "ValueError"


def test_notify_never_raises_on_unknown_domain(sent: Sent) -> None:
    assert channels.notify("requested", facts("nope"), target=TARGET, tenant=None, log=LOG, now=T0) == {}


def test_post_domain_card_for_other_senders(sent: Sent) -> None:
    card = channels.text_card("SLA digest: 3 late runs", ["run a 2m late"], links={"Runs": "http://x/runs"})
    assert channels.post_domain_card("support", card, what="sla_digest", log=LOG) == {
        "conn_id": "teams_support",
        "status": 202,
        "retries": 0,
    }
    assert sent.cards == [("teams_support", card)]
    sent.fail_teams = RuntimeError("down")
    failed = channels.post_domain_card("support", card, what="sla_digest", log=LOG, tenant="acme")
    assert failed is not None
    assert failed["error"] == "RuntimeError"
    assert [(r["kind"], r["details"]["stage"]) for r in sent.audit] == [("notification.failed", "sla_digest")]
