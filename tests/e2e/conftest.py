"""One local stack for the whole test session: PostgreSQL, moto, SMTP sink and Airflow.

Started once (fresh database, fresh mail) on the ``test`` profile's loopback ports, shared by
every end-to-end test, stopped by PID at the end of the session.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from include.devstack.airflow_env import ADMIN_USER
from include.devstack.api_client import AirflowApi
from include.devstack.config import PROFILES
from include.devstack.stack import Stack
from include.policies.loader import load_domain_policy
from tests.e2e.gitops import PROBE_DAG_ID, GitOpsRemote

SERVICE_CHECK_DAGS = {f"{domain}_service_check" for domain in load_domain_policy().domains}


@pytest.fixture(scope="session")
def gitops_remote() -> GitOpsRemote:
    remote = GitOpsRemote(PROFILES["test"].root)
    remote.init()
    return remote


@pytest.fixture(scope="session")
def stack(gitops_remote: GitOpsRemote) -> Iterator[Stack]:
    stack = Stack(PROFILES["test"], extra_bundles=[gitops_remote.bundle_config()])
    try:
        stack.start(fresh=True)
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="session")
def api(stack: Stack) -> AirflowApi:
    client = AirflowApi(stack.profile.api_url, ADMIN_USER, stack.admin_password)
    client.wait_for_dags(SERVICE_CHECK_DAGS | {PROBE_DAG_ID})
    return client
