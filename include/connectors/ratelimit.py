"""Rate limits shared by every worker of a deployment: pyrate-limiter buckets in PostgreSQL.

A per-process bucket would let N workers send N times the limit, so the bucket state lives in a
shared store (the ``ratelimit_store`` connection: a PostgreSQL database; Redis in the distributed
setup). Each connector has a deployment-wide limit and, optionally, a per-tenant limit; a call
takes a permit from both. Limits come from the connection extras:

``rate_limit_per_second`` / ``rate_limit_burst`` and ``tenant_rate_limit_per_second`` /
``tenant_rate_limit_burst``.

``rate_limit_safety_margin`` (a fraction, default 0.05) stretches every window by that much, i.e.
runs the bucket at ``per_second / (1 + margin)``. Permits are stamped with the store's clock before
the request leaves, the service counts arrivals with its own: latency jitter and clock offset
between the two reach the service as calls "too early" at the window's edge, and a limit configured
at exactly the service's figure then draws the odd 429. A margin of 0.05 leaves 5 % of each window
as slack (50 ms of a 1 s window) for 5 % of the throughput; bench/ratelimit.py measures both
(0 % drew 13 429s in 413 calls from 4 processes, 5 % none at 0.94 of the allowed rate).

When the wait for a permit would exceed ``rate_limit_max_wait_seconds`` the limiter raises
:class:`RateLimitBackpressure` instead of sleeping, and the operator defers (frees its worker).
"""

from __future__ import annotations

import os
import random
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from include.connectors.errors import RateLimitBackpressure

RATELIMIT_STORE_CONN_ID = "ratelimit_store"
DEFAULT_SAFETY_MARGIN = 0.05
# Keyed by process too: a pool inherited through fork() must not be shared with the parent.
_POOLS: dict[tuple[int, str], Any] = {}
MIN_WAIT_MS = 10
CONTENTION_RETRY_MS = (2, 10)
# Nothing else removes expired entries (pyrate-limiter's Limiter runs a leaker thread; we use the
# buckets directly) and every put counts the whole table under the lock: about one admitted call in
# LEAK_EVERY deletes what has left the window, which keeps the table near a window's worth of rows.
LEAK_EVERY = 50


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

    @classmethod
    def from_extras(cls, extras: Mapping[str, Any]) -> RateLimitSettings:
        margin = float(extras.get("rate_limit_safety_margin", DEFAULT_SAFETY_MARGIN))
        if margin < 0:
            raise ValueError(f"rate_limit_safety_margin is a fraction of the window, >= 0; got {margin}")

        def limit(prefix: str) -> RateLimit | None:
            per_second = extras.get(f"{prefix}rate_limit_per_second")
            if per_second in (None, ""):
                return None
            burst = int(extras.get(f"{prefix}rate_limit_burst", max(1, round(float(per_second)))))
            return RateLimit(per_second=float(per_second), burst=burst, safety_margin=margin)

        return cls(
            connector=limit(""),
            tenant=limit("tenant_"),
            max_wait_seconds=float(extras.get("rate_limit_max_wait_seconds", 30.0)),
        )


def bucket_key(*parts: str) -> str:
    """A table-safe bucket name: ``request_tracker__acme``."""
    return "__".join(re.sub(r"[^a-z0-9_]", "_", p.lower()) for p in parts)


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


def store_dsn(conn_id: str = RATELIMIT_STORE_CONN_ID) -> str:
    from airflow.sdk import BaseHook

    conn = BaseHook.get_connection(conn_id)
    user = f"{conn.login}@" if conn.login else ""
    return f"postgresql://{user}{conn.host}:{conn.port or 5432}/{conn.schema or 'ratelimit'}"


class SharedRateLimiter:
    """Take permits from one or more shared buckets, waiting up to a bound, else raise backpressure."""

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
        self._dsn = dsn
        self.max_wait_seconds = max_wait_seconds
        self.system = system
        self._sleep = sleep
        self._buckets: list[tuple[str, Any]] | None = None
        self.waited_seconds = 0.0

    def _open(self) -> list[tuple[str, Any]]:
        from pyrate_limiter import Rate
        from pyrate_limiter.buckets.postgres import PostgresBucket

        if self._buckets is None:
            pool = connection_pool(self._dsn)
            self._buckets = [
                (name, PostgresBucket(pool, name, [Rate(limit.burst, limit.window_ms)]))
                for name, limit in self._specs
            ]
        return self._buckets

    def _wait_ms(self, bucket: Any, name: str) -> int | None:
        """Put one item; None if admitted, else how long until it would be."""
        from pyrate_limiter import RateItem

        item = RateItem(name, bucket.now(), 1)
        decision = bucket.put_decision(item)
        if decision.allowed:
            if random.random() < 1 / LEAK_EVERY:  # noqa: S311 - load spreading, not security
                bucket.leak(item.timestamp)
            return None
        if decision.retry_after_ms is None:
            # Another worker holds the bucket's table lock (PostgresBucket locks it NOWAIT and
            # answers False): nothing was admitted and the bucket may have room; try again shortly,
            # jittered so the contenders do not collide again.
            return random.randint(*CONTENTION_RETRY_MS)  # noqa: S311 - load spreading, not security
        return max(int(decision.retry_after_ms), MIN_WAIT_MS)

    def acquire(self, operation: str) -> float:
        """Block until every bucket admitted one call (total wait <= bound); return seconds waited."""
        started = time.monotonic()
        for name, bucket in self._open():
            while (wait_ms := self._wait_ms(bucket, name)) is not None:
                waited = time.monotonic() - started
                if waited + wait_ms / 1000 > self.max_wait_seconds:
                    raise RateLimitBackpressure(
                        f"rate limit {name} needs {wait_ms / 1000:.1f}s more (waited {waited:.1f}s, "
                        f"bound {self.max_wait_seconds:g}s)",
                        system=self.system,
                        operation=operation,
                        wait_seconds=wait_ms / 1000,
                    )
                self._sleep(wait_ms / 1000)
        waited = time.monotonic() - started
        self.waited_seconds += waited
        return waited
