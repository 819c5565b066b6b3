"""SOC Entra user containment end to end, two customer tenants at once, against the local stack's
Entra/Graph stand-in (HTTPS, each tenant's own app read from its own AWS account in moto): disable
with the SOC on-call's approval (sign-in blocked, sessions revoked, MFA methods deleted for one
tenant, the incident commented), the same alert four more times changes nothing, a user of another
tenant is refused before any ticket, and enabling back takes its own approval. Checked in the stand-in's state
through Graph (the tenant's read-only app) and in Request Tracker. The incident write-back
(include/workflows/incidents.py): one comment per outcome (contained once for five runs; rejected;
failed) and the status, and a failed run stays failed although its write-back succeeded.
"""

from __future__ import annotations

from typing import Any

import pytest
import requests

from devstack.api_client import AirflowApi
from devstack.stack import Stack
from devstack.standins import microsoft as ms
from include.connectors.ticketing.request_tracker import RequestTrackerHook
from tests.e2e.conftest import sign_up

DISABLE = "soc_disable_entra_user"
ENABLE = "soc_enable_entra_user"
DISABLE_GATE = "approve_entra_user_disable"
ENABLE_GATE = "approve_entra_user_enable"
USERS = {"erin_soc_op": ["soc_operator"], "ezra_soc_oncall": ["soc_oncall"]}


@pytest.fixture(scope="module")
def users(stack: Stack, api: AirflowApi) -> dict[str, AirflowApi]:
    api.wait_for_dags({DISABLE, ENABLE})
    return sign_up(stack, USERS)


def _graph(stack: Stack, tenant: str, path: str) -> Any:
    """GET ``path`` of tenant's Graph as its read-only app (what an analyst would see)."""
    conn = ms.connection(stack.profile, tenant, "entra-user-inspect")
    verify = conn["extra"]["verify"]
    token = requests.post(
        f"{ms.base_url(stack.profile)}/{conn['extra']['tenant_id']}/oauth2/v2.0/token",
        data={
            "grant_type": "client_credentials",
            "client_id": conn["login"],
            "client_secret": conn["password"],
            "scope": ms.GRAPH_SCOPE,
        },
        verify=verify,
        timeout=10,
    ).json()["access_token"]
    response = requests.get(
        f"{ms.base_url(stack.profile)}/v1.0/{path}",
        headers={"Authorization": f"Bearer {token}"},
        verify=verify,
        timeout=10,
    )
    response.raise_for_status()
    return response.json()


def _alert(tenant: str, user: str, alert_id: str, **extra: Any) -> dict[str, Any]:
    return {"user": f"{user}@{tenant}.example", "tenant": tenant, "alert_id": alert_id, **extra}


def _approve(users: dict[str, AirflowApi], api: AirflowApi, dag: str, gate: str, run_id: str) -> str:
    users["ezra_soc_oncall"].wait_for_request(dag, run_id, gate)
    users["ezra_soc_oncall"].answer(dag, run_id, gate, "Approve", comment="token theft confirmed")
    return str(api.wait_for_run(dag, run_id, timeout=180)["state"])


def test_disable_two_tenants_then_the_same_alert_again_then_enable(
    stack: Stack, api: AirflowApi, users: dict[str, AirflowApi], rt: RequestTrackerHook
) -> None:
    op = users["erin_soc_op"]
    acme = op.trigger(DISABLE, _alert("acme", "mallory", "DEF-7001", reset_mfa="yes", incident_id="1001"))
    globex = op.trigger(DISABLE, _alert("globex", "mallory", "DEF-7002"))
    assert _approve(users, api, DISABLE, DISABLE_GATE, acme) == "success"
    assert _approve(users, api, DISABLE, DISABLE_GATE, globex) == "success"

    assert _graph(stack, "acme", "users/mallory@acme.example")["accountEnabled"] is False
    assert _graph(stack, "globex", "users/mallory@globex.example")["accountEnabled"] is False
    acme_id = _graph(stack, "acme", "users/mallory@acme.example")["id"]
    globex_id = _graph(stack, "globex", "users/mallory@globex.example")["id"]
    kinds = lambda tenant, uid: [  # noqa: E731
        m["@odata.type"].rsplit(".", 1)[-1]
        for m in _graph(stack, tenant, f"users/{uid}/authentication/methods")["value"]
    ]
    assert kinds("acme", acme_id) == ["passwordAuthenticationMethod"]  # MFA reset asked for
    assert "microsoftAuthenticatorAuthenticationMethod" in kinds("globex", globex_id)  # not asked for
    assert api.xcom(DISABLE, acme, "disable_user")["changed"] is True

    # the same alert four more times (SCALE-3), started together: no change, one ticket, one comment
    alert = _alert("acme", "mallory", "DEF-7001", reset_mfa="yes", incident_id="1001")
    again = [op.trigger(DISABLE, alert) for _ in range(4)]
    assert [_approve(users, api, DISABLE, DISABLE_GATE, run) for run in again] == ["success"] * 4
    for run in again:
        assert api.xcom(DISABLE, run, "disable_user")["changed"] is False
        assert api.xcom(DISABLE, run, "disable_user")["mfa_methods_deleted"] == []
    tickets = {str(api.xcom(DISABLE, run, "open_ticket")["id"]) for run in [acme, *again]}
    assert len(tickets) == 1
    assert len(rt._search("Subject LIKE 'DEF-7001'", "test_search")) == 1
    incident = _graph(stack, "acme", "security/incidents/1001")
    assert len(incident["comments"]) == 1
    assert incident["status"] == "inProgress"
    (comment,) = [c["comment"] for c in incident["comments"]]
    assert comment.startswith(
        "Orchestrator soc_disable_entra_user: contained. Entra user mallory@acme.example"
    )
    assert f"Approved by ezra_soc_oncall. Ticket {tickets.pop()}. Correlation id corr-" in comment
    assert comment.endswith("[orchestrator:soc_disable_entra_user:DEF-7001:done]")
    written = [api.xcom(DISABLE, run, "incident_writeback")["commented"] for run in [acme, *again]]
    assert written == [True, False, False, False, False]

    # enable back, its own approval
    enable = op.trigger(
        ENABLE, {"user": "mallory@globex.example", "tenant": "globex", "alert_id": "DEF-7002"}
    )
    assert _approve(users, api, ENABLE, ENABLE_GATE, enable) == "success"
    assert _graph(stack, "globex", "users/mallory@globex.example")["accountEnabled"] is True
    assert _graph(stack, "acme", "users/mallory@acme.example")["accountEnabled"] is False  # untouched


def test_a_user_of_another_tenant_fails_before_any_ticket(
    stack: Stack, api: AirflowApi, users: dict[str, AirflowApi], rt: RequestTrackerHook
) -> None:
    run_id = users["erin_soc_op"].trigger(
        DISABLE, _alert("acme", "jdoe", "DEF-7003", incident_id="1001") | {"user": "jdoe@globex.example"}
    )
    assert (
        api.wait_for_run(DISABLE, run_id, timeout=120)["state"] == "failed"
    )  # the write-back did not change it
    states = api.task_states(DISABLE, run_id)
    assert states["inspect_user"] == "failed"
    assert states["open_ticket"] == "upstream_failed"
    assert states["incident_writeback"] == "success"
    comments = [c["comment"] for c in _graph(stack, "acme", "security/incidents/1001")["comments"]]
    (failed,) = [c for c in comments if c.endswith(":DEF-7003:failed]")]
    assert "not contained: the run stopped at inspect_user (failed)" in failed
    assert rt._search("Subject LIKE 'DEF-7003'", "test_search") == []
    assert _graph(stack, "globex", "users/jdoe@globex.example")["accountEnabled"] is True


def test_a_rejected_disable_says_so_on_the_incident(
    stack: Stack, api: AirflowApi, users: dict[str, AirflowApi]
) -> None:
    run_id = users["erin_soc_op"].trigger(DISABLE, _alert("globex", "jdoe", "DEF-7004", incident_id="1001"))
    users["ezra_soc_oncall"].wait_for_request(DISABLE, run_id, DISABLE_GATE)
    users["ezra_soc_oncall"].answer(DISABLE, run_id, DISABLE_GATE, "Reject", comment="known admin travel")
    assert api.wait_for_run(DISABLE, run_id, timeout=180)["state"] == "success"  # as before: nothing to do
    states = api.task_states(DISABLE, run_id)
    assert (states["disable_user"], states["incident_writeback"]) == ("skipped", "success")
    incident = _graph(stack, "globex", "security/incidents/1001")
    (comment,) = [c["comment"] for c in incident["comments"] if c["comment"].endswith(":DEF-7004:rejected]")]
    assert 'not contained: rejected by ezra_soc_oncall ("known admin travel")' in comment
    assert incident["status"] == "active"  # a reject leaves the incident as it was
    assert _graph(stack, "globex", "users/jdoe@globex.example")["accountEnabled"] is True
