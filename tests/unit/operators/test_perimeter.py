"""The perimeter steps with a mocked hook: the input refused before any call, the exact hook calls,
the deferral of the wait, the audit records. The hook: tests/unit/connectors/test_perimeter_hook.py and
tests/integration/connectors/test_perimeter_blocklist.py; the workflow:
tests/e2e/test_soc_block_indicator.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest import mock

import pytest
from airflow.providers.standard.triggers.temporal import DateTimeTrigger
from airflow.sdk import DAG
from airflow.sdk.exceptions import AirflowFailException, TaskDeferred

from include.approvals.verify import RequiresApproval, params_artifact
from include.connectors.perimeter import BlockPlan, Expiry, PerimeterError, PerimeterHook
from include.operators import perimeter as module
from include.operators.perimeter import (
    TAIL,
    BlockIndicatorOperator,
    InspectIndicatorOperator,
    UnblockIndicatorOperator,
    WaitForBlockExpiryOperator,
    max_block_duration,
)

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
EXPIRES = "2026-12-06T12:30:00Z"
T1 = datetime(2026, 12, 6, 12, 30, tzinfo=UTC)
IP = "45.155.205.7"
NET = "45.155.205.7/32"
ROLE = "arn:aws:iam::222222222222:role/orchestrator-perimeter-block"
IP_SET_ARN = "arn:aws:wafv2:eu-west-1:222222222222:regional/ipset/orchestrator-globex-blocklist-ipv4/id"
STEP = {"tenant": "globex", "indicator": IP, "expires_at": EXPIRES}
CONTEXT: dict[str, Any] = {"ti": mock.MagicMock(task_id="step")}
PLAN = BlockPlan(
    indicator=NET,
    ip_set="orchestrator-globex-blocklist-ipv4",
    ip_set_arn=IP_SET_ARN,
    entries=3,
    blocked=False,
    expiry=None,
)


@pytest.fixture(autouse=True)
def now() -> Iterator[None]:
    with mock.patch.object(module, "utcnow", return_value=NOW):
        yield


def _hook(operator_class: type) -> Any:
    return mock.patch.object(operator_class, "hook", new_callable=mock.PropertyMock)


@pytest.fixture
def audit() -> Iterator[mock.MagicMock]:
    with mock.patch("include.operators.perimeter.audit_side_effect") as side_effect:
        yield side_effect


def test_the_longest_block_is_the_soc_run_limit_less_approval_and_tail() -> None:
    # domains.yaml soc infrastructure_change dagrun_timeout 4h; approvals: one step, 15 min ladder.
    assert max_block_duration() == timedelta(hours=4) - timedelta(minutes=15) - TAIL


def test_inspect_checks_then_plans_read_only() -> None:
    with _hook(InspectIndicatorOperator) as prop:
        prop.return_value.plan_block.return_value = PLAN
        result = InspectIndicatorOperator(task_id="inspect_indicator", **STEP).execute(CONTEXT)

    prop.return_value.plan_block.assert_called_once_with(IP)
    assert result == {**PLAN.as_xcom(), "expires_at": T1.isoformat(), "markdown": PLAN.markdown(T1)}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"indicator": "evil.example.com"}, "inspect_indicator: indicator 'evil.example.com' is a domain"),
        ({"indicator": "10.0.0.0/24"}, "inspect_indicator: indicator '10.0.0.0/24' is not a public"),
        ({"indicator": "45.0.0.0/8"}, "inspect_indicator: indicator '45.0.0.0/8' is too wide"),
        (
            {"expires_at": "2026-12-06T11:00:00Z"},
            "inspect_indicator: expires_at 2026-12-06T11:00:00+00:00 is in the past",
        ),
        ({"expires_at": "2026-12-07T12:00:00Z"}, "beyond the policy maximum of 3:25:00 from now"),
        ({"expires_at": "2026-12-06T12:30:00"}, "has no time zone"),
        ({"tenant": "initech"}, "inspect_indicator: tenant 'initech' is not a customer tenant"),
    ],
)
def test_bad_input_fails_the_inspection_before_any_aws_call(change: dict[str, str], message: str) -> None:
    with _hook(InspectIndicatorOperator) as prop:
        operator = InspectIndicatorOperator(task_id="inspect_indicator", **{**STEP, **change})
        with pytest.raises(AirflowFailException) as refused:
            operator.execute(CONTEXT)

    assert message in str(refused.value)
    prop.assert_not_called()  # the hook (and its AssumeRole) was never even built


def test_block_acts_through_the_hook_and_audits_the_change(audit: mock.MagicMock) -> None:
    done = {
        "indicator": NET,
        "ip_set": "orchestrator-globex-blocklist-ipv4",
        "ip_set_arn": IP_SET_ARN,
        "added": True,
        "expires_at": T1.isoformat(),
        "requested_expires_at": T1.isoformat(),
        "previous_expires_at": None,
        "extended": False,
        "correlation_id": "ALERT-9",
    }
    with _hook(BlockIndicatorOperator) as prop:
        prop.return_value.block.return_value = done
        prop.return_value.role_arn = ROLE
        result = BlockIndicatorOperator(task_id="block_indicator", **STEP).act(CONTEXT)

    prop.return_value.block.assert_called_once_with(IP, T1)
    assert result == done
    audit.assert_called_once_with(
        CONTEXT,
        system="aws",
        operation="block-indicator",
        object_id=NET,
        tenant="globex",
        created=True,
        capability="perimeter-block",
        role_arn=ROLE,
        ip_set_arn=IP_SET_ARN,
        expires_at=T1.isoformat(),
        previous_expires_at=None,
        extended=False,
        correlation_id="ALERT-9",
    )


def test_an_expiry_passed_during_the_approval_blocks_nothing(audit: mock.MagicMock) -> None:
    with (
        _hook(BlockIndicatorOperator) as prop,
        mock.patch.object(module, "utcnow", return_value=T1),
        pytest.raises(AirflowFailException, match=r"^block_indicator: expires_at .* is in the past"),
    ):
        BlockIndicatorOperator(task_id="block_indicator", **STEP).act(CONTEXT)
    prop.assert_not_called()
    audit.assert_not_called()


def test_a_hook_refusal_fails_the_block_at_once(audit: mock.MagicMock) -> None:
    with _hook(BlockIndicatorOperator) as prop:
        prop.return_value.block.side_effect = PerimeterError("tenant globex has no WAF IP set x")
        with pytest.raises(
            AirflowFailException, match=r"^block_indicator: tenant globex has no WAF IP set x$"
        ):
            BlockIndicatorOperator(task_id="block_indicator", **STEP).act(CONTEXT)
    audit.assert_not_called()


def _expiry(at: datetime, run_id: str = "manual__1") -> Expiry:
    return Expiry(expires_at=at, run_id=run_id, correlation_id="ALERT-9", version=1)


def _wait_context(start: datetime = NOW) -> dict[str, Any]:
    return {**CONTEXT, "dag_run": mock.Mock(start_date=start)}


def _wait(
    dagrun_timeout: timedelta = timedelta(hours=4), expires_at: str = EXPIRES
) -> WaitForBlockExpiryOperator:
    with DAG("soc_block_indicator_test", schedule=None, dagrun_timeout=dagrun_timeout):
        return WaitForBlockExpiryOperator(task_id="wait_for_expiry", **{**STEP, "expires_at": expires_at})


def test_the_wait_defers_to_the_recorded_expiry_holding_no_worker() -> None:
    with _hook(WaitForBlockExpiryOperator) as prop:
        prop.return_value.expiry.return_value = _expiry(T1)
        with pytest.raises(TaskDeferred) as deferred:
            _wait().execute(_wait_context())

    prop.return_value.expiry.assert_called_once_with(IP)
    trigger = deferred.value.trigger
    assert isinstance(trigger, DateTimeTrigger)
    assert trigger.moment == T1
    assert deferred.value.method_name == "execute_complete"


def test_woken_at_the_expiry_it_finishes() -> None:
    with _hook(WaitForBlockExpiryOperator) as prop, mock.patch.object(module, "utcnow", return_value=T1):
        prop.return_value.expiry.return_value = _expiry(T1)
        result = _wait().execute_complete(_wait_context(), event=None)

    assert result == {"outcome": "expired", "expires_at": T1.isoformat(), "run_id": "manual__1"}


def test_woken_to_a_later_expiry_within_its_own_sla_it_waits_again() -> None:
    # SOC infrastructure_change SLA 30 min, counted from the expiry this run asked for (T1), less TAIL.
    later = T1 + timedelta(minutes=30) - TAIL
    with _hook(WaitForBlockExpiryOperator) as prop, mock.patch.object(module, "utcnow", return_value=T1):
        prop.return_value.expiry.return_value = _expiry(later, "manual__2")
        with pytest.raises(TaskDeferred) as deferred:
            _wait().execute_complete(_wait_context(), event=None)

    assert deferred.value.trigger.moment == later


def test_a_later_expiry_beyond_its_own_sla_is_handed_over() -> None:
    """The SLA counts from the expiry the run asked for: waiting for an extension would make it late."""
    later = T1 + timedelta(minutes=30) - TAIL + timedelta(seconds=1)
    with _hook(WaitForBlockExpiryOperator) as prop, mock.patch.object(module, "utcnow", return_value=T1):
        prop.return_value.expiry.return_value = _expiry(later, "manual__2")
        result = _wait().execute_complete(_wait_context(), event=None)

    assert result == {"outcome": "handed-over", "expires_at": later.isoformat(), "run_id": "manual__2"}


def test_a_later_expiry_beyond_this_runs_time_is_handed_over() -> None:
    # An expiry asked for late in the run: its hard end (start + dagrun_timeout) binds before its SLA.
    asked = NOW + timedelta(hours=3, minutes=35)
    later = NOW + timedelta(hours=4) - TAIL + timedelta(seconds=1)
    assert later < asked + timedelta(minutes=30) - TAIL  # the SLA alone would let it wait
    with _hook(WaitForBlockExpiryOperator) as prop, mock.patch.object(module, "utcnow", return_value=asked):
        prop.return_value.expiry.return_value = _expiry(later, "manual__2")
        result = _wait(expires_at=asked.isoformat()).execute_complete(_wait_context(), event=None)

    assert result == {"outcome": "handed-over", "expires_at": later.isoformat(), "run_id": "manual__2"}


def test_no_record_means_removed_already() -> None:
    with _hook(WaitForBlockExpiryOperator) as prop:
        prop.return_value.expiry.return_value = None
        result = _wait().execute(_wait_context())

    assert result == {"outcome": "no-block", "expires_at": None, "run_id": None}


def test_unblock_acts_through_the_hook_and_audits_the_removal(audit: mock.MagicMock) -> None:
    done = {
        "indicator": NET,
        "ip_set": "orchestrator-globex-blocklist-ipv4",
        "ip_set_arn": IP_SET_ARN,
        "removed": True,
        "outcome": "removed",
        "expires_at": T1.isoformat(),
    }
    with _hook(UnblockIndicatorOperator) as prop:
        prop.return_value.unblock.return_value = done
        prop.return_value.role_arn = ROLE
        result = UnblockIndicatorOperator(task_id="unblock_indicator", **STEP).act(CONTEXT)

    prop.return_value.unblock.assert_called_once_with(IP, now=NOW)
    assert result == done
    audit.assert_called_once_with(
        CONTEXT,
        system="aws",
        operation="unblock-indicator",
        object_id=NET,
        tenant="globex",
        created=False,
        removed=True,
        outcome="removed",
        capability="perimeter-block",
        role_arn=ROLE,
        ip_set_arn=IP_SET_ARN,
        expires_at=T1.isoformat(),
    )


@pytest.mark.parametrize(
    ("operator_class", "capability"),
    [
        pytest.param(InspectIndicatorOperator, "perimeter-inspect", id="inspect"),
        pytest.param(BlockIndicatorOperator, "perimeter-block", id="block"),
        pytest.param(WaitForBlockExpiryOperator, "perimeter-inspect", id="wait"),
        pytest.param(UnblockIndicatorOperator, "perimeter-block", id="unblock"),
    ],
)
def test_the_hook_is_the_steps_capability_in_the_tenant(operator_class: type, capability: str) -> None:
    operator = operator_class(task_id="step", aws_conn_id="aws_soc", **STEP)

    hook = operator.hook

    assert isinstance(hook, PerimeterHook)
    assert (hook.conn_id, hook.capability, hook.tenant) == ("aws_soc", capability, "globex")
    assert operator.hook is hook
    assert "client" not in vars(hook)
    assert operator.execution_timeout == timedelta(minutes=5)


def test_block_and_unblock_are_privileged_and_bound_to_indicator_tenant_and_expiry() -> None:
    expected = params_artifact(STEP, ["indicator", "tenant", "expires_at"])
    for operator_class in (BlockIndicatorOperator, UnblockIndicatorOperator):
        operator = operator_class(task_id="step", **STEP)
        assert isinstance(operator, RequiresApproval)
        assert operator.expected_artifact({}) == expected
    assert not issubclass(InspectIndicatorOperator, RequiresApproval)
    assert not issubclass(WaitForBlockExpiryOperator, RequiresApproval)
