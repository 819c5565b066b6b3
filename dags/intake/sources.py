"""
### Event intake: one DAG per source queue (SIEM/EDR alerts, HRIS, PSA)

Scheduled by its queue's asset: the queue's watcher (an SQS long poll in the triggerer) turns each
batch of messages into an asset event, and this run handles the batch. Each message is validated
against its JSON Schema (`include/policies/schema/events/`), mapped by `include/policies/intake.yaml`
to its workflow(s) and params, and the workflow is started with the run id
`intake__<source>__<event id>`: the same event delivered twice starts nothing new. The message is
deleted only after its runs exist; an invalid or unknown event goes to the source's dead-letter
queue with the reason (attribute `intake-reason`) and is an `intake.rejected` audit record. A
message whose handling failed stays in the queue and comes back after the visibility timeout.
See docs/intake.md.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Asset, AssetWatcher, get_current_context, task

from include.intake.policy import Source, load_intake
from include.triggers.sqs import SqsQueueTrigger
from include.workflows import domain_workflow


def intake_dag(source: Source) -> Any:
    policy = load_intake()
    trigger = SqsQueueTrigger(
        queue=source.queue,
        aws_conn_id=policy.connection,
        wait_time_seconds=policy.wait_time_seconds,
        waiter_delay=policy.waiter_delay.total_seconds(),
        max_messages=policy.max_messages,
    )
    queue = Asset(
        source.asset_name, watchers=[AssetWatcher(name=f"{source.asset_name}_watcher", trigger=trigger)]
    )

    @domain_workflow(
        domain="platform",
        dag_id=source.dag_id,
        doc_md=f"{__doc__}\n\n**This source:** `{source.name}`: {source.description}",
        schedule=[queue],
        tags=("intake",),
    )
    def intake() -> None:
        @task
        def handle_messages() -> dict[str, Any]:
            from include.intake.handler import BatchHandler, messages_of
            from include.intake.queues import IntakeQueues, LazySqsClient
            from include.intake.starter import TaskSdkStarter

            context = get_current_context()
            messages = messages_of(context["triggering_asset_events"])
            queues = IntakeQueues(source, LazySqsClient(policy.connection))
            outcomes = BatchHandler(source, queues, TaskSdkStarter()).handle(messages)
            summary = [outcome.as_dict() for outcome in outcomes]
            failed = [o for o in outcomes if o.status == "failed"]
            if failed:
                raise RuntimeError(
                    f"{len(failed)} of {len(outcomes)} messages of {source.queue} not handled; they stay in "
                    f"the queue and come back after {source.visibility_timeout}: "
                    + "; ".join(f"{o.message_id}: {o.reason}" for o in failed)
                )
            return {"source": source.name, "messages": summary}

        handle_messages()

    return intake()


for _source in load_intake().sources.values():
    globals()[_source.dag_id] = intake_dag(_source)
