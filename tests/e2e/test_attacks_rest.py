"""The attacker's paths through the REST API, with real accounts of each role, on the real stack.

Each attack asserts the refusal and that the target did not change: the Microsoft stand-in's
machine actions, incidents and request log (which tenant's apps were used), the run's task states,
the DAG itself. Next to tests/e2e/test_approval_door.py (the gate's own XCom and states) and
tests/e2e/test_rbac_matrix.py (who triggers, clears, pauses per domain):

- a SOC operator, then a platform admin, rewrite the XCom of ``inspect_device`` (the read-only
  inspection whose machine id the isolation uses) of a waiting ``soc_isolate_device`` run: refused
  (rule ``approval-xcom``), nothing written, and after the approval the machine isolated is the
  one the approval request showed, not the attacker's;
- a SOC operator runs a globex isolation naming acme's incident (``incident_id``): the run never
  asks for a token of acme's apps nor touches acme's incident; the write-back goes to globex's;
- an auditor can start an on-demand evidence pack but not pause, unpause, delete, clear or
  backfill ``platform_evidence_packs`` (a backfill is scheduled-type runs: every customer's monthly
  pack and the platform's seal), nor start another DAG; a SOC operator may pause their own domain's
  privileged DAG (docs/policies.md) but not another domain's;
- a SOC operator, then a platform admin, write, patch, delete and clear the task state store
  (Airflow 3.3's ``.../taskInstances/{task}/state-store[/{key}]``) of the inspection, the gate
  and the privileged step of a waiting ``soc_isolate_device`` run: refused (rule
  ``approval-state-store``), one ``policy.violation`` each, nothing stored; the same writes on a
  SOC DAG without a gate (``e2e_soc_state_store``) go through (the routes are real; deleting
  there is the admin's: the operator role has no delete, so FAB refuses it).
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import requests

from devstack.api_client import AirflowApi, ApiError
from devstack.stack import Stack
from devstack.standins import microsoft as ms
from include.audit.store import AuditStore
from tests.e2e.conftest import sign_up

ISOLATE = "soc_isolate_device"
GATE = "approve_device_isolate"
INSPECT = "inspect_device"
EVIDENCE = "platform_evidence_packs"
UNGATED = "e2e_soc_state_store"  # tests/e2e/dags/state_store_resume.py
OP, ONCALL, AUDITOR, SUPPORT_OP = "atka_soc_op", "atko_soc_oncall", "atku_auditor", "atks_support_op"
USERS = {
    OP: ["soc_operator"],
    ONCALL: ["soc_oncall"],
    AUDITOR: ["auditor"],
    SUPPORT_OP: ["support_operator"],
}


@pytest.fixture(scope="module")
def users(stack: Stack, api: AirflowApi) -> dict[str, AirflowApi]:
    api.wait_for_dags({ISOLATE, EVIDENCE, UNGATED})
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


def _actions(stack: Stack, tenant: str) -> list[tuple[str, str]]:
    """(machine id, action type) of every machine action in the tenant's Defender, oldest first."""
    actions = _records(stack)["machine_actions"][_entra(tenant)]
    return [(a["machineId"], a["type"]) for a in sorted(actions, key=lambda a: a["creationDateTimeUtc"])]


def _incident(stack: Stack, tenant: str, incident_id: str) -> dict[str, Any]:
    """The incident as the tenant's read-only app sees it (a request of that tenant in the log)."""
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
        f"{ms.base_url(stack.profile)}/v1.0/security/incidents/{incident_id}",
        headers={"Authorization": f"Bearer {token}"},
        verify=verify,
        timeout=10,
    )
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


def _status(call: Any) -> int:
    try:
        call()
    except ApiError as error:
        return error.status_code
    return 200


def test_rewriting_the_inspection_xcom_is_refused_and_the_approved_machine_is_isolated(
    stack: Stack, api: AirflowApi, users: dict[str, AirflowApi]
) -> None:
    started = time.monotonic()
    op = users[OP]
    target, decoy = ms.hashlib_id("acme", "srv-db-01"), ms.hashlib_id("acme", "ws-001")
    before = _actions(stack, "acme")
    run_id = op.trigger(ISOLATE, {"machine": "srv-db-01", "tenant": "acme", "alert_id": "EDR-9401"})
    request = users[ONCALL].wait_for_request(ISOLATE, run_id, GATE)
    assert f"(id `{target}`)" in request["body"]  # what the approver is asked about
    inspected = api.xcom(ISOLATE, run_id, INSPECT)
    assert inspected["id"] == target
    states = api.task_states(ISOLATE, run_id)

    xcoms = f"dags/{ISOLATE}/dagRuns/{run_id}/taskInstances/{INSPECT}/xcomEntries"
    forged = {**inspected, "id": decoy, "computer_dns_name": "ws-001.acme.example"}
    attempts = [
        ("PATCH", f"{xcoms}/return_value", {"value": forged}),
        ("PATCH", f"{xcoms}/return_value", {"value": forged, "map_index": -1}),
        ("POST", xcoms, {"key": "return_value", "value": forged}),
        ("POST", xcoms, {"key": "machine_override", "value": decoy}),
        ("DELETE", f"{xcoms}/return_value", None),
    ]
    for client in (op, api):
        for method, path, body in attempts:
            refused = client.request(method, path, json=body, expect=(403,))
            assert refused["rule"] == "approval-xcom", (client.username, method, path, refused)
            assert refused["task_id"] == INSPECT
    assert api.xcom(ISOLATE, run_id, INSPECT) == inspected
    assert _status(lambda: api.xcom(ISOLATE, run_id, INSPECT, key="machine_override")) == 404
    assert api.task_states(ISOLATE, run_id) == states
    assert _actions(stack, "acme") == before  # nothing isolated yet

    with AuditStore(stack.audit_dsn) as audit:
        _, story = audit.trace(run_id)
    refusals = [
        (r["actor"], r["details"]["method"])
        for r in story
        if r["kind"] == "policy.violation" and r["details"].get("rule") == "approval-xcom"
    ]
    assert refusals == [(user, method) for user in (OP, api.username) for method, _, _ in attempts]

    users[ONCALL].answer(ISOLATE, run_id, GATE, "Approve", comment="EDR alert confirmed")
    assert api.wait_for_run(ISOLATE, run_id, timeout=180)["state"] == "success"
    assert _actions(stack, "acme") == [*before, (target, "Isolate")]  # the machine shown, only it
    isolated = _records(stack)["isolated"][_entra("acme")]
    assert (isolated[target], isolated[decoy]) == (True, False)
    assert api.xcom(ISOLATE, run_id, "isolate_device")["machine_id"] == target
    print(f"xcom attacks + approved isolation: {time.monotonic() - started:.1f} s")


def test_another_tenants_incident_is_never_touched(
    stack: Stack, api: AirflowApi, users: dict[str, AirflowApi]
) -> None:
    """acme's incident 1001 named in a globex run: globex's apps only, acme's incident unchanged.
    (Both tenants have an incident 1001 in the stand-in: the id alone never picks the tenant.)"""
    started = time.monotonic()
    acme_before = _incident(stack, "acme", "1001")
    globex_before = _incident(stack, "globex", "1001")
    globex_comments = len(globex_before["comments"])
    logged = len(_records(stack)["requests"])
    run_id = users[OP].trigger(
        ISOLATE, {"machine": "ws-001", "tenant": "globex", "alert_id": "EDR-9402", "incident_id": "1001"}
    )
    users[ONCALL].wait_for_request(ISOLATE, run_id, GATE)
    users[ONCALL].answer(ISOLATE, run_id, GATE, "Reject", comment="false positive")
    api.wait_for_run(ISOLATE, run_id, timeout=180)
    states = api.task_states(ISOLATE, run_id)
    assert (states["isolate_device"], states["incident_writeback"]) == ("skipped", "success")
    written = api.xcom(ISOLATE, run_id, "incident_writeback")
    assert (written["incident_id"], written["outcome"], written["commented"]) == ("1001", "rejected", True)

    seen = _records(stack)["requests"][logged:]
    acme, globex = _entra("acme"), _entra("globex")
    assert [r for r in seen if r["tenant_id"] == acme or acme in r["path"]] == []
    assert {r["tenant_id"] for r in seen if r["tenant_id"]} == {globex}
    assert any(r["method"] == "POST" and r["path"].endswith("/incidents/1001/comments") for r in seen)
    acme_after = _incident(stack, "acme", "1001")
    assert (acme_after["comments"], acme_after["status"]) == (acme_before["comments"], acme_before["status"])
    globex_incident = _incident(stack, "globex", "1001")
    assert len(globex_incident["comments"]) == globex_comments + 1
    assert globex_incident["comments"][-1]["comment"].endswith(f"[orchestrator:{ISOLATE}:EDR-9402:rejected]")
    # a reject leaves the status as it was (another module's run may have set it before this one)
    assert globex_incident["status"] == globex_before["status"]
    print(f"incident of another tenant: {time.monotonic() - started:.1f} s")


def test_the_auditor_changes_nothing_but_an_on_demand_pack(
    api: AirflowApi, users: dict[str, AirflowApi]
) -> None:
    auditor = users[AUDITOR]
    runs_before = api.get(f"dags/{EVIDENCE}/dagRuns")["total_entries"]
    backfill = {"dag_id": EVIDENCE, "from_date": "2025-01-01T00:00:00Z", "to_date": "2025-03-01T00:00:00Z"}
    attempts = {
        "pause": lambda: auditor.request("PATCH", f"dags/{EVIDENCE}", json={"is_paused": True}),
        "unpause": lambda: auditor.request("PATCH", f"dags/{EVIDENCE}", json={"is_paused": False}),
        "pause in bulk": lambda: auditor.request(
            "PATCH",
            "dags",
            params={"dag_id": EVIDENCE, "dag_id_pattern": EVIDENCE},
            json={"is_paused": True},
        ),
        "delete": lambda: auditor.request("DELETE", f"dags/{EVIDENCE}"),
        "clear runs": lambda: auditor.request(
            "POST", f"dags/{EVIDENCE}/clearTaskInstances", json={"dry_run": False, "only_failed": True}
        ),
        "backfill (dry run)": lambda: auditor.request("POST", "backfills/dry_run", json=backfill),
        "backfill": lambda: auditor.request("POST", "backfills", json=backfill),
        "trigger the audit seal": lambda: auditor.trigger("platform_audit_seal"),
        "trigger a SOC workflow": lambda: auditor.trigger(
            ISOLATE, {"machine": "ws-001", "tenant": "acme", "alert_id": "EDR-9403"}
        ),
    }
    answers = {name: _status(call) for name, call in attempts.items()}
    assert answers == {name: 403 for name in attempts}
    assert api.get(f"dags/{EVIDENCE}")["is_paused"] is False
    assert api.get("backfills", dag_id=EVIDENCE)["backfills"] == []
    assert api.get(f"dags/{EVIDENCE}/dagRuns")["total_entries"] == runs_before

    # What stays the auditor's: a pack on demand. Without a tenant the run refuses at its first
    # step (include/operators/evidence.py pack_requests), so nothing is built or sent here; the
    # packs themselves: tests/e2e/test_evidence_packs.py.
    run_id = auditor.trigger(EVIDENCE, {})
    assert api.wait_for_run(EVIDENCE, run_id, timeout=180)["state"] == "failed"
    assert api.get(f"dags/{EVIDENCE}/dagRuns")["total_entries"] == runs_before + 1


def test_operators_pause_their_own_domain_only(api: AirflowApi, users: dict[str, AirflowApi]) -> None:
    op, support = users[OP], users[SUPPORT_OP]
    unpause = {"is_paused": False}  # a no-op change: the DAGs are never paused
    assert op.request("PATCH", f"dags/{ISOLATE}", json=unpause)["is_paused"] is False  # docs/policies.md
    answers = {
        "support pauses a SOC privileged DAG": _status(
            lambda: support.request("PATCH", f"dags/{ISOLATE}", json={"is_paused": True})
        ),
        "support pauses it in bulk": _status(
            lambda: support.request(
                "PATCH",
                "dags",
                params={"dag_id": ISOLATE, "dag_id_pattern": ISOLATE},
                json={"is_paused": True},
            )
        ),
        "SOC pauses the evidence packs": _status(
            lambda: op.request("PATCH", f"dags/{EVIDENCE}", json={"is_paused": True})
        ),
        "SOC deletes its own DAG": _status(lambda: op.request("DELETE", f"dags/{ISOLATE}")),
    }
    assert answers == {name: 403 for name in answers}
    assert api.get(f"dags/{ISOLATE}")["is_paused"] is False
    assert api.get(f"dags/{EVIDENCE}")["is_paused"] is False


def _state_store(api: AirflowApi, dag_id: str, run_id: str, task_id: str) -> dict[str, Any]:
    """key -> value of the task's state store (map index -1), as Airflow's public API reads it."""
    body = api.get(f"dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/state-store")
    assert body["total_entries"] == len(body["task_state_store"])
    return {entry["key"]: entry["value"] for entry in body["task_state_store"]}


# Every write route of Airflow 3.3.2's task state store (api_fastapi/core_api/routes/public/
# task_state_store.py): set, patch, delete one key (a key may hold slashes), clear the task's keys,
# and clear every map index. (path after .../state-store, query, body)
STATE_STORE_WRITES: list[tuple[str, str, dict[str, Any], dict[str, Any] | None]] = [
    ("PUT", "/cursor", {}, {"value": {"page": 99}}),
    ("PUT", "/resume/job_id", {"map_index": -1}, {"value": "attacker-job", "expires_at": None}),
    ("PATCH", "/cursor", {}, {"value": {"page": 100}}),
    ("DELETE", "/cursor", {}, None),
    ("DELETE", "", {}, None),
    ("DELETE", "", {"all_map_indices": "true"}, None),
]


def test_writing_a_gated_runs_state_store_is_refused_and_an_ungated_one_is_not(
    stack: Stack, api: AirflowApi, users: dict[str, AirflowApi]
) -> None:
    started = time.monotonic()
    op = users[OP]
    before = _actions(stack, "acme")
    run_id = op.trigger(ISOLATE, {"machine": "ws-001", "tenant": "acme", "alert_id": "EDR-9404"})
    users[ONCALL].wait_for_request(ISOLATE, run_id, GATE)
    states = api.task_states(ISOLATE, run_id)
    assert (states[INSPECT], states[GATE], states["isolate_device"]) == ("success", "deferred", None)

    tasks = (INSPECT, GATE, "isolate_device")
    for client in (op, api):
        for task_id in tasks:
            store = f"dags/{ISOLATE}/dagRuns/{run_id}/taskInstances/{task_id}/state-store"
            for method, key, query, body in STATE_STORE_WRITES:
                refused = client.request(method, store + key, params=query, json=body, expect=(403,))
                assert refused["rule"] == "approval-state-store", (client.username, method, key, refused)
                assert refused["task_id"] == task_id
                assert GATE in refused["detail"]  # names the gate and what to do instead
    for task_id in tasks:
        assert _state_store(api, ISOLATE, run_id, task_id) == {}  # nothing was stored
        cursor = f"dags/{ISOLATE}/dagRuns/{run_id}/taskInstances/{task_id}/state-store/cursor"
        assert _status(lambda: api.get(cursor)) == 404  # noqa: B023 (called at once)
    assert api.task_states(ISOLATE, run_id) == states
    assert _actions(stack, "acme") == before

    with AuditStore(stack.audit_dsn) as audit:
        _, story = audit.trace(run_id)
    refusals = [
        (r["actor"], r["task_id"], r["details"]["method"], r["details"]["path"].split("/state-store")[1])
        for r in story
        if r["kind"] == "policy.violation" and r["details"].get("rule") == "approval-state-store"
    ]
    assert sorted(refusals) == sorted(
        (user, task_id, method, key)
        for user in (OP, api.username)
        for task_id in tasks
        for method, key, _, _ in STATE_STORE_WRITES
    )

    # The control: the same routes on a SOC DAG without a gate reach Airflow, for the same people.
    control = op.trigger(UNGATED)
    assert api.wait_for_run(UNGATED, control, timeout=180)["state"] == "success"
    store = f"dags/{UNGATED}/dagRuns/{control}/taskInstances/keep_cursor/state-store"
    assert _state_store(api, UNGATED, control, "keep_cursor") == {
        "cursor": {"page": 3, "last_alert": "EDR-0042"}
    }
    op.request("PUT", f"{store}/cursor", json={"value": {"page": 99}}, expect=(204,))
    op.request("PUT", f"{store}/resume/job_id", json={"value": "job-1", "expires_at": None}, expect=(204,))
    api.request("PATCH", f"{store}/cursor", json={"value": {"page": 100}})
    assert _state_store(api, UNGATED, control, "keep_cursor") == {
        "cursor": {"page": 100},
        "resume/job_id": "job-1",
    }
    # Deleting is Airflow's "delete" on the DAG, which the operator role does not have (its DAGs'
    # access_control: read and edit): refused by the auth manager, not the door; an admin may.
    refused = op.request("DELETE", f"{store}/cursor", expect=(403,))
    assert "rule" not in refused
    assert _state_store(api, UNGATED, control, "keep_cursor") == {
        "cursor": {"page": 100},
        "resume/job_id": "job-1",
    }
    api.request("DELETE", f"{store}/cursor", expect=(204,))
    assert _state_store(api, UNGATED, control, "keep_cursor") == {"resume/job_id": "job-1"}
    api.request("DELETE", store, expect=(204,))
    assert _state_store(api, UNGATED, control, "keep_cursor") == {}

    users[ONCALL].answer(ISOLATE, run_id, GATE, "Reject", comment="state store attack drill")
    api.wait_for_run(ISOLATE, run_id, timeout=180)
    assert api.task_states(ISOLATE, run_id)["isolate_device"] == "skipped"
    assert _actions(stack, "acme") == before
    print(f"state store attacks + control: {time.monotonic() - started:.1f} s")
