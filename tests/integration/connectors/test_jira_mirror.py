"""The ticket mirror (include/connectors/ticketing/mirror.py) against the Jira stand-in with two
customer sites: ACME's project and account, GLOBEX's project and account (devstack/standins/jira.py).

No network beyond 127.0.0.1 and no PostgreSQL: the connections carry no rate limit (the limiter is
the connector base's, checked per tenant in tests/unit/test_ticket_mirror.py).
"""

from __future__ import annotations

import os
import tempfile

if "AIRFLOW_HOME" not in os.environ:
    os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="orchestrator-itest-airflow-")
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
from airflow.sdk import Connection

from devstack.standins.jira import JiraStandIn
from include.connectors.context import RunContext
from include.connectors.errors import ConnectorError, PermanentError
from include.connectors.ticketing.interface import Ticket
from include.connectors.ticketing.mirror import (
    CREATE_CAPABILITY,
    TenantJiraHook,
    TicketMirror,
    mirror_key,
)
from include.policies.tenants import Ticketing

SITES = {"acme": "ACME", "globex": "GLOBEX"}
TOKENS = {tenant: f"ATATT3x-itest-{tenant}-token" for tenant in SITES}
RT_ID = "4242"


def email(tenant: str) -> str:
    return f"orchestrator@{tenant}.example"


@pytest.fixture
def jira() -> Iterator[JiraStandIn]:
    accounts = {email(t): {"api_token": TOKENS[t], "projects": [p]} for t, p in SITES.items()}
    projects = {p: f"{t} service desk" for t, p in SITES.items()}
    with JiraStandIn(projects=projects, accounts=accounts, issue_types=("Task", "Incident")) as standin:
        yield standin


def connection(jira: JiraStandIn, tenant: str, *, port: int | None = None) -> Connection:
    return Connection(
        conn_id=f"jira:{tenant}",
        conn_type="http",
        host="127.0.0.1",
        port=port or jira.port,
        schema="http",
        login=email(tenant),
        password=TOKENS[tenant],
        extra=json.dumps({"retry_base_delay": 0.05, "retry_max_delay": 0.2, "retry_max_attempts": 2}),
    )


def run(tenant: str, number: int) -> RunContext:
    return RunContext(
        dag_id="soc_contain_host",
        run_id=f"manual__run-{number}",
        task_id="open_ticket",
        tenant=tenant,
        correlation_id=f"corr-run-{number}",
    )


def mirror_of(
    jira: JiraStandIn,
    tenant: str,
    number: int = 1,
    *,
    project: str | None = None,
    credentials_of: str | None = None,
    port: int | None = None,
) -> TicketMirror:
    """The tenant's mirror with the tenant's own connection (or, to test refusals, another's)."""
    context = run(tenant, number)

    def factory(capability: str) -> TenantJiraHook:
        hook = TenantJiraHook(capability=capability, tenant=tenant, run_context=context)
        hook.__dict__["connection"] = connection(jira, credentials_of or tenant, port=port)
        return hook

    ticketing = Ticketing("jira", project or SITES[tenant], "Incident", ("In Progress", "Done"))
    return TicketMirror(tenant, context, hook_factory=factory, ticketing=ticketing)


def rt_ticket(ticket_id: str = RT_ID, tenant: str = "globex") -> Ticket:
    return Ticket(
        id=ticket_id,
        subject="[high] Suspicious sign-in (alert A-1)",
        status="open",
        queue="soc",
        fields={"CorrelationId": "corr-run-1", "Tenant": tenant},
    )


def read_rt(ticket_id: str) -> Ticket:
    return rt_ticket(ticket_id)


def one_run(mirror: TicketMirror) -> dict[str, bool]:
    """What a SOC run mirrors: the ticket, a comment, the evidence, the resolve."""
    issue = mirror.create(rt_ticket(), "Alert A-1: impossible travel.")
    comment = mirror.comment(
        RT_ID, "Triaged.", idempotency_key="idem-comment-a1", public=False, read_rt=read_rt
    )
    evidence = mirror.attach(
        RT_ID,
        filename="signin-log.txt",
        content=b"jdoe 203.0.113.7",
        content_type="text/plain",
        idempotency_key="idem-evidence-a1",
        read_rt=read_rt,
    )
    resolved = mirror.resolve(RT_ID, read_rt=read_rt)
    return {
        "issue": issue.created,
        "comment": comment.created,
        "evidence": evidence.created,
        "resolve": resolved.created,
    }


def issues_in(jira: JiraStandIn, project: str) -> list[dict[str, Any]]:
    return [issue for issue in jira.issue_summaries() if issue["project"] == project]


# --- idempotent: 5 runs, one issue, one comment, one attachment, resolved ----------------------
def test_five_runs_leave_one_issue_with_one_comment_one_attachment_resolved(jira: JiraStandIn) -> None:
    outcomes = [one_run(mirror_of(jira, "globex", number)) for number in range(1, 6)]
    assert outcomes[0] == {"issue": True, "comment": True, "evidence": True, "resolve": True}
    assert all(outcome == dict.fromkeys(outcomes[0], False) for outcome in outcomes[1:])
    (issue,) = issues_in(jira, "GLOBEX")
    assert issue["comments"] == 1
    assert issue["attachments"] == ["idem-evidence-a1__signin-log.txt"]
    assert issue["status"] == "Done"
    # Found by its key label and carrying the RT ticket's correlation id (not each run's own).
    assert mirror_key("globex", RT_ID) in issue["labels"]
    assert "correlation:corr-run-1" in issue["labels"]
    assert "tenant:globex" in issue["labels"]
    assert not [
        label
        for label in issue["labels"]
        if label.startswith("correlation:corr-run-") and label != "correlation:corr-run-1"
    ]
    assert issues_in(jira, "ACME") == []
    # The comment is agent-only (internal), like RT's comment.
    stored = jira.issue(str(issue["key"]))["comments"][0]
    assert stored["jsdPublic"] is False


def test_a_step_whose_issue_is_missing_creates_it_once(jira: JiraStandIn) -> None:
    """The create failed while Jira was down: the next step (or a re-run) heals the mirror."""
    mirror = mirror_of(jira, "globex")
    first = mirror.comment(
        RT_ID, "Contained.", idempotency_key="idem-comment-x", public=True, read_rt=read_rt
    )
    again = mirror_of(jira, "globex", 2).comment(
        RT_ID, "Contained.", idempotency_key="idem-comment-x", public=True, read_rt=read_rt
    )
    assert first.created is True
    assert again.created is False
    assert again.issue == first.issue
    (issue,) = issues_in(jira, "GLOBEX")
    assert issue["comments"] == 1
    assert jira.issue(str(issue["key"]))["comments"][0]["jsdPublic"] is True


# --- tenant isolation: A's mirror in A's project, with A's credentials only ----------------------
def test_each_tenants_mirror_lands_in_its_own_project_with_its_own_credentials(jira: JiraStandIn) -> None:
    one_run(mirror_of(jira, "acme"))
    one_run(mirror_of(jira, "globex"))
    (acme,) = issues_in(jira, "ACME")
    (globex,) = issues_in(jira, "GLOBEX")
    assert "tenant:acme" in acme["labels"]
    assert "tenant:globex" not in acme["labels"]
    assert "tenant:globex" in globex["labels"]
    assert "tenant:acme" not in globex["labels"]
    # Every request of the test was made as one of the two sites' own accounts...
    by_account: dict[str, set[str]] = {}
    for request in jira.requests:
        assert request.account in {email("acme"), email("globex")}, request
        issue_key = request.path.split("/issue/")[1].split("/")[0] if "/issue/" in request.path else ""
        if issue_key:
            by_account.setdefault(request.account, set()).add(issue_key)
    # ...and each account touched only its own project's issue.
    assert by_account == {email("acme"): {acme["key"]}, email("globex"): {globex["key"]}}


def test_a_tenant_cannot_write_or_read_another_tenants_project(jira: JiraStandIn) -> None:
    one_run(mirror_of(jira, "globex"))
    (globex,) = issues_in(jira, "GLOBEX")
    # Acme's mirror misconfigured with Globex's project: Jira refuses it, nothing lands there.
    wrong = mirror_of(jira, "acme", project="GLOBEX")
    with pytest.raises(PermanentError) as refused:
        wrong.create(rt_ticket(tenant="acme"), "should not land")
    assert "400" in str(refused.value)
    assert TOKENS["acme"] not in str(refused.value)
    assert issues_in(jira, "GLOBEX") == [globex]
    # Acme's credentials cannot see Globex's issue either, by key or by search.
    acme_hook = mirror_of(jira, "acme").hook(CREATE_CAPABILITY)
    with pytest.raises(PermanentError):
        acme_hook.get_ticket(str(globex["key"]))
    assert acme_hook.search_by_correlation("corr-run-1") == []
    # And Globex's mirror run with Acme's credentials can neither search Globex's project (Jira's
    # 400 for a project the account cannot browse) nor create there.
    stolen = mirror_of(jira, "globex", credentials_of="acme")
    with pytest.raises(PermanentError, match="does not exist for the field 'project'"):
        stolen.find(RT_ID)
    with pytest.raises(PermanentError):
        stolen.create(rt_ticket(), "with another tenant's credentials")
    assert issues_in(jira, "ACME") == []


def test_a_key_planted_by_another_tenant_is_not_found(jira: JiraStandIn) -> None:
    """An issue in globex's project labelled with acme's mirror key is not acme's mirror."""
    admin = TenantJiraHook(capability=CREATE_CAPABILITY, tenant="globex", run_context=run("globex", 1))
    admin.__dict__["connection"] = Connection(
        conn_id="jira:admin",
        conn_type="http",
        host="127.0.0.1",
        port=jira.port,
        schema="http",
        login=jira.email,
        password=jira.api_token,
    )
    admin.create_ticket(
        queue="GLOBEX",
        subject="planted",
        body="planted",
        idempotency_key=mirror_key("acme", RT_ID),
        correlation_id="corr-x",
    )
    created = mirror_of(jira, "acme").create(rt_ticket(tenant="acme"), "acme's own")
    assert created.created is True
    assert created.queue == "ACME"


# --- failures: clear, and never a secret -----------------------------------------------------
def test_jira_unreachable_fails_clearly_without_a_secret(jira: JiraStandIn) -> None:
    port = jira.port
    jira.stop()
    mirror = mirror_of(jira, "globex", port=port)
    with pytest.raises(ConnectorError) as failed:
        mirror.create(rt_ticket(), "Jira is down")
    text = f"{failed.value!r} {failed.value}"
    assert "jira" in text.lower()
    basic = base64.b64encode(f"{email('globex')}:{TOKENS['globex']}".encode()).decode()
    assert TOKENS["globex"] not in text
    assert basic not in text


def test_retry_after_a_lost_create_response_still_one_issue(jira: JiraStandIn) -> None:
    jira.lose_responses(1)  # the issue is created, the answer lost: the retry finds it
    issue = mirror_of(jira, "globex").create(rt_ticket(), "answer lost")
    assert len(issues_in(jira, "GLOBEX")) == 1
    assert issue.id == issues_in(jira, "GLOBEX")[0]["key"]


def test_mirror_refuses_a_tenant_without_a_jira_project() -> None:
    with pytest.raises(ValueError, match="no Jira project"):
        TicketMirror("acme", run("acme", 1), ticketing=Ticketing())


def test_a_resolve_racing_another_runs_resolve_still_ends_done(jira: JiraStandIn) -> None:
    """Two runs of one request resolve at once: the one whose transition was taken meanwhile reads
    the issue again and goes on from there instead of failing."""
    one = mirror_of(jira, "globex", 1)
    one.create(rt_ticket(), "race")
    other = mirror_of(jira, "globex", 2)
    hook = other.hook("ticket-update")
    real = hook.set_status
    calls: list[str] = []

    def racing(ticket_id: str, status: str) -> Ticket:
        if not calls:  # the first run moves the issue between this run's read and its transition
            one.resolve(RT_ID, read_rt=read_rt)
        calls.append(status)
        return real(ticket_id, status)

    hook.set_status = racing  # type: ignore[method-assign]
    result = other.resolve(RT_ID, read_rt=read_rt)
    (issue,) = issues_in(jira, "GLOBEX")
    assert issue["status"] == "Done"
    assert result.issue == issue["key"]
