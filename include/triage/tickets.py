"""The body of ``support_triage`` (``dags/support/triage.py``): classify each reported ticket.

Each ticket's classification (:mod:`include.triage.rules`) is written back to Request Tracker.
Kept out of the DAG file so the DAG parses fast.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from include.audit.emit import side_effect
from include.connectors.context import RunContext
from include.connectors.idempotency import idempotency_key
from include.triage.rules import UNASSIGNED, classify


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


def triage_from_events(context: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Classify every reported ticket, set its fields, priority and status, and comment the verdict once.

    :param context: the task's Airflow context (triggering asset events, run, audit).
    :return: one entry per ticket: its id, the classification and whether the comment was created.
    """
    from include.connectors.ticketing.request_tracker import RequestTrackerHook

    results = []
    reader = RequestTrackerHook(tenant="platform")  # reads count against the platform's bucket
    for ticket_id in reported_tickets(context):
        ticket = reader.ticket_detail(ticket_id)
        verdict = classify(ticket["subject"], ticket["body"], ticket["requestor"])
        tenant = verdict.tenant if verdict.tenant != UNASSIGNED else "platform"
        hook = reader.for_tenant(tenant)  # the tenant's bucket, the reader's connection
        fields = {"Category": verdict.category, "Severity": verdict.severity}
        if verdict.tenant != UNASSIGNED:
            fields["Tenant"] = verdict.tenant
        hook.update_core(ticket_id, {"CustomFields": fields, "Priority": verdict.priority, "Status": "open"})
        run = RunContext.from_airflow_context(context, tenant)
        key = idempotency_key(replace(run, run_id=f"basis:triage:{ticket_id}"), "comment")
        entry = hook.comment(ticket_id, verdict.comment(), idempotency_key=key)
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
