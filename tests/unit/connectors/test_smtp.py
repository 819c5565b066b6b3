"""SmtpRelayHook against an SMTP server in this process (aiosmtpd): what arrives, and what fails how.

Also the relay's callers that only wrap it: the approval ladder's best-effort mail
(``include.approvals.notify``, from the triggerer through ``include.triggers.approval``'s
``asend_email``) and the SLA-miss alert (``include.workflows.alerts``).
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any
from unittest import mock

import pytest
from aiosmtpd.controller import Controller
from airflow.sdk import Connection

from include.approvals.notify import send_email
from include.connectors.smtp import (
    ALERT_FROM,
    SharedTlsSmtpClient,
    SmtpRelayHook,
    folded_header,
    recipients_of,
)
from include.triggers.approval import asend_email as ladder_send
from include.workflows.alerts import SlaMissNotifier

HOST = "127.0.0.1"
EXTRA = '{"disable_ssl": true, "disable_tls": true, "retry_limit": 0, "timeout": 5}'


@dataclass
class Sink:
    """Collects what the server accepted: (envelope sender, envelope recipients, parsed message)."""

    mails: list[tuple[str, list[str], EmailMessage]] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.mails.append((envelope.mail_from, list(envelope.rcpt_tos), message))  # type: ignore[arg-type]
        return "250 OK"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def connection_to(port: int, host: str | None = HOST) -> Connection:
    return Connection(conn_id="smtp_alerts", conn_type="smtp", host=host, port=port, extra=EXTRA)


class Lookups(list[str]):
    """Every connection lookup, by conn_id; :meth:`point` sets the connection they return."""

    connection: Connection | None = None

    def point(self, connection: Connection) -> None:
        self.connection = connection


@pytest.fixture
def lookups(monkeypatch: pytest.MonkeyPatch) -> Lookups:
    """``smtp_alerts`` as the test points it; sync and async lookups recorded."""
    seen = Lookups()

    def get_connection(cls: type, conn_id: str) -> Connection:
        seen.append(conn_id)
        assert seen.connection is not None
        return seen.connection

    async def aget_connection(cls: type, conn_id: str) -> Connection:
        return get_connection(cls, conn_id)

    monkeypatch.setattr("airflow.sdk.bases.hook.BaseHook.get_connection", classmethod(get_connection))
    monkeypatch.setattr("airflow.sdk.bases.hook.BaseHook.aget_connection", classmethod(aget_connection))
    return seen


@pytest.fixture
def smtp(lookups: Lookups) -> Iterator[tuple[Sink, Lookups]]:
    """An SMTP server in this process, and ``smtp_alerts`` pointing at it."""
    handler = Sink()
    port = free_port()
    controller = Controller(handler, hostname=HOST, port=port)
    controller.start()
    lookups.point(connection_to(port))
    try:
        yield handler, lookups
    finally:
        controller.stop()


def body_of(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("html",))
    assert part is not None
    return str(part.get_content())


# --- the hook ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("to", "expected"),
    [
        pytest.param(["a@x", "b@x", "a@x"], ["a@x", "b@x"], id="list-deduplicated"),
        pytest.param("a@x, b@x;c@x", ["a@x", "b@x", "c@x"], id="separated-string"),
        pytest.param("a@x", ["a@x"], id="one"),
    ],
)
def test_recipients_of(to: Any, expected: list[str]) -> None:
    assert recipients_of(to) == expected


def test_send_delivers_one_mail_with_its_headers(smtp: tuple[Sink, Lookups]) -> None:
    sink, lookups = smtp
    hook = SmtpRelayHook()

    sent = hook.send(
        ["ada@acme.example", "bob@acme.example", "ada@acme.example"],
        "Approve isolation of web-01",
        "<p>Please answer</p>",
        headers={
            "X-Orchestrator-Correlation-Id": "RT-1234",
            "Message-ID": "<m-1@orchestrator.secops.example>",
        },
    )

    assert sent == ["ada@acme.example", "bob@acme.example"]
    [(sender, recipients, message)] = sink.mails
    assert (sender, recipients) == (ALERT_FROM, ["ada@acme.example", "bob@acme.example"])
    assert message["Subject"] == "Approve isolation of web-01"
    assert message["From"] == ALERT_FROM
    assert message["To"] == "ada@acme.example, bob@acme.example"
    assert message["X-Orchestrator-Correlation-Id"] == "RT-1234"
    assert message["Message-ID"] == "<m-1@orchestrator.secops.example>"
    assert body_of(message) == "<p>Please answer</p>"
    # The relay hook read the connection (for its rate limit); the SMTP client reused it.
    assert lookups == ["smtp_alerts"]


def test_asend_delivers_through_the_async_client(smtp: tuple[Sink, Lookups]) -> None:
    sink, _ = smtp
    hook = SmtpRelayHook(from_email="alerts@secops.example")

    sent = asyncio.run(hook.asend("ops@acme.example", "SLA miss", "<b>late</b>", headers={"X-A": "1"}))

    assert sent == ["ops@acme.example"]
    [(sender, recipients, message)] = sink.mails
    assert (sender, recipients) == ("alerts@secops.example", ["ops@acme.example"])
    assert (message["Subject"], message["X-A"]) == ("SLA miss", "1")
    assert body_of(message) == "<b>late</b>"


@pytest.mark.parametrize("mode", ["send", "asend"])
def test_a_digest_of_200_runs_is_folded_and_accepted(smtp: tuple[Sink, Lookups], mode: str) -> None:
    """The relay refuses header lines over 998 characters ("500 Line too long"); the provider does
    not fold: a late burst's digest (CI: 40-odd runs) was refused and its runs never mailed."""
    from include.workflows.sla_digest import Batch, LateRun, MailChannel

    sink, _ = smtp
    runs = tuple(
        LateRun(
            miss_id=f"d-{n}",
            domain="support",
            dag_id="support_service_check",
            run_id=f"manual__2026-12-07T04:33:{n // 100:02d}.{n:06d}+00:00",
            correlation_id=f"support_service_check.manual__2026-12-07T04:33:{n:06d}",
            kind="fast_path",
            sla_seconds=120,
            deadline_at=f"2026-12-07T04:35:{n // 100:02d}+00:00",
        )
        for n in range(200)
    )
    batch = Batch("digest:support:2026-12-07T04:45:00+00:00", "support", runs)
    channel = MailChannel({"support": ["support-alerts@secops.example"]})
    now = datetime(2026, 12, 7, 5, tzinfo=UTC)
    if mode == "send":
        channel.send(batch, now)
    else:
        asyncio.run(channel.asend(batch, now))

    [(_, _, message)] = sink.mails
    assert message["X-Orchestrator-Runs"].split(", ") == [f"{r.dag_id}/{r.run_id}" for r in runs]
    assert message["X-Orchestrator-Correlation-Id"].split(", ") == [r.correlation_id for r in runs]
    assert max(len(line) for line in message.as_string().splitlines()) <= 998


def test_folded_header_keeps_short_values_and_refuses_line_breaks() -> None:
    assert folded_header("X-A", "RT-1, RT-2") == "RT-1, RT-2"
    folded = folded_header("X-Runs", ", ".join(["a" * 30] * 5))
    assert [len(line) for line in f"X-Runs: {folded}".split("\n")] == [71, 64, 31]
    with pytest.raises(ValueError, match="X-Bad: the value holds a line break"):
        folded_header("X-Bad", "RT-1\r\nBcc: eve@evil.example")
    with pytest.raises(ValueError, match="X-Long: a part longer than 998"):
        folded_header("X-Long", "x" * 1000)


def test_a_header_with_a_line_break_sends_nothing(smtp: tuple[Sink, Lookups]) -> None:
    sink, _ = smtp
    with pytest.raises(ValueError, match="X-Orchestrator-Correlation-Id"):
        SmtpRelayHook().send("a@x", "s", "<p>b</p>", headers={"X-Orchestrator-Correlation-Id": "a\nBcc: e@x"})
    assert sink.mails == []


def test_noop_asks_the_relay(smtp: tuple[Sink, Lookups]) -> None:
    sink, lookups = smtp
    assert lookups.connection is not None

    assert SmtpRelayHook().noop() == (f"{HOST}:{lookups.connection.port}", 250)
    assert sink.mails == []


def test_noop_needs_a_host(lookups: Lookups) -> None:
    lookups.point(connection_to(25, host=None))
    with pytest.raises(ValueError, match=r"^connection smtp_alerts has no host$"):
        SmtpRelayHook().noop()


def test_noop_with_another_answer_fails(lookups: Lookups) -> None:
    lookups.point(connection_to(2525))
    with mock.patch("include.connectors.smtp.smtplib.SMTP") as client:
        client.return_value.__enter__.return_value.noop.return_value = (421, b"closing")
        with pytest.raises(ConnectionError, match=f"^SMTP relay {HOST}:2525 answered NOOP with 421$"):
            SmtpRelayHook().noop()
    client.assert_called_once_with(HOST, 2525, timeout=10)


def test_a_dead_relay_raises(lookups: Lookups) -> None:
    lookups.point(connection_to(free_port()))
    with pytest.raises(ConnectionRefusedError):
        SmtpRelayHook().send(["a@x"], "s", "<p>b</p>")
    with pytest.raises(
        OSError, match=r"^Error connecting to 127\.0\.0\.1 on port \d+: .*Connect call failed"
    ):
        asyncio.run(SmtpRelayHook().asend(["a@x"], "s", "<p>b</p>"))


# --- the callers that wrap it --------------------------------------------------------------------


def test_approval_mail_is_sent_and_reported(smtp: tuple[Sink, Lookups]) -> None:
    sink, _ = smtp
    log = mock.Mock()

    outcome = send_email(["ada@x", "ada@x"], "Approve", "<p>a</p>", headers={"X-K": "v"}, log=log)
    ladder_outcome = asyncio.run(ladder_send(["bob@x"], "Reminder", "<p>r</p>", log=log))

    assert outcome == {"to": ["ada@x"], "subject": "Approve"}
    assert ladder_outcome == {"to": ["bob@x"], "subject": "Reminder"}
    assert [(m["Subject"], m["To"], m["X-K"]) for _, _, m in sink.mails] == [
        ("Approve", "ada@x", "v"),
        ("Reminder", "bob@x", None),
    ]
    log.warning.assert_not_called()


def test_approval_mail_failure_is_recorded_not_raised(lookups: Lookups) -> None:
    lookups.point(connection_to(free_port()))
    log = mock.Mock()

    outcome = send_email(["ada@x"], "Approve", "<p>a</p>", log=log)
    ladder_outcome = asyncio.run(ladder_send(["bob@x"], "Reminder", "<p>r</p>", log=log))

    assert outcome["to"] == ["ada@x"]
    assert outcome["error"].startswith("ConnectionRefusedError: ")
    assert ladder_outcome["error"].startswith("ConnectionRefusedError: ")
    assert log.warning.call_args_list == [
        mock.call("could not send %r to %s: %s", "Approve", "ada@x", "ConnectionRefusedError"),
        mock.call("could not send %r to %s: %s", "Reminder", "bob@x", "ConnectionRefusedError"),
    ]


def test_the_sla_alert_goes_through_the_relay(smtp: tuple[Sink, Lookups]) -> None:
    sink, _ = smtp
    notifier = SlaMissNotifier(
        domain="soc",
        kind="fast_path",
        sla_seconds=300,
        base_url="http://airflow.example/",
        to=["soc-alerts@secops.example"],
        from_email=ALERT_FROM,
        smtp_conn_id="smtp_alerts",
    )
    context = {
        "dag_run": {
            "dag_id": "soc_contain_host",
            "dag_run_id": "manual__1",
            "state": "running",
            "queued_at": "2026-12-06T10:00:00Z",
            "conf": {"correlation_id": "RT-77"},
        },
        "deadline": {"id": "d-1", "deadline_time": "2026-12-06T10:05:00Z"},
    }

    asyncio.run(notifier.async_notify(context))

    [(sender, recipients, message)] = sink.mails
    assert (sender, recipients) == (ALERT_FROM, ["soc-alerts@secops.example"])
    assert message["Subject"] == (
        "[SLA miss][soc] soc_contain_host run manual__1 exceeded its fast path SLA of 0:05:00"
    )
    assert message["X-Orchestrator-Correlation-Id"] == "RT-77"
    assert message["X-Orchestrator-Alert"] == "sla-miss/soc/soc_contain_host"
    assert message["Message-ID"] == "<sla-miss-d-1@orchestrator.secops.example>"
    assert 'href="http://airflow.example/dags/soc_contain_host/runs/manual__1"' in body_of(message)
    assert type(notifier.hook) is SharedTlsSmtpClient


def _client_on(extra: dict[str, Any]) -> SharedTlsSmtpClient:
    client = SharedTlsSmtpClient(smtp_conn_id="smtp_alerts")
    client.smtp_connection = Connection(
        conn_id="smtp_alerts", conn_type="smtp", host="relay", extra=json.dumps(extra)
    )
    return client


def test_the_client_builds_its_default_tls_context_once_per_process() -> None:
    first = _client_on({})._build_ssl_context()
    assert isinstance(first, ssl.SSLContext)
    assert _client_on({"ssl_context": "default"})._build_ssl_context() is first
    assert first.verify_mode == ssl.CERT_REQUIRED  # still the validating default
    assert first.check_hostname
    assert _client_on({"ssl_context": "none"})._build_ssl_context() is None
    with pytest.raises(RuntimeError, match="ssl_context"):
        _client_on({"ssl_context": "bogus"})._build_ssl_context()


def test_the_client_reuses_a_connection_already_read(monkeypatch: pytest.MonkeyPatch) -> None:
    known = connection_to(2525)
    other = Connection(conn_id="smtp_other", conn_type="smtp", host="elsewhere")
    monkeypatch.setattr(
        "airflow.sdk.bases.hook.BaseHook.get_connection", classmethod(lambda cls, conn_id: other)
    )
    client = SharedTlsSmtpClient(smtp_conn_id="smtp_alerts", connection=known)
    assert client.get_connection("smtp_alerts") is known
    assert client.get_connection("smtp_other") is other
    assert SharedTlsSmtpClient(smtp_conn_id="smtp_alerts").get_connection("smtp_alerts") is other
