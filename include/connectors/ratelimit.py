"""Rate limits shared by every worker of a deployment: pyrate-limiter buckets in PostgreSQL or Redis.

A per-process bucket would let N workers send N times the limit, so the bucket state lives in a
shared store, the ``ratelimit_store`` connection: a PostgreSQL database in the embedded default
(LocalExecutor), Redis in the distributed setup (CeleryExecutor; database 1 of the Redis whose
database 0 is the Celery broker). The scheme of the store's URL picks the bucket: ``postgresql://``
a table per bucket (pyrate-limiter's ``PostgresBucket``), ``redis://`` a sorted set per bucket
under the key ``ratelimit:<bucket>`` (``RedisBucket``). Either way permits are stamped with the
store's clock, so workers on different hosts share one time line. Each connector has a
deployment-wide limit and, optionally, a per-tenant limit; a call takes a permit from both. Limits
come from the connection extras:

``rate_limit_per_second`` / ``rate_limit_burst`` and ``tenant_rate_limit_per_second`` /
``tenant_rate_limit_burst``; bulk work (a hook made with ``bulk=True``, e.g. the support bulk
update) also takes a permit from ``bulk_rate_limit_per_second`` / ``bulk_rate_limit_burst``, a
share of the connector kept below its limit so a flood leaves room for everyone else.

``rate_limit_safety_margin`` (a fraction, default 0.05) stretches every window by that much, i.e.
runs the bucket at ``per_second / (1 + margin)``. Permits are stamped with the store's clock before
the request leaves, the service counts arrivals with its own: latency jitter and clock offset
between the two reach the service as calls "too early" at the window's edge, and a limit configured
at exactly the service's figure then draws the odd 429. A margin of 0.05 leaves 5 % of each window
as slack (50 ms of a 1 s window) for 5 % of the throughput; bench/ratelimit.py measures both
(0 % drew 13 429s in 413 calls from 4 processes, 5 % none at 0.94 of the allowed rate).

When the wait for a permit would exceed ``rate_limit_max_wait_seconds`` the limiter raises
:class:`RateLimitBackpressure` instead of sleeping, and the operator defers (frees its worker).
A Redis store that does not answer (down, timing out, loading its data after a restart) raises
:class:`TransientError`, which :meth:`HttpConnectorHook.request` retries with backoff like any other
transient failure; a Redis that refuses our credentials raises :class:`PermanentError`.

The Redis URL carries the store's password: it is never logged and never part of an error message
or of a limiter's ``repr`` (those name the store by host and port only).
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import SplitResult, quote, unquote, urlsplit

from include.connectors.errors import PermanentError, RateLimitBackpressure, TransientError

if TYPE_CHECKING:
    from pyrate_limiter.abstracts.algorithm import Decision

RATELIMIT_STORE_CONN_ID = "ratelimit_store"
DEFAULT_SAFETY_MARGIN = 0.05
# Keyed by process too: a pool (or client) inherited through fork() must not be shared with the
# parent.
_POOLS: dict[tuple[int, str], Any] = {}
_REDIS_CLIENTS: dict[tuple[int, str], Any] = {}
MIN_WAIT_MS = 10
CONTENTION_RETRY_MS = (2, 10)
# Nothing else removes expired entries (pyrate-limiter's Limiter runs a leaker thread; we use the
# buckets directly) and every put counts the whole table under the lock: about one admitted call in
# LEAK_EVERY deletes what has left the window, which keeps the table near a window's worth of rows.
LEAK_EVERY = 50
POSTGRES_SCHEMES = frozenset({"postgresql", "postgres"})
REDIS_SCHEMES = frozenset({"redis", "rediss"})
REDIS_KEY_PREFIX = "ratelimit:"
REDIS_DEFAULT_PORT = 6379
# Seconds, for the connect and for every command: a store that does not answer fails the attempt
# quickly and HttpConnectorHook.request retries it with its own backoff.
REDIS_SOCKET_TIMEOUT = 2.0
# A bucket's sorted set keeps its members for two windows and expires when no call was admitted for
# three windows, at least a minute: a bucket nobody uses any more leaves nothing behind.
REDIS_KEEP_WINDOWS = 2
REDIS_TTL_WINDOWS = 3
REDIS_MIN_TTL_MS = 60_000


@dataclass(frozen=True)
class RateLimit:
    """At most ``burst`` calls in any window of ``burst / per_second`` seconds (a sliding log),
    the window stretched by ``safety_margin`` (a fraction)."""

    per_second: float
    burst: int
    safety_margin: float = 0.0

    @property
    def window_ms(self) -> int:
        return max(1, round(self.burst / self.per_second * 1000 * (1 + self.safety_margin)))


@dataclass(frozen=True)
class RateLimitSettings:
    connector: RateLimit | None
    tenant: RateLimit | None
    max_wait_seconds: float
    # Bulk work's own share of the connector (SCALE-4): a bulk call takes a permit from this bucket
    # too, so a flood never has more than this rate and the rest of the connector's limit stays
    # free for interactive work (triage, HR, SOC).
    bulk: RateLimit | None = None

    @classmethod
    def from_extras(cls, extras: Mapping[str, Any], *, share: str | None = None) -> RateLimitSettings:
        """The limits of the connection extras, or of one named share of them (``share="triage"``:
        ``triage_rate_limit_per_second``, ``triage_tenant_rate_limit_per_second``, ...; the safety
        margin and the wait bound stay the connection's)."""
        prefix = f"{share}_" if share else ""
        margin = float(extras.get("rate_limit_safety_margin", DEFAULT_SAFETY_MARGIN))
        if margin < 0:
            raise ValueError(f"rate_limit_safety_margin is a fraction of the window, >= 0; got {margin}")

        def limit(kind: str) -> RateLimit | None:
            per_second = extras.get(f"{prefix}{kind}rate_limit_per_second")
            if per_second in (None, ""):
                return None
            burst = int(extras.get(f"{prefix}{kind}rate_limit_burst", max(1, round(float(per_second)))))
            return RateLimit(per_second=float(per_second), burst=burst, safety_margin=margin)

        return cls(
            connector=limit(""),
            tenant=limit("tenant_"),
            max_wait_seconds=float(extras.get("rate_limit_max_wait_seconds", 30.0)),
            bulk=limit("bulk_"),
        )


def bucket_key(*parts: str) -> str:
    """A table-safe bucket name: ``request_tracker__acme``."""
    return "__".join(re.sub(r"[^a-z0-9_]", "_", p.lower()) for p in parts)


# --- the store's URL -------------------------------------------------------------------------------
def _split(url: str) -> SplitResult:
    """``urlsplit`` whose errors do not quote the URL (a mangled password would end up in them)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - parsed lazily, and a bad port raises here
    except ValueError:
        raise ValueError("the rate-limit store URL does not parse") from None
    return parts


def store_label(url: str) -> str:
    """The store as it may appear in messages and reprs: ``redis://127.0.0.1:6379/1``, no credentials."""
    parts = _split(url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname}{port}{parts.path}"


def _host_port(url: str) -> str:
    parts = _split(url)
    return f"{parts.hostname}:{parts.port or REDIS_DEFAULT_PORT}"


def store_url(conn_id: str = RATELIMIT_STORE_CONN_ID) -> str:
    """The store's URL from its Airflow connection.

    conn_type ``redis``: ``redis://[login]:<password>@host:port/<db>`` (db from the extra ``db``,
    default 0; login and password percent-encoded). Anything else: a PostgreSQL database,
    ``postgresql://[userinfo@]host:port/<schema>``, the userinfo being the login and, when the
    connection has one, its password (percent-encoded). A secret when it holds a password: never
    log it.
    """
    from airflow.sdk import BaseHook

    return url_of_connection(BaseHook.get_connection(conn_id))


def url_of_connection(conn: Any) -> str:
    """:func:`store_url` of a connection already read (the triggerer reads it asynchronously)."""
    from airflow.sdk.log import mask_secret

    password = quote(conn.password or "", safe="")
    if password:
        mask_secret(password)  # Airflow masks the password as stored; this is how the URL spells it
    if conn.conn_type == "redis":
        login = quote(conn.login or "", safe="")
        userinfo = f"{login}:{password}@" if login or password else ""
        db = int(conn.extra_dejson.get("db", 0))
        return f"redis://{userinfo}{conn.host}:{conn.port or REDIS_DEFAULT_PORT}/{db}"
    # The database's own role (``ratelimit``), with its password: never a superuser.
    secret = f":{password}" if password else ""
    user = f"{quote(conn.login, safe='')}{secret}@" if conn.login else ""
    return f"postgresql://{user}{conn.host}:{conn.port or 5432}/{conn.schema or 'ratelimit'}"


# The name from when the store could only be PostgreSQL (base.py, bench/ratelimit.py, the tests).
store_dsn = store_url


# --- clients, one per process and store --------------------------------------------------------
def connection_pool(dsn: str) -> Any:
    """One small psycopg pool per process and store (tasks are short-lived processes).

    Not autocommit: PostgresBucket's check-and-insert runs under ``LOCK TABLE``, which PostgreSQL
    only accepts inside a transaction; the pool commits when each ``connection()`` block ends.
    """
    from psycopg_pool import ConnectionPool

    key = (os.getpid(), dsn)
    if key not in _POOLS:
        _POOLS[key] = ConnectionPool(dsn, min_size=1, max_size=4, open=True)
    return _POOLS[key]


def redis_client(url: str) -> Any:
    """One redis-py client (and its connection pool) per process and store, like connection_pool().

    Short socket timeouts and a single immediate reconnect instead of redis-py's default (three
    retries, backing off from 1 s): a store that does not answer fails the attempt within seconds
    and HttpConnectorHook.request does the backing off. The password goes to a credential provider rather
    than the client's keyword arguments, which redis-py's repr of a client lists in clear.
    """
    import redis
    from redis.backoff import NoBackoff
    from redis.credentials import UsernamePasswordCredentialProvider
    from redis.retry import Retry

    key = (os.getpid(), url)
    if key not in _REDIS_CLIENTS:
        parts = _split(url)
        try:
            db = int(parts.path.lstrip("/") or 0)
        except ValueError:
            raise ValueError("the rate-limit store URL's database is not a number") from None
        credentials = None
        if parts.username or parts.password:
            credentials = UsernamePasswordCredentialProvider(
                unquote(parts.username or ""), unquote(parts.password or "")
            )
        _REDIS_CLIENTS[key] = redis.Redis(
            host=parts.hostname or "localhost",
            port=parts.port or REDIS_DEFAULT_PORT,
            db=db,
            credential_provider=credentials,
            ssl=parts.scheme == "rediss",
            socket_timeout=REDIS_SOCKET_TIMEOUT,
            socket_connect_timeout=REDIS_SOCKET_TIMEOUT,
            retry=Retry(NoBackoff(), 1),
        )
    return _REDIS_CLIENTS[key]


# --- the buckets -------------------------------------------------------------------------------
# We drive pyrate-limiter's buckets ourselves rather than through its Limiter: the Limiter either
# blocks (for as long as the bucket says) or refuses, runs a leaker thread in every process, and
# reads the time from a clock object of its own. A call here must wait at most a bound, else raise
# backpressure (the operator defers instead of holding a worker); take its timestamp from the
# store; and turn a store outage into the connectors' TransientError, so the call is retried with
# backoff. Each wrapper below adds the store's part of that around one bucket: whose clock, when
# expired entries go, and which failures are transient.


class StoreError(Exception):
    """The rate-limit store failed. Named by host:port only (its URL holds the password)."""

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


class _PostgresStoreBucket:
    """A ``PostgresBucket``: a table ``ratelimit___<name>``, stamped with PostgreSQL's clock."""

    def __init__(self, name: str, limit: RateLimit, dsn: str) -> None:
        from pyrate_limiter import Rate
        from pyrate_limiter.buckets.postgres import PostgresBucket

        self.name = name
        self._bucket = PostgresBucket(connection_pool(dsn), name, [Rate(limit.burst, limit.window_ms)])

    def put(self) -> Decision:
        """Try to take one permit: the bucket's verdict."""
        from pyrate_limiter import RateItem

        item = RateItem(self.name, self._bucket.now(), 1)
        decision = cast("Decision", self._bucket.put_decision(item))  # a sync bucket: no awaitable
        if decision.allowed and random.random() < 1 / LEAK_EVERY:  # noqa: S311 - load spreading
            self._bucket.leak(item.timestamp)
        return decision


@contextlib.contextmanager
def _redis_errors(where: str) -> Iterator[None]:
    """Redis failures as :class:`StoreError`, without the chained original (``from None``)."""
    from redis import exceptions as rx

    # Down, unreachable, loading its data after a restart, failing over: worth another try. The
    # credential errors are ConnectionErrors too, but a wrong password does not fix itself.
    transient = (rx.ConnectionError, rx.TimeoutError, rx.ReadOnlyError, rx.TryAgainError, rx.ClusterDownError)
    refused = (rx.AuthenticationError, rx.AuthorizationError, rx.NoPermissionError)
    try:
        yield
    except rx.RedisError as exc:
        if isinstance(exc, refused):
            raise StoreError(f"rate-limit store {where} refused us: {exc}", transient=False) from None
        what = "unavailable" if isinstance(exc, transient) else "failed"
        message = f"rate-limit store {where} {what}: {type(exc).__name__}: {exc}"
        raise StoreError(message, transient=what == "unavailable") from None


# Run in front of RedisBucket's own script, in the same call: the check counts a window that ends at
# the caller's timestamp, so with timestamps taken before the call (a round trip earlier, or on
# another host) a worker that read the clock first but reached Redis second did not see the permit
# stamped later and both took the window's last one (bench/ratelimit.py, 4 processes on a busy 2-CPU
# box: 4-5 429s in 200 calls without this, 1-2 with it). This moves the timestamp and every window
# start onto the server's clock at the moment the script runs, so checks and puts are stamped in the
# order Redis executes them (TIME before a write: Redis >= 5 replicates scripts by their effects).
# ARGV as RedisBucket lays it out: [1] the timestamp, [4] the number of rates, [5 + 3k] the start of
# rate k+1's window (the timestamp minus the window), checked against the script in _put_script().
SERVER_CLOCK_PROLOGUE = """
local server_time = redis.call('TIME')
local server_now = tonumber(server_time[1]) * 1000 + math.floor(tonumber(server_time[2]) / 1000)
local shift = server_now - tonumber(ARGV[1])
ARGV[1] = server_now
for k = 0, tonumber(ARGV[4]) - 1 do
    ARGV[5 + 3 * k] = tonumber(ARGV[5 + 3 * k]) + shift
end
"""
_PUT_SCRIPT_ARGV = ("local now = ARGV[1]", "rates_count = tonumber(ARGV[4])", "tonumber(ARGV[5 + offset])")


def _put_script() -> str:
    """RedisBucket's check-and-insert script behind SERVER_CLOCK_PROLOGUE."""
    from pyrate_limiter.buckets.redis_bucket import LuaScript

    missing = [line for line in _PUT_SCRIPT_ARGV if line not in LuaScript.PUT_ITEM]
    if missing:
        raise RuntimeError(
            f"pyrate-limiter's RedisBucket script no longer reads {missing}: SERVER_CLOCK_PROLOGUE "
            "(include/connectors/ratelimit.py) must follow its new argument layout"
        )
    return SERVER_CLOCK_PROLOGUE + LuaScript.PUT_ITEM


class _RedisStoreBucket:
    """A ``RedisBucket``: a sorted set ``ratelimit:<name>``, stamped with the Redis server's clock.

    RedisBucket stamps items with the worker's own clock; with workers on several hosts their
    offsets would shift every window, and the stamp is taken before the check reaches Redis (see
    SERVER_CLOCK_PROLOGUE). The wait of a refused call is computed from the timestamp the worker
    passed: it reads the server's ``TIME`` first, a round trip before the check, so the wait is at
    most that round trip too long, never too short.
    """

    def __init__(self, name: str, limit: RateLimit, url: str) -> None:
        from pyrate_limiter import Rate
        from pyrate_limiter.buckets.redis_bucket import RedisBucket

        self.name = name
        self.key = f"{REDIS_KEY_PREFIX}{name}"
        self._where = _host_port(url)
        self._client = redis_client(url)
        self._script = _put_script()
        self._keep_ms = REDIS_KEEP_WINDOWS * limit.window_ms
        self._ttl_ms = max(REDIS_TTL_WINDOWS * limit.window_ms, REDIS_MIN_TTL_MS)
        with _redis_errors(self._where):
            script_hash = self._client.script_load(self._script)
        self._bucket = RedisBucket([Rate(limit.burst, limit.window_ms)], self._client, self.key, script_hash)

    def _now(self) -> int:
        seconds, micros = self._client.time()
        return int(seconds) * 1000 + int(micros) // 1000

    def put(self) -> Decision:
        """Try to take one permit: the bucket's verdict."""
        from pyrate_limiter import RateItem
        from redis.exceptions import NoScriptError

        with _redis_errors(self._where):
            item = RateItem(self.name, self._now(), 1)
            try:
                decision = cast("Decision", self._bucket.put_decision(item))  # a sync client
            except NoScriptError:
                # The server restarted since __init__ and lost its script cache: load it again.
                self._bucket.script_hash = self._client.script_load(self._script)
                decision = cast("Decision", self._bucket.put_decision(item))
            if decision.allowed:
                # Cheap in Redis, so on every admitted call (one round trip): drop what has left
                # the window (RedisBucket.leak, one window later so that no check that could still
                # count an entry misses it) and push the key's expiry back.
                pipe = self._client.pipeline(transaction=False)
                pipe.zremrangebyscore(self.key, "-inf", item.timestamp - self._keep_ms)
                pipe.pexpire(self.key, self._ttl_ms)
                pipe.execute()
        return decision


def _bucket_class(url: str) -> type[_PostgresStoreBucket] | type[_RedisStoreBucket]:
    scheme = _split(url).scheme
    if scheme in POSTGRES_SCHEMES:
        return _PostgresStoreBucket
    if scheme in REDIS_SCHEMES:
        return _RedisStoreBucket
    raise ValueError(f"rate-limit store scheme {scheme!r} is not one of postgresql://, redis://, rediss://")


class SharedRateLimiter:
    """Take permits from one or more shared buckets, waiting up to a bound, else raise backpressure.

    ``dsn``: the store's URL (see :func:`store_url`), ``postgresql://...`` or ``redis://...``.
    """

    def __init__(
        self,
        buckets: list[tuple[str, RateLimit]],
        *,
        dsn: str,
        max_wait_seconds: float,
        system: str,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._specs = buckets
        self._url = dsn
        self._bucket_class = _bucket_class(dsn)
        self.max_wait_seconds = max_wait_seconds
        self.system = system
        self._sleep = sleep
        self._buckets: list[_PostgresStoreBucket | _RedisStoreBucket] | None = None
        self.waited_seconds = 0.0

    def __repr__(self) -> str:
        names = [name for name, _ in self._specs]
        return (
            f"SharedRateLimiter(system={self.system!r}, buckets={names!r}, "
            f"store={store_label(self._url)!r}, max_wait_seconds={self.max_wait_seconds:g})"
        )

    def _open(self) -> list[_PostgresStoreBucket | _RedisStoreBucket]:
        if self._buckets is None:
            self._buckets = [self._bucket_class(name, limit, self._url) for name, limit in self._specs]
        return self._buckets

    @staticmethod
    def _wait_ms(bucket: _PostgresStoreBucket | _RedisStoreBucket) -> int | None:
        """Put one item; None if admitted, else how long until it would be."""
        decision = bucket.put()
        if decision.allowed:
            return None
        if decision.retry_after_ms is None:
            # Another worker holds the bucket's table lock (PostgresBucket locks it NOWAIT and
            # answers False): nothing was admitted and the bucket may have room; try again shortly,
            # jittered so the contenders do not collide again.
            return random.randint(*CONTENTION_RETRY_MS)  # noqa: S311 - load spreading, not security
        return max(int(decision.retry_after_ms), MIN_WAIT_MS)

    def acquire(self, operation: str) -> float:
        """Block until every bucket admitted one call (total wait <= bound); return seconds waited.

        A Redis store that fails raises :class:`TransientError` (unavailable: HttpConnectorHook.request
        retries the call) or :class:`PermanentError` (it refused us); a PostgreSQL store's errors
        propagate as psycopg raises them.
        """
        started = time.monotonic()
        try:
            for bucket in self._open():
                while (wait_ms := self._wait_ms(bucket)) is not None:
                    waited = time.monotonic() - started
                    if waited + wait_ms / 1000 > self.max_wait_seconds:
                        raise RateLimitBackpressure(
                            f"rate limit {bucket.name} needs {wait_ms / 1000:.1f}s more (waited "
                            f"{waited:.1f}s, bound {self.max_wait_seconds:g}s)",
                            system=self.system,
                            operation=operation,
                            wait_seconds=wait_ms / 1000,
                        )
                    self._sleep(wait_ms / 1000)
        except StoreError as exc:
            error = TransientError if exc.transient else PermanentError
            raise error(str(exc), system=self.system, operation=operation) from None
        waited = time.monotonic() - started
        self.waited_seconds += waited
        return waited


# --- one creator at a time per idempotency key --------------------------------------------------
# Search-before-create (ConnectorHook.create_once) is idempotent for one run retrying, but two runs
# sharing a key (one SOC ticket per alert, two triggers of one alert a second apart) could both
# search, both find nothing and both create. The lock below makes the search and the create one
# step per key across every worker, in the store the rate limiter already shares (PostgreSQL or
# Redis): no second service to run. pyrate-limiter has no lock; redis-py's Lock and PostgreSQL's
# advisory locks are what each store offers, wrapped so both behave alike.
CREATION_LOCK_PREFIX = "create:"


@contextlib.contextmanager
def creation_lock(url: str, name: str, *, wait_seconds: float, hold_seconds: float) -> Iterator[None]:
    """Hold the lock ``name`` in the store at ``url`` for the block; wait at most ``wait_seconds``.

    PostgreSQL: a transaction-level advisory lock (``pg_advisory_xact_lock`` on a 64-bit hash of the
    name) under ``lock_timeout``: released when the block's transaction ends, also when the
    process dies (the session ends). Redis: redis-py's ``Lock`` (``SET NX PX`` with a token, released
    only by its holder), which expires after ``hold_seconds`` if its holder dies.

    :param url: the store's URL (:func:`store_url`; a secret: never logged).
    :param name: what is created once (e.g. ``create:request_tracker:acme:idem-...``).
    :param wait_seconds: how long to wait for another holder.
    :param hold_seconds: Redis only: how long a dead holder keeps the lock.
    :raises StoreError: the store failed (transient: retry), or the lock was not free in time
        (transient: the holder is still creating; the retry's search will find its object).
    """
    where = store_label(url)
    busy = f"creation lock at {where} still held after {wait_seconds:g} s"
    if _split(url).scheme in REDIS_SCHEMES:
        from redis.exceptions import LockError

        with _redis_errors(where):
            lock = redis_client(url).lock(
                REDIS_KEY_PREFIX + CREATION_LOCK_PREFIX + name,
                timeout=hold_seconds,
                sleep=0.05,
                blocking_timeout=wait_seconds,
            )
            if not lock.acquire():
                raise StoreError(busy, transient=True)
        try:
            yield
        finally:
            with contextlib.suppress(LockError), _redis_errors(where):
                lock.release()  # expired meanwhile: nothing to release
        return
    import psycopg

    with connection_pool(url).connection() as conn:
        try:
            conn.execute(f"SET LOCAL lock_timeout = '{int(wait_seconds * 1000)}ms'")
            conn.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (CREATION_LOCK_PREFIX + name,)
            )
        except psycopg.errors.LockNotAvailable:
            raise StoreError(busy, transient=True) from None
        except psycopg.OperationalError as exc:
            raise StoreError(
                f"rate-limit store {where} unavailable: {type(exc).__name__}", transient=True
            ) from None
        yield  # the transaction, and with it the lock, ends with the block
