"""An approved change that FAILS tells its ticket, outside SOC too (test_soc_failed_change.py is SOC's).

Two workflows, each with the target system refusing the approved step (the stand-in's fault
switch, turned on while the run waits at its gate, off again in a ``finally``):

- ``hr_offboarding``: IAM Identity Center denies the offboarding role its writes (the devstack's
  moto server, ``POST /_faults``: devstack/standins/moto_server.py). The HR lead and the security
  officer approve; ``disable_identity`` fails at once; the directory lock and the tenant keys (the
  run's other approved steps) go ahead.
- ``invoicing_milestone_invoice``: Business Central refuses the new invoice (its stand-in's
  ``POST /_faults``: devstack/standins/erp.py). The controller approves; ``create_invoice`` fails
  at once; its ``report_failure`` comment (invoicing's own, with the reason) is the ticket's word.

What whoever works the ticket expects, read in the real systems (Request Tracker, moto, the ERP's
API) and the audit trail, not in our records:

- the run fails at the privileged step at once (a refusal is a PermanentError: no retries);
- the ticket gets exactly one comment saying the approved step failed, naming it and the run;
- nothing half-done in the target (the Identity Center user keeps its groups and is not disabled;
  no invoice with the milestone's reference);
- the audit trail has the verified approval, ``task.finished`` failed for the step and no
  ``side_effect`` record of it;
- once the fault is off, clearing the step runs it on the recorded approval (nobody is asked
  again): the change is made exactly once and the failure comment is not repeated.

One scenario per workflow (module fixtures), several tests reading each.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from devstack.api_client import AirflowApi
from devstack.aws_seed import account_client
from devstack.config import REGION
from devstack.invoicing import erp_base_url
from devstack.stack import Stack
from include.audit.store import AuditStore
from include.connectors.ldap import DirectoryHook
from include.connectors.ticketing.request_tracker import RequestTrackerHook
from include.policies.tenants import platform_account_id
from tests.e2e.conftest import ic_groups, ic_users, sign_up, ticket_texts
from tests.e2e.test_hr_offboarding import form, leaver
from tests.e2e.test_invoicing_milestone import LINES, BusinessCentral, milestone, put_export, tickets

HR_DAG = "hr_offboarding"
HR_STEP_1 = "approve_identity_disable.step_1_hr_lead"
HR_STEP_2 = "approve_identity_disable.step_2_security_officer"
HR_STEP = "disable_identity"
UID, EMPLOYEE = "ivo.e2e", "E40077"
HR_OP, HR_LEAD, SEC = "ole_fc_hr_op", "lea_fc_hr_lead", "sid_fc_secofficer"

INV_DAG = "invoicing_milestone_invoice"
INV_GATE = "approve_invoice_post"
INV_STEP = "create_invoice"
CONTRACT = "CT-E2E-700"
REFERENCE = f"ACME/{CONTRACT}/M1"
PSA, CONTROLLER = "pit_fc_psa_service", "fia_fc_finance"

USERS = {
    HR_OP: ["hr_operator"],
    HR_LEAD: ["hr_lead"],
    SEC: ["security_officer"],
    PSA: ["invoicing_operator"],
    CONTROLLER: ["finance_controller"],
}
FAILED_OR_NOT_RUN = "failed or could not run"


@pytest.fixture(scope="module")
def users(stack: Stack, api: AirflowApi) -> dict[str, AirflowApi]:
    api.wait_for_dags({HR_DAG, INV_DAG})
    return sign_up(stack, USERS)


@pytest.fixture(scope="module")
def audit(stack: Stack) -> Iterator[AuditStore]:
    with AuditStore(stack.audit_dsn) as store:
        yield store


def _story(audit: AuditStore, run_id: str) -> list[dict[str, Any]]:
    _, story = audit.trace(run_id)
    return list(story)


def _try_number(api: AirflowApi, dag_id: str, run_id: str, task_id: str) -> int:
    return int(api.get(f"dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}")["try_number"])


def _finished(story: list[dict[str, Any]], task_id: str) -> list[str]:
    return [r["details"]["state"] for r in story if r["kind"] == "task.finished" and r["task_id"] == task_id]


def _clear(client: AirflowApi, dag_id: str, run_id: str, task_id: str) -> set[str]:
    cleared = client.request(
        "POST",
        f"dags/{dag_id}/clearTaskInstances",
        json={
            "dry_run": False,
            "dag_run_id": run_id,
            "task_ids": [task_id],
            "include_downstream": True,
            "only_failed": False,
        },
    )
    return {ti["task_id"] for ti in cleared["task_instances"]}


def _switch(url: str, fault: dict[str, Any] | None) -> None:
    """Turn a stand-in's fault on (``fault``) or every fault off (None)."""
    if fault is None:
        requests.delete(f"{url}/_faults", timeout=10).raise_for_status()
    else:
        requests.post(f"{url}/_faults", json=fault, timeout=10).raise_for_status()


# --- HR offboarding: Identity Center denies the disable ------------------------------------------
IDENTITY_WRITES = {
    "service": "identitystore",
    "mode": "denied",
    # its writes only: the steps' (and this test's) reads go on; the first write is refused, so
    # nothing is half-done
    "operations": ["DeleteGroupMembership", "UpdateUser"],
}


def _ic_side_effects(story: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        r["details"]
        for r in story
        if r["kind"] == "side_effect" and r["details"].get("system") == "aws-identity-center"
    ]


@pytest.fixture(scope="module")
def offboarding(
    stack: Stack, api: AirflowApi, users: dict[str, AirflowApi], directory: DirectoryHook, audit: AuditStore
) -> dict[str, Any]:
    """A leaver approved by both, then failed at the Identity Center step: what the tests read."""
    before = leaver(stack, directory, UID, EMPLOYEE)
    started = time.monotonic()
    run_id = users[HR_OP].trigger(HR_DAG, form(UID, EMPLOYEE))
    users[HR_LEAD].wait_for_request(HR_DAG, run_id, HR_STEP_1)
    _switch(stack.profile.moto_url, IDENTITY_WRITES)  # the cause, while the run waits at its gate
    try:
        users[HR_LEAD].answer(HR_DAG, run_id, HR_STEP_1, "Approve", comment="last day today")
        users[SEC].wait_for_request(HR_DAG, run_id, HR_STEP_2)
        users[SEC].answer(HR_DAG, run_id, HR_STEP_2, "Approve", comment="ok")
        run = api.wait_for_run(HR_DAG, run_id, timeout=240)
        print(f"offboarding approved, failed: {time.monotonic() - started:.1f} s")
        (user,) = ic_users(stack, UID)
        return {
            **before,
            "run_id": run_id,
            "run": run,
            "states": api.task_states(HR_DAG, run_id),
            "ic_user": user,
            "ic_groups": ic_groups(stack, before["user_id"]),
            "story": _story(audit, run_id),
            "ticket_id": str(api.xcom(HR_DAG, run_id, "hr_ticket")["id"]),
        }
    finally:
        _switch(stack.profile.moto_url, None)


def test_offboarding_fails_at_the_identity_step_at_once(api: AirflowApi, offboarding: dict[str, Any]) -> None:
    assert offboarding["run"]["state"] == "failed"
    states = offboarding["states"]
    assert (states[HR_STEP_1], states[HR_STEP_2], states[HR_STEP]) == ("success", "success", "failed")
    # the run's other approved steps are not held back by it
    assert (states["disable_directory_account"], states["revoke_tenant_keys"]) == ("success", "success")
    assert (states["evidence"], states["change_failed"]) == ("upstream_failed", "success")
    assert _try_number(api, HR_DAG, offboarding["run_id"], HR_STEP) == 1  # failed fast, not retried


def test_offboarding_left_identity_center_as_it_was(offboarding: dict[str, Any]) -> None:
    assert offboarding["ic_user"]["UserId"] == offboarding["user_id"]
    assert offboarding["ic_user"].get("UserType") != "Disabled"
    assert offboarding["ic_groups"] == ["all-staff", "soc-analysts"]


def test_offboarding_ticket_says_which_approved_step_failed(
    rt: RequestTrackerHook, offboarding: dict[str, Any]
) -> None:
    texts = ticket_texts(rt, offboarding["ticket_id"])
    told = [t for t in texts if FAILED_OR_NOT_RUN in t]
    assert len(told) == 1, texts
    assert told[0].startswith(
        f"The approved step {HR_STEP} failed or could not run in run {offboarding['run_id']}"
    )
    assert "disable_directory_account" not in told[0]  # that one ran
    assert "AccessDenied" not in told[0]  # what to do, not the error's text
    assert not [t for t in texts if t.startswith(f"Offboarded {UID}")]  # no evidence of a change not made


def test_offboarding_audit_has_the_approval_and_the_failed_step(offboarding: dict[str, Any]) -> None:
    story, run_id = offboarding["story"], offboarding["run_id"]
    answered = [r for r in story if r["kind"] == "approval.answered"]
    assert sorted(r["actor"] for r in answered) == sorted([HR_LEAD, SEC])
    assert len([r for r in story if r["kind"] == "approval.verified" and r["task_id"] == HR_STEP]) == 1
    finished = [r for r in story if r["kind"] == "task.finished" and r["task_id"] == HR_STEP]
    assert [r["details"]["state"] for r in finished] == ["failed"]
    assert finished[0]["details"]["error_type"]
    assert _ic_side_effects(story) == []  # nothing changed in Identity Center, nothing claimed
    (run_end,) = [r for r in story if r["kind"] == "run.finished"]
    assert (run_end["details"]["state"], run_end["details"]["tasks"][HR_STEP]) == ("failed", "failed")
    assert {r["run_id"] for r in story if r["run_id"]} == {run_id}


def test_offboarding_rerun_after_the_fault_disables_exactly_once(
    stack: Stack,
    api: AirflowApi,
    users: dict[str, AirflowApi],
    rt: RequestTrackerHook,
    audit: AuditStore,
    offboarding: dict[str, Any],
) -> None:
    started = time.monotonic()
    run_id = offboarding["run_id"]
    assert _clear(users[HR_OP], HR_DAG, run_id, HR_STEP) == {HR_STEP, "evidence", "change_failed"}
    assert api.wait_for_run(HR_DAG, run_id, timeout=240)["state"] == "success"
    assert api.task_states(HR_DAG, run_id)["change_failed"] == "skipped"
    print(f"offboarding re-run after the fix: {time.monotonic() - started:.1f} s")

    assert _try_number(api, HR_DAG, run_id, HR_STEP) == 2
    (user,) = ic_users(stack, UID)
    assert user.get("UserType") == "Disabled"
    assert ic_groups(stack, user["UserId"]) == []

    story = _story(audit, run_id)
    assert sorted(r["actor"] for r in story if r["kind"] == "approval.answered") == sorted([HR_LEAD, SEC])
    assert len([r for r in story if r["kind"] == "approval.verified" and r["task_id"] == HR_STEP]) == 2
    assert [(d["operation"], d["created"]) for d in _ic_side_effects(story)] == [("disable-user", True)]
    assert _finished(story, HR_STEP) == ["failed", "success"]

    texts = ticket_texts(rt, offboarding["ticket_id"])
    assert len([t for t in texts if t.startswith(f"Offboarded {UID}")]) == 1
    assert len([t for t in texts if FAILED_OR_NOT_RUN in t]) == 1  # the failure's, once


# --- Invoicing: Business Central refuses the invoice --------------------------------------------
ERP_REFUSES = {
    "mode": "refuse",
    "times": 1000,  # until switched off
    "method": "POST",
    "path_contains": "/salesInvoices",
    "status": 400,
    "message": "Customer 10000 is blocked for invoicing.",
}


def _invoice_side_effects(story: list[dict[str, Any]]) -> list[dict[str, Any]]:
    operations = ("create_invoice", "post_invoice", "archive_invoice")
    return [
        r["details"] for r in story if r["kind"] == "side_effect" and r["details"]["operation"] in operations
    ]


@pytest.fixture(scope="module")
def invoicing(
    stack: Stack, api: AirflowApi, users: dict[str, AirflowApi], rt: RequestTrackerHook, audit: AuditStore
) -> dict[str, Any]:
    """A milestone approved by the controller, then refused by the ERP: what the tests read."""
    s3 = account_client("s3", platform_account_id(), stack.profile.moto_url, REGION)
    erp = BusinessCentral(stack)
    key = put_export(stack, s3, f"exports/acme/{CONTRACT}/M1.csv", LINES)
    started = time.monotonic()
    run_id = users[PSA].trigger(INV_DAG, milestone(CONTRACT, key))
    users[CONTROLLER].wait_for_request(INV_DAG, run_id, INV_GATE, timeout=180)
    _switch(erp_base_url(stack.profile), ERP_REFUSES)  # the cause, while the run waits at its gate
    try:
        users[CONTROLLER].answer(INV_DAG, run_id, INV_GATE, "Approve", comment="milestone signed off")
        run = api.wait_for_run(INV_DAG, run_id, timeout=240)
        print(f"invoice approved, refused: {time.monotonic() - started:.1f} s")
        return {
            "erp": erp,
            "run_id": run_id,
            "run": run,
            "states": api.task_states(INV_DAG, run_id),
            "invoices": erp.invoices(REFERENCE),
            "story": _story(audit, run_id),
            "ticket_id": str(api.xcom(INV_DAG, run_id, "open_ticket")["id"]),
        }
    finally:
        _switch(erp_base_url(stack.profile), None)


def test_invoicing_fails_at_the_erp_step_at_once(api: AirflowApi, invoicing: dict[str, Any]) -> None:
    assert invoicing["run"]["state"] == "failed"
    states = invoicing["states"]
    assert (states[INV_GATE], states[INV_STEP], states["post_invoice"], states["report_failure"]) == (
        "success",
        "failed",
        "upstream_failed",
        "success",
    )
    assert _try_number(api, INV_DAG, invoicing["run_id"], INV_STEP) == 1  # failed fast, not retried


def test_invoicing_left_the_erp_without_the_invoice(invoicing: dict[str, Any]) -> None:
    assert invoicing["invoices"] == []


def test_invoicing_ticket_says_the_step_failed_once(
    rt: RequestTrackerHook, invoicing: dict[str, Any]
) -> None:
    texts = ticket_texts(rt, invoicing["ticket_id"])
    told = [t for t in texts if f"stopped at step '{INV_STEP}'" in t]
    assert len(told) == 1, texts
    assert "Customer 10000 is blocked for invoicing." in told[0]  # finance's ticket gets the ERP's reason
    assert invoicing["run_id"] in told[0]
    (ticket,) = tickets(rt, REFERENCE)
    assert ticket.status != "resolved"


def test_invoicing_audit_has_the_approval_and_the_failed_step(invoicing: dict[str, Any]) -> None:
    story = invoicing["story"]
    assert [r["actor"] for r in story if r["kind"] == "approval.answered"] == [CONTROLLER]
    assert len([r for r in story if r["kind"] == "approval.verified" and r["task_id"] == INV_STEP]) == 1
    assert _finished(story, INV_STEP) == ["failed"]
    assert _invoice_side_effects(story) == []
    (run_end,) = [r for r in story if r["kind"] == "run.finished"]
    assert (run_end["details"]["state"], run_end["details"]["tasks"][INV_STEP]) == ("failed", "failed")


def test_invoicing_rerun_after_the_fault_posts_exactly_once(
    api: AirflowApi,
    users: dict[str, AirflowApi],
    rt: RequestTrackerHook,
    audit: AuditStore,
    invoicing: dict[str, Any],
) -> None:
    started = time.monotonic()
    run_id = invoicing["run_id"]
    cleared = _clear(users[PSA], INV_DAG, run_id, INV_STEP)
    assert {
        INV_STEP,
        "post_invoice",
        "archive_invoice",
        "report",
        "close_ticket",
        "report_failure",
    } <= cleared
    assert api.wait_for_run(INV_DAG, run_id, timeout=240)["state"] == "success"
    assert api.task_states(INV_DAG, run_id)["report_failure"] == "skipped"
    print(f"invoice re-run after the fix: {time.monotonic() - started:.1f} s")

    assert _try_number(api, INV_DAG, run_id, INV_STEP) == 2
    (invoice,) = invoicing["erp"].invoices(REFERENCE)
    assert invoice["status"] == "Open"  # posted
    assert len(invoicing["erp"].lines(invoice["id"])) == len(LINES)

    story = _story(audit, run_id)
    assert [r["actor"] for r in story if r["kind"] == "approval.answered"] == [CONTROLLER]
    assert len([r for r in story if r["kind"] == "approval.verified" and r["task_id"] == INV_STEP]) == 2
    effects = _invoice_side_effects(story)
    assert [(d["operation"], d["created"]) for d in effects if d["operation"] == "create_invoice"] == [
        ("create_invoice", True)
    ]
    assert _finished(story, INV_STEP) == ["failed", "success"]

    texts = ticket_texts(rt, invoicing["ticket_id"])
    assert len([t for t in texts if f"stopped at step '{INV_STEP}'" in t]) == 1  # not repeated
    assert len([t for t in texts if t.startswith(f"Invoice {invoice['number']} is posted")]) == 1
    (ticket,) = tickets(rt, REFERENCE)
    assert ticket.status == "resolved"
