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
from botocore.config import Config
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError, SSLError

from include.connectors import aws as aws_module
from include.connectors.aws import (
    NO_BOTOCORE_RETRIES,
    SESSION_NAME_MAX,
    AwsCapabilityHook,
    assume_role_request,
    botocore_retries,
    capability_client,
    role_arn,
    role_session_name,
)
from include.connectors.context import RunContext
from include.connectors.errors import RetryBudgetExhausted, TransientError
from include.connectors.retry import RetryPolicy

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


# --- one retry budget: exact HTTP attempts of a throttled call ---------------------------------
# botocore's own ``before-send`` event answers in place of AWS, so the count is of the HTTP requests
# botocore would have sent, its retries included.

ASSUMED = (
    '<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><AssumeRoleResult>'
    "<Credentials><AccessKeyId>ASIASTEPCREDENTIALS</AccessKeyId><SecretAccessKey>step-secret</SecretAccessKey>"
    "<SessionToken>step-token</SessionToken><Expiration>2099-01-01T00:00:00Z</Expiration></Credentials>"
    "<AssumedRoleUser><AssumedRoleId>AROASTEP:s</AssumedRoleId>"
    "<Arn>arn:aws:sts::222222222222:assumed-role/orchestrator-host-isolate/s</Arn></AssumedRoleUser>"
    "</AssumeRoleResult><ResponseMetadata><RequestId>r</RequestId></ResponseMetadata></AssumeRoleResponse>"
)
STS_THROTTLED = (
    "<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message>"
    "</Error><RequestId>r</RequestId></ErrorResponse>"
)
EC2_THROTTLED = (
    "<Response><Errors><Error><Code>RequestLimitExceeded</Code><Message>Request limit exceeded.</Message>"
    "</Error></Errors><RequestID>r</RequestID></Response>"
)


class _Aws:
    """Answers every request of one service with one fixed response and counts the requests."""

    def __init__(self, status: int, body: str) -> None:
        self.status, self.body, self.requests = status, body.encode(), 0

    def __call__(self, request: Any, **_: Any) -> Any:
        from botocore.awsrequest import AWSResponse

        self.requests += 1
        return AWSResponse(request.url, self.status, {}, mock.Mock(stream=lambda: [self.body]))


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Base credentials without a connection; the STS answers (``aws.sts``) and the sleeps recorded."""
    import boto3
    import botocore.endpoint

    from include.connectors import aws as module

    session = boto3.Session(aws_access_key_id="base", aws_secret_access_key="base", region_name="eu-west-1")
    state = mock.Mock(sts=_Aws(200, ASSUMED), sleeps=[])
    session.events.register("before-send.sts", lambda **kwargs: state.sts(**kwargs))
    monkeypatch.setattr(
        module, "base_aws", lambda conn_id: module.BaseAws(session, "eu-west-1", lambda service: None)
    )
    # botocore's backoff between its own attempts (its only use of time), recorded instead of slept.
    monkeypatch.setattr(botocore.endpoint, "time", mock.Mock(sleep=state.sleeps.append))
    return state


def _answered_by(client: Any, answer: _Aws) -> _Aws:
    client.meta.events.register("before-send.ec2", answer)
    return answer


def test_a_throttled_call_in_the_hook_is_sent_once_per_attempt_of_the_hook_budget(aws: Any) -> None:
    hook = _hook(retry_max_attempts=3)
    ec2 = _answered_by(hook.client, _Aws(503, EC2_THROTTLED))

    with pytest.raises(RetryBudgetExhausted, match="gave up after 3 attempts"):
        hook.call("describe_instances", lambda: hook.client.describe_instances())

    # 3 = the hook's budget; botocore's retries would have made it 3 x 6 (standard) or 3 x 5 (legacy).
    assert (ec2.requests, aws.sts.requests, hook.retry_count, aws.sleeps) == (3, 1, 2, [])


def test_a_throttled_assume_role_in_the_hook_is_inside_the_same_budget(aws: Any) -> None:
    aws.sts = _Aws(400, STS_THROTTLED)
    hook = _hook(retry_max_attempts=3)
    ec2 = _answered_by(hook.client, _Aws(200, "<DescribeInstancesResponse/>"))

    with pytest.raises(RetryBudgetExhausted, match="gave up after 3 attempts") as raised:
        hook.call("describe_instances", lambda: hook.client.describe_instances())

    assert str(raised.value.__cause__) == "aws describe_instances: Throttling: Rate exceeded"
    assert (aws.sts.requests, ec2.requests, aws.sleeps) == (3, 0, [])


def test_outside_a_hook_botocore_standard_mode_retries_within_the_connector_budget(aws: Any) -> None:
    client = capability_client("host-isolate", "globex", "ec2", run_context=RUN)
    ec2 = _answered_by(client, _Aws(503, EC2_THROTTLED))

    with pytest.raises(ClientError, match=r"RequestLimitExceeded.*reached max retries: 5"):
        client.describe_instances()

    assert client.meta.config.retries == {"mode": "standard", "total_max_attempts": 6}
    assert (ec2.requests, aws.sts.requests, len(aws.sleeps)) == (RetryPolicy().max_attempts, 1, 5)


@pytest.mark.parametrize(
    ("config", "attempts"),
    [
        pytest.param(None, {"mode": "standard", "total_max_attempts": 6}, id="default-budget"),
        pytest.param(NO_BOTOCORE_RETRIES, {"mode": "standard", "total_max_attempts": 1}, id="hook"),
        pytest.param(
            Config(read_timeout=5), {"mode": "standard", "total_max_attempts": 6}, id="other-settings-kept"
        ),
    ],
)
def test_every_capability_client_and_its_assume_role_use_standard_mode(aws: Any, config, attempts) -> None:
    with mock.patch.object(aws_module, "_assume", wraps=aws_module._assume) as assume:
        client = capability_client("host-isolate", "globex", "ec2", run_context=RUN, config=config)
        _answered_by(client, _Aws(200, "<DescribeInstancesResponse/>"))
        client.describe_instances()  # the first call assumes the role

    assert client.meta.config.retries == attempts
    assert assume.call_args.args[2].retries == attempts


def test_botocore_retries_needs_one_attempt_at_least() -> None:
    assert botocore_retries(4).retries == {"mode": "standard", "total_max_attempts": 4}
    with pytest.raises(ValueError, match=r"^max_attempts must be at least 1, not 0$"):
        botocore_retries(0)
