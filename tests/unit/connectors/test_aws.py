"""AwsCapabilityHook offline: no I/O in ``__init__``, which AWS errors are retried, the run context.

Against moto (AssumeRole, the role's account, the tags):
tests/integration/connectors/test_aws_capabilities.py.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any
from unittest import mock

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError, SSLError

from include.connectors.aws import (
    NO_BOTOCORE_RETRIES,
    SESSION_NAME_MAX,
    AwsCapabilityHook,
    assume_role_request,
    role_arn,
    role_session_name,
)
from include.connectors.context import RunContext
from include.connectors.errors import RetryBudgetExhausted, TransientError

RUN = RunContext("soc_contain_host", "manual__1", "isolate_host", "globex", "ALERT-7")


class _Ec2(AwsCapabilityHook):
    service = "ec2"


def _hook(**extras: Any) -> _Ec2:
    hook = _Ec2("aws_soc", capability="host-isolate", tenant="globex", run_context=RUN)
    # The connection's extras, as if read: one quick attempt unless the test asks for more.
    hook.__dict__["extras"] = {"retry_max_attempts": 1, "retry_base_delay": 0.001, **extras}
    return hook


def _client_error(code: str, status: int) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": "slow down"}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "DescribeInstances",
    )


def test_nothing_is_read_or_assumed_in_init() -> None:
    hook = _Ec2(capability="host-isolate", tenant="globex")

    assert (hook.conn_id, hook.aws_conn_id, hook.capability, hook.tenant) == (
        "aws_default",
        "aws_default",
        "host-isolate",
        "globex",
    )
    assert not {"connection", "client", "run_context"} & set(vars(hook))


def test_the_client_is_the_capability_client_without_botocore_retries() -> None:
    hook = _hook()
    with mock.patch("include.connectors.aws.capability_client") as capability_client:
        assert hook.client is capability_client.return_value
        assert hook.client is capability_client.return_value  # built once

    capability_client.assert_called_once_with(
        "host-isolate", "globex", "ec2", run_context=RUN, aws_conn_id="aws_soc", config=NO_BOTOCORE_RETRIES
    )


@pytest.mark.parametrize(
    ("error", "status"),
    [
        pytest.param(_client_error("Throttling", 400), 400, id="throttling"),
        pytest.param(_client_error("RequestLimitExceeded", 503), 503, id="ec2-request-limit"),
        pytest.param(_client_error("SomethingNew", 502), 502, id="5xx"),
        pytest.param(_client_error("TooManyRequests", 429), 429, id="429"),
        pytest.param(
            EndpointConnectionError(endpoint_url="https://ec2.eu-west-1.amazonaws.com"), None, id="endpoint"
        ),
        pytest.param(
            ReadTimeoutError(endpoint_url="https://ec2.eu-west-1.amazonaws.com"), None, id="read-timeout"
        ),
    ],
)
def test_transient_failures_are_retried(error: Exception, status: int | None) -> None:
    hook = _hook(retry_max_attempts=2)
    answers = mock.Mock(side_effect=[error, {"Reservations": []}])

    assert hook.call("describe_instances", answers) == {"Reservations": []}
    assert answers.call_count == 2
    assert hook.retry_count == 1


def test_transient_failures_give_up_after_the_budget_with_the_cause() -> None:
    hook = _hook(retry_max_attempts=2)

    with pytest.raises(RetryBudgetExhausted, match="gave up after 2 attempts") as raised:
        hook.call("describe_instances", mock.Mock(side_effect=_client_error("Throttling", 400)))

    cause = raised.value.__cause__
    assert isinstance(cause, TransientError)
    assert (str(cause), cause.status) == ("aws describe_instances: Throttling: slow down", 400)


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(_client_error("InvalidInstanceID.NotFound", 400), id="not-found"),
        pytest.param(_client_error("UnauthorizedOperation", 403), id="denied"),
        pytest.param(_client_error("ValidationError", 400), id="validation"),
        pytest.param(
            SSLError(endpoint_url="https://ec2.eu-west-1.amazonaws.com", error="bad cert"), id="tls"
        ),
    ],
)
def test_other_failures_are_left_to_the_caller_at_once(error: Exception) -> None:
    hook = _hook(retry_max_attempts=3)
    answers = mock.Mock(side_effect=error)

    with pytest.raises(type(error)) as raised:
        hook.call("describe_instances", answers)

    assert raised.value is error
    assert answers.call_count == 1
    assert hook.retry_count == 0


def test_the_run_context_is_the_running_tasks_when_not_given() -> None:
    hook = _Ec2(capability="host-inspect", tenant="globex")
    ti = mock.MagicMock(dag_id="soc_contain_host", task_id="inspect_host", run_id="manual__2")
    context = {"ti": ti, "run_id": "manual__2", "dag_run": mock.MagicMock(conf={"correlation_id": "ALERT-9"})}

    with mock.patch("include.connectors.aws._running_task", return_value=context):
        assert hook.run_context == RunContext(
            "soc_contain_host", "manual__2", "inspect_host", "globex", "ALERT-9"
        )


def test_outside_a_task_the_run_context_must_be_given() -> None:
    hook = _Ec2(capability="host-inspect", tenant="globex")

    with (
        mock.patch("include.connectors.aws._running_task", return_value=None),
        pytest.raises(RuntimeError, match=r"^_Ec2 outside a task needs run_context$"),
    ):
        _ = hook.run_context


def test_the_role_and_no_other_tenant() -> None:
    hook = _hook()

    assert hook.role_arn.endswith(":role/orchestrator-host-isolate")
    with pytest.raises(
        TypeError, match=r"^_Ec2 is bound to its run's tenant 'globex': build a hook per tenant$"
    ):
        hook.for_tenant("acme")


# --- the AssumeRole request of a step (pure; moto checks it on the wire) ---------------------


def _context(**overrides: str) -> RunContext:
    values = {
        "dag_id": "support_ticket_triage",
        "run_id": "manual__2026-01-02T03:04:05+00:00",
        "task_id": "create_ticket",
        "tenant": "acme",
        "correlation_id": "corr-0123456789abcdef",
    }
    return RunContext(**{**values, **overrides})


def test_assume_role_request_is_exact():
    ctx = _context()
    run_hash = hashlib.sha256(ctx.run_id.encode()).hexdigest()[:8]

    assert assume_role_request("ticket-create", "acme", ctx) == {
        "RoleArn": "arn:aws:iam::111111111111:role/orchestrator-ticket-create",
        "RoleSessionName": f"support_ticket_triage.create_ticket.{run_hash}",
        "DurationSeconds": 900,
        "Tags": [
            {"Key": "tenant", "Value": "acme"},
            {"Key": "capability", "Value": "ticket-create"},
            {"Key": "correlation_id", "Value": "corr-0123456789abcdef"},
        ],
    }
    assert role_arn("host-isolate", "globex") == "arn:aws:iam::222222222222:role/orchestrator-host-isolate"


@pytest.mark.parametrize(
    ("dag_id", "task_id"),
    [
        pytest.param("a" * 200, "t", id="long-dag-id"),
        pytest.param("dag", "group.sub group/task:1", id="unsafe-characters"),
        pytest.param("d" * 60, "x" * 60, id="both-long"),
    ],
)
def test_session_name_is_sts_safe_short_and_deterministic(dag_id: str, task_id: str):
    name = role_session_name(_context(dag_id=dag_id, task_id=task_id))

    assert re.fullmatch(r"[\w+=,.@-]{2,64}", name, flags=re.ASCII)
    assert len(name) <= SESSION_NAME_MAX
    assert name == role_session_name(_context(dag_id=dag_id, task_id=task_id))
    assert name != role_session_name(_context(dag_id=dag_id, task_id=task_id + "2"))
    assert name != role_session_name(_context(dag_id=dag_id, task_id=task_id, run_id="manual__other"))


def test_session_tags_are_sanitised():
    request = assume_role_request(
        "ticket-create", "acme", _context(correlation_id="INC#42 <ticket>;" + "x" * 300)
    )
    value = request["Tags"][2]["Value"]

    assert value.startswith("INC-42 -ticket--")
    assert len(value) == 256


def test_tenant_of_the_run_must_match():
    with pytest.raises(
        ValueError,
        match=r"^capability session for tenant 'globex' requested by a run of tenant 'acme'$",
    ):
        assume_role_request("ticket-create", "globex", _context())
