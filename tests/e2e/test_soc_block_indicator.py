"""SOC perimeter block end to end: an indicator blocked in the tenant's WAF IP set (moto, the
tenant's own account) after a SOC lead's approval through the REST API, a deferred wait, and the
block removed by the run itself at its expiry; evidence and resolution in Request Tracker.

Checked in the target systems: the IP set's addresses in WAF, the expiry record in SSM, the
ticket's entries. Five runs for one indicator leave one entry; a sixth run with a later expiry
extends it: the five earlier waits wake at the first expiry, see the later one and wait again, and
exactly one removal happens, after the later expiry. The other tenant's block list is untouched.
Bad input is refused by the trigger form's schema or by the first (read-only) step, before any
ticket, record or entry exists.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from devstack.api_client import AirflowApi, ApiError
from devstack.aws_seed import account_client
from devstack.config import REGION
from devstack.stack import Stack
from include.connectors.perimeter import BLOCKLIST_NAME, SCOPE
from include.connectors.ticketing.request_tracker import RequestTrackerHook
from include.policies.loader import load_domain_policy
from include.policies.tenants import tenant_account_id
from tests.e2e import background
from tests.e2e.conftest import admin_api, rt_hook, sign_up, ticket_texts

DAG = "soc_block_indicator"
GATE = "approve_perimeter_block"
USERS = {"pia_soc_op": ["soc_operator"]}
INDICATOR = "45.155.205.0/24"
PARAMETER = "/orchestrator/globex/perimeter-block/45.155.205.0_24"


@pytest.fixture(scope="module")
def users(stack: Stack, api: AirflowApi) -> dict[str, AirflowApi]:
    api.wait_for_dags({DAG})
    return sign_up(stack, USERS)


def _at(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).replace(microsecond=0).isoformat()


def _aws(stack: Stack, tenant: str) -> dict[str, Any]:
    """The tenant account's WAF and SSM clients (built in the main thread: creating boto3 clients
    from its default session is not thread-safe; a built client is)."""
    return {
        service: account_client(service, tenant_account_id(tenant), stack.profile.moto_url, REGION)
        for service in ("wafv2", "ssm")
    }


def _addresses(aws: dict[str, Any], tenant: str, version: int = 4) -> list[str]:
    wafv2 = aws["wafv2"]
    name = BLOCKLIST_NAME.format(tenant=tenant, version=version)
    (summary,) = [s for s in wafv2.list_ip_sets(Scope=SCOPE)["IPSets"] if s["Name"] == name]
    return sorted(wafv2.get_ip_set(Name=name, Scope=SCOPE, Id=summary["Id"])["IPSet"]["Addresses"])


def _parameters(aws: dict[str, Any], tenant: str) -> list[str]:
    found = aws["ssm"].get_parameters_by_path(Path=f"/orchestrator/{tenant}/perimeter-block/", Recursive=True)
    return sorted(p["Name"] for p in found["Parameters"])


def _conf(expires_at: str, alert_id: str) -> dict[str, Any]:
    return {
        "indicator": INDICATOR,
        "tenant": "globex",
        "expires_at": expires_at,
        "alert_id": alert_id,
        "summary": "Sentinel: password spraying from this range",
    }


def _approve(lead: AirflowApi, run_id: str) -> None:
    lead.wait_for_request(DAG, run_id, GATE)
    lead.answer(DAG, run_id, GATE, "Approve", comment="block it")


def _wait_for_task(api: AirflowApi, run_id: str, task_id: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while api.task_states(DAG, run_id).get(task_id) != "success":
        assert time.monotonic() < deadline, f"{task_id} of {run_id}: {api.task_states(DAG, run_id)}"
        time.sleep(1)


# The scenario of five runs and an extension mostly waits for the first expiry: it runs in the
# background (tests/e2e/background.py) from after the evidence packs' module (their window lists
# every run) and must end before the KPI report's window; its users, alert id and the globex block
# are its own. Checked by the first test here; the tests after it see globex's block list empty.
SCENARIO_USERS = {"blk_soc_op": ["soc_operator"], "blk_soc_lead": ["soc_lead"]}


@background.scenario(
    start_after="test_evidence_packs",
    quiet=("test_soc_block_indicator::test_bad_input_fails_the_read_only_step_before_any_side_effect",),
    timeout=600,
)
def block_expiry_scenario(request: pytest.FixtureRequest) -> Callable[[], None]:
    stack: Stack = request.getfixturevalue("stack")
    request.getfixturevalue("api").wait_for_dags({DAG})
    people = sign_up(stack, SCENARIO_USERS, backup_tokens=3)
    op, lead = people["blk_soc_op"], people["blk_soc_lead"]
    aws = {tenant: _aws(stack, tenant) for tenant in ("globex", "acme")}
    api, rt = admin_api(stack), rt_hook(stack)  # this scenario's own clients
    return lambda: _five_runs_one_entry_a_re_run_extends(aws, api, op, lead, rt)


def test_five_runs_one_entry_a_re_run_extends_and_one_removal_at_the_later_expiry() -> None:
    background.result("block_expiry_scenario")


def _five_runs_one_entry_a_re_run_extends(
    aws: dict[str, dict[str, Any]], api: AirflowApi, op: AirflowApi, lead: AirflowApi, rt: RequestTrackerHook
) -> None:
    # 150 s for six triggers and approvals before the first expiry, beside other modules' tests on a
    # loaded machine (90 s was too short there once; in the background the wait costs the session nothing).
    first_expiry = datetime.fromisoformat(_at(150))
    later = first_expiry + timedelta(seconds=25)
    conf = _conf(first_expiry.isoformat(), "SENT-9001")
    # The first run's ticket first: the ticket operators' search-before-create is not atomic, so runs
    # of one alert that create its ticket at the same moment could open two.
    runs = [op.trigger(DAG, conf)]
    _wait_for_task(api, runs[0], "open_ticket")
    runs += [op.trigger(DAG, conf) for _ in range(4)]
    # An analyst's re-run with a later expiry; approved once the five blocks are in place.
    extension = op.trigger(DAG, _conf(later.isoformat(), "SENT-9001"))
    everything = [*runs, extension]
    for run_id in runs:
        _approve(lead, run_id)
    for run_id in runs:
        _wait_for_task(api, run_id, "block_indicator")
    assert _addresses(aws["globex"], "globex") == [INDICATOR]
    assert _parameters(aws["globex"], "globex") == [PARAMETER]
    # The SLA counts from the block's end (include/workflows/holds.py), not from the trigger: a block
    # longer than the SOC's 30 minutes is not late.
    sla = load_domain_policy().domain("soc").sla["infrastructure_change"]
    for run_id in runs:
        found = api.request("GET", f"dags/{DAG}/dagRuns/{run_id}/deadlines", api="ui")["deadlines"]
        assert [datetime.fromisoformat(d["deadline_time"]) for d in found] == [first_expiry + sla], run_id
    blocks = [api.xcom(DAG, r, "block_indicator") for r in runs]
    assert sorted(b["added"] for b in blocks) == [False, False, False, False, True]
    assert {b["expires_at"] for b in blocks} == {first_expiry.isoformat()}

    _approve(lead, extension)
    _wait_for_task(api, extension, "block_indicator")
    extended = api.xcom(DAG, extension, "block_indicator")
    assert datetime.now(UTC) < first_expiry, "too slow: the extension came after the first expiry"
    assert (extended["added"], extended["extended"], extended["expires_at"]) == (
        False,
        True,
        later.isoformat(),
    )

    # Past the first expiry: every wait woke, saw the later one and waits again; the entry stays.
    while datetime.now(UTC) < first_expiry + timedelta(seconds=10):
        time.sleep(1)
    assert _addresses(aws["globex"], "globex") == [INDICATOR]
    assert [api.task_states(DAG, r)["unblock_indicator"] for r in everything] == [None] * 6

    for run_id in everything:
        assert api.wait_for_run(DAG, run_id, timeout=180)["state"] == "success"
    assert _addresses(aws["globex"], "globex") == []
    assert _parameters(aws["globex"], "globex") == []
    unblocks = {r: api.xcom(DAG, r, "unblock_indicator") for r in everything}
    assert sorted(u["outcome"] for u in unblocks.values()) == ["already-removed"] * 5 + ["removed"]
    (remover,) = [r for r, u in unblocks.items() if u["removed"]]
    (removal,) = [t for t in api.task_instances(DAG, remover) if t["task_id"] == "unblock_indicator"]
    assert datetime.fromisoformat(removal["start_date"]) >= later  # one removal, at the later expiry
    waits = [api.xcom(DAG, r, "wait_for_expiry") for r in everything]
    assert {w["outcome"] for w in waits} <= {"expired", "no-block"}
    assert {w["expires_at"] for w in waits if w["outcome"] == "expired"} == {later.isoformat()}

    # One ticket for the alert; its evidence names the block and the removal; resolved.
    tickets = {str(api.xcom(DAG, r, "open_ticket")["id"]) for r in everything}
    assert len(tickets) == 1
    (ticket_id,) = tickets
    texts = "\n".join(ticket_texts(rt, ticket_id))
    assert f"{INDICATOR} is in WAF IP set orchestrator-globex-blocklist-ipv4" in texts
    assert "removed at its expiry" in texts
    assert api.xcom(DAG, extension, "resolve_ticket")["status"] == "resolved"
    # The other tenant's account: nothing blocked, nothing recorded.
    assert _addresses(aws["acme"], "acme") == []
    assert _parameters(aws["acme"], "acme") == []


@pytest.mark.parametrize(
    "bad",
    [
        {"tenant": "initech"},  # unknown tenant
        {"expires_at": "2026-12-07 08:00"},  # not ISO 8601 with a time zone
        {"alert_id": ""},
        {"indicator": "x"},
    ],
)
def test_malformed_input_is_refused_by_the_trigger(users: dict[str, AirflowApi], bad: dict[str, Any]) -> None:
    with pytest.raises(ApiError) as refused:
        users["pia_soc_op"].trigger(DAG, {**_conf(_at(600), "SENT-9002"), **bad})
    assert refused.value.status_code == 400


def test_bad_input_fails_the_read_only_step_before_any_side_effect(
    stack: Stack, api: AirflowApi, users: dict[str, AirflowApi], rt: RequestTrackerHook
) -> None:
    cases = {
        "SENT-9101": {"indicator": "45.155.205.300"},
        "SENT-9102": {"indicator": "evil.example.com"},
        "SENT-9103": {"indicator": "45.0.0.0/8"},
        "SENT-9104": {"indicator": "10.20.30.40"},
        "SENT-9105": {"indicator": "45.155.205.7/24"},
        "SENT-9106": {"expires_at": _at(-60)},
        "SENT-9107": {"expires_at": _at(5 * 24 * 3600)},
    }
    runs = {
        alert: users["pia_soc_op"].trigger(DAG, {**_conf(_at(600), alert), **change})
        for alert, change in cases.items()
    }
    for alert, run_id in runs.items():
        assert api.wait_for_run(DAG, run_id, timeout=180)["state"] == "failed", alert
        states = api.task_states(DAG, run_id)
        assert states["inspect_indicator"] == "failed", alert
        assert states["open_ticket"] == "upstream_failed", alert
        assert (states["change_failed"], states["unblock_failed"]) == ("skipped", "skipped"), alert
        assert rt._search(f"Subject LIKE '{alert}'", "test_search") == [], alert
    globex = _aws(stack, "globex")
    assert _addresses(globex, "globex") == []
    assert _addresses(globex, "globex", 6) == []
    assert _parameters(globex, "globex") == []
