"""SLA digest: the messages, the flush's send/done/release protocol, and the SLA callback's use of
the store (an in-memory store here; the real PostgreSQL and Redis stores, concurrency and the
SMTP sink are in tests/integration/test_sla_digest.py)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from include.policies.loader import DOMAINS_FILE, PolicyError, load_domain_policy, load_policy_file
from include.workflows import alerts, sla_digest
from include.workflows.sla_digest import (
    BATCH_CHANNELS,
    MAX_CARD_RUNS,
    Batch,
    LateRun,
    TeamsChannel,
    aflush,
    digest_message,
    flush,
)

NOW = datetime(2026, 12, 7, 2, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def posted(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict[str, Any], str]]:
    """What the Teams channel posts (domain, card, stage), offline; the post itself is tested against
    the webhook stand-in (tests/integration/test_sla_digest_teams.py)."""
    from include.approvals import channels

    cards: list[tuple[str, dict[str, Any], str]] = []

    def post(domain: str, card: dict[str, Any], *, what: str, **_: Any) -> dict[str, Any]:
        cards.append((domain, card, what))
        return {"conn_id": f"teams_{domain}", "status": 202, "retries": 0}

    monkeypatch.setattr(channels, "post_domain_card", post)
    return cards


def _texts(card: dict[str, Any]) -> list[str]:
    return [block["text"] for block in card["body"]]


def late(n: int, domain: str = "support", run_id: str | None = None) -> LateRun:
    return LateRun(
        miss_id=f"d-{n}",
        domain=domain,
        dag_id="support_triage",
        run_id=run_id or f"scheduled__{n}",
        correlation_id=f"RT-{n}",
        kind="fast_path",
        sla_seconds=120,
        deadline_at=(NOW - timedelta(minutes=n)).isoformat(),
        url=f"http://airflow.example/dags/support_triage/runs/scheduled__{n}",
    )


class MemoryStore:
    """The store's contract in memory: record opens a window or joins it; claim/done/release."""

    def __init__(self) -> None:
        self.window: dict[str, datetime] = {}
        self.misses: dict[str, tuple[str, datetime, LateRun]] = {}
        self.claimed: set[str] = set()
        self.sent: set[str] = set()
        self.released: list[str] = []
        self.now = NOW

    def record(self, miss: LateRun, window: timedelta) -> str:
        if miss.miss_id in self.misses:
            return "duplicate"
        closes = self.window.get(miss.domain)
        if closes is None or closes <= self.now:
            self.window[miss.domain] = self.now + window
            self.misses[miss.miss_id] = (f"immediate:{miss.miss_id}", self.now, miss)
            return "immediate"
        self.misses[miss.miss_id] = (f"digest:{miss.domain}:{closes.isoformat()}", closes, miss)
        return "digest"

    def claim(
        self, lease: timedelta = sla_digest.CLAIM_LEASE, horizon: timedelta = timedelta(0)
    ) -> list[Batch]:
        batches: dict[str, list[LateRun]] = {}
        for miss_id, (key, due, miss) in self.misses.items():
            if due <= self.now + horizon and miss_id not in self.claimed and miss_id not in self.sent:
                self.claimed.add(miss_id)
                batches.setdefault(key, []).append(miss)
        return [Batch(k, runs[0].domain, tuple(runs), "token") for k, runs in sorted(batches.items())]

    def done(self, batch: Batch) -> None:
        for run in batch.runs:
            self.sent.add(run.miss_id)

    def release(self, batch: Batch) -> None:
        self.released.append(batch.key)
        for run in batch.runs:
            self.claimed.discard(run.miss_id)


class Channel:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.sent: list[Batch] = []

    def send(self, batch: Batch, now: datetime) -> None:
        if self.fail:
            raise ConnectionError("relay down")
        self.sent.append(batch)

    async def asend(self, batch: Batch, now: datetime) -> None:
        self.send(batch, now)


def test_the_digest_names_each_late_run_once_with_how_late_and_its_correlation_id() -> None:
    runs = tuple(late(n) for n in range(1, 4))
    subject, html, headers = digest_message(Batch("digest:support:x", "support", runs), NOW)
    assert subject.startswith("[SLA digest][support] 3 more run(s) missed their SLA")
    for n in range(1, 4):
        assert html.count(f">scheduled__{n}<") == 1
        assert html.count(f">RT-{n}<") == 1
        assert f"<td>{n}m 00s</td>" in html  # late by, at the time of the mail
    assert headers["X-Orchestrator-Runs"] == ", ".join(f"support_triage/scheduled__{n}" for n in range(1, 4))
    assert headers["X-Orchestrator-Alert"] == "sla-digest/support"


def test_the_digest_escapes_what_it_quotes_and_its_id_follows_its_content() -> None:
    batch = Batch("digest:support:x", "support", (late(1, run_id="<script>x</script>"),))
    _, html, headers = digest_message(batch, NOW)
    assert "<script>" not in html
    assert "&lt;script&gt;" in html
    again = digest_message(Batch("digest:support:x", "support", batch.runs), NOW)[2]["Message-ID"]
    other = digest_message(Batch("digest:support:x", "support", (late(2),)), NOW)[2]["Message-ID"]
    assert headers["Message-ID"] == again != other


def test_first_miss_at_once_the_rest_when_the_window_closes() -> None:
    store, channel = MemoryStore(), Channel()
    assert [store.record(late(n), timedelta(minutes=10)) for n in range(4)] == [
        "immediate",
        "digest",
        "digest",
        "digest",
    ]
    assert store.record(late(2), timedelta(minutes=10)) == "duplicate"
    [first] = flush(store, channel)  # type: ignore[arg-type]
    assert first.immediate
    assert [r.miss_id for r in first.runs] == ["d-0"]
    store.now = NOW + timedelta(minutes=10)
    [digest] = flush(store, channel)  # type: ignore[arg-type]
    assert [r.miss_id for r in digest.runs] == ["d-1", "d-2", "d-3"]
    assert flush(store, channel) == []  # type: ignore[arg-type]
    # The window closed: the next miss opens a new one and is mailed at once.
    assert store.record(late(9), timedelta(minutes=10)) == "immediate"


def test_a_failed_mail_is_released_not_marked_sent_and_extra_channels_never_decide(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = MemoryStore()
    store.record(late(1), timedelta(minutes=10))
    assert flush(store, Channel(fail=True)) == []  # type: ignore[arg-type]
    assert store.released == ["immediate:d-1"]
    assert store.sent == set()
    teams = Channel(fail=True)
    monkeypatch.setattr(sla_digest, "BATCH_CHANNELS", [teams])
    [batch] = flush(store, Channel())  # type: ignore[arg-type]
    assert store.sent == {"d-1"}
    assert batch.key == "immediate:d-1"
    assert [type(c) for c in BATCH_CHANNELS] == [TeamsChannel]  # the module's list, untouched by the patch


def test_the_callback_records_and_mails_only_what_is_due(monkeypatch: pytest.MonkeyPatch) -> None:
    store, mailed = MemoryStore(), []

    class Relay:
        async def asend(self, to: Any, subject: str, html: str, *, headers: Any = None) -> list[str]:
            mailed.append((list(to), subject, headers["Message-ID"]))
            return list(to)

    async def opened() -> MemoryStore:
        return store

    monkeypatch.setattr(alerts, "adefault_store", opened)
    monkeypatch.setattr(sla_digest.MailChannel, "_relay", lambda self: Relay())
    notifier = alerts.SlaMissNotifier(
        domain="support",
        kind="fast_path",
        sla_seconds=120,
        base_url="http://airflow.example",
        to=["support-alerts@secops.example"],
        smtp_conn_id="smtp_alerts",
    )
    for n in range(3):
        context = {
            "dag_run": {"dag_id": "support_triage", "dag_run_id": f"scheduled__{n}", "conf": {}},
            "deadline": {"id": f"dl-{n}", "deadline_time": NOW.isoformat()},
        }
        asyncio.run(notifier.async_notify(context))
    [(to, subject, message_id)] = mailed
    assert to == ["support-alerts@secops.example"]
    assert subject.startswith("[SLA miss][support] support_triage run scheduled__0 exceeded")
    assert message_id == "<sla-miss-dl-0@orchestrator.secops.example>"
    # The others wait for the window: the domain policy's (10 minutes by default).
    assert {key for key, _, _ in store.misses.values()} == {
        "immediate:dl-0",
        f"digest:support:{(NOW + timedelta(minutes=10)).isoformat()}",
    }


def test_the_digest_window_is_policy(tmp_path: Path) -> None:
    assert load_domain_policy().domain("soc").alert_digest_window == timedelta(minutes=10)
    text = DOMAINS_FILE.read_text(encoding="utf-8")
    custom = tmp_path / "domains.yaml"
    custom.write_text(
        text.replace(
            "      email: [soc-alerts@secops.example]",
            "      email: [soc-alerts@secops.example]\n      digest_window: 3m",
        ),
        encoding="utf-8",
    )
    policy = load_policy_file(custom)
    assert policy.domain("soc").alert_digest_window == timedelta(minutes=3)
    assert policy.domain("hr").alert_digest_window == timedelta(minutes=10)
    custom.write_text(text.replace("  sla_digest_window: 10m", "  sla_digest_window: soon"), encoding="utf-8")
    with pytest.raises(PolicyError, match=r"defaults\.sla_digest_window: 'soon' does not match"):
        load_policy_file(custom)


def test_teams_gets_one_card_per_batch_sent_after_its_mail(posted: list[Any]) -> None:
    store, mail = MemoryStore(), Channel()
    for n in range(4):
        store.record(late(n), timedelta(minutes=10))
    flush(store, mail, now=store.now)  # type: ignore[arg-type]
    store.now = NOW + timedelta(minutes=10)
    flush(store, mail, now=store.now)  # type: ignore[arg-type]
    assert [(domain, what) for domain, _, what in posted] == [("support", "sla_alert")] * 2
    first, digest = (card for _, card, _ in posted)
    assert _texts(first)[0].startswith("[SLA miss][support] support_triage run scheduled__0 exceeded")
    assert "Correlation id: RT-0" in _texts(first)
    assert first["actions"] == [
        {"type": "Action.OpenUrl", "title": "Open the run", "url": late(0).url},
    ]
    assert _texts(digest)[0].startswith("[SLA digest][support] 3 more run(s) missed their SLA")
    assert _texts(digest)[1:] == [
        f"support_triage scheduled__{n} · RT-{n} · late by {n + 10}m 00s" for n in (1, 2, 3)
    ]


def test_no_mail_no_card(posted: list[Any]) -> None:
    store = MemoryStore()
    store.record(late(1), timedelta(minutes=10))
    flush(store, Channel(fail=True))  # type: ignore[arg-type]
    assert posted == []


def test_a_large_digest_card_stays_under_the_webhook_limit_and_says_the_mail_has_all(
    posted: list[Any],
) -> None:
    import json

    from include.workflows.sla_digest import teams_card

    runs = tuple(late(n, run_id=f"scheduled__2026-12-07T01:{n:02d}:00+00:00_{'x' * 40}") for n in range(200))
    card = teams_card(Batch("digest:support:x", "support", runs), NOW)
    texts = _texts(card)
    assert len(texts) == 1 + MAX_CARD_RUNS + 1
    assert texts[-1] == f"... and {200 - MAX_CARD_RUNS} more: the digest mail names every run."
    assert len(json.dumps(card).encode()) < 20 * 1024  # Teams refuses a message over 28 KB


def test_the_triggerer_path_posts_too_and_a_failing_card_does_not_unsend_the_mail(
    monkeypatch: pytest.MonkeyPatch, posted: list[Any]
) -> None:
    store, mail = MemoryStore(), Channel()
    store.record(late(1), timedelta(minutes=10))
    [batch] = asyncio.run(aflush(store, mail))  # type: ignore[arg-type]
    assert [domain for domain, _, _ in posted] == ["support"]
    assert store.sent == {"d-1"}

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("policy unreadable")

    monkeypatch.setattr(sla_digest, "teams_card", broken)
    store.now = NOW + timedelta(minutes=20)
    store.record(late(2), timedelta(minutes=10))
    assert [b.key for b in asyncio.run(aflush(store, mail))] == ["immediate:d-2"]  # type: ignore[arg-type]
    assert store.sent == {"d-1", "d-2"}
    assert [b.key for b in mail.sent] == [batch.key, "immediate:d-2"]


@pytest.mark.parametrize("mode", ["send", "asend"])
def test_a_storm_digest_goes_out_in_parts_naming_every_run_once(
    monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    """Relays cap a mail's header block: a digest names at most MAX_MAIL_RUNS runs per mail."""
    sent: list[dict[str, str]] = []

    class Relay:
        def send(self, to: list[str], subject: str, html: str, *, headers: dict[str, str]) -> None:
            sent.append(headers)

        async def asend(self, to: list[str], subject: str, html: str, *, headers: dict[str, str]) -> None:
            sent.append(headers)

    monkeypatch.setattr(sla_digest.MailChannel, "_relay", lambda self: Relay())
    count = 2 * sla_digest.MAX_MAIL_RUNS + 7
    batch = Batch("digest:support:2026-12-07T05:00:00+00:00", "support", tuple(late(n) for n in range(count)))
    channel = sla_digest.MailChannel({"support": ["support-alerts@secops.example"]})
    now = datetime(2026, 12, 7, 5, 10, tzinfo=UTC)
    if mode == "send":
        channel.send(batch, now)
    else:
        asyncio.run(channel.asend(batch, now))

    parts = [h["X-Orchestrator-Runs"].split(", ") for h in sent]
    assert [len(p) for p in parts] == [sla_digest.MAX_MAIL_RUNS, sla_digest.MAX_MAIL_RUNS, 7]
    assert [r for p in parts for r in p] == [f"{r.dag_id}/{r.run_id}" for r in batch.runs]
    assert len({h["Message-ID"] for h in sent}) == 3


def test_a_batch_not_marked_sent_does_not_hold_back_the_others_claimed_with_it() -> None:
    """A ``done`` that fails (PostgreSQL gave up on it) after the mail went: the other batches this
    flush claimed still go now, not when their lease ends."""

    class FailingDone(MemoryStore):
        def done(self, batch: Batch) -> None:
            if batch.key == "immediate:d-0":
                raise RuntimeError("deadlock detected")
            super().done(batch)

    store, channel = FailingDone(), Channel()
    for n in range(3):
        store.record(late(n, domain=f"dom{n}"), timedelta(minutes=10))  # three immediate batches
    sent = flush(store, channel)  # type: ignore[arg-type]
    assert sorted(b.key for b in channel.sent) == ["immediate:d-0", "immediate:d-1", "immediate:d-2"]
    assert [b.key for b in sent] == [b.key for b in channel.sent]
    assert store.sent == {"d-1", "d-2"}  # d-0 went out, unmarked: it may go again, never lost


def test_a_deadlock_victim_is_run_again_and_a_lasting_one_raises() -> None:
    import psycopg

    calls: list[int] = []

    @sla_digest._retry_deadlocks
    def transaction(fail_times: int) -> str:
        calls.append(1)
        if len(calls) <= fail_times:
            raise psycopg.errors.DeadlockDetected("deadlock detected")
        return "committed"

    assert transaction(2) == "committed"
    assert len(calls) == 3
    calls.clear()
    with pytest.raises(psycopg.errors.DeadlockDetected):
        transaction(sla_digest.DEADLOCK_ATTEMPTS)
    assert len(calls) == sla_digest.DEADLOCK_ATTEMPTS
    calls.clear()

    @sla_digest._retry_deadlocks
    def other() -> None:
        calls.append(1)
        raise ValueError("not a deadlock")

    with pytest.raises(ValueError, match="not a deadlock"):  # anything else is not retried
        other()
    assert len(calls) == 1
