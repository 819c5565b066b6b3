"""Capability sessions against moto: right account, session name, tags and duration; tenants isolated.

moto does not enforce resource-scoped IAM (see the notes), so what this proves is the *account*
isolation: each tenant's roles and secrets live in the tenant's own moto account, and a session
assumed into acme's account cannot find globex's secret even by its full ARN. That the roles grant
only their declared actions is proven statically in tests/unit/policies/test_capabilities.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

import pytest
from botocore.exceptions import ClientError

if (
    "AIRFLOW_HOME" not in os.environ
):  # the Airflow connection is read through Airflow: keep it off any install
    os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="orchestrator-itest-airflow-")

from devstack.aws_seed import (
    INLINE_POLICY_NAME,
    account_client,
    capability_secret_name,
    seed_capability_roles,
)
from include.connectors import aws
from include.connectors.aws import (
    AwsCapabilityHook,
    capability_client,
    capability_session,
    role_session_name,
)
from include.connectors.context import RunContext
from include.policies.capabilities import (
    get_capability,
    iam_policy_document,
    load_capabilities,
    trust_policy_document,
)
from include.policies.loader import PolicyError
from include.policies.tenants import platform_account_id, tenant_account_id, tenant_ids
from tests.support.moto import moto_with_aws_connection

REGION = "eu-west-1"
CONN_ID = "aws_capability_itest"
RUN_ID = "manual__2026-03-04T05:06:07+00:00"


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    with moto_with_aws_connection(CONN_ID, REGION) as url:
        yield url


@pytest.fixture(scope="module")
def seeded(moto_url: str) -> list[str]:
    return seed_capability_roles(moto_url, REGION)


def run_context(tenant: str, task_id: str = "create_ticket") -> RunContext:
    return RunContext(
        dag_id="support_ticket_triage",
        run_id=RUN_ID,
        task_id=task_id,
        tenant=tenant,
        correlation_id=f"RT-4711-{tenant}",
    )


@pytest.fixture
def assume_calls(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Every AssumeRole as botocore sends it (parameters) and as moto answers it (expiration)."""
    calls: list[dict[str, Any]] = []
    original = aws.base_aws

    def record_request(params: dict[str, Any], **_: Any) -> None:
        calls.append({"params": dict(params)})

    def record_response(parsed: dict[str, Any], **_: Any) -> None:
        calls[-1]["expiration"] = parsed["Credentials"]["Expiration"]
        calls[-1]["answered_at"] = datetime.now(UTC)

    def recording(aws_conn_id: str) -> aws.BaseAws:
        base = original(aws_conn_id)
        base.session.events.register("provide-client-params.sts.AssumeRole", record_request)
        base.session.events.register("after-call.sts.AssumeRole", record_response)
        return base

    monkeypatch.setattr(aws, "base_aws", recording)
    return calls


def platform_client(service: str, moto_url: str) -> Any:
    return account_client(service, platform_account_id(), moto_url, REGION)


def test_seed_creates_every_role_in_every_tenant_account(moto_url: str, seeded: list[str]):
    for tenant in tenant_ids():
        iam = account_client("iam", tenant_account_id(tenant), moto_url, REGION)
        for capability in load_capabilities().capabilities.values():
            role = iam.get_role(RoleName=capability.role_name)["Role"]
            inline = iam.get_role_policy(RoleName=capability.role_name, PolicyName=INLINE_POLICY_NAME)

            assert (
                role["Arn"] == f"arn:aws:iam::{tenant_account_id(tenant)}:role/orchestrator-{capability.name}"
            )
            assert role["Arn"] in seeded
            assert _document(role["AssumeRolePolicyDocument"]) == trust_policy_document(
                capability, tenant, platform_account_id()
            )
            assert _document(inline["PolicyDocument"]) == iam_policy_document(
                capability, tenant, tenant_account_id(tenant), REGION
            )
    with pytest.raises(ClientError) as raised:
        platform_client("iam", moto_url).get_role(RoleName="orchestrator-ticket-create")
    assert (
        raised.value.response["Error"]["Code"] == "NoSuchEntity"
    )  # no capability role in the platform account


def _document(value: str | dict[str, Any]) -> dict[str, Any]:
    # moto returns policy documents either parsed or URL-encoded JSON, depending on the call.
    return value if isinstance(value, dict) else json.loads(unquote(value))


def test_seed_is_idempotent(moto_url: str, seeded: list[str]):
    assert seed_capability_roles(moto_url, REGION) == seeded
    assert len(seeded) == len(set(seeded))


def test_session_is_the_capability_role_in_the_tenant_account(moto_url: str, seeded, assume_calls):
    ctx = run_context("acme")

    session = capability_session("ticket-create", "acme", run_context=ctx, aws_conn_id=CONN_ID)
    assert assume_calls == []  # nothing talks to AWS until a client makes a call

    identity = session.client("sts", endpoint_url=moto_url).get_caller_identity()
    session_name = f"support_ticket_triage.create_ticket.{hashlib.sha256(RUN_ID.encode()).hexdigest()[:8]}"
    assert identity["Account"] == "111111111111"
    assert (
        identity["Arn"] == f"arn:aws:sts::111111111111:assumed-role/orchestrator-ticket-create/{session_name}"
    )
    assert session_name == role_session_name(ctx)
    assert [call["params"] for call in assume_calls] == [
        {
            "RoleArn": "arn:aws:iam::111111111111:role/orchestrator-ticket-create",
            "RoleSessionName": session_name,
            "DurationSeconds": 900,
            "Tags": [
                {"Key": "tenant", "Value": "acme"},
                {"Key": "capability", "Value": "ticket-create"},
                {"Key": "correlation_id", "Value": "RT-4711-acme"},
            ],
        }
    ]
    lifetime = (assume_calls[0]["expiration"] - assume_calls[0]["answered_at"]).total_seconds()
    assert 890 <= lifetime <= 900


def test_credentials_are_reused_within_their_lifetime(moto_url: str, seeded, assume_calls):
    session = capability_session(
        "ticket-update", "globex", run_context=run_context("globex"), aws_conn_id=CONN_ID
    )
    sts = session.client("sts", endpoint_url=moto_url)

    accounts = {sts.get_caller_identity()["Account"] for _ in range(3)}

    assert accounts == {"222222222222"}
    assert len(assume_calls) == 1


@pytest.mark.parametrize(("reader", "owner"), [("acme", "globex"), ("globex", "acme")])
def test_a_tenant_reads_its_own_secret_and_cannot_find_another_tenants(moto_url, seeded, reader, owner):
    capability = get_capability("ticket-create")
    own, foreign = capability_secret_name(capability, reader), capability_secret_name(capability, owner)
    foreign_arn = account_client(
        "secretsmanager", tenant_account_id(owner), moto_url, REGION
    ).describe_secret(SecretId=foreign)["ARN"]
    client = capability_client(
        "ticket-create", reader, "secretsmanager", run_context=run_context(reader), aws_conn_id=CONN_ID
    )

    assert json.loads(client.get_secret_value(SecretId=own)["SecretString"])["token"]
    for secret_id in (foreign, foreign_arn):
        with pytest.raises(ClientError) as raised:
            client.get_secret_value(SecretId=secret_id)
        assert raised.value.response["Error"]["Code"] == "ResourceNotFoundException"


def test_platform_credentials_see_no_tenant_secret(moto_url: str, seeded):
    client = platform_client("secretsmanager", moto_url)

    with pytest.raises(ClientError) as raised:
        client.get_secret_value(SecretId=capability_secret_name(get_capability("ticket-create"), "acme"))
    assert raised.value.response["Error"]["Code"] == "ResourceNotFoundException"


def test_wrong_tenant_or_capability_never_reaches_aws(moto_url: str, assume_calls):
    with pytest.raises(ValueError, match="tenant 'globex' requested by a run of tenant 'acme'"):
        capability_session("ticket-create", "globex", run_context=run_context("acme"), aws_conn_id=CONN_ID)
    with pytest.raises(PolicyError, match=r"^unknown capability 'admin'"):
        capability_session("admin", "acme", run_context=run_context("acme"), aws_conn_id=CONN_ID)
    assert assume_calls == []


class _StsHook(AwsCapabilityHook):
    service = "sts"


def test_the_hook_assumes_its_role_on_first_call_and_retries_itself(moto_url: str, seeded, assume_calls):
    hook = _StsHook(CONN_ID, capability="ticket-create", tenant="acme", run_context=run_context("acme"))
    assert "connection" not in vars(hook)  # nothing read in __init__

    client = hook.client
    assert assume_calls == []  # a client, but no AssumeRole until it makes a call
    assert client.meta.config.retries == {"total_max_attempts": 1, "mode": "standard"}

    identity = hook.call("get_caller_identity", client.get_caller_identity)

    assert identity["Arn"].startswith("arn:aws:sts::111111111111:assumed-role/orchestrator-ticket-create/")
    assert hook.role_arn == "arn:aws:iam::111111111111:role/orchestrator-ticket-create"
    assert [call["params"]["RoleArn"] for call in assume_calls] == [hook.role_arn]
    with pytest.raises(TypeError, match="bound to its run's tenant 'acme'"):
        hook.for_tenant("globex")
