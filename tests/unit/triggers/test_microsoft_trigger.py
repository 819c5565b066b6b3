"""MachineActionTrigger with a mocked Defender hook: it fires once the action is final (or at the
timeout), survives a failed poll, round-trips through serialize, reads with the read-only app only,
and refuses another tenant's run."""

from __future__ import annotations

import asyncio
from typing import Any
from unittest import mock

import pytest

from include.triggers.microsoft import MachineActionTrigger

RUN = {
    "dag_id": "soc_isolate_device",
    "run_id": "r1",
    "task_id": "isolate",
    "tenant": "acme",
    "correlation_id": "c",
}


def _trigger(**kwargs: Any) -> MachineActionTrigger:
    return MachineActionTrigger(tenant="acme", action_id="a-1", run_context=RUN, poll_interval=0.01, **kwargs)


def _events(trigger: MachineActionTrigger, answers: list[Any]) -> list[dict[str, Any]]:
    hook = mock.MagicMock()
    hook.get_action.side_effect = answers

    async def collect() -> list[dict[str, Any]]:
        return [event.payload async for event in trigger.run()]

    with mock.patch.object(MachineActionTrigger, "_hook", return_value=hook):
        return asyncio.run(collect())


def test_fires_once_the_action_is_final() -> None:
    answers = [
        {"status": "Pending"},
        RuntimeError("blip"),
        {"status": "InProgress"},
        {"status": "Succeeded", "id": "a-1"},
    ]
    (event,) = _events(_trigger(), answers)
    assert event == {
        "status": "Succeeded",
        "action_id": "a-1",
        "action": {"status": "Succeeded", "id": "a-1"},
    }


def test_fires_timeout_when_the_action_never_ends() -> None:
    (event,) = _events(_trigger(timeout_seconds=0.0), [{"status": "Pending"}])
    assert event["status"] == "timeout"
    assert event["action"] == {"status": "Pending"}


def test_serialize_round_trip_keeps_the_start() -> None:
    trigger = _trigger(timeout_seconds=60)
    path, kwargs = trigger.serialize()
    assert path == "include.triggers.microsoft.MachineActionTrigger"
    again = MachineActionTrigger(**kwargs)
    assert again.serialize() == (path, kwargs)
    assert kwargs["started_at"] == trigger.started_at


def test_reads_with_the_read_only_app_and_refuses_another_tenants_run() -> None:
    from include.policies.capabilities import get_capability

    with mock.patch("include.connectors.microsoft.DefenderHook") as hook:
        _trigger()._hook()
    assert hook.call_args.kwargs["capability"] == "device-inspect"
    assert get_capability("device-inspect").read_only
    assert hook.call_args.kwargs["run_context"].tenant == "acme"
    with pytest.raises(ValueError, match="run of tenant 'acme' cannot wait on tenant 'globex'"):
        MachineActionTrigger(tenant="globex", action_id="a-1", run_context=RUN)
