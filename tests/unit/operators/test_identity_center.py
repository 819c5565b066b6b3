"""The IAM Identity Center steps with a mocked hook: the exact hook call, the XCom, the audit record, the
refusals. The hook itself runs against moto in tests/integration/connectors/test_identity_center_store.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from unittest import mock

import pytest
from airflow.sdk.exceptions import AirflowFailException

from include.approvals.verify import RequiresApproval
from include.connectors.errors import TransientError
from include.connectors.identity_center import (
    IdentityCenterConflict,
    IdentityCenterHook,
    IdentityResult,
    session_revocation_plan,
)
from include.operators.identity_center import (
    DisableIdentityCenterUserOperator,
    EnsureIdentityCenterUserOperator,
)
from tests.support.operators import patched_hook

STORE = "d-1234567890"
ROLE = "arn:aws:iam::999999999999:role/orchestrator-identity-admin"
CONTEXT: dict[str, Any] = {"ti": mock.MagicMock()}
ADA: dict[str, Any] = {
    "user_name": "alovelace",
    "given_name": "Ada",
    "family_name": "Lovelace",
    "work_email": "ada.lovelace@secops.example",
    "employee_id": "E01234",
    "role": "soc-lead",
}
CREATED = IdentityResult(
    identity_store_id=STORE,
    user_name="alovelace",
    user_id="u-1",
    created=True,
    changed=True,
    groups=("all-staff", "soc-analysts", "soc-leads"),
    groups_added=("all-staff", "soc-analysts", "soc-leads"),
)
DISABLED = IdentityResult(
    identity_store_id=STORE,
    user_name="alovelace",
    user_id="u-1",
    changed=True,
    disabled=True,
    groups_removed=("all-staff", "soc-analysts"),
)


@pytest.fixture
def ensure_hook() -> Iterator[mock.MagicMock]:
    with patched_hook(EnsureIdentityCenterUserOperator, role_arn=ROLE) as hook:
        yield hook


@pytest.fixture
def disable_hook() -> Iterator[mock.MagicMock]:
    with patched_hook(DisableIdentityCenterUserOperator, role_arn=ROLE) as hook:
        yield hook


@pytest.fixture
def audit() -> Iterator[mock.MagicMock]:
    with mock.patch("include.operators.identity_center.audit_side_effect") as side_effect:
        yield side_effect


def test_ensure_creates_the_user_in_the_groups_of_its_role(
    ensure_hook: mock.MagicMock, audit: mock.MagicMock
) -> None:
    ensure_hook.ensure_user.return_value = CREATED

    result = EnsureIdentityCenterUserOperator(task_id="create_identity", **ADA).act(CONTEXT)

    ensure_hook.ensure_user.assert_called_once_with(
        "alovelace",
        given_name="Ada",
        family_name="Lovelace",
        email="ada.lovelace@secops.example",
        employee_id="E01234",
        groups=["all-staff", "soc-analysts", "soc-leads"],  # hr_roles.yaml: soc-lead
    )
    assert result == CREATED.as_xcom()
    audit.assert_called_once_with(
        CONTEXT,
        system="aws-identity-center",
        operation="ensure-user",
        object_id=f"{STORE}/u-1",
        tenant="secops",
        created=True,
        capability="identity-admin",
        role_arn=ROLE,
        user_name="alovelace",
        groups_added=["all-staff", "soc-analysts", "soc-leads"],
    )


def test_disable_returns_the_result_and_the_manual_session_steps(
    disable_hook: mock.MagicMock, audit: mock.MagicMock
) -> None:
    disable_hook.disable_user.return_value = DISABLED

    result = DisableIdentityCenterUserOperator(task_id="disable_identity", user_name="alovelace").act(CONTEXT)

    disable_hook.disable_user.assert_called_once_with("alovelace")
    assert result == {**DISABLED.as_xcom(), "sessions": session_revocation_plan(DISABLED).markdown()}
    audit.assert_called_once_with(
        CONTEXT,
        system="aws-identity-center",
        operation="disable-user",
        object_id=f"{STORE}/u-1",
        tenant="secops",
        created=True,
        capability="identity-disable",
        role_arn=ROLE,
        user_name="alovelace",
        groups_removed=["all-staff", "soc-analysts"],
    )


@pytest.mark.parametrize(
    ("operator", "hook_fixture", "method"),
    [
        pytest.param(
            EnsureIdentityCenterUserOperator(task_id="step", **ADA), "ensure_hook", "ensure_user", id="ensure"
        ),
        pytest.param(
            DisableIdentityCenterUserOperator(task_id="step", user_name="alovelace"),
            "disable_hook",
            "disable_user",
            id="disable",
        ),
    ],
)
def test_a_permanent_error_fails_the_task_at_once_with_the_connectors_message(
    request: pytest.FixtureRequest, audit: mock.MagicMock, operator: Any, hook_fixture: str, method: str
) -> None:
    conflict = IdentityCenterConflict("user 'alovelace' exists with another email address", operation=method)
    getattr(request.getfixturevalue(hook_fixture), method).side_effect = conflict

    with pytest.raises(
        AirflowFailException,
        match=rf"^step: identitystore {method}: user 'alovelace' exists with another email address$",
    ):
        operator.act(CONTEXT)
    audit.assert_not_called()


def test_a_transient_error_is_left_to_the_tasks_retries(
    disable_hook: mock.MagicMock, audit: mock.MagicMock
) -> None:
    disable_hook.disable_user.side_effect = TransientError("throttled", system="identitystore", operation="x")

    with pytest.raises(TransientError):
        DisableIdentityCenterUserOperator(task_id="step", user_name="alovelace").act(CONTEXT)
    audit.assert_not_called()


@pytest.mark.parametrize(
    ("operator", "capability"),
    [
        pytest.param(
            EnsureIdentityCenterUserOperator(task_id="a", aws_conn_id="aws_hr", **ADA),
            "identity-admin",
            id="ensure",
        ),
        pytest.param(
            DisableIdentityCenterUserOperator(task_id="b", user_name="alovelace", aws_conn_id="aws_hr"),
            "identity-disable",
            id="disable",
        ),
    ],
)
def test_the_hook_is_the_steps_capability_in_the_staff_tenant(operator: Any, capability: str) -> None:
    hook = operator.hook

    assert isinstance(hook, IdentityCenterHook)
    assert (hook.conn_id, hook.capability, hook.tenant) == ("aws_hr", capability, "secops")
    assert "connection" not in vars(hook)
    assert isinstance(operator, RequiresApproval)
