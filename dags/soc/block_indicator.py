"""
### SOC: block an indicator at the perimeter, with an expiry

From an alert (indicator = a public IPv4/IPv6 address or CIDR, tenant, expiry, alert id): check
the input and read the tenant's WAF block list (read-only), open a SOC ticket, ask SOC on-call or
the SOC lead to approve (the domain's ladder), then add the network to the tenant's WAF IP set and
record its expiry, put the evidence on the ticket, wait (deferred, no worker held) until the
expiry, remove the block by itself, and resolve the ticket.

A re-run for the same indicator extends, never duplicates: one entry in the IP set, the later
expiry kept; the earlier run's wait sees the later expiry and waits again (or hands the removal
to the later run when that lies beyond its own run time), so exactly one removal happens, at the
latest expiry. Domains, malformed, too wide (wider than /16 v4, /48 v6) or non-public ranges, an
expiry in the past or beyond the policy maximum (the SOC run limit less the approval chain) and an
unknown tenant are refused before anything is created.

With an `incident_id` the Defender/Sentinel incident gets the run's outcome once the block is in
place (a comment, and `inProgress` when done), also when the run is rejected or fails:
include/workflows/incidents.py.
"""

from airflow.sdk import Param

from include.operators.perimeter import (
    BlockIndicatorOperator,
    InspectIndicatorOperator,
    UnblockIndicatorOperator,
    WaitForBlockExpiryOperator,
    max_block_duration,
)
from include.operators.ticketing import CommentTicketOperator, UpdateTicketOperator
from include.workflows import domain_workflow
from include.workflows.incidents import incident_writeback
from include.workflows.soc import (
    ALERT,
    TENANT,
    TICKET_ID,
    soc_evidence,
    soc_failure_comment,
    soc_gate,
    soc_params,
    soc_ticket,
)

INDICATOR = "{{ params.indicator }}"
EXPIRES_AT = "{{ params.expires_at }}"
BLOCK = "ti.xcom_pull(task_ids='block_indicator')"
UNBLOCK = "ti.xcom_pull(task_ids='unblock_indicator')"
STEP = {"tenant": TENANT, "indicator": INDICATOR, "expires_at": EXPIRES_AT}
MAXIMUM = max_block_duration()


@domain_workflow(
    domain="soc",
    kind="infrastructure_change",
    hold_until="expires_at",  # the SLA counts from the block's end (include/workflows/holds.py)
    doc_md=__doc__,
    params=soc_params(
        {
            "indicator": Param(
                type="string",
                minLength=2,
                maxLength=64,
                description="Public IPv4/IPv6 address or CIDR to block (at most /16 for IPv4, /48 for IPv6)",
            ),
        },
        severity=False,
        before_alert={
            "expires_at": Param(
                type="string",
                pattern=r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:\d{2})(?!\n)$",
                description=f"When the block ends: ISO 8601 with a time zone, at most {MAXIMUM} from now",
            ),
        },
        alert="The alert's id in the SIEM/EDR: one ticket per alert",
    ),
)
def block_indicator() -> None:
    # The SOC skeleton (include/workflows/soc.py) with a held change: the block stays until its
    # expiry, then this run removes it and resolves the ticket.
    inspect = InspectIndicatorOperator(task_id="inspect_indicator", **STEP)
    ticket = soc_ticket(inspect, subject="Block " + INDICATOR + " at the perimeter (alert " + ALERT + ")")
    gate = soc_gate(
        "perimeter-block",
        inspect,
        subject="Block " + INDICATOR + " for " + TENANT + " until " + EXPIRES_AT,
        artifact_params=("indicator", "tenant", "expires_at"),
    )
    block = BlockIndicatorOperator(task_id="block_indicator", **STEP)
    blocked = soc_evidence(
        gate,
        "{{ " + BLOCK + "['indicator'] }} is in WAF IP set {{ " + BLOCK + "['ip_set'] }} until "
        "{{ " + BLOCK + "['expires_at'] }} (requested {{ " + BLOCK + "['requested_expires_at'] }}; "
        "{{ 'added' if " + BLOCK + "['added'] else 'already there: no second entry' }}).",
        basis=ALERT + ":block:" + INDICATOR + ":" + EXPIRES_AT,
        task_id="block_evidence",
    )
    wait = WaitForBlockExpiryOperator(task_id="wait_for_expiry", **STEP)
    unblock = UnblockIndicatorOperator(task_id="unblock_indicator", **STEP)
    expired = CommentTicketOperator(
        task_id="expiry_evidence",
        tenant=TENANT,
        ticket_id=TICKET_ID,
        body="Block of {{ " + UNBLOCK + "['indicator'] }} in {{ " + UNBLOCK + "['ip_set'] }}: "
        "{{ {'removed': 'removed at its expiry', 'already-removed': 'removed already by another run',"
        " 'extended': 'extended to ' ~ " + UNBLOCK + "['expires_at'] ~ '; the extending run removes it'}"
        "[" + UNBLOCK + "['outcome']] }}.",
        # One comment per fact: the removal and "removed already" are different evidence.
        idempotency_basis=ALERT
        + ":expiry:"
        + INDICATOR
        + ":"
        + EXPIRES_AT
        + ":{{ "
        + UNBLOCK
        + "['outcome'] }}",
    )
    resolve = UpdateTicketOperator(
        task_id="resolve_ticket",
        tenant=TENANT,
        ticket_id=TICKET_ID,
        status="{{ 'open' if " + UNBLOCK + "['outcome'] == 'extended' else 'resolved' }}",
        idempotency_basis=ALERT,
    )
    ticket >> gate >> block >> blocked >> wait >> unblock >> expired >> resolve
    # The ticket is told when the block or its removal at the expiry failed (the evidence after it
    # is then upstream_failed and says nothing): a block not in place, or one left past its expiry.
    block >> soc_failure_comment(block, basis=ALERT + ":block:" + INDICATOR + ":" + EXPIRES_AT)
    unblock >> soc_failure_comment(
        unblock, basis=ALERT + ":unblock:" + INDICATOR + ":" + EXPIRES_AT, task_id="unblock_failed"
    )
    # Written when the block is in place, not at its expiry (which may be days later), and beside
    # its evidence, not after it (include/workflows/soc.py).
    block >> incident_writeback(
        "perimeter-block",
        done=INDICATOR + " blocked at the perimeter until " + EXPIRES_AT + ", removed then.",
    )


block_indicator()
