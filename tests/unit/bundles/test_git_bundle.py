"""GitOpsDagBundle: a new commit marks every DAG file of the bundle for parsing; no commit, none.

Real Git: a bare repository stands in for the remote, as in the GitOps end-to-end test.
"""

from __future__ import annotations

import json
import shutil
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


# --- a task of a version already on disk reads no connection ------------------------------------
# As Helm deploys it: no repo_url, the URL (and in production the deploy token) comes from the
# connection `git_workflows`. A task process builds the bundle for its run's version.
HELM_KWARGS = {"name": "gitops", "tracking_ref": "main", "subdir": "dags", "git_conn_id": "git_workflows"}
CONN_ENV = "AIRFLOW_CONN_GIT_WORKFLOWS"


@pytest.fixture
def helm_remote(remote: GitOpsRemote, monkeypatch: pytest.MonkeyPatch) -> GitOpsRemote:
    monkeypatch.setenv(CONN_ENV, json.dumps({"conn_type": "git", "host": str(remote.bare)}))
    return remote


def _task_bundle(version: str) -> GitOpsDagBundle:
    """What a task process does: build the bundle for its version, then initialize it."""
    bundle = GitOpsDagBundle(version=version, **HELM_KWARGS)  # type: ignore[arg-type]
    bundle.initialize()
    return bundle


def test_a_task_of_a_version_on_disk_reads_no_connection(
    helm_remote: GitOpsRemote, monkeypatch: pytest.MonkeyPatch
) -> None:
    v1 = helm_remote.head()
    first = _task_bundle(v1)  # the version's first task clones it, through the connection
    assert first.hook is not None
    assert first.path == first.versions_dir / v1 / "dags"

    # The connection cannot be read any more: a task that needed it would fail in __init__
    # (the provider raises for a missing connection without repo_url).
    monkeypatch.delenv(CONN_ENV)
    again = _task_bundle(v1)
    assert again.hook is None
    assert again.is_initialized
    assert again.path == first.path
    assert 'CODE_VERSION = "v1"' in (again.path / "gitops_probe.py").read_text()
    assert again.get_current_version().version == v1

    # A new commit is not on disk: its first task needs the connection, and fetches through it.
    v2 = helm_remote.commit_probe("v2")
    with pytest.raises(Exception, match="git_workflows"):
        _task_bundle(v2)
    monkeypatch.setenv(CONN_ENV, json.dumps({"conn_type": "git", "host": str(helm_remote.bare)}))
    fetched = _task_bundle(v2)
    assert fetched.hook is not None
    assert 'CODE_VERSION = "v2"' in (fetched.path / "gitops_probe.py").read_text()

    # Each task runs on exactly its version, both now served from disk.
    monkeypatch.delenv(CONN_ENV)
    assert 'CODE_VERSION = "v1"' in (_task_bundle(v1).path / "gitops_probe.py").read_text()
    assert 'CODE_VERSION = "v2"' in (_task_bundle(v2).path / "gitops_probe.py").read_text()


def test_a_version_removed_before_initialize_is_cloned_again_through_the_connection(
    helm_remote: GitOpsRemote,
) -> None:
    v1 = helm_remote.head()
    _task_bundle(v1)
    bundle = GitOpsDagBundle(version=v1, **HELM_KWARGS)  # type: ignore[arg-type]
    assert bundle.hook is None
    shutil.rmtree(bundle.repo_path)  # the stale-version clean-up, between __init__ and initialize
    bundle.initialize()
    assert bundle.hook is not None
    assert 'CODE_VERSION = "v1"' in (bundle.path / "gitops_probe.py").read_text()
    assert not (bundle.repo_path / ".git").exists()


def test_the_bundle_without_hook_has_the_providers_attributes(helm_remote: GitOpsRemote) -> None:
    """The hook-less __init__ repeats the provider's: a provider upgrade that adds or changes
    an attribute must fail here, not in a task."""
    from airflow.providers.git.bundles.git import GitDagBundle

    v1 = helm_remote.head()
    _task_bundle(v1)
    ours = GitOpsDagBundle(version=v1, repo_url=str(helm_remote.bare), **HELM_KWARGS)  # type: ignore[arg-type]
    theirs = GitDagBundle(version=v1, repo_url=str(helm_remote.bare), **HELM_KWARGS)  # type: ignore[arg-type]
    assert ours.hook is None
    assert theirs.hook is not None
    skip = {"hook", "_log", "_without_hook"}
    assert {k: v for k, v in vars(ours).items() if k not in skip} == {
        k: v for k, v in vars(theirs).items() if k not in skip
    }


def test_a_version_with_its_git_folder_kept_takes_the_providers_path(helm_remote: GitOpsRemote) -> None:
    v1 = helm_remote.head()
    kept = GitOpsDagBundle(version=v1, prune_dotgit_folder=False, **HELM_KWARGS)  # type: ignore[arg-type]
    kept.initialize()
    assert (kept.repo_path / ".git").exists()
    again = GitOpsDagBundle(version=v1, prune_dotgit_folder=False, **HELM_KWARGS)  # type: ignore[arg-type]
    assert again.hook is not None
