"""
### Bench baseline: an SQS asset watcher in bare Airflow

The least Airflow itself does from a message to a running task: an asset whose watcher is the same
`SqsQueueTrigger` as the intake's (the watcher is not what the comparison measures), a DAG scheduled
on it whose one task deletes the batch. No validation, no routing, no second DAG run, no audit.
Bench-only: loaded from `bench/intake_dags/` by `python -m bench.intake`, never deployed.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG, Asset, AssetWatcher, get_current_context, task

from include.triggers.sqs import SqsQueueTrigger

BARE_QUEUE = "bench-bare-intake"
MESSAGES = Asset(
    name="bench_bare_intake",
    watchers=[
        AssetWatcher(
            name="bench_bare_intake_watcher",
            trigger=SqsQueueTrigger(queue=BARE_QUEUE, wait_time_seconds=20, waiter_delay=1.0),
        )
    ],
)

with DAG(
    dag_id="bench_bare_intake",
    schedule=[MESSAGES],
    start_date=datetime(2024, 1, 1),
    catchup=False,
    doc_md=__doc__,
    # The platform domain's settings (include/policies/domains.yaml), as the intake DAGs get them:
    # the same pool and quotas, so the comparison measures the intake, not a different quota.
    tags=["bench", "domain:platform"],
    max_active_runs=4,
    max_active_tasks=4,
    dagrun_timeout=timedelta(hours=6),
    default_args={
        "pool": "platform",
        "execution_timeout": timedelta(minutes=30),
        "owner": "platform",
        "priority_weight": 60,
        "weight_rule": "absolute",
    },
):

    @task
    def take_messages() -> int:
        from include.intake.handler import messages_of
        from include.intake.queues import sqs_client

        messages = messages_of(get_current_context()["triggering_asset_events"])
        client = sqs_client("aws_default")
        url = client.get_queue_url(QueueName=BARE_QUEUE)["QueueUrl"]
        for message in messages:
            client.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        return len(messages)

    take_messages()
