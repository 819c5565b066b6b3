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
"""

from __future__ import annotations

import os
from pathlib import Path

from airflow.providers.git.bundles.git import GitDagBundle
from git import Repo


class GitOpsDagBundle(GitDagBundle):
    """A ``GitDagBundle`` whose DAGs all move to a new commit as soon as it is fetched."""

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


def touch_dag_files(root: Path) -> None:
    """Set the mtime of every Python file under ``root`` (not in ``.git``) to now."""
    for path in root.rglob("*.py"):
        if ".git" not in path.relative_to(root).parts and path.is_file():
            os.utime(path)
