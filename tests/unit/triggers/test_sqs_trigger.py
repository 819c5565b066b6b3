"""SqsQueueTrigger against moto's SQS: one event per batch, nothing deleted, an outage survived."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from include.triggers.sqs import SqsQueueTrigger

CONN = json.dumps(
    {"conn_type": "aws", "login": "testing", "password": "testing", "extra": {"region_name": "us-east-1"}}
)


@pytest.fixture
def sqs(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("AIRFLOW_CONN_AWS_INTAKE_TEST", CONN)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        yield boto3.client(
            "sqs", region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing"
        )


def first_event(trigger: SqsQueueTrigger, timeout: float = 10) -> Any:
    async def take() -> Any:
        runner: Any = trigger.run()
        try:
            return await asyncio.wait_for(runner.__anext__(), timeout)
        finally:
            await runner.aclose()

    return asyncio.run(take())


def trigger(**kwargs: Any) -> SqsQueueTrigger:
    return SqsQueueTrigger(
        queue="siem-alerts", aws_conn_id="aws_intake_test", wait_time_seconds=1, waiter_delay=0.05, **kwargs
    )


def test_a_batch_is_one_event_and_stays_in_the_queue(sqs: Any) -> None:
    url = sqs.create_queue(QueueName="siem-alerts", Attributes={"VisibilityTimeout": "0"})["QueueUrl"]
    for body in ("one", "two"):
        sqs.send_message(QueueUrl=url, MessageBody=body)
    event = first_event(trigger())
    assert event.payload["queue"] == "siem-alerts"
    messages = event.payload["messages"]
    assert sorted(m["Body"] for m in messages) == ["one", "two"]
    assert all(m["ReceiptHandle"] and m["MessageId"] and m["ReceiveCount"] == 1 for m in messages)
    # Never deleted on receive: both messages are still there (visible again at once: timeout 0).
    again = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    assert sorted(m["Body"] for m in again) == ["one", "two"]


def test_a_missing_queue_is_polled_again_until_it_exists(sqs: Any) -> None:
    async def scenario() -> Any:
        runner: Any = trigger().run()
        pending = asyncio.ensure_future(runner.__anext__())
        await asyncio.sleep(0.5)  # several failed polls: the trigger must not have ended
        assert not pending.done()
        url = sqs.create_queue(QueueName="siem-alerts")["QueueUrl"]
        sqs.send_message(QueueUrl=url, MessageBody="late")
        event = await asyncio.wait_for(pending, 10)
        await runner.aclose()
        return event

    assert [m["Body"] for m in asyncio.run(scenario()).payload["messages"]] == ["late"]


def test_it_serializes_to_itself() -> None:
    original = SqsQueueTrigger(
        queue="hris-events", aws_conn_id="aws_x", wait_time_seconds=20, waiter_delay=2, max_messages=5
    )
    path, kwargs = original.serialize()
    assert path == "include.triggers.sqs.SqsQueueTrigger"
    assert SqsQueueTrigger(**kwargs).serialize() == (path, kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"), [({"wait_time_seconds": 21}, "1 to 20"), ({"max_messages": 11}, "1 to 10")]
)
def test_limits_beyond_sqs_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SqsQueueTrigger(queue="q", **kwargs)
