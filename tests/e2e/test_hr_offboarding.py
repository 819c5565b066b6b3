"""HR offboarding end to end: a leaver with a real IAM Identity Center user (moto, staff account),
a directory account (OpenLDAP) and a staff IAM user with an access key in one customer tenant.
The HR lead and then a security officer (two people) approve; the identity and the directory
account are disabled, never deleted, and leave every group; the tenant key goes inactive; the
evidence lands on the hr ticket. Checked in those systems: five runs, one end state and one
evidence comment; a rejection by the security officer and an unanswered drill change nothing; an
unknown login fails before any ticket.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import requests

from devstack import directory_seed
from devstack.api_client import AirflowApi
from devstack.aws_seed import account_client
from devstack.config import REGION, STAFF_IDENTITY_STORE_ID
from devstack.stack import Stack
from include.connectors.ldap import DirectoryHook
from include.connectors.ticketing.request_tracker import RequestTrackerHook
from include.policies.access import load_access
from include.policies.tenants import tenant_account_id
from tests.e2e.conftest import ic_groups, ic_users, identity_store, sign_up, ticket_texts
from tests.e2e.test_approvals import mails_for

DAG = "hr_offboarding"
STEP_1 = "approve_identity_disable.step_1_hr_lead"
STEP_2 = "approve_identity_disable.step_2_security_officer"
USERS = {"olga_hr_op": ["hr_operator"], "lena_hr_lead": ["hr_lead"], "sam_secofficer": ["security_officer"]}


@pytest.fixture(scope="module")
def users(stack: Stack, api: AirflowApi) -> dict[str, AirflowApi]:
    api.wait_for_dags({DAG})
    return sign_up(stack, USERS)


@pytest.fixture(scope="module", autouse=True)
def drill(stack: Stack, directory: DirectoryHook, users: dict[str, AirflowApi]) -> dict[str, Any]:
    """The approval drill nobody answers, triggered as the module starts (an early drill,
    tests/e2e/conftest.py); its test, last in the module, checks the finished run."""
    before = leaver(stack, directory, "hank.e2e", "E40012")
    run_id = users["olga_hr_op"].trigger(DAG, {**form("hank.e2e", "E40012"), "approval_drill": True})
    return {**before, "run_id": run_id}


def leaver(stack: Stack, directory: DirectoryHook, uid: str, employee_id: str) -> dict[str, Any]:
    """What a leaver has: Identity Center user in two groups, directory account, acme IAM user and key."""
    directory.ensure_user(
        uid,
        given_name="Frank",
        surname="Leaver",
        email=f"{uid}@secops.example",
        employee_id=employee_id,
        groups=["staff", "soc"],
    )
    store = identity_store(stack)
    user_id = store.create_user(
        IdentityStoreId=STAFF_IDENTITY_STORE_ID,
        UserName=uid,
        DisplayName="Frank Leaver",
        Name={"GivenName": "Frank", "FamilyName": "Leaver"},
        Emails=[{"Value": f"{uid}@secops.example", "Type": "work", "Primary": True}],
    )["UserId"]
    groups = {
        g["DisplayName"]: g["GroupId"]
        for g in store.list_groups(IdentityStoreId=STAFF_IDENTITY_STORE_ID)["Groups"]
    }
    for name in ("all-staff", "soc-analysts"):
        store.create_group_membership(
            IdentityStoreId=STAFF_IDENTITY_STORE_ID, GroupId=groups[name], MemberId={"UserId": user_id}
        )
    iam = account_client("iam", tenant_account_id("acme"), stack.profile.moto_url, REGION)
    iam.create_user(UserName=uid, Path="/staff/")
    key = iam.create_access_key(UserName=uid)["AccessKey"]["AccessKeyId"]
    return {"user_id": user_id, "key": key, "iam": iam}


def approve_both(users: dict[str, AirflowApi], run_id: str) -> None:
    users["lena_hr_lead"].wait_for_request(DAG, run_id, STEP_1)
    users["lena_hr_lead"].answer(DAG, run_id, STEP_1, "Approve", comment="last day today")
    users["sam_secofficer"].wait_for_request(DAG, run_id, STEP_2)
    users["sam_secofficer"].answer(DAG, run_id, STEP_2, "Approve", comment="ok")


def form(uid: str, employee_id: str) -> dict[str, Any]:
    return {"employee_id": employee_id, "uid": uid, "last_day": "2026-12-31", "reason": "resigned"}


def test_offboard_then_the_same_leaver_four_more_times_changes_nothing(
    stack: Stack,
    api: AirflowApi,
    users: dict[str, AirflowApi],
    rt: RequestTrackerHook,
    directory: DirectoryHook,
) -> None:
    before = leaver(stack, directory, "frank.e2e", "E40010")
    # Frank also works with the orchestrator: he logs in with his directory password.
    password = directory_seed.add_person(stack.profile, "frank.e2e", ["staff", "soc", "soc-operator"])
    frank = AirflowApi(stack.profile.api_url, "frank.e2e", password)
    assert frank.get("dags", limit=1)["total_entries"] > 0
    frank_token = frank._token
    runs = []
    for _ in range(5):
        run_id = users["olga_hr_op"].trigger(DAG, form("frank.e2e", "E40010"))
        approve_both(users, run_id)
        assert api.wait_for_run(DAG, run_id, timeout=240)["state"] == "success"
        runs.append(run_id)

    (user,) = ic_users(stack, "frank.e2e")  # Identity Center: kept, disabled, in no group
    assert user["UserId"] == before["user_id"]
    assert user.get("UserType") == "Disabled"
    assert ic_groups(stack, user["UserId"]) == []
    person = directory.get_user("frank.e2e")  # directory: kept, locked, in no group
    assert person is not None
    assert person["disabled"]
    assert person["groups"] == []
    keys = before["iam"].list_access_keys(UserName="frank.e2e")["AccessKeyMetadata"]
    assert [(k["AccessKeyId"], k["Status"]) for k in keys] == [(before["key"], "Inactive")]
    assert [api.xcom(DAG, r, "disable_identity")["changed"] for r in runs] == [True] + [False] * 4
    globex = api.xcom(DAG, runs[0], "revoke_tenant_keys", map_index=1)
    assert (globex["tenant"], globex["found"]) == ("globex", False)

    (ticket,) = rt._search("Subject LIKE 'Offboarding frank.e2e (E40010)'", "test_search")
    evidence = [t for t in ticket_texts(rt, str(ticket.id)) if t.startswith("Offboarded frank.e2e")]
    assert len(evidence) == 1
    assert "lena_hr_lead" in evidence[0]
    assert "sam_secofficer" in evidence[0]
    assert "soc-analysts" in evidence[0]
    assert before["key"] in evidence[0]
    assert "Active sessions" in evidence[0]  # the steps no API can do

    # Offboarded: no login, no new token, and the token he had is refused within the leaver recheck
    # interval (access.yaml) of the lock.
    credentials = {"username": "frank.e2e", "password": password}
    login = requests.post(f"{stack.profile.api_url}/auth/token", json=credentials, timeout=30)
    assert login.status_code == 401
    deadline = time.monotonic() + load_access().recheck_interval.total_seconds() + 10
    headers = {"Authorization": f"Bearer {frank_token}"}
    while (old := requests.get(f"{stack.profile.api_url}/api/v2/dags", headers=headers, timeout=30)).ok:
        assert time.monotonic() < deadline, "the leaver's old token still works past the recheck interval"
        time.sleep(1)
    assert old.status_code == 403  # Airflow's answer to a token it cannot turn into a user


def test_security_officer_rejects_and_nothing_changes(
    stack: Stack, api: AirflowApi, users: dict[str, AirflowApi], directory: DirectoryHook
) -> None:
    before = leaver(stack, directory, "gina.e2e", "E40011")
    run_id = users["olga_hr_op"].trigger(DAG, form("gina.e2e", "E40011"))
    users["lena_hr_lead"].wait_for_request(DAG, run_id, STEP_1)
    users["lena_hr_lead"].answer(DAG, run_id, STEP_1, "Approve")
    users["sam_secofficer"].wait_for_request(DAG, run_id, STEP_2)
    users["sam_secofficer"].answer(DAG, run_id, STEP_2, "Reject", comment="legal hold: keep access")
    api.wait_for_run(DAG, run_id, timeout=180)
    assert api.task_states(DAG, run_id)["disable_identity"] == "skipped"
    assert ic_groups(stack, before["user_id"]) == ["all-staff", "soc-analysts"]
    person = directory.get_user("gina.e2e")
    assert person is not None
    assert not person["disabled"]
    assert {"staff", "soc"} <= set(person["groups"])
    keys = before["iam"].list_access_keys(UserName="gina.e2e")["AccessKeyMetadata"]
    assert [k["Status"] for k in keys] == ["Active"]


def test_unknown_login_fails_before_any_ticket(
    api: AirflowApi, users: dict[str, AirflowApi], rt: RequestTrackerHook
) -> None:
    run_id = users["olga_hr_op"].trigger(DAG, form("nobody.e2e", "E40013"))
    assert api.wait_for_run(DAG, run_id, timeout=120)["state"] == "failed"
    states = api.task_states(DAG, run_id)
    assert states["inspect_account"] == "failed"
    assert states["hr_ticket"] == "upstream_failed"
    assert rt._search("Subject LIKE 'Offboarding nobody.e2e'", "test_search") == []


def test_drill_nobody_answers_escalates_and_nothing_changes(
    stack: Stack, api: AirflowApi, drill: dict[str, Any], directory: DirectoryHook
) -> None:
    run_id = drill["run_id"]
    assert api.wait_for_run(DAG, run_id, timeout=240)["state"] == "success"
    assert api.task_states(DAG, run_id)["disable_identity"] == "skipped"
    approval = api.xcom(DAG, run_id, STEP_1, key="approval")
    assert approval["outcome"] == "timed_out"
    assert [m for m in mails_for(stack, approval["correlation_id"]) if "[Escalation]" in m.subject]
    assert ic_groups(stack, drill["user_id"]) == ["all-staff", "soc-analysts"]
    person = directory.get_user("hank.e2e")
    assert person is not None
    assert not person["disabled"]
