"""The limit on failed token requests (include/auth/login_limit.py), in front of a stand-in app that
answers as FAB's token route does: 201 for the right password, 401 for a wrong one. End to end
against the real API server and directory: tests/e2e/test_directory_login.py."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

import pytest

from include.auth.login_limit import REFUSED_RULE, LoginLimitMiddleware

PASSWORDS = {"alice": "right-a", "bob": "right-b", **{f"u{n}": f"right-{n}" for n in range(30)}}


class TokenRoute:
    """FAB's ``POST /auth/token`` as far as the limit sees it; counts the requests it was asked."""

    def __init__(self, delay: float = 0.0) -> None:
        self.asked = 0
        self.delay = delay

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        message = await receive()
        body = json.loads(message["body"]) if scope["path"].startswith("/auth/token") else {}
        self.asked += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        right = PASSWORDS.get(body.get("username")) == body.get("password") and "password" in body
        status = 201 if right or not scope["path"].startswith("/auth/token") else 401
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})


def _limited(limit: str = "5 per 40 second", **kwargs: Any) -> tuple[LoginLimitMiddleware, TokenRoute, list]:
    audited: list[Mapping[str, Any]] = []
    route = TokenRoute(**kwargs)
    return LoginLimitMiddleware(route, limit=limit, audit=audited.append), route, audited


async def _post(
    app: Any, username: Any, password: str, *, address: str = "10.0.0.1", path: str = "/auth/token"
) -> tuple[int, dict[str, str]]:
    scope = {
        "type": "http",
        "method": "POST",
        "path": path,
        "root_path": "",
        "client": (address, 50000),
        "headers": [(b"content-type", b"application/json")],
    }
    body = json.dumps({"username": username, "password": password}).encode()
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop() if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    headers = {k.decode(): v.decode() for k, v in start.get("headers", [])}
    return start["status"], headers


def post(app: Any, username: Any, password: str, **kwargs: Any) -> tuple[int, dict[str, str]]:
    return asyncio.run(_post(app, username, password, **kwargs))


def test_the_sixth_failure_is_refused_before_the_directory_is_asked_even_with_the_right_password() -> None:
    app, route, audited = _limited()
    assert [post(app, "alice", "guess")[0] for _ in range(5)] == [401] * 5
    status, headers = post(app, "alice", "right-a")
    assert status == 429
    assert 1 <= int(headers["retry-after"]) <= 40
    assert route.asked == 5  # the refused request never reached FAB (nor the directory behind it)
    (record,) = audited
    assert record["kind"] == "auth.login_refused"
    assert record["actor"] == "alice"
    assert record["details"] == {
        "rule": REFUSED_RULE,
        "how": "api token",
        "remote_addr": "10.0.0.1",
        "limit": "for this account from this address",
    }
    post(app, "alice", "guess")
    assert len(audited) == 1  # one record per block, not per refused attempt


def test_successes_count_nothing_and_names_are_counted_as_the_directory_reads_them() -> None:
    app, _, _ = _limited()
    assert [post(app, "alice", "right-a")[0] for _ in range(12)] == [201] * 12
    spellings = ("Alice", " alice", "ALICE ", "alice", "alice")
    assert [post(app, name, "guess")[0] for name in spellings] == [401] * 5
    assert post(app, "alice", "right-a")[0] == 429


def test_another_address_and_another_account_are_not_held_back() -> None:
    app, _, _ = _limited()
    for _ in range(5):
        post(app, "alice", "guess", address="10.0.0.1")
    assert post(app, "alice", "right-a", address="10.0.0.1")[0] == 429
    assert post(app, "alice", "right-a", address="10.0.0.2")[0] == 201  # the owner, elsewhere
    assert post(app, "bob", "right-b", address="10.0.0.1")[0] == 201


def test_spraying_one_password_over_many_accounts_is_held_per_address() -> None:
    app, route, audited = _limited()
    assert [post(app, f"u{n}", "Winter2026!")[0] for n in range(20)] == [401] * 20
    status, headers = post(app, "u25", "right-25")
    assert status == 429
    assert int(headers["retry-after"]) >= 1
    assert route.asked == 20
    assert audited[0]["details"]["limit"] == "from this address"
    assert audited[0]["actor"] == "u25"
    assert post(app, "u25", "right-25", address="10.0.0.9")[0] == 201


def test_a_burst_of_concurrent_guesses_is_held_to_the_limit() -> None:
    """Answers still pending count: 30 guesses sent at once, FAB asked 5 times."""
    app, route, _ = _limited(delay=0.05)

    async def burst() -> list[int]:
        return [s for s, _ in await asyncio.gather(*(_post(app, "alice", f"g{n}") for n in range(30)))]

    statuses = asyncio.run(burst())
    assert route.asked == 5
    assert sorted(statuses) == [401] * 5 + [429] * 25


def test_the_window_moves_on() -> None:
    app, _, _ = _limited(limit="2 per 1 second")
    assert [post(app, "alice", "guess")[0] for _ in range(2)] == [401, 401]
    status, headers = post(app, "alice", "right-a")
    assert (status, headers["retry-after"]) == (429, "1")
    import time

    time.sleep(1.1)
    assert post(app, "alice", "right-a")[0] == 201


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/auth/login/"), ("GET", "/auth/token"), ("POST", "/api/v2/dags"), ("POST", "/auth/tokens")],
)
def test_other_requests_pass_untouched(method: str, path: str) -> None:
    app, route, _ = _limited(limit="1 per 40 second")
    for _ in range(3):
        scope = {"type": "http", "method": method, "path": path, "root_path": "", "client": ("10.0.0.1", 1)}

        async def call(scope: dict = scope) -> None:
            async def receive() -> dict:
                return {"type": "http.request", "body": b'{"username": "alice"}', "more_body": False}

            async def send(message: dict) -> None:
                if message["type"] == "http.response.start":
                    assert message["status"] != 429

            await app(scope, receive, send)

        asyncio.run(call())
    assert route.asked == 3


def test_the_cli_token_route_and_a_trailing_slash_are_counted_together() -> None:
    app, _, _ = _limited(limit="2 per 40 second")
    assert post(app, "alice", "guess", path="/auth/token/cli")[0] == 401
    assert post(app, "alice", "guess", path="/auth/token/")[0] == 401
    assert post(app, "alice", "right-a", path="/auth/token")[0] == 429


@pytest.mark.parametrize("username", [None, 42, "", "x" * 10_000, "'; drop table ab_user; --"])
def test_odd_usernames_are_counted_and_never_audited_as_written(username: Any) -> None:
    app, _, audited = _limited(limit="1 per 40 second")
    assert post(app, username, "guess")[0] == 401
    assert post(app, username, "guess")[0] == 429
    assert audited[0]["actor"] == "unknown"


def test_the_default_limit_is_fabs_login_form_limit() -> None:
    app = LoginLimitMiddleware(TokenRoute(), audit=lambda fields: None)
    assert (app.per_account.amount, app.per_account.get_expiry()) == (5, 40)
    assert (app.per_address.amount, app.per_address.get_expiry()) == (20, 40)
