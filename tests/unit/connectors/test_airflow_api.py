"""AirflowApiHook against a scripted local HTTP server (FaultServer): login, paths, answers, errors.

What the approval verifier depends on: one login per hook with the connection's user, the bearer
token on every read, every path part quoted, a 404 read as "no record", transient failures retried
by the connector base, and neither the password nor the token in an error.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from airflow.sdk import Connection

from devstack.standins.fault import RESET, FaultServer, Reply
from include.approvals import verify
from include.connectors.airflow_api import AirflowApiHook
from include.connectors.errors import PermanentError, RetryBudgetExhausted

USER, PASSWORD, TOKEN = "approval-verifier", "pw-SECRET-456", "jwt-SECRET-789"
FAST_RETRIES = {
    "retry_max_attempts": 3,
    "retry_base_delay": 0.01,
    "retry_max_delay": 0.02,
    "timeout_seconds": 2,
}
LOGIN = Reply(201, body={"access_token": TOKEN})
DETAIL = {"response_received": True, "chosen_options": ["Approve"], "responded_by_user": {"name": "carol"}}


@pytest.fixture
def server() -> Iterator[FaultServer]:
    with FaultServer(timeout_sleep=1) as fault_server:
        yield fault_server


def point_at(monkeypatch: pytest.MonkeyPatch, connection: Connection) -> None:
    monkeypatch.setattr(AirflowApiHook, "get_connection", classmethod(lambda cls, conn_id: connection))


@pytest.fixture
def hook(server: FaultServer, monkeypatch: pytest.MonkeyPatch) -> AirflowApiHook:
    """``airflow_api`` as the dev stack writes it: the API server's URL as the host."""
    connection = Connection(
        conn_id="airflow_api",
        conn_type="http",
        host=server.url,
        login=USER,
        password=PASSWORD,
        extra=json.dumps(FAST_RETRIES),
    )
    point_at(monkeypatch, connection)
    return AirflowApiHook()


def sent(server: FaultServer) -> list[tuple[str, str, str | None]]:
    return [(r.method, r.path, r.headers.get("Authorization")) for r in server.requests]


def test_defaults() -> None:
    hook = AirflowApiHook()
    assert (hook.conn_id, hook.tenant, hook.system) == ("airflow_api", "platform", "airflow_api")


def test_the_verifier_reads_through_this_hook() -> None:
    assert type(verify.records_factory()) is AirflowApiHook


def test_reads_a_hitl_detail_after_one_login(hook: AirflowApiHook, server: FaultServer) -> None:
    server.script(LOGIN, Reply(200, body=DETAIL), Reply(200, body={"roles": [{"name": "soc_approver"}]}))

    detail = hook.hitl_detail("soc_contain_host", "manual__2026-12-06T10:00:00+00:00", "approve/step 1")
    roles = hook.roles_of("carol@acme")

    assert detail == DETAIL
    assert roles == {"soc_approver"}
    bearer = f"Bearer {TOKEN}"
    assert sent(server) == [
        ("POST", "/auth/token", None),
        (
            "GET",
            "/api/v2/dags/soc_contain_host/dagRuns/manual__2026-12-06T10%3A00%3A00%2B00%3A00"
            "/taskInstances/approve%2Fstep%201/-1/hitlDetails",
            bearer,
        ),
        ("GET", "/auth/fab/v1/users/carol%40acme", bearer),
    ]
    assert json.loads(server.requests[0].body) == {"username": USER, "password": PASSWORD}


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        pytest.param(lambda hook: hook.hitl_detail("d", "r", "t"), None, id="no-hitl-detail"),
        pytest.param(lambda hook: hook.roles_of("nobody"), set(), id="unknown-user"),
    ],
)
def test_not_found_is_no_record(hook: AirflowApiHook, server: FaultServer, call: Any, expected: Any) -> None:
    server.script(LOGIN, Reply(404, body={"detail": "not found"}))
    assert call(hook) == expected


def test_a_user_without_roles_has_none(hook: AirflowApiHook, server: FaultServer) -> None:
    server.script(LOGIN, Reply(200, body={"username": "dave"}))
    assert hook.roles_of("dave") == set()


@pytest.mark.parametrize(
    ("host", "port", "schema", "base_url"),
    [
        pytest.param("https://api.example/", None, None, "https://api.example", id="url-as-host"),
        pytest.param("api.example", 8080, None, "http://api.example:8080", id="host-and-port"),
        pytest.param("api.example", None, "https", "https://api.example", id="host-and-schema"),
    ],
)
def test_base_url(
    monkeypatch: pytest.MonkeyPatch, host: str, port: int | None, schema: str | None, base_url: str
) -> None:
    point_at(
        monkeypatch, Connection(conn_id="airflow_api", conn_type="http", host=host, port=port, schema=schema)
    )
    assert AirflowApiHook().base_url == base_url


def test_the_base_url_is_the_http_connector_bases(monkeypatch: pytest.MonkeyPatch) -> None:
    """No copy of its own: HttpConnectorHook.base_url, with plain HTTP for a bare host."""
    assert "base_url" not in vars(AirflowApiHook)
    point_at(monkeypatch, Connection(conn_id="airflow_api", conn_type="http", host="", password="pw-x1"))
    with pytest.raises(PermanentError, match=r"connection 'airflow_api': host .* is empty") as raised:
        _ = AirflowApiHook().base_url
    assert "pw-x1" not in str(raised.value)


def test_a_refused_login_fails_at_once_without_the_password(
    hook: AirflowApiHook, server: FaultServer
) -> None:
    server.script(Reply(401, body={"detail": f"bad password {PASSWORD}"}))

    with pytest.raises(PermanentError) as failure:
        hook.hitl_detail("d", "r", "t")

    assert str(failure.value) == (f"airflow_api login: login as {USER!r} at {server.url} failed (HTTP 401)")
    assert [r.path for r in server.requests] == ["/auth/token"]


def test_a_refused_read_fails_with_the_servers_message(hook: AirflowApiHook, server: FaultServer) -> None:
    server.script(LOGIN, Reply(403, body={"detail": "Forbidden: HITL Detail"}))

    with pytest.raises(
        PermanentError,
        match=r"^airflow_api user_roles: GET auth/fab/v1/users/eve -> HTTP 403: Forbidden: HITL Detail$",
    ):
        hook.roles_of("eve")
    assert len(server.requests) == 2


def test_a_restarting_api_server_is_retried(hook: AirflowApiHook, server: FaultServer) -> None:
    server.script(RESET, LOGIN, Reply(503, body={"detail": "starting"}), Reply(200, body=DETAIL))

    assert hook.hitl_detail("d", "r", "t") == DETAIL

    assert [(r.method, r.path, r.outcome) for r in server.requests] == [
        ("POST", "/auth/token", "reset"),
        ("POST", "/auth/token", 201),
        ("GET", "/api/v2/dags/d/dagRuns/r/taskInstances/t/-1/hitlDetails", 503),
        ("GET", "/api/v2/dags/d/dagRuns/r/taskInstances/t/-1/hitlDetails", 200),
    ]
    assert hook.retry_count == 2


def test_an_api_server_that_stays_down_exhausts_the_retries(
    hook: AirflowApiHook, server: FaultServer
) -> None:
    server.script(LOGIN, *[Reply(502, body={"detail": "bad gateway"})] * 3)

    with pytest.raises(
        RetryBudgetExhausted, match=r"^airflow_api hitl_detail: gave up after 3 attempts"
    ) as failure:
        hook.hitl_detail("d", "r", "t")

    assert TOKEN not in str(failure.value)
    assert TOKEN not in str(failure.value.__cause__)
    assert PASSWORD not in str(failure.value)
