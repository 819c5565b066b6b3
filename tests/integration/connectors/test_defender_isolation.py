"""The SOC's Defender device steps (InspectDeviceOperator, IsolateDeviceOperator, ReleaseDeviceOperator)
against the Entra/Defender stand-in over HTTPS, each tenant's apps read from its own AWS account in
moto as the capability roles: two tenants (acme, globex).

- a machine by host name, DNS name or id; isolate defers to MachineActionTrigger (run here, in
  process, as the triggerer would) and completes when Defender's action succeeds; the same step
  five times is one machine action; two runs racing past the search get one action (Defender's 400
  ``ActiveRequestAlreadyExists`` is "already done", the pending action the answer);
- release has its own app and capability, once; a machine never isolated is left as it is;
- refused before any side effect: a machine of another tenant by id (acme's Defender does not know
  it: no call with globex's app), by DNS name (refused before any call), an unknown or an ambiguous
  name, a malformed key; a failed machine action fails the task with the reason.

The approval check itself (``RequiresApproval.execute``) is tested in tests/unit; here ``act`` runs.
Own profile ``defender-itest``: the stand-in on 127.0.0.1:26745 (api_port 26700 + 45).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from typing import Any
from unittest import mock

import pytest
from airflow.sdk.exceptions import AirflowFailException, TaskDeferred

from devstack.aws_seed import account_client, seed_capability_roles
from devstack.config import Profile
from devstack.standins import microsoft as ms
from include.connectors.context import RunContext
from include.connectors.microsoft import DefenderHook
from include.operators.microsoft import (
    InspectDeviceOperator,
    IsolateDeviceOperator,
    ReleaseDeviceOperator,
    _DeviceStep,
)
from include.policies.tenants import tenant_account_id
from tests.support.moto import moto_with_aws_connection

REGION = "eu-west-1"
AWS_CONN = "aws_defender_itest"
PROFILE = Profile(name="defender-itest", api_port=26700, pg_port=0, moto_port=0, smtp_port=0)
CONTEXT: dict[str, Any] = {"ti": mock.MagicMock()}


def _entra(tenant: str) -> str:
    return str(ms.entra_tenants()[tenant].entra_tenant_id)


@pytest.fixture(scope="module")
def env() -> Iterator[dict[str, Any]]:
    tls = ms.ensure_certificates(ms.tls_dir(PROFILE))
    config = ms.standin_config(PROFILE)
    # two acme machines share the host name "kiosk" (a re-imaged device's stale record, say)
    config[_entra("acme")]["machines"] += [
        {"id": ms.hashlib_id("acme", "kiosk"), "computerDnsName": "kiosk.acme.example"},
        {"id": ms.hashlib_id("acme", "kiosk-lab"), "computerDnsName": "kiosk.lab.acme.example"},
    ]
    standin = ms.MicrosoftStandIn(
        config, cert_file=tls.cert_file, key_file=tls.key_file, port=ms.port(PROFILE), action_seconds=0.6
    )
    with moto_with_aws_connection(AWS_CONN, REGION) as url, standin:
        seed_capability_roles(url, REGION)
        for tenant in ("acme", "globex"):
            client = account_client("secretsmanager", tenant_account_id(tenant), url, REGION)
            for capability in ms.DEFENDER_CAPABILITY_ROLES:
                conn = ms.connection(PROFILE, tenant, capability, defender=True)
                for key in ("rate_limit_per_second", "rate_limit_burst"):  # no shared store here
                    conn["extra"].pop(key)
                client.create_secret(
                    Name=f"orchestrator/{tenant}/{capability}/defender", SecretString=json.dumps(conn)
                )
        with mock.patch("include.operators.microsoft.audit_side_effect") as audit:
            yield {"standin": standin, "audit": audit}


def _step(cls: type[_DeviceStep], tenant: str, machine: str, **kwargs: Any) -> Any:
    task_id = {InspectDeviceOperator: "inspect_device", IsolateDeviceOperator: "isolate_device"}.get(
        cls, "release_device"
    )
    op = cls(task_id=task_id, tenant=tenant, machine=machine, aws_conn_id=AWS_CONN, **kwargs)
    run = RunContext(f"soc_{task_id}", f"manual__{tenant}", task_id, tenant, f"corr-{tenant}-1")
    op.__dict__["hook"] = DefenderHook(
        capability=op.capability, tenant=tenant, run_context=run, aws_conn_id=AWS_CONN
    )
    return op


def _run_to_the_end(op: Any) -> dict[str, Any]:
    """``act``; when it defers, run its trigger as the triggerer would, then resume the task."""
    try:
        return dict(op.act(CONTEXT))
    except TaskDeferred as deferred:
        trigger = deferred.trigger
        trigger.poll_interval = 0.1

        async def first() -> dict[str, Any]:
            async for event in trigger.run():
                return dict(event.payload)
            raise AssertionError("the trigger ended without an event")

        event = asyncio.run(first())
        method = getattr(op, deferred.method_name)  # execute_complete
        return dict(method(CONTEXT, event=event, **(deferred.kwargs or {})))


def _actions(standin: ms.MicrosoftStandIn, tenant: str, machine_id: str) -> list[dict[str, Any]]:
    return [a for a in standin.records()["machine_actions"][_entra(tenant)] if a["machineId"] == machine_id]


def test_inspect_resolves_a_host_name_read_only(env: dict[str, Any]) -> None:
    standin = env["standin"]
    before = len(standin.requests)
    result = _step(InspectDeviceOperator, "globex", "SRV-DB-01").execute(CONTEXT)
    assert result["id"] == ms.hashlib_id("globex", "srv-db-01")
    assert result["computer_dns_name"] == "srv-db-01.globex.example"
    assert result["latest_action"] is None
    assert "never isolated" in result["markdown"]
    assert {r.method for r in standin.requests[before:]} == {"GET", "POST"}  # POST: the token only
    assert all("/oauth2/" in r.path for r in standin.requests[before:] if r.method == "POST")


def test_isolate_two_tenants_deferred_then_four_reruns_make_no_second_action(env: dict[str, Any]) -> None:
    standin, audit = env["standin"], env["audit"]
    acme_id, globex_id = ms.hashlib_id("acme", "ws-001"), ms.hashlib_id("globex", "srv-db-01")
    acme = _run_to_the_end(_step(IsolateDeviceOperator, "acme", "ws-001", isolation_type="Selective"))
    globex = _run_to_the_end(_step(IsolateDeviceOperator, "globex", globex_id))
    assert (acme["machine_id"], acme["status"], acme["scope"], acme["created"]) == (
        acme_id,
        "Succeeded",
        "Selective",
        True,
    )
    assert (globex["status"], globex["scope"], globex["created"]) == ("Succeeded", "Full", True)
    assert audit.call_args.kwargs["operation"] == "isolate-device"
    assert audit.call_args.kwargs["capability"] == "device-isolate"
    (action,) = _actions(standin, "acme", acme_id)
    assert "correlation id corr-acme-1" in action["requestorComment"]
    assert standin.machine_isolated(_entra("acme"), acme_id)

    for key in ("ws-001", "ws-001.acme.example", acme_id, acme_id.upper()):  # 4 more, by any key
        again = _run_to_the_end(_step(IsolateDeviceOperator, "acme", key, isolation_type="Selective"))
        assert (again["action_id"], again["created"]) == (acme["action_id"], False)
        assert audit.call_args.kwargs["created"] is False
    assert len(_actions(standin, "acme", acme_id)) == 1
    assert len(_actions(standin, "globex", globex_id)) == 1


def test_release_once_with_its_own_app_and_a_machine_never_isolated_is_left_alone(
    env: dict[str, Any],
) -> None:
    standin = env["standin"]
    machine = ms.hashlib_id("globex", "ws-001")
    first = _run_to_the_end(_step(IsolateDeviceOperator, "globex", "ws-001.globex.example"))
    assert first["status"] == "Succeeded"
    release = _step(ReleaseDeviceOperator, "globex", "ws-001")
    assert release.hook.capability == "device-release"
    released = _run_to_the_end(release)
    assert (released["type"], released["status"], released["created"]) == ("Unisolate", "Succeeded", True)
    assert not standin.machine_isolated(_entra("globex"), machine)
    again = _run_to_the_end(_step(ReleaseDeviceOperator, "globex", "ws-001"))
    assert (again["action_id"], again["created"]) == (released["action_id"], False)
    assert [a["type"] for a in _actions(standin, "globex", machine)] == ["Isolate", "Unisolate"]
    never = _run_to_the_end(_step(ReleaseDeviceOperator, "acme", "srv-db-01"))
    assert (never["status"], never["action_id"], never["created"]) == ("not-isolated", "", False)
    assert _actions(standin, "acme", ms.hashlib_id("acme", "srv-db-01")) == []


def test_two_runs_racing_past_the_search_get_one_action(env: dict[str, Any]) -> None:
    """The second run searched before the first one's POST landed: Defender answers its POST 400
    ActiveRequestAlreadyExists, and the pending isolation is its answer."""
    standin = env["standin"]
    machine = ms.hashlib_id("acme", "kiosk")
    standin.action_seconds = 60  # the first run's action stays pending
    try:
        first = _step(IsolateDeviceOperator, "acme", machine)
        with pytest.raises(TaskDeferred):
            first.act(CONTEXT)
        second = _step(IsolateDeviceOperator, "acme", machine)
        real = second.hook.latest_isolation_action
        with (
            mock.patch.object(second.hook, "latest_isolation_action", side_effect=[None, real(machine)]),
            pytest.raises(TaskDeferred) as deferred,
        ):
            second.act(CONTEXT)
    finally:
        standin.action_seconds = 0.6
    assert (deferred.value.kwargs or {})["created"] is False
    assert deferred.value.trigger.action_id == first_action_id(standin, machine)
    posts = [r for r in standin.requests if r.method == "POST" and r.path.endswith(f"{machine}/isolate")]
    assert [r.status for r in posts] == [201, 400]
    assert len(_actions(standin, "acme", machine)) == 1


def first_action_id(standin: ms.MicrosoftStandIn, machine: str) -> str:
    return str(_actions(standin, "acme", machine)[0]["id"])


def _globex_calls(standin: ms.MicrosoftStandIn, since: int) -> list[Any]:
    globex = _entra("globex")
    return [r for r in standin.requests[since:] if r.tenant_id == globex or globex in r.path]


@pytest.mark.parametrize(
    ("machine", "message", "calls"),
    [
        (ms.hashlib_id("globex", "srv-db-01"), "not found in Defender of 'acme'", True),
        ("srv-db-01.globex.example", "is in a domain of tenant 'globex', not of 'acme': refused", False),
        ("ws-999", "no machine named 'ws-999' in Defender of 'acme'", True),
        ("kiosk", "machine name 'kiosk' is ambiguous in Defender of 'acme'", True),
        ("ws-001; rm -rf", "neither a Defender machine id (40 hex digits) nor a machine name", False),
    ],
)
def test_bad_machines_are_refused_before_any_side_effect(
    env: dict[str, Any], machine: str, message: str, calls: bool
) -> None:
    standin = env["standin"]
    op = _step(IsolateDeviceOperator, "acme", machine)
    op.hook.ready()  # the token: not what is under test
    before, actions = len(standin.requests), standin.records()["machine_actions"]
    with pytest.raises(AirflowFailException, match=f"^isolate_device: .*{re.escape(message)}"):
        op.act(CONTEXT)
    seen = standin.requests[before:]
    assert [(r.method, r.path.split("?")[0]) for r in seen if r.method != "GET"] == []  # no side effect
    assert bool(seen) is calls
    assert _globex_calls(standin, before) == []  # never globex's app, never globex's data
    assert standin.records()["machine_actions"] == actions


def test_a_failed_machine_action_fails_the_task_with_the_reason(env: dict[str, Any]) -> None:
    op = _step(IsolateDeviceOperator, "acme", "srv-db-01")
    summary = {"machine_id": "m", "computer_dns_name": "srv-db-01.acme.example"}
    failed = {
        "status": "Failed",
        "action_id": "a-1",
        "action": {"id": "a-1", "type": "Isolate", "status": "Failed"},
    }
    with pytest.raises(AirflowFailException, match=r"a-1 \(Isolate\) on srv-db-01.acme.example ended Failed"):
        op.execute_complete(CONTEXT, event=failed, summary=summary, created=True)
    late = {"status": "timeout", "action_id": "a-2", "action": {"id": "a-2", "status": "Pending"}}
    with pytest.raises(AirflowFailException, match=r"did not complete within 540 s \(last status Pending\)"):
        op.execute_complete(CONTEXT, event=late, summary=summary, created=True)
