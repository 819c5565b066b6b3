"""
### A resumable task without an approval (end-to-end test DAG)

One task keeps a cursor in its own task state store (``context["task_state_store"]``, Airflow's
store for a task that resumes where it stopped), in a SOC DAG with no approval gate: the control
of tests/e2e/test_attacks_rest.py, where the approval door lets a hand-made write of the state
store through because nothing here is approved.
"""

from airflow.sdk import get_current_context, task

from include.workflows import domain_workflow

CURSOR = {"page": 3, "last_alert": "EDR-0042"}


@domain_workflow(domain="soc", dag_id="e2e_soc_state_store", doc_md=__doc__)
def soc_state_store() -> None:
    @task
    def keep_cursor() -> dict:
        get_current_context()["task_state_store"].set("cursor", CURSOR)
        return CURSOR

    keep_cursor()


soc_state_store()
