"""The ticket operators with a mocked hook: the exact hook call, the XCom, the audit record, the errors."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any
from unittest import mock

import pytest
from airflow.exceptions import TaskDeferred

from include.connectors.context import RunContext, default_correlation_id
from include.connectors.errors import PermanentError, RateLimitBackpressure
from include.connectors.idempotency import idempotency_key
from include.connectors.ticketing.interface import Ticket, TicketEntry
from include.connectors.ticketing.jira import JiraServiceManagementHook
from include.connectors.ticketing.request_tracker import RequestTrackerHook
from include.operators.ticketing import (
    AttachEvidenceOperator,
    BulkChangeRefused,
    BulkUpdateTicketsOperator,
    CommentTicketOperator,
    CreateTicketOperator,
    TicketOperator,
    UpdateTicketOperator,
    check_bulk_change,
)
from include.triage.rules import BulkUpdateScope

DAG_ID, RUN_ID, TASK_ID, TENANT = "soc_contain_host", "manual__2026-12-06", "ticket", "acme"
CORRELATION = default_correlation_id(DAG_ID, RUN_ID)
RUN = RunContext(dag_id=DAG_ID, run_id=RUN_ID, task_id=TASK_ID, tenant=TENANT, correlation_id=CORRELATION)


def context(conf: dict[str, Any] | None = None) -> dict[str, Any]:
    ti = SimpleNamespace(dag_id=DAG_ID, task_id=TASK_ID, run_id=RUN_ID)
    return {"ti": ti, "run_id": RUN_ID, "dag_run": SimpleNamespace(conf=conf or {})}


def key(operation: str, basis: str | None = None) -> str:
    run = replace(RUN, run_id=f"basis:{basis}") if basis else RUN
    return idempotency_key(run, operation)


@pytest.fixture
def hook() -> Iterator[mock.MagicMock]:
    """The operators' hook, mocked (``retry_count`` as a connector hook has it)."""
    fake = mock.MagicMock(name="hook")
    fake.retry_count = 2
    with mock.patch.object(TicketOperator, "hook", new_callable=mock.PropertyMock, return_value=fake):
        yield fake


@pytest.fixture
def audit() -> Iterator[mock.MagicMock]:
    with mock.patch("include.operators.ticketing.audit_side_effect") as recorded:
        yield recorded


# --- the hook ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("operator", "system", "hook_class", "conn_id", "bulk"),
    [
        pytest.param(
            CommentTicketOperator, "request_tracker", RequestTrackerHook, "rt_default", False, id="rt"
        ),
        pytest.param(
            CommentTicketOperator, "jira", JiraServiceManagementHook, "jira_default", False, id="jira"
        ),
        pytest.param(
            BulkUpdateTicketsOperator, "request_tracker", RequestTrackerHook, "rt_default", True, id="bulk"
        ),
    ],
)
def test_the_hook_is_the_systems_for_the_tenant(
    operator: type[TicketOperator], system: str, hook_class: type, conn_id: str, bulk: bool
) -> None:
    kwargs = (
        {"ticket_ids": ["1"]} if operator is BulkUpdateTicketsOperator else {"ticket_id": "1", "body": "b"}
    )
    task = operator(task_id="t", tenant=TENANT, system=system, **kwargs)
    hook = task.hook
    assert type(hook) is hook_class
    assert (hook.conn_id, hook.tenant, hook.bulk) == (conn_id, TENANT, bulk)
    assert task.hook is hook  # built once


def test_a_given_connection_is_used() -> None:
    task = CommentTicketOperator(task_id="t", tenant=TENANT, conn_id="rt_other", ticket_id="1", body="b")
    assert task.hook.conn_id == "rt_other"


def test_an_unknown_system_is_refused_at_parse_time() -> None:
    with pytest.raises(ValueError, match=r"^t: unknown ticketing system 'zendesk'$"):
        CommentTicketOperator(task_id="t", tenant=TENANT, system="zendesk", ticket_id="1", body="b")


# --- create --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("basis", "conf", "correlation"),
    [
        pytest.param(None, None, CORRELATION, id="per-run"),
        pytest.param("alert-42", None, CORRELATION, id="per-basis"),
        pytest.param(None, {"correlation_id": "RT-1234"}, "RT-1234", id="correlation-from-conf"),
    ],
)
def test_create_ticket(
    hook: mock.MagicMock, audit: mock.MagicMock, basis: str | None, conf: dict | None, correlation: str
) -> None:
    hook.create_ticket.return_value = Ticket("17", "Isolate web-01", "new", "soc", created=True)
    task = CreateTicketOperator(
        task_id=TASK_ID,
        tenant=TENANT,
        ticket_queue="soc",
        subject="Isolate web-01",
        body="Alert 42",
        fields={"Severity": "high"},
        idempotency_basis=basis,
    )
    ctx = context(conf)

    result = task.execute(ctx)

    hook.create_ticket.assert_called_once_with(
        queue="soc",
        subject="Isolate web-01",
        body="Alert 42",
        idempotency_key=key("create_ticket", basis),
        correlation_id=correlation,
        fields={"Severity": "high"},
    )
    assert result == {
        "id": "17",
        "status": "new",
        "queue": "soc",
        "created": True,
        "correlation_id": correlation,
        "retries": 2,
    }
    audit.assert_called_once_with(
        ctx,
        system="request_tracker",
        operation="create_ticket",
        object_id="17",
        tenant=TENANT,
        created=True,
        ticket_id="17",
        status="new",
        queue="soc",
        summary="Isolate web-01",
        capability="ticket-create",
    )


def test_a_failed_call_fails_the_task_and_records_nothing(
    hook: mock.MagicMock, audit: mock.MagicMock
) -> None:
    hook.create_ticket.side_effect = PermanentError(
        "POST REST/2.0/ticket -> HTTP 400: no such queue", system="request_tracker", operation="create_ticket"
    )
    task = CreateTicketOperator(task_id=TASK_ID, tenant=TENANT, ticket_queue="nope", subject="s", body="b")
    with pytest.raises(PermanentError, match=r"^request_tracker create_ticket: .* HTTP 400: no such queue$"):
        task.execute(context())
    audit.assert_not_called()


def test_rate_limit_backpressure_defers_and_resumes_with_the_same_call(
    hook: mock.MagicMock, audit: mock.MagicMock
) -> None:
    hook.create_ticket.side_effect = [
        RateLimitBackpressure("busy", system="request_tracker", operation="create_ticket", wait_seconds=7.5),
        Ticket("17", "s", "new", "soc", created=True),
    ]
    task = CreateTicketOperator(task_id=TASK_ID, tenant=TENANT, ticket_queue="soc", subject="s", body="b")

    before = datetime.now(UTC)
    with pytest.raises(TaskDeferred) as deferred:
        task.execute(context())
    after = datetime.now(UTC)
    assert deferred.value.method_name == "execute_complete"
    wake = deferred.value.trigger.serialize()[1]["moment"]
    assert before + timedelta(seconds=7.5) <= wake <= after + timedelta(seconds=7.5)
    audit.assert_not_called()

    result = task.execute_complete(context(), event=None)
    assert result["id"] == "17"
    assert [c.kwargs["idempotency_key"] for c in hook.create_ticket.call_args_list] == [
        key("create_ticket")
    ] * 2


# --- comment and attach --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("public", "method"),
    [pytest.param(False, "comment", id="internal-comment"), pytest.param(True, "reply", id="public-reply")],
)
def test_comment_ticket(hook: mock.MagicMock, audit: mock.MagicMock, public: bool, method: str) -> None:
    getattr(hook, method).return_value = TicketEntry("17", "301", created=False)
    task = CommentTicketOperator(
        task_id=TASK_ID, tenant=TENANT, ticket_id=17, body="Contained.", public=public
    )

    result = task.execute(context())

    getattr(hook, method).assert_called_once_with("17", "Contained.", idempotency_key=key("comment"))
    getattr(hook, "reply" if method == "comment" else "comment").assert_not_called()
    assert result == {
        "ticket_id": "17",
        "entry_id": "301",
        "created": False,
        "correlation_id": CORRELATION,
        "retries": 2,
    }
    assert audit.call_args.kwargs == {
        "system": "request_tracker",
        "operation": "comment",
        "object_id": "301",
        "tenant": TENANT,
        "created": False,
        "ticket_id": "17",
        "capability": "ticket-update",
    }


def test_attach_evidence(hook: mock.MagicMock, audit: mock.MagicMock) -> None:
    hook.attach.return_value = TicketEntry("17", "10042", created=True)
    task = AttachEvidenceOperator(
        task_id=TASK_ID,
        tenant=TENANT,
        system="jira",
        ticket_id="SOC-17",
        filename="isolation.json",
        content='{"host": "web-01", "note": "é"}',
        content_type="application/json",
    )

    result = task.execute(context())

    hook.attach.assert_called_once_with(
        "SOC-17",
        filename="isolation.json",
        content='{"host": "web-01", "note": "é"}'.encode(),
        content_type="application/json",
        idempotency_key=key("attach"),
    )
    assert result == {
        "ticket_id": "17",
        "entry_id": "10042",
        "created": True,
        "correlation_id": CORRELATION,
        "retries": 2,
    }
    assert audit.call_args.kwargs["system"] == "jira"
    assert audit.call_args.kwargs["operation"] == "attach"


# --- update --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "status", "calls", "xcom_status"),
    [
        pytest.param(
            {"Severity": "low"}, None, [mock.call.set_fields("17", {"Severity": "low"})], "open", id="fields"
        ),
        pytest.param(None, "resolved", [mock.call.set_status("17", "resolved")], "resolved", id="status"),
        pytest.param(
            {"Severity": "low"},
            "resolved",
            [mock.call.set_fields("17", {"Severity": "low"}), mock.call.set_status("17", "resolved")],
            "resolved",
            id="fields-then-status",
        ),
    ],
)
def test_update_ticket(
    hook: mock.MagicMock,
    audit: mock.MagicMock,
    fields: dict | None,
    status: str | None,
    calls: list,
    xcom_status: str,
) -> None:
    hook.set_fields.return_value = Ticket("17", "s", "open", "soc")
    hook.set_status.return_value = Ticket("17", "s", "resolved", "soc")
    task = UpdateTicketOperator(task_id=TASK_ID, tenant=TENANT, ticket_id="17", fields=fields, status=status)

    result = task.execute(context())

    assert hook.mock_calls == calls
    assert result == {
        "id": "17",
        "status": xcom_status,
        "queue": "soc",
        "created": False,
        "correlation_id": CORRELATION,
        "retries": 2,
    }
    assert audit.call_args.kwargs["status"] == xcom_status


def test_update_needs_fields_or_status() -> None:
    with pytest.raises(ValueError, match=r"^close: give fields, status or both$"):
        UpdateTicketOperator(task_id="close", tenant=TENANT, ticket_id="17")


def test_an_unknown_ticket_fails_the_update(hook: mock.MagicMock, audit: mock.MagicMock) -> None:
    hook.set_status.side_effect = PermanentError(
        "GET REST/2.0/ticket/99 -> HTTP 404: not found", system="request_tracker", operation="get_ticket"
    )
    task = UpdateTicketOperator(task_id=TASK_ID, tenant=TENANT, ticket_id="99", status="resolved")
    with pytest.raises(PermanentError, match="HTTP 404: not found"):
        task.execute(context())
    audit.assert_not_called()


# --- bulk update ---------------------------------------------------------------------------------


def bulk_comment_key(basis: str | None, ticket_id: str) -> str:
    return idempotency_key(replace(RUN, run_id=f"basis:{basis}:{ticket_id}"), "comment")


def support_ticket(ticket_id: str, *, queue: str = "support", tenant: str | None = TENANT) -> Ticket:
    """A ticket as the hook reads it back: its queue and its Tenant field."""
    return Ticket(ticket_id, "s", "new", queue, {"Tenant": tenant} if tenant else {})


@pytest.fixture
def in_scope(hook: mock.MagicMock) -> mock.MagicMock:
    """Every ticket asked for is a support ticket of the run's tenant."""
    hook.get_tickets.side_effect = lambda ids: {t: support_ticket(t) for t in ids}
    return hook


def test_bulk_update_checks_every_ticket_then_updates_and_comments_each(
    in_scope: mock.MagicMock, audit: mock.MagicMock
) -> None:
    in_scope.comment.side_effect = [TicketEntry("1", "a", created=True), TicketEntry("2", "b", created=False)]
    task = BulkUpdateTicketsOperator(
        task_id=TASK_ID,
        tenant=TENANT,
        ticket_ids=[1, "2"],
        fields={"Severity": "low"},
        status="open",
        comment="Maintenance on Sunday.",
        idempotency_basis="change-7",
    )
    ctx = context()

    result = task.execute(ctx)

    assert in_scope.mock_calls == [
        mock.call.get_tickets(["1", "2"]),  # read first, all of them
        mock.call.update("1", fields={"Severity": "low"}, status="open"),
        mock.call.comment("1", "Maintenance on Sunday.", idempotency_key=bulk_comment_key("change-7", "1")),
        mock.call.update("2", fields={"Severity": "low"}, status="open"),
        mock.call.comment("2", "Maintenance on Sunday.", idempotency_key=bulk_comment_key("change-7", "2")),
    ]
    assert result == {
        "ticket_ids": ["1", "2"],
        "updated": 2,
        "comments_created": 1,
        "correlation_id": CORRELATION,
        "retries": 2,
    }
    audit.assert_called_once_with(
        ctx,
        system="request_tracker",
        operation="bulk_update",
        object_id="1,2",
        tenant=TENANT,
        capability="ticket-update",
        updated=2,
        comments_created=1,
    )


def test_bulk_update_of_one_ticket_id_without_comment(
    in_scope: mock.MagicMock, audit: mock.MagicMock
) -> None:
    task = BulkUpdateTicketsOperator(task_id=TASK_ID, tenant=TENANT, ticket_ids="42", status="resolved")

    result = task.execute(context())

    assert in_scope.mock_calls == [
        mock.call.get_tickets(["42"]),
        mock.call.update("42", fields={}, status="resolved"),
    ]
    assert (result["ticket_ids"], result["updated"], result["comments_created"]) == (["42"], 1, 0)


def test_bulk_update_stops_at_the_first_failure(in_scope: mock.MagicMock, audit: mock.MagicMock) -> None:
    in_scope.update.side_effect = [
        None,
        PermanentError("HTTP 403: denied", system="request_tracker", operation="update"),
    ]
    task = BulkUpdateTicketsOperator(
        task_id=TASK_ID, tenant=TENANT, ticket_ids=["1", "2", "3"], status="open"
    )
    with pytest.raises(PermanentError, match="request_tracker update: HTTP 403: denied"):
        task.execute(context())
    assert in_scope.update.call_count == 2
    audit.assert_not_called()


REFUSED = "bulk update of 3 ticket(s) for tenant 'acme' refused, nothing written: "


@pytest.mark.parametrize(
    ("tickets", "problem"),
    [
        pytest.param(
            {"1": support_ticket("1"), "2": support_ticket("2", queue="soc"), "3": support_ticket("3")},
            "ticket 2: in queue 'soc', not 'support'",
            id="other-queue",
        ),
        pytest.param(
            {"1": support_ticket("1"), "2": support_ticket("2"), "3": support_ticket("3", tenant="globex")},
            "ticket 3: of tenant 'globex', not 'acme'",
            id="other-tenant",
        ),
        pytest.param(
            {"1": support_ticket("1", tenant=None), "2": support_ticket("2"), "3": support_ticket("3")},
            "ticket 1: of tenant 'none', not 'acme'",
            id="no-tenant",
        ),
        pytest.param(
            {"1": support_ticket("1"), "3": support_ticket("3")}, "ticket 2: not found", id="missing"
        ),
        pytest.param(
            {"1": support_ticket("1", queue="hr"), "2": support_ticket("2", tenant="globex")},
            "ticket 1: in queue 'hr', not 'support'; ticket 2: of tenant 'globex', not 'acme'; "
            "ticket 3: not found",
            id="every-problem-named",
        ),
    ],
)
def test_a_batch_with_a_ticket_out_of_scope_writes_nothing(
    hook: mock.MagicMock, audit: mock.MagicMock, tickets: dict[str, Ticket], problem: str
) -> None:
    hook.get_tickets.return_value = tickets
    task = BulkUpdateTicketsOperator(
        task_id=TASK_ID, tenant=TENANT, ticket_ids=["1", "2", "3"], status="open", comment="c"
    )

    with pytest.raises(BulkChangeRefused, match=f"^{re.escape(REFUSED + problem)}$"):
        task.execute(context())

    assert hook.mock_calls == [mock.call.get_tickets(["1", "2", "3"])]  # read, never written
    audit.assert_not_called()


@pytest.mark.parametrize(
    ("field", "problem"),
    [
        pytest.param(
            "Tenant",
            "field 'Tenant' is reserved for the orchestrator (Tenant, IdempotencyKey, CorrelationId are "
            "never bulk-updated)",
            id="tenant",
        ),
        pytest.param(
            "IdempotencyKey",
            "field 'IdempotencyKey' is reserved for the orchestrator (Tenant, IdempotencyKey, "
            "CorrelationId are never bulk-updated)",
            id="idempotency-key",
        ),
        pytest.param(
            "CorrelationId",
            "field 'CorrelationId' is reserved for the orchestrator (Tenant, IdempotencyKey, "
            "CorrelationId are never bulk-updated)",
            id="correlation-id",
        ),
        pytest.param(
            "Team",
            "field 'Team' is not in the bulk update allow-list (Severity, Category: bulk_update.fields "
            "of include/policies/support_triage.yaml)",
            id="not-allowed",
        ),
    ],
)
def test_a_field_off_the_allow_list_is_refused_at_parse_time(field: str, problem: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(f'{TASK_ID}: {problem}')}$"):
        BulkUpdateTicketsOperator(task_id=TASK_ID, tenant=TENANT, ticket_ids=["1"], fields={field: "x"})


def test_a_reserved_field_is_refused_at_run_time_before_any_read(
    hook: mock.MagicMock, audit: mock.MagicMock
) -> None:
    """A mapped task's fields arrive after parsing (or the policy changed since): checked again."""
    task = BulkUpdateTicketsOperator(task_id=TASK_ID, tenant=TENANT, ticket_ids=["7", "8"], status="open")
    task.fields = {"Severity": "low", "Tenant": "globex"}

    with pytest.raises(
        BulkChangeRefused,
        match=re.escape(
            "bulk update of 2 ticket(s) for tenant 'acme' refused, nothing written (tickets 7, 8): "
            "field 'Tenant' is reserved"
        ),
    ):
        task.execute(context())

    assert hook.mock_calls == []
    audit.assert_not_called()


def test_a_refusal_names_at_most_ten_tickets() -> None:
    ids = [str(n) for n in range(1, 31)]
    with pytest.raises(BulkChangeRefused, match=r"\(tickets 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 and 20 more\)"):
        check_bulk_change(mock.Mock(), ids, {"IdempotencyKey": "k"}, tenant=TENANT)


def test_the_allow_list_and_queue_come_from_the_policy() -> None:
    hook = mock.Mock()
    hook.get_tickets.return_value = {"1": support_ticket("1", queue="billing")}
    scope = BulkUpdateScope(queue="billing", fields=("Team",))

    check_bulk_change(hook, ["1"], {"Team": "blue"}, tenant=TENANT, scope=scope)  # no error

    with pytest.raises(BulkChangeRefused, match="field 'Severity' is not in the bulk update allow-list"):
        check_bulk_change(hook, ["1"], {"Severity": "low"}, tenant=TENANT, scope=scope)
