"""The directory connector's input checks: pure, no directory needed (the integration test has one)."""

from __future__ import annotations

from typing import Any

import pytest

from include.connectors.errors import ConnectorError, PermanentError
from include.connectors.ldap import (
    DirectoryHook,
    DirectoryResult,
    DirectoryValidationError,
    validate_email,
    validate_employee_id,
    validate_group,
    validate_groups,
    validate_password,
    validate_text,
    validate_uid,
)


@pytest.mark.parametrize("uid", ["ab", "ada.lovelace", "j_doe-2", "a" + "b" * 31, "x9"])
def test_valid_uids(uid: str) -> None:
    assert validate_uid(uid) == uid


@pytest.mark.parametrize(
    "uid",
    ["", "a", "Ada", "1ada", ".ada", "ada lovelace", "ada@x", "a" * 33, "ada,ou=x", "ada*", "é", None, 7],
)
def test_invalid_uids(uid: Any) -> None:
    with pytest.raises(DirectoryValidationError, match=r"must match \^\[a-z\]"):
        validate_uid(uid)


@pytest.mark.parametrize("email", ["ada@secops.example", "a.b+tag@mail.example.co.uk", "x_y@d-1.io"])
def test_valid_emails(email: str) -> None:
    assert validate_email(email) == email


@pytest.mark.parametrize(
    "email",
    ["", "ada", "ada@", "@secops.example", "ada@secops", "ada@@secops.example", "ada @secops.example",
     "ada@-secops.example", "ada@secops.example\n", "a" * 65 + "@secops.example", None],
)  # fmt: skip
def test_invalid_emails(email: Any) -> None:
    with pytest.raises(DirectoryValidationError, match="is not an address"):
        validate_email(email)


def test_groups_are_deduplicated_sorted_and_checked() -> None:
    assert validate_groups(["vpn-users", "soc", "vpn-users"]) == ("soc", "vpn-users")
    assert validate_groups(()) == ()
    with pytest.raises(DirectoryValidationError, match="got the string"):
        validate_groups("vpn-users")
    for bad in ("Soc", "s", "soc,ou=x", "soc)(cn=*"):
        with pytest.raises(DirectoryValidationError, match="group"):
            validate_group(bad)


def test_employee_ids() -> None:
    assert validate_employee_id("E-1001") == "E-1001"
    for bad in ("", "-1", "E 1", "E*", "x" * 33, 1001):
        with pytest.raises(DirectoryValidationError, match="employee_id"):
            validate_employee_id(bad)


def test_display_text() -> None:
    assert validate_text("title", "Lead Analyst (SOC)", max_length=128) == "Lead Analyst (SOC)"
    for bad, reason in [
        ("", "non-empty"),
        (" Ada", "surrounding"),
        ("A\x00da", "control"),
        ("a" * 65, "at most"),
    ]:
        with pytest.raises(DirectoryValidationError, match=reason):
            validate_text("given_name", bad, max_length=64)


def test_password_errors_never_repeat_the_password() -> None:
    assert validate_password("correct-horse-battery") == "correct-horse-battery"
    for bad in ("short-pw", "tab\there-and-long", "x" * 300):
        with pytest.raises(DirectoryValidationError) as refused:
            validate_password(bad)
        assert bad not in str(refused.value)


def test_errors_are_permanent_connector_errors() -> None:
    with pytest.raises(DirectoryValidationError) as refused:
        validate_uid("X", operation="ensure_user")
    assert isinstance(refused.value, PermanentError)
    assert isinstance(refused.value, ConnectorError)
    assert isinstance(refused.value, ValueError)
    assert str(refused.value) == "ldap ensure_user: uid 'X' must match ^[a-z][a-z0-9._-]{1,31}$"


def test_hook_does_no_io_until_used() -> None:
    hook = DirectoryHook("no_such_connection")  # no connection lookup, no socket
    assert hook.conn_id == "no_such_connection"
    assert "connection" not in hook.__dict__
    with pytest.raises(DirectoryValidationError):
        hook.disable_user("Not Valid")  # refused before the connection is even looked up
    assert "connection" not in hook.__dict__


def test_result_as_xcom() -> None:
    result = DirectoryResult(uid="ada", dn="uid=ada,ou=people,dc=x", changed=True, groups_removed=("vpn",))
    assert result.as_xcom() == {
        "uid": "ada",
        "dn": "uid=ada,ou=people,dc=x",
        "created": False,
        "changed": True,
        "disabled": False,
        "changed_attributes": [],
        "groups_added": [],
        "groups_created": [],
        "groups_removed": ["vpn"],
    }
