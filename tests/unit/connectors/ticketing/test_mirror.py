"""The ticket mirror's plumbing without a network: whose secret the tenant hook reads (and as which
capability, in which account), its per-tenant rate-limit buckets, and the ticket operators' mirror
step: RT first, a Jira failure kept visible (log, audit record, XCom) and never failing the step."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any
from unittest import mock

import pytest
from airflow.exceptions import TaskDeferred

from include.connectors.context import RunContext, default_correlation_id
from include.connectors.errors import PermanentError, RateLimitBackpressure, TransientError
from include.connectors.ticketing.interface import Ticket, TicketEntry
from include.connectors.ticketing.mirror import (
    MIRROR_FAILED,
    MirrorCredentialError,
    MirrorResult,
    TenantJiraHook,
    TicketMirror,
    mirror_key,
)
from include.operators.ticketing import (
    AttachEvidenceOperator,
    CommentTicketOperator,
    CreateTicketOperator,
    TicketOperator,
    UpdateTicketOperator,
)
from tests.support.secrets import FakeSecrets

DAG_ID, RUN_ID, TASK_ID = "soc_contain_host", "manual__2026-12-07", "ticket"
TOKEN = "ATATT3x-unit-secret-token"
RUN = RunContext(DAG_ID, RUN_ID, TASK_ID, "globex", default_correlation_id(DAG_ID, RUN_ID))


def jira_secret(**extra: Any) -> str:
    return json.dumps(
        {
            "conn_type": "http",
            "host": "globex.atlassian.net",
            "login": "orchestrator@globex.example",
            "password": TOKEN,
            "extra": {"rate_limit_per_second": 5, "rate_limit_burst": 5, **extra},
        }
    )


@pytest.mark.parametrize("capability", ["ticket-create", "ticket-update"])
def test_the_tenant_hook_reads_its_own_secret_as_the_capability(capability: str) -> None:
    secrets = FakeSecrets({f"orchestrator/globex/{capability}/jira": jira_secret()})
    with (
        mock.patch("include.connectors.aws.capability_client", return_value=secrets) as client,
        mock.patch("airflow.sdk.log.mask_secret") as masked,
    ):
        hook = TenantJiraHook(capability=capability, tenant="globex", run_context=RUN)
        conn = hook.connection
    client.assert_called_once_with(
        capability, "globex", "secretsmanager", run_context=RUN, aws_conn_id="aws_default"
    )
    assert secrets.asked == [f"orchestrator/globex/{capability}/jira"]
    assert (conn.host, conn.login, conn.password) == (
        "globex.atlassian.net",
        "orchestrator@globex.example",
        TOKEN,
    )
    assert mock.call(TOKEN) in masked.call_args_list  # the API token, in every log line of the task
    assert hook.conn_id == "jira:globex"


def test_a_missing_credential_names_the_secret_not_a_value() -> None:
    secrets = FakeSecrets({})
    with mock.patch("include.connectors.aws.capability_client", return_value=secrets):
        hook = TenantJiraHook(capability="ticket-update", tenant="globex", run_context=RUN)
        with pytest.raises(
            MirrorCredentialError, match="orchestrator/globex/ticket-update/jira in its account"
        ):
            _ = hook.connection


def test_the_hook_is_bound_to_its_tenant_and_capability() -> None:
    with pytest.raises(ValueError, match="not one of ticket-create, ticket-update"):
        TenantJiraHook(capability="host-isolate", tenant="globex", run_context=RUN)
    hook = TenantJiraHook(capability="ticket-create", tenant="globex", run_context=RUN)
    with pytest.raises(TypeError, match="bound to its run's tenant 'globex'"):
        hook.for_tenant("acme")


def test_rate_limit_buckets_are_the_tenants_own() -> None:
    """Each tenant's site has its own connection id, so its buckets are its own (the connector
    base's shared limiter): a flood for one customer never spends another's Jira limit."""
    buckets = {}
    for tenant in ("acme", "globex"):
        hook = TenantJiraHook(capability="ticket-update", tenant=tenant, run_context=RUN)
        hook.__dict__["extras"] = {
            "rate_limit_per_second": 5,
            "rate_limit_burst": 5,
            "rate_limit_store_dsn": "x",
        }
        with mock.patch("include.connectors.base.SharedRateLimiter") as limiter:
            _ = hook.limiter
        buckets[tenant] = {key for key, _ in limiter.call_args.args[0]}
    assert buckets == {"acme": {"jira_acme"}, "globex": {"jira_globex"}}


def test_the_mirror_key_is_per_tenant_and_rt_ticket() -> None:
    assert mirror_key("globex", "17") == mirror_key("globex", "17")
    assert len({mirror_key("globex", "17"), mirror_key("globex", "18"), mirror_key("acme", "17")}) == 3
    assert mirror_key("globex", "17").startswith("idem-")


def test_a_hook_of_another_tenant_is_refused() -> None:
    other = TenantJiraHook(capability="ticket-create", tenant="acme", run_context=RUN)
    mirror = TicketMirror("globex", RUN, hook_factory=lambda capability: other)
    with pytest.raises(ValueError, match="was given a hook of 'acme'"):
        mirror.hook("ticket-create")


# --- the operators' mirror step ------------------------------------------------------------------


def context(domain: str = "soc") -> dict[str, Any]:
    ti = SimpleNamespace(dag_id=DAG_ID, task_id=TASK_ID, run_id=RUN_ID)
    dag = SimpleNamespace(tags=[f"domain:{domain}"])
    return {"ti": ti, "run_id": RUN_ID, "dag_run": SimpleNamespace(conf={}), "task": SimpleNamespace(dag=dag)}


@pytest.fixture
def rt() -> Iterator[mock.MagicMock]:
    fake = mock.MagicMock(name="rt")
    fake.retry_count = 0
    fake.create_ticket.return_value = Ticket(
        "17", "s", "new", "soc", {"CorrelationId": "corr-1"}, created=True
    )
    fake.comment.return_value = TicketEntry("17", "301", created=True)
    fake.attach.return_value = TicketEntry("17", "302", created=True)
    fake.set_status.return_value = Ticket("17", "s", "resolved", "soc")
    with mock.patch.object(TicketOperator, "hook", new_callable=mock.PropertyMock, return_value=fake):
        yield fake


@pytest.fixture
def recorded() -> Iterator[SimpleNamespace]:
    with (
        mock.patch("include.operators.ticketing.audit_side_effect") as side_effect,
        mock.patch("include.operators.ticketing.audit_emit") as emitted,
    ):
        yield SimpleNamespace(side_effect=side_effect, emitted=emitted)


@pytest.fixture
def mirror() -> Iterator[mock.MagicMock]:
    fake = mock.MagicMock(name="mirror")
    fake.create.return_value = Ticket("GLOBEX-1", "s", "To Do", "GLOBEX", created=True)
    fake.result.side_effect = lambda issue, created, entry_id=None: MirrorResult(
        "jira", "GLOBEX", issue, created, entry_id
    )
    fake.comment.return_value = MirrorResult("jira", "GLOBEX", "GLOBEX-1", True, "9001")
    fake.attach.return_value = MirrorResult("jira", "GLOBEX", "GLOBEX-1", False, "9002")
    fake.resolve.return_value = MirrorResult("jira", "GLOBEX", "GLOBEX-1", True)
    with mock.patch("include.connectors.ticketing.mirror.TicketMirror", return_value=fake):
        yield fake


def test_create_goes_to_rt_then_to_the_tenants_jira(rt, recorded, mirror) -> None:
    task = CreateTicketOperator(task_id=TASK_ID, tenant="globex", ticket_queue="soc", subject="s", body="b")
    result = task.execute(context())
    assert result["id"] == "17"
    assert result["mirror"] == {"system": "jira", "project": "GLOBEX", "issue": "GLOBEX-1", "created": True}
    assert mirror.create.call_args.args == (rt.create_ticket.return_value, "b")
    systems = [(c.kwargs["system"], c.kwargs["operation"]) for c in recorded.side_effect.call_args_list]
    assert systems == [("request_tracker", "create_ticket"), ("jira", "mirror_create_ticket")]
    assert recorded.side_effect.call_args.kwargs["ticket_id"] == "17"


def test_comment_attach_and_resolve_are_mirrored(rt, recorded, mirror) -> None:
    CommentTicketOperator(task_id=TASK_ID, tenant="globex", ticket_id="17", body="c", public=True).execute(
        context()
    )
    assert mirror.comment.call_args.kwargs["public"] is True
    assert mirror.comment.call_args.kwargs["read_rt"] == rt.get_ticket
    AttachEvidenceOperator(
        task_id=TASK_ID, tenant="globex", ticket_id="17", filename="e.txt", content="x"
    ).execute(context())
    assert mirror.attach.call_args.kwargs["content"] == b"x"
    done = UpdateTicketOperator(task_id=TASK_ID, tenant="globex", ticket_id="17", status="resolved").execute(
        context()
    )
    assert done["mirror"]["issue"] == "GLOBEX-1"
    field_only = UpdateTicketOperator(
        task_id=TASK_ID, tenant="globex", ticket_id="17", fields={"Severity": "low"}
    )
    rt.set_fields.return_value = Ticket("17", "s", "open", "soc")
    assert "mirror" not in field_only.execute(context())


@pytest.mark.parametrize(
    ("tenant", "domain", "enabled"),
    [
        pytest.param("acme", "soc", True, id="rt-only-tenant"),
        pytest.param("globex", "hr", True, id="not-a-support-or-soc-workflow"),
        pytest.param("globex", "soc", False, id="switched-off"),
    ],
)
def test_not_mirrored(rt, recorded, mirror, tenant: str, domain: str, enabled: bool) -> None:
    task = CommentTicketOperator(task_id=TASK_ID, tenant=tenant, ticket_id="17", body="c", mirror=enabled)
    assert "mirror" not in task.execute(context(domain))
    mirror.comment.assert_not_called()


def test_a_jira_failure_keeps_the_rt_side_and_is_visible(rt, recorded, mirror, caplog) -> None:
    mirror.comment.side_effect = TransientError(
        "POST rest/api/3/issue/GLOBEX-1/comment -> HTTP 503: upstream timed out",
        system="jira",
        operation="comment",
    )
    task = CommentTicketOperator(task_id=TASK_ID, tenant="globex", ticket_id="17", body="c")
    with (
        mock.patch.object(
            type(task), "log", new_callable=mock.PropertyMock, return_value=logging.getLogger("t")
        ),
        caplog.at_level(logging.ERROR, logger="t"),
    ):
        result = task.execute(context())
    assert (result["ticket_id"], result["entry_id"], result["created"]) == ("17", "301", True)  # RT kept
    assert result["mirror"]["status"] == "failed"
    assert "HTTP 503" in result["mirror"]["error"]
    assert result["mirror"]["project"] == "GLOBEX"
    (event,) = [c.args[0] for c in recorded.emitted.call_args_list]
    assert event["kind"] == MIRROR_FAILED
    assert event["details"]["ticket_id"] == "17"
    assert event["details"]["operation"] == "comment"
    assert "ticket mirror FAILED: comment of RT ticket 17 to jira project 'GLOBEX'" in caplog.text
    assert "RT ticket is kept" in caplog.text
    # the RT side effect is still recorded; the mirror's success record is not
    assert [c.kwargs["system"] for c in recorded.side_effect.call_args_list] == ["request_tracker"]


def test_a_missing_credential_is_a_failed_mirror_not_a_failed_step(rt, recorded, mirror) -> None:
    mirror.comment.side_effect = MirrorCredentialError(
        "no Jira credential for tenant 'globex' (orchestrator/globex/ticket-update/jira in its account)",
        system="jira",
        operation="credential",
    )
    result = CommentTicketOperator(task_id=TASK_ID, tenant="globex", ticket_id="17", body="c").execute(
        context()
    )
    assert "orchestrator/globex/ticket-update/jira" in result["mirror"]["error"]


def test_the_tenants_jira_rate_limit_defers_the_step(rt, recorded, mirror) -> None:
    mirror.comment.side_effect = RateLimitBackpressure(
        "busy", system="jira", operation="comment", wait_seconds=3
    )
    task = CommentTicketOperator(task_id=TASK_ID, tenant="globex", ticket_id="17", body="c")
    with pytest.raises(TaskDeferred):
        task.execute(context())
    recorded.emitted.assert_not_called()


def test_a_permanent_rt_failure_still_fails_the_step_before_any_mirror(rt, recorded, mirror) -> None:
    rt.comment.side_effect = PermanentError("HTTP 404", system="request_tracker", operation="comment")
    with pytest.raises(PermanentError):
        CommentTicketOperator(task_id=TASK_ID, tenant="globex", ticket_id="17", body="c").execute(context())
    mirror.comment.assert_not_called()
