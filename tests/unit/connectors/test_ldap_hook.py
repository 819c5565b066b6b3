"""DirectoryHook offline: it is a ConnectorHook, and which directory failures it retries.

Against a real slapd (operations, secrets, refused binds):
tests/integration/connectors/test_ldap_directory.py.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any
from unittest import mock

import pytest
from ldap3.core.exceptions import LDAPSocketOpenError

from include.connectors.base import ConnectorHook
from include.connectors.errors import RetryBudgetExhausted, TransientError
from include.connectors.ldap import DirectoryError, DirectoryHook, DirectoryNotFound


def _hook(**extras: Any) -> DirectoryHook:
    hook = DirectoryHook("ldap_test")
    hook.__dict__["connection"] = mock.MagicMock(host="127.0.0.1", port=23389)
    hook.__dict__["extras"] = {"retry_max_attempts": 3, "retry_base_delay": 0.001, **extras}
    return hook


def _result(code: int, description: str) -> mock.MagicMock:
    return mock.MagicMock(result={"result": code, "description": description, "message": ""})


def test_a_connector_hook_of_the_staff_tenant() -> None:
    hook = DirectoryHook()

    assert isinstance(hook, ConnectorHook)
    assert (hook.conn_id, hook.tenant, hook.system) == ("ldap_default", "secops", "ldap")
    assert DirectoryHook("ldap_other", tenant="acme").tenant == "acme"


@pytest.mark.parametrize(
    ("code", "description", "error"),
    [
        pytest.param(51, "busy", TransientError, id="busy"),
        pytest.param(52, "unavailable", TransientError, id="unavailable"),
        pytest.param(32, "noSuchObject", DirectoryNotFound, id="no-such-object"),
        pytest.param(50, "insufficientAccessRights", DirectoryError, id="refused"),
    ],
)
def test_result_codes_are_sorted_by_what_to_do(code: int, description: str, error: type) -> None:
    with pytest.raises(error) as raised:
        _hook()._check(_result(code, description), "get_user", "search (uid=ada)")

    assert (
        str(raised.value)
        == f"ldap get_user: search (uid=ada) at ldap://127.0.0.1:23389: {description} ({code})"
    )
    assert isinstance(raised.value, TransientError) is (error is TransientError)


def test_an_unreachable_directory_is_retried_with_a_fresh_connection() -> None:
    hook = _hook()
    sessions = []

    @contextmanager
    def session(operation: str) -> Any:
        sessions.append(operation)
        if len(sessions) == 1:
            raise LDAPSocketOpenError("socket connection error while opening: [Errno 111] Connection refused")
        yield "conn"

    with mock.patch.object(hook, "_session", side_effect=session):
        assert hook._run("get_user", lambda conn: f"read on {conn}") == "read on conn"

    assert sessions == ["get_user", "get_user"]
    assert hook.retry_count == 1


def test_a_directory_that_stays_down_gives_up_after_the_budget() -> None:
    hook = _hook(retry_max_attempts=2)

    @contextmanager
    def down(operation: str) -> Any:
        raise LDAPSocketOpenError("socket connection error while opening: [Errno 111] Connection refused")
        yield

    with (
        mock.patch.object(hook, "_session", side_effect=down),
        pytest.raises(RetryBudgetExhausted, match=r"gave up after 2 attempts.*LDAPSocketOpenError"),
    ):
        hook._run("get_user", lambda conn: None)


def test_a_refusal_is_not_retried() -> None:
    hook = _hook()
    work = mock.Mock(side_effect=DirectoryNotFound("uid 'ada' not found", operation="disable_user"))

    with (
        mock.patch.object(hook, "_session", return_value=mock.MagicMock()),
        pytest.raises(DirectoryNotFound, match="uid 'ada' not found"),
    ):
        hook._run("disable_user", work)
    assert work.call_count == 1
    assert hook.retry_count == 0
