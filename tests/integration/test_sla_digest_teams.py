"""SLA alerts in the domain's Teams channel (issue 22 item 5), against the webhook stand-in
(devstack/standins/webhooks.py, in-process on 127.0.0.1, port chosen by the OS).

The flush sends each batch by mail first; the Teams channel (include/workflows/sla_digest.py
``TeamsChannel``) then posts one card per batch: the immediate miss, the digest. A domain without a
channel gets none; a channel that keeps failing is a ``notification.failed`` audit record and never
stops or repeats the mail. The store is an in-memory one with the store's contract (the real
PostgreSQL and Redis stores are in tests/integration/test_sla_digest.py); the connections are
Airflow environment connections, as a secrets backend gives them.
"""

from __future__ import annotations

import os
import tempfile

if "AIRFLOW_HOME" not in os.environ:
    os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="orchestrator-itest-airflow-")
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")

import asyncio
import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from devstack.standins.webhooks import WebhookStandIn
from include.policies import loader
from include.workflows.sla_digest import BATCH_CHANNELS, TeamsChannel, aflush, flush
from tests.unit.workflows.test_sla_digest import NOW, Channel, MemoryStore, late

TOKENS = {"support": "5upp0rt" * 8, "hr": "hr-t0ken" * 8}


@pytest.fixture
def standin(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[WebhookStandIn]:
    """The stand-in with support's and hr's channels; in the policy, invoicing has no channel."""
    with WebhookStandIn(teams={t: d for d, t in TOKENS.items()}, timeout_seconds=2) as server:
        extra = {
            "retry_base_delay": 0.05,
            "retry_max_delay": 0.1,
            "retry_max_attempts": 2,
            "timeout_seconds": 1,
        }
        for domain, token in TOKENS.items():
            path = f"/workflows/{token}/triggers/manual/paths/invoke"
            connection = {"conn_type": "http", "host": server.base_url, "password": path, "extra": extra}
            monkeypatch.setenv(f"AIRFLOW_CONN_TEAMS_{domain.upper()}", json.dumps(connection))
        document = yaml.safe_load(loader.DOMAINS_FILE.read_text(encoding="utf-8"))
        del document["domains"]["invoicing"]["alerts"]["teams_channel"]
        (tmp_path / "domains.yaml").write_text(yaml.safe_dump(document), encoding="utf-8")
        policy = loader.load_policy_file(tmp_path / "domains.yaml")
        monkeypatch.setattr(loader, "load_domain_policy", lambda: policy)
        yield server


@pytest.fixture
def audit(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    monkeypatch.setattr("include.audit.emit.emit", lambda fields, **_: records.append(dict(fields)))
    return records


def _cards(standin: WebhookStandIn) -> list[tuple[str, list[str]]]:
    """(channel, the card's lines) of every card the stand-in accepted, in arrival order."""
    return [
        (m["channel"], [block["text"] for block in m["message"]["attachments"][0]["content"]["body"]])
        for m in standin.records()["teams"]
        if m["status"] in (200, 202)
    ]


def test_the_first_miss_and_the_digest_reach_the_domains_channel_one_card_each(
    standin: WebhookStandIn, audit: list[dict[str, Any]]
) -> None:
    assert [type(c) for c in BATCH_CHANNELS] == [TeamsChannel]
    store, mail = MemoryStore(), Channel()
    for n in range(4):
        store.record(late(n), timedelta(minutes=10))
    store.record(late(7, domain="hr"), timedelta(minutes=10))
    flush(store, mail, now=NOW)  # type: ignore[arg-type]
    store.now = NOW + timedelta(minutes=10)
    flush(store, mail, now=store.now)  # type: ignore[arg-type]
    assert [b.key for b in mail.sent] == ["immediate:d-0", "immediate:d-7", mail.sent[2].key]
    cards = _cards(standin)
    assert [(channel, lines[0].split("]")[0]) for channel, lines in cards] == [
        ("support", "[SLA miss"),
        ("hr", "[SLA miss"),
        ("support", "[SLA digest"),
    ]
    digest = cards[2][1]
    assert digest[0].startswith("[SLA digest][support] 3 more run(s) missed their SLA")
    for n in (1, 2, 3):  # each late run once, with its correlation id and how late
        assert (
            sum(line.startswith(f"support_triage scheduled__{n} · RT-{n} · late by") for line in digest) == 1
        )
    assert "Correlation id: RT-7" in cards[1][1]
    assert audit == []
    assert not any(token in json.dumps(standin.records()) for token in TOKENS.values())


def test_a_domain_without_a_channel_gets_no_card_and_no_failure(
    standin: WebhookStandIn, audit: list[dict[str, Any]]
) -> None:
    store, mail = MemoryStore(), Channel()
    store.record(late(1, domain="invoicing"), timedelta(minutes=10))
    [batch] = flush(store, mail, now=NOW)  # type: ignore[arg-type]
    assert batch.domain == "invoicing"
    assert standin.records()["teams"] == []
    assert audit == []


def test_a_failing_channel_is_audited_and_never_stops_or_repeats_the_mail(
    standin: WebhookStandIn, audit: list[dict[str, Any]]
) -> None:
    standin.fault("teams", "5xx", times=10)
    store, mail = MemoryStore(), Channel()
    store.record(late(1), timedelta(minutes=10))
    [batch] = asyncio.run(aflush(store, mail))  # type: ignore[arg-type]  # the SLA callback's path
    assert store.sent == {"d-1"}
    assert mail.sent == [batch]
    assert asyncio.run(aflush(store, mail)) == []  # type: ignore[arg-type]  # sent once
    assert [r.status for r in standin.requests] == [503, 503]  # the connection's 2 attempts
    (record,) = audit
    assert record["kind"] == "notification.failed"
    assert record["domain"] == "support"
    assert record["correlation_id"] == "RT-1"
    assert {k: record["details"][k] for k in ("channel", "conn_id", "stage")} == {
        "channel": "teams",
        "conn_id": "teams_support",
        "stage": "sla_alert",
    }
    assert "RetryBudgetExhausted" in record["details"]["error"]
    assert TOKENS["support"] not in json.dumps(audit)
    standin.fault("teams", "5xx", times=0)
    store.now = NOW + timedelta(minutes=20)
    store.record(late(2), timedelta(minutes=10))
    asyncio.run(aflush(store, mail))  # type: ignore[arg-type]
    assert [channel for channel, _ in _cards(standin)] == ["support"]  # the next one goes through
