"""The intake watchers' start must not stop the triggerer's event loop (approval triggers share it).

Three ``SqsQueueTrigger`` watchers start on one event loop in a fresh interpreter that has imported
what the triggerer's runner has (``airflow.jobs.triggerer_job_runner``), with ``aws_default`` read
from Secrets Manager as on the stack, against a moto server. A probe task on the loop records, for
each of its 10 ms sleeps, how long the loop was late and how much CPU the process spent meanwhile.

The CPU figure is what the test asserts: work that holds the GIL (a full cyclic-GC collection of the
heap, a large ``json.loads``) costs CPU while the loop waits, whatever the machine's load; a loaded
machine only stretches the wall time. Measured here (2 cores, load 3-40), before the watchers
shared one client and froze the start's heap: the longest stall 0.24-0.26 CPU-s, 0.26-0.94 s of wall
time (a full collection of the heap while the third and fourth botocore sessions parsed
``endpoints.json``), in 5 runs out of 5; after: 0.02-0.03 CPU-s, 0.015-0.09 s, in 4 out of 4.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests
from moto.server import ThreadedMotoServer

REPO = Path(__file__).resolve().parents[3]
QUEUES = ("siem-alerts", "hris-events", "psa-events")
SECRETS_BACKEND = "airflow.providers.amazon.aws.secrets.secrets_manager.SecretsManagerBackend"
MAX_STALL_CPU_SECONDS = 0.12

PROBE = r"""
import asyncio, json, sys, time

import airflow.jobs.triggerer_job_runner  # noqa: F401  the runner's heap, as in the triggerer

from include.triggers.sqs import SqsQueueTrigger

QUEUES = json.loads(sys.argv[1])


async def probe(stalls):
    while True:
        wall, cpu = time.monotonic(), time.process_time()
        await asyncio.sleep(0.01)
        stalls.append((time.monotonic() - wall - 0.01, time.process_time() - cpu))


async def main():
    stalls = []
    prober = asyncio.create_task(probe(stalls))
    await asyncio.sleep(0.3)
    watchers = [SqsQueueTrigger(queue=q, aws_conn_id="aws_default", wait_time_seconds=1).run()
                for q in QUEUES]
    events = await asyncio.wait_for(asyncio.gather(*(w.__anext__() for w in watchers)), 120)
    await asyncio.sleep(0.3)
    prober.cancel()
    for watcher in watchers:
        await watcher.aclose()
    print(json.dumps({
        "received": {e.payload["queue"]: [m["Body"] for m in e.payload["messages"]] for e in events},
        "max_stall_cpu_s": max(cpu for _, cpu in stalls),
        "max_stall_wall_s": max(wall for wall, _ in stalls),
    }))


asyncio.run(main())
"""


@pytest.fixture
def moto_url() -> Iterator[str]:
    """A moto server with ``aws_default`` in Secrets Manager and a message on each intake queue."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    try:
        requests.post(f"{url}/moto-api/reset", timeout=10).raise_for_status()
        keys = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
        aws: dict[str, Any] = {"endpoint_url": url, "region_name": "us-east-1", **keys}
        connection = {
            "conn_type": "aws",
            "login": "testing",
            "password": "testing",
            "extra": {"endpoint_url": url, "region_name": "us-east-1"},
        }
        boto3.client("secretsmanager", **aws).create_secret(
            Name="airflow/connections/aws_default", SecretString=json.dumps(connection)
        )
        sqs = boto3.client("sqs", **aws)
        for queue in QUEUES:
            url_of_queue = sqs.create_queue(QueueName=queue)["QueueUrl"]
            sqs.send_message(QueueUrl=url_of_queue, MessageBody=f"to {queue}")
        yield url
    finally:
        server.stop()


def start_watchers(moto_url: str, cwd: Path = REPO) -> dict[str, Any]:
    """Run the probe in a fresh interpreter (a cold heap and cold imports, as at a triggerer start)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_CONN_", "AWS_"))}
    env.update(
        {
            "AIRFLOW__SECRETS__BACKEND": SECRETS_BACKEND,
            "AIRFLOW__SECRETS__BACKEND_KWARGS": json.dumps(
                {
                    "connections_prefix": "airflow/connections",
                    "variables_prefix": "airflow/variables",
                    "config_prefix": None,
                    "endpoint_url": moto_url,
                    "region_name": "us-east-1",
                    "aws_access_key_id": "testing",
                    "aws_secret_access_key": "testing",
                }
            ),
            "PYTHONPATH": str(cwd),
        }
    )
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(QUEUES)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def test_three_watchers_start_without_stopping_the_event_loop(moto_url: str) -> None:
    result = start_watchers(moto_url)
    print(f"watchers' start: {result}")
    # Each watcher works (they share one client): its queue's message arrived as its first event.
    assert result["received"] == {queue: [f"to {queue}"] for queue in QUEUES}
    assert result["max_stall_cpu_s"] < MAX_STALL_CPU_SECONDS, (
        f"the event loop waited while the process spent {result['max_stall_cpu_s']:.2f} CPU-s "
        f"(longest stall {result['max_stall_wall_s']:.2f} s): the watchers' start holds the GIL"
    )


def test_the_watchers_share_one_client_per_connection_until_it_fails(
    moto_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from include.intake import queues

    connection: dict[str, Any] = {"conn_type": "aws", "login": "testing", "password": "testing"}
    connection["extra"] = {"endpoint_url": moto_url, "region_name": "us-east-1"}
    monkeypatch.setenv("AIRFLOW_CONN_AWS_SHARED_TEST", json.dumps(connection))
    built: list[Any] = []
    real_sqs_client = queues.sqs_client

    def counted_sqs_client(aws_conn_id: str) -> Any:
        built.append(real_sqs_client(aws_conn_id))
        return built[-1]

    monkeypatch.setattr(queues, "sqs_client", counted_sqs_client)
    monkeypatch.setattr(queues, "_shared_clients", {})

    with ThreadPoolExecutor(3) as pool:  # three watchers starting at once: one client is built
        clients = list(pool.map(queues.shared_sqs_client, ["aws_shared_test"] * 3))
    assert len(built) == 1
    assert all(client is built[0] for client in clients)
    assert clients[0].get_queue_url(QueueName="siem-alerts")["QueueUrl"].startswith(moto_url)

    queues.forget_shared_sqs_client("aws_shared_test", object())  # another watcher's stale client: kept
    assert queues.shared_sqs_client("aws_shared_test") is built[0]
    queues.forget_shared_sqs_client("aws_shared_test", built[0])  # after a failure: built again
    assert len(built) == 1
    assert queues.shared_sqs_client("aws_shared_test") is built[1]
    assert built[1] is not built[0]
