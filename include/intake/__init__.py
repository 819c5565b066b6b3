"""Event intake: events from the systems of record (SIEM/EDR, HRIS, PSA) start workflows.

One SQS queue per source; each queue is an Asset with an :class:`~airflow.sdk.AssetWatcher` whose
trigger (:class:`include.triggers.sqs.SqsQueueTrigger`) receives messages without deleting them.
The source's intake DAG (``dags/intake/sources.py``) validates each message against its JSON
Schema (:mod:`include.intake.events`), maps it to a workflow by ``include/policies/intake.yaml``
(:mod:`include.intake.policy`), starts the workflow with a run id derived from (source, event id)
and deletes the message only then (:mod:`include.intake.handler`). See docs/intake.md.
"""
