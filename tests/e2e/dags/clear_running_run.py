"""
### Clear a failed task (end-to-end test DAG)

`flaky` fails its first try (no retries). With `hold` (the default) `holds_the_run` keeps the run
running until `flaky` has succeeded; without it the run fails at once. The test clears `flaky`
through the REST API, as the UI's "Clear" does: Airflow 3.3.2 answered 500 to that because of the
run's SLA deadline (apache/airflow#70368, include/workflows/deadline_fix.py).
"""

import time

from airflow.sdk import Param, get_current_context, task

from include.workflows import domain_workflow

HOLD_SECONDS = 90  # the test clears within seconds; this only ends a run whose clear failed


@domain_workflow(
    domain="support",
    dag_id="e2e_clear_running_run",
    kind="infrastructure_change",  # the 1 h SLA: the deadline must not be missed during the test
    doc_md=__doc__,
    params={"hold": Param(True, type="boolean")},
)
def clear_running_run():
    @task(retries=0)
    def flaky() -> str:
        if get_current_context()["ti"].try_number == 1:
            raise RuntimeError("the first try fails on purpose: the test clears this task")
        return "second try"

    @task(retries=0)
    def holds_the_run() -> None:
        context = get_current_context()
        if not context["params"]["hold"]:
            return
        until = time.monotonic() + HOLD_SECONDS
        while context["ti"].xcom_pull(task_ids="flaky") is None:
            if time.monotonic() > until:
                raise TimeoutError(f"flaky did not succeed within {HOLD_SECONDS} s")
            time.sleep(0.5)

    flaky()
    holds_the_run()


clear_running_run()
