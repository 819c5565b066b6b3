"""A real SMTP server on 127.0.0.1 that keeps every message it receives.

Each message is stored as ``<maildir>/<n>.eml`` and indexed in ``<maildir>/index.jsonl`` (one JSON
object per message: sender, recipients, subject, file), so tests and people can read what the
orchestrator sent. Run: ``python -m devstack.standins.smtp --port 2525 --maildir DIR``.

Contract: SMTP as aiosmtpd serves it (RFC 5321: EHLO, MAIL, RCPT, DATA; 250 on every accepted
message); a real mail server, not a model of one. Not shown: authentication (AUTH) and STARTTLS,
relaying and delivery, bounces and rejected recipients, size limits, spam filtering.
"""

from __future__ import annotations

import argparse
import asyncio
import email
import email.policy
import json
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

from devstack.processes import wait_for_stop_signal

INDEX = "index.jsonl"


class MaildirHandler:
    """aiosmtpd handler: write the message, then its index line, under one lock (ordered, complete)."""

    def __init__(self, maildir: Path) -> None:
        self.maildir = maildir
        self.maildir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._count = sum(1 for _ in self.maildir.glob("*.eml"))

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self._lock:
            self._count += 1
            path = self.maildir / f"{self._count:06d}.eml"
            path.write_bytes(envelope.content)
            record = {
                "received_at": datetime.now(UTC).isoformat(),
                "mail_from": envelope.mail_from,
                "rcpt_tos": list(envelope.rcpt_tos),
                "subject": str(message.get("Subject", "")),
                "message_id": str(message.get("Message-ID", "")),
                "file": path.name,
            }
            with (self.maildir / INDEX).open("a", encoding="utf-8") as index:
                index.write(json.dumps(record) + "\n")
        return "250 Message accepted for delivery"


@dataclass(frozen=True)
class StoredMessage:
    mail_from: str
    rcpt_tos: list[str]
    subject: str
    path: Path

    def message(self) -> email.message.EmailMessage:
        return email.message_from_bytes(self.path.read_bytes(), policy=email.policy.default)

    def body(self) -> str:
        part = self.message().get_body(preferencelist=("html", "plain"))
        return part.get_content() if part is not None else ""


def read_messages(maildir: Path) -> list[StoredMessage]:
    """Every message the sink stored, oldest first."""
    index = maildir / INDEX
    if not index.exists():
        return []
    messages = []
    for line in index.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        messages.append(
            StoredMessage(
                record["mail_from"], record["rcpt_tos"], record["subject"], maildir / record["file"]
            )
        )
    return messages


def serve(host: str, port: int, maildir: Path) -> None:
    controller = Controller(MaildirHandler(maildir), hostname=host, port=port)
    controller.start()
    print(f"SMTP sink listening on {host}:{port}, storing mail in {maildir}", flush=True)
    try:
        wait_for_stop_signal()
    finally:
        controller.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--maildir", type=Path, required=True)
    args = parser.parse_args()
    asyncio.set_event_loop(asyncio.new_event_loop())
    serve(args.host, args.port, args.maildir)


if __name__ == "__main__":
    main()
