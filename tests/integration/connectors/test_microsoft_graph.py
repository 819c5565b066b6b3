"""GraphHook against the Entra/Graph/Defender stand-in over HTTPS, credentials read from moto as the
capability roles in each tenant's own account: two tenants (acme, globex) at once.

- a run of tenant A cannot use tenant B's app: a hook for B, a credential naming B's secret, a secret
  of A that carries B's Entra tenant: all refused, and the stand-in's request log shows nothing came;
- a user principal name of another tenant's domain is refused before any call; an unknown user after
  the read-only lookup, with the reason;
- disabling 5 times is one PATCH; the read-only app cannot disable (403 from the service);
- Defender: isolating 5 times is one machine action, completed eventually, released once; the
  read-only Defender app cannot isolate; a machine of another tenant is not found;
- a 429 with ``Retry-After`` is waited out; the shared limiter (PostgreSQL store) keeps two processes
  under the stand-in's per-app budget together.

Own profile ``microsoft-itest``: stand-in on 127.0.0.1:26445 (api_port 26400 + 45), PostgreSQL on 26462
(the rate-limit store of the two-process test only).
"""

from __future__ import annotations

import json
import multiprocessing
import time
from collections.abc import Iterator
from typing import Any

import pytest

from devstack.aws_seed import account_client, seed_capability_roles
from devstack.config import Profile
from devstack.standins import microsoft as ms
from include.connectors.context import RunContext
from include.connectors.errors import PermanentError
from include.connectors.microsoft import DefenderHook, GraphHook, MicrosoftInputError, TenantCredentialError
from include.policies.tenants import tenant_account_id
from tests.support.moto import moto_with_aws_connection

REGION = "eu-west-1"
AWS_CONN = "aws_microsoft_itest"
PROFILE = Profile(name="microsoft-itest", api_port=26400, pg_port=26462, moto_port=0, smtp_port=0)
NO_LIMITS = ("rate_limit_per_second", "rate_limit_burst")


def _connection(tenant: str, capability: str, *, defender: bool = False, **extra: Any) -> dict[str, Any]:
    conn = ms.connection(PROFILE, tenant, capability, defender=defender)
    for key in NO_LIMITS:  # no shared store in most tests: the limiter test sets its own
        conn["extra"].pop(key)
    conn["extra"].update(extra)
    return conn


@pytest.fixture(scope="module")
def env() -> Iterator[dict[str, Any]]:
    tls = ms.ensure_certificates(ms.tls_dir(PROFILE))
    standin = ms.MicrosoftStandIn(
        ms.standin_config(PROFILE), cert_file=tls.cert_file, key_file=tls.key_file, port=ms.port(PROFILE)
    )
    with moto_with_aws_connection(AWS_CONN, REGION) as url, standin:
        seed_capability_roles(url, REGION)
        clients = {
            t: account_client("secretsmanager", tenant_account_id(t), url, REGION) for t in ("acme", "globex")
        }
        for tenant, client in clients.items():
            for capability in ms.CAPABILITY_ROLES:
                client.create_secret(
                    Name=f"orchestrator/{tenant}/{capability}/msgraph",
                    SecretString=json.dumps(_connection(tenant, capability)),
                )
            for capability in ms.DEFENDER_CAPABILITY_ROLES:
                client.create_secret(
                    Name=f"orchestrator/{tenant}/{capability}/defender",
                    SecretString=json.dumps(_connection(tenant, capability, defender=True)),
                )
        yield {"standin": standin, "secrets": clients, "moto": url}


def _run(tenant: str) -> RunContext:
    return RunContext("soc_disable_entra_user", f"manual__{tenant}", "disable_user", tenant, f"corr-{tenant}")


def _graph(capability: str, tenant: str, *, run_tenant: str | None = None, **kwargs: Any) -> GraphHook:
    return GraphHook(
        capability=capability,
        tenant=tenant,
        run_context=_run(run_tenant or tenant),
        aws_conn_id=AWS_CONN,
        **kwargs,
    )


def _upn(user: str, tenant: str) -> str:
    return f"{user}@{tenant}.example"


# --- tenant isolation: refused before any call -----------------------------------------------------------
def test_a_run_of_acme_cannot_use_globex_credentials(env: dict[str, Any]) -> None:
    standin = env["standin"]
    before = len(standin.requests)
    # 1. a hook for globex in a run of acme: refused before the AssumeRole, so before Microsoft too
    with pytest.raises(ValueError, match="requested by a run of tenant 'acme'"):
        _graph("entra-user-inspect", "globex", run_tenant="acme").get_user(_upn("jdoe", "globex"))
    # 2. a crafted credential naming globex's secret (or any path) instead of the tenant's own leaf
    for crafted in ("orchestrator/globex/entra-user-inspect/msgraph", "../globex/msgraph", "msgraph-globex"):
        with pytest.raises(TenantCredentialError, match="refused"):
            _graph("entra-user-inspect", "acme", credential=crafted)
    # 3. acme's own secret path holding globex's app (a mis-seeded or tampered secret)
    name = "orchestrator/acme/entra-user-enable/msgraph"
    env["secrets"]["acme"].put_secret_value(
        SecretId=name, SecretString=json.dumps(_connection("globex", "entra-user-enable"))
    )
    try:
        with pytest.raises(TenantCredentialError, match="names Entra tenant '9b2e7f41"):
            _graph("entra-user-enable", "acme").get_user(_upn("jdoe", "acme"))
    finally:
        env["secrets"]["acme"].put_secret_value(
            SecretId=name, SecretString=json.dumps(_connection("acme", "entra-user-enable"))
        )
    assert standin.requests[before:] == []  # nothing reached the service


def test_a_upn_of_another_tenant_is_refused_before_any_call(env: dict[str, Any]) -> None:
    standin = env["standin"]
    hook = _graph("entra-user-inspect", "acme")
    hook.get_user(_upn("jdoe", "acme"))  # token and connection ready
    before = len(standin.requests)
    with pytest.raises(MicrosoftInputError, match="not in tenant 'acme'"):
        hook.get_user(_upn("jdoe", "globex"))
    with pytest.raises(MicrosoftInputError, match="neither an object id nor a user principal name"):
        hook.get_user("jdoe; DROP")
    assert standin.requests[before:] == []
    with pytest.raises(MicrosoftInputError, match=r"'nobody@acme\.example' not found"):
        hook.get_user(_upn("nobody", "acme"))
    assert [(r.method, r.status) for r in standin.requests[before:]] == [("GET", 404)]


def test_each_tenant_sees_only_its_own_directory(env: dict[str, Any]) -> None:
    acme_user = _graph("entra-user-inspect", "acme").get_user(_upn("mallory", "acme"))
    globex = _graph("entra-user-inspect", "globex")
    # globex's token on acme's user id: not found (the data is the token's tenant's)
    with pytest.raises(MicrosoftInputError, match="not found"):
        globex.get_user(acme_user.id)
    tenants = {r.tenant_id for r in env["standin"].requests if r.path.endswith("/oauth2/v2.0/token")}
    assert {ms.entra_tenants()[t].entra_tenant_id for t in ("acme", "globex")} <= tenants


# --- the containment -------------------------------------------------------------------------------------
def test_disable_five_times_is_one_change_and_mfa_reset(env: dict[str, Any]) -> None:
    standin = env["standin"]
    before = len(standin.requests)
    upn = _upn("jdoe", "globex")
    for _ in range(5):
        hook = _graph("entra-user-disable", "globex")
        user = hook.get_user(upn)
        if user.account_enabled:
            hook.revoke_sessions(user)
            assert hook.set_account_enabled(user, False) is True
        else:
            assert hook.set_account_enabled(user, False) is False
        hook.delete_mfa_methods(user)
    log = standin.requests[before:]
    assert [r.method for r in log].count("PATCH") == 1
    assert [r.method for r in log].count("DELETE") == 2  # authenticator + phone, once
    state = standin.tenant(ms.entra_tenants()["globex"].entra_tenant_id)
    assert state.users[user.id]["accountEnabled"] is False
    assert [m["@odata.type"] for m in state.methods[user.id]] == [
        "#microsoft.graph.passwordAuthenticationMethod"
    ]
    assert _graph("entra-user-enable", "globex").set_account_enabled(user, True) is True
    assert state.users[user.id]["accountEnabled"] is True


def test_the_read_only_app_cannot_disable(env: dict[str, Any]) -> None:
    hook = _graph("entra-user-inspect", "acme")
    user = hook.get_user(_upn("svc-backup", "acme"))
    with pytest.raises(PermanentError, match="403: Authorization_RequestDenied"):
        hook.request(
            "PATCH",
            "users/{id}",
            operation="disable",
            path_parameters={"id": user.id},
            data={"accountEnabled": False},
        )


# --- throttling --------------------------------------------------------------------------------------------
def test_a_429_with_retry_after_is_waited_out(env: dict[str, Any]) -> None:
    standin = env["standin"]
    hook = _graph("entra-user-inspect", "globex")
    hook.get_user(_upn("mallory", "globex"))
    before = len(standin.requests)
    standin.throttle(2, retry_after=1)
    began = time.monotonic()
    user = hook.get_user(_upn("mallory", "globex"))
    waited = time.monotonic() - began
    assert user.user_principal_name == _upn("mallory", "globex")
    assert [r.status for r in standin.requests[before:]] == [429, 429, 200]
    log = standin.requests[before:]
    assert log[1].at - log[0].at >= 0.95  # Retry-After honoured
    assert log[2].at - log[1].at >= 0.95
    assert waited >= 1.9
    assert hook.retry_count == 2


def _worker(args: tuple[str, int]) -> list[float]:
    aws_env, calls = args
    import os

    os.environ[f"AIRFLOW_CONN_{AWS_CONN.upper()}"] = aws_env
    hook = _graph("entra-user-enable", "acme")
    user = hook.get_user(_upn("jdoe", "acme"))
    stamps = []
    for _ in range(calls):
        hook.get_user(user.id)
        stamps.append(time.time())
    return stamps


def test_the_shared_limiter_keeps_two_processes_under_the_budget(env: dict[str, Any]) -> None:
    import os

    from bench import ratelimit as bench
    from tests.support.stores import postgres_database

    standin = env["standin"]
    name = "orchestrator/acme/entra-user-enable/msgraph"
    budget, window = 8, 1.0
    with postgres_database(PROFILE, bench.DATABASE):
        limited = _connection(
            "acme",
            "entra-user-enable",
            rate_limit_per_second=budget / window,
            rate_limit_burst=budget,
            rate_limit_store_dsn=bench.store_dsn(PROFILE),
            # 25 %: a fresh process's first call (TLS handshake, kiota's lazy imports, a loaded 2-core
            # box) can arrive 100-200 ms after its permit, more than the default 5 % of a 1 s window.
            rate_limit_safety_margin=0.25,
        )
        env["secrets"]["acme"].put_secret_value(SecretId=name, SecretString=json.dumps(limited))
        standin.budget_per_window, standin.budget_window = budget, window
        before = len(standin.requests)
        try:
            aws_env = os.environ[f"AIRFLOW_CONN_{AWS_CONN.upper()}"]
            with multiprocessing.get_context("spawn").Pool(2) as pool:
                began = time.monotonic()
                results = pool.map(_worker, [(aws_env, 15), (aws_env, 15)])
                elapsed = time.monotonic() - began
        finally:
            standin.budget_per_window = None
            env["secrets"]["acme"].put_secret_value(
                SecretId=name, SecretString=json.dumps(_connection("acme", "entra-user-enable"))
            )
    log = [r for r in standin.requests[before:] if r.path.startswith("/v1.0/")]
    assert [r.status for r in log if r.status != 200] == []  # the service never had to refuse
    assert len(log) == 32
    assert sum(len(r) for r in results) == 30
    # 32 calls at 8 per window of 1.25 s: at least 3 full windows after the first burst
    assert elapsed >= 3.0


# --- Defender for Endpoint ---------------------------------------------------------------------------------
def _defender(capability: str, tenant: str) -> DefenderHook:
    return DefenderHook(capability=capability, tenant=tenant, run_context=_run(tenant), aws_conn_id=AWS_CONN)


def test_isolate_five_times_is_one_action_that_completes_then_release_once(env: dict[str, Any]) -> None:
    standin = env["standin"]
    standin.action_seconds = 0.6
    machine = ms.hashlib_id("acme", "ws-001")
    entra = ms.entra_tenants()["acme"].entra_tenant_id
    try:
        created = [
            _defender("device-isolate", "acme").isolate_once(machine, "alert DEF-1", "Selective")[1]
            for _ in range(5)
        ]
        assert created == [True, False, False, False, False]
        inspect = _defender("device-inspect", "acme")
        (action,) = inspect.machine_actions(machine)
        assert (action["type"], action["scope"]) == ("Isolate", "Selective")
        deadline = time.monotonic() + 10
        seen = []
        while (
            status := inspect.get_action(action["id"])["status"]
        ) != "Succeeded" and time.monotonic() < deadline:
            seen.append(status)
            time.sleep(0.1)
        assert status == "Succeeded"
        assert set(seen) <= {"Pending", "InProgress"}
        assert standin.machine_isolated(entra, machine)
        released = [
            _defender("device-isolate", "acme").release_once(machine, "false positive")[1] for _ in range(3)
        ]
        assert released == [True, False, False]
        time.sleep(0.7)
        assert not standin.machine_isolated(entra, machine)
    finally:
        standin.action_seconds = 4.0


def test_defender_refusals(env: dict[str, Any]) -> None:
    standin = env["standin"]
    globex_machine = ms.hashlib_id("globex", "ws-001")
    before = len(standin.requests)
    with pytest.raises(MicrosoftInputError, match="not a Defender machine id"):
        _defender("device-isolate", "acme").isolate_once("ws-001; rm", "x")
    assert standin.requests[before:] == []
    with pytest.raises(
        MicrosoftInputError, match=f"machine '{globex_machine}' not found in Defender of 'acme'"
    ):
        _defender("device-isolate", "acme").isolate_once(globex_machine, "x")
    with pytest.raises(PermanentError, match="403: Forbidden"):
        _defender("device-inspect", "acme").isolate(ms.hashlib_id("acme", "srv-db-01"), "x")
    assert not standin.machine_isolated(ms.entra_tenants()["globex"].entra_tenant_id, globex_machine)


def test_the_machine_action_trigger_fires_when_the_isolation_succeeded(env: dict[str, Any]) -> None:
    import asyncio
    from dataclasses import asdict

    from include.triggers.microsoft import MachineActionTrigger

    standin = env["standin"]
    standin.action_seconds = 0.6
    machine = ms.hashlib_id("globex", "srv-db-01")
    try:
        action, created = _defender("device-isolate", "globex").isolate_once(machine, "alert DEF-2")
        assert created is True
        trigger = MachineActionTrigger(
            tenant="globex",
            action_id=action["id"],
            run_context=asdict(_run("globex")),
            poll_interval=0.2,
            timeout_seconds=30,
            aws_conn_id=AWS_CONN,
        )

        async def first() -> dict[str, Any]:
            async for event in trigger.run():
                return dict(event.payload)
            raise AssertionError("no event")

        event = asyncio.run(first())
        assert event["status"] == "Succeeded"
        assert event["action"]["machineId"] == machine
        assert standin.machine_isolated(ms.entra_tenants()["globex"].entra_tenant_id, machine)
    finally:
        standin.action_seconds = 4.0
