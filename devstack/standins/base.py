"""The one HTTP server base of the stand-ins: ``erp.py``, ``jira.py``, ``microsoft.py``, ``webhooks.py``
and ``fault.py`` are built on it.

A stand-in says only what its vendor does; :class:`HttpStandIn` does the serving:

- **lifecycle**: ``with StandIn() as s:`` in tests, :meth:`HttpStandIn.serve_until_stopped` from the
  ``main()`` of a stand-in the local stack runs as a process (until SIGTERM or SIGINT). It binds to
  127.0.0.1 only (``port=0``, the default, takes a free port) and serves on daemon threads;
  :meth:`HttpStandIn.stop` closes the listening socket and cuts answers held back by ``delay`` short.
- **requests**: the handler reads the body (``Content-Length``) and hands one :class:`Request` to
  :meth:`HttpStandIn.handle` (which may find its action in a route table with :func:`route`); it
  returns a :class:`Response` or raises a :class:`StandInError` carrying one; any other exception
  is a stand-in bug, answered 500 in the vendor's error shape rather than by a dropped connection.
- **vendor shapes**: :meth:`HttpStandIn.error_body` (the vendor's error body, used for that 500 and
  for :meth:`HttpStandIn.throttled`, 429 with ``Retry-After``), and the content types and
  :meth:`HttpStandIn.encode_body` for the bodies (``None``: no body; bytes and str as they are;
  anything else JSON).
- **faults on the wire**: a :class:`Response` can be ``lost`` (carried out, then the connection is
  closed without an answer), ``reset`` (an RST, no answer) or ``delay``-ed.
- **request log**: :meth:`HttpStandIn.record` says what is kept of a request (never credentials);
  the base appends it under the lock, keeps the latest ``max_recorded``, and :attr:`HttpStandIn.requests`
  is a snapshot.
- **as a service of the local stack**: :func:`serve_main` is the whole ``main()`` of a stand-in
  (``--port``, the 0600 ``--config-file`` that :func:`write_config_file` writes and
  :func:`service_argv` names, the stand-in's own options, then serve); :meth:`HttpStandIn.make_server`
  is where a stand-in changes how it listens (TLS: ``microsoft.py``).
"""

from __future__ import annotations

import argparse
import json
import re
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Generic, Literal, Self, TypedDict, TypeVar
from urllib.parse import parse_qs, urlsplit

from devstack.processes import wait_for_stop_signal

HOST = "127.0.0.1"
#: The request log kept by a stand-in run as a service of the local stack (a long-running process).
SERVICE_MAX_RECORDED = 10_000

#: A header value, or a function called when the answer is sent (e.g. an HTTP-date "2 s from now").
HeaderValue = str | Callable[[], str]
RecordT = TypeVar("RecordT")
#: (method, path pattern whose groups are the URL's parameters, action called with the groups)
Route = tuple[str, str, Callable[..., "Response"]]


@dataclass(frozen=True)
class Request:
    """One request as it arrived.

    :param target: the path and query as sent.
    :param query: the parsed query (blank values kept if the stand-in's ``keep_blank_values`` says so).
    :param headers: as sent, names in the client's case (:meth:`header` looks one up in any case).
    :param arrived: ``time.monotonic()`` when the connection was accepted (its first request) or when
        the request line was read (later requests of a kept-alive connection).
    """

    method: str
    target: str
    path: str
    query: dict[str, list[str]]
    headers: Mapping[str, str]
    body: bytes
    arrived: float

    def header(self, name: str, default: str = "") -> str:
        wanted = name.lower()
        return next((value for key, value in self.headers.items() if key.lower() == wanted), default)


@dataclass(frozen=True)
class Response:
    """What to answer.

    :param body: ``None`` for no body, bytes or str as they are, anything else as JSON.
    :param lost: the request was carried out, but the connection is closed without an answer.
    :param reset: the connection is reset (an RST): no answer, ``status`` is not sent.
    :param delay: seconds to hold the answer back (:meth:`HttpStandIn.stop` cuts it short).
    """

    status: int
    body: Any = None
    headers: Mapping[str, HeaderValue] = field(default_factory=dict)
    lost: bool = False
    reset: bool = False
    delay: float = 0.0


@dataclass(frozen=True)
class RecordedRequest:
    """The request log entry of the vendor stand-ins: no headers, no body (they carry credentials)."""

    method: str
    path: str
    query: dict[str, list[str]]
    status: int
    at: float  # time.monotonic() when answered
    lost: bool = False

    @classmethod
    def of(cls, request: Request, response: Response) -> RecordedRequest:
        return cls(
            request.method, request.path, request.query, response.status, time.monotonic(), response.lost
        )


class StandInError(Exception):
    """Raised in :meth:`HttpStandIn.handle` to answer ``response`` (a vendor's error)."""

    def __init__(self, message: object, response: Response) -> None:
        super().__init__(message)
        self.response = response


def route(
    routes: Sequence[Route], method: str, path: str
) -> tuple[Callable[..., Response], tuple[str, ...]] | Literal[404, 405]:
    """The action for ``method`` on ``path`` and the path's groups; else 405 if another method has a
    route for the path, 404 if none has (each vendor words those two its own way)."""
    known = False
    for route_method, pattern, action in routes:
        if match := re.fullmatch(pattern, path):
            if route_method == method:
                return action, match.groups()
            known = True
    return 405 if known else 404


class HttpStandIn(Generic[RecordT]):
    """Base of the HTTP stand-ins; subclasses implement :meth:`handle` and :meth:`record`.

    :param port: 0 (the default) for a free port; a fixed one for a service of the local stack.
    :param max_recorded: keep only the latest requests in the log (a long-running service); all if None.
    """

    protocol_version = "HTTP/1.1"
    server_version = "StandIn/1.0"
    json_content_type = "application/json"
    text_content_type = "text/plain; charset=utf-8"
    bytes_content_type = "application/octet-stream"
    keep_blank_values = False  # in the parsed query

    def __init__(self, *, port: int = 0, max_recorded: int | None = None) -> None:
        self.requested_port = port
        self.max_recorded = max_recorded
        self._lock = threading.RLock()  # the log's, and the subclass's state's
        self._log: list[RecordT] = []
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._port: int | None = None

    # --- what a stand-in says about its vendor -------------------------------------------------
    def handle(self, request: Request) -> Response:
        """Answer one request (called on the request's thread; take :attr:`_lock` for shared state)."""
        raise NotImplementedError

    def record(self, request: Request, response: Response) -> RecordT:
        """The request log's entry for a request and its answer."""
        raise NotImplementedError

    def error_body(self, status: int, message: str) -> Any:
        """The vendor's error body (for a stand-in bug and for :meth:`throttled`)."""
        return {"message": message}

    def json_default(self, value: Any) -> Any:
        """Encode what :mod:`json` cannot (``default=`` of :func:`json.dumps`)."""
        raise TypeError(f"not JSON: {type(value).__name__}")

    def encode_body(self, body: Any) -> tuple[bytes, dict[str, str]]:
        """The payload and its content headers."""
        if body is None:
            return b"", {}
        if isinstance(body, bytes):
            return body, {"Content-Type": self.bytes_content_type}
        if isinstance(body, str):
            return body.encode(), {"Content-Type": self.text_content_type}
        return json.dumps(body, default=self.json_default).encode(), {"Content-Type": self.json_content_type}

    def banner(self) -> str:
        """The line :meth:`serve_until_stopped` prints once listening (no secrets)."""
        return f"{type(self).__name__} on {self.base_url}"

    # --- helpers for subclasses -----------------------------------------------------------------
    def throttled(
        self,
        retry_after: float | HeaderValue | None,
        message: str = "rate limited",
        *,
        headers: Mapping[str, HeaderValue] | None = None,
    ) -> Response:
        """429 in the vendor's error shape, with ``Retry-After`` (seconds or an HTTP-date) unless None."""
        retry: dict[str, HeaderValue] = {}
        if retry_after is not None:
            retry["Retry-After"] = (
                retry_after if isinstance(retry_after, str) or callable(retry_after) else str(retry_after)
            )
        return Response(429, self.error_body(429, message), {**retry, **(headers or {})})

    @property
    def requests(self) -> list[RecordT]:
        """The request log, oldest first (a copy)."""
        with self._lock:
            return list(self._log)

    # --- lifecycle ----------------------------------------------------------------------------
    def make_server(self, address: tuple[str, int]) -> _Server:
        """The listening server on ``address`` (always :data:`HOST`); a subclass may wrap it (TLS)."""
        return _Server(self, address)

    def start(self) -> Self:
        self._stopping.clear()
        server = self._server = self.make_server((HOST, self.requested_port))
        self._port = int(server.server_address[1])
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=type(self).__name__,
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
        self._server = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def serve_until_stopped(self) -> None:
        """Serve until SIGTERM or SIGINT: the ``main()`` of a stand-in the local stack runs as a process."""
        self.start()
        try:
            print(self.banner(), flush=True)
            wait_for_stop_signal()
        finally:
            self.stop()

    @property
    def port(self) -> int:
        assert self._port is not None, "not started"
        return self._port

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    # --- called by the handler threads ----------------------------------------------------------
    def _answer(self, request: Request) -> Response:
        try:
            response = self.handle(request)
        except StandInError as exc:
            response = exc.response
        except Exception as exc:  # a bug in the stand-in: answer 500 rather than drop the connection
            response = Response(500, self.error_body(500, f"stand-in error: {exc!r}"))
        entry = self.record(request, response)
        with self._lock:
            self._log.append(entry)
            if self.max_recorded is not None and len(self._log) > self.max_recorded:
                del self._log[: len(self._log) - self.max_recorded]
        return response


# --- a stand-in as a service of the local stack ----------------------------------------------------
class ServiceArgs(TypedDict):
    """What every stand-in run by :func:`serve_main` is built with (keyword arguments of its class)."""

    port: int
    max_recorded: int


def write_config_file(profile: Any, name: str, config: Any) -> Path:
    """``config`` as JSON in the 0600 file ``name`` of ``profile``'s secrets folder: what a stand-in's
    ``main()`` reads with ``--config-file``. Secrets go there, never on the command line (``ps`` shows it).

    :param profile: the stack's :class:`~devstack.config.Profile` (its ``local_secret`` makes the file
        0600 before anything is written to it).
    :param name: the file's name.
    :param config: the stand-in's configuration (JSON-serialisable).
    """
    profile.local_secret(name, lambda: "{}")
    path = Path(profile.root) / "secrets" / name
    path.write_text(json.dumps(config), encoding="utf-8")
    path.chmod(0o600)
    return path


def service_argv(module: str, port: int, config_file: Path, *options: str) -> list[str]:
    """The command the local stack runs a stand-in with: ``python -m <module> --port <port>
    --config-file <file>`` and the stand-in's own ``options``."""
    return [sys.executable, "-m", module, "--port", str(port), "--config-file", str(config_file), *options]


def serve_main(
    description: str,
    build: Callable[[argparse.Namespace, ServiceArgs], HttpStandIn[Any]],
    argv: list[str] | None = None,
    *,
    config_file: bool = True,
    options: Callable[[argparse.ArgumentParser], object] | None = None,
) -> None:
    """The ``main()`` of a stand-in the local stack runs as a process: parse ``--port`` (required),
    ``--config-file`` (required unless ``config_file`` is False; its JSON becomes ``args.config``) and
    what ``options`` adds, build the stand-in with ``build(args, service)`` (``service``: the port and
    :data:`SERVICE_MAX_RECORDED`, to pass on as keyword arguments), then serve on 127.0.0.1 until
    SIGTERM or SIGINT (:meth:`HttpStandIn.serve_until_stopped`).

    :param description: the command's ``--help`` description.
    :param build: the stand-in from the parsed arguments and ``service``.
    :param argv: the arguments (``sys.argv[1:]`` if None).
    :param config_file: the stand-in reads a configuration file (:func:`write_config_file`).
    :param options: adds the stand-in's own arguments to the parser.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--port", type=int, required=True)
    if config_file:
        parser.add_argument("--config-file", type=Path, required=True)
    if options is not None:
        options(parser)
    args = parser.parse_args(argv)
    args.config = json.loads(args.config_file.read_text(encoding="utf-8")) if config_file else None
    build(args, ServiceArgs(port=args.port, max_recorded=SERVICE_MAX_RECORDED)).serve_until_stopped()


class _Handler(BaseHTTPRequestHandler):
    """HTTP plumbing only: :meth:`HttpStandIn.handle` does the work."""

    server: _Server
    disable_nagle_algorithm = True  # no 40 ms delayed-ACK stalls between header and body writes

    def setup(self) -> None:
        standin = self.server.standin
        self.protocol_version = standin.protocol_version
        self.server_version = standin.server_version
        self._accepted_at = self.server.accepted_at.pop(self.request, None)
        super().setup()

    def _serve(self) -> None:
        standin = self.server.standin
        arrived, self._accepted_at = self._accepted_at or time.monotonic(), None
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        url = urlsplit(self.path)
        request = Request(
            method=self.command,
            target=self.path,
            path=url.path,
            query=parse_qs(url.query, keep_blank_values=standin.keep_blank_values),
            headers=dict(self.headers.items()),
            body=body,
            arrived=arrived,
        )
        response = standin._answer(request)
        if response.delay:
            standin._stopping.wait(response.delay)
        if response.reset:
            # SO_LINGER 0: close() sends an RST instead of a FIN, the client sees "connection reset".
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True
        elif response.lost:
            self.close_connection = True
        else:
            self._send(response)

    def _send(self, response: Response) -> None:
        payload, content_headers = self.server.standin.encode_body(response.body)
        headers: dict[str, HeaderValue] = {**content_headers, **response.headers}
        try:
            self.send_response(response.status)
            for name, value in headers.items():
                self.send_header(name, value() if callable(value) else value)
            if response.status != 204:
                self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if payload:
                self.wfile.write(payload)
        except OSError:  # the client has given up meanwhile (a delayed answer)
            self.close_connection = True

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the stand-in's request log says what happened."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, standin: HttpStandIn[Any], address: tuple[str, int]) -> None:
        self.standin = standin
        self.accepted_at: dict[Any, float] = {}
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        # A connection's first request arrived when it was accepted, in the serving thread, before a
        # handler thread starts: the stand-in's own scheduling delays stay out of measured waits.
        self.accepted_at[request] = time.monotonic()
        super().process_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client gone or a connection reset on purpose is no error to print; anything else is."""
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)
