"""dags/intake/sources.py: one intake DAG per source, scheduled on its queue's asset watcher."""

from __future__ import annotations

from include.intake.policy import load_intake
from include.policies.checks import DEFAULT_DAGS_FOLDER, load_dag_folder
from include.triggers.sqs import SqsQueueTrigger


def test_each_source_has_its_intake_dag_watching_its_queue_without_deleting() -> None:
    scan = load_dag_folder(DEFAULT_DAGS_FOLDER / "intake" / "sources.py")
    assert scan.import_errors == {}
    dags = {dag.dag_id: dag for dag in scan.dags}
    policy = load_intake()
    assert set(dags) == {source.dag_id for source in policy.sources.values()}
    for source in policy.sources.values():
        dag = dags[source.dag_id]
        [asset] = list(dag.timetable.asset_condition.objects)
        [watcher] = asset.watchers
        trigger = watcher.trigger
        assert isinstance(trigger, SqsQueueTrigger)
        assert (trigger.queue, trigger.aws_conn_id) == (source.queue, policy.connection)
        assert trigger.wait_time_seconds == policy.wait_time_seconds  # a long poll, not a busy loop
        assert "domain:platform" in dag.tags
        assert [task.task_id for task in dag.tasks] == ["handle_messages"]
