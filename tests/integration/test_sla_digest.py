"""SLA digest on real stores: every miss is mailed exactly once, the first at once, the rest in one
digest per domain, with several senders flushing at the same time.

Each store is a server of its own, started fresh for the module and stopped at its end: a
PostgreSQL cluster (profiles ``sla-digest-itest``, 127.0.0.1:25662, and
``sla-digest-mail-itest``, 127.0.0.1:25663) and a Redis (profile
``sla-digest-redis-itest``, 127.0.0.1:16690). The mail test runs the SMTP sink stand-in
(devstack/standins/smtp.py) on 127.0.0.1:25699. Windows are a few seconds long here (the policy's
are minutes).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

if "AIRFLOW_HOME" not in os.environ:
    os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="orchestrator-itest-airflow-")
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")

import pytest
from aiosmtpd.controller import Controller

from bench import ratelimit as bench
from devstack.config import Profile
from devstack.standins.smtp import MaildirHandler, read_messages
from include.workflows.sla_digest import Batch, LateRun, flush, store_for
from tests.support import stores
from tests.support.stores import postgres_database

PROFILE = Profile(name="sla-digest-itest", api_port=0, pg_port=25662, moto_port=0, smtp_port=0)
# Redis listens on api_port + 30.
REDIS_PROFILE = Profile(
    name="sla-digest-redis-itest", api_port=16660, pg_port=0, moto_port=0, smtp_port=0, executor="celery"
)
MAIL_PROFILE = Profile(name="sla-digest-mail-itest", api_port=0, pg_port=25663, moto_port=0, smtp_port=0)
SMTP_PORT = 25699
WINDOW = timedelta(seconds=3)


@contextlib.contextmanager
def postgres_store() -> Iterator[str]:
    with postgres_database(PROFILE, bench.DATABASE):
        yield bench.store_dsn(PROFILE)


STORES = {"postgresql": postgres_store, "redis": lambda: stores.redis_store(REDIS_PROFILE)}


@pytest.fixture(scope="module", params=list(STORES))
def store_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """The store's URL (holds the password: never printed)."""
    with STORES[request.param]() as url:
        yield url


@pytest.fixture(autouse=True)
def mail_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """The mail path only: the Teams channel (no connection here) is tested on its own against the
    webhook stand-in (tests/integration/test_sla_digest_teams.py)."""
    from include.workflows import sla_digest

    monkeypatch.setattr(sla_digest, "BATCH_CHANNELS", [])


def late(n: int, domain: str, prefix: str) -> LateRun:
    return LateRun(
        miss_id=f"{prefix}-{domain}-{n}",
        domain=domain,
        dag_id=f"{domain}_wf",
        run_id=f"{prefix}__{n}",
        correlation_id=f"CID-{prefix}-{n}",
        kind="fast_path",
        sla_seconds=120,
        deadline_at=datetime.now(UTC).isoformat(),
    )


class Recorder:
    """A channel that keeps every batch it was given (thread-safe)."""

    def __init__(self, fail: bool = False) -> None:
        self.batches: list[Batch] = []
        self.fail = fail
        self._lock = threading.Lock()

    def send(self, batch: Batch, now: datetime) -> None:
        if self.fail:
            raise ConnectionError("relay down")
        with self._lock:
            self.batches.append(batch)

    async def asend(self, batch: Batch, now: datetime) -> None:
        self.send(batch, now)


def test_every_miss_once_with_eight_concurrent_senders(store_url: str) -> None:
    store = store_for(store_url)
    channel = Recorder()
    domains = ("support", "soc")
    misses = [late(n, d, "burst") for n in range(20) for d in domains]
    stop = threading.Event()

    def recorder(part: list[LateRun]) -> None:
        for miss in part:
            store.record(miss, WINDOW)
            store.record(miss, WINDOW)  # a retried callback: recorded once
            flush(store, channel)

    def flusher() -> None:
        while not stop.is_set():
            flush(store, channel)
            time.sleep(0.05)

    threads = [threading.Thread(target=recorder, args=(misses[i::4],)) for i in range(4)]
    threads += [threading.Thread(target=flusher) for _ in range(4)]
    began = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads[:4]:
        thread.join()
    recorded_in = time.monotonic() - began
    # The window closes; the flushers (several "schedulers") race for the digests.
    time.sleep(WINDOW.total_seconds() + 0.5)
    stop.set()
    for thread in threads[4:]:
        thread.join()
    flush(store, channel)

    mailed = Counter(r.miss_id for b in channel.batches for r in b.runs)
    assert mailed == Counter({m.miss_id: 1 for m in misses})
    for domain in domains:
        batches = [b for b in channel.batches if b.domain == domain]
        # A window's first miss goes at once, alone; the rest of the window waits for its digest.
        assert any(b.immediate for b in batches), domain
        assert all(len(b.runs) == 1 for b in batches if b.immediate), domain
        if recorded_in < WINDOW.total_seconds():
            # All 20 were recorded within one window: 1 mail at once + 1 digest of 19.
            assert sorted(len(b.runs) for b in batches) == [1, 19], domain
            assert [b.immediate for b in sorted(batches, key=lambda b: len(b.runs))] == [True, False]
        else:
            # A machine slow enough to let the window close while the threads were still recording
            # opens a new window (a new mail at once): still each miss once, never one mail per miss.
            assert len(batches) < len(misses) // len(domains), (domain, recorded_in)
    assert store.claim() == []


def test_a_failed_send_is_released_and_sent_by_the_next_flush(store_url: str) -> None:
    store = store_for(store_url)
    miss = late(1, "hr", "fail")
    assert store.record(miss, timedelta(milliseconds=200)) == "immediate"
    assert flush(store, Recorder(fail=True)) == []
    channel = Recorder()
    [batch] = flush(store, channel)
    assert [r.miss_id for r in batch.runs] == [miss.miss_id]
    assert flush(store, channel) == []
    assert len(channel.batches) == 1
    # Recorded again after it was mailed (a callback retried late): not mailed again.
    assert store.record(miss, timedelta(milliseconds=200)) == "duplicate"


def test_an_open_window_is_sent_early_on_request(store_url: str) -> None:
    store = store_for(store_url)
    misses = [late(n, "implementation", "early") for n in range(3)]
    for miss in misses:
        store.record(miss, timedelta(minutes=10))
    channel = Recorder()
    assert [len(b.runs) for b in flush(store, channel)] == [1]  # the window is open for 10 minutes
    [digest] = flush(store, channel, horizon=timedelta(minutes=11))
    assert [r.miss_id for r in digest.runs] == [m.miss_id for m in misses[1:]]


def test_a_sender_that_dies_after_claiming_loses_nothing(store_url: str) -> None:
    store = store_for(store_url)
    miss = late(1, "invoicing", "crash")
    store.record(miss, timedelta(seconds=1))
    [claimed] = store.claim(lease=timedelta(seconds=1))  # ...and the sender dies here
    assert store.claim() == []  # held by the dead sender until its lease ends
    time.sleep(1.3)
    channel = Recorder()
    [batch] = flush(store, channel)
    assert batch.key == claimed.key
    assert [r.miss_id for r in batch.runs] == [miss.miss_id]


@pytest.fixture
def smtp_sink(tmp_path: Path) -> Iterator[Path]:
    maildir = tmp_path / "maildir"
    controller = Controller(MaildirHandler(maildir), hostname="127.0.0.1", port=SMTP_PORT)
    controller.start()
    try:
        yield maildir
    finally:
        controller.stop()


def test_n_late_runs_in_a_window_give_one_mail_and_one_digest(
    smtp_sink: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SLA callback itself (SlaMissNotifier) against PostgreSQL and the SMTP sink."""
    from include.workflows.alerts import SlaMissNotifier
    from include.workflows.sla_digest import MailChannel

    extra = {"disable_ssl": True, "disable_tls": True, "retry_limit": 0, "timeout": 5}
    smtp = {"conn_type": "smtp", "host": "127.0.0.1", "port": SMTP_PORT, "extra": extra}
    monkeypatch.setenv("AIRFLOW_CONN_SMTP_ALERTS", json.dumps(smtp))
    with postgres_database(MAIL_PROFILE, bench.DATABASE):
        dsn = bench.store_dsn(MAIL_PROFILE)
        with postgres_connection_env(monkeypatch, dsn):
            notifier = SlaMissNotifier(
                domain="support",
                kind="fast_path",
                sla_seconds=120,
                base_url="http://airflow.example",
                digest_window_seconds=2,
                to=["support-alerts@secops.example"],
                smtp_conn_id="smtp_alerts",
            )
            runs = [f"scheduled__{n}" for n in range(6)]
            for n, run_id in enumerate(runs):
                context = {
                    "dag_run": {
                        "dag_id": "support_triage",
                        "dag_run_id": run_id,
                        "state": "running",
                        "queued_at": "2026-12-07T01:00:00+00:00",
                        "conf": {"correlation_id": f"RT-{n}"},
                    },
                    "deadline": {"id": f"deadline-{n}", "deadline_time": "2026-12-07T01:02:00+00:00"},
                }
                asyncio.run(notifier.async_notify(context))
            assert [m.subject.startswith("[SLA miss][support]") for m in read_messages(smtp_sink)] == [True]
            time.sleep(2.3)
            flush(store_for(dsn), MailChannel({"support": ["support-alerts@secops.example"]}, "smtp_alerts"))

    first, digest = read_messages(smtp_sink)
    assert "support_triage run scheduled__0 exceeded" in first.subject
    assert first.message()["Message-ID"] == "<sla-miss-deadline-0@orchestrator.secops.example>"
    assert digest.subject.startswith("[SLA digest][support] 5 more run(s)")
    assert digest.rcpt_tos == ["support-alerts@secops.example"]
    named = digest.message()["X-Orchestrator-Runs"].split(", ")
    assert sorted(named) == [f"support_triage/{r}" for r in runs[1:]]
    body = digest.body()
    for n in range(1, 6):
        assert body.count(f">scheduled__{n}<") == 1
        assert body.count(f">RT-{n}<") == 1
    assert "scheduled__0" not in body


@contextlib.contextmanager
def postgres_connection_env(monkeypatch: pytest.MonkeyPatch, dsn: str) -> Iterator[None]:
    """The ``ratelimit_store`` connection pointing at ``dsn`` (an Airflow URI from the env)."""
    monkeypatch.setenv("AIRFLOW_CONN_RATELIMIT_STORE", dsn.replace("postgresql://", "postgres://", 1))
    yield
