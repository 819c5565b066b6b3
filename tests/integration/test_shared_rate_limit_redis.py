"""What only the Redis store of the shared rate limit has: its keys, its outages and its password.

The limiting itself (four processes, backpressure, bounded waits) is tested for both stores in
test_shared_rate_limit.py. This module runs a Redis of its own (Debian's redis-server through
devstack/redis; profile ``ratelimit-redis-outage-itest``, 127.0.0.1:16501), started fresh
for the module and stopped by its PID at the end; tests stop and restart it, so it is never a
shared one. The store URL holds the password: tests check it never shows, they never print it.
"""

from __future__ import annotations

import os
import tempfile

# Airflow reads its configuration when first imported: keep it away from any real installation.
if "AIRFLOW_HOME" not in os.environ:
    os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="orchestrator-itest-airflow-")
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")

import dataclasses
import json
import time
import traceback
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
import redis as redis_py
from airflow.sdk import Connection

from devstack import moto_seed, redis
from devstack.config import HOST, Profile
from devstack.standins.fault import FaultServer
from include.connectors.base import HttpConnectorHook
from include.connectors.errors import (
    PermanentError,
    RateLimitBackpressure,
    RetryBudgetExhausted,
    TransientError,
)
from include.connectors.ratelimit import (
    REDIS_KEY_PREFIX,
    REDIS_SOCKET_TIMEOUT,
    RateLimitSettings,
    SharedRateLimiter,
    redis_client,
    store_dsn,
    store_url,
)

# Redis listens on api_port + 30 (nothing runs on the API port itself).
PROFILE = Profile(
    name="ratelimit-redis-outage-itest",
    api_port=16471,
    pg_port=0,
    moto_port=0,
    smtp_port=0,
    executor="celery",
)
FAST_RETRIES = {"retry_max_attempts": 4, "retry_base_delay": 0.05, "retry_max_delay": 0.2}


@pytest.fixture(scope="module")
def server() -> Iterator[Profile]:
    redis.ensure_installed()
    redis.start(PROFILE, fresh=True)
    try:
        yield PROFILE
    finally:
        redis.stop(PROFILE)


@pytest.fixture
def url(server: Profile) -> str:
    """The store URL of a running Redis (started again if an earlier test left it stopped)."""
    redis.start(server)
    return redis.url(server, redis.RATELIMIT_DB)


@pytest.fixture
def secrets(server: Profile) -> tuple[str, ...]:
    """Every spelling of the password that must not show."""
    password = redis.password(server)
    return password, quote(password, safe=""), redis.url(server, redis.RATELIMIT_DB)


def limiter(url: str, name: str, per_second: float = 5, burst: int = 5) -> SharedRateLimiter:
    settings = RateLimitSettings.from_extras({"rate_limit_per_second": per_second, "rate_limit_burst": burst})
    assert settings.connector is not None
    return SharedRateLimiter(
        [(name, settings.connector)], dsn=url, max_wait_seconds=settings.max_wait_seconds, system="itest"
    )


def shown(error: BaseException) -> str:
    """All an error would put in a log: message, repr, arguments and the formatted traceback."""
    return "\n".join([str(error), repr(error), repr(error.args), *traceback.format_exception(error)])


def test_the_seeded_connection_points_the_buckets_at_database_1(
    server: Profile, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The other services' connections need their services prepared (RT's token, ...): not here.
    for builder in ("rt_connection", "ldap_connection", "erp_connection", "psa_connection", "mfa_connection"):
        monkeypatch.setattr(moto_seed, builder, lambda profile: {})
    connection = moto_seed.platform_connections(server)["ratelimit_store"]
    assert connection == redis.ratelimit_connection(server)
    embedded = dataclasses.replace(server, executor="local")
    assert moto_seed.platform_connections(embedded)["ratelimit_store"]["conn_type"] == "postgres"

    # As a task reads it: through BaseHook.get_connection (here from the environment).
    monkeypatch.setenv("AIRFLOW_CONN_RATELIMIT_STORE", json.dumps(connection))
    assert store_url() == url
    assert store_dsn() == url

    limiter(store_url(), "itest_seeded").acquire("op")

    client = redis_client(url)
    assert client.exists(f"{REDIS_KEY_PREFIX}itest_seeded") == 1
    broker = redis_py.Redis(host=HOST, port=server.redis_port, password=redis.password(server), db=0)
    try:
        assert broker.keys("*") == []  # the Celery broker's database holds no bucket
    finally:
        broker.close()


def test_expired_members_are_removed_and_the_key_expires(url: str) -> None:
    # A 1.05 s window (5 permits at 5/s, stretched by the default safety margin).
    shared = limiter(url, "itest_expiry")
    for _ in range(5):
        shared.acquire("op")
    client = redis_client(url)
    key = f"{REDIS_KEY_PREFIX}itest_expiry"
    assert client.zcard(key) == 5
    assert 0 < client.pttl(key) <= 60_000  # three windows, at least a minute

    time.sleep(2 * 1.05 + 0.1)  # every member is now more than two windows old
    shared.acquire("op")
    assert client.zcard(key) == 1


def test_a_worker_whose_clock_is_behind_cannot_take_a_permit_already_taken(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check runs on the server's clock: a worker stamping its call half a second early (its
    host's clock behind, or the time read a while before its check reached Redis) still sees the
    permit another worker took after that moment. One permit per 1.05 s window."""
    late = limiter(url, "itest_clock", per_second=1, burst=1)
    late.max_wait_seconds = 0.1
    (bucket,) = late._open()
    server_now = bucket._now
    monkeypatch.setattr(bucket, "_now", lambda: server_now() - 500)

    began = time.monotonic()
    limiter(url, "itest_clock", per_second=1, burst=1).acquire("op")
    with pytest.raises(RateLimitBackpressure) as raised:
        late.acquire("op")
    span = time.monotonic() - began
    # The wait counts from its own (early) stamp: too long by the 0.5 s, never too short. The
    # lower bound subtracts the time between the two checks, which a busy machine stretches.
    assert 1.05 + 0.5 - span - 0.01 <= raised.value.wait_seconds < 1.05 + 0.5 + 0.01


def test_a_stopped_redis_is_a_transient_error_without_the_password(
    server: Profile, url: str, secrets: tuple[str, ...]
) -> None:
    opened = limiter(url, "itest_outage")
    opened.acquire("op")  # connected, script loaded
    redis.stop(server)

    began = time.monotonic()
    with pytest.raises(TransientError) as raised:
        opened.acquire("op")
    assert time.monotonic() - began < REDIS_SOCKET_TIMEOUT  # refused at once, not after redis-py retries
    with pytest.raises(TransientError) as raised_at_open:
        limiter(url, "itest_outage_unopened").acquire("op")

    for error in (raised.value, raised_at_open.value):
        assert str(error).startswith(f"itest op: rate-limit store {HOST}:{server.redis_port} unavailable: ")
        assert error.__cause__ is None
        assert error.__suppress_context__
        assert not [secret for secret in secrets if secret in shown(error)]

    # Back up (same data; the restart emptied its script cache): the same limiter carries on.
    redis.start(server)
    opened.acquire("op")


def test_a_flushed_script_cache_is_reloaded(url: str) -> None:
    shared = limiter(url, "itest_noscript")
    shared.acquire("op")
    redis_client(url).script_flush()
    shared.acquire("op")


class OutageHook(HttpConnectorHook):
    """A hook on the fault server whose limiter's store is down; Redis is started after
    ``restart_after`` failed attempts (never if None)."""

    system = "itest"

    def __init__(self, port: int, store: str, restart_after: int | None, **extras: Any) -> None:
        super().__init__("itest_outage", tenant="acme")
        self.restart_after = restart_after
        self.errors: list[BaseException] = []
        extras = {"rate_limit_per_second": 5, "rate_limit_store_dsn": store, **FAST_RETRIES, **extras}
        self.__dict__["connection"] = Connection(
            conn_id=self.conn_id,
            conn_type="http",
            host=HOST,
            port=port,
            schema="http",
            extra=json.dumps(extras),
        )

    def auth_headers(self) -> dict[str, str]:
        return {}

    def _log_retry(self, attempt: int, wait: float, error: BaseException) -> None:
        super()._log_retry(attempt, wait, error)
        self.errors.append(error)
        if attempt == self.restart_after:
            redis.start(PROFILE)


def test_an_outage_is_retried_with_backoff_until_redis_is_back(
    server: Profile, url: str, secrets: tuple[str, ...]
) -> None:
    redis.stop(server)
    with FaultServer() as service:
        hook = OutageHook(service.port, url, restart_after=2)
        response = hook.request("GET", "/things/1", operation="get_thing")
        received = len(service.requests)

    assert response.status_code == 200
    assert hook.retry_count == 2
    assert received == 1  # no call left without a permit
    assert all(isinstance(error, TransientError) for error in hook.errors)
    assert not [secret for secret in secrets for error in hook.errors if secret in shown(error)]


def test_an_outage_past_the_retry_budget_fails_the_call(
    server: Profile, url: str, secrets: tuple[str, ...]
) -> None:
    redis.stop(server)
    with FaultServer() as service:
        hook = OutageHook(service.port, url, restart_after=None)
        with pytest.raises(RetryBudgetExhausted) as raised:
            hook.request("GET", "/things/1", operation="get_thing")
        received = len(service.requests)

    assert raised.value.attempts == FAST_RETRIES["retry_max_attempts"]
    assert isinstance(raised.value.__cause__, TransientError)
    assert received == 0
    assert not [secret for secret in secrets if secret in shown(raised.value)]


def test_a_wrong_password_is_a_permanent_error(url: str, secrets: tuple[str, ...]) -> None:
    wrong = url.replace(quote(redis.password(PROFILE), safe=""), "not-the-password")
    with pytest.raises(PermanentError) as raised:
        limiter(wrong, "itest_wrong_password").acquire("op")

    assert f"rate-limit store {HOST}:{PROFILE.redis_port} refused us" in str(raised.value)
    assert not [secret for secret in (*secrets, "not-the-password") if secret in shown(raised.value)]


def test_the_password_is_never_in_the_limiters_repr(url: str, secrets: tuple[str, ...]) -> None:
    shared = limiter(url, "itest_repr")
    before = repr(shared)
    shared.acquire("op")  # opened: it now holds a client and its buckets

    expected = (
        f"SharedRateLimiter(system='itest', buckets=['itest_repr'], "
        f"store='redis://{HOST}:{PROFILE.redis_port}/{redis.RATELIMIT_DB}', max_wait_seconds=30)"
    )
    assert before == repr(shared) == str(shared) == expected
    # redis-py lists a client's connection settings in its repr: the password is not one of them.
    assert not [secret for secret in secrets if secret in repr(redis_client(url))]
