"""The rate-limit store's URL from the ``ratelimit_store`` connection, and what the limiter shows of it.

No store runs here: connections come from ``AIRFLOW_CONN_<ID>`` (JSON, as the Secrets Manager holds
them), read through ``BaseHook.get_connection`` as in a task; a limiter does no I/O until its first
``acquire``. The Redis store itself is tested in tests/integration/test_shared_rate_limit*.py.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from redis.connection import parse_url

from include.connectors.ratelimit import RateLimit, SharedRateLimiter, store_dsn, store_url

# Every character that means something in a URL: the password must come back out of it unchanged.
PASSWORD = "p@ss:w/rd %+?#&=[]~"
ENCODED = "p%40ss%3Aw%2Frd%20%25%2B%3F%23%26%3D%5B%5D~"


def connection(monkeypatch: pytest.MonkeyPatch, conn_id: str, **fields: Any) -> str:
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(fields))
    return conn_id


def test_a_redis_connection_gives_a_redis_url_with_the_password_percent_encoded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    conn_id = connection(
        monkeypatch,
        "ratelimit_unit_redis",
        conn_type="redis",
        host="10.0.0.5",
        port=6390,
        password=PASSWORD,
        extra={"db": 1},
    )

    url = store_url(conn_id)

    assert url == f"redis://:{ENCODED}@10.0.0.5:6390/1"
    assert store_dsn(conn_id) == url  # the old name, still used by base.py and the bench
    parsed = parse_url(url)  # as redis-py reads it
    assert (parsed["password"], parsed["host"], parsed["port"], parsed["db"]) == (
        PASSWORD,
        "10.0.0.5",
        6390,
        1,
    )


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        pytest.param({"host": "cache"}, "redis://cache:6379/0", id="no-password-default-port-and-db"),
        pytest.param(
            {"host": "cache", "port": 6380, "password": "s3cret", "extra": {"db": "2"}},
            "redis://:s3cret@cache:6380/2",
            id="db-as-text",
        ),
        pytest.param(
            {"host": "cache", "login": "rate limiter", "password": "s3cret"},
            "redis://rate%20limiter:s3cret@cache:6379/0",
            id="acl-user",
        ),
    ],
)
def test_redis_url_defaults(monkeypatch: pytest.MonkeyPatch, fields: dict[str, Any], expected: str) -> None:
    conn_id = connection(monkeypatch, "ratelimit_unit_redis_defaults", conn_type="redis", **fields)
    assert store_url(conn_id) == expected


def test_a_postgres_connection_still_gives_a_postgresql_url(monkeypatch: pytest.MonkeyPatch) -> None:
    conn_id = connection(
        monkeypatch,
        "ratelimit_unit_postgres",
        conn_type="postgres",
        host="127.0.0.1",
        port=25432,
        login="airflow",
        schema="ratelimit",
    )
    assert store_url(conn_id) == "postgresql://airflow@127.0.0.1:25432/ratelimit"
    assert store_dsn(conn_id) == store_url(conn_id)


def test_a_postgres_connection_with_a_password_gives_it_encoded_and_masked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    masked: list[str] = []
    monkeypatch.setattr("airflow.sdk.log.mask_secret", masked.append)
    conn_id = connection(
        monkeypatch,
        "ratelimit_unit_postgres_role",
        conn_type="postgres",
        host="127.0.0.1",
        port=25432,
        login="ratelimit",
        password="p@ss/w:rd",
        schema="ratelimit",
    )
    assert store_url(conn_id) == "postgresql://ratelimit:p%40ss%2Fw%3Ard@127.0.0.1:25432/ratelimit"
    assert masked == ["p%40ss%2Fw%3Ard"]


def limiter(url: str) -> SharedRateLimiter:
    return SharedRateLimiter(
        [("unit_bucket", RateLimit(per_second=5, burst=5))], dsn=url, max_wait_seconds=30, system="unit"
    )


def test_the_limiter_shows_the_store_without_its_credentials() -> None:
    shared = limiter(f"redis://:{ENCODED}@10.0.0.5:6390/1")
    expected = (
        "SharedRateLimiter(system='unit', buckets=['unit_bucket'], "
        "store='redis://10.0.0.5:6390/1', max_wait_seconds=30)"
    )
    assert repr(shared) == str(shared) == expected


@pytest.mark.parametrize(
    ("url", "message"),
    [
        pytest.param(f"mysql://:{ENCODED}@db:3306/x", "scheme 'mysql' is not one of", id="unknown-scheme"),
        # An unencoded "/" ends the host part early: "p@ss:w" would be read as host and port.
        pytest.param(f"redis://:{PASSWORD}@cache:6379/1", "does not parse", id="unencoded-password"),
    ],
)
def test_a_bad_store_url_is_refused_without_quoting_it(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as raised:
        limiter(url)
    assert "ss:w" not in str(raised.value)
    assert ENCODED not in str(raised.value)


def _limited_hook(bulk: bool) -> Any:
    from airflow.sdk import Connection

    from include.connectors.base import HttpConnectorHook

    class Hook(HttpConnectorHook):
        system = "unit"

        def auth_headers(self) -> dict[str, str]:
            return {}

    hook = Hook("unit_conn", tenant="acme", bulk=bulk)
    extras = {
        "rate_limit_per_second": 20,
        "tenant_rate_limit_per_second": 10,
        "bulk_rate_limit_per_second": 3,
        "rate_limit_store_dsn": "postgresql://airflow@127.0.0.1:1/ratelimit",
    }
    hook.__dict__["connection"] = Connection(conn_id="unit_conn", conn_type="http", extra=json.dumps(extras))
    return hook


def test_bulk_calls_also_draw_from_the_bulk_bucket() -> None:
    """A bulk hook takes a permit from the connector, tenant and bulk buckets; others never touch bulk."""
    bulk = _limited_hook(bulk=True).limiter
    interactive = _limited_hook(bulk=False).limiter
    assert [(name, limit.per_second) for name, limit in bulk._specs] == [
        ("unit_conn", 20.0),
        ("unit_conn__acme", 10.0),
        ("unit_conn__bulk", 3.0),
    ]
    assert [name for name, _ in interactive._specs] == ["unit_conn", "unit_conn__acme"]


def test_only_the_bulk_update_operator_draws_from_the_bulk_bucket() -> None:
    from include.connectors.ticketing import ticketing_hook
    from include.operators.ticketing import (
        BulkUpdateTicketsOperator,
        CommentTicketOperator,
        CreateTicketOperator,
    )

    assert BulkUpdateTicketsOperator.bulk is True
    assert CommentTicketOperator.bulk is False
    assert CreateTicketOperator.bulk is False
    assert ticketing_hook("request_tracker", None, "acme", bulk=True).bulk is True
    assert ticketing_hook("jira", None, "acme").bulk is False
