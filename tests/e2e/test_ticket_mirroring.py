"""Customers' own ticketing on the real stack (issue 22, item 4): a SOC run for the Jira tenant
(globex, tenants.yaml), 5 times for one alert (all at once), leaves one RT ticket and one mirrored
issue with the evidence in its project of the Jira stand-in, none in another tenant's project (the
stand-in has a site per customer; acme's stays empty: acme is on RT only). That an RT-only tenant's
steps are not mirrored at all is tests/unit/connectors/ticketing/test_mirror.py's."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
import requests

from devstack.api_client import AirflowApi
from devstack.stack import Stack
from devstack.standins import jira
from include.audit.store import AuditStore
from include.connectors.ticketing.mirror import mirror_key

DAG = "e2e_soc_ticket_mirror"
RUNS = 5


@pytest.fixture(scope="module", autouse=True)
def mirror_dag(api: AirflowApi) -> None:
    api.wait_for_dags({DAG})


def _issues(stack: Stack) -> list[dict[str, Any]]:
    response = requests.get(f"{jira.base_url(stack.profile)}/_issues", timeout=10)
    response.raise_for_status()
    issues: list[dict[str, Any]] = response.json()["issues"]
    return issues


def test_five_soc_runs_leave_one_mirrored_issue_with_the_evidence(api: AirflowApi, stack: Stack) -> None:
    alert = f"mirror-{uuid.uuid4().hex[:10]}"
    before = {issue["key"] for issue in _issues(stack)}
    # Five runs of one alert at once: each finds what another created (the creates are locked per
    # key in the shared store).
    run_ids = [api.trigger(DAG, {"tenant": "globex", "alert_id": alert}) for _ in range(RUNS)]
    for run_id in run_ids:
        assert api.wait_for_run(DAG, run_id, timeout=150)["state"] == "success", run_id

    opened = [api.xcom(DAG, run_id, "open_ticket") for run_id in run_ids]
    assert len({o["id"] for o in opened}) == 1  # the MSSP's own record: one RT ticket
    assert sorted(o["created"] for o in opened) == [False] * (RUNS - 1) + [True]
    rt_id = opened[0]["id"]
    results = {
        task: [api.xcom(DAG, r, task)["mirror"] for r in run_ids] for task in ("open_ticket", "evidence")
    }
    results["open_ticket"] = [o["mirror"] for o in opened]
    issue_keys = {m["issue"] for ms in results.values() for m in ms}
    assert len(issue_keys) == 1, results
    for task, mirrored in results.items():
        assert sorted(m["created"] for m in mirrored) == [False] * (RUNS - 1) + [True], task
        assert {(m["system"], m["project"]) for m in mirrored} == {("jira", "GLOBEX")}
    resolved = [api.xcom(DAG, r, "resolve")["mirror"] for r in run_ids]
    assert all("error" not in m for m in resolved), resolved

    new = [issue for issue in _issues(stack) if issue["key"] not in before]
    assert [issue["key"] for issue in new] == list(issue_keys)
    (issue,) = new
    assert issue["project"] == "GLOBEX"
    assert mirror_key("globex", rt_id) in issue["labels"]
    assert "tenant:globex" in issue["labels"]
    # The issue carries the RT ticket's correlation id (the story of the MSSP's record), which is the
    # run that created the RT ticket; another run may have won the Jira create.
    rt_creator = next(o for o in opened if o["created"])
    assert f"correlation:{rt_creator['correlation_id']}" in issue["labels"]
    creator = next(o for o in opened if o["mirror"]["created"])
    assert [name.split("__", 1)[1] for name in issue["attachments"]] == ["signin-log.txt"]
    assert issue["status"] == "Done"
    # Nothing in another tenant's project.
    assert not [i for i in _issues(stack) if i["project"] != "GLOBEX"]

    # Each mirrored step is in the audit trail, and the tenant's API token is not.
    with AuditStore(stack.audit_dsn) as audit:
        _, story = audit.trace(creator["correlation_id"])
    mirrored_ops = {
        (r["details"]["operation"], r["details"].get("created"))
        for r in story
        if r["kind"] == "side_effect" and r["details"].get("system") == "jira"
    }
    assert ("mirror_create_ticket", True) in mirrored_ops
    assert {"mirror_attach", "mirror_update"} <= {op for op, _ in mirrored_ops}
    assert jira.api_token(stack.profile, "globex") not in json.dumps(story)
