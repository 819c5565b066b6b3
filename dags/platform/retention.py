"""
### Retention: prune task logs older than the policy allows

Daily: deletes the Airflow task logs of this deployment's log folder last written longer ago than
the longest `task_log` retention in `include/policies/retention.yaml` (the folder holds every
tenant's runs, so the longest class wins), then the directories left empty. Only `dag_id=...`
trees are touched. The audit log, the buckets and the metadata database are not pruned here:
see docs/policies.md (Retention) for where each kind is kept and why.
"""

from datetime import timedelta

from airflow.sdk import task

from include.workflows.factory import domain_workflow


@domain_workflow(domain="platform", doc_md=__doc__, schedule=timedelta(days=1))
def retention() -> None:
    @task
    def prune_task_logs() -> dict:
        from include.policies.retention import prune_airflow_task_logs

        return prune_airflow_task_logs()

    prune_task_logs()


retention()
