"""One local stack for the whole test session: PostgreSQL, moto, SMTP sink and Airflow.

Started once (fresh database, fresh mail) on the ``test`` profile's loopback ports, shared by
every end-to-end test, stopped by PID at the end of the session.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk import Connection

from devstack import directory_seed, postgres, privacyidea
from devstack.api_client import AirflowApi
from devstack.aws_seed import account_client
from devstack.config import PROFILES, REGION, STAFF_IDENTITY_STORE_ID
from devstack.openldap import ldap_connection
from devstack.request_tracker import rt_connection
from devstack.stack import Stack
from devstack.totp import Authenticator
from include.connectors.ldap import DirectoryHook
from include.connectors.ticketing.request_tracker import API, RequestTrackerHook
from include.policies.loader import load_domain_policy
from include.policies.tenants import STAFF_TENANT, tenant_account_id
from tests.e2e import background
from tests.e2e.gitops import PROBE_DAG_ID, GitOpsRemote

# The shared drill checks are plain asserts in a helper module: rewritten like a test module's (it
# is imported by the test modules, after this conftest).
pytest.register_assert_rewrite("tests.e2e.drills")

# Test-only workflows (ticket lifecycle, crash-and-retry) in their own bundle, so dags/ holds
# only the product's workflows.
E2E_DAGS_BUNDLE = {
    "name": "e2e-dags",
    "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
    "kwargs": {"path": str(Path(__file__).parent / "dags")},
}
SERVICE_CHECK_DAGS = {f"{domain}_service_check" for domain in load_domain_policy().domains}

# Background scenarios (tests/e2e/background.py): a scenario that mostly waits (the approval
# drills of the channel and escalation tests, the firewall block's expiry, the bulk update's rate
# share) starts in a thread at a point of the session chosen in its module and is checked by its
# test; tests with global counts wait until it has ended.


@pytest.fixture(autouse=True)
def _background_scenarios(request: pytest.FixtureRequest) -> None:
    background.before_test(request)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    background.order(items)


# Early drills: an approval nobody answers is mostly waiting (reminder 10 s, escalation 20 s,
# auto-reject 30 s: approvals.yaml drill_ladder; the test DAGs' own ladders are alike). A module
# with such a run triggers it from a module-scoped autouse fixture as the module starts, and its
# test, last in the module, checks the finished run with the same assertions as before: the wait
# overlaps the module's other tests instead of adding to the session (about 30 s per module). The
# run ends within its module (its test waits for it), so no other module sees it; each has its own
# subject, ids and correlation id, so the other tests' counts (tickets, mails, accounts) exclude it.


@pytest.fixture(scope="session")
def gitops_remote() -> GitOpsRemote:
    remote = GitOpsRemote(PROFILES["test"].root)
    remote.init()
    return remote


@pytest.fixture(scope="session")
def stack(gitops_remote: GitOpsRemote) -> Iterator[Stack]:
    stack = Stack(PROFILES["test"], extra_bundles=[gitops_remote.bundle_config(), E2E_DAGS_BUNDLE])
    try:
        stack.start(fresh=True)
        yield stack
    finally:
        stack.stop()


# The tests' admin: a directory person in orchestrator-admins (the break-glass local admin is used
# only by the test that checks it, tests/e2e/test_directory_login.py).
PLATFORM_ADMIN = directory_seed.PLATFORM_ADMIN


def admin_api(stack: Stack) -> AirflowApi:
    """A client of the tests' admin (a background scenario's thread builds its own)."""
    seed = privacyidea.seed(stack.profile, PLATFORM_ADMIN)  # enrolled at stack start, as every seeded person
    login = directory_seed.admin_login(stack.profile)
    return AirflowApi(stack.profile.api_url, *login, authenticator=authenticator(seed))


@pytest.fixture(scope="session")
def api(stack: Stack) -> AirflowApi:
    client = admin_api(stack)
    client.wait_for_dags(SERVICE_CHECK_DAGS | {PROBE_DAG_ID})
    return client


@pytest.fixture(scope="session")
def rt(stack: Stack) -> RequestTrackerHook:
    return rt_hook(stack)


def rt_hook(stack: Stack) -> RequestTrackerHook:
    """A hook on the same rt_default connection the workers read from Secrets Manager (a background
    scenario's thread builds its own)."""
    definition = dict(rt_connection(stack.profile))
    # The pytest process has no secrets backend: name the shared rate-limit store directly.
    store = postgres.dsn(stack.profile, postgres.RATELIMIT_ROLE, "ratelimit")
    extra = json.dumps({**definition.pop("extra", {}), "rate_limit_store_dsn": store})
    hook = RequestTrackerHook(tenant="acme")
    hook.__dict__["connection"] = Connection(conn_id="rt_default", extra=extra, **definition)
    return hook


def authenticator(seed_b32: str, backups: list[str] | None = None) -> Authenticator:
    """The authenticator app of a token enrolled with ``seed_b32`` (and spares), within the MFA
    server's window."""
    return Authenticator(
        seed_b32, back=privacyidea.STEPS_BACK, ahead=privacyidea.STEPS_AHEAD, backups=backups or []
    )


def sign_up(stack: Stack, users: dict[str, list[str]], *, backup_tokens: int = 2) -> dict[str, AirflowApi]:
    """Directory people with exactly these Airflow roles (the access.yaml groups granting them), each
    with an enrolled TOTP token (names must be unique in the session); a client for each that logs
    in through the directory and answers approvals with its authenticator's next code.

    Each person also gets ``backup_tokens`` spare tokens: one token yields three codes at once and
    then one per 30 s (devstack/totp.py), and workflows run five times in a row are answered five
    times in a few seconds. Tests of the one-token semantics (replays) pass 0.
    """
    clients = {}
    for name, roles in users.items():
        password = directory_seed.add_person(stack.profile, name, directory_seed.groups_for_roles(roles))
        seed = privacyidea.enrol(stack.profile, name, known_new=True)
        backups = privacyidea.enrol_backups(stack.profile, name, backup_tokens)
        app = authenticator(seed, backups)
        clients[name] = AirflowApi(stack.profile.api_url, name, password, authenticator=app)
    return clients


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Show the measured figures (burst throughput, ...) at the end of the run, also in CI logs."""
    results = sorted((PROFILES["test"].root / "results").glob("*.json"))
    if not results:
        return
    terminalreporter.section("measured figures")
    for path in results:
        data = json.loads(path.read_text())
        figures = {k: v for k, v in data.items() if not isinstance(v, dict) or k == "states"}
        terminalreporter.write_line(f"{path.stem}: {json.dumps(figures)}")


# --- HR: the directory and the staff identity store, read as the workflows' targets ---------


@pytest.fixture(scope="session")
def directory(stack: Stack) -> DirectoryHook:
    """A hook on the same ldap_default connection the workers read from Secrets Manager."""
    definition = dict(ldap_connection(stack.profile))
    extra = json.dumps(definition.pop("extra"))
    hook = DirectoryHook()
    hook.__dict__["connection"] = Connection(conn_id="ldap_default", extra=extra, **definition)
    return hook


def identity_store(stack: Stack) -> Any:
    return account_client("identitystore", tenant_account_id(STAFF_TENANT), stack.profile.moto_url, REGION)


def ic_users(stack: Stack, user_name: str) -> list[dict[str, Any]]:
    store = identity_store(stack)
    users = store.list_users(IdentityStoreId=STAFF_IDENTITY_STORE_ID)["Users"]
    return [u for u in users if u["UserName"] == user_name]


def ic_groups(stack: Stack, user_id: str) -> list[str]:
    store = identity_store(stack)
    memberships = store.list_group_memberships_for_member(
        IdentityStoreId=STAFF_IDENTITY_STORE_ID, MemberId={"UserId": user_id}
    )["GroupMemberships"]
    return sorted(
        store.describe_group(IdentityStoreId=STAFF_IDENTITY_STORE_ID, GroupId=m["GroupId"])["DisplayName"]
        for m in memberships
    )


def ticket_texts(rt: RequestTrackerHook, ticket_id: str) -> list[str]:
    """The text of every comment and reply on a ticket, read from Request Tracker."""
    history = rt.request(
        "GET",
        f"{API}/ticket/{ticket_id}/history?fields=Type&per_page=100",
        operation="history",
        expect=(200,),
    ).json()
    return [
        rt._text_of(item["id"])
        for item in history.get("items", [])
        if item.get("Type") in ("Comment", "Correspond")
    ]
