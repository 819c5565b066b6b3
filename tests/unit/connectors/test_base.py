"""HttpConnectorHook against a scripted local HTTP server: what is retried, how long it waits, what it
logs, and what it raises. The server records arrival times, so waits are measured where they matter:
between the requests the service received.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import structlog
from airflow.sdk import Connection

from devstack.standins.fault import RESET, TIMEOUT, FaultServer, Reply, http_date
from include.connectors.base import HttpConnectorHook
from include.connectors.errors import PermanentError, RetryBudgetExhausted, TransientError

TOKEN = "tok-SECRET-123"
PATH = "/things/1"
MAX_ATTEMPTS = 4
BASE_DELAY = 0.05
CLIENT_TIMEOUT = 0.5
# HTTP-dates are wall-clock, arrivals monotonic: over a few seconds the two may drift this much.
CLOCK_SLACK = 0.005
EXTRAS = {
    "retry_max_attempts": MAX_ATTEMPTS,
    "retry_base_delay": BASE_DELAY,
    "retry_max_delay": 0.5,
    "retry_budget_seconds": 10,
    "timeout_seconds": CLIENT_TIMEOUT,
}


class FaultHook(HttpConnectorHook):
    system = "fault"

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"token {TOKEN}"}


@pytest.fixture
def server() -> Iterator[FaultServer]:
    with FaultServer(timeout_sleep=CLIENT_TIMEOUT * 3) as fault_server:
        yield fault_server


@pytest.fixture
def hook(server: FaultServer, monkeypatch: pytest.MonkeyPatch) -> FaultHook:
    """A hook whose connection points at the fault server, without a rate limit."""
    connection = Connection(
        conn_id="fault_default",
        conn_type="http",
        host="127.0.0.1",
        port=server.port,
        schema="http",
        extra=json.dumps(EXTRAS),
    )
    monkeypatch.setattr(FaultHook, "get_connection", classmethod(lambda cls, conn_id: connection))
    fault_hook = FaultHook("fault_default", tenant="acme")
    assert fault_hook.limiter is None
    return fault_hook


@pytest.fixture(autouse=True)
def no_jitter(monkeypatch: pytest.MonkeyPatch) -> None:
    """Full jitter draws uniform(0, ceiling): take the ceiling, so waits are exact
    (0.05, 0.1, 0.2, ... capped at 0.5)."""
    monkeypatch.setattr("tenacity.wait.random.uniform", lambda low, high: high)


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Hooks log through structlog (Airflow 3); route it to the standard library for caplog."""
    saved = structlog.get_config()
    structlog.configure(
        processors=[structlog.stdlib.render_to_log_args_and_kwargs],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    caplog.set_level(logging.DEBUG)
    yield caplog
    structlog.configure(**saved)


def retry_warnings(logs: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in logs.records if r.levelno == logging.WARNING and r.name.endswith("FaultHook")]


def retry_line(attempt: int, error: str, wait: float) -> str:
    failure = f"attempt {attempt} failed (fault get_thing: {error})"
    return f"fault get_thing: {failure}; retry {attempt} in {wait:.2f}s"


def get_thing(hook: FaultHook) -> Any:
    return hook.request("GET", PATH, operation="get_thing").json()


@pytest.mark.parametrize(
    ("first", "error", "min_gap", "max_gap"),
    [
        pytest.param(
            Reply(429, {"Retry-After": "1"}, {"message": "slow down"}),
            "GET /things/1 -> HTTP 429: slow down",
            1.0,
            1.0 + 0.25,
            id="retry-after-seconds",
        ),
        pytest.param(
            # 2 s ahead of the server's clock when sent, truncated to the second: a 1-2 s wait.
            Reply(429, {"Retry-After": http_date(2)}, {"message": "slow down"}),
            "GET /things/1 -> HTTP 429: slow down",
            1.0 - CLOCK_SLACK,
            2.0 + 0.25,
            id="retry-after-http-date",
        ),
    ],
)
def test_429_waits_for_retry_after(
    hook: FaultHook,
    server: FaultServer,
    logs: pytest.LogCaptureFixture,
    first: Reply,
    error: str,
    min_gap: float,
    max_gap: float,
) -> None:
    server.script(first)

    assert get_thing(hook) == {"ok": True}

    assert list(server.outcomes()) == [429, 200]
    (gap,) = server.gaps()
    assert min_gap <= gap <= max_gap
    (warning,) = retry_warnings(logs)
    assert isinstance(warning.args, tuple)
    logged_wait = warning.args[-1]
    assert isinstance(logged_wait, float)
    assert warning.getMessage() == retry_line(1, error, logged_wait)
    assert min_gap <= logged_wait <= gap
    assert hook.retry_count == 1


@pytest.mark.parametrize(
    ("first", "error", "min_gap"),
    [
        pytest.param(
            Reply(429, body={"message": "slow down"}),
            "GET /things/1 -> HTTP 429: slow down",
            BASE_DELAY,
            id="429-without-retry-after",
        ),
        *(
            pytest.param(
                Reply(status, body={"message": "upstream trouble"}),
                f"GET /things/1 -> HTTP {status}: upstream trouble",
                BASE_DELAY,
                id=str(status),
            )
            for status in (500, 502, 503, 504)
        ),
        pytest.param(TIMEOUT, "ReadTimeout calling GET /things/1", CLIENT_TIMEOUT + BASE_DELAY, id="timeout"),
        pytest.param(RESET, "ConnectionError calling GET /things/1", BASE_DELAY, id="connection-reset"),
    ],
)
def test_transient_failure_then_success(
    hook: FaultHook,
    server: FaultServer,
    logs: pytest.LogCaptureFixture,
    first: Any,
    error: str,
    min_gap: float,
) -> None:
    server.script(first)

    assert get_thing(hook) == {"ok": True}

    assert len(server.requests) == 2
    assert server.requests[-1].outcome == 200
    (gap,) = server.gaps()
    assert gap >= min_gap
    assert [w.getMessage() for w in retry_warnings(logs)] == [retry_line(1, error, BASE_DELAY)]
    assert hook.retry_count == 1


@pytest.mark.parametrize(
    ("status", "message"),
    [
        pytest.param(400, "field 'summary' is required", id="400"),
        pytest.param(401, "token expired", id="401"),
        pytest.param(403, "not allowed to read things", id="403"),
        pytest.param(404, "thing 1 does not exist", id="404"),
        pytest.param(409, "thing 1 was changed meanwhile", id="409"),
    ],
)
def test_permanent_error_fails_at_once_with_the_service_message(
    hook: FaultHook, server: FaultServer, logs: pytest.LogCaptureFixture, status: int, message: str
) -> None:
    server.script(Reply(status, body={"message": message}))

    with pytest.raises(PermanentError) as raised:
        get_thing(hook)

    assert str(raised.value) == f"fault get_thing: GET /things/1 -> HTTP {status}: {message}"
    assert raised.value.status == status
    assert len(server.requests) == 1
    assert retry_warnings(logs) == []
    assert hook.retry_count == 0


def test_always_503_exhausts_the_retry_budget(
    hook: FaultHook, server: FaultServer, logs: pytest.LogCaptureFixture
) -> None:
    server.default = Reply(503, body={"message": "down for maintenance"})
    error = "GET /things/1 -> HTTP 503: down for maintenance"

    gave_up = r"^fault get_thing: gave up after 4 attempts in "
    with pytest.raises(RetryBudgetExhausted, match=gave_up) as raised:
        get_thing(hook)

    assert str(raised.value).endswith(f"s: fault get_thing: {error}")
    assert raised.value.attempts == MAX_ATTEMPTS
    assert isinstance(raised.value.__cause__, TransientError)
    assert raised.value.__cause__.status == 503
    assert list(server.outcomes()) == [503] * MAX_ATTEMPTS
    waits = [BASE_DELAY * 2**n for n in range(MAX_ATTEMPTS - 1)]  # 0.05, 0.1, 0.2
    assert [w.getMessage() for w in retry_warnings(logs)] == [
        retry_line(attempt, error, wait) for attempt, wait in enumerate(waits, start=1)
    ]
    assert [gap >= wait for gap, wait in zip(server.gaps(), waits, strict=True)] == [True] * len(waits)
    assert hook.retry_count == MAX_ATTEMPTS - 1


def _error_chain(error: BaseException | None) -> Iterator[BaseException]:
    while error is not None:
        yield error
        error = error.__cause__ or error.__context__


@pytest.mark.parametrize(
    ("script", "call"),
    [
        pytest.param([Reply(401, body={"message": "bad token"})], get_thing, id="permanent"),
        pytest.param([RESET, Reply(503), TIMEOUT, Reply(429)], get_thing, id="exhausted"),
        pytest.param([Reply(502), RESET], get_thing, id="recovered"),
    ],
)
def test_the_token_is_sent_but_never_logged_or_raised(
    hook: FaultHook,
    server: FaultServer,
    logs: pytest.LogCaptureFixture,
    script: list[Any],
    call: Callable[[FaultHook], Any],
) -> None:
    server.script(*script)

    try:
        call(hook)
    except Exception as exc:  # every failure's text is inspected below
        texts = [text for error in _error_chain(exc) for text in (str(error), repr(error))]
    else:
        texts = []

    assert {r.headers["Authorization"] for r in server.requests} == {f"token {TOKEN}"}
    assert [text for text in texts if TOKEN in text] == []
    assert [r.getMessage() for r in logs.records if TOKEN in r.getMessage() or TOKEN in str(r.args)] == []


def test_for_tenant_shares_the_connection_and_takes_its_own_tenant_bucket(
    server: FaultServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Support triage reads as the platform and writes as the ticket's tenant: the second hook must
    not look the connection (a secrets-backend round trip) or the store up again, and its calls
    must count against the tenant's bucket, not the reader's."""
    limits = {**EXTRAS, "rate_limit_per_second": 10, "tenant_rate_limit_per_second": 2}
    lookups: list[str] = []

    def get_connection(cls: type, conn_id: str) -> Connection:
        lookups.append(conn_id)
        return Connection(
            conn_id=conn_id, conn_type="http", host="127.0.0.1", port=server.port, extra=json.dumps(limits)
        )

    monkeypatch.setattr(FaultHook, "get_connection", classmethod(get_connection))
    monkeypatch.setattr("include.connectors.base.store_dsn", lambda: "postgresql://store.invalid/ratelimit")
    reader = FaultHook("fault_default", tenant="platform")
    assert reader.limiter is not None
    reader_session = reader.session

    writer = reader.for_tenant("acme")

    assert (writer.tenant, writer.conn_id, writer.bulk) == ("acme", "fault_default", False)
    assert writer.connection is reader.connection
    assert writer.session is reader_session
    assert writer.rate_limit_store == reader.rate_limit_store
    assert lookups == ["fault_default"]
    assert writer.limiter is not None
    assert writer.limiter is not reader.limiter
    assert [name for name, _ in writer.limiter._specs] == ["fault_default", "fault_default__acme"]
    assert [name for name, _ in reader.limiter._specs] == ["fault_default", "fault_default__platform"]
