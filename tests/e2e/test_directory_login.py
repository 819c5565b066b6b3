"""Log in with the company directory on the real stack (issue 20, items 1 and 2).

People are made, moved between groups and locked in the stack's OpenLDAP with
devstack/directory_seed.py (as the admin); they log in through ``POST /auth/token`` and the UI's
login form, as users would. Their roles are read back as the break-glass admin
(``GET /auth/fab/v1/users/<uid>``); audit records from the audit store.
"""

from __future__ import annotations

import http.client
import json
import random
import re
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from devstack import directory_seed
from devstack.airflow_env import ADMIN_USER
from devstack.api_client import AirflowApi
from devstack.stack import Stack
from include.audit.store import AuditStore
from include.policies.access import load_access
from tests.e2e import background


def _token(stack: Stack, username: str, password: str) -> requests.Response:
    return requests.post(
        f"{stack.profile.api_url}/auth/token", json={"username": username, "password": password}, timeout=30
    )


def _admin(stack: Stack) -> AirflowApi:
    return AirflowApi(stack.profile.api_url, ADMIN_USER, stack.admin_password)


def _roles(stack: Stack, uid: str) -> set[str]:
    user = _admin(stack).request("GET", f"users/{uid}", api="auth/fab/v1")
    return {role["name"] for role in user["roles"]}


def _records(stack: Stack, kind: str, actor: str) -> list[dict[str, Any]]:
    with AuditStore(stack.audit_dsn) as store:
        return [r for r in store.records() if r["kind"] == kind and r["actor"] == actor]


def _ui_login(stack: Stack, username: str, password: str) -> requests.Response:
    """The UI's login form (FAB's AuthLDAPView), with its CSRF token; the final response."""
    session = requests.Session()
    form = session.get(f"{stack.profile.api_url}/auth/login/", timeout=30)
    match = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', form.text)
    assert match, form.text[:500]
    return session.post(
        f"{stack.profile.api_url}/auth/login/",
        data={"username": username, "password": password, "csrf_token": match.group(1)},
        allow_redirects=False,
        timeout=30,
    )


def _refused_by_ui(stack: Stack, username: str, password: str) -> bool:
    """True when the login form sends the user back to itself (FAB's "invalid login")."""
    response = _ui_login(stack, username, password)
    assert response.status_code in (302, 303), response.text[:500]
    return "/login" in response.headers["location"]


def test_soc_lead_gets_exactly_the_roles_of_their_groups_and_a_move_shows_at_next_login(stack: Stack) -> None:
    uid = "e2e-soclead"
    groups = directory_seed.SEEDED["lee-soclead"]  # a SOC lead's groups, as seeded
    password = directory_seed.add_person(stack.profile, uid, groups)
    response = _token(stack, uid, password)
    assert response.status_code == 201, response.text
    assert _roles(stack, uid) == load_access().roles_of_groups(groups)
    assert _roles(stack, uid) == {"soc_operator", "soc_lead", "soc_approver"}

    directory_seed.set_groups(stack.profile, uid, ["auditors"])
    assert _roles(stack, uid) == {"soc_operator", "soc_lead", "soc_approver"}  # until the next login
    assert _token(stack, uid, password).status_code == 201
    assert _roles(stack, uid) == {"auditor"}

    # The UI's login form goes through the directory too.
    assert not _refused_by_ui(stack, uid, password)
    assert _refused_by_ui(stack, uid, password + "-wrong")


# The recheck interval (30 s) is mostly waiting: the scenario runs in the background from the
# session's start (tests/e2e/background.py), with its own person; its test takes the result.
@background.scenario(start_after=None, timeout=300)
def locked_account_scenario(request: pytest.FixtureRequest) -> Callable[[], float]:
    stack: Stack = request.getfixturevalue("stack")
    uid = "e2e-leaver"
    password = directory_seed.add_person(stack.profile, uid, directory_seed.groups_for_roles(["soc_oncall"]))
    response = _token(stack, uid, password)
    assert response.status_code == 201, response.text
    return lambda: _locked_account_is_refused(stack, uid, password, response.json()["access_token"])


@background.result_test("locked_account_scenario")
def test_locked_account_gets_401_and_its_old_token_is_refused_within_the_recheck_interval() -> None:
    refused_after = background.result("locked_account_scenario")
    interval = load_access().recheck_interval.total_seconds()
    print(
        f"\nlocked account: old token refused {refused_after:.1f}s after the lock (recheck {interval:.0f}s)"
    )


def _locked_account_is_refused(stack: Stack, uid: str, password: str, token: str) -> float:
    headers = {"Authorization": f"Bearer {token}"}
    url = f"{stack.profile.api_url}/api/v2/dags"
    assert requests.get(url, headers=headers, timeout=30).status_code == 200

    directory_seed.lock(stack.profile, uid)
    locked_at = time.monotonic()
    assert _token(stack, uid, password).status_code == 401
    interval = load_access().recheck_interval.total_seconds()
    # Airflow answers a token it cannot turn into a user with 403 ("Invalid JWT token").
    while (status := requests.get(url, headers=headers, timeout=30).status_code) == 200:
        assert time.monotonic() - locked_at < interval + 10, (
            "the old token still works past the recheck interval"
        )
        time.sleep(1)
    refused_after = time.monotonic() - locked_at
    assert status == 403
    assert _refused_by_ui(stack, uid, password)
    refusals = _records(stack, "auth.login_refused", uid)
    assert [r["details"]["rule"] for r in refusals] == ["directory-locked", "directory-locked"]
    return refused_after


def test_a_local_password_typed_in_by_an_admin_opens_nothing(stack: Stack) -> None:
    """No person is created in Airflow by hand: such a user's local password is refused."""
    _admin(stack).create_user("e2e-handmade", "handmade-password-1", ["Viewer"])
    assert _token(stack, "e2e-handmade", "handmade-password-1").status_code == 401


def test_break_glass_admin_token_works_and_is_recorded(stack: Stack) -> None:
    before = len(_records(stack, "auth.break_glass", ADMIN_USER))
    response = _token(stack, ADMIN_USER, stack.admin_password)
    assert response.status_code == 201, response.text
    records = _records(stack, "auth.break_glass", ADMIN_USER)
    assert len(records) == before + 1
    assert records[-1]["details"]["how"] == "token"
    assert _token(stack, ADMIN_USER, "not-the-password").status_code == 401
    refused = _records(stack, "auth.login_refused", ADMIN_USER)
    assert refused[-1]["details"]["rule"] == "break-glass-password"


def _token_from(stack: Stack, address: str, username: str, password: str) -> tuple[int, dict[str, str], str]:
    """``POST /auth/token`` from another loopback source address (the API server sees it as the
    client's address), so this test's failures hold back no other test's logins from 127.0.0.1."""
    url = urlsplit(stack.profile.api_url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30, source_address=(address, 0))
    try:
        body = json.dumps({"username": username, "password": password})
        connection.request("POST", "/auth/token", body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read().decode()
    finally:
        connection.close()


def test_guessing_a_password_over_the_token_api_is_held_after_five_failures(stack: Stack) -> None:
    """The UI's login form has FAB's limit; the token endpoint beside it has ours (same numbers):
    from one address, the sixth wrong password for an account within 40 s, and then any, is
    refused with 429 before the directory is asked; the account's owner elsewhere and another
    account from the same address are not held back; the block is on the audit trail. Spraying one
    password over many accounts from one address is held after 20 failures."""
    guesser, sprayer = (f"127.0.0.{n}" for n in random.sample(range(10, 250), 2))
    uid, other = "e2e-guessed", "e2e-neighbour"
    groups = directory_seed.groups_for_roles(["soc_oncall"])
    password = directory_seed.add_person(stack.profile, uid, groups)
    other_password = directory_seed.add_person(stack.profile, other, groups)

    assert [_token_from(stack, guesser, uid, f"guess-{n}")[0] for n in range(5)] == [401] * 5
    status, headers, body = _token_from(stack, guesser, uid, password)  # the right one, too late
    assert status == 429, body
    assert 1 <= int(headers["retry-after"]) <= 40
    assert "Too many failed logins for this account from this address" in body
    assert _token(stack, uid, password).status_code == 201  # the owner, from another address
    assert _token_from(stack, guesser, other, other_password)[0] == 201
    (record,) = [
        r for r in _records(stack, "auth.login_refused", uid) if r["details"].get("remote_addr") == guesser
    ]
    assert record["details"]["rule"] == "too-many-failures"

    assert [_token_from(stack, sprayer, f"e2e-spray{n}", "Winter2026!")[0] for n in range(20)] == [401] * 20
    status, _, body = _token_from(stack, sprayer, other, other_password)
    assert status == 429, body
    assert "from this address" in body
