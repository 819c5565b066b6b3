"""
### Fault drills (end-to-end test DAGs of the distributed setup)

`e2e_fault_ticket`: one task opens a ticket (idempotency key per run), optionally holds for
`hold_seconds` on its first try (the moment a fault test kills the worker running it), then
comments once (keyed too), then a second task resolves the ticket. Any retry must find the ticket
and the comment of the earlier try instead of making new ones. Retries every 10 s, five times, so a
30-second outage of Redis or Request Tracker is ridden out by Airflow's own task retries.

`e2e_fault_ticket_fail_fast`: the same with one retry, for the "outage longer than the retries"
case: the run fails, and nothing after the failed step happens.
"""

import time
from datetime import timedelta

from airflow.sdk import Param, get_current_context, task

from include.workflows import domain_workflow


def _build(dag_id: str, retries: int) -> None:
    @domain_workflow(
        domain="support",
        dag_id=dag_id,
        doc_md=__doc__,
        params={"hold_seconds": Param(0, type="integer", minimum=0, maximum=600)},
    )
    def fault_ticket():
        @task(retries=retries, retry_delay=timedelta(seconds=10), retry_exponential_backoff=0)
        def open_and_comment() -> dict:
            from include.connectors.context import RunContext
            from include.connectors.idempotency import idempotency_key
            from include.connectors.ticketing.request_tracker import RequestTrackerHook

            context = get_current_context()
            run = RunContext.from_airflow_context(context, "acme")
            hook = RequestTrackerHook(tenant="acme")
            ticket = hook.create_ticket(
                queue="support",
                subject=f"fault drill {run.correlation_id}",
                body="opened by a fault drill of the distributed setup",
                idempotency_key=idempotency_key(run, "open"),
                correlation_id=run.correlation_id,
            )
            hold = int(context["params"]["hold_seconds"])
            if hold and context["ti"].try_number == 1:
                time.sleep(hold)  # the fault test kills this task's worker here
            entry = hook.comment(
                ticket.id, "checked by the fault drill", idempotency_key=idempotency_key(run, "comment")
            )
            return {"id": ticket.id, "created": ticket.created, "comment_created": entry.created}

        @task(retries=retries, retry_delay=timedelta(seconds=10), retry_exponential_backoff=0)
        def resolve(ticket: dict) -> None:
            from include.connectors.ticketing.request_tracker import RequestTrackerHook

            RequestTrackerHook(tenant="acme").set_status(ticket["id"], "resolved")

        resolve(open_and_comment())

    fault_ticket()


_build("e2e_fault_ticket", retries=5)
_build("e2e_fault_ticket_fail_fast", retries=1)
