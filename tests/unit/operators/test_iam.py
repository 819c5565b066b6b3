"""The IAM user steps with a mocked hook: the exact hook call, the XCom, the audit record, the refusals.
The hook itself runs against moto in tests/integration/connectors/test_iam_account_containment.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from unittest import mock

import pytest
from airflow.sdk.exceptions import AirflowFailException

from include.approvals.verify import RequiresApproval
from include.connectors.iam import AccountContainmentError, IamHook, UserState
from include.operators.iam import (
    DisableAccountOperator,
    InspectAccountOperator,
    RevokeTenantAccessKeysOperator,
)
from tests.support.operators import patched_hook

ROLE = "arn:aws:iam::222222222222:role/orchestrator-identity-disable"
ARN = "arn:aws:iam::222222222222:user/staff/jdoe"
STATE = UserState(user_name="jdoe", arn=ARN, active_keys=("AKIA1",), inactive_keys=(), console_access=True)
DISABLED = {
    "user_name": "jdoe",
    "arn": ARN,
    "active_keys": [],
    "inactive_keys": ["AKIA1"],
    "console_access": False,
    "contained": True,
    "deactivated_keys": ["AKIA1"],
    "console_password_removed": True,
    "changed": True,
}
CONTEXT: dict[str, Any] = {"ti": mock.MagicMock()}
NOT_STAFF = "IAM user ci is not a staff account (path '/service/', expected '/staff/')"


@pytest.fixture
def inspect_hook() -> Iterator[mock.MagicMock]:
    with patched_hook(InspectAccountOperator, role_arn=ROLE) as hook:
        yield hook


@pytest.fixture
def disable_hook() -> Iterator[mock.MagicMock]:
    with patched_hook(DisableAccountOperator, role_arn=ROLE) as hook:
        yield hook


@pytest.fixture
def revoke_hook() -> Iterator[mock.MagicMock]:
    with patched_hook(RevokeTenantAccessKeysOperator, role_arn=ROLE) as hook:
        yield hook


@pytest.fixture
def audit() -> Iterator[mock.MagicMock]:
    with mock.patch("include.operators.iam.audit_side_effect") as side_effect:
        yield side_effect


def _audited(tenant: str) -> mock._Call:
    return mock.call(
        CONTEXT,
        system="aws",
        operation="disable-iam-user",
        object_id=ARN,
        tenant=tenant,
        created=True,
        capability="identity-disable",
        role_arn=ROLE,
        deactivated_keys=["AKIA1"],
        console_password_removed=True,
    )


def test_inspect_returns_the_state_and_its_markdown(inspect_hook: mock.MagicMock) -> None:
    inspect_hook.inspect_user.return_value = STATE

    result = InspectAccountOperator(task_id="inspect_account", tenant="globex", account="jdoe").execute(
        CONTEXT
    )

    inspect_hook.inspect_user.assert_called_once_with("jdoe")
    assert result == {**STATE.as_xcom(), "markdown": STATE.markdown()}


def test_disable_acts_through_the_hook_and_audits_the_change(
    disable_hook: mock.MagicMock, audit: mock.MagicMock
) -> None:
    disable_hook.disable_user.return_value = DISABLED

    result = DisableAccountOperator(task_id="disable_account", tenant="globex", account="jdoe").act(CONTEXT)

    disable_hook.disable_user.assert_called_once_with("jdoe")
    assert result == DISABLED
    assert audit.call_args_list == [_audited("globex")]


@pytest.mark.parametrize(
    ("operator_class", "hook_fixture", "method"),
    [
        pytest.param(InspectAccountOperator, "inspect_hook", "inspect_user", id="inspect"),
        pytest.param(DisableAccountOperator, "disable_hook", "disable_user", id="disable"),
    ],
)
def test_a_containment_error_fails_the_task_at_once(
    request: pytest.FixtureRequest,
    audit: mock.MagicMock,
    operator_class: type,
    hook_fixture: str,
    method: str,
) -> None:
    getattr(request.getfixturevalue(hook_fixture), method).side_effect = AccountContainmentError(NOT_STAFF)
    operator = operator_class(task_id="step", tenant="globex", account="ci")
    run = operator.execute if operator_class is InspectAccountOperator else operator.act

    with pytest.raises(AirflowFailException, match=r"^step: IAM user ci is not a staff account"):
        run(CONTEXT)
    audit.assert_not_called()


def test_revoke_disables_the_leavers_user_in_the_tenant(
    revoke_hook: mock.MagicMock, audit: mock.MagicMock
) -> None:
    revoke_hook.disable_user_if_present.return_value = DISABLED
    operator = RevokeTenantAccessKeysOperator(task_id="revoke_tenant_keys", tenant="acme", user_name="jdoe")

    result = operator.act(CONTEXT)

    revoke_hook.disable_user_if_present.assert_called_once_with("jdoe")
    assert result == {"tenant": "acme", "found": True, **DISABLED}
    assert audit.call_args_list == [_audited("acme")]


def test_revoke_in_a_tenant_without_the_user_is_nothing_to_do(
    revoke_hook: mock.MagicMock, audit: mock.MagicMock
) -> None:
    revoke_hook.disable_user_if_present.return_value = None
    operator = RevokeTenantAccessKeysOperator(task_id="revoke_tenant_keys", tenant="acme", user_name="jdoe")

    result = operator.act(CONTEXT)

    assert result == {"tenant": "acme", "found": False, "changed": False, "deactivated_keys": []}
    audit.assert_not_called()


def test_revoke_of_a_non_staff_user_fails_naming_the_tenant(
    revoke_hook: mock.MagicMock, audit: mock.MagicMock
) -> None:
    revoke_hook.disable_user_if_present.side_effect = AccountContainmentError(NOT_STAFF)
    operator = RevokeTenantAccessKeysOperator(task_id="revoke_tenant_keys", tenant="acme", user_name="ci")

    with pytest.raises(
        AirflowFailException, match=r"^revoke_tenant_keys \(acme\): IAM user ci is not a staff"
    ):
        operator.act(CONTEXT)
    audit.assert_not_called()


@pytest.mark.parametrize(
    ("operator", "capability", "privileged"),
    [
        pytest.param(
            InspectAccountOperator(task_id="a", tenant="globex", account="jdoe", aws_conn_id="aws_soc"),
            "identity-inspect",
            False,
            id="inspect",
        ),
        pytest.param(
            DisableAccountOperator(task_id="b", tenant="globex", account="jdoe", aws_conn_id="aws_soc"),
            "identity-disable",
            True,
            id="disable",
        ),
        pytest.param(
            RevokeTenantAccessKeysOperator(
                task_id="c", tenant="globex", user_name="jdoe", aws_conn_id="aws_soc"
            ),
            "identity-disable",
            True,
            id="revoke",
        ),
    ],
)
def test_the_hook_is_the_steps_capability_in_the_tenant(
    operator: Any, capability: str, privileged: bool
) -> None:
    hook = operator.hook

    assert isinstance(hook, IamHook)
    assert (hook.conn_id, hook.capability, hook.tenant) == ("aws_soc", capability, "globex")
    assert "client" not in vars(hook)
    assert isinstance(operator, RequiresApproval) is privileged
