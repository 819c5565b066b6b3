"""
### Support: triage new tickets (fast path)

Starts within seconds of a customer opening a ticket in the `support` queue of Request Tracker:
an event watcher in the triggerer polls RT every second for new tickets and turns each into an
asset event (`include/triggers/request_tracker.py`; polling because RT 5 has no outgoing webhooks).
One task then, for every ticket of the run: classifies it with the rules of
`include/policies/support_triage.yaml` (tenant from the requestor's e-mail domain; keywords ->
category, severity, priority), sets the Category, Severity and Tenant fields and the priority,
opens the ticket and comments the classification. No approval. One task, not one per step,
because each task start costs about a second (the fast path's budget is seconds).

Idempotent: a ticket reported twice (a triggerer restart) gets the same fields and one comment.
"""

from airflow.sdk import Asset, AssetWatcher, task

from include.triggers.request_tracker import NewTicketTrigger
from include.workflows import domain_workflow

NEW_SUPPORT_TICKETS = Asset(
    name="rt_support_new_tickets",
    uri="rt://support/new-tickets",
    watchers=[
        AssetWatcher(name="rt_support_new", trigger=NewTicketTrigger(queue="support", poll_interval=1.0))
    ],
)


@domain_workflow(domain="support", doc_md=__doc__, schedule=[NEW_SUPPORT_TICKETS])
def triage() -> None:
    @task
    def triage_tickets(**context) -> list[dict]:
        from include.triage.tickets import triage_from_events

        return triage_from_events(context)

    triage_tickets()


triage()
