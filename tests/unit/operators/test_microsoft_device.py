"""The Defender device steps with a mocked Defender hook: what is started, when the step defers (and
to which trigger), re-runs that start nothing, the refusals before any change, the completion, the
approval binding. The steps run against the stand-in in
tests/integration/connectors/test_defender_isolation.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from unittest import mock

import pytest
from airflow.sdk.exceptions import AirflowFailException, TaskDeferred

from include.approvals.verify import RequiresApproval
from include.connectors.context import RunContext
from include.connectors.microsoft import MicrosoftInputError, TenantCredentialError
from include.operators.microsoft import InspectDeviceOperator, IsolateDeviceOperator, ReleaseDeviceOperator
from include.policies.approvals import load_approvals
from include.policies.capabilities import get_capability
from include.triggers.microsoft import MachineActionTrigger

CONTEXT: dict[str, Any] = {"ti": mock.MagicMock()}
MACHINE = {"id": "a" * 40, "computerDnsName": "ws-001.acme.example", "osPlatform": "Windows11"}
RUN = RunContext("soc_isolate_device", "manual__1", "isolate_device", "acme", "corr-0123456789abcdef")
PENDING = {
    "id": "act-1",
    "type": "Isolate",
    "scope": "Selective",
    "status": "Pending",
    "requestor": "client-1",
    "creationDateTimeUtc": "2026-12-07T05:00:00Z",
}


@pytest.fixture
def audit() -> Iterator[mock.MagicMock]:
    with mock.patch("include.operators.microsoft.audit_side_effect") as side_effect:
        yield side_effect


def _op(cls: type, **kwargs: Any) -> Any:
    op = cls(
        task_id="isolate_device" if cls is IsolateDeviceOperator else "release_device",
        tenant="acme",
        machine="ws-001",
        **kwargs,
    )
    hook = mock.MagicMock()
    hook.run_context = RUN
    hook.find_machine.return_value = MACHINE
    op.__dict__["hook"] = hook
    return op


def test_isolate_starts_once_then_defers_to_the_read_only_trigger(audit: mock.MagicMock) -> None:
    op = _op(IsolateDeviceOperator, isolation_type="Selective", comment="alert DEF-1", poll_interval=2)
    op.hook.isolate_once.return_value = (PENDING, True)

    with pytest.raises(TaskDeferred) as deferred:
        op.act(CONTEXT)

    op.hook.find_machine.assert_called_once_with("ws-001")
    machine_id, comment, isolation = op.hook.isolate_once.call_args.args
    assert (machine_id, isolation) == ("a" * 40, "Selective")
    assert comment == "alert DEF-1 (correlation id corr-0123456789abcdef)"
    trigger = deferred.value.trigger
    assert isinstance(trigger, MachineActionTrigger)
    assert (trigger.tenant, trigger.action_id, trigger.poll_interval) == ("acme", "act-1", 2)
    assert trigger.run_context["correlation_id"] == RUN.correlation_id
    assert trigger.timeout_seconds < 600  # under the SOC fast path's 10 min execution timeout
    assert deferred.value.method_name == "execute_complete"
    assert deferred.value.kwargs == {
        "summary": {"machine_id": "a" * 40, "computer_dns_name": "ws-001.acme.example"},
        "created": True,
    }
    assert audit.call_args.kwargs["operation"] == "isolate-device"
    assert audit.call_args.kwargs["created"] is True
    assert audit.call_args.kwargs["action_id"] == "act-1"

    done = op.execute_complete(
        CONTEXT,
        event={"status": "Succeeded", "action_id": "act-1", "action": {**PENDING, "status": "Succeeded"}},
        **deferred.value.kwargs,
    )
    assert (done["action_id"], done["status"], done["scope"], done["created"]) == (
        "act-1",
        "Succeeded",
        "Selective",
        True,
    )


def test_an_isolation_already_done_is_returned_without_waiting(audit: mock.MagicMock) -> None:
    op = _op(IsolateDeviceOperator)
    op.hook.isolate_once.return_value = ({**PENDING, "status": "Succeeded"}, False)
    result = op.act(CONTEXT)  # no TaskDeferred
    assert (result["status"], result["created"], result["requestor"]) == ("Succeeded", False, "client-1")
    assert audit.call_args.kwargs["created"] is False


@pytest.mark.parametrize(
    "error",
    [
        MicrosoftInputError("machine name 'ws-001' is ambiguous in Defender of 'acme': ..."),
        MicrosoftInputError("no machine named 'ws-001' in Defender of 'acme'"),
        TenantCredentialError("defender: credential refused"),
    ],
)
def test_bad_machines_fail_the_task_before_any_change(audit: mock.MagicMock, error: Exception) -> None:
    op = _op(IsolateDeviceOperator)
    op.hook.find_machine.side_effect = error
    with pytest.raises(AirflowFailException, match=r"^isolate_device: "):
        op.act(CONTEXT)
    op.hook.isolate_once.assert_not_called()
    audit.assert_not_called()


@pytest.mark.parametrize(
    ("event", "message"),
    [
        (
            {"status": "Failed", "action_id": "act-1", "action": {**PENDING, "status": "Failed"}},
            r"machine action act-1 \(Isolate\) on ws-001.acme.example ended Failed",
        ),
        (
            {"status": "timeout", "action_id": "act-1", "action": PENDING},
            r"did not complete within 540 s \(last status Pending\); it stays pending in Defender",
        ),
    ],
)
def test_an_action_that_does_not_succeed_fails_the_task(event: dict[str, Any], message: str) -> None:
    summary = {"machine_id": "a" * 40, "computer_dns_name": "ws-001.acme.example"}
    with pytest.raises(AirflowFailException, match=message):
        _op(IsolateDeviceOperator).execute_complete(CONTEXT, event=event, summary=summary, created=True)


def test_release_of_a_machine_not_isolated_changes_nothing(audit: mock.MagicMock) -> None:
    op = _op(ReleaseDeviceOperator)
    op.hook.release_once.return_value = ({}, False)
    result = op.act(CONTEXT)
    assert (result["status"], result["action_id"], result["created"]) == ("not-isolated", "", False)
    assert audit.call_args.kwargs["operation"] == "release-device"
    assert audit.call_args.kwargs["capability"] == "device-release"


def test_inspect_shows_the_newest_isolation_action() -> None:
    op = InspectDeviceOperator(task_id="inspect_device", tenant="acme", machine="ws-001")
    op.__dict__["hook"] = hook = mock.MagicMock()
    hook.find_machine.return_value = MACHINE
    hook.latest_isolation_action.return_value = {**PENDING, "lastUpdateDateTimeUtc": "2026-12-07T05:00:02Z"}
    result = op.execute(CONTEXT)
    assert result["id"] == "a" * 40
    assert result["latest_action"]["status"] == "Pending"
    assert "newest action Isolate (Selective) Pending" in result["markdown"]
    assert InspectDeviceOperator.capability == "device-inspect"
    assert get_capability("device-inspect").read_only


def test_privileged_steps_need_their_own_approval_bound_to_what_they_act_on() -> None:
    assert issubclass(IsolateDeviceOperator, RequiresApproval)
    assert issubclass(ReleaseDeviceOperator, RequiresApproval)
    assert not issubclass(InspectDeviceOperator, RequiresApproval)
    assert (IsolateDeviceOperator.capability, ReleaseDeviceOperator.capability) == (
        "device-isolate",
        "device-release",
    )
    assert get_capability("device-isolate").privileged
    assert get_capability("device-release").privileged
    assert set(IsolateDeviceOperator.artifact_fields) == {"machine", "tenant", "isolation_type"}
    assert set(ReleaseDeviceOperator.artifact_fields) == {"machine", "tenant"}
    # a Selective approval cannot isolate Full, nor one machine's approval another
    selective = _op(IsolateDeviceOperator, isolation_type="Selective").expected_artifact(CONTEXT)
    assert selective != _op(IsolateDeviceOperator, isolation_type="Full").expected_artifact(CONTEXT)
    other = _op(IsolateDeviceOperator, isolation_type="Selective")
    other.machine = "ws-002"
    assert other.expected_artifact(CONTEXT) != selective
    for action in ("device-isolate", "device-release"):  # the SOC ladder, escalating to the officers
        rule = load_approvals().rule("soc", action)
        assert [set(step.any_of) for step in rule.steps] == [{"soc_lead", "soc_oncall"}]
        assert rule.escalate_to == ("security_officer",)


def test_a_name_that_resolves_to_another_machine_than_the_approved_one_is_refused(
    audit: mock.MagicMock,
) -> None:
    """The approver saw machine id a…a (inspect_device); the name now resolves elsewhere (a device
    renamed to it meanwhile): nothing is isolated."""
    op = _op(IsolateDeviceOperator, machine_id="b" * 40)
    with pytest.raises(
        AirflowFailException, match=r"resolves to a{40} now, not to the b{40} shown .*refused"
    ):
        op.act(CONTEXT)
    op.hook.isolate_once.assert_not_called()
    audit.assert_not_called()
    same = _op(IsolateDeviceOperator, machine_id="A" * 40)  # the same id, any case: acts
    same.hook.isolate_once.return_value = ({**PENDING, "status": "Succeeded"}, False)
    assert same.act(CONTEXT)["machine_id"] == "a" * 40
