"""GitOps: a commit on the tracked branch becomes a new bundle version; runs keep their version."""

from __future__ import annotations

import time

from devstack.api_client import AirflowApi
from devstack.stack import Stack
from tests.e2e.gitops import PROBE_DAG_ID, GitOpsRemote


def _wait_for_bundle_version(api: AirflowApi, commit: str, timeout: float = 120) -> None:
    """Wait until the DAG processor has parsed ``commit`` (a DAG version carries it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        versions = api.get(f"dags/{PROBE_DAG_ID}/dagVersions")["dag_versions"]
        if any(v["bundle_version"] == commit for v in versions):
            return
        time.sleep(1)
    raise TimeoutError(f"bundle version {commit} not parsed within {timeout}s")


def test_merged_change_reaches_new_runs_only(
    api: AirflowApi, stack: Stack, gitops_remote: GitOpsRemote
) -> None:
    release = stack.profile.root / "gitops-release"
    release.unlink(missing_ok=True)
    conf = {"release_file": str(release)}
    v1_commit = gitops_remote.head()
    _wait_for_bundle_version(api, v1_commit)

    old_run = api.trigger(PROBE_DAG_ID, conf)
    # The old run must be executing (pinned to v1) before the change lands.
    deadline = time.monotonic() + 60
    while api.run(PROBE_DAG_ID, old_run)["state"] != "running" and time.monotonic() < deadline:
        time.sleep(0.5)

    v2_commit = gitops_remote.commit_probe("v2")
    assert v2_commit != v1_commit
    _wait_for_bundle_version(api, v2_commit)

    new_run = api.trigger(PROBE_DAG_ID, conf)
    release.touch()
    old = api.wait_for_run(PROBE_DAG_ID, old_run, timeout=180)
    new = api.wait_for_run(PROBE_DAG_ID, new_run, timeout=180)

    assert (old["state"], new["state"]) == ("success", "success")
    assert (old["bundle_version"], new["bundle_version"]) == (v1_commit, v2_commit)
    assert api.xcom(PROBE_DAG_ID, old_run, "report_version") == "v1"
    assert api.xcom(PROBE_DAG_ID, new_run, "report_version") == "v2"
