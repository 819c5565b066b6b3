"""SLA alerts people can read: the first miss of a domain mails at once, the rest go into a digest.

A burst that runs late used to send one mail per late run (about 170 in one burst). Now each
missed SLA (a Deadline Alert's callback, :class:`include.workflows.alerts.SlaMissNotifier`) is
*recorded* in the shared store, and mails are sent by whoever *claims* them:

- ``record``: under one lock per domain, the store looks at the domain's window. None open (or the
  last one closed): this miss opens a window of the domain's ``alerts.digest_window``
  (``domains.yaml``, default ``defaults.sla_digest_window``) and is its own batch,
  ``immediate:<miss>``, due now. A window open: the miss joins the window's batch,
  ``digest:<domain>:<closes at>``, due when the window closes. A miss recorded twice (a callback
  retried) is recorded once.
- ``claim``: atomically takes every due batch nobody holds (or whose holder's lease ran out: a
  sender that died after claiming); each batch is one mail. ``done`` marks a batch sent,
  ``release`` gives it back after a failed send so the next flush sends it.
- who flushes: every SLA callback flushes what is due (its own immediate miss included), and the
  ``platform_sla_digest`` DAG flushes every 5 minutes, so a window closes even when nobody misses
  again. Several triggerers, workers and schedulers may flush at once: the claim gives each batch
  to one of them.

A miss is lost only if the store loses it; it is mailed twice only if a sender dies after the
relay accepted the mail and before ``done`` (the lease then expires and the batch is sent again,
with the same ``Message-ID``, which mail clients fold into one).

The store is the connectors' shared store (``ratelimit_store``; :mod:`include.connectors.ratelimit`):
PostgreSQL tables ``sla_digest_window`` and ``sla_digest_miss``, or Redis keys under
``{sladigest}:`` (one hash slot, Lua scripts). Both use the store's clock.

The same alerts go to the domain's Teams channel (``alerts.teams_channel`` in ``domains.yaml``):
:class:`TeamsChannel`, in :data:`BATCH_CHANNELS`, posts one card per batch the mail channel sent (the
immediate miss, or the digest), after the mail and only for a domain with a channel. A post that
still fails after the connection's retries is a ``notification.failed`` audit record and metric
(:func:`include.approvals.channels.post_domain_card`), never a reason to send the mail again.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from html import escape
from typing import Any, Literal, Protocol, cast

log = logging.getLogger(__name__)

# A claimed batch whose sender has not said done or release within this lease is claimable again.
CLAIM_LEASE = timedelta(minutes=5)
# How long a step waits for a connection of the PostgreSQL store: a store that does not answer
# makes the SLA callback mail its miss on its own instead of holding the alert.
STORE_TIMEOUT_SECONDS = 5.0
# A transaction PostgreSQL picked as a deadlock's victim is run again, up to this many times in all.
DEADLOCK_ATTEMPTS = 4
# Sent misses are kept this long, so a callback retried after the mail went out is recognised.
KEEP_SENT = timedelta(days=2)
Outcome = Literal["immediate", "digest", "duplicate"]
# Runs named per digest mail (a larger digest goes out as several mails): about 35 KB of headers.
MAX_MAIL_RUNS = 500


@dataclass(frozen=True)
class LateRun:
    """One missed SLA: which run, whose, and when its deadline was.

    :param miss_id: unique per missed deadline (the Deadline's id); a retried callback repeats it.
    :param deadline_at: ISO 8601, UTC.
    """

    miss_id: str
    domain: str
    dag_id: str
    run_id: str
    correlation_id: str
    kind: str
    sla_seconds: float
    deadline_at: str
    queued_at: str = ""
    state: str = ""
    url: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> LateRun:
        return cls(**json.loads(text))

    def late_by(self, now: datetime) -> timedelta:
        """How late the run is at ``now`` (past its deadline)."""
        return max(now - datetime.fromisoformat(self.deadline_at), timedelta(0))


@dataclass(frozen=True)
class Batch:
    """Misses that go out in one message: one immediate miss, or a domain window's digest."""

    key: str
    domain: str
    runs: tuple[LateRun, ...]
    token: str = field(default="", compare=False)

    @property
    def immediate(self) -> bool:
        return self.key.startswith("immediate:")


class DigestStore(Protocol):
    def record(self, miss: LateRun, window: timedelta) -> Outcome: ...

    def claim(self, lease: timedelta = CLAIM_LEASE, horizon: timedelta = timedelta(0)) -> list[Batch]: ...

    def done(self, batch: Batch) -> None: ...

    def release(self, batch: Batch) -> None: ...


# --- PostgreSQL ---------------------------------------------------------------------------------
_PG_SCHEMA = """
CREATE TABLE IF NOT EXISTS sla_digest_window (
    domain text PRIMARY KEY,
    closes_at timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS sla_digest_miss (
    miss_id text PRIMARY KEY,
    domain text NOT NULL,
    batch text NOT NULL,
    due_at timestamptz NOT NULL,
    payload text NOT NULL,
    claimed_by text,
    claimed_until timestamptz,
    sent_at timestamptz
);
CREATE INDEX IF NOT EXISTS sla_digest_miss_due ON sla_digest_miss (due_at) WHERE sent_at IS NULL;
"""


def _retry_deadlocks(method: Any) -> Any:
    """Run a store transaction again when PostgreSQL chose it as a deadlock's victim (it was rolled
    back whole, so running it again is safe). Claims lock the rows of several batches while a
    ``done`` or ``release`` locks one batch's: under load they deadlock now and then, and a ``done``
    that raised left the sender's other claimed batches unsent until their lease ran out."""

    @functools.wraps(method)
    def run(*args: Any, **kwargs: Any) -> Any:
        # Imported here: this module is imported where DAGs are parsed.
        import psycopg
        from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_random

        for attempt in Retrying(
            retry=retry_if_exception_type(psycopg.errors.DeadlockDetected),
            stop=stop_after_attempt(DEADLOCK_ATTEMPTS),
            wait=wait_random(0.01, 0.1),
            reraise=True,
        ):
            with attempt:
                return method(*args, **kwargs)
        raise AssertionError("unreachable: tenacity re-raises the last error")

    return run


class PostgresDigestStore:
    """Pending misses in two tables of the shared PostgreSQL store; row locks make it atomic."""

    def __init__(self, dsn: str) -> None:
        from include.connectors.ratelimit import connection_pool

        self.pool = connection_pool(dsn)
        with self.pool.connection(timeout=STORE_TIMEOUT_SECONDS) as conn:
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('sla_digest_schema'))")
            conn.execute(_PG_SCHEMA)

    def __repr__(self) -> str:
        return "PostgresDigestStore()"

    @_retry_deadlocks
    def record(self, miss: LateRun, window: timedelta) -> Outcome:
        with self.pool.connection(timeout=STORE_TIMEOUT_SECONDS) as conn:
            conn.execute(
                "INSERT INTO sla_digest_window (domain, closes_at) VALUES (%s, 'epoch') "
                "ON CONFLICT (domain) DO NOTHING",
                (miss.domain,),
            )
            # The domain's lock: every record of a domain runs one after the other from here.
            row = conn.execute(
                "SELECT closes_at, clock_timestamp() FROM sla_digest_window WHERE domain = %s FOR UPDATE",
                (miss.domain,),
            ).fetchone()
            assert row is not None
            closes_at, now = row
            if conn.execute("SELECT 1 FROM sla_digest_miss WHERE miss_id = %s", (miss.miss_id,)).fetchone():
                return "duplicate"
            outcome: Outcome
            if closes_at <= now:
                outcome, batch, due = "immediate", f"immediate:{miss.miss_id}", now
                conn.execute(
                    "UPDATE sla_digest_window SET closes_at = %s WHERE domain = %s",
                    (now + window, miss.domain),
                )
            else:
                outcome, batch, due = "digest", f"digest:{miss.domain}:{closes_at.isoformat()}", closes_at
            conn.execute(
                "INSERT INTO sla_digest_miss (miss_id, domain, batch, due_at, payload) "
                "VALUES (%s, %s, %s, %s, %s)",
                (miss.miss_id, miss.domain, batch, due, miss.to_json()),
            )
            conn.execute("DELETE FROM sla_digest_miss WHERE sent_at < clock_timestamp() - %s", (KEEP_SENT,))
            return outcome

    @_retry_deadlocks
    def claim(self, lease: timedelta = CLAIM_LEASE, horizon: timedelta = timedelta(0)) -> list[Batch]:
        """Take every batch due within ``horizon`` from now that nobody holds; ``horizon`` > 0 sends
        open windows early (an operator's "send the digests now")."""
        token = uuid.uuid4().hex
        with self.pool.connection(timeout=STORE_TIMEOUT_SECONDS) as conn:
            rows = conn.execute(
                "UPDATE sla_digest_miss SET claimed_by = %s, claimed_until = clock_timestamp() + %s "
                "WHERE batch IN (SELECT DISTINCT batch FROM sla_digest_miss WHERE sent_at IS NULL "
                "AND due_at <= clock_timestamp() + %s "
                "AND (claimed_until IS NULL OR claimed_until < clock_timestamp())) "
                "AND sent_at IS NULL AND (claimed_until IS NULL OR claimed_until < clock_timestamp()) "
                "RETURNING batch, domain, payload",
                (token, lease, horizon),
            ).fetchall()
        return _batches(((b, d, p) for b, d, p in rows), token)

    @_retry_deadlocks
    def done(self, batch: Batch) -> None:
        with self.pool.connection(timeout=STORE_TIMEOUT_SECONDS) as conn:
            conn.execute(
                "UPDATE sla_digest_miss SET sent_at = clock_timestamp() WHERE batch = %s AND claimed_by = %s",
                (batch.key, batch.token),
            )

    @_retry_deadlocks
    def release(self, batch: Batch) -> None:
        with self.pool.connection(timeout=STORE_TIMEOUT_SECONDS) as conn:
            conn.execute(
                "UPDATE sla_digest_miss SET claimed_by = NULL, claimed_until = NULL "
                "WHERE batch = %s AND claimed_by = %s AND sent_at IS NULL",
                (batch.key, batch.token),
            )


# --- Redis --------------------------------------------------------------------------------------
# One hash slot ({sladigest}) so the scripts may touch every key. Per miss a hash
# {sladigest}:miss:<id> (payload, batch, domain, claimed_by, claimed_until, sent); the sorted set
# {sladigest}:due holds the unsent misses by due time (ms); {sladigest}:window:<domain> the
# domain's window end (ms).
_R = "{sladigest}:"
_NOW_LUA = (
    "local t = redis.call('TIME'); local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
)
_RECORD_LUA = (
    _NOW_LUA
    + """
local miss_key, due_key, window_key = KEYS[1], KEYS[2], KEYS[3]
local miss_id, domain, payload, window_ms = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
if redis.call('EXISTS', miss_key) == 1 then return {'duplicate', ''} end
local closes = tonumber(redis.call('GET', window_key) or '0')
local outcome, batch, due
if closes <= now then
  outcome, batch, due = 'immediate', 'immediate:' .. miss_id, now
  redis.call('SET', window_key, tostring(now + window_ms), 'PX', window_ms + 86400000)
else
  outcome, batch, due = 'digest', 'digest:' .. domain .. ':' .. tostring(closes), closes
end
redis.call('HSET', miss_key, 'payload', payload, 'batch', batch, 'domain', domain)
redis.call('ZADD', due_key, due, miss_id)
return {outcome, batch}
"""
)
_CLAIM_LUA = (
    _NOW_LUA
    + """
local due_key, prefix, token, lease_ms = KEYS[1], ARGV[1], ARGV[2], tonumber(ARGV[3])
local horizon_ms = tonumber(ARGV[4])
local out = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', due_key, '-inf', now + horizon_ms)) do
  local key = prefix .. 'miss:' .. id
  local until_ = tonumber(redis.call('HGET', key, 'claimed_until') or '0')
  if until_ < now then
    redis.call('HSET', key, 'claimed_by', token, 'claimed_until', tostring(now + lease_ms))
    local f = redis.call('HMGET', key, 'batch', 'domain', 'payload')
    table.insert(out, f[1]); table.insert(out, f[2]); table.insert(out, f[3])
  end
end
return out
"""
)
_FINISH_LUA = """
local due_key, prefix, token, sent, keep_ms = KEYS[1], ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
for i = 5, #ARGV do
  local key = prefix .. 'miss:' .. ARGV[i]
  if redis.call('HGET', key, 'claimed_by') == token then
    if sent == '1' then
      redis.call('ZREM', due_key, ARGV[i])
      redis.call('HSET', key, 'sent', '1')
      redis.call('PEXPIRE', key, keep_ms)
    else
      redis.call('HDEL', key, 'claimed_by', 'claimed_until')
    end
  end
end
return 1
"""


class RedisDigestStore:
    """Pending misses in Redis; each step is one Lua script, so atomic across clients."""

    def __init__(self, url: str) -> None:
        from include.connectors.ratelimit import redis_client

        self.client = redis_client(url)
        self._record = self.client.register_script(_RECORD_LUA)
        self._claim = self.client.register_script(_CLAIM_LUA)
        self._finish = self.client.register_script(_FINISH_LUA)

    def __repr__(self) -> str:
        return "RedisDigestStore()"

    def record(self, miss: LateRun, window: timedelta) -> Outcome:
        keys = [f"{_R}miss:{miss.miss_id}", f"{_R}due", f"{_R}window:{miss.domain}"]
        args = [miss.miss_id, miss.domain, miss.to_json(), int(window.total_seconds() * 1000)]
        outcome, _ = self._record(keys=keys, args=args)
        text = outcome.decode() if isinstance(outcome, bytes) else str(outcome)
        return cast("Outcome", text)

    def claim(self, lease: timedelta = CLAIM_LEASE, horizon: timedelta = timedelta(0)) -> list[Batch]:
        token = uuid.uuid4().hex
        args = [_R, token, int(lease.total_seconds() * 1000), int(horizon.total_seconds() * 1000)]
        flat = self._claim(keys=[f"{_R}due"], args=args)
        text = [v.decode() if isinstance(v, bytes) else v for v in flat]
        return _batches(((text[i], text[i + 1], text[i + 2]) for i in range(0, len(text), 3)), token)

    def _end(self, batch: Batch, sent: bool) -> None:
        args = [_R, batch.token, "1" if sent else "0", int(KEEP_SENT.total_seconds() * 1000)]
        self._finish(keys=[f"{_R}due"], args=[*args, *(r.miss_id for r in batch.runs)])

    def done(self, batch: Batch) -> None:
        self._end(batch, True)

    def release(self, batch: Batch) -> None:
        self._end(batch, False)


def _batches(rows: Any, token: str) -> list[Batch]:
    grouped: dict[str, tuple[str, list[LateRun]]] = {}
    for key, domain, payload in rows:
        grouped.setdefault(key, (domain, []))[1].append(LateRun.from_json(payload))
    return [
        Batch(key, domain, tuple(sorted(runs, key=lambda r: (r.deadline_at, r.miss_id))), token)
        for key, (domain, runs) in sorted(grouped.items())
    ]


_STORES: dict[tuple[int, str], DigestStore] = {}


def store_for(url: str) -> DigestStore:
    """The digest store on the shared store at ``url`` (``postgresql://`` or ``redis://``); one per
    process and URL (the URL may hold a password: it is never part of a message)."""
    from include.connectors.ratelimit import POSTGRES_SCHEMES, REDIS_SCHEMES, _split

    key = (os.getpid(), url)
    if key not in _STORES:
        scheme = _split(url).scheme
        if scheme in POSTGRES_SCHEMES:
            _STORES[key] = PostgresDigestStore(url)
        elif scheme in REDIS_SCHEMES:
            _STORES[key] = RedisDigestStore(url)
        else:
            raise ValueError(f"SLA digest store: unsupported store scheme {scheme!r} (postgresql or redis)")
    return _STORES[key]


def default_store() -> DigestStore:
    """The digest store on the deployment's shared store (connection ``ratelimit_store``)."""
    from include.connectors.ratelimit import store_url

    return store_for(store_url())


async def adefault_store() -> DigestStore:
    """:func:`default_store` for the triggerer: the connection is read on the event loop (the
    SDK's async lookup), the store is opened in a thread."""
    from airflow.sdk import BaseHook

    from include.connectors.ratelimit import RATELIMIT_STORE_CONN_ID, url_of_connection

    url = url_of_connection(await BaseHook.aget_connection(RATELIMIT_STORE_CONN_ID))
    return await asyncio.to_thread(store_for, url)


# --- the messages -------------------------------------------------------------------------------
def as_moment(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and value:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    return None


def sla_subject(domain: str, kind: str, sla: timedelta, dag_id: str, run_id: str) -> str:
    return f"[SLA miss][{domain}] {dag_id} run {run_id} exceeded its {kind.replace('_', ' ')} SLA of {sla}"


def _waited_between(since: datetime, now: datetime) -> str:
    from include.approvals.messages import waited

    return waited(since, now)


def immediate_message(late: LateRun, now: datetime) -> tuple[str, str, dict[str, str]]:
    """Subject, HTML body and headers of the mail for one missed SLA (a domain's first in its window)."""
    queued_at, deadline_at = as_moment(late.queued_at), as_moment(late.deadline_at)
    sla = timedelta(seconds=late.sla_seconds)
    rows = [
        ("Domain", late.domain),
        ("Workflow", late.dag_id),
        ("Run", f"{late.run_id} (state {late.state or '?'})"),
        ("Correlation id", late.correlation_id),
        ("SLA", f"{late.kind.replace('_', ' ')}: {sla} from queued"),
        ("Queued at", str(queued_at)),
        ("Deadline", str(deadline_at)),
        ("Late by", _waited_between(deadline_at, now) if deadline_at else "unknown"),
        ("Running for", _waited_between(queued_at, now) if queued_at else "unknown"),
    ]
    table = "".join(f"<tr><th align='left'>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in rows)
    subject = sla_subject(late.domain, late.kind, sla, late.dag_id, late.run_id)
    html = f'<table>{table}</table><p><a href="{escape(late.url)}">Open the run</a></p>'
    headers = {
        "X-Orchestrator-Correlation-Id": late.correlation_id,
        "X-Orchestrator-Alert": f"sla-miss/{late.domain}/{late.dag_id}",
        "Message-ID": f"<sla-miss-{late.miss_id}@orchestrator.secops.example>",
    }
    return subject, html, headers


def _rows_html(rows: Sequence[tuple[str, str]]) -> str:
    return "".join(f"<tr><th align='left'>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in rows)


def _waited(delta: timedelta) -> str:
    from include.approvals.messages import waited

    now = datetime.now(UTC)
    return waited(now - delta, now)


def digest_message(batch: Batch, now: datetime) -> tuple[str, str, dict[str, str]]:
    """Subject, HTML body and headers of a digest: every late run of the window, once each."""
    runs = batch.runs
    first, last = runs[0].deadline_at, runs[-1].deadline_at
    subject = (
        f"[SLA digest][{batch.domain}] {len(runs)} more run(s) missed their SLA "
        f"({first[:16]} .. {last[:16]} UTC)"
    )
    head = "".join(
        f"<th>{h}</th>" for h in ("Workflow", "Run", "Correlation id", "SLA", "Deadline", "Late by")
    )
    head = f"<tr>{head}</tr>"
    body = "".join(
        "<tr>"
        f"<td>{escape(r.dag_id)}</td>"
        f"<td>{f'<a href={chr(34)}{escape(r.url)}{chr(34)}>' if r.url else ''}{escape(r.run_id)}"
        f"{'</a>' if r.url else ''}</td>"
        f"<td>{escape(r.correlation_id)}</td>"
        f"<td>{escape(r.kind.replace('_', ' '))}: {timedelta(seconds=r.sla_seconds)}</td>"
        f"<td>{escape(r.deadline_at)}</td>"
        f"<td>{escape(_waited(r.late_by(now)))}</td>"
        "</tr>"
        for r in runs
    )
    html = (
        f"<p>{len(runs)} run(s) of domain {escape(batch.domain)} missed their SLA after the first miss of "
        "this window (mailed on its own). Late by: at the time of this mail.</p>"
        f"<table border='1' cellpadding='4'>{head}{body}</table>"
    )
    identity = "|".join([batch.key, *(r.miss_id for r in runs)])
    headers = {
        "X-Orchestrator-Alert": f"sla-digest/{batch.domain}",
        "X-Orchestrator-Correlation-Id": ", ".join(r.correlation_id for r in runs),
        # Machine-readable: every late run of the digest, dag_id/run_id, once each.
        "X-Orchestrator-Runs": ", ".join(f"{r.dag_id}/{r.run_id}" for r in runs),
        # Same batch, same misses: same id (a re-send after a lost "done" folds into the first).
        "Message-ID": f"<sla-digest-{uuid.uuid5(uuid.NAMESPACE_URL, identity)}@orchestrator.secops.example>",
    }
    return subject, html, headers


class MailChannel:
    """The domain's alert list by e-mail, through the platform's SMTP relay."""

    def __init__(self, recipients: dict[str, Sequence[str]], conn_id: str | None = None) -> None:
        self.recipients = recipients
        self.conn_id = conn_id

    def _relay(self) -> Any:
        from include.connectors.smtp import ALERT_SMTP_CONN_ID, SmtpRelayHook

        return SmtpRelayHook(self.conn_id or ALERT_SMTP_CONN_ID)

    def _messages(self, batch: Batch, now: datetime) -> list[tuple[str, str, dict[str, str]]]:
        """One mail per :data:`MAX_MAIL_RUNS` runs of a digest: relays cap a mail's header block
        (Postfix: 100 KB by default), and a storm's digest names every run in a header. A re-send
        after a part failed repeats the parts sent already with their own ``Message-ID``."""
        if batch.immediate:
            return [immediate_message(batch.runs[0], now)]
        runs = batch.runs
        return [
            digest_message(replace(batch, runs=runs[i : i + MAX_MAIL_RUNS]), now)
            for i in range(0, len(runs), MAX_MAIL_RUNS)
        ]

    def send(self, batch: Batch, now: datetime) -> None:
        for subject, html, headers in self._messages(batch, now):
            self._relay().send(list(self.recipients[batch.domain]), subject, html, headers=headers)

    async def asend(self, batch: Batch, now: datetime) -> None:
        for subject, html, headers in self._messages(batch, now):
            await self._relay().asend(list(self.recipients[batch.domain]), subject, html, headers=headers)


class BatchChannel(Protocol):
    def send(self, batch: Batch, now: datetime) -> None: ...

    async def asend(self, batch: Batch, now: datetime) -> None: ...


# A Teams card lists at most this many runs (the webhook refuses a message over 28 KB); the mail
# names every one.
MAX_CARD_RUNS = 40


def teams_card(batch: Batch, now: datetime) -> dict[str, Any]:
    """The Adaptive Card of one batch: the immediate miss's facts, or the digest's late runs (how
    late, correlation id), the same as the mail says."""
    from include.approvals.channels import text_card

    if batch.immediate:
        late = batch.runs[0]
        subject, _, _ = immediate_message(late, now)
        deadline_at = as_moment(late.deadline_at)
        lines = [
            f"Run {late.run_id} of {late.dag_id} (state {late.state or '?'})",
            f"Correlation id: {late.correlation_id}",
            f"Late by: {_waited_between(deadline_at, now) if deadline_at else 'unknown'}",
        ]
        return text_card(subject, lines, links={"Open the run": late.url})
    subject, _, _ = digest_message(batch, now)
    shown = batch.runs[:MAX_CARD_RUNS]
    lines = [f"{r.dag_id} {r.run_id} · {r.correlation_id} · late by {_waited(r.late_by(now))}" for r in shown]
    if len(batch.runs) > len(shown):
        lines.append(f"... and {len(batch.runs) - len(shown)} more: the digest mail names every run.")
    return text_card(subject, lines)


class TeamsChannel:
    """The domain's Teams channel (``alerts.teams_channel``): one card per batch; none without a
    channel. Never raises: a failed post is a ``notification.failed`` record (stage ``sla_alert``)."""

    stage = "sla_alert"

    def send(self, batch: Batch, now: datetime) -> None:
        from include.approvals.channels import post_domain_card

        post_domain_card(
            batch.domain,
            teams_card(batch, now),
            what=self.stage,
            log=log,
            correlation_id=batch.runs[0].correlation_id if batch.immediate else None,
        )

    async def asend(self, batch: Batch, now: datetime) -> None:
        """:meth:`send` for the triggerer: the connection lookup and the post run in a worker thread
        of their own (not asgiref's one shared thread, which the approval triggers' polls use)."""
        await asyncio.to_thread(self.send, batch, now)

    def __repr__(self) -> str:
        return "TeamsChannel()"


# More channels than the mail: each gets every batch the mail channel sent; only the mail channel
# decides whether a batch counts as sent (a failing extra channel is recorded, not retried).
BATCH_CHANNELS: list[BatchChannel] = [TeamsChannel()]


def domain_recipients() -> dict[str, Sequence[str]]:
    from include.policies.loader import load_domain_policy

    return {name: d.alert_emails for name, d in load_domain_policy().domains.items()}


def flush(
    store: DigestStore, mail: BatchChannel, *, now: datetime | None = None, horizon: timedelta = timedelta(0)
) -> list[Batch]:
    """Claim every due batch and send it; return the batches sent. A failed send is released.

    :param horizon: also send batches due within this much from now (open windows, early).
    """
    sent = []
    for batch in store.claim(horizon=horizon):
        moment = now or datetime.now(UTC)
        try:
            mail.send(batch, moment)
        except Exception:
            store.release(batch)
            log.exception(
                "SLA alert batch %s of domain %s not sent; released for the next flush",
                batch.key,
                batch.domain,
            )
            continue
        try:
            store.done(batch)
        except Exception:
            # Sent, not marked: it goes again when its lease ends (a duplicate, never a loss); the
            # other batches this flush claimed still go now.
            log.exception("SLA alert batch %s sent but not marked sent; it may be sent again", batch.key)
        sent.append(batch)
        for channel in BATCH_CHANNELS:
            try:
                channel.send(batch, moment)
            except Exception:
                log.exception("SLA alert batch %s: extra channel %r failed", batch.key, channel)
    return sent


async def aflush(store: DigestStore, mail: BatchChannel) -> list[Batch]:
    """:func:`flush` for the triggerer: the store's calls run in a thread, the mail is async."""
    sent = []
    for batch in await asyncio.to_thread(store.claim):
        moment = datetime.now(UTC)
        try:
            await mail.asend(batch, moment)
        except Exception:
            await asyncio.to_thread(store.release, batch)
            log.exception(
                "SLA alert batch %s of domain %s not sent; released for the next flush",
                batch.key,
                batch.domain,
            )
            continue
        try:
            await asyncio.to_thread(store.done, batch)
        except Exception:
            log.exception("SLA alert batch %s sent but not marked sent; it may be sent again", batch.key)
        sent.append(batch)
        for channel in BATCH_CHANNELS:
            try:
                await channel.asend(batch, moment)
            except Exception:
                log.exception("SLA alert batch %s: extra channel %r failed", batch.key, channel)
    return sent


def flush_due(horizon: timedelta = timedelta(0)) -> dict[str, Any]:
    """The ``platform_sla_digest`` task: send every due batch of every domain.

    :param horizon: also send the windows closing within this much from now.
    """
    batches = flush(default_store(), MailChannel(domain_recipients()), horizon=horizon)
    return {"batches": len(batches), "runs": sum(len(b.runs) for b in batches)}
