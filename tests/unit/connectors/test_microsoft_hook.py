"""GraphHook / DefenderHook offline: what is refused before any call, how answers are classified
(429 with Retry-After transient, 4xx permanent with the vendor's message), and the connection read
from the tenant's own secret. Against the HTTPS stand-in and moto:
tests/integration/connectors/test_microsoft_graph.py."""

from __future__ import annotations

import json
from typing import Any
from unittest import mock

import pytest

from include.connectors.context import RunContext
from include.connectors.errors import PermanentError, TransientError
from include.connectors.microsoft import (
    DefenderHook,
    EntraUser,
    GraphHook,
    MicrosoftInputError,
    RawResponse,
    TenantCredentialError,
    graph_message,
)
from include.policies.loader import PolicyError
from include.policies.tenants import entra_tenant_id

RUN = RunContext("soc_disable_entra_user", "manual__1", "disable_user", "acme", "corr-1")


def _graph(**kwargs: Any) -> GraphHook:
    return GraphHook(capability="entra-user-disable", tenant="acme", run_context=RUN, **kwargs)


@pytest.mark.parametrize(
    "credential",
    ["defender", "msgraph-globex", "../globex/entra-user-disable/msgraph", "orchestrator/globex/x"],
)
def test_a_credential_other_than_the_tenants_own_is_refused_at_construction(credential: str) -> None:
    with pytest.raises(TenantCredentialError, match=r"refused: a GraphHook of tenant 'acme' uses only"):
        _graph(credential=credential)


def test_an_undeclared_capability_is_refused() -> None:
    with pytest.raises(PolicyError):
        GraphHook(capability="entra-god-mode", tenant="acme", run_context=RUN)


def test_the_hook_is_bound_to_its_tenant() -> None:
    with pytest.raises(TypeError, match="bound to its run's tenant 'acme'"):
        _graph().for_tenant("globex")
    assert _graph().secret_id == "orchestrator/acme/entra-user-disable/msgraph"
    assert DefenderHook(capability="device-inspect", tenant="acme", run_context=RUN).secret_id.endswith(
        "/defender"
    )


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("jdoe@globex.example", "is not in tenant 'acme'"),
        ("jdoe", "neither an object id nor a user principal name"),
        ("a@b@c", "neither an object id"),
    ],
)
def test_bad_user_keys_are_refused_before_any_call(key: str, message: str) -> None:
    hook = _graph()
    with (
        mock.patch.object(GraphHook, "request", side_effect=AssertionError("no call expected")),
        pytest.raises(MicrosoftInputError, match=message),
    ):
        hook.get_user(key)


def _answer(status: int, body: Any = None, headers: dict[str, str] | None = None) -> Any:
    def run(coroutine: Any) -> RawResponse:
        coroutine.close()
        return RawResponse(status, headers or {}, body)

    return run


@pytest.fixture
def offline() -> Any:
    """No adapter, no token: ``_run`` answers what the test says."""
    hook = _graph()
    hook.__dict__["adapter"] = mock.MagicMock()
    hook.__dict__["_ready"] = True
    hook.__dict__["limiter"] = None
    hook.__dict__["extras"] = {"retry_max_attempts": 1}
    return hook


def test_a_429_is_transient_with_its_retry_after(offline: GraphHook) -> None:
    body = {"error": {"code": "TooManyRequests", "message": "Too many requests."}}
    with (
        mock.patch("include.connectors.microsoft._run", _answer(429, body, {"retry-after": "7"})),
        pytest.raises(TransientError) as raised,
    ):
        offline._send("GET", "users/{key}", "get-user", {"key": "x"}, None, None, (200,))
    assert raised.value.retry_after == 7.0
    assert "TooManyRequests: Too many requests." in str(raised.value)


def test_a_403_is_permanent_with_the_vendors_message(offline: GraphHook) -> None:
    body = {"error": {"code": "Authorization_RequestDenied", "message": "Insufficient privileges"}}
    with (
        mock.patch("include.connectors.microsoft._run", _answer(403, body)),
        pytest.raises(PermanentError, match=r"HTTP 403: Authorization_RequestDenied: Insufficient") as raised,
    ):
        offline._send(
            "PATCH", "users/{id}", "disable-user", {"id": "x"}, None, {"accountEnabled": False}, (204,)
        )
    assert raised.value.status == 403


def test_an_unknown_user_is_input_error(offline: GraphHook) -> None:
    body = {"error": {"code": "Request_ResourceNotFound", "message": "does not exist"}}
    with (
        mock.patch("include.connectors.microsoft._run", _answer(404, body)),
        pytest.raises(MicrosoftInputError, match=r"'nobody@acme\.example' not found"),
    ):
        offline.get_user("nobody@acme.example")


def test_set_account_enabled_changes_only_what_differs(offline: GraphHook) -> None:
    user = {
        "id": "0f0e0d0c-0b0a-4909-8807-060504030201",
        "userPrincipalName": "jdoe@acme.example",
        "accountEnabled": False,
    }
    with mock.patch("include.connectors.microsoft._run", _answer(200, user)):
        assert offline.set_account_enabled(EntraUser.of(user), False) is False


def test_graph_message_shapes() -> None:
    assert graph_message({"error": {"code": "C", "message": "M"}}) == "C: M"
    assert (
        graph_message({"error": "invalid_client", "error_description": "AADSTS1: bad. Trace ID: x"})
        == "AADSTS1: bad."
    )
    assert graph_message(None) == ""


def _secret(tenant_id: str) -> mock.MagicMock:
    client = mock.MagicMock()
    client.get_secret_value.return_value = {
        "SecretString": json.dumps(
            {"conn_type": "msgraph", "login": "app", "password": "s3cr3t", "extra": {"tenant_id": tenant_id}}
        )
    }
    return client


def test_the_connection_must_name_the_tenants_entra_tenant() -> None:
    with (
        mock.patch(
            "include.connectors.aws.capability_client", return_value=_secret(entra_tenant_id("globex"))
        ),
        pytest.raises(TenantCredentialError, match="not the tenant's") as raised,
    ):
        _ = _graph().connection
    assert "s3cr3t" not in str(raised.value)
    with (
        mock.patch(
            "include.connectors.aws.capability_client", return_value=_secret(entra_tenant_id("acme"))
        ) as made,
        mock.patch("airflow.sdk.log.mask_secret") as masked,
    ):
        connection = _graph().connection
    assert connection.login == "app"
    assert mock.call("s3cr3t") in masked.call_args_list  # masked in every log line of the task
    made.assert_called_once()
    assert made.call_args.args[:3] == ("entra-user-disable", "acme", "secretsmanager")


# --- incident write-back: one read for the comment and the status ---------------------------------------
INCIDENT_ID = "4242"
MARKER = "[orchestrator:soc_contain_host:alert-1:approved]"


class IncidentService:
    """Graph's security incident endpoints as the hook's ``_run`` sees them: one answer per call, in
    order, and every call recorded (method, url)."""

    def __init__(self, hook: GraphHook, answers: list[RawResponse]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, str]] = []
        hook.adapter.run.side_effect = lambda **request: request

    def __call__(self, request: dict[str, Any]) -> RawResponse:
        self.calls.append((request["method"], request["url"]))
        return self.answers.pop(0)

    def methods(self) -> list[str]:
        return [method for method, _ in self.calls]


def _incident(status: str = "active", *comments: str) -> RawResponse:
    body = {"id": INCIDENT_ID, "status": status, "comments": [{"comment": c} for c in comments]}
    return RawResponse(200, {}, body)


@pytest.fixture
def writer(offline: GraphHook) -> GraphHook:
    offline.__dict__["creation_store"] = None  # no shared store: create_once searches without a lock
    offline.__dict__["extras"] = {"retry_max_attempts": 3, "retry_base_delay": 0, "retry_max_delay": 30}
    return offline


def test_write_back_reads_the_incident_once_for_comment_and_status(writer: GraphHook) -> None:
    service = IncidentService(
        writer, [_incident("active", "an analyst's note"), RawResponse(201, {}, {}), RawResponse(200, {}, {})]
    )
    with mock.patch("include.connectors.microsoft._run", service):
        result = writer.write_back_incident(
            INCIDENT_ID, f"Contained.\n{MARKER}", marker=MARKER, status="inProgress"
        )
    assert result == (True, True)
    assert service.calls == [
        ("GET", "security/incidents/{id}"),
        ("POST", "security/incidents/{id}/comments"),
        ("PATCH", "security/incidents/{id}"),
    ]


def test_write_back_again_changes_nothing_after_one_read(writer: GraphHook) -> None:
    service = IncidentService(writer, [_incident("inProgress", f"Contained.\n{MARKER}")])
    with mock.patch("include.connectors.microsoft._run", service):
        result = writer.write_back_incident(
            INCIDENT_ID, f"Contained.\n{MARKER}", marker=MARKER, status="inProgress"
        )
    assert result == (False, False)
    assert service.methods() == ["GET"]


def test_write_back_without_a_status_only_comments(writer: GraphHook) -> None:
    service = IncidentService(writer, [_incident("active"), RawResponse(201, {}, {})])
    with mock.patch("include.connectors.microsoft._run", service):
        assert writer.write_back_incident(INCIDENT_ID, f"x {MARKER}", marker=MARKER) == (True, False)
    assert service.methods() == ["GET", "POST"]


def test_write_back_waits_out_a_429s_retry_after(writer: GraphHook) -> None:
    throttled = RawResponse(429, {"Retry-After": "7"}, {"error": {"code": "TooManyRequests"}})
    service = IncidentService(
        writer, [throttled, _incident("active"), RawResponse(201, {}, {}), RawResponse(200, {}, {})]
    )
    waits: list[float] = []
    with (
        mock.patch("include.connectors.microsoft._run", service),
        mock.patch("tenacity.nap.sleep", waits.append),
    ):
        result = writer.write_back_incident(INCIDENT_ID, f"x {MARKER}", marker=MARKER, status="inProgress")
    assert result == (True, True)
    assert service.methods() == ["GET", "GET", "POST", "PATCH"]  # the throttled read, sent again
    assert waits == [7.0]


@pytest.mark.parametrize(
    ("status", "marker", "error"),
    [
        ("resolved-ish", MARKER, MicrosoftInputError),
        ("inProgress", "[not in the comment]", ValueError),
    ],
)
def test_write_back_refuses_bad_input_before_any_call(
    writer: GraphHook, status: str, marker: str, error: type[Exception]
) -> None:
    with (
        mock.patch("include.connectors.microsoft._run", side_effect=AssertionError("no call expected")),
        pytest.raises(error),
    ):
        writer.write_back_incident(INCIDENT_ID, f"x {MARKER}", marker=marker, status=status)


def test_write_back_sets_the_status_when_the_comment_is_there_already(writer: GraphHook) -> None:
    service = IncidentService(
        writer, [_incident("active", f"Contained.\n{MARKER}"), RawResponse(200, {}, {})]
    )
    with mock.patch("include.connectors.microsoft._run", service):
        result = writer.write_back_incident(
            INCIDENT_ID, f"Contained.\n{MARKER}", marker=MARKER, status="inProgress"
        )
    assert result == (False, True)
    assert service.calls == [("GET", "security/incidents/{id}"), ("PATCH", "security/incidents/{id}")]
