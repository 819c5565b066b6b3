"""A privileged step that FAILS after its approval, end to end (SOC containment on moto EC2).

While a ``soc_contain_host`` run waits at its gate, the host's quarantine security group loses its
quarantine tag in the tenant's EC2 (someone "tidied up" the VPC): the approved isolation then
finds no quarantine group and refuses. What a SOC analyst expects, checked in the target systems
and the audit trail, not in our own records:

- the run fails (not success) at the privileged step, at once (no retry can make the group exist);
- nothing half-done in EC2: the instance keeps its groups and gets no isolation tags;
- the audit trail tells who approved, that the approval was verified, and which step failed (its
  error type: never the exception's text) and that the run failed; no credential in any record;
- the customer's incident (the write-back teardown) says the run stopped at the step, and the SOC
  ticket says the change failed (``change_failed``, include/workflows/soc.py: found missing by
  this test);
- once the group is tagged again, clearing the failed step (and what follows it) runs it again on
  the recorded approval (nobody is asked again): the host is isolated exactly once, one evidence
  comment on the ticket, one ``side_effect`` record, the incident told "contained" once.

One scenario (module fixture), several tests reading it: each assertion group fails on its own.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from devstack.api_client import AirflowApi
from devstack.stack import Stack
from devstack.standins import microsoft as ms
from include.audit.store import AuditStore
from include.connectors.ec2 import ISOLATED_BY_TAG, PREVIOUS_GROUPS_TAG, QUARANTINE_TAG, QUARANTINE_VALUE
from include.connectors.ticketing.request_tracker import RequestTrackerHook
from tests.e2e.conftest import sign_up, ticket_texts
from tests.e2e.test_attacks_rest import _incident
from tests.e2e.test_soc_contain_host import _groups_and_tags, _host

DAG = "soc_contain_host"
GATE = "approve_host_isolate"
STEP = "isolate_host"
TENANT, ALERT, INCIDENT = "globex", "EDR-7301", "1001"
OP, LEAD = "fion_soc_op", "finn_soc_lead"
USERS = {OP: ["soc_operator"], LEAD: ["soc_lead"]}


def _marked(stack: Stack, outcome: str) -> list[str]:
    """The incident's comments carrying this alert's marker for ``outcome``."""
    comments = _incident(stack, TENANT, INCIDENT)["comments"]
    return [
        c["comment"] for c in comments if c["comment"].endswith(f"[orchestrator:{DAG}:{ALERT}:{outcome}]")
    ]


def _story(stack: Stack, run_id: str) -> list[dict[str, Any]]:
    with AuditStore(stack.audit_dsn) as audit:
        _, story = audit.trace(run_id)
    return list(story)


def _try_number(api: AirflowApi, run_id: str, task_id: str) -> int:
    return int(api.get(f"dags/{DAG}/dagRuns/{run_id}/taskInstances/{task_id}")["try_number"])


@pytest.fixture(scope="module")
def failed(stack: Stack, api: AirflowApi) -> dict[str, Any]:
    """A run approved, then failed at the isolation: what the tests read before the re-run."""
    api.wait_for_dags({DAG})
    users = sign_up(stack, USERS)
    started = time.monotonic()
    host = _host(stack, TENANT)
    quarantine_tag = [{"Key": QUARANTINE_TAG, "Value": QUARANTINE_VALUE}]
    incident_before = _incident(stack, TENANT, INCIDENT)
    run_id = users[OP].trigger(
        DAG,
        {
            "host": host["id"],
            "tenant": TENANT,
            "severity": "critical",
            "alert_id": ALERT,
            "incident_id": INCIDENT,
            "summary": "EDR: ransomware precursor on the host",
        },
    )
    request = users[LEAD].wait_for_request(DAG, run_id, GATE)
    assert host["quarantine"] in request["body"]  # the approver is shown the quarantine group

    host["ec2"].delete_tags(Resources=[host["quarantine"]], Tags=quarantine_tag)  # the cause
    users[LEAD].answer(DAG, run_id, GATE, "Approve", comment="contain it now")
    run = api.wait_for_run(DAG, run_id, timeout=240)
    print(f"approved, failed: {time.monotonic() - started:.1f} s")
    return {
        "users": users,
        "host": host,
        "run_id": run_id,
        "run": run,
        "states": api.task_states(DAG, run_id),
        "ec2": _groups_and_tags(host),
        "story": _story(stack, run_id),
        "ticket_id": str(api.xcom(DAG, run_id, "open_ticket")["id"]),
        "writeback": api.xcom(DAG, run_id, "incident_writeback"),
        "incident_before": incident_before,
        "quarantine_tag": quarantine_tag,
    }


def test_the_run_fails_at_the_privileged_step_at_once(api: AirflowApi, failed: dict[str, Any]) -> None:
    assert failed["run"]["state"] == "failed"
    states = failed["states"]
    assert (
        states[GATE],
        states[STEP],
        states["evidence"],
        states["change_failed"],
        states["incident_writeback"],
    ) == ("success", "failed", "upstream_failed", "success", "success")
    assert _try_number(api, failed["run_id"], STEP) == 1  # failed fast, not retried


def test_nothing_half_done_in_ec2(failed: dict[str, Any]) -> None:
    host = failed["host"]
    groups, tags = failed["ec2"]
    assert groups == [host["web"]]
    assert PREVIOUS_GROUPS_TAG not in tags
    assert ISOLATED_BY_TAG not in tags


def test_the_audit_trail_has_the_approval_and_the_failed_change(stack: Stack, failed: dict[str, Any]) -> None:
    story, run_id = failed["story"], failed["run_id"]
    answered = [r for r in story if r["kind"] == "approval.answered"]
    assert [(r["actor"], r["details"]["outcome"]) for r in answered] == [(LEAD, "approved")]
    verified = [r for r in story if r["kind"] == "approval.verified" and r["task_id"] == STEP]
    assert len(verified) == 1
    assert [a["name"] for a in verified[0]["details"]["approvers"]] == [LEAD]
    finished = [r for r in story if r["kind"] == "task.finished" and r["task_id"] == STEP]
    assert [r["details"]["state"] for r in finished] == ["failed"]
    assert finished[0]["details"]["error_type"]  # the type only, never the text
    changes = [
        r for r in story if r["kind"] == "side_effect" and r["details"].get("operation") == "isolate-host"
    ]
    assert changes == []  # nothing changed, nothing claimed
    (run_end,) = [r for r in story if r["kind"] == "run.finished"]
    assert run_end["details"]["state"] == "failed"
    assert run_end["details"]["tasks"][STEP] == "failed"
    assert {r["run_id"] for r in story if r["run_id"]} == {run_id}
    # No credential of the run's systems in any record (the incident write-back's app secret and
    # the Request Tracker password are the two this run used besides the AWS roles).
    text = json.dumps(story, default=str)
    writeback_app = ms.connection(stack.profile, TENANT, "incident-writeback")
    assert writeback_app["password"] not in text


def test_the_incident_says_the_run_stopped_at_the_step(stack: Stack, failed: dict[str, Any]) -> None:
    written = failed["writeback"]
    assert (written["incident_id"], written["outcome"], written["commented"]) == (INCIDENT, "failed", True)
    (comment,) = _marked(stack, "failed")
    assert f"the run stopped at {STEP} (failed)" in comment
    assert f"Ticket {failed['ticket_id']}" in comment
    assert _incident(stack, TENANT, INCIDENT)["status"] == failed["incident_before"]["status"]  # left


def test_the_ticket_says_the_change_failed(rt: RequestTrackerHook, failed: dict[str, Any]) -> None:
    texts = ticket_texts(rt, failed["ticket_id"])
    told = [text for text in texts if STEP in text and "failed or could not run" in text]
    assert len(told) == 1, texts
    assert failed["run_id"] in told[0]


def test_after_the_cause_is_fixed_a_rerun_isolates_exactly_once(
    stack: Stack, api: AirflowApi, rt: RequestTrackerHook, failed: dict[str, Any]
) -> None:
    started = time.monotonic()
    host, run_id, op = failed["host"], failed["run_id"], failed["users"][OP]
    host["ec2"].create_tags(Resources=[host["quarantine"]], Tags=failed["quarantine_tag"])  # fixed
    cleared = op.request(
        "POST",
        f"dags/{DAG}/clearTaskInstances",
        json={
            "dry_run": False,
            "dag_run_id": run_id,
            "task_ids": [STEP],
            "include_downstream": True,
            "only_failed": False,
        },
    )
    assert {ti["task_id"] for ti in cleared["task_instances"]} == {
        STEP,
        "evidence",
        "change_failed",
        "incident_writeback",
    }
    assert api.wait_for_run(DAG, run_id, timeout=240)["state"] == "success"
    assert api.task_states(DAG, run_id)["change_failed"] == "skipped"  # the change is in place now
    print(f"re-run after the fix: {time.monotonic() - started:.1f} s")

    result = api.xcom(DAG, run_id, STEP)
    assert (result["changed"], result["quarantine_group"]) == (True, host["quarantine"])
    assert _try_number(api, run_id, STEP) == 2
    groups, tags = _groups_and_tags(host)
    assert groups == [host["quarantine"]]
    assert tags[PREVIOUS_GROUPS_TAG] == host["web"]

    story = _story(stack, run_id)
    assert [r["actor"] for r in story if r["kind"] == "approval.answered"] == [LEAD]  # not asked again
    assert len([r for r in story if r["kind"] == "approval.verified" and r["task_id"] == STEP]) == 2
    changes = [
        r for r in story if r["kind"] == "side_effect" and r["details"].get("operation") == "isolate-host"
    ]
    assert [(r["details"]["object_id"], r["details"]["created"]) for r in changes] == [(host["id"], True)]
    clears = [r for r in story if r["kind"] == "manual.change" and r["actor"] == OP]
    assert len(clears) == 1
    finished = [r["details"]["state"] for r in story if r["kind"] == "task.finished" and r["task_id"] == STEP]
    assert finished == ["failed", "success"]

    texts = ticket_texts(rt, failed["ticket_id"])
    evidence = [t for t in texts if t.startswith(f"Host {host['id']} is in quarantine group")]
    assert len(evidence) == 1, texts
    assert f"Approved by {LEAD}" in evidence[0]
    assert len([t for t in texts if "failed or could not run" in t]) == 1  # the failure's, once
    assert len(_marked(stack, "failed")) == 1
    assert len(_marked(stack, "done")) == 1
    assert _incident(stack, TENANT, INCIDENT)["status"] == "inProgress"
