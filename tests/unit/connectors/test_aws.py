"""AwsCapabilityHook offline: no I/O in ``__init__``, which AWS errors are retried, the run context.

Against moto (AssumeRole, the role's account, the tags):
tests/integration/connectors/test_aws_capabilities.py.
"""

from __future__ import annotations

from typing import Any
from unittest import mock

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError, SSLError

from include.connectors.aws import NO_BOTOCORE_RETRIES, AwsCapabilityHook
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
