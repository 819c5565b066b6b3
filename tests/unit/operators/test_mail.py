"""NotifyManagerOperator with a mocked relay hook: the exact send, the XCom, the error path."""

from __future__ import annotations

import smtplib
from collections.abc import Iterator
from typing import Any
from unittest import mock

import pytest

from include.connectors.smtp import SmtpRelayHook
from include.operators.mail import NotifyManagerOperator

TO, SUBJECT, HTML = "manager@acme.example", "Accounts for Ada Lovelace", "<p>ready</p>"


@pytest.fixture
def hook() -> Iterator[mock.MagicMock]:
    with mock.patch.object(NotifyManagerOperator, "hook", new_callable=mock.PropertyMock) as prop:
        yield prop.return_value


def notify(created: Any) -> NotifyManagerOperator:
    return NotifyManagerOperator(task_id="notify_manager", to=TO, subject=SUBJECT, html=HTML, created=created)


def test_the_hook_is_the_platforms_relay() -> None:
    hook = notify("True").hook
    assert type(hook) is SmtpRelayHook
    assert (hook.conn_id, hook.tenant) == ("smtp_alerts", "platform")
    other = NotifyManagerOperator(
        task_id="n", to=TO, subject=SUBJECT, html=HTML, created="True", conn_id="smtp_hr"
    )
    assert other.hook.conn_id == "smtp_hr"


@pytest.mark.parametrize("created", [pytest.param("True", id="str"), pytest.param(" True\n", id="rendered")])
def test_sends_when_this_run_created_the_accounts(hook: mock.MagicMock, created: str) -> None:
    hook.send.return_value = [TO]

    assert notify(created).execute({}) == {"sent": True, "to": [TO]}
    hook.send.assert_called_once_with([TO], SUBJECT, HTML)


@pytest.mark.parametrize(
    "created",
    [pytest.param("False", id="false"), pytest.param("None", id="none"), pytest.param("", id="empty")],
)
def test_no_mail_when_the_accounts_existed(hook: mock.MagicMock, created: str) -> None:
    assert notify(created).execute({}) == {"sent": False}
    hook.send.assert_not_called()


def test_a_failed_send_fails_the_task(hook: mock.MagicMock) -> None:
    hook.send.side_effect = smtplib.SMTPRecipientsRefused({TO: (550, b"no such user")})
    with pytest.raises(
        RuntimeError, match=r"^email to the manager failed: SMTPRecipientsRefused: \{'manager@"
    ):
        notify("True").execute({})
