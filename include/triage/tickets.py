"""The body of ``support_triage`` (``dags/support/triage.py``): classify each reported ticket.

Each ticket's classification (:mod:`include.triage.rules`) is written back to Request Tracker.
Kept out of the DAG file so the DAG parses fast.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from include.audit.emit import side_effect
from include.connectors.context import RunContext
from include.connectors.idempotency import idempotency_key
from include.triage.rules import UNASSIGNED, Classification, classify

if TYPE_CHECKING:
    # Imported where a hook is made: the DAG's parse loads no HTTP client.
    from include.connectors.ticketing.interface import TicketEntry
    from include.connectors.ticketing.request_tracker import RequestTrackerHook


def reported_tickets(context: Mapping[str, Any]) -> list[str]:
    """Ticket ids from the run's triggering asset events (watcher payloads), in order, deduplicated.

    :param context: the task's Airflow context; ``dag_run.conf["ticket_ids"]`` adds the ids of a
        manual re-triage from the UI.
    """
    events = context.get("triggering_asset_events") or {}
    ids: list[str] = []
    for asset in events:
        for event in events[asset]:
            payload = (getattr(event, "extra", None) or {}).get("payload") or {}
            ticket_id = str(payload.get("ticket_id") or "")
            if ticket_id.isdigit() and ticket_id not in ids:
                ids.append(ticket_id)
    conf = getattr(context.get("dag_run"), "conf", None) or {}
    for ticket_id in conf.get("ticket_ids", []):  # a manual re-triage from the UI
        if str(ticket_id).isdigit() and str(ticket_id) not in ids:
            ids.append(str(ticket_id))
    return ids


def triage_hook(conn_id: str | None = None) -> RequestTrackerHook:
    """The RT hook triage reads with: the platform's, on triage's own share of the limit.

    Every call takes a permit from triage's share (``triage_rate_limit_*`` in the connection
    extras) and, per tenant, from triage's bucket of that tenant, never from the tenant bucket SOC
    work draws from: a flood of (spoofed) customer mail is capped at the share's rate.

    :param conn_id: the RT connection; default ``rt_default``.
    """
    from include.connectors.ticketing.request_tracker import TRIAGE_SHARE, RequestTrackerHook

    return RequestTrackerHook(conn_id, tenant="platform", share=TRIAGE_SHARE)


def triage_ticket(
    reader: RequestTrackerHook, ticket_id: str, run: RunContext
) -> tuple[Classification, TicketEntry]:
    """Read, classify and write back one ticket; comment the verdict once (keyed by the ticket).

    :param reader: the hook of :func:`triage_hook` (its connection and share are reused per tenant).
    :param ticket_id: the ticket.
    :param run: the run; the comment's key comes from the ticket, not the run (a ticket reported
        twice gets one comment).
    :return: the verdict and the comment (``created=False`` if it was there already).
    """
    ticket = reader.ticket_detail(ticket_id)
    verdict = classify(ticket["subject"], ticket["body"], ticket["requestor"])
    tenant = verdict.tenant if verdict.tenant != UNASSIGNED else "platform"
    hook = reader.for_tenant(tenant)  # triage's bucket of the tenant, the reader's connection
    fields = {"Category": verdict.category, "Severity": verdict.severity}
    if verdict.tenant != UNASSIGNED:
        fields["Tenant"] = verdict.tenant
    hook.update_core(ticket_id, {"CustomFields": fields, "Priority": verdict.priority, "Status": "open"})
    key = idempotency_key(replace(run, tenant=tenant, run_id=f"basis:triage:{ticket_id}"), "comment")
    return verdict, hook.comment(ticket_id, verdict.comment(), idempotency_key=key)


def triage_from_events(context: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Classify every reported ticket, set its fields, priority and status, and comment the verdict once.

    :param context: the task's Airflow context (triggering asset events, run, audit).
    :return: one entry per ticket: its id, the classification and whether the comment was created.
    """
    results = []
    reader = triage_hook()  # reads count against the platform's share of triage
    for ticket_id in reported_tickets(context):
        run = RunContext.from_airflow_context(context, "platform")
        verdict, entry = triage_ticket(reader, ticket_id, run)
        side_effect(
            context,
            system="request_tracker",
            operation="triage",
            object_id=ticket_id,
            ticket_id=ticket_id,
            tenant=None if verdict.tenant == UNASSIGNED else verdict.tenant,
            created=entry.created,
            capability="ticket-update",
            summary=f"{verdict.category}/{verdict.severity}/p{verdict.priority}",
        )
        results.append({"ticket_id": ticket_id, **verdict.as_dict(), "comment_created": entry.created})
    return results
