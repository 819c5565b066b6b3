"""The body of support_triage: which tickets a run triages, and the exact RT calls and audit per ticket."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any
from unittest import mock

import pytest

from include.connectors.context import RunContext
from include.connectors.errors import PermanentError
from include.connectors.idempotency import idempotency_key
from include.connectors.ticketing.interface import TicketEntry
from include.triage.tickets import reported_tickets, triage_from_events

DAG_ID, RUN_ID, TASK_ID = "support_triage", "asset_triggered__2026-12-06T10:00:00+00:00", "triage_tickets"


def event(ticket_id: Any) -> SimpleNamespace:
    return SimpleNamespace(extra={"payload": {"ticket_id": ticket_id}})


def airflow_context(events: dict[str, list[Any]], conf: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "ti": SimpleNamespace(dag_id=DAG_ID, run_id=RUN_ID, task_id=TASK_ID),
        "run_id": RUN_ID,
        "dag_run": SimpleNamespace(conf=conf or {}),
        "triggering_asset_events": events,
    }


@pytest.mark.parametrize(
    ("events", "conf", "expected"),
    [
        pytest.param({"rt": [event("12"), event(13)]}, None, ["12", "13"], id="watcher-events-in-order"),
        pytest.param({"rt": [event("12")], "rt2": [event("12")]}, None, ["12"], id="duplicates-once"),
        pytest.param(
            {"rt": [event("abc"), event(None), SimpleNamespace(extra=None)]}, None, [], id="not-ids"
        ),
        pytest.param({}, {"ticket_ids": [7, "8", "x"]}, ["7", "8"], id="manual-re-triage"),
        pytest.param({"rt": [event("7")]}, {"ticket_ids": ["7", "9"]}, ["7", "9"], id="events-then-conf"),
    ],
)
def test_reported_tickets(events: dict[str, list[Any]], conf: dict[str, Any] | None, expected: list[str]):
    assert reported_tickets(airflow_context(events, conf)) == expected


TICKETS = {
    "5": {"subject": "Portal down", "body": "since 9:00", "requestor": "ann@acme.example"},
    "6": {"subject": "A question", "body": "about reports", "requestor": "bob@unknown.example"},
}


@pytest.fixture
def rt():
    """``RequestTrackerHook`` patched: the reader returns TICKETS; ``for_tenant`` one hook per tenant."""
    hooks: dict[str, mock.Mock] = {}

    def for_tenant(tenant: str) -> mock.Mock:
        hook = hooks.setdefault(tenant, mock.Mock(name=f"rt[{tenant}]"))
        hook.comment.return_value = TicketEntry(ticket_id="?", entry_id="1", created=True)
        return hook

    with mock.patch("include.connectors.ticketing.request_tracker.RequestTrackerHook") as cls:
        cls.return_value.ticket_detail.side_effect = TICKETS.__getitem__
        cls.return_value.for_tenant.side_effect = for_tenant
        yield SimpleNamespace(cls=cls, reader=cls.return_value, hooks=hooks)


def comment_key(ticket_id: str, tenant: str) -> str:
    run = RunContext(
        dag_id=DAG_ID, run_id=f"basis:triage:{ticket_id}", task_id=TASK_ID, tenant=tenant, correlation_id="-"
    )
    return idempotency_key(run, "comment")


def test_each_ticket_is_classified_written_back_and_audited(rt):
    context = airflow_context({"rt": [event("5"), event("6")]})

    with mock.patch("include.triage.tickets.side_effect") as audit:
        results = triage_from_events(context)

    rt.cls.assert_called_once_with(None, tenant="platform", share="triage")  # triage's own share
    assert rt.reader.ticket_detail.call_args_list == [mock.call("5"), mock.call("6")]
    assert rt.reader.for_tenant.call_args_list == [mock.call("acme"), mock.call("platform")]
    acme, platform = rt.hooks["acme"], rt.hooks["platform"]
    acme.update_core.assert_called_once_with(
        "5",
        {
            "CustomFields": {"Category": "outage", "Severity": "high", "Tenant": "acme"},
            "Priority": 70,
            "Status": "open",
        },
    )
    acme.comment.assert_called_once_with(
        "5",
        'Triage: category outage, severity high, priority 70, tenant acme; matched "down" (rule outage). '
        "Rules: include/policies/support_triage.yaml.",
        idempotency_key=comment_key("5", "acme"),
    )
    platform.update_core.assert_called_once_with(
        "6", {"CustomFields": {"Category": "general", "Severity": "low"}, "Priority": 10, "Status": "open"}
    )
    platform.comment.assert_called_once_with(
        "6",
        "Triage: category general, severity low, priority 10, tenant unassigned; no rule matched (default). "
        "Rules: include/policies/support_triage.yaml.",
        idempotency_key=comment_key("6", "platform"),
    )
    assert audit.call_args_list == [
        mock.call(
            context,
            system="request_tracker",
            operation="triage",
            object_id="5",
            ticket_id="5",
            tenant="acme",
            created=True,
            capability="ticket-update",
            summary="outage/high/p70",
        ),
        mock.call(
            context,
            system="request_tracker",
            operation="triage",
            object_id="6",
            ticket_id="6",
            tenant=None,
            created=True,
            capability="ticket-update",
            summary="general/low/p10",
        ),
    ]
    assert results == [
        {
            "ticket_id": "5",
            "rule": "outage",
            "category": "outage",
            "severity": "high",
            "priority": 70,
            "tenant": "acme",
            "matched": "down",
            "comment_created": True,
        },
        {
            "ticket_id": "6",
            "rule": "default",
            "category": "general",
            "severity": "low",
            "priority": 10,
            "tenant": "unassigned",
            "matched": None,
            "comment_created": True,
        },
    ]


def test_a_run_without_tickets_touches_nothing(rt):
    with mock.patch("include.triage.tickets.side_effect") as audit:
        assert triage_from_events(airflow_context({})) == []

    rt.reader.ticket_detail.assert_not_called()
    rt.reader.for_tenant.assert_not_called()
    audit.assert_not_called()


def test_a_refused_update_fails_the_task_before_the_comment(rt):
    refused = PermanentError("403 Forbidden", system="request_tracker", operation="update_core", status=403)
    rt.reader.for_tenant("acme").update_core.side_effect = refused

    with (
        mock.patch("include.triage.tickets.side_effect") as audit,
        pytest.raises(PermanentError, match=r"^request_tracker update_core: 403 Forbidden$"),
    ):
        triage_from_events(airflow_context({"rt": [event("5")]}))

    rt.hooks["acme"].comment.assert_not_called()
    audit.assert_not_called()
