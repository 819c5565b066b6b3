"""MfaHook against a scripted local HTTP server: how privacyIDEA's answers map to verdicts, and the
rule that a code check is never sent twice once it may have reached the server.

The answers are privacyIDEA 3.14's shapes as measured (shared notes on privacyIDEA); the real server
is exercised in tests/integration/test_privacyidea.py.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs

import pytest
from airflow.sdk import Connection

from devstack.standins.fault import RESET, TIMEOUT, FaultServer, Reply
from include.connectors.errors import PermanentError, RetryBudgetExhausted, TransientError
from include.connectors.mfa import MfaHook, MfaResult, MfaVerdict, classify

KEY = "validate-key-SECRET-jwt"
CODE = "123456"
CLIENT_TIMEOUT = 0.3
EXTRAS = {
    "realm": "secops",
    "timeout_seconds": CLIENT_TIMEOUT,
    "retry_base_delay": 0.01,
    "retry_max_delay": 0.02,
}


def answer(
    value: bool, message: str, *, serial: str | None = "TOTP-alice", authentication: str = ""
) -> Reply:
    """privacyIDEA's 200 answer to /validate/check."""
    detail: dict[str, Any] = {"message": message, "threadid": 1}
    if serial:
        detail.update(serial=serial, type="totp")
    return Reply(
        200,
        body={
            "detail": detail,
            "id": 1,
            "jsonrpc": "2.0",
            "result": {
                "authentication": authentication or ("ACCEPT" if value else "REJECT"),
                "status": True,
                "value": value,
            },
            "version": "privacyIDEA 3.14",
            "signature": "rsa_sha256_pss:abc",
        },
    )


def error(status: int, code: int, message: str) -> Reply:
    return Reply(
        status,
        body={
            "detail": None,
            "id": 1,
            "jsonrpc": "2.0",
            "result": {"error": {"code": code, "message": message}, "status": False},
        },
    )


def _hook(monkeypatch: pytest.MonkeyPatch, port: int, **extra: Any) -> MfaHook:
    connection = Connection(
        conn_id="mfa_default",
        conn_type="http",
        host="127.0.0.1",
        port=port,
        schema="http",
        password=KEY,
        extra=json.dumps({**EXTRAS, **extra}),
    )
    monkeypatch.setattr(MfaHook, "get_connection", classmethod(lambda cls, conn_id: connection))
    return MfaHook()


@pytest.fixture
def server() -> Iterator[FaultServer]:
    with FaultServer(timeout_sleep=CLIENT_TIMEOUT * 3) as fault_server:
        yield fault_server


@pytest.fixture
def hook(server: FaultServer, monkeypatch: pytest.MonkeyPatch) -> MfaHook:
    hook = _hook(monkeypatch, server.port)
    assert hook.limiter is None
    return hook


@pytest.mark.parametrize(
    ("reply", "verdict", "message"),
    [
        (answer(True, "matching 1 tokens"), MfaVerdict.ACCEPT, "matching 1 tokens"),
        (answer(False, "wrong otp value"), MfaVerdict.WRONG, "wrong otp value"),
        (
            answer(False, "wrong otp value. previous otp used again"),
            MfaVerdict.REPLAY,
            "wrong otp value. previous otp used again",
        ),
        (answer(False, "Failcounter exceeded"), MfaVerdict.LOCKED, "Failcounter exceeded"),
        (answer(False, "Token is disabled"), MfaVerdict.LOCKED, "Token is disabled"),
        (
            answer(False, "The user has no tokens assigned", serial=None),
            MfaVerdict.NO_TOKEN,
            "The user has no tokens assigned",
        ),
        (
            error(400, 904, "ERR904: User <alice@secops> does not exist."),
            MfaVerdict.UNKNOWN_USER,
            "ERR904: User <alice@secops> does not exist.",
        ),
        # A challenge (a token type we do not use) is not an accepted answer.
        (answer(False, "please enter otp", authentication="CHALLENGE"), MfaVerdict.WRONG, "please enter otp"),
    ],
)
def test_answers_map_to_verdicts(
    hook: MfaHook, server: FaultServer, reply: Reply, verdict: MfaVerdict, message: str
) -> None:
    server.script(reply)

    result = hook.check("alice", CODE)

    assert result == MfaResult(verdict, message, result.serial)
    assert result.ok is (verdict is MfaVerdict.ACCEPT)
    (request,) = server.requests
    assert (request.method, request.path) == ("POST", "/validate/check")
    assert parse_qs(request.body.decode()) == {"user": ["alice"], "pass": [CODE], "realm": ["secops"]}
    assert request.headers["PI-Authorization"] == KEY


def test_accept_names_the_token(hook: MfaHook, server: FaultServer) -> None:
    server.script(answer(True, "matching 1 tokens", serial="TOTP-alice"))
    assert hook.check("alice", CODE).serial == "TOTP-alice"


def test_value_true_with_another_authentication_is_not_accepted(hook: MfaHook, server: FaultServer) -> None:
    server.script(answer(True, "matching 1 tokens", authentication="CHALLENGE"))
    assert hook.check("alice", CODE).verdict is MfaVerdict.WRONG


@pytest.mark.parametrize(
    "code", ["", "12345", "1234567", "12345a", " 123456", "123456\n", "\u0661" * 6, None, 123456]
)
def test_malformed_codes_are_refused_without_a_call(hook: MfaHook, server: FaultServer, code: Any) -> None:
    result = hook.check("alice", code)

    assert result.verdict is MfaVerdict.MALFORMED
    assert server.requests == []


@pytest.mark.parametrize("username", ["", "alice@otherrealm", "alice bob", "a\nb", "-x", "x" * 65])
def test_user_names_privacyidea_would_misread_are_refused_without_a_call(
    hook: MfaHook, server: FaultServer, username: str
) -> None:
    assert hook.check(username, CODE).verdict is MfaVerdict.UNKNOWN_USER
    assert server.requests == []


def test_the_server_never_gets_a_code_echoed_back_into_the_result(hook: MfaHook, server: FaultServer) -> None:
    server.script(answer(False, f"wrong otp value {CODE}"))
    result = hook.check("alice", CODE)
    assert CODE not in result.message


# --- the no-retry rule ----------------------------------------------------------------------------
@pytest.mark.parametrize("action", [TIMEOUT, RESET, Reply(500, body="boom"), Reply(502), Reply(503)])
def test_a_check_that_may_have_reached_the_server_is_not_retried(
    hook: MfaHook, server: FaultServer, action: Any
) -> None:
    server.script(action, answer(True, "matching 1 tokens"))

    with pytest.raises(TransientError) as raised:
        hook.check("alice", CODE)

    assert len(server.requests) == 1
    assert hook.retry_count == 0
    assert "not retried" in str(raised.value)
    assert CODE not in str(raised.value)
    assert KEY not in str(raised.value)


def test_connection_refused_is_retried_then_gives_up(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    hook = _hook(monkeypatch, port)

    with pytest.raises(RetryBudgetExhausted) as raised:
        hook.check("alice", CODE)

    assert hook.retry_count == 2  # 3 attempts, the MFA hook's default
    assert isinstance(raised.value.__cause__, TransientError)
    assert "nothing was sent" in str(raised.value)


def test_429_is_retried_because_the_code_was_not_processed(hook: MfaHook, server: FaultServer) -> None:
    server.script(Reply(429, headers={"Retry-After": "0"}), answer(True, "matching 1 tokens"))

    assert hook.check("alice", CODE).verdict is MfaVerdict.ACCEPT
    assert len(server.requests) == 2


@pytest.mark.parametrize(
    "reply",
    [
        error(403, 303, "No valid API key was passed."),
        error(401, 4304, "Authentication failure."),
        error(400, 905, "ERR905: Missing parameter: 'pass'"),
    ],
)
def test_refused_requests_are_permanent_and_not_retried(
    hook: MfaHook, server: FaultServer, reply: Reply
) -> None:
    server.script(reply)

    with pytest.raises(PermanentError) as raised:
        hook.check("alice", CODE)

    assert len(server.requests) == 1
    assert raised.value.status == reply.status
    assert KEY not in str(raised.value)


def test_a_refused_key_says_which_connection(hook: MfaHook, server: FaultServer) -> None:
    server.script(error(403, 303, "No valid API key was passed."))
    with pytest.raises(PermanentError, match="connection mfa_default"):
        hook.check("alice", CODE)


def test_an_answer_that_is_not_privacyideas_is_an_error(hook: MfaHook, server: FaultServer) -> None:
    server.script(Reply(200, body="<html>login</html>"))
    with pytest.raises(PermanentError, match="not privacyIDEA's answer"):
        hook.check("alice", CODE)


def test_a_connection_without_key_is_refused_before_sending(
    server: FaultServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    connection = Connection(
        conn_id="mfa_default", conn_type="http", host="127.0.0.1", port=server.port, schema="http"
    )
    monkeypatch.setattr(MfaHook, "get_connection", classmethod(lambda cls, conn_id: connection))

    with pytest.raises(PermanentError, match="validate API key"):
        MfaHook().check("alice", CODE)
    assert server.requests == []


def test_defaults_keep_an_approver_waiting_seconds_not_minutes(hook: MfaHook) -> None:
    assert hook.tenant == "secops"
    assert hook.retry_policy.max_attempts == 3
    assert hook.retry_policy.budget_seconds <= 5
    assert hook.timeout == CLIENT_TIMEOUT


def test_rate_limit_comes_from_the_connection_extras(
    server: FaultServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    hook = _hook(
        monkeypatch,
        server.port,
        rate_limit_per_second=5,
        rate_limit_burst=10,
        rate_limit_store_dsn="redis://127.0.0.1:1/1",
    )
    assert hook.limiter is not None


@pytest.mark.parametrize(
    ("message", "verdict"),
    [
        ("wrong otp pin", MfaVerdict.WRONG),
        ("Authentication counter exceeded", MfaVerdict.LOCKED),
        ("Outside validity period", MfaVerdict.LOCKED),
        ("", MfaVerdict.WRONG),
    ],
)
def test_classify(message: str, verdict: MfaVerdict) -> None:
    assert classify(message) is verdict
