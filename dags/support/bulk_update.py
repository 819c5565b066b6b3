"""
### Support: bulk ticket update

One change applied to many tickets of a tenant (a maintenance notice, a re-prioritisation after
an incident, closing a batch of duplicates): set custom fields and/or the status, and post one
comment per ticket. The tickets are processed in batches of 25 (dynamic task mapping) in the
support pool, at the support domain's low priority and through the ticketing connector's shared
rate limit: the noisy neighbour that must never delay HR or SOC work.

`change_id` names the change: running it again (after a failure, or by mistake) sets the same
values and finds the comments already posted, so nothing is duplicated.

Bounded to the tenant's support tickets: only fields of the allow-list (`bulk_update` in
`include/policies/support_triage.yaml`; never `Tenant`, `IdempotencyKey` or `CorrelationId`), and
only tickets of queue `support` whose Tenant is the run's tenant. The form (and a REST trigger,
which goes through the same parameter schema) refuses other fields; `plan_batches` then reads every
ticket from Request Tracker and refuses the whole change, naming each ticket, before the first
batch writes anything; each batch checks its own tickets again before writing.
"""

from airflow.sdk import Param, task
from airflow.sdk.exceptions import AirflowFailException

from include.operators.ticketing import BulkUpdateTicketsOperator
from include.policies.tenants import tenant_ids
from include.triage.rules import load_rules
from include.workflows import domain_workflow

BATCH_SIZE = 25
ALLOWED_FIELDS = list(load_rules().bulk_update.fields)


@domain_workflow(
    domain="support",
    doc_md=__doc__,
    params={
        "tenant": Param(type="string", enum=tenant_ids(), description="Tenant whose tickets change"),
        "change_id": Param(
            type="string",
            pattern="^[A-Za-z0-9][A-Za-z0-9._:-]{2,63}(?!\\n)$",
            description="Id of this change (a rerun with the same id duplicates nothing)",
        ),
        "ticket_ids": Param(
            type="array",
            items={"type": "string", "pattern": "^[0-9]+(?!\\n)$"},
            minItems=1,
            maxItems=2000,
            uniqueItems=True,
            description="Ticket numbers",
        ),
        "fields": Param(
            {},
            type="object",
            propertyNames={"enum": ALLOWED_FIELDS},
            additionalProperties={"type": "string", "maxLength": 255},
            description=f"Custom fields to set (allowed: {', '.join(ALLOWED_FIELDS) or 'none'})",
        ),
        "status": Param(None, type=["null", "string"], enum=[None, "open", "stalled", "resolved"]),
        "comment": Param("", type="string", maxLength=5000, description="Comment for every ticket"),
    },
)
def bulk_update() -> None:
    @task
    def plan_batches(params: dict | None = None) -> list[dict]:
        """One set of arguments per batch of tickets; refuse a change that would do nothing, or
        touch a field or ticket it may not (every ticket read first: a mixed list writes nothing)."""
        from include.connectors.ticketing import ticketing_hook
        from include.operators.ticketing import check_bulk_change

        params = params or {}
        change = {"fields": params["fields"], "status": params["status"], "comment": params["comment"]}
        if not any(change.values()):
            raise AirflowFailException("nothing to change: give fields, a status or a comment")
        ids = [str(t) for t in params["ticket_ids"]]
        hook = ticketing_hook("request_tracker", None, params["tenant"], bulk=True)
        check_bulk_change(hook, ids, params["fields"], tenant=params["tenant"])
        return [{"ticket_ids": ids[i : i + BATCH_SIZE], **change} for i in range(0, len(ids), BATCH_SIZE)]

    BulkUpdateTicketsOperator.partial(
        task_id="update_batch",
        tenant="{{ params.tenant }}",
        idempotency_basis="{{ params.change_id }}",
    ).expand_kwargs(plan_batches())


bulk_update()
