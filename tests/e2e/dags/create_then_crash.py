"""
### Create, then die (end-to-end test DAG)

The first try creates a ticket and is killed (SIGKILL) before it can record success; the retry
must find that ticket by its idempotency key instead of creating a second one.
"""

import os
import signal
from datetime import timedelta

from airflow.sdk import get_current_context, task

from include.workflows import domain_workflow


@domain_workflow(domain="support", dag_id="e2e_create_then_crash", doc_md=__doc__)
def create_then_crash():
    @task(retries=2, retry_delay=timedelta(seconds=1), retry_exponential_backoff=0)
    def create_ticket() -> dict:
        from include.connectors.context import RunContext
        from include.connectors.idempotency import idempotency_key
        from include.connectors.ticketing.request_tracker import RequestTrackerHook

        context = get_current_context()
        run = RunContext.from_airflow_context(context, "acme")
        hook = RequestTrackerHook(tenant="acme")
        ticket = hook.create_ticket(
            queue="support",
            subject="created before a crash",
            body="the worker dies right after this",
            idempotency_key=idempotency_key(run, "create_ticket"),
            correlation_id=run.correlation_id,
        )
        if context["ti"].try_number == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        return {**ticket.as_xcom(), "correlation_id": run.correlation_id}

    create_ticket()


create_then_crash()
