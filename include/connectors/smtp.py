"""The mail relay: every mail the platform sends goes through :class:`SmtpRelayHook`.

Connection ``smtp_alerts`` (:data:`ALERT_SMTP_CONN_ID`, type ``smtp``): host and port of the relay,
login/password if it wants them; the SMTP provider's extras (``disable_tls``, ``disable_ssl``,
``from_email``, ``retry_limit``, ``timeout``, ``ssl_context``) and the connector base's rate-limit
extras. The SMTP protocol itself (TLS, login, MIME, the client's own retries) is the Airflow SMTP
provider's :class:`~airflow.providers.smtp.hooks.smtp.SmtpHook`, used as this hook's client.

Who sends what: approval requests and reminders (``include.approvals.notify``, best effort), the
manager's onboarding mail (``include.operators.mail``), SLA-miss alerts from the triggerer
(``include.workflows.alerts``), and the service checks' NOOP (``include.workflows.service_check``).
"""

from __future__ import annotations

import re
import smtplib
import ssl
from collections.abc import Iterable, Mapping
from functools import cached_property
from typing import Any, ClassVar

from airflow.providers.smtp.hooks.smtp import SmtpHook
from airflow.sdk import Connection

from include.connectors.base import ConnectorHook

ALERT_SMTP_CONN_ID = "smtp_alerts"
ALERT_FROM = "orchestrator@secops.example"
NOOP_TIMEOUT_SECONDS = 10
NOOP_OK = 250
# RFC 5322 2.1.1: a header line should not exceed 78 characters and must not exceed 998; relays
# refuse longer lines ("500 Line too long"). The provider sends ``as_string()``, which never folds.
HEADER_LINE_SOFT = 78
HEADER_LINE_HARD = 998


def recipients_of(to: str | Iterable[str]) -> list[str]:
    """The addresses of ``to`` (a list, or a string separated by ``,``/``;``), de-duplicated, order kept."""
    addresses = re.split(r"\s*[,;]\s*", to) if isinstance(to, str) else list(to)
    return list(dict.fromkeys(addresses))


def folded_header(name: str, value: str) -> str:
    """``value`` folded at its ``", "`` separators so no line of the header exceeds 78 characters
    where it can (a list of runs or correlation ids may be thousands of characters long).

    The SMTP provider renders the message with ``as_string()`` (no folding), and a relay refuses a
    line over 998 characters, so the whole mail would be lost: fold here, before any send.

    :raises ValueError: a header line that cannot be folded under 998 characters (a value with a
        line break of its own, or one separator-free part that long); nothing is sent.
    """
    if "\r" in value or "\n" in value:
        raise ValueError(f"mail header {name}: the value holds a line break")
    lines: list[str] = []
    line = f"{name}: "
    parts = value.split(", ")
    for index, part in enumerate(parts):
        piece = part + ("," if index < len(parts) - 1 else "")
        if index and len(line) + 1 + len(piece) > HEADER_LINE_SOFT:
            lines.append(line)
            line = " " + piece
        else:
            line += (" " if index else "") + piece
    lines.append(line)
    if any(len(x) > HEADER_LINE_HARD for x in lines):
        raise ValueError(
            f"mail header {name}: a part longer than {HEADER_LINE_HARD} characters cannot be folded"
        )
    return "\n".join(lines)[len(name) + 2 :]


class SharedTlsSmtpClient(SmtpHook):
    """``SmtpHook`` that builds the default TLS context once per process, not once per mail.

    The provider calls ``ssl.create_default_context()`` for every connection (for the async
    client even when TLS is off), which loads the whole system CA store. In the triggerer that
    was half the trigger runner's samples (py-spy, issue 8); sharing it took the triggerer from
    0.38 to 0.23 CPU-s per SLA alert, and a 200-run burst past its SLA sends 120-odd of them.
    A context is configuration only (CA store, verification mode); the SMTP clients read it and
    never change it, so one can serve every connection. ``ssl_context: none`` and invalid values
    still get the provider's own answer.

    It is the relay hook's client, not a hook of its own: :class:`SmtpRelayHook` is the one hook
    of the SMTP relay.

    :param smtp_conn_id: the SMTP connection.
    :param auth_type: ``basic`` or ``oauth2`` (the connection's ``auth_type`` extra wins).
    :param connection: the connection, if the caller has read it already (no second lookup).
    """

    _default_tls: ClassVar[ssl.SSLContext | None] = None

    def __init__(
        self,
        smtp_conn_id: str = SmtpHook.default_conn_name,
        auth_type: str = "basic",
        *,
        connection: Connection | None = None,
    ) -> None:
        super().__init__(smtp_conn_id=smtp_conn_id, auth_type=auth_type)
        self.known_connection = connection

    # An instance method over BaseHook's classmethod: the provider's get_conn() calls
    # self.get_connection(), and only this instance knows the connection already read.
    def get_connection(self, conn_id: str) -> Connection:  # type: ignore[override]
        """The connection the relay hook already read, if it is this one: one secrets lookup per mail."""
        if self.known_connection is not None and self.known_connection.conn_id == conn_id:
            return self.known_connection
        return super().get_connection(conn_id)

    def _build_ssl_context(self) -> ssl.SSLContext | None:
        if self.ssl_context not in (None, "default"):
            return super()._build_ssl_context()
        if SharedTlsSmtpClient._default_tls is None:
            SharedTlsSmtpClient._default_tls = super()._build_ssl_context()
        return SharedTlsSmtpClient._default_tls


class SmtpRelayHook(ConnectorHook):
    """The platform's SMTP relay: send a mail (sync or async), or ask it for a NOOP.

    Sends are not retried by the connector base: the SMTP client retries a dropped connection and
    a failed ``sendmail`` itself (``retry_limit``), and every caller decides what a lost mail means
    (an approval reminder is best effort, the manager's mail fails its task, which Airflow
    retries); a second, backing-off layer would hold a step for minutes while the relay is down.

    :param conn_id: the SMTP connection; default :data:`ALERT_SMTP_CONN_ID`.
    :param tenant: whose mail it is, for the rate limit; the platform's by default.
    :param from_email: the sender address.
    :param auth_type: ``basic`` or ``oauth2`` (the connection's ``auth_type`` extra wins).
    """

    system = "smtp"
    default_conn_name = ALERT_SMTP_CONN_ID
    conn_type = "smtp"
    hook_name = "SMTP relay"

    def __init__(
        self,
        conn_id: str | None = None,
        *,
        tenant: str = "platform",
        from_email: str = ALERT_FROM,
        auth_type: str = "basic",
        **kwargs: Any,
    ) -> None:
        super().__init__(conn_id, tenant=tenant, **kwargs)
        self.from_email = from_email
        self.auth_type = auth_type

    @cached_property
    def client(self) -> SharedTlsSmtpClient:
        """The SMTP client (nothing connects before a send); it reuses the connection this hook
        read already, if any (the async path reads it in the client, off the event loop's way)."""
        return SharedTlsSmtpClient(
            smtp_conn_id=self.conn_id, auth_type=self.auth_type, connection=self.__dict__.get("connection")
        )

    def _message(
        self, to: str | Iterable[str], subject: str, html: str, headers: Mapping[str, str] | None
    ) -> dict[str, Any]:
        return {
            "to": recipients_of(to),
            "subject": subject,
            "html_content": html,
            "from_email": self.from_email,
            "custom_headers": {k: folded_header(k, v) for k, v in (headers or {}).items()},
        }

    def send(
        self, to: str | Iterable[str], subject: str, html: str, *, headers: Mapping[str, str] | None = None
    ) -> list[str]:
        """Send one HTML mail; return its recipients. SMTP and connection errors propagate.

        :param to: the recipients (a list, or one string separated by ``,`` or ``;``).
        :param subject: the subject line.
        :param html: the HTML body.
        :param headers: extra headers (``Message-ID``, ``X-Orchestrator-*``), sent as given.
        """
        message = self._message(to, subject, html, headers)

        def deliver() -> None:
            with self.client as smtp:
                smtp.send_email_smtp(**message)

        self.call("send", deliver, retry=False)
        return list(message["to"])

    async def asend(
        self, to: str | Iterable[str], subject: str, html: str, *, headers: Mapping[str, str] | None = None
    ) -> list[str]:
        """:meth:`send` for the triggerer (asyncio, the async SMTP client).

        The shared rate limit is not consulted here: its permit is a blocking call that would stall
        the triggerer's event loop, and the triggerer's mails (SLA alerts, approval reminders) are
        few and already paced by the deadlines and ladders that cause them.

        :param to: the recipients (a list, or one string separated by ``,`` or ``;``).
        :param subject: the subject line.
        :param html: the HTML body.
        :param headers: extra headers, sent as given.
        """
        message = self._message(to, subject, html, headers)
        async with self.client as smtp:
            await smtp.asend_email_smtp(**message)
        return list(message["to"])

    def noop(self) -> tuple[str, int]:
        """Ask the relay for a NOOP over plain SMTP (no TLS, no login): is it there and answering?

        :return: ``("host:port", 250)``.
        :raises ValueError: if the connection has no host.
        :raises ConnectionError: if the relay answers with another code.
        """
        connection = self.connection
        if not connection.host:
            raise ValueError(f"connection {self.conn_id} has no host")

        def ask() -> int:
            with smtplib.SMTP(connection.host, connection.port or 25, timeout=NOOP_TIMEOUT_SECONDS) as smtp:
                code, _banner = smtp.noop()
            return int(code)

        code = self.call("noop", ask, retry=False)
        if code != NOOP_OK:
            raise ConnectionError(f"SMTP relay {connection.host}:{connection.port} answered NOOP with {code}")
        return f"{connection.host}:{connection.port}", code
