"""The intake queues in SQS: create them (with their dead-letter queues), publish, dead-letter, delete.

The queues live in the platform's AWS account and are reached with the intake connection of
``intake.yaml`` (``aws_default``): the triggerer receives, the intake task deletes and dead-letters,
a system of record (or ``python -m include.cli events publish``) sends.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Final

from include.intake.policy import IntakePolicy, Source

REASON_ATTRIBUTE: Final = "intake-reason"
"""Message attribute of a dead-lettered message: why it was refused."""
SOURCE_ATTRIBUTE: Final = "intake-source"
MESSAGE_ID_ATTRIBUTE: Final = "intake-message-id"
"""The message id it had on its source queue."""
MAX_ATTRIBUTE_CHARS: Final = 1024


def sqs_client(aws_conn_id: str) -> Any:
    """An SQS client of the connection's base credentials, region and endpoint (moto locally)."""
    from include.connectors.aws import base_aws, botocore_retries

    base = base_aws(aws_conn_id)
    return base.session.client(
        "sqs",
        region_name=base.region_name,
        endpoint_url=base.endpoint_url_for("sqs"),
        config=botocore_retries(3),
    )


_shared_clients: dict[str, Any] = {}
_shared_clients_lock = threading.Lock()


def shared_sqs_client(aws_conn_id: str) -> Any:
    """The process's one SQS client of the connection, built on first use (boto3 clients are thread-safe).

    The triggerer runs one watcher per source queue in one process. Each client built with its own
    session parses botocore's endpoint data again (``endpoints.json``, ~100k objects): three watchers
    starting together set off a full collection of CPython's cyclic GC over the whole triggerer heap,
    which holds the GIL: it stopped the event loop and every trigger on it (3-5.7 s under load)
    although the work ran in ``asyncio.to_thread``. One client per connection keeps that to one
    parse (see ``include/triggers/sqs.py``). Call it from a worker thread: it reads the connection.
    """
    with _shared_clients_lock:  # the other watchers wait (in their threads) for the one being built
        client = _shared_clients.get(aws_conn_id)
        if client is None:
            client = _shared_clients[aws_conn_id] = sqs_client(aws_conn_id)
        return client


def forget_shared_sqs_client(aws_conn_id: str, client: Any) -> None:
    """Drop ``client`` after a failure, so that the next use builds it again (a changed connection)."""
    with _shared_clients_lock:
        if _shared_clients.get(aws_conn_id) is client:
            del _shared_clients[aws_conn_id]


class LazySqsClient:
    """An SQS client built on first use: the intake task starts its runs before it needs SQS
    (building a client costs ~0.2-0.5 s of imports and credential lookup, on the latency path)."""

    def __init__(self, aws_conn_id: str) -> None:
        self.aws_conn_id = aws_conn_id
        self._client: Any = None

    def __getattr__(self, name: str) -> Any:
        if self._client is None:
            self._client = sqs_client(self.aws_conn_id)
        return getattr(self._client, name)


@dataclass
class IntakeQueues:
    """The queues of one source, through one SQS client.

    :param source: the source (``intake.yaml``).
    :param client: a boto3 SQS client.
    """

    source: Source
    client: Any

    @cached_property
    def url(self) -> str:
        return str(self.client.get_queue_url(QueueName=self.source.queue)["QueueUrl"])

    @cached_property
    def dead_letter_url(self) -> str:
        return str(self.client.get_queue_url(QueueName=self.source.dead_letter_queue)["QueueUrl"])

    def delete(self, receipt_handle: str) -> None:
        """Delete a received message (it was handled: its runs exist, or it was dead-lettered)."""
        self.client.delete_message(QueueUrl=self.url, ReceiptHandle=receipt_handle)

    def dead_letter(self, message: Mapping[str, Any], reason: str) -> str:
        """Put a refused message on the dead-letter queue, body unchanged, with the reason attached.

        :returns: the dead-letter queue's message id.
        """
        attributes = {
            REASON_ATTRIBUTE: reason[:MAX_ATTRIBUTE_CHARS] or "refused",
            SOURCE_ATTRIBUTE: self.source.name,
            MESSAGE_ID_ATTRIBUTE: str(message["MessageId"]),
        }
        response = self.client.send_message(
            QueueUrl=self.dead_letter_url,
            MessageBody=str(message["Body"]) or "(empty body)",
            MessageAttributes={k: {"DataType": "String", "StringValue": v} for k, v in attributes.items()},
        )
        return str(response["MessageId"])

    def publish(self, event: Mapping[str, Any] | str) -> str:
        """Send one event (a mapping is sent as JSON) to the source queue; returns its message id."""
        body = event if isinstance(event, str) else json.dumps(event, separators=(",", ":"))
        return str(self.client.send_message(QueueUrl=self.url, MessageBody=body)["MessageId"])


def ensure_queues(policy: IntakePolicy, client: Any) -> dict[str, str]:
    """Create every source queue and its dead-letter queue (idempotent); returns queue name -> URL.

    The source queue gets the policy's visibility timeout and a RedrivePolicy to its dead-letter
    queue after ``max_receive_count`` receives: a message whose handling keeps failing (the target
    unknown to Airflow, the intake task failing) ends up there even without a reason attribute.
    In production Terraform creates the same queues; this is the devstack's and the tests'.
    """
    urls: dict[str, str] = {}
    for source in policy.sources.values():
        dlq_url = client.create_queue(
            QueueName=source.dead_letter_queue, Attributes={"MessageRetentionPeriod": "1209600"}
        )["QueueUrl"]
        dlq_arn = client.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        redrive = {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(source.max_receive_count)}
        attributes = {
            "VisibilityTimeout": str(int(source.visibility_timeout.total_seconds())),
            "RedrivePolicy": json.dumps(redrive),
        }
        url = client.create_queue(QueueName=source.queue)["QueueUrl"]
        client.set_queue_attributes(QueueUrl=url, Attributes=attributes)  # also on an existing queue
        urls[source.queue] = url
        urls[source.dead_letter_queue] = dlq_url
    return urls
