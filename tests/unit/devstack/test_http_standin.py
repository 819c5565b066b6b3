"""The HTTP stand-in base: lifecycle, 127.0.0.1 only, request log, vendor error shapes, throttling."""

from __future__ import annotations

import email.utils
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from devstack.standins.base import HOST, HttpStandIn, Request, Response, StandInError, route

HTTP_DATE = "Sun, 06 Dec 2026 10:00:00 GMT"
REPO = Path(__file__).resolve().parents[3]


@dataclass(frozen=True)
class Entry:
    method: str
    path: str
    query: dict[str, list[str]]
    body: bytes
    status: int


class ScriptedStandIn(HttpStandIn[Entry]):
    """Answers whatever ``answer`` returns for a request; records method, path, query, body, status."""

    def __init__(self, answer: Callable[[ScriptedStandIn, Request], Response], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.answer = answer

    def handle(self, request: Request) -> Response:
        return self.answer(self, request)

    def record(self, request: Request, response: Response) -> Entry:
        return Entry(request.method, request.path, request.query, request.body, response.status)


class VendorStandIn(ScriptedStandIn):
    """A vendor with an error shape of its own."""

    def error_body(self, status: int, message: str) -> Any:
        return {"errors": [{"status": status, "detail": message}]}


def _ok(standin: ScriptedStandIn, request: Request) -> Response:
    return Response(200, {"ok": True})


def _refused(port: int, host: str = HOST) -> bool:
    try:
        socket.create_connection((host, port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


@pytest.fixture
def serve() -> Iterator[Callable[..., ScriptedStandIn]]:
    started: list[ScriptedStandIn] = []

    def start(answer: Callable[..., Response] = _ok, cls: type[ScriptedStandIn] = ScriptedStandIn, **kw: Any):
        standin = cls(answer, **kw).start()
        started.append(standin)
        return standin

    yield start
    for standin in started:
        standin.stop()


# --- lifecycle --------------------------------------------------------------------------------
def test_port_zero_takes_a_free_port_per_instance(serve):
    first, second = serve(), serve()

    assert first.port != second.port
    assert 0 not in (first.port, second.port)
    assert requests.get(f"{first.base_url}/x", timeout=5).json() == {"ok": True}
    assert requests.get(f"{second.base_url}/x", timeout=5).json() == {"ok": True}


def test_binds_to_127_0_0_1_only(serve):
    standin = serve()

    assert standin.base_url == f"http://127.0.0.1:{standin.port}"
    # Linux routes all of 127/8 to the loopback: a wildcard bind would answer on 127.0.0.2 too.
    assert _refused(standin.port, host="127.0.0.2")
    assert not _refused(standin.port)


def test_stop_frees_the_port_and_a_fixed_port_can_be_taken_again():
    standin = ScriptedStandIn(_ok).start()
    port = standin.port
    requests.get(f"{standin.base_url}/x", timeout=5)

    standin.stop()

    assert _refused(port)
    again = ScriptedStandIn(_ok, port=port).start()
    try:
        assert again.port == port
        assert requests.get(f"http://{HOST}:{port}/x", timeout=5).status_code == 200
    finally:
        again.stop()


def test_context_manager_starts_and_stops():
    with ScriptedStandIn(_ok) as standin:
        port = standin.port
        assert requests.get(f"{standin.base_url}/x", timeout=5).status_code == 200
    assert _refused(port)


def test_port_before_start_is_an_error():
    with pytest.raises(AssertionError, match="not started"):
        _ = ScriptedStandIn(_ok).port


def test_serve_until_stopped_prints_its_banner_and_ends_on_sigterm(tmp_path):
    code = (
        "from devstack.standins.base import HttpStandIn, RecordedRequest, Response\n"
        "class S(HttpStandIn[RecordedRequest]):\n"
        "    def handle(self, request): return Response(200, {'pid': 1})\n"
        "    def record(self, request, response): return RecordedRequest.of(request, response)\n"
        "S().serve_until_stopped()\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()
        match = re.fullmatch(r"S on http://127\.0\.0\.1:(\d+)\n", banner)
        assert match, banner
        port = int(match[1])
        assert requests.get(f"http://{HOST}:{port}/x", timeout=5).json() == {"pid": 1}

        process.send_signal(signal.SIGTERM)

        assert process.wait(timeout=10) == 0
        assert _refused(port)
    finally:
        process.kill()
        process.wait()


# --- request log ------------------------------------------------------------------------------
def test_the_log_records_each_request_with_its_body_and_answer(serve):
    standin = serve(lambda s, r: Response(201 if r.method == "POST" else 200, {}))

    requests.post(f"{standin.base_url}/things?a=1&b=", data=b'{"x": 1}', timeout=5)
    requests.get(f"{standin.base_url}/things/7", timeout=5)

    assert standin.requests == [
        Entry("POST", "/things", {"a": ["1"]}, b'{"x": 1}', 201),
        Entry("GET", "/things/7", {}, b"", 200),
    ]


def test_the_log_keeps_blank_query_values_if_the_stand_in_says_so(serve):
    class KeepsBlanks(ScriptedStandIn):
        keep_blank_values = True

    standin = serve(cls=KeepsBlanks)
    requests.get(f"{standin.base_url}/things?a=1&b=", timeout=5)

    assert standin.requests[0].query == {"a": ["1"], "b": [""]}


def test_the_log_is_complete_under_concurrent_requests(serve):
    standin = serve()

    def send(n: int) -> None:
        for i in range(10):
            requests.get(f"{standin.base_url}/t{n}/{i}", timeout=5)

    threads = [threading.Thread(target=send, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    sent = sorted(f"/t{n}/{i}" for n in range(4) for i in range(10))
    assert sorted(e.path for e in standin.requests) == sent


def test_the_log_keeps_the_latest_max_recorded(serve):
    standin = serve(max_recorded=3)

    for i in range(5):
        requests.get(f"{standin.base_url}/{i}", timeout=5)

    assert [e.path for e in standin.requests] == ["/2", "/3", "/4"]


def test_the_log_is_a_copy(serve):
    standin = serve()
    requests.get(f"{standin.base_url}/x", timeout=5)

    standin.requests.clear()

    assert len(standin.requests) == 1


def test_headers_are_looked_up_in_any_case(serve):
    seen: list[str] = []

    def answer(standin: ScriptedStandIn, request: Request) -> Response:
        seen.append(request.header("x-tenant"))
        seen.append(request.header("X-Missing", "none"))
        return Response(204)

    standin = serve(answer)
    requests.get(f"{standin.base_url}/x", headers={"X-Tenant": "acme"}, timeout=5)

    assert seen == ["acme", "none"]


# --- throttling ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("retry_after", "expected"),
    [
        pytest.param(3, "3", id="seconds"),
        pytest.param("7", "7", id="text"),
        pytest.param(lambda: HTTP_DATE, HTTP_DATE, id="http-date"),
    ],
)
def test_throttled_answers_429_with_retry_after_in_the_vendor_shape(serve, retry_after, expected):
    limits = {"X-RateLimit-Remaining": "0"}
    standin = serve(lambda s, r: s.throttled(retry_after, "slow down", headers=limits))

    response = requests.get(f"{standin.base_url}/x", timeout=5)

    assert response.status_code == 429
    assert response.headers["Retry-After"] == expected
    assert response.headers["X-RateLimit-Remaining"] == "0"
    assert response.json() == {"message": "slow down"}
    assert standin.requests[0].status == 429


def test_throttled_without_retry_after_sends_none(serve):
    standin = serve(lambda s, r: s.throttled(None), cls=VendorStandIn)

    response = requests.get(f"{standin.base_url}/x", timeout=5)

    assert response.status_code == 429
    assert "Retry-After" not in response.headers
    assert response.json() == {"errors": [{"status": 429, "detail": "rate limited"}]}


def test_a_header_function_is_called_when_the_answer_is_sent(serve):
    calls: list[float] = []

    def stamp() -> str:
        calls.append(time.time())
        return email.utils.formatdate(usegmt=True)

    standin = serve(lambda s, r: s.throttled(stamp))
    assert calls == []

    requests.get(f"{standin.base_url}/x", timeout=5)

    assert len(calls) == 1


# --- errors and bodies ------------------------------------------------------------------------------
BUG = KeyError("customer")


def _bug(standin: ScriptedStandIn, request: Request) -> Response:
    raise BUG


@pytest.mark.parametrize(
    ("cls", "body"),
    [
        pytest.param(ScriptedStandIn, {"message": f"stand-in error: {BUG!r}"}, id="default-shape"),
        pytest.param(
            VendorStandIn,
            {"errors": [{"status": 500, "detail": f"stand-in error: {BUG!r}"}]},
            id="vendor-shape",
        ),
    ],
)
def test_a_stand_in_bug_is_a_500_in_the_vendor_shape_not_a_dropped_connection(serve, cls, body):
    standin = serve(_bug, cls=cls)

    response = requests.get(f"{standin.base_url}/x", timeout=5)

    assert (response.status_code, response.headers["Content-Type"]) == (500, "application/json")
    assert response.json() == body
    assert standin.requests[0].status == 500


def test_a_stand_in_error_answers_its_response(serve):
    def refuse(standin: ScriptedStandIn, request: Request) -> Response:
        raise StandInError("no such thing", Response(404, {"code": "NotFound"}, {"X-Trace": "t1"}))

    standin = serve(refuse)
    response = requests.get(f"{standin.base_url}/x", timeout=5)

    assert (response.status_code, response.json(), response.headers["X-Trace"]) == (
        404,
        {"code": "NotFound"},
        "t1",
    )
    assert standin.requests[0].status == 404


@pytest.mark.parametrize(
    ("body", "content_type", "payload"),
    [
        pytest.param({"a": 1}, "application/json", b'{"a": 1}', id="json"),
        pytest.param([1, 2], "application/json", b"[1, 2]", id="json-list"),
        pytest.param("plain", "text/plain; charset=utf-8", b"plain", id="text"),
        pytest.param(b"\x00\x01", "application/octet-stream", b"\x00\x01", id="bytes"),
    ],
)
def test_bodies_are_encoded_by_type(serve, body, content_type, payload):
    standin = serve(lambda s, r: Response(200, body))

    response = requests.get(f"{standin.base_url}/x", timeout=5)

    assert (response.headers["Content-Type"], response.content) == (content_type, payload)
    assert response.headers["Content-Length"] == str(len(payload))


def test_a_204_has_no_body_and_no_content_headers(serve):
    standin = serve(lambda s, r: Response(204))

    response = requests.get(f"{standin.base_url}/x", timeout=5)

    assert response.status_code == 204
    assert response.content == b""
    assert "Content-Type" not in response.headers
    assert "Content-Length" not in response.headers


def test_the_vendor_content_types_apply(serve):
    class Vendor(ScriptedStandIn):
        json_content_type = "application/json;charset=UTF-8"
        text_content_type = "text/plain;charset=UTF-8"

    standin = serve(lambda s, r: Response(200, {} if r.path == "/json" else "t"), cls=Vendor)

    assert requests.get(f"{standin.base_url}/json", timeout=5).headers["Content-Type"] == (
        "application/json;charset=UTF-8"
    )
    assert requests.get(f"{standin.base_url}/text", timeout=5).headers["Content-Type"] == (
        "text/plain;charset=UTF-8"
    )


# --- faults on the wire ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("response", "error"),
    [
        pytest.param(Response(201, {"id": 1}, lost=True), "RemoteDisconnected", id="lost"),
        pytest.param(Response(0, reset=True), "Connection reset by peer", id="reset"),
    ],
)
def test_a_lost_or_reset_answer_never_arrives_but_is_logged(serve, response, error):
    standin = serve(lambda s, r: response)

    with pytest.raises(requests.ConnectionError, match=error):
        requests.post(f"{standin.base_url}/x", timeout=5)

    assert [e.status for e in standin.requests] == [response.status]


def test_a_delayed_answer_arrives_late_and_stop_cuts_it_short(serve):
    standin = serve(lambda s, r: Response(200, {"late": True}, delay=0.5 if r.path == "/late" else 30))

    started = time.monotonic()
    assert requests.get(f"{standin.base_url}/late", timeout=5).json() == {"late": True}
    assert time.monotonic() - started >= 0.5

    with pytest.raises(requests.Timeout):
        requests.get(f"{standin.base_url}/never", timeout=0.3)
    started = time.monotonic()
    standin.stop()
    assert time.monotonic() - started < 5


# --- routing ------------------------------------------------------------------------------------
def _get_thing(thing_id: str) -> Response:
    return Response(200)


def _add_part(thing_id: str, part_id: str) -> Response:
    return Response(201)


ROUTES = [
    ("GET", r"/things/(\d+)", _get_thing),
    ("POST", r"/things/(\d+)/parts/(\w+)", _add_part),
]


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        pytest.param("GET", "/things/7", (_get_thing, ("7",)), id="match"),
        pytest.param("POST", "/things/7/parts/a1", (_add_part, ("7", "a1")), id="groups"),
        pytest.param("DELETE", "/things/7", 405, id="other-method"),
        pytest.param("GET", "/things/x", 404, id="no-route"),
        pytest.param("GET", "/things/7/", 404, id="whole-path-only"),
    ],
)
def test_route_finds_the_action_or_says_404_or_405(method, path, expected):
    assert route(ROUTES, method, path) == expected
