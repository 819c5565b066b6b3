"""A local bare Git repository standing in for the GitHub remote that GitDagBundle tracks."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

BUNDLE_NAME = "gitops"
PROBE_DAG_ID = "support_gitops_probe"

PROBE_DAG = '''"""
### GitOps probe

Proves bundle versioning: waits until a release file exists, then reports the code version it ran.
"""

import time
from pathlib import Path

from airflow.sdk import Param, task

from include.workflows import domain_workflow

CODE_VERSION = "{version}"


@domain_workflow(
    domain="support",
    dag_id="{dag_id}",
    doc_md=__doc__,
    params={{"release_file": Param("/nonexistent", type="string")}},
)
def gitops_probe():
    @task(retries=0)
    def wait_for_release(params=None):
        deadline = time.monotonic() + 240
        while not Path(params["release_file"]).exists():
            if time.monotonic() > deadline:
                raise TimeoutError("release file never appeared")
            time.sleep(0.5)

    @task(retries=0)
    def report_version():
        return CODE_VERSION

    wait_for_release() >> report_version()


gitops_probe()
'''


def _git(cwd: Path, *args: str) -> str:
    result = subprocess.run(
        ["git", "-c", "user.name=CI", "-c", "user.email=ci@secops.example", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
    )
    return result.stdout.strip()


class GitOpsRemote:
    """A bare repo (the "remote") and a working clone used to push commits, like a merged PR."""

    def __init__(self, root: Path) -> None:
        self.bare = root / "gitops-remote.git"
        self.work = root / "gitops-work"

    def init(self) -> None:
        for path in (self.bare, self.work):
            if path.exists():
                subprocess.run(["rm", "-rf", str(path)], check=True)
        self.bare.parent.mkdir(parents=True, exist_ok=True)
        _git(self.bare.parent, "init", "--bare", "--initial-branch=main", str(self.bare))
        _git(self.bare.parent, "clone", str(self.bare), str(self.work))
        _git(self.work, "checkout", "-B", "main")
        self.commit_probe("v1")

    def commit_probe(self, version: str) -> str:
        dag_file = self.work / "dags" / "gitops_probe.py"
        dag_file.parent.mkdir(parents=True, exist_ok=True)
        dag_file.write_text(PROBE_DAG.format(version=version, dag_id=PROBE_DAG_ID))
        _git(self.work, "add", "-A")
        _git(self.work, "commit", "-m", f"probe {version}")
        _git(self.work, "push", "origin", "main")
        return _git(self.work, "rev-parse", "HEAD")

    def commit_file(self, relative: str, content: str | None, message: str) -> str:
        """Add, change (content) or delete (None) one file on main and push it."""
        path = self.work / relative
        if content is None:
            path.unlink()
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
        _git(self.work, "add", "-A")
        _git(self.work, "commit", "-m", message)
        _git(self.work, "push", "origin", "main")
        return self.head()

    def head(self) -> str:
        return _git(self.work, "rev-parse", "HEAD")

    def bundle_config(self, refresh_interval: int = 5) -> dict[str, Any]:
        return {
            "name": BUNDLE_NAME,
            "classpath": "include.bundles.git.GitOpsDagBundle",
            "kwargs": {
                "repo_url": str(self.bare),
                "tracking_ref": "main",
                "subdir": "dags",
                "refresh_interval": refresh_interval,
            },
        }
