"""The Entra user steps with a mocked Graph hook: the order of the calls, re-runs that change nothing,
the XCom, the audit record, the refusals. The hook itself runs against the stand-in in
tests/integration/connectors/test_microsoft_graph.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from unittest import mock

import pytest
from airflow.sdk.exceptions import AirflowFailException

from include.approvals.verify import RequiresApproval
from include.connectors.errors import PermanentError, TransientError
from include.connectors.microsoft import EntraUser, MicrosoftInputError, TenantCredentialError
from include.operators.microsoft import (
    DisableEntraUserOperator,
    EnableEntraUserOperator,
    InspectEntraUserOperator,
)
from tests.support.operators import patched_hook

CONTEXT: dict[str, Any] = {"ti": mock.MagicMock()}
USER = EntraUser("u-1", "jdoe@globex.example", "Jane Doe", True, "2026-01-01T00:00:00Z")
BLOCKED = EntraUser("u-1", "jdoe@globex.example", "Jane Doe", False, "2026-12-07T01:00:00Z")
METHODS = [
    {"@odata.type": "#microsoft.graph.passwordAuthenticationMethod", "id": "p"},
    {"@odata.type": "#microsoft.graph.phoneAuthenticationMethod", "id": "ph"},
]


@pytest.fixture
def audit() -> Iterator[mock.MagicMock]:
    with mock.patch("include.operators.microsoft.audit_side_effect") as side_effect:
        yield side_effect


@pytest.fixture
def disable_hook() -> Iterator[mock.MagicMock]:
    with patched_hook(DisableEntraUserOperator) as hook:
        yield hook


def _disable(**kwargs: Any) -> DisableEntraUserOperator:
    return DisableEntraUserOperator(
        task_id="disable_user", tenant="globex", user="jdoe@globex.example", **kwargs
    )


def test_inspect_returns_the_user_and_its_markdown() -> None:
    with patched_hook(InspectEntraUserOperator) as hook:
        hook.get_user.return_value = USER
        hook.authentication_methods.return_value = METHODS
        result = InspectEntraUserOperator(
            task_id="inspect_user", tenant="globex", user="jdoe@globex.example"
        ).execute(CONTEXT)
    assert result["id"] == "u-1"
    assert result["mfa_methods"] == 1
    assert "sign-in: allowed" in result["markdown"]
    assert "phoneAuthenticationMethod" in result["markdown"]
    assert "passwordAuthenticationMethod" not in result["markdown"]


def test_disable_revokes_blocks_revokes_and_audits(
    disable_hook: mock.MagicMock, audit: mock.MagicMock
) -> None:
    disable_hook.get_user.return_value = USER
    disable_hook.set_account_enabled.return_value = True
    disable_hook.revoke_sessions.return_value = "2026-12-07T02:00:00Z"

    result = _disable().act(CONTEXT)

    names = [c[0] for c in disable_hook.method_calls]
    assert names == ["get_user", "revoke_sessions", "set_account_enabled", "revoke_sessions"]
    disable_hook.set_account_enabled.assert_called_once_with(USER, False)
    disable_hook.delete_mfa_methods.assert_not_called()  # reset_mfa defaults to "no"
    assert result["changed"] is True
    assert result["sessions_valid_from"] == "2026-12-07T02:00:00Z"
    assert audit.call_args.kwargs["operation"] == "disable-entra-user"
    assert audit.call_args.kwargs["created"] is True
    assert audit.call_args.kwargs["capability"] == "entra-user-disable"


def test_a_blocked_user_is_left_as_it_is(disable_hook: mock.MagicMock, audit: mock.MagicMock) -> None:
    disable_hook.get_user.return_value = BLOCKED

    result = _disable().act(CONTEXT)

    disable_hook.revoke_sessions.assert_not_called()
    disable_hook.set_account_enabled.assert_not_called()
    assert result["changed"] is False
    assert audit.call_args.kwargs["created"] is False


def test_reset_mfa(disable_hook: mock.MagicMock, audit: mock.MagicMock) -> None:
    disable_hook.get_user.return_value = BLOCKED
    disable_hook.delete_mfa_methods.return_value = ["phoneMethods/ph"]

    result = _disable(reset_mfa="yes").act(CONTEXT)

    disable_hook.delete_mfa_methods.assert_called_once_with(BLOCKED)
    # the privileged app touches no incident: the write-back is the workflow's own step
    assert [name for name, *_ in disable_hook.method_calls if "incident" in name] == []
    assert result["mfa_methods_deleted"] == ["phoneMethods/ph"]
    assert audit.call_args.kwargs["created"] is True  # methods went: a change


@pytest.mark.parametrize(
    "error",
    [
        MicrosoftInputError("user 'jdoe@acme.example' is not in tenant 'globex'"),
        TenantCredentialError("msgraph: credential refused"),
        # a token Entra refused (a rotated or revoked client secret): no retry mends it
        PermanentError(
            "token for tenant 'globex' refused: AADSTS7000215", system="msgraph", operation="token"
        ),
    ],
)
def test_bad_input_fails_the_task_before_any_change(
    disable_hook: mock.MagicMock, audit: mock.MagicMock, error: Exception
) -> None:
    disable_hook.get_user.side_effect = error
    with pytest.raises(AirflowFailException, match=r"^disable_user: "):
        _disable().act(CONTEXT)
    disable_hook.set_account_enabled.assert_not_called()
    disable_hook.revoke_sessions.assert_not_called()
    audit.assert_not_called()


def test_a_transient_error_is_left_to_the_retries(
    disable_hook: mock.MagicMock, audit: mock.MagicMock
) -> None:
    disable_hook.get_user.side_effect = TransientError("throttled", system="msgraph", operation="get_user")
    with pytest.raises(TransientError):
        _disable().act(CONTEXT)
    audit.assert_not_called()


def test_enable_allows_sign_in_once(audit: mock.MagicMock) -> None:
    with patched_hook(EnableEntraUserOperator) as hook:
        hook.get_user.return_value = BLOCKED
        hook.set_account_enabled.return_value = True
        result = EnableEntraUserOperator(task_id="enable_user", tenant="globex", user="u-1").act(CONTEXT)
    hook.set_account_enabled.assert_called_once_with(BLOCKED, True)
    assert result == {"user_id": "u-1", "user_principal_name": "jdoe@globex.example", "changed": True}
    assert audit.call_args.kwargs["capability"] == "entra-user-enable"


def test_privileged_steps_need_the_approval_and_bind_what_they_act_on() -> None:
    assert issubclass(DisableEntraUserOperator, RequiresApproval)
    assert issubclass(EnableEntraUserOperator, RequiresApproval)
    assert not issubclass(InspectEntraUserOperator, RequiresApproval)
    assert set(DisableEntraUserOperator.artifact_fields) == {"user", "tenant", "reset_mfa"}
    assert set(EnableEntraUserOperator.artifact_fields) == {"user", "tenant"}
    # the approval is bound to the MFA decision too: a "no" approval cannot delete methods
    no = _disable(reset_mfa="no").expected_artifact(CONTEXT)
    yes = _disable(reset_mfa="yes").expected_artifact(CONTEXT)
    assert no != yes
