"""SOC account containment end to end: an alert, a real IAM staff user (moto, the tenant's
account), the SOC lead's approval, keys deactivated and console password removed, evidence in
Request Tracker. Checked in IAM and Request Tracker: four more runs for the same alert change
nothing and reuse the ticket; an approval drill nobody answers escalates and times out, keys still
active; a service account fails before any ticket exists.
"""

from __future__ import annotations

from typing import Any

import pytest

from devstack.api_client import AirflowApi
from devstack.aws_seed import account_client
from devstack.config import REGION
from devstack.stack import Stack
from include.connectors.ticketing.request_tracker import RequestTrackerHook
from include.policies.tenants import tenant_account_id
from tests.e2e.conftest import sign_up
from tests.e2e.drills import check_unanswered_drill

DAG = "soc_disable_account"
GATE = "approve_identity_disable"
USERS = {"dora_soc_op": ["soc_operator"], "dirk_soc_oncall": ["soc_oncall"]}


@pytest.fixture(scope="module")
def users(stack: Stack, api: AirflowApi) -> dict[str, AirflowApi]:
    api.wait_for_dags({DAG})
    return sign_up(stack, USERS)


@pytest.fixture(scope="module", autouse=True)
def drill(stack: Stack, users: dict[str, AirflowApi]) -> dict[str, Any]:
    """The approval drill nobody answers, triggered as the module starts (an early drill,
    tests/e2e/conftest.py); its test, last in the module, checks the finished run."""
    iam = _iam(stack)
    iam.create_user(UserName="trudy.e2e", Path="/staff/")
    key = iam.create_access_key(UserName="trudy.e2e")["AccessKey"]["AccessKeyId"]
    run_id = users["dora_soc_op"].trigger(DAG, {**_alert("trudy.e2e", "SIEM-9003"), "approval_drill": True})
    return {"key": key, "run_id": run_id}


def _iam(stack: Stack) -> Any:
    return account_client("iam", tenant_account_id("globex"), stack.profile.moto_url, REGION)


def _alert(account: str, alert_id: str) -> dict[str, Any]:
    return {"account": account, "tenant": "globex", "severity": "high", "alert_id": alert_id}


def test_disable_then_the_same_alert_four_more_times_changes_nothing(
    stack: Stack, api: AirflowApi, users: dict[str, AirflowApi], rt: RequestTrackerHook
) -> None:
    iam = _iam(stack)
    iam.create_user(UserName="mallory.e2e", Path="/staff/")
    key = iam.create_access_key(UserName="mallory.e2e")["AccessKey"]["AccessKeyId"]
    iam.create_login_profile(UserName="mallory.e2e", Password="Initial-Pw-1!")

    runs = []
    for _ in range(5):  # SCALE-3: the same alert five times
        run_id = users["dora_soc_op"].trigger(DAG, _alert("mallory.e2e", "SIEM-9001"))
        request = users["dirk_soc_oncall"].wait_for_request(DAG, run_id, GATE)
        assert "mallory.e2e" in request["body"]
        users["dirk_soc_oncall"].answer(DAG, run_id, GATE, "Approve", comment="credential stuffing")
        assert api.wait_for_run(DAG, run_id, timeout=180)["state"] == "success"
        runs.append(run_id)

    keys = iam.list_access_keys(UserName="mallory.e2e")["AccessKeyMetadata"]
    assert [(k["AccessKeyId"], k["Status"]) for k in keys] == [(key, "Inactive")]
    with pytest.raises(iam.exceptions.NoSuchEntityException):
        iam.get_login_profile(UserName="mallory.e2e")
    assert iam.get_user(UserName="mallory.e2e")["User"]["Path"] == "/staff/"  # kept
    assert [api.xcom(DAG, r, "disable_account")["changed"] for r in runs] == [
        True,
        False,
        False,
        False,
        False,
    ]
    tickets = {str(api.xcom(DAG, r, "open_ticket")["id"]) for r in runs}
    assert len(tickets) == 1
    assert {api.xcom(DAG, r, "evidence")["entry_id"] for r in runs} == {
        api.xcom(DAG, runs[0], "evidence")["entry_id"]
    }
    assert len(rt._search("Subject LIKE 'SIEM-9001'", "test_search")) == 1


def test_a_service_account_fails_before_any_ticket(
    stack: Stack, api: AirflowApi, users: dict[str, AirflowApi], rt: RequestTrackerHook
) -> None:
    _iam(stack).create_user(UserName="ci-deployer.e2e", Path="/service/")
    run_id = users["dora_soc_op"].trigger(DAG, _alert("ci-deployer.e2e", "SIEM-9002"))
    assert api.wait_for_run(DAG, run_id, timeout=120)["state"] == "failed"
    states = api.task_states(DAG, run_id)
    assert states["inspect_account"] == "failed"
    assert states["open_ticket"] == "upstream_failed"
    assert rt._search("Subject LIKE 'SIEM-9002'", "test_search") == []


def test_rejection_leaves_the_account_as_it_is(
    stack: Stack, api: AirflowApi, users: dict[str, AirflowApi]
) -> None:
    iam = _iam(stack)
    iam.create_user(UserName="victor.e2e", Path="/staff/")
    key = iam.create_access_key(UserName="victor.e2e")["AccessKey"]["AccessKeyId"]
    iam.create_login_profile(UserName="victor.e2e", Password="Initial-Pw-2!")
    run_id = users["dora_soc_op"].trigger(DAG, _alert("victor.e2e", "SIEM-9004"))
    users["dirk_soc_oncall"].wait_for_request(DAG, run_id, GATE)
    users["dirk_soc_oncall"].answer(DAG, run_id, GATE, "Reject", comment="false positive: pentest")
    api.wait_for_run(DAG, run_id, timeout=180)
    assert api.task_states(DAG, run_id)["disable_account"] == "skipped"
    keys = iam.list_access_keys(UserName="victor.e2e")["AccessKeyMetadata"]
    assert [(k["AccessKeyId"], k["Status"]) for k in keys] == [(key, "Active")]
    assert iam.get_login_profile(UserName="victor.e2e")["LoginProfile"]["UserName"] == "victor.e2e"


def test_drill_nobody_answers_escalates_then_rejects_and_the_key_stays_active(
    stack: Stack, api: AirflowApi, drill: dict[str, Any], rt: RequestTrackerHook
) -> None:
    iam, key, run_id = _iam(stack), drill["key"], drill["run_id"]
    check_unanswered_drill(
        stack,
        api,
        rt,
        dag_id=DAG,
        run_id=run_id,
        gate=GATE,
        privileged="disable_account",
        domain="soc",
        action="identity-disable",
    )
    keys = iam.list_access_keys(UserName="trudy.e2e")["AccessKeyMetadata"]
    assert [(k["AccessKeyId"], k["Status"]) for k in keys] == [(key, "Active")]  # IAM: unchanged
