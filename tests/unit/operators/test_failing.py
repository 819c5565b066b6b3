"""The one "a permanent connector error fails the task at once" helper (include/operators/failing.py),
and every operator family that calls a connector going through it: a ``PermanentError`` from the
hook fails the step with ``AirflowFailException`` (Airflow does not retry it), naming the step; a
``TransientError`` leaves the step as it is, so the domain's retries take it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from datetime import UTC, datetime
from typing import Any
from unittest import mock

import pytest
from airflow.sdk.exceptions import AirflowFailException

from include.connectors.errors import PermanentError, RetryBudgetExhausted, TransientError
from include.operators import perimeter
from include.operators.ec2 import InspectHostOperator
from include.operators.failing import MESSAGE_MAX, failing_fast, is_permanent, message_of
from include.operators.iam import InspectAccountOperator, RevokeTenantAccessKeysOperator
from include.operators.identity_center import DisableIdentityCenterUserOperator
from include.operators.invoicing import FAILURE_XCOM_KEY, CheckMilestoneRequestOperator, _InvoicingStep
from include.operators.ldap import DisableDirectoryAccountOperator
from include.operators.microsoft import InspectDeviceOperator, InspectEntraUserOperator
from include.operators.perimeter import InspectIndicatorOperator
from tests.support.operators import patched_hook

PERMANENT = PermanentError("HTTP 403: refused", system="vendor", operation="call", status=403)
TRANSIENT = TransientError("HTTP 503: unavailable", system="vendor", operation="call", status=503)


# --- the helper ---------------------------------------------------------------------------------
def test_a_permanent_error_fails_at_once_naming_the_step() -> None:
    def step() -> None:
        raise PERMANENT

    with pytest.raises(
        AirflowFailException, match=r"^isolate_host: vendor call: HTTP 403: refused$"
    ) as raised:
        failing_fast("isolate_host", step)
    assert raised.value.__cause__ is None  # from None: the connector's traceback is not chained


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(TRANSIENT, id="transient"),
        pytest.param(RetryBudgetExhausted("5 tries", system="s", operation="o", attempts=5), id="budget"),
        pytest.param(TimeoutError("read timed out"), id="timeout"),
        pytest.param(ValueError("not declared permanent"), id="other"),
    ],
)
def test_every_other_error_goes_to_the_retries_unchanged(error: Exception) -> None:
    def step() -> None:
        raise error

    with pytest.raises(type(error)) as raised:
        failing_fast("step", step)
    assert raised.value is error


def test_a_familys_own_errors_are_permanent_when_named() -> None:
    class ContainmentError(RuntimeError):
        pass

    def step() -> None:
        raise ContainmentError("no quarantine group in vpc-1")

    with pytest.raises(ContainmentError):
        failing_fast("step", step)
    with pytest.raises(AirflowFailException, match=r"^step: no quarantine group in vpc-1$"):
        failing_fast("step", step, ContainmentError)
    assert is_permanent(ContainmentError(), ContainmentError)
    assert not is_permanent(ContainmentError())


def test_a_success_is_returned_and_a_fail_exception_passes_as_it_is() -> None:
    assert failing_fast("step", lambda: {"changed": True}) == {"changed": True}
    refused = AirflowFailException("step: the draft was made from another export")

    def step() -> None:
        raise refused

    with pytest.raises(AirflowFailException) as raised:
        failing_fast("step", step)
    assert raised.value is refused


def test_the_message_is_one_bounded_line() -> None:
    assert message_of(ValueError("a\n  b\tc ")) == "a b c"
    assert len(message_of(ValueError("x" * 5000))) == MESSAGE_MAX
    assert message_of(ValueError()) == "ValueError"


# --- every operator family ----------------------------------------------------------------------
CONTEXT: dict[str, Any] = {"ti": mock.MagicMock()}


def _hook_call(operator_class: type, method: str, run: Callable[[], Any]) -> Callable[[Exception], Any]:
    """Make ``operator_class``'s hook raise from ``method``, then ``run`` the step."""

    def call(error: Exception) -> Any:
        with patched_hook(operator_class) as hook:
            getattr(hook, method).side_effect = error
            return run()

    return call


def _perimeter() -> Any:
    with mock.patch.object(perimeter, "utcnow", return_value=datetime(2026, 12, 6, 12, 0, tzinfo=UTC)):
        return InspectIndicatorOperator(
            task_id="inspect_indicator",
            tenant="globex",
            indicator="45.155.205.7",
            expires_at="2026-12-06T12:30:00Z",
        ).execute(CONTEXT)


def _invoicing(error: Exception) -> Any:
    with ExitStack() as stack:
        stack.enter_context(mock.patch.object(_InvoicingStep, "request", return_value=mock.sentinel.request))
        stack.enter_context(mock.patch.object(CheckMilestoneRequestOperator, "run", side_effect=error))
        return CheckMilestoneRequestOperator(task_id="check_request").execute(CONTEXT)


FAMILIES = [
    pytest.param(
        "inspect_host",
        _hook_call(
            InspectHostOperator,
            "plan_isolation",
            lambda: InspectHostOperator(
                task_id="inspect_host", tenant="globex", host="i-0123456789abcdef0"
            ).execute(CONTEXT),
        ),
        id="ec2",
    ),
    pytest.param(
        "inspect_account",
        _hook_call(
            InspectAccountOperator,
            "inspect_user",
            lambda: InspectAccountOperator(
                task_id="inspect_account", tenant="globex", account="jdoe"
            ).execute(CONTEXT),
        ),
        id="iam",
    ),
    pytest.param(
        "revoke_tenant_keys (acme)",
        _hook_call(
            RevokeTenantAccessKeysOperator,
            "disable_user_if_present",
            lambda: RevokeTenantAccessKeysOperator(
                task_id="revoke_tenant_keys", tenant="acme", user_name="frank"
            ).act(CONTEXT),
        ),
        id="iam-tenant-keys",
    ),
    pytest.param(
        "inspect_indicator", _hook_call(InspectIndicatorOperator, "plan_block", _perimeter), id="perimeter"
    ),
    pytest.param(
        "inspect_user",
        _hook_call(
            InspectEntraUserOperator,
            "get_user",
            lambda: InspectEntraUserOperator(
                task_id="inspect_user", tenant="globex", user="jdoe@globex.example"
            ).execute(CONTEXT),
        ),
        id="microsoft-entra",
    ),
    pytest.param(
        "inspect_device",
        _hook_call(
            InspectDeviceOperator,
            "find_machine",
            lambda: InspectDeviceOperator(task_id="inspect_device", tenant="acme", machine="ws-001").execute(
                CONTEXT
            ),
        ),
        id="microsoft-defender",
    ),
    pytest.param(
        "disable_identity",
        _hook_call(
            DisableIdentityCenterUserOperator,
            "disable_user",
            lambda: DisableIdentityCenterUserOperator(task_id="disable_identity", user_name="frank").act(
                CONTEXT
            ),
        ),
        id="hr-identity-center",
    ),
    pytest.param(
        "disable_directory_account",
        _hook_call(
            DisableDirectoryAccountOperator,
            "disable_user",
            lambda: DisableDirectoryAccountOperator(
                task_id="disable_directory_account", user_name="frank"
            ).act(CONTEXT),
        ),
        id="hr-directory",
    ),
    pytest.param("check_request", _invoicing, id="invoicing"),
]


@pytest.fixture(autouse=True)
def no_audit() -> Iterator[None]:
    """No audit record is written on a failure; the operators' success paths are tested elsewhere."""
    with ExitStack() as stack:
        for module in ("ec2", "iam", "perimeter", "microsoft", "identity_center", "ldap", "invoicing"):
            stack.enter_context(mock.patch(f"include.operators.{module}.audit_side_effect"))
        yield


@pytest.mark.parametrize(("task_id", "run"), FAMILIES)
def test_a_permanent_error_fails_the_step_at_once(task_id: str, run: Callable[[Exception], Any]) -> None:
    with pytest.raises(AirflowFailException) as raised:
        run(PERMANENT)
    assert str(raised.value) == f"{task_id}: vendor call: HTTP 403: refused"


@pytest.mark.parametrize(("task_id", "run"), FAMILIES)
def test_a_transient_error_is_left_to_the_retries(task_id: str, run: Callable[[Exception], Any]) -> None:
    with pytest.raises(TransientError) as raised:
        run(TRANSIENT)
    assert raised.value is TRANSIENT


@pytest.mark.parametrize(
    ("error", "raised", "message"),
    [
        pytest.param(PERMANENT, AirflowFailException, "vendor call: HTTP 403: refused", id="permanent"),
        pytest.param(TRANSIENT, TransientError, "vendor call: HTTP 503: unavailable", id="transient"),
    ],
)
def test_an_invoicing_step_records_the_reason_for_the_ticket_either_way(
    error: Exception, raised: type[Exception], message: str
) -> None:
    ti = mock.MagicMock()
    with (
        mock.patch.object(_InvoicingStep, "request", return_value=mock.sentinel.request),
        mock.patch.object(CheckMilestoneRequestOperator, "run", side_effect=error),
        pytest.raises(raised),
    ):
        CheckMilestoneRequestOperator(task_id="check_request").execute({"ti": ti})
    ti.xcom_push.assert_called_once_with(
        key=FAILURE_XCOM_KEY, value={"step": "check_request", "message": message}
    )
