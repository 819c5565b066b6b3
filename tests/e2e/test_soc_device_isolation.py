"""SOC device isolation end to end, two customer tenants at once, against the local stack's Defender
for Endpoint stand-in (HTTPS, each tenant's own apps read from its own AWS account in moto):

- isolate (a machine by host name for acme, Selective; by id for globex, Full) with the SOC
  on-call's approval, the isolating task deferred while Defender's machine action completes (the
  triggerer polls it); the acme alert five times at once is one machine action and one ticket;
  release both, each with its own approval (`device-release`): one release action per device;
- a run of acme naming globex's machine (by id, by DNS name) or an unknown machine fails at
  `inspect_device`: no ticket, no machine action, and no request with any of globex's apps or for
  globex's data in the stand-in's log (`GET /_records`); a malformed machine is refused at trigger.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import requests

from devstack.api_client import AirflowApi, ApiError
from devstack.stack import Stack
from devstack.standins import microsoft as ms
from include.connectors.ticketing.request_tracker import RequestTrackerHook
from tests.e2e.conftest import sign_up

ISOLATE = "soc_isolate_device"
RELEASE = "soc_release_device"
ISOLATE_GATE = "approve_device_isolate"
RELEASE_GATE = "approve_device_release"
USERS = {"dora_soc_op": ["soc_operator"], "dane_soc_oncall": ["soc_oncall"], "dina_soc_lead": ["soc_lead"]}


@pytest.fixture(scope="module")
def users(stack: Stack, api: AirflowApi) -> dict[str, AirflowApi]:
    api.wait_for_dags({ISOLATE, RELEASE})
    return sign_up(stack, USERS)


def _records(stack: Stack) -> dict[str, Any]:
    response = requests.get(
        f"{ms.base_url(stack.profile)}/_records", verify=str(ms.tls_dir(stack.profile) / "ca.pem"), timeout=10
    )
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


def _entra(tenant: str) -> str:
    return str(ms.entra_tenants()[tenant].entra_tenant_id)


def _actions(stack: Stack, tenant: str, machine_id: str) -> list[str]:
    actions = _records(stack)["machine_actions"][_entra(tenant)]
    return [
        a["type"]
        for a in sorted(actions, key=lambda a: a["creationDateTimeUtc"])
        if a["machineId"] == machine_id
    ]


def _approve_all(
    users: dict[str, AirflowApi], api: AirflowApi, dag: str, gate: str, runs: list[str]
) -> list[str]:
    approvers = [users["dane_soc_oncall"], users["dina_soc_lead"]]
    for i, run in enumerate(runs):  # two approvers: TOTP codes for six answers in a few seconds
        approver = approvers[i % 2]
        approver.wait_for_request(dag, run, gate)
        approver.answer(dag, run, gate, "Approve", comment="EDR alert confirmed")
    return [str(api.wait_for_run(dag, run, timeout=180)["state"]) for run in runs]


def test_isolate_two_tenants_five_times_then_release(
    stack: Stack, api: AirflowApi, users: dict[str, AirflowApi], rt: RequestTrackerHook
) -> None:
    op = users["dora_soc_op"]
    started = time.monotonic()
    acme_id, globex_id = ms.hashlib_id("acme", "ws-001"), ms.hashlib_id("globex", "srv-db-01")
    acme_alert = {
        "machine": "ws-001",
        "tenant": "acme",
        "alert_id": "EDR-8001",
        "isolation_type": "Selective",
    }
    globex = op.trigger(ISOLATE, {"machine": globex_id, "tenant": "globex", "alert_id": "EDR-8002"})
    acme_runs = [op.trigger(ISOLATE, acme_alert) for _ in range(5)]  # the same alert five times at once
    assert _approve_all(users, api, ISOLATE, ISOLATE_GATE, [globex, *acme_runs]) == ["success"] * 6

    assert _actions(stack, "acme", acme_id) == ["Isolate"]
    assert _actions(stack, "globex", globex_id) == ["Isolate"]
    isolated = _records(stack)["isolated"]
    assert isolated[_entra("acme")][acme_id] is True
    assert isolated[_entra("globex")][globex_id] is True
    results = [api.xcom(ISOLATE, run, "isolate_device") for run in acme_runs]
    assert sorted(r["created"] for r in results) == [False, False, False, False, True]
    assert {(r["action_id"], r["scope"], r["status"]) for r in results} == {
        (results[0]["action_id"], "Selective", "Succeeded")
    }
    assert api.xcom(ISOLATE, globex, "isolate_device")["scope"] == "Full"
    assert len({str(api.xcom(ISOLATE, run, "open_ticket")["id"]) for run in acme_runs}) == 1
    assert len(rt._search("Subject LIKE 'EDR-8001'", "test_search")) == 1

    # release, each with its own approval
    releases = [
        op.trigger(RELEASE, {"machine": "ws-001.acme.example", "tenant": "acme", "alert_id": "EDR-8001"}),
        op.trigger(RELEASE, {"machine": globex_id, "tenant": "globex", "alert_id": "EDR-8002"}),
    ]
    assert _approve_all(users, api, RELEASE, RELEASE_GATE, releases) == ["success"] * 2
    assert _actions(stack, "acme", acme_id) == ["Isolate", "Unisolate"]
    assert _actions(stack, "globex", globex_id) == ["Isolate", "Unisolate"]
    isolated = _records(stack)["isolated"]
    assert isolated[_entra("acme")][acme_id] is False
    assert isolated[_entra("globex")][globex_id] is False
    print(f"isolate x6 + release x2: {time.monotonic() - started:.1f} s")


def test_another_tenants_or_an_unknown_machine_fails_before_any_side_effect(
    stack: Stack, api: AirflowApi, users: dict[str, AirflowApi], rt: RequestTrackerHook
) -> None:
    op = users["dora_soc_op"]
    before = len(_records(stack)["requests"])
    actions = _records(stack)["machine_actions"]
    cases = {
        "EDR-8101": ms.hashlib_id("globex", "ws-001"),  # globex's machine id in an acme run
        "EDR-8102": "ws-001.globex.example",  # globex's machine by DNS name
        "EDR-8103": "ws-999",  # no such machine
    }
    runs = {
        alert: op.trigger(ISOLATE, {"machine": m, "tenant": "acme", "alert_id": alert})
        for alert, m in cases.items()
    }
    with pytest.raises(ApiError) as refused:
        op.trigger(ISOLATE, {"machine": "ws-001; rm -rf /", "tenant": "acme", "alert_id": "EDR-8104"})
    assert refused.value.status_code == 400
    for alert, run in runs.items():
        assert api.wait_for_run(ISOLATE, run, timeout=120)["state"] == "failed"
        states = api.task_states(ISOLATE, run)
        assert states["inspect_device"] == "failed"
        assert states["open_ticket"] == "upstream_failed"
        assert rt._search(f"Subject LIKE '{alert}'", "test_search") == []

    records = _records(stack)
    assert records["machine_actions"] == actions  # no machine action anywhere
    seen = records["requests"][before:]
    globex = _entra("globex")
    assert [r for r in seen if r["tenant_id"] == globex or globex in r["path"]] == []
    assert [r for r in seen if r["method"] not in ("GET",) and "/oauth2/" not in r["path"]] == []
