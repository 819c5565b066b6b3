"""GitOpsDagBundle: a new commit marks every DAG file of the bundle for parsing; no commit, none.

Real Git: a bare repository stands in for the remote, as in the GitOps end-to-end test.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from include.bundles.git import GitOpsDagBundle
from tests.e2e.gitops import GitOpsRemote


@pytest.fixture
def remote(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> GitOpsRemote:
    monkeypatch.setenv("AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_STORAGE_PATH", str(tmp_path / "bundles"))
    remote = GitOpsRemote(tmp_path)
    remote.init()
    # The connection comes from the environment, so no metadata database is asked for it.
    monkeypatch.setenv("AIRFLOW_CONN_GIT_DEFAULT", json.dumps({"conn_type": "git", "host": str(remote.bare)}))
    remote.commit_file("dags/other.py", "VALUE = 1\n", "another DAG file")
    remote.commit_file("dags/README.md", "not Python\n", "a document")
    return remote


def _bundle(remote: GitOpsRemote, version: str | None = None) -> GitOpsDagBundle:
    bundle = GitOpsDagBundle(
        name="gitops", tracking_ref="main", subdir="dags", repo_url=str(remote.bare), version=version
    )
    bundle.initialize()
    return bundle


def _mtimes(*paths: Path) -> list[int]:
    return [p.stat().st_mtime_ns for p in paths]


def test_a_new_commit_touches_every_dag_file_and_no_new_commit_touches_none(remote: GitOpsRemote) -> None:
    bundle = _bundle(remote)
    probe, other, readme = (bundle.path / n for n in ("gitops_probe.py", "other.py", "README.md"))
    probe_source = probe.read_text()
    checked_out = _mtimes(probe, other, readme)

    bundle.refresh()  # nothing new on main
    assert _mtimes(probe, other, readme) == checked_out

    head = remote.commit_file("dags/other.py", "VALUE = 2\n", "change only the other DAG file")
    bundle.refresh()

    assert bundle.get_current_version().version == head
    assert other.read_text() == "VALUE = 2\n"
    # The DAG file the merge did not change is marked for parsing too, its content untouched.
    assert probe.stat().st_mtime_ns > checked_out[0]
    assert probe.read_text() == probe_source
    # Only Python files are DAG files.
    assert readme.stat().st_mtime_ns == checked_out[2]

    # Git's index knows the new mtimes: the next refresh without a commit rewrites nothing.
    touched = _mtimes(probe, other, readme)
    bundle.refresh()
    assert _mtimes(probe, other, readme) == touched
    assert remote.head() == head


def test_a_pinned_version_is_not_refreshed(remote: GitOpsRemote) -> None:
    _bundle(remote)
    pinned = _bundle(remote, version=remote.head())
    with pytest.raises(Exception, match="Refreshing a specific version is not supported"):
        pinned.refresh()
