"""Airflow's GitDagBundle, plus: a new commit re-parses every DAG file of the bundle at once.

Airflow records the commit a DAG's code came from on its latest DAG version, and a run starts
on that commit. When the bundle moves to a new commit, the DAG processor only queues the files
whose mtime is later than their last parse; a `git reset` rewrites only the files the merge
changed, so every other DAG keeps pointing at the previous commit until its periodic re-parse,
`[dag_processor] min_file_process_interval` later. We set that to 120 s (docs/benchmarks.md),
so after a merge most DAGs would start runs, and record them in the audit trail, on the old
commit for up to two minutes. Airflow has no setting to re-parse a bundle on a version change,
hence this subclass: after a refresh that moved HEAD it sets the mtime of the bundle's files to
now, which the DAG processor takes as "changed" and parses within a second or so. It changes
no file content, and a refresh that finds no new commit touches nothing.

It needs `[core] min_serialized_dag_update_interval` shorter than the bundle's refresh interval
(we set 1 s): Airflow does not write a parsed DAG it wrote less than that ago (default 30 s),
so a merge landing within 30 s of the previous one would again wait for the 120 s re-parse.

One gap remains, Airflow's: a file whose parse is running while the refresh touches it ends
that parse after the touch, counts as parsed, and waits one interval (the parse in flight used
the previous commit).

A task whose version is already on disk builds no ``GitHook``. Every task process builds its
bundle (``DagBundlesManager().get_bundle(name, version)``), and the provider's ``__init__``
builds a ``GitHook`` each time, which reads the bundle's connection through every secrets
backend (a Secrets Manager request, then, on a miss, an Execution API call): per task, even when
``initialize`` then finds the version's pruned worktree complete and touches no Git at all. The
hook is used only to fetch, so a versioned bundle whose pruned worktree exists skips it (and the
best-effort rewrite of a credential left in ``bare/config`` by provider versions before 1.0,
which every clone and refresh still does); if the worktree is gone by ``initialize`` (stale
version clean-up), the provider's ``__init__`` and ``initialize`` run as before. Airflow's
``[secrets] use_cache`` does not help here: in 3.3.2 only the DAG processor initialises the
cache (``SecretCache.init``), and a missing connection (a bundle with ``repo_url`` and no
connection) is never cached. docs/deployment.md ("With the Git bundle, as deployed") has the
figures.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import structlog
from airflow.dag_processing.bundles.base import BaseDagBundle, get_bundle_version_path
from airflow.providers.git.bundles.git import GitDagBundle
from git import Repo

log = structlog.get_logger(__name__)


class GitOpsDagBundle(GitDagBundle):
    """A ``GitDagBundle`` whose DAGs all move to a new commit as soon as it is fetched, and whose
    tasks build no ``GitHook`` for a version already on disk."""

    def __init__(self, **kwargs: Any) -> None:
        # The provider's keyword arguments, kept while the hook is not built (None once it is).
        self._without_hook: dict[str, Any] | None = None
        if _pruned_version_on_disk(kwargs):
            self._init_without_hook(**kwargs)
            self._without_hook = kwargs
        else:
            super().__init__(**kwargs)

    def _init_without_hook(
        self,
        *,
        tracking_ref: str,
        subdir: str | None = None,
        git_conn_id: str | None = None,
        repo_url: str | None = None,
        submodules: bool = False,
        prune_dotgit_folder: bool = True,
        sparse_dirs: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        # GitDagBundle.__init__ without its last step (the hook; the provider has no switch for
        # it). Only for a pruned version without submodules (_pruned_version_on_disk), so the
        # branches it takes are fixed; test_git_bundle.py compares the attributes with the
        # provider's, so a provider upgrade that adds one fails there, not in a task.
        BaseDagBundle.__init__(self, **kwargs)
        self.tracking_ref = tracking_ref
        self.subdir = subdir
        self.bare_repo_path = self.base_dir / "bare"
        self.repo_path = self.versions_dir / str(self.version)
        self.git_conn_id = git_conn_id
        self.repo_url = repo_url
        self.submodules = submodules
        self.sparse_dirs = sparse_dirs
        self.prune_dotgit_folder = prune_dotgit_folder
        self._log = log.bind(bundle_name=self.name, version=self.version, repo_path=self.repo_path)
        self.hook = None

    def initialize(self) -> None:
        if self._without_hook is not None:
            # Under the bundle's lock, as the provider checks it: a clone in progress holds it,
            # and its directory has no .git for a moment before git creates it.
            with self.lock():
                if self._is_pruned_worktree():
                    self._log.debug("Using existing pruned worktree, no connection read")
                    BaseDagBundle.initialize(self)
                    return
            # Gone since __init__ (stale version clean-up): the provider's way, hook and all.
            kwargs, self._without_hook = self._without_hook, None
            GitDagBundle.__init__(self, **kwargs)
        super().initialize()

    def _head(self) -> str:
        with Repo(self.repo_path) as repo:
            return repo.head.commit.hexsha

    def refresh(self) -> None:
        # super().refresh() refuses a pinned version before it touches anything; so do we.
        before = self._head() if not self.version else None
        super().refresh()
        if before is not None and self._head() != before:
            touch_dag_files(self.path)
            # `git reset --hard` rewrites every file whose stat data differs from the index, so
            # without this the next refresh would rewrite (and re-parse) all the touched files.
            with Repo(self.repo_path) as repo:
                repo.git.update_index("-q", "--refresh")


def _pruned_version_on_disk(kwargs: dict[str, Any]) -> bool:
    """Whether a bundle built with ``kwargs`` is a version whose worktree the provider has
    already checked out and pruned (its ``_is_pruned_worktree``, read before the bundle exists)."""
    version = kwargs.get("version")
    if not version or kwargs.get("submodules") or not kwargs.get("prune_dotgit_folder", True):
        return False
    path = get_bundle_version_path(kwargs["name"], version)
    return path.is_dir() and not (path / ".git").exists()


def touch_dag_files(root: Path) -> None:
    """Set the mtime of every Python file under ``root`` (not in ``.git``) to now."""
    for path in root.rglob("*.py"):
        if ".git" not in path.relative_to(root).parts and path.is_file():
            os.utime(path)
