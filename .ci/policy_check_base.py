"""Run ``policy-check`` or ``change-summary`` with the BASE branch's checker against a PR's files.

A pull request must not be graded by its own edit of the rules: CI checks out the base branch
next to the PR and runs::

    python .ci/policy_check_base.py --base-tree .base --pr-tree . -- policy-check
    python .ci/policy_check_base.py --base-tree .base --pr-tree . -- change-summary --base origin/main

**policy-check** runs in a throw-away tree: the PR's code and data (``dags/``, ``include/``,
``plugins/``, ``config/``) with the *checker* replaced by the base branch's copy:

- ``include/policies/`` (every module: the rules in ``checks.py``, the loaders of each policy
  file, ``capability_calls.py``, ``secret_scan.py``, ``cluster_policy.py``; and ``schema/``),
  except the policy *data* (``include/policies/*.yaml``), which stays the PR's: a policy change is
  what the check is for (and code owners review it);
- ``include/cli/`` (the command line that picks the rules and the exit status);
- ``include/triage/rules.py`` (the validator of ``support_triage.yaml``).

A module the PR adds under those paths is dropped. A PR that changes a checker module *and*
relies on the change elsewhere (a DAG or helper importing a new loader function, YAML in a new
schema) fails here: land the checker change first, then its use.

**change-summary** needs the PR's git history, so it runs in the PR checkout with the base's
``include`` first on ``sys.path`` (``python -P`` keeps the working directory off it); it already
describes each revision in a process of its own with that revision's code.

What this does not protect against: policy-check imports the PR's DAG files (a DagBag), and
they import the PR's ``include/`` code. That code runs in the checker's process and could patch
the base checker in memory (``checks.RULES.clear()`` in a DAG file). This step stops a PR that
loosens a rule in the open; code written to subvert the check is for the reviewers (CODEOWNERS:
platform security owns include/, .ci/ and .github/). Running it is safe for the repository: the
job has a read-only token, no secrets and no credentials on disk (see .github/workflows/ci.yml).

Standard library only: it runs before anything of the PR is trusted.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PR_FOLDERS = ("dags", "include", "plugins", "config")
CHECKER_FOLDERS = ("include/policies", "include/cli")
CHECKER_FILES = ("include/triage/rules.py",)
POLICY_DATA = ("include/policies", "*.yaml")
COMMANDS = ("policy-check", "change-summary")
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache", ".mypy_cache")


class BaseCheckerError(RuntimeError):
    """The trees cannot be combined; the message says which tree lacks what."""


def _require_folder(tree: Path, relative: str, what: str) -> Path:
    path = tree / relative
    if not path.is_dir():
        raise BaseCheckerError(
            f"the {what} tree {tree} has no {relative}/: not a checkout of this repository"
        )
    return path


def checked_tree(base: Path, pr: Path, destination: Path) -> Path:
    """Build in ``destination`` the PR's files with the base branch's checker; return ``destination``.

    :param base: a checkout of the base branch.
    :param pr: a checkout of the pull request.
    :param destination: a folder that does not exist yet.
    :raises BaseCheckerError: a tree lacks the folders of this repository.
    """
    for relative in CHECKER_FOLDERS:
        _require_folder(base, relative, "base")
    _require_folder(pr, "include", "PR")
    destination.mkdir(parents=True)
    for folder in PR_FOLDERS:
        if (pr / folder).is_dir():
            shutil.copytree(pr / folder, destination / folder, ignore=IGNORED, symlinks=True)
    for relative in CHECKER_FOLDERS:
        shutil.rmtree(destination / relative, ignore_errors=True)
        shutil.copytree(base / relative, destination / relative, ignore=IGNORED, symlinks=True)
    for relative in CHECKER_FILES:
        target = destination / relative
        target.unlink(missing_ok=True)
        if (base / relative).is_file():
            shutil.copy2(base / relative, target)
    folder, pattern = POLICY_DATA
    for stale in (destination / folder).glob(pattern):
        stale.unlink()
    for data in sorted((pr / folder).glob(pattern)):
        shutil.copy2(data, destination / folder / data.name)
    return destination


def _environment(pythonpath: Path, workdir: Path) -> dict[str, str]:
    airflow_home = workdir / "airflow-home"
    airflow_home.mkdir(exist_ok=True)
    return {
        **os.environ,
        "PYTHONPATH": str(pythonpath),
        # A fresh Airflow home: no DAG folder, plugins or settings of the machine's own.
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    }


def run(command: list[str], *, base: Path, pr: Path, workdir: Path) -> int:
    """Run ``python -m include.cli <command>`` with the base's checker; return its exit status.

    :param command: ``policy-check ...`` or ``change-summary ...`` with its arguments.
    :param base: a checkout of the base branch.
    :param pr: a checkout of the pull request.
    :param workdir: an empty folder for the combined tree and a throw-away Airflow home.
    :raises BaseCheckerError: an unknown command, or a tree lacks the folders of this repository.
    """
    if not command or command[0] not in COMMANDS:
        raise BaseCheckerError(f"command must be one of {', '.join(COMMANDS)}, not {' '.join(command)!r}")
    base, pr = base.resolve(), pr.resolve()
    if command[0] == "policy-check":
        cwd = pythonpath = checked_tree(base, pr, workdir / "tree")
    else:
        for relative in CHECKER_FOLDERS:
            _require_folder(base, relative, "base")
        cwd, pythonpath = pr, base
    print(
        f"{command[0]}: checker of {base} ({', '.join((*CHECKER_FOLDERS, *CHECKER_FILES))}), files of {pr}",
        file=sys.stderr,
        flush=True,
    )
    process = subprocess.run(
        [sys.executable, "-P", "-m", "include.cli", *command],
        cwd=cwd,
        env=_environment(pythonpath, workdir),
        check=False,
    )
    return process.returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--base-tree", type=Path, required=True, help="checkout of the base branch")
    parser.add_argument("--pr-tree", type=Path, default=Path.cwd(), help="checkout of the PR (default: here)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="policy-check|change-summary [arguments]")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    with tempfile.TemporaryDirectory(prefix="policy-check-base-") as workdir:
        try:
            return run(command, base=args.base_tree, pr=args.pr_tree, workdir=Path(workdir))
        except BaseCheckerError as exc:
            print(f"policy_check_base: {exc}", file=sys.stderr)
            return 2


if __name__ == "__main__":
    sys.exit(main())
