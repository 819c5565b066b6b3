"""The PR cannot grade itself: ``.ci/policy_check_base.py`` runs the base branch's checker on the PR.

The end-to-end case is the done-when line of issue 19: a PR that removes a rule from
``checks.py`` and adds a DAG breaking that rule passes its own checker, and fails the base's.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / ".ci" / "policy_check_base.py"
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc")
LOOSENED_RULE = "    check_domain_pool,\n"
VIOLATING_DAG = '''
"""A support workflow whose step leaves the support pool."""
from airflow.sdk import task

from include.workflows import domain_workflow


@domain_workflow(domain="support", doc_md=__doc__, dag_id="support_loose")
def support_loose():
    @task(pool="default_pool")
    def step():
        return 1

    step()


support_loose()
'''
# Only the DAG rules: the secret and capability-call scans of include/ see the whole working tree,
# which other work in progress may change; they are not what this mechanism is about.
CHECK_ARGS = ["--include-folder", "", "--format", "json"]


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("policy_check_base", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SCRIPT_MODULE = load_script()


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


# --- the combined tree ------------------------------------------------------------------------------


@pytest.fixture
def trees(tmp_path: Path) -> tuple[Path, Path]:
    base, pr = tmp_path / "base", tmp_path / "pr"
    write(base / "include/policies/checks.py", "BASE RULES\n")
    write(base / "include/policies/loader.py", "BASE LOADER\n")
    write(base / "include/policies/schema/domains.schema.json", "{}\n")
    write(base / "include/policies/domains.yaml", "base: data\n")
    write(base / "include/policies/retired.yaml", "base: only\n")
    write(base / "include/cli/__main__.py", "BASE CLI\n")
    write(base / "include/triage/rules.py", "BASE TRIAGE RULES\n")
    write(base / "include/workflows/factory.py", "BASE FACTORY\n")
    write(pr / "include/policies/checks.py", "LOOSENED RULES\n")
    write(pr / "include/policies/extra_rules.py", "PR ONLY MODULE\n")
    write(pr / "include/policies/schema/domains.schema.json", '{"loosened": true}\n')
    write(pr / "include/policies/domains.yaml", "pr: data\n")
    write(pr / "include/policies/new_policy.yaml", "pr: new\n")
    write(pr / "include/cli/__main__.py", "PR CLI\n")
    write(pr / "include/triage/rules.py", "PR TRIAGE RULES\n")
    write(pr / "include/workflows/factory.py", "PR FACTORY\n")
    write(pr / "include/workflows/__pycache__/factory.cpython-311.pyc", "stale\n")
    write(pr / "dags/support/new.py", "PR DAG\n")
    write(pr / "plugins/kpi.py", "PR PLUGIN\n")
    write(pr / "docs/ignored.md", "not copied\n")
    return base, pr


def test_the_checker_comes_from_base_and_code_and_data_from_the_pr(
    tmp_path: Path, trees: tuple[Path, Path]
) -> None:
    base, pr = trees
    tree = SCRIPT_MODULE.checked_tree(base, pr, tmp_path / "tree")
    files = {str(p.relative_to(tree)): p.read_text() for p in sorted(tree.rglob("*")) if p.is_file()}
    assert files == {
        "dags/support/new.py": "PR DAG\n",
        "include/cli/__main__.py": "BASE CLI\n",
        "include/policies/checks.py": "BASE RULES\n",
        "include/policies/domains.yaml": "pr: data\n",
        "include/policies/loader.py": "BASE LOADER\n",
        "include/policies/new_policy.yaml": "pr: new\n",
        "include/policies/schema/domains.schema.json": "{}\n",
        "include/triage/rules.py": "BASE TRIAGE RULES\n",
        "include/workflows/factory.py": "PR FACTORY\n",
        "plugins/kpi.py": "PR PLUGIN\n",
    }


def test_a_checker_file_the_base_lacks_is_dropped(tmp_path: Path, trees: tuple[Path, Path]) -> None:
    base, pr = trees
    (base / "include/triage/rules.py").unlink()
    tree = SCRIPT_MODULE.checked_tree(base, pr, tmp_path / "tree")
    assert not (tree / "include/triage/rules.py").exists()


@pytest.mark.parametrize(
    ("side", "missing", "message"),
    [
        pytest.param(
            "base", "include/policies", r"the base tree .*/base has no include/policies/", id="base"
        ),
        pytest.param("base", "include/cli", r"the base tree .*/base has no include/cli/", id="base-cli"),
        pytest.param("pr", "include", r"the PR tree .*/pr has no include/", id="pr"),
    ],
)
def test_trees_that_are_not_checkouts_are_refused(
    tmp_path: Path, trees: tuple[Path, Path], side: str, missing: str, message: str
) -> None:
    shutil.rmtree(tmp_path / side / missing)
    with pytest.raises(SCRIPT_MODULE.BaseCheckerError, match=message):
        SCRIPT_MODULE.checked_tree(*trees, tmp_path / "tree")
    assert not (tmp_path / "tree").exists()  # refused before anything is written


def test_only_the_two_commands_run(tmp_path: Path, trees: tuple[Path, Path]) -> None:
    base, pr = trees
    with pytest.raises(
        SCRIPT_MODULE.BaseCheckerError, match="command must be one of policy-check, change-summary"
    ):
        SCRIPT_MODULE.run(["policy-sync"], base=base, pr=pr, workdir=tmp_path)


def test_command_line_reports_a_bad_tree_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = SCRIPT_MODULE.main(
        ["--base-tree", str(tmp_path / "nothing"), "--pr-tree", str(ROOT), "--", "policy-check"]
    )
    assert code == 2
    assert "policy_check_base: the base tree" in capsys.readouterr().err


REPORTING_CLI = """
import os, sys
print("{side} CLI", " ".join(sys.argv[1:]), os.getcwd(), sep="|")
"""


def _reporting_tree(tree: Path, side: str) -> None:
    write(tree / "include/__init__.py", "")
    write(tree / "include/cli/__init__.py", "")
    write(tree / "include/cli/__main__.py", REPORTING_CLI.format(side=side))
    write(tree / "include/policies/__init__.py", "")


@pytest.mark.parametrize(
    ("command", "runs_in"),
    [
        pytest.param(
            ["policy-check", "--format", "json"], "work/tree", id="policy-check-in-the-combined-tree"
        ),
        pytest.param(
            ["change-summary", "--base", "origin/main"], "pr", id="change-summary-in-the-pr-checkout"
        ),
    ],
)
def test_the_base_cli_runs_whatever_the_pr_ships(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], command: list[str], runs_in: str
) -> None:
    base, pr = tmp_path / "base", tmp_path / "pr"
    _reporting_tree(base, "BASE")
    _reporting_tree(pr, "PR")
    (tmp_path / "work").mkdir()

    code = SCRIPT_MODULE.run(command, base=base, pr=pr, workdir=tmp_path / "work")

    assert code == 0
    side, arguments, cwd = capfd.readouterr().out.strip().split("|")
    assert (side, arguments, Path(cwd)) == ("BASE CLI", " ".join(command), (tmp_path / runs_in).resolve())


# --- the done-when line: a loosened checks.py and a violating DAG still fail ------------------------


@pytest.fixture
def loosening_pr(tmp_path: Path) -> Path:
    """This repository's code with ``check_domain_pool`` removed from RULES, and one DAG breaking it."""
    pr = tmp_path / "pr"
    for folder in ("include", "plugins", "config"):
        shutil.copytree(ROOT / folder, pr / folder, ignore=IGNORED)
    checks = pr / "include/policies/checks.py"
    source = checks.read_text(encoding="utf-8")
    assert source.count(LOOSENED_RULE) == 1
    checks.write_text(source.replace(LOOSENED_RULE, ""), encoding="utf-8")
    write(pr / "dags/support/loose.py", textwrap.dedent(VIOLATING_DAG))
    return pr


def _own_check(pr: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    home = tmp_path / "own-home"
    home.mkdir()
    env = {**os.environ, "PYTHONPATH": str(pr), "AIRFLOW_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-P", "-m", "include.cli", "policy-check", *CHECK_ARGS],
        cwd=pr,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def test_a_pr_that_loosens_checks_py_still_fails_the_base_checker(
    loosening_pr: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    # Graded by its own checker, the PR passes: the loosening works, so this test can fail.
    own = _own_check(loosening_pr, tmp_path)
    assert own.returncode == 0, own.stdout + own.stderr[-2000:]
    assert json.loads(own.stdout)["ok"] is True
    assert json.loads(own.stdout)["dags"] == 1

    workdir = tmp_path / "work"
    workdir.mkdir()
    code = SCRIPT_MODULE.run(["policy-check", *CHECK_ARGS], base=ROOT, pr=loosening_pr, workdir=workdir)

    captured = capfd.readouterr()
    assert code == 1, captured.out + captured.err[-2000:]
    assert json.loads(captured.out)["violations"] == [
        {
            "rule": "domain-pool",
            "location": "dags/support/loose.py::support_loose::step",
            "message": (
                "DAG support_loose task step runs in pool 'default_pool', not its domain pool 'support'"
            ),
        }
    ]
    assert f"policy-check: checker of {ROOT}" in captured.err
