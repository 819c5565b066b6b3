"""A scripted HTTP server on 127.0.0.1 for connector tests: it fails exactly as told.

Each request takes the next action from a queue: a :class:`Reply` (status, headers, body), or
``TIMEOUT`` (answer only after the client has given up) or ``RESET`` (close the socket with an RST,
no response). An empty queue answers ``default``. Every request is recorded with its monotonic
arrival time, so a test can check the waits between attempts.

In rate-enforcing mode (:meth:`FaultServer.enforce_rate`) it first admits at most ``limit``
requests per sliding window of ``window_seconds`` (arrival times, server side) and answers the rest
``429`` with ``Retry-After``, counting admitted and rejected requests: the referee for a client-side
rate limiter.
"""

from __future__ import annotations

import contextlib
import email.utils
import itertools
import json
import math
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

HOST = "127.0.0.1"
TIMEOUT: Literal["timeout"] = "timeout"
RESET: Literal["reset"] = "reset"

#: A header value, or a function called when the reply is sent (e.g. an HTTP-date "2 s from now").
HeaderValue = str | Callable[[], str]


@dataclass(frozen=True)
class Reply:
    """:param body: bytes/str as is; a mapping or list is sent as JSON."""

    status: int = 200
    headers: Mapping[str, HeaderValue] = field(default_factory=dict)
    body: bytes | str | Mapping[str, Any] | list[Any] = b""

    def encoded_body(self) -> tuple[bytes, str]:
        if isinstance(self.body, bytes):
            return self.body, "application/octet-stream"
        if isinstance(self.body, str):
            return self.body.encode(), "text/plain; charset=utf-8"
        return json.dumps(self.body).encode(), "application/json"


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


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def _handle(self) -> None:
        arrived = self.server.accepted_at.pop(self.connection, None) or time.monotonic()
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        action = self.server.owner._next_action(arrived)
        self.server.owner._record(self, arrived, body, action)
        if action == RESET:
            # SO_LINGER 0: close() sends an RST instead of a FIN, the client sees "connection reset".
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True
            return
        if action == TIMEOUT:
            self.server.owner._stopping.wait(self.server.owner.timeout_sleep)
            action = self.server.owner.default
        assert isinstance(action, Reply)
        self._reply(action)

    def _reply(self, reply: Reply) -> None:
        payload, content_type = reply.encoded_body()
        with contextlib.suppress(OSError):  # the client may have given up (timeout) meanwhile
            self.send_response(reply.status)
            headers = {"Content-Type": content_type, **reply.headers}
            for name, value in headers.items():
                self.send_header(name, value() if callable(value) else value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests read :attr:`FaultServer.requests` instead of stderr."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, owner: FaultServer) -> None:
        self.owner = owner
        self.accepted_at: dict[Any, float] = {}
        super().__init__((HOST, 0), _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        # Arrival is when the connection is accepted (one request per connection: HTTP/1.0), in
        # the serving thread, before a handler thread starts: the referee's own scheduling delays
        # stay out of the waits it measures.
        self.accepted_at[request] = time.monotonic()
        super().process_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A reset or abandoned connection is the point of this server, not an error to print."""


class FaultServer:
    """Start with ``with FaultServer() as server:``; script with :meth:`script`.

    :param default: the answer once the script is used up.
    :param timeout_sleep: how long a ``TIMEOUT`` action holds the answer back (longer than the
        client's timeout); :meth:`stop` cuts it short.
    """

    def __init__(self, *, default: Reply | None = None, timeout_sleep: float = 2.0) -> None:
        self.default = default or Reply(200, body={"ok": True})
        self.timeout_sleep = timeout_sleep
        self._lock = threading.Lock()
        self._script: deque[Action] = deque()
        self._requests: list[ReceivedRequest] = []
        self._rate: RateEnforcement | None = None
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ---------------------------------------------------------------------------
    def start(self) -> FaultServer:
        self._server = _Server(self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fault-server",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FaultServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "start the server first"
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

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
    @property
    def requests(self) -> list[ReceivedRequest]:
        with self._lock:
            return list(self._requests)

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

    # --- called by the handler threads ---------------------------------------------------------
    def _next_action(self, now: float) -> Action:
        with self._lock:
            if self._rate is not None and (wait := self._rate.admit(now)) is not None:
                return Reply(429, {"Retry-After": str(max(1, math.ceil(wait)))}, {"message": "rate limited"})
            return self._script.popleft() if self._script else self.default

    def _record(self, handler: _Handler, arrived: float, body: bytes, action: Action) -> None:
        outcome = action.status if isinstance(action, Reply) else action
        received = ReceivedRequest(
            arrived=arrived,
            method=handler.command,
            path=handler.path,
            headers=dict(handler.headers.items()),
            body=body,
            outcome=outcome,
        )
        with self._lock:
            self._requests.append(received)
