"""The directory (LDAP) steps with a mocked hook: the exact hook call, the XCom, the audit record, the
refusals. The hook itself runs against a real slapd in tests/integration/connectors/test_ldap_directory.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from unittest import mock

import pytest
from airflow.sdk.exceptions import AirflowFailException

from include.approvals.verify import RequiresApproval
from include.connectors.ldap import DirectoryConflict, DirectoryHook, DirectoryNotFound, DirectoryResult
from include.operators.ldap import (
    DisableDirectoryAccountOperator,
    EnsureDirectoryAccountOperator,
    InspectDirectoryAccountOperator,
)
from tests.support.operators import patched_hook

DN = "uid=ada.lovelace,ou=people,dc=secops,dc=example"
CONTEXT: dict[str, Any] = {"ti": mock.MagicMock()}
ADA: dict[str, Any] = {
    "user_name": "ada.lovelace",
    "given_name": "Ada",
    "surname": "Lovelace",
    "work_email": "ada.lovelace@secops.example",
    "employee_id": "E01234",
    "role": "soc-lead",
    "title": "soc-lead",
}
PERSON: dict[str, Any] = {"uid": "ada.lovelace", "dn": DN, "employee_id": "E01234", "disabled": False}
CREATED = DirectoryResult(
    uid="ada.lovelace", dn=DN, created=True, changed=True, groups_added=("soc", "soc-leads", "staff")
)
DISABLED = DirectoryResult(
    uid="ada.lovelace",
    dn=DN,
    changed=True,
    disabled=True,
    changed_attributes=("pwdAccountLockedTime",),
    groups_removed=("soc", "staff"),
)


@pytest.fixture
def inspect_hook() -> Iterator[mock.MagicMock]:
    with patched_hook(InspectDirectoryAccountOperator) as hook:
        yield hook


@pytest.fixture
def ensure_hook() -> Iterator[mock.MagicMock]:
    with patched_hook(EnsureDirectoryAccountOperator) as hook:
        yield hook


@pytest.fixture
def disable_hook() -> Iterator[mock.MagicMock]:
    with patched_hook(DisableDirectoryAccountOperator) as hook:
        yield hook


@pytest.fixture
def audit() -> Iterator[mock.MagicMock]:
    with mock.patch("include.operators.ldap.audit_side_effect") as side_effect:
        yield side_effect


def _inspect() -> InspectDirectoryAccountOperator:
    return InspectDirectoryAccountOperator(
        task_id="inspect_account", user_name="ada.lovelace", employee_id="E01234"
    )


@pytest.mark.parametrize(
    ("person", "expected"),
    [
        pytest.param(
            {**PERSON, "groups": ["soc", "staff"]},
            {"uid": "ada.lovelace", "disabled": False, "groups": ["soc", "staff"]},
            id="active",
        ),
        pytest.param(
            {**PERSON, "disabled": True, "groups": []},
            {"uid": "ada.lovelace", "disabled": True, "groups": []},
            id="already-disabled",
        ),
    ],
)
def test_inspect_returns_the_account_and_the_approval_text(
    inspect_hook: mock.MagicMock, person: dict[str, Any], expected: dict[str, Any]
) -> None:
    inspect_hook.get_user.return_value = person

    result = _inspect().execute(CONTEXT)

    inspect_hook.get_user.assert_called_once_with("ada.lovelace")
    markdown = result.pop("markdown")
    assert result == expected
    state = "already disabled" if expected["disabled"] else "active"
    groups = ", ".join(expected["groups"]) or "none"
    assert markdown.startswith(
        f"Directory account `ada.lovelace` (employee E01234), {state}, groups: {groups}."
    )


@pytest.mark.parametrize(
    ("person", "message"),
    [
        pytest.param(None, "^no directory account 'ada.lovelace': check the login name$", id="no-account"),
        pytest.param(
            {**PERSON, "employee_id": "E09999"},
            "^directory account 'ada.lovelace' belongs to employee 'E09999', not 'E01234': "
            "check the employee id$",
            id="another-employee",
        ),
    ],
)
def test_inspect_refuses_a_missing_or_foreign_account(
    inspect_hook: mock.MagicMock, person: dict[str, Any] | None, message: str
) -> None:
    inspect_hook.get_user.return_value = person

    with pytest.raises(AirflowFailException, match=message):
        _inspect().execute(CONTEXT)


def test_ensure_creates_the_person_in_the_groups_of_its_role(
    ensure_hook: mock.MagicMock, audit: mock.MagicMock
) -> None:
    ensure_hook.ensure_user.return_value = CREATED

    result = EnsureDirectoryAccountOperator(task_id="create_directory_account", **ADA).act(CONTEXT)

    ensure_hook.ensure_user.assert_called_once_with(
        "ada.lovelace",
        given_name="Ada",
        surname="Lovelace",
        email="ada.lovelace@secops.example",
        employee_id="E01234",
        title="soc-lead",
        groups=["staff", "soc", "soc-leads"],  # hr_roles.yaml: soc-lead
    )
    assert result == CREATED.as_xcom()
    audit.assert_called_once_with(
        CONTEXT,
        system="ldap",
        operation="ensure-user",
        object_id=DN,
        tenant="secops",
        created=True,
        groups_added=["soc", "soc-leads", "staff"],
    )


def test_ensure_leaves_an_empty_title_alone(ensure_hook: mock.MagicMock, audit: mock.MagicMock) -> None:
    ensure_hook.ensure_user.return_value = CREATED

    EnsureDirectoryAccountOperator(task_id="create_directory_account", **{**ADA, "title": ""}).act(CONTEXT)

    assert ensure_hook.ensure_user.call_args.kwargs["title"] is None


def test_disable_locks_the_account_and_audits_it(disable_hook: mock.MagicMock, audit: mock.MagicMock) -> None:
    disable_hook.disable_user.return_value = DISABLED

    result = DisableDirectoryAccountOperator(
        task_id="disable_directory_account", user_name="ada.lovelace"
    ).act(CONTEXT)

    disable_hook.disable_user.assert_called_once_with("ada.lovelace")
    assert result == DISABLED.as_xcom()
    audit.assert_called_once_with(
        CONTEXT,
        system="ldap",
        operation="disable-user",
        object_id=DN,
        tenant="secops",
        created=True,
        groups_removed=["soc", "staff"],
    )


@pytest.mark.parametrize(
    ("operator", "hook_fixture", "method", "error"),
    [
        pytest.param(
            EnsureDirectoryAccountOperator(task_id="step", **ADA),
            "ensure_hook",
            "ensure_user",
            DirectoryConflict("uid 'ada.lovelace' is disabled", operation="ensure_user"),
            id="ensure-conflict",
        ),
        pytest.param(
            DisableDirectoryAccountOperator(task_id="step", user_name="ada.lovelace"),
            "disable_hook",
            "disable_user",
            DirectoryNotFound("uid 'ada.lovelace' not found", operation="disable_user"),
            id="disable-not-found",
        ),
    ],
)
def test_a_permanent_error_fails_the_task_at_once(
    request: pytest.FixtureRequest,
    audit: mock.MagicMock,
    operator: Any,
    hook_fixture: str,
    method: str,
    error: Exception,
) -> None:
    getattr(request.getfixturevalue(hook_fixture), method).side_effect = error

    with pytest.raises(AirflowFailException, match=rf"^step: ldap {method}: uid 'ada.lovelace' "):
        operator.act(CONTEXT)
    audit.assert_not_called()


@pytest.mark.parametrize(
    ("operator", "privileged"),
    [
        pytest.param(
            InspectDirectoryAccountOperator(
                task_id="a", user_name="ada.lovelace", employee_id="E01234", ldap_conn_id="ldap_hr"
            ),
            False,
            id="inspect",
        ),
        pytest.param(
            EnsureDirectoryAccountOperator(task_id="b", ldap_conn_id="ldap_hr", **ADA), True, id="ensure"
        ),
        pytest.param(
            DisableDirectoryAccountOperator(task_id="c", user_name="ada.lovelace", ldap_conn_id="ldap_hr"),
            True,
            id="disable",
        ),
    ],
)
def test_the_hook_is_the_directory_connection(operator: Any, privileged: bool) -> None:
    hook = operator.hook

    assert isinstance(hook, DirectoryHook)
    assert (hook.conn_id, hook.tenant) == ("ldap_hr", "secops")
    assert "connection" not in vars(hook)
    assert isinstance(operator, RequiresApproval) is privileged
