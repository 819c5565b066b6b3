"""HR onboarding end to end: the UI form's record validated with Great Expectations, the HR lead's
approval, then a real IAM Identity Center user (moto, in the staff account secops) and a real
directory account (OpenLDAP), the hardware/access ticket and the hr ticket in Request Tracker, and
the manager's email (SMTP sink). Everything is checked in those systems, not in our records:
five runs for the same employee leave one of each; a record that fails validation, a rejection
and an approval nobody answers (drill) create no account.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from devstack.api_client import AirflowApi, ApiError
from devstack.stack import Stack
from devstack.standins.smtp import read_messages
from include.connectors.ldap import DirectoryHook
from include.connectors.ticketing.request_tracker import RequestTrackerHook
from include.policies.hr_roles import role_mapping
from tests.e2e.conftest import ic_groups, ic_users, sign_up, ticket_texts
from tests.e2e.test_approvals import mails_for

DAG = "hr_onboarding"
GATE = "approve_identity_admin.step_1"
STEP_2 = "approve_identity_admin.step_2"
USERS = {
    "hana_hr_op": ["hr_operator"],
    "hugo_hr_lead": ["hr_lead"],
    "stella_secofficer": ["security_officer"],
}


@pytest.fixture(scope="module")
def users(stack: Stack, api: AirflowApi) -> dict[str, AirflowApi]:
    api.wait_for_dags({DAG})
    return sign_up(stack, USERS)


@pytest.fixture(scope="module", autouse=True)
def drill(users: dict[str, AirflowApi]) -> str:
    """The approval drill nobody answers, triggered as the module starts (an early drill,
    tests/e2e/conftest.py); its test, last in the module, checks the finished run."""
    erin = record("E40005", "erin.e2e", given_name="Erin", surname="Drill")  # not Ada: no mail to count
    return users["hana_hr_op"].trigger(DAG, {**erin, "approval_drill": True})


def record(employee_id: str, uid: str, **changes: Any) -> dict[str, Any]:
    start = (datetime.now(UTC).date() + timedelta(days=14)).isoformat()
    return {
        "employee_id": employee_id,
        "given_name": "Ada",
        "surname": "Lovelace",
        "email": f"{uid}@secops.example",
        "uid": uid,
        "role": "soc-analyst",
        "manager_email": "grace.hopper@secops.example",
        "start_date": start,
        "tenant": "acme",
        **changes,
    }


def test_onboard_then_the_same_employee_four_more_times_changes_nothing(
    stack: Stack,
    api: AirflowApi,
    users: dict[str, AirflowApi],
    rt: RequestTrackerHook,
    directory: DirectoryHook,
) -> None:
    runs = []
    for _ in range(5):  # SCALE-3: the same request five times
        run_id = users["hana_hr_op"].trigger(DAG, record("E40001", "ada.e2e"))
        request = users["hugo_hr_lead"].wait_for_request(DAG, run_id, GATE)
        assert "ada.e2e" in request["body"]
        assert "soc-analysts" in request["body"]
        users["hugo_hr_lead"].answer(DAG, run_id, GATE, "Approve", comment="welcome")
        assert api.wait_for_run(DAG, run_id, timeout=240)["state"] == "success"
        runs.append(run_id)

    mapping = role_mapping("soc-analyst")
    (user,) = ic_users(stack, "ada.e2e")  # Identity Center: one user, the role's groups
    assert ic_groups(stack, user["UserId"]) == sorted(mapping.identity_center_groups)
    person = directory.get_user("ada.e2e")  # OpenLDAP: one account, the role's groups, no password
    assert person is not None
    assert person["employee_id"] == "E40001"
    assert not person["disabled"]
    assert set(mapping.directory_groups) <= set(person["groups"])
    assert [api.xcom(DAG, r, "create_identity")["created"] for r in runs] == [
        True,
        False,
        False,
        False,
        False,
    ]
    assert [api.xcom(DAG, r, "create_directory_account")["created"] for r in runs] == [True] + [False] * 4

    # Request Tracker: one hr ticket with one report, one access ticket.
    assert len(rt._search("Subject LIKE 'Onboarding Ada Lovelace (E40001)'", "test_search")) == 1
    assert len(rt._search("Subject LIKE 'Hardware and access for Ada Lovelace (E40001)'", "test_search")) == 1
    assert len({api.xcom(DAG, r, "report")["entry_id"] for r in runs}) == 1
    # SMTP: the manager was told once, by the run that created the accounts.
    to_manager = [
        m
        for m in read_messages(stack.profile.maildir)
        if "grace.hopper@secops.example" in m.rcpt_tos and "Ada Lovelace" in m.subject
    ]
    assert len(to_manager) == 1
    assert "ada.e2e" in to_manager[0].body()
    assert [api.xcom(DAG, r, "email_manager")["sent"] for r in runs] == [True, False, False, False, False]


def test_a_record_that_fails_validation_goes_to_the_hr_ticket_and_creates_nothing(
    stack: Stack,
    api: AirflowApi,
    users: dict[str, AirflowApi],
    rt: RequestTrackerHook,
    directory: DirectoryHook,
) -> None:
    hr_ticket = rt.create_ticket(
        queue="hr",
        subject="New starter: Bob Builder",
        body="Please onboard Bob.",
        idempotency_key="e2e-bob",
        correlation_id="e2e-bob",
    )
    bad = record("E40002", "bob.e2e", email="bob.builder@gmail.com", hr_ticket=str(hr_ticket.id))
    run_id = users["hana_hr_op"].trigger(DAG, bad)
    assert api.wait_for_run(DAG, run_id, timeout=180)["state"] == "failed"
    states = api.task_states(DAG, run_id)
    assert states["validate_record"] == "failed"
    assert states["create_identity"] == "upstream_failed"
    assert ic_users(stack, "bob.e2e") == []
    assert directory.get_user("bob.e2e") is None
    comments = " ".join(ticket_texts(rt, str(hr_ticket.id)))
    assert "Employee record validation" in comments
    assert "bob.builder@gmail.com" in comments
    assert "secops.example" in comments


def test_bad_form_input_is_refused_before_a_run_exists(users: dict[str, AirflowApi]) -> None:
    missing = record("E40003", "carol.e2e")
    del missing["start_date"]
    with pytest.raises(ApiError) as refused:
        users["hana_hr_op"].trigger(DAG, missing)
    assert "start_date" in str(refused.value)
    with pytest.raises(ApiError) as refused:
        users["hana_hr_op"].trigger(DAG, record("E40003", "carol.e2e", role="astronaut"))
    assert "astronaut" in str(refused.value) or "role" in str(refused.value)


def test_rejected_onboarding_creates_no_account(
    stack: Stack, api: AirflowApi, users: dict[str, AirflowApi], directory: DirectoryHook
) -> None:
    run_id = users["hana_hr_op"].trigger(DAG, record("E40004", "dave.e2e"))
    users["hugo_hr_lead"].wait_for_request(DAG, run_id, GATE)
    users["hugo_hr_lead"].answer(DAG, run_id, GATE, "Reject", comment="offer withdrawn")
    api.wait_for_run(DAG, run_id, timeout=180)
    states = api.task_states(DAG, run_id)
    assert states["create_identity"] == "skipped"
    assert states["create_directory_account"] == "skipped"
    assert ic_users(stack, "dave.e2e") == []
    assert directory.get_user("dave.e2e") is None


def test_a_privileged_role_also_needs_a_security_officer(
    stack: Stack, api: AirflowApi, users: dict[str, AirflowApi]
) -> None:
    mapping = role_mapping("soc-lead")
    assert mapping.privileged  # soc-leads grants containment actions in tenant accounts
    run_id = users["hana_hr_op"].trigger(DAG, record("E40006", "fay.e2e", role="soc-lead"))
    users["hugo_hr_lead"].wait_for_request(DAG, run_id, GATE)
    users["hugo_hr_lead"].answer(DAG, run_id, GATE, "Approve")
    request = users["stella_secofficer"].wait_for_request(DAG, run_id, STEP_2)
    assert "soc-leads" in request["body"]
    assert ic_users(stack, "fay.e2e") == []  # nothing before the second approval
    users["stella_secofficer"].answer(DAG, run_id, STEP_2, "Approve", comment="lead role confirmed")
    assert api.wait_for_run(DAG, run_id, timeout=240)["state"] == "success"
    (user,) = ic_users(stack, "fay.e2e")
    assert ic_groups(stack, user["UserId"]) == sorted(mapping.identity_center_groups)
    step_2 = api.xcom(DAG, run_id, STEP_2, key="approval")
    assert (step_2["responded_by"]["name"], step_2["privileged"]) == ("stella_secofficer", True)


def test_drill_nobody_answers_escalates_then_rejects_and_creates_nothing(
    stack: Stack, api: AirflowApi, drill: str, directory: DirectoryHook
) -> None:
    assert api.wait_for_run(DAG, drill, timeout=240)["state"] == "success"
    assert api.task_states(DAG, drill)["create_identity"] == "skipped"
    approval = api.xcom(DAG, drill, GATE, key="approval")
    assert approval["outcome"] == "timed_out"
    escalations = [m for m in mails_for(stack, approval["correlation_id"]) if "[Escalation]" in m.subject]
    assert len(escalations) == 1
    assert ic_users(stack, "erin.e2e") == []
    assert directory.get_user("erin.e2e") is None
