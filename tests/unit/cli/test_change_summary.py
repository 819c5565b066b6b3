"""The change summary reports what a change does to DAGs, tasks, domain policy and approval gates.

A throw-away git repository is built once per module from the real ``dags/``, ``include/`` and
``pyproject.toml``; each summary describes two revisions in child processes (a few seconds each),
so the summaries are computed once and shared by the assertions.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from include.cli import change_summary
from include.cli.change_summary import ABSENT, diff_policy, flatten, fmt, is_approval_gate

REPO_ROOT = Path(__file__).resolve().parents[3]

CONTAIN_HOST_V1 = '''"""
### Contain a host

Collect evidence, ask the SOC approver, isolate the host and tell the customer.
"""

from datetime import timedelta

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.providers.standard.operators.hitl import ApprovalOperator

from include.workflows.factory import domain_workflow


@domain_workflow(domain="soc", doc_md=__doc__)
def contain_host():
    collect = EmptyOperator(task_id="collect_evidence")
    approve = ApprovalOperator(
        task_id="approve_isolation", subject="Isolate the host?", response_timeout=timedelta(minutes=15)
    )
    isolate = EmptyOperator(task_id="isolate_host")
    notify = EmptyOperator(task_id="notify_customer")
    collect >> approve >> isolate >> notify


contain_host()
'''

CONTAIN_HOST_V2 = '''"""
### Contain a host

Collect evidence, ask the SOC approver and isolate the host.
"""

from datetime import timedelta

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.providers.standard.operators.hitl import ApprovalOperator

from include.workflows.factory import domain_workflow


@domain_workflow(domain="soc", doc_md=__doc__, schedule="@hourly", tags=("containment",))
def contain_host():
    collect = EmptyOperator(task_id="collect_evidence")
    approve = ApprovalOperator(
        task_id="approve_isolation", subject="Isolate the host?", response_timeout=timedelta(minutes=20)
    )
    isolate = EmptyOperator(task_id="isolate_host", retries=5)
    collect >> approve >> isolate


contain_host()
'''

TRIAGE = '''"""
### Triage a ticket

Classify a new ticket and route it to a queue.
"""

from airflow.providers.standard.operators.empty import EmptyOperator

from include.workflows.factory import domain_workflow


@domain_workflow(domain="support", doc_md=__doc__)
def triage():
    EmptyOperator(task_id="classify") >> EmptyOperator(task_id="route")


triage()
'''

BROKEN = '''"""A DAG file whose import fails."""

import module_that_does_not_exist  # noqa: F401
'''


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def _commit(repo: Path, message: str) -> str:
    _git(repo, "add", "--all")
    _git(repo, "commit", "--quiet", "--message", message)
    return _git(repo, "rev-parse", "HEAD")


@pytest.fixture(scope="module")
def change_repo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Three states: ``v1`` (the real DAGs plus a containment DAG), ``v2`` (a reviewed change) and
    the uncommitted working tree (``v2`` plus a DAG file that fails to import)."""
    repo = tmp_path_factory.mktemp("change-repo")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("dags", "include", "plugins"):
        shutil.copytree(REPO_ROOT / name, repo / name, ignore=ignore)
    shutil.copy2(REPO_ROOT / "pyproject.toml", repo / "pyproject.toml")
    (repo / "dags" / "soc" / "contain_host.py").write_text(CONTAIN_HOST_V1, encoding="utf-8")
    (repo / "dags" / "support" / "triage.py").unlink()  # v2 adds the fixture's own triage DAG
    _git(repo, "init", "--quiet", "--initial-branch=main")
    _git(repo, "config", "user.email", "reviewer@secops.example")
    _git(repo, "config", "user.name", "Reviewer")
    v1 = _commit(repo, "v1")

    (repo / "dags" / "soc" / "contain_host.py").write_text(CONTAIN_HOST_V2, encoding="utf-8")
    (repo / "dags" / "support" / "triage.py").write_text(TRIAGE, encoding="utf-8")
    (repo / "dags" / "hr" / "service_check.py").unlink()
    policy = repo / "include" / "policies" / "domains.yaml"
    _edit(policy, "timeout: 15m ", "timeout: 20m ")
    _edit(policy, "priority_weight: 1  ", "priority_weight: 2  ")
    _edit(policy, "soc-lead@secops.example]", "soc-lead@secops.example, ciso@secops.example]")
    v2 = _commit(repo, "v2")

    (repo / "dags" / "soc" / "broken.py").write_text(BROKEN, encoding="utf-8")
    return {"repo": repo, "v1": v1, "v2": v2}


@pytest.fixture(scope="module")
def v1_to_v2(change_repo: dict[str, Any]) -> dict[str, Any]:
    return change_summary.summarise(change_repo["repo"], change_repo["v1"], change_repo["v2"])


@pytest.fixture(scope="module")
def working_tree_run(change_repo: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The command as CI runs it: default base (no ``origin/main`` here, so ``main``), working tree."""
    output = tmp_path_factory.mktemp("out") / "summary.md"
    parser = argparse.ArgumentParser()
    change_summary.register(parser.add_subparsers())
    args = parser.parse_args(["change-summary", "--format", "markdown", "--output", str(output)])
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(change_repo["repo"])
        exit_code = args.handler(args)
    return {"exit_code": exit_code, "lines": output.read_text(encoding="utf-8").splitlines()}


@pytest.mark.parametrize(
    "line",
    [
        pytest.param("- added `support_triage` (dags/support/triage.py, 2 tasks)", id="dag-added"),
        pytest.param("- removed `hr_service_check` (dags/hr/service_check.py)", id="dag-removed"),
        pytest.param("- changed `soc_contain_host`", id="dag-changed"),
        pytest.param("- schedule: None -> @hourly", id="schedule"),
        pytest.param("- tag added: `containment`", id="tag-added"),
        pytest.param("- task removed: `notify_customer`", id="task-removed"),
        pytest.param("- task `isolate_host` retries: 3 -> 5", id="task-retries"),
        pytest.param("- task `check_smtp_relay` priority_weight: 1 -> 2", id="policy-effect-on-task"),
        pytest.param("- soc.approval.timeout: 15m -> 20m", id="policy-timeout"),
        pytest.param("- support.priority_weight: 1 -> 2", id="policy-priority"),
        pytest.param(
            "- soc.approval.escalate_to: [soc-oncall@secops.example, soc-lead@secops.example] -> "
            "[soc-oncall@secops.example, soc-lead@secops.example, ciso@secops.example]",
            id="policy-list",
        ),
        pytest.param(
            "- gate `soc_contain_host.approve_isolation` response_timeout: 0:15:00 -> 0:20:00",
            id="gate-timeout",
        ),
    ],
)
def test_markdown_reports_the_effect(v1_to_v2: dict[str, Any], line: str) -> None:
    assert line in change_summary.render_markdown(v1_to_v2).splitlines()


def test_markdown_sections_of_changed_dags(v1_to_v2: dict[str, Any]) -> None:
    lines = change_summary.render_markdown(v1_to_v2).splitlines()
    start = lines.index("#### `soc_contain_host`")
    assert lines[start : lines.index("", start)] == [
        "#### `soc_contain_host`",
        "- schedule: None -> @hourly",
        "- tag added: `containment`",
        "- task removed: `notify_customer`",
        "- task `approve_isolation` response_timeout: 0:15:00 -> 0:20:00",
        "- task `isolate_host` retries: 3 -> 5",
    ]
    start = lines.index("#### `support_service_check`")
    assert lines[start : lines.index("", start)] == [
        "#### `support_service_check`",
        "- task `check_smtp_relay` priority_weight: 1 -> 2",
        "- task `check_tenant_secret` priority_weight: 1 -> 2",
        "- task `report` priority_weight: 1 -> 2",
    ]


def test_markdown_has_no_import_error_warning_when_both_sides_load(v1_to_v2: dict[str, Any]) -> None:
    assert "> [!CAUTION]" not in change_summary.render_markdown(v1_to_v2)


def test_json_summary(v1_to_v2: dict[str, Any], change_repo: dict[str, Any]) -> None:
    summary = json.loads(change_summary.render_json(v1_to_v2))

    assert summary["base"] == {"ref": change_repo["v1"], "commit": change_repo["v1"]}
    assert summary["import_errors"] == {"base": {}, "head": {}}
    assert sorted(summary["dags"]["added"]) == ["support_triage"]
    assert summary["dags"]["added"]["support_triage"]["tasks"]["classify"] == {
        "operator": "EmptyOperator",
        "pool": "support",
        "priority_weight": 2,
        "retries": 3,
        "approval_gate": False,
    }
    assert sorted(summary["dags"]["removed"]) == ["hr_service_check"]
    assert summary["dags"]["changed"]["soc_contain_host"]["tasks_removed"] == ["notify_customer"]
    assert summary["policy"] == {
        "domains_added": [],
        "domains_removed": [],
        "changes": {
            "soc.approval.escalate_to": {
                "old": ["soc-oncall@secops.example", "soc-lead@secops.example"],
                "new": ["soc-oncall@secops.example", "soc-lead@secops.example", "ciso@secops.example"],
            },
            "soc.approval.timeout": {"old": "15m", "new": "20m"},
            "support.priority_weight": {"old": 1, "new": 2},
        },
    }
    assert summary["approval_gates"] == {
        "added": {},
        "removed": {},
        "changed": {
            "soc_block_indicator.approve_perimeter_block": {
                "response_timeout": {"old": "0:15:00", "new": "0:20:00"}
            },
            "soc_contain_host.approve_isolation": {"response_timeout": {"old": "0:15:00", "new": "0:20:00"}},
            "soc_disable_account.approve_identity_disable": {
                "response_timeout": {"old": "0:15:00", "new": "0:20:00"}
            },
            "soc_disable_entra_user.approve_entra_user_disable": {
                "response_timeout": {"old": "0:15:00", "new": "0:20:00"}
            },
            "soc_enable_entra_user.approve_entra_user_enable": {
                "response_timeout": {"old": "0:15:00", "new": "0:20:00"}
            },
            "soc_isolate_device.approve_device_isolate": {
                "response_timeout": {"old": "0:15:00", "new": "0:20:00"}
            },
            "soc_release_device.approve_device_release": {
                "response_timeout": {"old": "0:15:00", "new": "0:20:00"}
            },
        },
    }


def test_working_tree_import_errors_are_prominent(
    working_tree_run: dict[str, Any], change_repo: dict[str, Any]
) -> None:
    main = change_repo["v2"][:12]

    assert working_tree_run["exit_code"] == 1
    assert working_tree_run["lines"] == [
        "## Workflow change summary",
        "",
        f"Base `main` (`{main}`), head working tree.",
        "",
        "> [!CAUTION]",
        "> **Head: 1 DAG file(s) fail to import.**",
        "> - `dags/soc/broken.py`: ModuleNotFoundError: No module named 'module_that_does_not_exist'",
        "",
        "No change to DAGs, tasks, domain policy or approval gates.",
    ]


def test_markdown_header_names_both_commits(v1_to_v2: dict[str, Any], change_repo: dict[str, Any]) -> None:
    lines = change_summary.render_markdown(v1_to_v2).splitlines()
    # v1 has every DAG of dags/ except triage; v2 adds one and removes one. One DAG per file, except
    # dags/intake/sources.py, which builds one intake DAG per source of intake.yaml.
    from include.intake.policy import load_intake

    files = list((REPO_ROOT / "dags").glob("*/*.py"))
    count = len(files) - 1 + len(load_intake().sources) - 1

    assert lines[:6] == [
        "## Workflow change summary",
        "",
        f"Base `{change_repo['v1'][:12]}`, head `{change_repo['v2'][:12]}`.",
        "",
        "### DAGs",
        f"{count} in base, {count} in head: 1 added, 1 removed, 9 changed.",
    ]


def test_dag_missing_because_its_file_breaks_is_not_passed_off_as_removed() -> None:
    dag = {
        "file": "dags/soc/contain_host.py",
        "tags": [],
        "schedule": None,
        "max_active_runs": 16,
        "tasks": {},
    }
    summary = {
        "dag_count": {"base": 1, "head": 0},
        "dags": {"added": {}, "removed": {"soc_contain_host": dag}, "changed": {}},
        "import_errors": {"base": {}, "head": {"dags/soc/contain_host.py": "SyntaxError: invalid syntax"}},
    }

    assert change_summary.render_dag_list(summary) == [
        "### DAGs",
        "1 in base, 0 in head: 0 added, 1 removed, 0 changed.",
        "",
        "- removed `soc_contain_host` (dags/soc/contain_host.py, its file fails to import in head)",
        "",
    ]


def test_base_import_errors_and_an_unreadable_policy_are_reported() -> None:
    summary = {
        "import_errors": {
            "base": {"dags/hr/old.py": "Traceback ...\nNameError: name 'x' is not defined\n"},
            "head": {},
        },
        "policy_errors": {
            "head": "include/policies/domains.yaml: not valid YAML: mapping values are not allowed"
        },
    }

    assert change_summary.render_errors(summary) == [
        "> [!CAUTION]",
        "> **Head: the domain policy cannot be read.** "
        "include/policies/domains.yaml: not valid YAML: mapping values are not allowed",
        "",
        "Base: 1 DAG file(s) already failed to import:",
        "- `dags/hr/old.py`: NameError: name 'x' is not defined",
        "",
    ]


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        pytest.param(
            {"domains": {"soc": {"approval": {"timeout": "15m"}}}},
            {"domains": {"soc": {"approval": {"timeout": "20m"}}}},
            {"soc.approval.timeout": {"old": "15m", "new": "20m"}},
            id="domain-key",
        ),
        pytest.param(
            {"defaults": {"retries": 3}, "domains": {}},
            {"defaults": {"retries": 4}, "domains": {}},
            {"defaults.retries": {"old": 3, "new": 4}},
            id="defaults-key",
        ),
        pytest.param(
            {"domains": {"hr": {"pool_slots": 4}}},
            {"domains": {"hr": {"pool_slots": 4, "burst_slots": 2}}},
            {"hr.burst_slots": {"old": ABSENT, "new": 2}},
            id="key-added",
        ),
        pytest.param(
            {"domains": {"hr": {"pool_slots": 4}}},
            {"domains": {"hr": {"pool_slots": 4}}},
            {},
            id="unchanged",
        ),
    ],
)
def test_diff_policy_key_paths(old: dict[str, Any], new: dict[str, Any], expected: dict[str, Any]) -> None:
    assert diff_policy(old, new)["changes"] == expected


def test_diff_policy_lists_domains_added_and_removed_not_their_keys() -> None:
    old = {"domains": {"hr": {"pool_slots": 4}}}
    new = {"domains": {"legal": {"pool_slots": 2}}}

    assert diff_policy(old, new) == {"domains_added": ["legal"], "domains_removed": ["hr"], "changes": {}}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("15m", "15m", id="string"),
        pytest.param(None, "None", id="none"),
        pytest.param(True, "true", id="bool"),
        pytest.param(["a", "b"], "[a, b]", id="list"),
        pytest.param(ABSENT, "(unset)", id="absent"),
    ],
)
def test_fmt(value: Any, expected: str) -> None:
    assert fmt(value) == expected


def test_flatten_keeps_lists_as_values() -> None:
    assert flatten({"soc": {"approval": {"escalate_to": ["a"], "timeout": "15m"}}}) == {
        "soc.approval.escalate_to": ["a"],
        "soc.approval.timeout": "15m",
    }


@pytest.mark.parametrize(
    ("class_name", "bases", "expected"),
    [
        pytest.param("HITLOperator", (), True, id="hitl"),
        pytest.param("ApprovalOperator", (), True, id="approval"),
        pytest.param("IsolateHostGate", ("HITLOperator",), True, id="subclass-of-hitl"),
        pytest.param("EmptyOperator", (), False, id="plain"),
    ],
)
def test_is_approval_gate_by_class_name(class_name: str, bases: tuple[str, ...], expected: bool) -> None:
    parents = tuple(type(name, (), {}) for name in bases)
    assert is_approval_gate(type(class_name, parents, {})) is expected


def test_unknown_base_is_reported(change_repo: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    change_summary.register(parser.add_subparsers())
    args = parser.parse_args(["change-summary", "--base", "no-such-ref"])
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(change_repo["repo"])
        exit_code = args.handler(args)

    assert exit_code == 2
    assert capsys.readouterr().err.startswith(
        "change-summary: no base revision: none of no-such-ref is a commit in "
    )
