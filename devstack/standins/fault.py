"""A scripted HTTP server on 127.0.0.1 for connector tests: it fails exactly as told.

Vendor contract: none; it is the referee of the connector base's retry and rate-limit contract
(``include/connectors/base.py``), not a model of a system. Each request takes the next action from a
queue: a :class:`Reply` (status, headers, body), or ``TIMEOUT`` (answer only after the client has
given up) or ``RESET`` (close the socket with an RST, no response). An empty queue answers
``default``. Every request is recorded with its monotonic arrival time (when the connection was
accepted: one request per connection, HTTP/1.0), so a test can check the waits between attempts.

In rate-enforcing mode (:meth:`FaultServer.enforce_rate`) it first admits at most ``limit``
requests per sliding window of ``window_seconds`` (arrival times, server side) and answers the rest
``429`` with ``Retry-After`` (whole seconds, at least 1) and ``{"message": "rate limited"}``,
counting admitted and rejected requests: the referee for a client-side rate limiter.

Not shown: authentication (any request is answered), routing (every path and method takes the next
action), keep-alive connections, a vendor's error shapes (errors are whatever the script says).
"""

from __future__ import annotations

import email.utils
import itertools
import math
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from devstack.standins.base import HOST, HeaderValue, HttpStandIn, Request, Response

__all__ = ["HOST", "RESET", "TIMEOUT", "FaultServer", "HeaderValue", "ReceivedRequest", "Reply", "http_date"]

TIMEOUT: Literal["timeout"] = "timeout"
RESET: Literal["reset"] = "reset"


@dataclass(frozen=True)
class Reply:
    """:param body: bytes/str as is; a mapping or list is sent as JSON."""

    status: int = 200
    headers: Mapping[str, HeaderValue] = field(default_factory=dict)
    body: bytes | str | Mapping[str, Any] | list[Any] = b""

    def response(self, *, delay: float = 0.0) -> Response:
        return Response(self.status, self.body, self.headers, delay=delay)


Action = Reply | Literal["timeout", "reset"]


@dataclass(frozen=True)
class ReceivedRequest:
    """What arrived (``arrived`` is ``time.monotonic()``) and what the server did about it."""

    arrived: float
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    outcome: int | Literal["timeout", "reset"]


def http_date(seconds_from_now: float) -> Callable[[], str]:
    """A ``Retry-After`` HTTP-date ``seconds_from_now`` after the moment the reply is sent.

    HTTP-dates have 1 s resolution (the fraction is truncated), so the client sees a wait between
    ``seconds_from_now - 1`` and ``seconds_from_now``.
    """
    return lambda: email.utils.formatdate(time.time() + seconds_from_now, usegmt=True)


@dataclass
class RateEnforcement:
    limit: int
    window_seconds: float
    admitted_at: deque[float] = field(default_factory=deque)
    admitted: int = 0
    rejected: int = 0

    def admit(self, now: float) -> float | None:
        """None if admitted, else seconds until the oldest admitted request leaves the window."""
        while self.admitted_at and self.admitted_at[0] <= now - self.window_seconds:
            self.admitted_at.popleft()
        if len(self.admitted_at) < self.limit:
            self.admitted_at.append(now)
            self.admitted += 1
            return None
        self.rejected += 1
        return self.admitted_at[0] + self.window_seconds - now


class FaultServer(HttpStandIn[ReceivedRequest]):
    """Start with ``with FaultServer() as server:``; script with :meth:`script`.

    :param default: the answer once the script is used up.
    :param timeout_sleep: how long a ``TIMEOUT`` action holds the answer back (longer than the
        client's timeout); :meth:`stop` cuts it short.
    """

    protocol_version = "HTTP/1.0"  # one request per connection: arrival is when it was accepted
    server_version = "FaultServer/1.0"

    def __init__(self, *, default: Reply | None = None, timeout_sleep: float = 2.0) -> None:
        super().__init__()
        self.default = default or Reply(200, body={"ok": True})
        self.timeout_sleep = timeout_sleep
        self._script: deque[Action] = deque()
        self._rate: RateEnforcement | None = None

    @property
    def url(self) -> str:
        return self.base_url

    # --- scripting -----------------------------------------------------------------------------
    def script(self, *actions: Action) -> None:
        """Queue the answers to the next requests, in order."""
        with self._lock:
            self._script.extend(actions)

    def enforce_rate(self, limit: int, window_seconds: float) -> None:
        """Admit at most ``limit`` requests per sliding ``window_seconds``; 429 the rest."""
        with self._lock:
            self._rate = RateEnforcement(limit=limit, window_seconds=window_seconds)

    # --- what happened -----------------------------------------------------------------------
    def gaps(self) -> list[float]:
        """Seconds between consecutive arrivals."""
        arrivals = [r.arrived for r in self.requests]
        return [later - earlier for earlier, later in itertools.pairwise(arrivals)]

    @property
    def admitted(self) -> int:
        return self._rate.admitted if self._rate else len(self.requests)

    @property
    def rejected(self) -> int:
        return self._rate.rejected if self._rate else 0

    def outcomes(self) -> Iterator[int | str]:
        return (r.outcome for r in self.requests)

    # --- the stand-in ----------------------------------------------------------------------------
    def handle(self, request: Request) -> Response:
        with self._lock:
            if self._rate is not None and (wait := self._rate.admit(request.arrived)) is not None:
                return self.throttled(max(1, math.ceil(wait)))
            action = self._script.popleft() if self._script else self.default
        if action == RESET:
            return Response(0, reset=True)
        if action == TIMEOUT:
            return self.default.response(delay=self.timeout_sleep)
        assert isinstance(action, Reply)
        return action.response()

    def record(self, request: Request, response: Response) -> ReceivedRequest:
        outcome: int | Literal["timeout", "reset"] = response.status
        if response.reset:
            outcome = RESET
        elif response.delay:
            outcome = TIMEOUT
        return ReceivedRequest(
            arrived=request.arrived,
            method=request.method,
            path=request.target,
            headers=dict(request.headers),
            body=request.body,
            outcome=outcome,
        )
