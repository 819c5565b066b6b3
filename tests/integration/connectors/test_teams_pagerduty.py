"""The Teams and PagerDuty hooks, and the approval channels, against the webhook stand-in
(devstack/standins/webhooks.py, in-process on 127.0.0.1).

No PostgreSQL: the connections carry no rate limit; retries back off from 0.05 s. The connections
are Airflow's environment connections (``AIRFLOW_CONN_*``), as a deployment's secrets backend would
give them; the StatsD metric goes to a real UDP socket.
"""

from __future__ import annotations

import os
import tempfile

# Airflow reads its configuration when first imported: keep it away from any real installation.
if "AIRFLOW_HOME" not in os.environ:
    os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="orchestrator-itest-airflow-")
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")

import json
import logging
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests

from devstack.standins.webhooks import WebhookStandIn
from include.approvals import channels
from include.approvals.messages import RequestFacts
from include.connectors.errors import PermanentError, RetryBudgetExhausted
from include.connectors.pagerduty import PagerDutyEventsHook
from include.connectors.teams import TeamsWebhookHook

TOKEN = "c0ffee" * 10
ROUTING_KEY = "R0UT1NGKEY" + "x" * 22
TARGET = {"dag_id": "soc_contain_host", "run_id": "manual__1", "task_id": "approve", "map_index": -1}
T0 = datetime(2026, 5, 4, 10, 0, tzinfo=UTC)
LOG = logging.getLogger("tests.integration.channels")
CARD = {"type": "AdaptiveCard", "version": "1.4", "body": [{"type": "TextBlock", "text": "hello"}]}


@pytest.fixture
def standin() -> Iterator[WebhookStandIn]:
    with WebhookStandIn(teams={TOKEN: "soc"}, pagerduty={ROUTING_KEY: "soc"}, timeout_seconds=3) as server:
        yield server


def _conn(host: str, password: str, **extra: Any) -> str:
    extras = {"retry_base_delay": 0.05, "retry_max_delay": 0.2, "retry_max_attempts": 3, "timeout_seconds": 1}
    return json.dumps({"conn_type": "http", "host": host, "password": password, "extra": {**extras, **extra}})


@pytest.fixture
def connections(standin: WebhookStandIn, monkeypatch: pytest.MonkeyPatch) -> WebhookStandIn:
    path = f"/workflows/{TOKEN}/triggers/manual/paths/invoke"
    monkeypatch.setenv("AIRFLOW_CONN_TEAMS_SOC", _conn(standin.base_url, path))
    monkeypatch.setenv("AIRFLOW_CONN_TEAMS_HR", _conn(standin.base_url, f"/webhookb2/{TOKEN}"))
    monkeypatch.setenv("AIRFLOW_CONN_PAGERDUTY_SOC", _conn(standin.base_url, ROUTING_KEY))
    return standin


def facts(**changes: Any) -> RequestFacts:
    values: dict[str, Any] = {
        "domain": "soc",
        "action": "isolate_host",
        "subject": "Isolate ws-001",
        "body": "EDR alert",
        "step": 1,
        "steps": 1,
        "approver_roles": ["soc_approver"],
        "excluded": [],
        "triggered_by": "alice",
        "correlation_id": "corr-itest",
        "run_url": "http://127.0.0.1:1/dags/x/runs/r",
        "answer_url": "http://127.0.0.1:1/dags/x/runs/r/tasks/approve/required_actions",
        "requested_at": T0,
        "remind_at": T0 + timedelta(minutes=1),
        "escalate_at": T0 + timedelta(minutes=2),
        "deadline": T0 + timedelta(minutes=3),
        "escalate_to": ["soc-leads@secops.example"],
    }
    return RequestFacts(**{**values, **changes})


# --- Teams ----------------------------------------------------------------------------------------
def test_card_reaches_the_channel_workflows_and_incoming(connections: WebhookStandIn) -> None:
    assert TeamsWebhookHook("teams_soc", tenant="acme").post_card(CARD) == 202
    assert TeamsWebhookHook("teams_hr", tenant="acme").post_card(CARD) == 200
    teams = connections.records()["teams"]
    assert [(m["style"], m["status"]) for m in teams] == [("workflows", 202), ("incoming", 200)]
    content = teams[0]["message"]["attachments"][0]
    assert content["contentType"] == "application/vnd.microsoft.card.adaptive"
    assert content["content"]["body"][0]["text"] == "hello"


def test_a_bad_card_is_permanent_and_not_retried(connections: WebhookStandIn) -> None:
    hook = TeamsWebhookHook("teams_soc", tenant="acme")
    with pytest.raises(PermanentError, match="HTTP 400") as caught:
        hook.post_card({"type": "AdaptiveCard", "version": "1.4", "body": []})
    assert hook.retry_count == 0
    assert TOKEN not in str(caught.value)


def test_5xx_and_429_are_retried_then_delivered(connections: WebhookStandIn) -> None:
    connections.fault("teams", "5xx", times=1)
    hook = TeamsWebhookHook("teams_soc", tenant="acme")
    assert hook.post_card(CARD) == 202
    connections.fault("teams", "429", times=1, retry_after=1)
    hook = TeamsWebhookHook("teams_soc", tenant="acme")
    assert hook.post_card(CARD) == 202
    assert hook.retry_count == 1
    assert [r.status for r in connections.requests] == [503, 202, 429, 202]


def test_timeouts_exhaust_the_retries_without_naming_the_secret(
    connections: WebhookStandIn, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    connections.fault("teams", "timeout", times=5)
    hook = TeamsWebhookHook("teams_soc", tenant="acme")
    with caplog.at_level(logging.DEBUG), pytest.raises(RetryBudgetExhausted) as caught:
        hook.post_card(CARD)
    assert hook.retry_count == 2  # 3 attempts in all
    assert TOKEN not in str(caught.value)
    assert TOKEN not in repr(caught.value.__cause__)
    assert TOKEN not in caplog.text
    out, err = capfd.readouterr()  # Airflow's hook logger (structlog) writes here, not to caplog
    assert "attempt 1 failed" in out + err
    assert TOKEN not in out + err


def test_an_unknown_webhook_is_permanent(standin: WebhookStandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_TEAMS_GONE", _conn(standin.base_url, "/webhookb2/deleted"))
    with pytest.raises(PermanentError, match="HTTP 404"):
        TeamsWebhookHook("teams_gone", tenant="acme").post_card(CARD)


# --- PagerDuty ------------------------------------------------------------------------------------
def test_one_incident_per_dedup_key_and_resolve_closes_it(connections: WebhookStandIn) -> None:
    hook = PagerDutyEventsHook("pagerduty_soc", tenant="acme")
    for _ in range(3):  # a retried or re-sent page
        assert hook.send_event("trigger", "k1", summary="s", source="src") == "k1"
    assert hook.send_event("resolve", "k1") == "k1"
    incidents = connections.records()["pagerduty"]["incidents"]
    assert len(incidents) == 1
    assert incidents[0]["status"] == "resolved"
    assert incidents[0]["triggers"] == 3
    hook.send_event("trigger", "k1", summary="again", source="src")  # after a resolve: a new incident
    assert [i["status"] for i in connections.records()["pagerduty"]["incidents"]] == ["resolved", "triggered"]


def test_the_routing_key_stays_out_of_records_errors_and_logs(
    connections: WebhookStandIn, standin: WebhookStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    PagerDutyEventsHook("pagerduty_soc", tenant="acme").send_event("trigger", "k2", summary="s", source="x")
    assert ROUTING_KEY not in json.dumps(connections.records())
    monkeypatch.setenv("AIRFLOW_CONN_PAGERDUTY_WRONG", _conn(standin.base_url, "W" * 32))
    with pytest.raises(PermanentError, match="HTTP 400") as caught:
        PagerDutyEventsHook("pagerduty_wrong", tenant="acme").send_event("resolve", "k2")
    assert "W" * 32 not in str(caught.value)


def test_invalid_events_are_refused_before_or_by_pagerduty(connections: WebhookStandIn) -> None:
    hook = PagerDutyEventsHook("pagerduty_soc", tenant="acme")
    with pytest.raises(ValueError, match="summary and source"):
        hook.send_event("trigger", "k3")
    with pytest.raises(ValueError, match="dedup_key"):
        hook.send_event("resolve", "x" * 256)
    bad = requests.post(
        f"{connections.base_url}/v2/enqueue",
        json={
            "routing_key": ROUTING_KEY,
            "event_action": "trigger",
            "payload": {"summary": "s", "source": "x", "severity": "fatal"},
        },
        timeout=5,
    )
    assert bad.status_code == 400
    assert bad.json()["status"] == "invalid event"


def test_pagerduty_throttle_is_retried(connections: WebhookStandIn) -> None:
    connections.fault("pagerduty", "429", times=1)
    hook = PagerDutyEventsHook("pagerduty_soc", tenant="acme")
    assert hook.send_event("trigger", "k4", summary="s", source="x") == "k4"
    assert hook.retry_count == 1


# --- the channels: delivery observable, never in the way ------------------------------------------
@pytest.fixture
def statsd(monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    from include.metrics.statsd import configured_client

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(2)
    monkeypatch.setenv("AIRFLOW__ORCHESTRATOR_METRICS__STATSD_HOST", "127.0.0.1")
    monkeypatch.setenv("AIRFLOW__ORCHESTRATOR_METRICS__STATSD_PORT", str(sock.getsockname()[1]))
    configured_client.cache_clear()
    yield sock
    sock.close()
    configured_client.cache_clear()


def test_the_ladder_reaches_teams_and_pagerduty(connections: WebhookStandIn) -> None:
    stages: tuple[channels.Stage, ...] = ("requested", "reminder", "escalation")
    for stage in stages:
        result = channels.notify(stage, facts(), target=TARGET, tenant="acme", log=LOG, now=T0)
        assert "error" not in result["teams"]
    result = channels.notify(
        "answered",
        facts(),
        target=TARGET,
        tenant="acme",
        log=LOG,
        now=T0,
        escalated=True,
        outcome={"approved": True, "responded_by": "bob"},
    )
    assert result["pagerduty"]["action"] == "resolve"
    records = connections.records()
    headlines = [m["message"]["attachments"][0]["content"]["body"][0]["text"] for m in records["teams"]]
    assert [h.split(":")[0] for h in headlines] == [
        "Approval needed",
        "Reminder",
        "Escalation",
        "Approved by bob",
    ]
    (incident,) = records["pagerduty"]["incidents"]
    assert incident["dedup_key"] == channels.dedup_key(TARGET)
    assert incident["status"] == "resolved"


def test_a_failing_channel_is_an_audit_record_and_a_metric(
    connections: WebhookStandIn, statsd: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    audit: list[dict[str, Any]] = []
    monkeypatch.setattr("include.audit.emit.emit", lambda fields, **_: audit.append(dict(fields)))
    connections.fault("teams", "5xx", times=10)
    connections.fault("pagerduty", "5xx", times=10)
    result = channels.notify("escalation", facts(), target=TARGET, tenant="acme", log=LOG, now=T0)
    assert "RetryBudgetExhausted" in result["teams"]["error"]
    assert "RetryBudgetExhausted" in result["pagerduty"]["error"]
    assert {(r["kind"], r["details"]["channel"]) for r in audit} == {
        ("notification.failed", "teams"),
        ("notification.failed", "pagerduty"),
    }
    assert TOKEN not in json.dumps([*audit, result])
    assert ROUTING_KEY not in json.dumps([*audit, result])
    packets = {statsd.recv(512).decode() for _ in range(2)}
    assert any(
        p.startswith("orchestrator.notification.failed:1|c|#") and "channel:teams" in p for p in packets
    )
    assert any("channel:pagerduty" in p and "stage:escalation" in p for p in packets)
