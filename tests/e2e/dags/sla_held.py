"""
### Held past its SLA (end-to-end test DAG)

The burst test pauses this support workflow and triggers runs of it: they stay queued past the
support fast-path SLA, so each must get exactly one SLA-miss mail, however fast the machine gets
through the burst beside them.
"""

from airflow.sdk import task

from include.workflows import domain_workflow


@domain_workflow(domain="support", dag_id="e2e_sla_held", doc_md=__doc__)
def sla_held():
    @task
    def nothing_to_do() -> None:
        return None

    nothing_to_do()


sla_held()
