"""The answer's Teams card and PagerDuty resolve are not on the way from the answer to the privileged
step: ``execute_complete`` decides and records without any network call; the gate's
``on_success_callback`` (:func:`include.operators.approval.announce_outcome`), which the task runner
runs after it has reported the gate's success, sends them. End to end (the card and the resolve
arrive): tests/e2e/test_approval_channels.py."""

from __future__ import annotations

import socket
from datetime import datetime
from typing import Any

import pytest

from include.approvals.messages import RequestFacts
from include.operators import approval as module
from include.operators.approval import announce_outcome
from tests.unit.approvals.test_escalation import _ask


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every connect attempt (HTTP, a connection lookup over the API, SMTP) is recorded and refused."""
    attempts: list[Any] = []

    def refuse(self: socket.socket, address: Any) -> None:
        attempts.append(address)
        raise ConnectionRefusedError(f"no network in this test: {address}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    return attempts


@pytest.fixture
def notified(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(module, "notify_channels", lambda **kw: calls.append(kw))
    return calls


def _answer(monkeypatch: pytest.MonkeyPatch, ladder: list[dict[str, Any]], event: dict[str, Any]) -> Any:
    asked = _ask(monkeypatch, drill=False)
    asked.context["ti"].xcom_pull = lambda **kwargs: ladder
    monkeypatch.setattr(asked.gate, "skip", lambda **kwargs: None)
    pushed: list[Any] = []
    asked.context["ti"].xcom_push = lambda **kwargs: pushed.append(kwargs)
    asked.record = lambda: asked.gate.execute_complete(
        asked.context, event, facts=asked.deferred.kwargs["facts"]
    )
    asked.pushed = pushed
    return asked


def test_execute_complete_makes_no_network_call_and_leaves_the_outcome_to_the_callback(
    monkeypatch: pytest.MonkeyPatch, no_network: list[Any]
) -> None:
    # Every hook's connection points at 127.0.0.1:9: a post, had one been made, is a connect attempt.
    import json

    from airflow.sdk import Connection

    from include.connectors.base import ConnectorHook

    local = Connection(
        conn_id="any",
        conn_type="http",
        host="http://127.0.0.1:9",
        password="/webhookb2/token",
        extra=json.dumps({"retry_max_attempts": 1}),
    )
    monkeypatch.setattr(ConnectorHook, "get_connection", classmethod(lambda cls, conn_id: local))
    monkeypatch.setattr("include.audit.emit.emit", lambda fields, **_: None)
    event = {
        "chosen_options": ["Approve"],
        "responded_by_user": {"id": "4", "name": "sam"},
        "responded_at": datetime.now().astimezone(),
        "params_input": {"comment": "ok"},
    }
    asked = _answer(monkeypatch, [{"step": "requested"}], event)
    record = asked.record()
    assert record["outcome"] == "approved"
    assert no_network == []
    assert "channels" not in record  # sent after the gate's success: not in its record
    assert announce_outcome in asked.gate.on_success_callback
    announce_outcome(asked.context)  # the callback does post (here: refused, recorded, not raised)
    assert no_network != []


def test_the_callback_sends_the_answer_once(
    monkeypatch: pytest.MonkeyPatch, notified: list[dict[str, Any]]
) -> None:
    event = {
        "chosen_options": ["Reject"],
        "responded_by_user": {"id": "4", "name": "sam"},
        "responded_at": datetime.now().astimezone(),
        "params_input": {},
    }
    asked = _answer(monkeypatch, [{"step": "requested"}, {"step": "reminder"}], event)
    asked.record()
    assert notified == []  # nothing from execute_complete itself
    announce_outcome(asked.context)
    announce_outcome(asked.context)  # a second run of the callbacks sends nothing again
    (call,) = notified
    assert call["stage"] == "answered"
    assert call["outcome"] == {"approved": False, "responded_by": "sam"}
    assert call["escalated"] is False  # never paged: nothing to resolve
    assert call["target"] == {
        "dag_id": asked.gate.dag_id,
        "run_id": "manual__1",
        "task_id": "approve_host_isolate",
        "map_index": -1,
    }


def test_a_timeout_after_escalation_resolves_the_page(
    monkeypatch: pytest.MonkeyPatch, notified: list[dict[str, Any]]
) -> None:
    event: dict[str, Any] = {
        "chosen_options": ["Reject"],
        "responded_by_user": None,
        "responded_at": None,
        "params_input": {},
    }
    asked = _answer(monkeypatch, [{"step": "requested"}, {"step": "escalation", "to": []}], event)
    asked.record()
    announce_outcome(asked.context)
    (call,) = notified
    assert (call["stage"], call["escalated"], call["outcome"]["approved"]) == ("timed_out", True, False)
    assert isinstance(call["facts"], RequestFacts)


def test_the_callback_never_raises_and_ignores_a_gate_that_asked_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked = _ask(monkeypatch, drill=False)
    announce_outcome(asked.context)  # no answer yet: nothing to announce

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("channels broken")

    monkeypatch.setattr(module, "notify_channels", broken)
    asked.gate._outcome_notice = {"stage": "answered"}
    announce_outcome(asked.context)
    assert asked.gate._outcome_notice is None


def test_a_timeout_with_a_missed_escalation_says_so_and_pages_nobody(
    monkeypatch: pytest.MonkeyPatch, notified: list[dict[str, Any]]
) -> None:
    """The trigger recorded the escalation as missed (its wait was not running from the escalation's
    time to the deadline): the timeout notice names it, the audit record lists it, and no page is
    resolved (none was sent)."""
    mails: list[tuple[list[str], str, str]] = []
    audited: list[dict[str, Any]] = []
    event: dict[str, Any] = {
        "chosen_options": ["Reject"],
        "responded_by_user": None,
        "responded_at": None,
        "params_input": {},
    }
    due = "2026-12-07T01:40:00+00:00"
    ladder = [
        {"step": "requested"},
        {"step": "reminder", "to": []},
        {"step": "escalation_missed", "due": due},
    ]
    asked = _answer(monkeypatch, ladder, event)
    monkeypatch.setattr(
        module, "send_email", lambda to, subject, html, **kw: mails.append((to, subject, html)) or {"to": to}
    )
    monkeypatch.setattr(module, "audit_emit", lambda fields, **kw: audited.append(fields))
    record = asked.record()
    assert record["outcome"] == "timed_out"
    (to, subject, html) = mails[-1]
    assert subject.startswith("[Approval timed out]")
    assert "Not sent: the escalation (due 2026-12-07 01:40:00 UTC)" in html
    assert "check the triggerer" in html
    assert set(asked.gate.ladder.escalate_to) <= set(to)  # the escalation group hears of it here
    (answer,) = [a for a in audited if a["kind"] == "approval.answered"]
    assert answer["details"]["missed_steps"] == ["escalation"]
    announce_outcome(asked.context)
    (call,) = notified
    assert (call["stage"], call["escalated"]) == ("timed_out", False)  # nothing was paged


def test_a_timeout_with_every_step_sent_mentions_nothing_missed(
    monkeypatch: pytest.MonkeyPatch, notified: list[dict[str, Any]]
) -> None:
    mails: list[str] = []
    audited: list[dict[str, Any]] = []
    event: dict[str, Any] = {"chosen_options": ["Reject"], "responded_by_user": None, "params_input": {}}
    asked = _answer(monkeypatch, [{"step": "requested"}, {"step": "escalation", "to": []}], event)
    monkeypatch.setattr(
        module, "send_email", lambda to, subject, html, **kw: mails.append(html) or {"to": to}
    )
    monkeypatch.setattr(module, "audit_emit", lambda fields, **kw: audited.append(fields))
    asked.record()
    assert "Not sent" not in mails[-1]
    (answer,) = [a for a in audited if a["kind"] == "approval.answered"]
    assert "missed_steps" not in answer["details"]
