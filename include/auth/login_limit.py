"""A limit on failed API logins: the token endpoints beside the UI's login form.

FAB limits its UI login form (``AUTH_RATE_LIMIT``, ``5 per 40 second`` per client address, with
Flask-Limiter on the Flask view) but not the token endpoints of its FastAPI app
(``POST /auth/token``, ``POST /auth/token/cli``): without this, a directory password could be
guessed there as fast as the directory answers binds. :class:`LoginLimitMiddleware` (installed by
:meth:`include.auth.fab.ApprovalAwareFabAuthManager.get_fastapi_middlewares`) counts the token
requests Airflow refused (401) and, once a limit is reached, answers **429** with ``Retry-After``
before the request reaches FAB or the directory (so a refused guess says nothing about the
password; the right password is refused too until the window has moved on):

- per client address and account: ``[fab] auth_rate_limit`` (the UI form's limit, one setting for
  both doors), e.g. the sixth wrong password for one account from one address within 40 s;
- per client address, any accounts: four times as many in the same window (password spraying:
  one common password tried on many accounts).

A successful login counts nothing (scripts that fetch a token often are not slowed), another
address is not held back by this one's failures (a guesser does not lock the account's owner out),
and the first refusal of each block is an ``auth.login_refused`` audit record (rule
``too-many-failures``, the address) and a warning in the log; the refusals after it are not
recorded one by one (volume).

Why our own middleware: Flask-Limiter decorates Flask views and the token routes are FastAPI's.
The counting is the ``limits`` library's moving window (the one Flask-Limiter uses), in memory per
API server process, as FAB's UI limit is: with several API server processes a guesser gets that
many times the attempts. The client address is the TCP peer (``scope["client"]``); behind a
proxy, run the API server with ``--proxy-headers`` and ``FORWARDED_ALLOW_IPS`` set to the proxy
only, or every client shares the proxy's address.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any, Final

from limits import RateLimitItem, parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from include.approvals.door import route_path
from include.auth.middleware import (
    ASGIApp,
    Message,
    Receive,
    Scope,
    Send,
    _json_response,
    _read_body,
    _replay,
)

log = logging.getLogger(__name__)

TOKEN_PATHS: Final = frozenset({"/auth/token", "/auth/token/cli"})
DEFAULT_LIMIT: Final = "5 per 40 second"  # FAB's default for its login form
ADDRESS_FACTOR: Final = 4
USERNAME_MAX: Final = 256  # longer names are counted by their first 256 characters
REFUSED_RULE: Final = "too-many-failures"

AuditWriter = Callable[[Mapping[str, Any]], Any]


def configured_limit() -> str:
    from airflow.configuration import conf

    return conf.get("fab", "auth_rate_limit", fallback=DEFAULT_LIMIT) or DEFAULT_LIMIT


def _emit(fields: Mapping[str, Any]) -> None:
    from include.audit.emit import emit

    emit(dict(fields))


class LoginLimitMiddleware:
    """ASGI middleware: failed token requests counted, further ones refused with 429 (module docstring).

    A request being answered counts as a failure until its answer is known, so a burst of
    concurrent guesses cannot pass the check together before the first failure is counted.

    :param limit: failures per client address and account (``limits`` notation); default
        ``[fab] auth_rate_limit``.
    :param audit: writes one audit record (default :func:`include.audit.emit.emit`, off the loop).
    :param clock: seconds since the epoch (the ``limits`` windows' clock), for ``Retry-After``.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        limit: str | None = None,
        audit: AuditWriter | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.app = app
        self.per_account: RateLimitItem = parse(limit or configured_limit())
        kind = type(self.per_account)
        self.per_address: RateLimitItem = kind(
            self.per_account.amount * ADDRESS_FACTOR, self.per_account.multiples
        )
        self.once: RateLimitItem = kind(1, self.per_account.multiples)  # one audit record per block
        self.limiter = MovingWindowRateLimiter(MemoryStorage())
        self.in_flight: Counter[tuple[str, ...]] = Counter()
        self.audit = audit or _emit
        self.clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope.get("type") != "http"
            or scope.get("method") != "POST"
            or route_path(scope).rstrip("/") not in TOKEN_PATHS
        ):
            await self.app(scope, receive, send)
            return
        body, connected = await _read_body(receive)
        if not connected:
            return
        address = str((scope.get("client") or ("unknown", 0))[0])
        account = _username(body)
        counted = (
            (self.per_address, ("address", address), "from this address"),
            (self.per_account, ("account", address, account), "for this account from this address"),
        )
        for item, keys, why in counted:
            reset_at, remaining = self.limiter.get_window_stats(item, *keys)
            if remaining - self.in_flight[keys] <= 0:
                await self._refuse(send, item, keys, why, address, account, reset_at)
                return
        await self._answer(scope, _replay(body, receive), send, [keyed[:2] for keyed in counted])

    async def _answer(
        self, scope: Scope, receive: Receive, send: Send, counted: list[tuple[RateLimitItem, tuple[str, ...]]]
    ) -> None:
        """Airflow answers; a 401 is a failure for every key (counted as pending until then)."""
        status: list[int] = []

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(int(message["status"]))
            await send(message)

        for _, keys in counted:
            self.in_flight[keys] += 1
        try:
            await self.app(scope, receive, watch)
        finally:
            for item, keys in counted:
                self.in_flight[keys] -= 1
                if self.in_flight[keys] <= 0:
                    del self.in_flight[keys]
                if status and status[0] == 401:
                    self.limiter.hit(item, *keys)

    async def _refuse(
        self,
        send: Send,
        item: RateLimitItem,
        keys: tuple[str, ...],
        why: str,
        address: str,
        account: str,
        reset_at: float,
    ) -> None:
        # Held by failures: until the oldest of them leaves the window; by answers still pending: 1 s.
        failures_hold = self.limiter.get_window_stats(item, *keys)[1] <= 0
        retry_after = (
            min(max(1, math.ceil(reset_at - self.clock())), item.get_expiry()) if failures_hold else 1
        )
        if self.limiter.hit(self.once, "refused", *keys):  # the first refusal of this block
            log.warning(
                "token request refused: too many failed logins %s (%s, %s)", why, address, account or "-"
            )
            await self._record(address, account, why)
        await _json_response(
            _with_header(send, b"retry-after", str(retry_after).encode()),
            429,
            {"detail": f"Too many failed logins {why}; try again in {retry_after} s."},
        )

    async def _record(self, address: str, account: str, why: str) -> None:
        from starlette.concurrency import run_in_threadpool

        from include.auth.directory import valid_uid

        fields = {
            "kind": "auth.login_refused",
            "actor": valid_uid(account) or "unknown",
            "subject": "login refused",
            "details": {"rule": REFUSED_RULE, "how": "api token", "remote_addr": address, "limit": why},
        }
        try:
            await run_in_threadpool(self.audit, fields)
        except Exception:
            log.exception("the audit record of a refused token request could not be written")


def _username(body: bytes) -> str:
    try:
        data = json.loads(body or b"{}")
    except ValueError:
        return ""
    name = data.get("username") if isinstance(data, dict) else None
    return name.strip().lower()[:USERNAME_MAX] if isinstance(name, str) else ""


def _with_header(send: Send, name: bytes, value: bytes) -> Send:
    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), (name, value)]}
        await send(message)

    return sending
