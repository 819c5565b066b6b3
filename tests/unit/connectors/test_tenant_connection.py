"""tenant_connection: the one reader of a tenant's own credential (a JSON Airflow connection in the
tenant's Secrets Manager, read as a capability role), used by the Jira mirror and the Microsoft hooks.
What it refuses before any call, how a missing or unreadable secret is reported (the caller's error,
naming the secret, never its text), and that the secrets it returns are masked in every log line."""

from __future__ import annotations

import json
import uuid
from typing import Any
from unittest import mock

import pytest
from airflow.sdk._shared.secrets_masker import redact

from include.connectors.aws import TenantBound, tenant_connection
from include.connectors.context import RunContext
from include.connectors.errors import PermanentError
from include.connectors.microsoft import GraphHook, TenantCredentialError
from include.connectors.ticketing.mirror import MirrorCredentialError, TenantJiraHook
from include.policies.tenants import entra_tenant_id
from tests.support.secrets import FakeSecrets

RUN = RunContext("support_triage", "manual__1", "mirror", "globex", "corr-1")
SECRET_ID = "orchestrator/globex/ticket-update/jira"


class Refused(PermanentError):
    """The caller's error type."""


def _error(message: str) -> Refused:
    return Refused(message, system="jira", operation="credential")


def _read(secrets: FakeSecrets, secret_id: str = SECRET_ID, **kwargs: Any) -> Any:
    with mock.patch("include.connectors.aws.capability_client", return_value=secrets) as client:
        connection = tenant_connection(
            "ticket-update",
            "globex",
            secret_id,
            conn_id="jira:globex",
            run_context=RUN,
            error=_error,
            system="jira",
            **kwargs,
        )
    client.assert_called_once_with(
        "ticket-update", "globex", "secretsmanager", run_context=RUN, aws_conn_id="aws_default"
    )
    return connection


def test_the_connection_is_built_from_the_json_secret() -> None:
    secret = {
        "conn_type": "http",
        "host": "globex.atlassian.net",
        "port": "443",
        "login": "bot@globex.example",
        "password": "pw-" + uuid.uuid4().hex,
        "extra": json.dumps({"rate_limit_per_second": 5}),  # the extra as text is accepted too
    }
    secrets = FakeSecrets({SECRET_ID: json.dumps(secret)})
    conn = _read(secrets)
    assert secrets.asked == [SECRET_ID]
    assert (conn.conn_id, conn.conn_type, conn.host, conn.port, conn.login, conn.password) == (
        "jira:globex",
        "http",
        "globex.atlassian.net",
        443,
        "bot@globex.example",
        secret["password"],
    )
    assert conn.extra_dejson == {"rate_limit_per_second": 5}
    no_type = FakeSecrets({SECRET_ID: json.dumps({"host": "h.example"})})
    assert _read(no_type, default_conn_type="msgraph").conn_type == "msgraph"


def test_a_missing_secret_is_the_callers_error_naming_the_secret() -> None:
    with pytest.raises(Refused) as raised:
        _read(FakeSecrets({}))
    assert str(raised.value) == (
        "jira credential: "  # the caller's error, as it words it
        "no jira credential for tenant 'globex' (orchestrator/globex/ticket-update/jira in its account)"
    )
    assert raised.value.operation == "credential"


@pytest.mark.parametrize(
    ("text", "why"),
    [
        pytest.param("hunter2-not-json", "is not a JSON connection$", id="not-json"),
        pytest.param('["hunter2-in-a-list"]', "not a JSON object$", id="not-an-object"),
        pytest.param(
            '{"password": "hunter2-pw", "extra": "{oops"}', "its extra is not JSON$", id="extra-text"
        ),
        pytest.param('{"extra": ["hunter2-extra"]}', "its extra is not a JSON object$", id="extra-list"),
        pytest.param('{"port": "hunter2-port"}', "port 'hunter2-port' is not a number$", id="bad-port"),
    ],
)
def test_an_unreadable_secret_is_the_callers_error_without_its_text(text: str, why: str) -> None:
    with pytest.raises(Refused, match=why) as raised:
        _read(FakeSecrets({SECRET_ID: text}))
    assert str(raised.value).startswith(
        "jira credential: the jira credential of tenant 'globex' "
        "(orchestrator/globex/ticket-update/jira) is not a JSON connection"
    )
    if why != "port 'hunter2-port' is not a number$":  # a port is not a secret: it is named
        assert "hunter2" not in str(raised.value)


def test_the_password_and_every_secret_looking_extra_are_masked_in_log_lines() -> None:
    """The union of what the Jira and Microsoft readers masked (the password), plus the extras Airflow
    masks in a connection its own secrets backend serves (client_secret, tokens, private keys)."""
    password, client_secret, api_token = (f"{name}-{uuid.uuid4().hex}" for name in ("pw", "cs", "tok"))
    tenant_id = str(uuid.uuid4())
    line = f"sent {password} {client_secret} {api_token} to Entra tenant {tenant_id}"
    assert redact(line) == line  # nothing masks them before the read
    secret = {
        "password": password,
        "extra": {"client_secret": client_secret, "api_token": api_token, "tenant_id": tenant_id},
    }
    _read(FakeSecrets({SECRET_ID: json.dumps(secret)}))
    assert redact(line) == f"sent *** *** *** to Entra tenant {tenant_id}"


@pytest.mark.parametrize(
    "secret_id",
    [
        "orchestrator/acme/ticket-update/jira",  # another tenant's
        "orchestrator/globex/ticket-create/jira",  # another capability's
        "orchestrator/globex/ticket-update/",  # no leaf
        "orchestrator/globex/ticket-update/../../acme/ticket-update/jira",  # a path out of it
        "arn:aws:secretsmanager:eu-central-1:111111111111:secret:orchestrator/acme/ticket-update/jira",
    ],
)
def test_a_secret_outside_the_tenants_capability_path_is_never_read(secret_id: str) -> None:
    secrets = FakeSecrets({secret_id: "{}"})
    with (
        mock.patch("include.connectors.aws.capability_client", return_value=secrets) as client,
        pytest.raises(
            ValueError,
            match=r"^jira: secret .* is not a leaf of orchestrator/globex/ticket-update/ .*: refused$",
        ),
    ):
        tenant_connection(
            "ticket-update",
            "globex",
            secret_id,
            conn_id="jira:globex",
            run_context=RUN,
            error=_error,
            system="jira",
        )
    client.assert_not_called()
    assert secrets.asked == []


def test_a_run_of_one_tenant_never_reads_another_tenants_secret() -> None:
    """The real capability_client: the run's tenant is checked before the base connection is read."""
    acme_run = RunContext("support_triage", "manual__1", "mirror", "acme", "corr-1")
    with (
        mock.patch("include.connectors.aws.base_aws", side_effect=AssertionError("no AWS expected")) as base,
        pytest.raises(ValueError, match="for tenant 'globex' requested by a run of tenant 'acme'"),
    ):
        tenant_connection(
            "ticket-update",
            "globex",
            SECRET_ID,
            conn_id="jira:globex",
            run_context=acme_run,
            error=_error,
            system="jira",
        )
    base.assert_not_called()


def test_both_tenant_hooks_read_through_it_and_map_errors_to_their_own() -> None:
    jira = TenantJiraHook(capability="ticket-update", tenant="globex", run_context=RUN)
    graph = GraphHook(capability="incident-writeback", tenant="globex", run_context=RUN)
    with mock.patch("include.connectors.aws.capability_client", return_value=FakeSecrets({})):
        with pytest.raises(
            MirrorCredentialError, match=r"^jira credential: no Jira credential for tenant 'globex'"
        ):
            _ = jira.connection
        with pytest.raises(
            TenantCredentialError,
            match=r"^msgraph: no msgraph credential for tenant 'globex' "
            r"\(orchestrator/globex/incident-writeback/msgraph in its account\)$",
        ):
            _ = graph.connection
    app = {"login": "app", "password": "s3cr3t-app", "extra": {"tenant_id": entra_tenant_id("globex")}}
    secrets = FakeSecrets({"orchestrator/globex/incident-writeback/msgraph": json.dumps(app)})
    with mock.patch("include.connectors.aws.capability_client", return_value=secrets):
        graph = GraphHook(capability="incident-writeback", tenant="globex", run_context=RUN)
        assert (graph.connection.conn_type, graph.connection.conn_id) == ("msgraph", "msgraph:globex")


def test_tenant_bound_hooks_share_one_binding() -> None:
    for hook_class in (TenantJiraHook, GraphHook):
        assert issubclass(hook_class, TenantBound)
        assert "for_tenant" not in vars(hook_class)
        assert "run_context" not in vars(hook_class)
    graph = GraphHook(capability="incident-writeback", tenant="globex")
    with (
        mock.patch("include.connectors.aws._running_task", return_value=None),
        pytest.raises(RuntimeError, match="GraphHook outside a task needs run_context"),
    ):
        _ = graph.run_context
    assert TenantJiraHook(capability="ticket-update", tenant="globex", run_context=RUN).run_context is RUN
