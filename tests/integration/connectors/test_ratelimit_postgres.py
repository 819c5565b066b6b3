"""One rate limit shared by several worker processes through its store, PostgreSQL (the embedded
default) or Redis (the distributed setup), refereed by a server that enforces the same limit: no 429
may come back, and the limit must be used, not just respected. Every test runs once per store.

Each store is a server of its own, started fresh for its tests and stopped at their end, never the
shared ``test`` stack: a PostgreSQL cluster (profile ``ratelimit-itest``, 127.0.0.1:25462) and a
Redis (profile ``ratelimit-redis-itest``, 127.0.0.1:16500, its rate-limit database). What only Redis
has (outages, credentials) is in test_shared_rate_limit_redis.py.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import pytest

from bench import ratelimit as bench
from devstack.config import Profile
from include.connectors.errors import RateLimitBackpressure
from include.connectors.ratelimit import DEFAULT_SAFETY_MARGIN, RateLimitSettings, SharedRateLimiter
from tests.support import stores
from tests.support.stores import postgres_database

PROFILE = Profile(name="ratelimit-itest", api_port=0, pg_port=25462, moto_port=0, smtp_port=0)
# Redis listens on api_port + 30 (nothing runs on the API port itself).
REDIS_PROFILE = Profile(
    name="ratelimit-redis-itest", api_port=16470, pg_port=0, moto_port=0, smtp_port=0, executor="celery"
)
SERVER_LIMIT = 20
SERVER_WINDOW = 1.0
# At most 5 % of the calls may meet a 429 (send-time jitter beyond the safety margin on a busy
# machine); a limiter that does not share its bucket gets far more.
MAX_429S = 10


@contextlib.contextmanager
def postgres_store() -> Iterator[str]:
    with postgres_database(PROFILE, bench.DATABASE):
        yield bench.store_dsn(PROFILE)


def redis_store() -> contextlib.AbstractContextManager[str]:
    return stores.redis_store(REDIS_PROFILE)


STORES = {"postgresql": postgres_store, "redis": redis_store}


@pytest.fixture(scope="module", params=list(STORES))
def store_dsn(request: pytest.FixtureRequest) -> Iterator[str]:
    """The store's URL (holds the Redis password: never printed)."""
    with STORES[request.param]() as url:
        yield url


def test_four_processes_share_one_limit(store_dsn: str) -> None:
    """Every call succeeds and the service never admits more than its limit in a window.

    A 429 needs the send-time jitter to exceed the safety margin (measured 3-60 ms under load);
    the zero-429 goal is the benchmark's figure (bench/ratelimit.py), not an assertion here, so a
    busy CI machine cannot fail the test on timing alone: CI measured 4 of 200 (2 %, slack -43 ms)
    on both stores, one per process in the first windows. A broken shared limiter (per-process
    buckets: 4x the rate) draws about three quarters of the calls as 429s and fails it by far.
    """
    result = bench.run(
        store_dsn,
        processes=4,
        calls=50,
        limit=SERVER_LIMIT,
        window_seconds=SERVER_WINDOW,
        safety_margin=bench.SAFETY_MARGIN,
    )
    bench.report(result)

    assert result.failed_calls == 0
    assert result.server_admitted == 200
    assert result.server_429s <= MAX_429S
    assert result.client_retries == result.server_429s
    assert result.max_admitted_in_window <= SERVER_LIMIT
    assert result.achieved_per_second >= 0.8 * SERVER_LIMIT / SERVER_WINDOW


def _limiter(dsn: str, name: str, extras: dict[str, float], sleeps: list[float]) -> SharedRateLimiter:
    settings = RateLimitSettings.from_extras(extras)
    assert settings.connector is not None

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        time.sleep(seconds)

    return SharedRateLimiter(
        [(name, settings.connector)],
        dsn=dsn,
        max_wait_seconds=settings.max_wait_seconds,
        system="itest",
        sleep=sleep,
    )


def test_exhausted_bucket_raises_backpressure_instead_of_sleeping(store_dsn: str) -> None:
    extras = {"rate_limit_per_second": 1, "rate_limit_burst": 3, "rate_limit_max_wait_seconds": 0.5}
    sleeps: list[float] = []
    limiter = _limiter(store_dsn, "itest_exhausted", extras, sleeps)
    for _ in range(3):
        limiter.acquire("op")
    assert sleeps == []

    needs_more = (
        r"^itest op: rate limit itest_exhausted needs \d+\.\ds more \(waited \d+\.\ds, bound 0\.5s\)$"
    )
    with pytest.raises(RateLimitBackpressure, match=needs_more) as raised:
        limiter.acquire("op")

    # The 3 s window (stretched by the default safety margin) frees its first permit that long
    # (+1 ms, the log's inclusive bound) after it was taken.
    window = 3 * (1 + DEFAULT_SAFETY_MARGIN)
    assert 0.5 < raised.value.wait_seconds <= window + 0.001
    assert sleeps == []  # raised instead of sleeping: the worker slot is not held


def test_a_wait_within_the_bound_is_slept(store_dsn: str) -> None:
    # The bound leaves room for slow store queries on a busy machine; the wait itself is ~0.42 s.
    extras = {"rate_limit_per_second": 5, "rate_limit_burst": 2, "rate_limit_max_wait_seconds": 2.0}
    sleeps: list[float] = []
    limiter = _limiter(store_dsn, "itest_within_bound", extras, sleeps)
    limiter.acquire("op")
    limiter.acquire("op")

    waited = limiter.acquire("op")

    # The 0.4 s window (stretched by the default safety margin) frees a permit that long after the
    # first one was taken.
    assert 0 < sum(sleeps) <= 0.4 * (1 + DEFAULT_SAFETY_MARGIN) + 0.001
    assert sum(sleeps) <= waited
