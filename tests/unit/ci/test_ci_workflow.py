""".github/workflows/ci.yml: a PR is graded by the base branch's checker, and the hardening holds."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"
PINNED = re.compile(r"^[\w.-]+/[\w.-]+@[0-9a-f]{40}$")
BASE_CHECKOUT = {"ref": "${{ github.base_ref }}", "path": ".base", "persist-credentials": False}
ON_PR = "github.event_name == 'pull_request'"


@pytest.fixture(scope="module")
def workflow() -> dict[str, Any]:
    # PyYAML reads the key `on` as True (YAML 1.1); keep the text's meaning.
    document = yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))
    document["on"] = document.pop(True)
    return document


def steps(workflow: dict[str, Any], job: str) -> list[dict[str, Any]]:
    return workflow["jobs"][job]["steps"]


def test_no_token_permission_beyond_read_and_no_pull_request_target(workflow: dict[str, Any]) -> None:
    assert workflow["permissions"] == {}
    assert "pull_request_target" not in workflow["on"]
    for name, job in workflow["jobs"].items():
        assert job["permissions"] == {"contents": "read"}, name


def test_actions_pinned_by_sha_and_checkouts_keep_no_credentials(workflow: dict[str, Any]) -> None:
    text = WORKFLOW.read_text(encoding="utf-8")
    for name in workflow["jobs"]:
        for step in steps(workflow, name):
            if "uses" in step:
                assert PINNED.match(step["uses"]), step["uses"]
                assert re.search(re.escape(step["uses"]) + r" # v\d", text), step["uses"]
            if step.get("uses", "").startswith("actions/checkout@"):
                assert step["with"]["persist-credentials"] is False, name


def test_untrusted_data_reaches_scripts_only_through_env(workflow: dict[str, Any]) -> None:
    runs = [step["run"] for name in workflow["jobs"] for step in steps(workflow, name) if "run" in step]
    assert len(runs) >= 6
    assert [run for run in runs if "${{" in run] == []


def _base_checkout(job_steps: list[dict[str, Any]]) -> dict[str, Any]:
    (checkout,) = [s for s in job_steps if s.get("with", {}).get("path") == ".base"]
    assert checkout["uses"].startswith("actions/checkout@")
    assert {key: checkout["with"][key] for key in BASE_CHECKOUT} == BASE_CHECKOUT
    return checkout


def test_policy_job_runs_the_base_checker_on_a_pull_request(workflow: dict[str, Any]) -> None:
    job_steps = steps(workflow, "policy")
    assert _base_checkout(job_steps)["if"] == ON_PR
    commands = {step["run"]: step.get("if") for step in job_steps if "run" in step}
    assert commands == {
        "make install": None,
        ".venv/bin/python .ci/policy_check_base.py --base-tree .base --pr-tree . -- policy-check": ON_PR,
        # The PR's own checker only where there is no PR: a push to main is its own base.
        ".venv/bin/python -m include.cli policy-check": "github.event_name != 'pull_request'",
    }


def test_change_summary_runs_the_base_code_on_a_pull_request(workflow: dict[str, Any]) -> None:
    job = workflow["jobs"]["change-summary"]
    assert job["if"] == ON_PR
    _base_checkout(job["steps"])
    (summary,) = [step for step in job["steps"] if "change-summary" in step.get("run", "")]
    assert summary["env"] == {"BASE_REF": "${{ github.base_ref }}"}
    assert summary["run"].startswith(
        ".venv/bin/python .ci/policy_check_base.py --base-tree .base --pr-tree . -- change-summary"
    )
    assert "include.cli change-summary" not in summary["run"]
