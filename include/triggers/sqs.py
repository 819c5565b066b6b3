"""Messages in an SQS queue as events, never deleted on receive: the intake's asset watcher trigger.

An event trigger (``BaseEventTrigger``, run by the triggerer for an ``AssetWatcher``): a long poll
(``ReceiveMessage`` with ``WaitTimeSeconds``) in a loop, one event per non-empty batch:
``{"queue": name, "messages": [{"MessageId", "ReceiptHandle", "Body", "ReceiveCount"}, ...]}``.
The trigger keeps running after an event (no restart gap between batches).

It never deletes. Received messages become invisible for the queue's visibility timeout; the intake
task deletes each one only after its workflow runs exist (or after dead-lettering it). A triggerer
that dies between receive and event loses nothing: the message becomes visible again and is
received again; after the queue's ``maxReceiveCount`` SQS moves it to the dead-letter queue.

Why not the Amazon provider's ``SqsSensorTrigger`` (``MessageQueueTrigger(scheme="sqs")``), measured
with apache-airflow-providers-amazon 9.39.0 (../shared/notes/providers-intake-notify.md):

- it is built on ``aiobotocore``, and no aiobotocore release accepts our ``boto3==1.44.8`` pin
  (the newest needs ``botocore<1.43.118``): using it means downgrading boto3 and waiting for
  aiobotocore at every bump. Here sync boto3 runs in a worker thread (``asyncio.to_thread``);
  a long poll holds one thread per watcher, three in all;
- by default it deletes the batch *before* yielding the event, so a triggerer crash in between loses
  the messages (at most once), and a dead-letter queue never receives anything;
- it ends after every event and is restarted by the triggerer ~1.5-2 s later.

Message bodies travel in the event, so they are stored in the metadata database
(``asset_event.extra``): events are small by contract (``MAX_BODY_BYTES``), the HRIS one carries
only the fields onboarding needs.

The triggerer's start. Work in ``asyncio.to_thread`` still holds the GIL when it is C code: a full
collection of CPython's cyclic GC walks the whole triggerer heap (Airflow and everything imported)
in one go. Building a boto3 client per watcher parsed botocore's endpoint data once per watcher, and
those allocations set off such a collection: the event loop, with every approval trigger on it,
stood still while the watchers started (0.24-1.8 CPU-s in one piece in a fresh interpreter; 3-5.7 s
of wall time in a loaded triggerer). So the
watchers share one client per connection (:func:`include.intake.queues.shared_sqs_client`), and
the first watcher to start freezes the heap that exists then (``gc.freeze()``, as Airflow does in
its forking executors and DAG processor; the triggerer has no such step): the objects of the
triggerer's start live as long as it does, and later collections no longer walk them. Measured by
``tests/unit/intake/test_sqs_watcher_start.py``.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseEventTrigger, TriggerEvent

_startup_heap_frozen = False


def _freeze_startup_heap() -> None:
    """Once per process, on the event loop thread: ``gc.freeze()`` is O(1) (it moves lists)."""
    global _startup_heap_frozen
    if not _startup_heap_frozen:
        _startup_heap_frozen = True
        gc.freeze()


class SqsQueueTrigger(BaseEventTrigger):
    """Yield ``{"queue", "messages": [...]}`` for each batch received from ``queue``; never delete.

    :param queue: the queue's name (its URL is looked up once, through the connection).
    :param aws_conn_id: the AWS connection (credentials, region, ``endpoint_url`` for moto).
    :param wait_time_seconds: the long poll (1-20 s): a message is received as soon as it is sent.
    :param waiter_delay: seconds to wait after a failed poll before the next.
    :param max_messages: messages per receive (1-10).
    """

    def __init__(
        self,
        *,
        queue: str,
        aws_conn_id: str = "aws_default",
        wait_time_seconds: int = 20,
        waiter_delay: float = 1.0,
        max_messages: int = 10,
    ) -> None:
        super().__init__()
        if not 1 <= wait_time_seconds <= 20:
            raise ValueError(
                f"wait_time_seconds for queue {queue!r}: 1 to 20 (the SQS long poll), not {wait_time_seconds}"
            )
        if not 1 <= max_messages <= 10:
            raise ValueError(
                f"max_messages for queue {queue!r}: 1 to 10 (the SQS maximum), not {max_messages}"
            )
        self.queue = queue
        self.aws_conn_id = aws_conn_id
        self.wait_time_seconds = wait_time_seconds
        self.waiter_delay = waiter_delay
        self.max_messages = max_messages

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "queue": self.queue,
                "aws_conn_id": self.aws_conn_id,
                "wait_time_seconds": self.wait_time_seconds,
                "waiter_delay": self.waiter_delay,
                "max_messages": self.max_messages,
            },
        )

    def _client(self) -> tuple[Any, str]:
        from include.intake.queues import shared_sqs_client

        client = shared_sqs_client(self.aws_conn_id)
        return client, str(client.get_queue_url(QueueName=self.queue)["QueueUrl"])

    def _forget(self, client: Any) -> None:
        from include.intake.queues import forget_shared_sqs_client

        forget_shared_sqs_client(self.aws_conn_id, client)

    def _receive(self, client: Any, url: str) -> list[dict[str, Any]]:
        response = client.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=self.max_messages,
            WaitTimeSeconds=self.wait_time_seconds,
            MessageSystemAttributeNames=["ApproximateReceiveCount"],
        )
        return [
            {
                "MessageId": m["MessageId"],
                "ReceiptHandle": m["ReceiptHandle"],
                "Body": m.get("Body", ""),
                "ReceiveCount": int((m.get("Attributes") or {}).get("ApproximateReceiveCount", 1)),
            }
            for m in response.get("Messages") or ()
        ]

    async def run(self) -> AsyncIterator[TriggerEvent]:
        _freeze_startup_heap()
        client: Any = None
        url = ""
        while True:
            try:
                if client is None:
                    client, url = await asyncio.to_thread(self._client)
                messages = await asyncio.to_thread(self._receive, client, url)
            except Exception as error:  # an SQS outage must not end the watcher: log, wait, poll again
                self.log.warning("receiving from queue %s failed: %s", self.queue, type(error).__name__)
                if client is not None:  # built again at the next poll (a changed connection)
                    await asyncio.to_thread(self._forget, client)
                client = None
                await asyncio.sleep(self.waiter_delay)
                continue
            if messages:
                yield TriggerEvent({"queue": self.queue, "messages": messages})
