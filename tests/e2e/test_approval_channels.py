"""Approvers reached where they are (issue 22, items 3 and 6), end to end: a SOC host isolation
drill climbs its whole ladder at drill pace (reminder 10 s, escalation 20 s, auto-reject 30 s) and
every step reaches the SOC's Teams channel; the escalation pages the on-call through PagerDuty
Events v2, and the answer resolves the page. Checked in the webhook stand-in's records
(devstack/standins/webhooks.py, ``GET /_records``).

A channel that keeps failing (the stand-in's fault switch) does not fail the gate or the run: the
drill ends as every drill does, and the failure is a ``notification.failed`` audit record.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
import requests

from devstack.api_client import AirflowApi
from devstack.stack import Stack
from devstack.standins import webhooks
from include.approvals.channels import dedup_key
from include.audit.store import AuditStore
from tests.e2e import background
from tests.e2e.conftest import admin_api, sign_up
from tests.e2e.test_soc_contain_host import _alert, _groups_and_tags, _host

DAG = "soc_contain_host"
GATE = "approve_host_isolate"


def _records(stack: Stack) -> dict[str, Any]:
    response = requests.get(f"{webhooks.base_url(stack.profile)}/_records", timeout=10)
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


def _wait(what: str, probe: Callable[[], Any], timeout: float = 90) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        if value := probe():
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


def _cards(stack: Stack, run_id: str) -> list[str]:
    """The headlines of the SOC channel's cards about ``run_id``, in arrival order."""
    return [
        m["message"]["attachments"][0]["content"]["body"][0]["text"]
        for m in _records(stack)["teams"]
        if m["channel"] == "soc" and m["message"] and run_id in json.dumps(m["message"])
    ]


def _incidents(stack: Stack, key: str) -> list[dict[str, Any]]:
    return [i for i in _records(stack)["pagerduty"]["incidents"] if i["dedup_key"] == key]


def _key(run_id: str) -> str:
    return dedup_key({"dag_id": DAG, "run_id": run_id, "task_id": GATE, "map_index": -1})


# The drills mostly wait for their escalation (20 s) and reject (30 s): they run in the background
# (tests/e2e/background.py) from the session's start, beside test_approval_escalation's drill, each
# with its own users and alert. The failing pager's fault is scoped to its own run's pages (the
# stand-in's ``match``), so the other drills page beside it undisturbed.
DRILL_USERS = {"chn_soc_op": ["soc_operator"], "chn_soc_lead": ["soc_lead"]}
PAGER_FAULT_USERS = {"pfl_soc_op": ["soc_operator"], "pfl_soc_lead": ["soc_lead"]}


@background.scenario(start_after=None, timeout=400)
def channels_drill_scenario(request: pytest.FixtureRequest) -> Callable[[], None]:
    stack: Stack = request.getfixturevalue("stack")
    request.getfixturevalue("api").wait_for_dags({DAG})
    people = sign_up(stack, DRILL_USERS)
    host = _host(stack)  # boto3 clients are built in the main thread; a built one is thread-safe
    api = admin_api(stack)  # this scenario's own client
    return lambda: _drill_reaches_teams_and_pages(
        stack, api, people["chn_soc_op"], people["chn_soc_lead"], host
    )


@background.scenario(start_after=None, timeout=400)
def failing_pager_scenario(request: pytest.FixtureRequest) -> Callable[[], None]:
    stack: Stack = request.getfixturevalue("stack")
    request.getfixturevalue("api").wait_for_dags({DAG})
    people = sign_up(stack, PAGER_FAULT_USERS)
    host = _host(stack)
    api = admin_api(stack)
    return lambda: _a_failing_pager_fails_neither_gate_nor_run(
        stack, api, people["pfl_soc_op"], people["pfl_soc_lead"], host
    )


@background.result_test("channels_drill_scenario")
def test_soc_drill_reaches_teams_and_pages_the_oncall_until_answered() -> None:
    background.result("channels_drill_scenario")


def _drill_reaches_teams_and_pages(
    stack: Stack, api: AirflowApi, op: AirflowApi, lead: AirflowApi, host: dict[str, Any]
) -> None:
    before = _groups_and_tags(host)
    run_id = op.trigger(DAG, {**_alert(host, "EDR-CHANNELS-1"), "approval_drill": True})
    lead.wait_for_request(DAG, run_id, GATE)
    key = _key(run_id)

    (incident,) = _wait("the page at escalation", lambda: _incidents(stack, key), timeout=90)
    assert incident["service"] == "soc"
    assert incident["status"] == "triggered"
    assert incident["summary"].startswith("[DRILL] SOC approval unanswered: host-isolate")
    lead.answer(DAG, run_id, GATE, "Reject", "drill answered")
    assert api.wait_for_run(DAG, run_id, timeout=180)["state"] == "success"

    (incident,) = _wait(
        "the resolve at the answer",
        lambda: [i for i in _incidents(stack, key) if i["status"] == "resolved"],
        timeout=30,
    )
    assert incident["triggers"] == 1  # one page, one incident
    headlines = [h.split(":")[0] for h in _cards(stack, run_id)]
    assert headlines == [
        "[DRILL] Approval needed",
        "[DRILL] Reminder",
        "[DRILL] Escalation",
        "[DRILL] Rejected by chn_soc_lead",
    ]
    assert _groups_and_tags(host) == before  # a drill never acts
    records = json.dumps(_records(stack))
    assert webhooks.routing_key(stack.profile, "soc") not in records
    assert webhooks.teams_token(stack.profile, "soc") not in records


@background.result_test("failing_pager_scenario")
def test_a_failing_pager_fails_neither_gate_nor_run_and_is_audited() -> None:
    background.result("failing_pager_scenario")


def _a_failing_pager_fails_neither_gate_nor_run(
    stack: Stack, api: AirflowApi, op: AirflowApi, lead: AirflowApi, host: dict[str, Any]
) -> None:
    run_id = op.trigger(DAG, {**_alert(host, "EDR-CHANNELS-2"), "approval_drill": True})
    lead.wait_for_request(DAG, run_id, GATE)
    # This run's pages only (its dedup key): the other drills of the session page beside it.
    fault = {"target": "pagerduty", "mode": "5xx", "times": 20, "match": _key(run_id)}
    requests.post(f"{webhooks.base_url(stack.profile)}/_faults", json=fault, timeout=10).raise_for_status()
    try:
        # Nobody answers: escalation (the page fails), then the fail-safe reject at 30 s.
        assert api.wait_for_run(DAG, run_id, timeout=180)["state"] == "success"
    finally:
        off = {**fault, "times": 0}
        requests.post(f"{webhooks.base_url(stack.profile)}/_faults", json=off, timeout=10)
    assert _incidents(stack, _key(run_id)) == []
    # The outcome card is sent after the gate's success is reported (off the privileged step's path).
    final = "[DRILL] Timed out, rejected (fail-safe)"
    _wait("the timeout's card", lambda: [h.split(":")[0] for h in _cards(stack, run_id)][-1:] == [final], 30)
    with AuditStore(stack.audit_dsn) as audit:
        _, story = audit.trace(run_id)
    failed = [r for r in story if r["kind"] == "notification.failed"]
    assert {(r["details"]["channel"], r["details"]["stage"]) for r in failed} >= {("pagerduty", "escalation")}
    assert webhooks.routing_key(stack.profile, "soc") not in json.dumps(story)
