"""The Teams/PagerDuty stand-in's contract checks and its place in the stack (no secrets on argv)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from devstack.standins import webhooks
from devstack.standins.webhooks import card_errors, event_errors

CARD = {"type": "AdaptiveCard", "version": "1.4", "body": [{"type": "TextBlock", "text": "x"}]}
GOOD_MESSAGE = {
    "type": "message",
    "attachments": [{"contentType": webhooks.CARD_CONTENT_TYPE, "content": CARD}],
}


def test_a_webhook_message_with_an_adaptive_card_is_valid() -> None:
    assert card_errors(GOOD_MESSAGE) == []


@pytest.mark.parametrize(
    ("message", "error"),
    [
        (None, "not a JSON object"),
        ({**GOOD_MESSAGE, "type": "card"}, '"type" must be "message"'),
        ({"type": "message", "attachments": []}, "non-empty list"),
        ({"type": "message", "attachments": [{"contentType": "text/html", "content": CARD}]}, "contentType"),
        (
            {
                "type": "message",
                "attachments": [{"contentType": webhooks.CARD_CONTENT_TYPE, "content": {**CARD, "body": []}}],
            },
            "body",
        ),
        (
            {
                "type": "message",
                "attachments": [{"contentType": webhooks.CARD_CONTENT_TYPE, "content": {"type": "Hero"}}],
            },
            "AdaptiveCard",
        ),
    ],
)
def test_what_teams_refuses(message: Any, error: str) -> None:
    assert any(error in e for e in card_errors(message))


TRIGGER = {
    "routing_key": "k" * 32,
    "event_action": "trigger",
    "dedup_key": "a/b",
    "payload": {"summary": "s", "source": "x", "severity": "critical"},
}


@pytest.mark.parametrize(
    ("event", "error"),
    [
        ({**TRIGGER, "routing_key": ""}, "routing_key"),
        ({**TRIGGER, "event_action": "open"}, "event_action"),
        ({**TRIGGER, "dedup_key": "x" * 256}, "dedup_key"),
        ({"routing_key": "k", "event_action": "resolve"}, "'dedup_key' is missing"),
        ({**TRIGGER, "payload": {"summary": "s", "source": "x", "severity": "fatal"}}, "severity"),
        ({**TRIGGER, "payload": {"summary": "s" * 1025, "source": "x", "severity": "info"}}, "1024"),
        ({**TRIGGER, "payload": None}, "payload"),
    ],
)
def test_what_pagerduty_refuses(event: Any, error: str) -> None:
    assert event_errors(TRIGGER) == []
    assert any(error in e for e in event_errors(event))


@dataclass
class FakeProfile:
    root: Path
    api_port: int = 18080

    def local_secret(self, name: str, generate: Any = None) -> str:
        path = self.root / "secrets" / name
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(generate() if generate else "s")
        return path.read_text()


def test_every_policy_channel_gets_a_connection_and_secrets_stay_off_argv(tmp_path: Path) -> None:
    profile = FakeProfile(tmp_path)
    conns = webhooks.connections(profile)
    assert {"teams_soc", "teams_hr", "pagerduty_soc"} <= set(conns)
    assert conns["pagerduty_soc"]["password"] == webhooks.routing_key(profile, "soc")
    assert len(webhooks.routing_key(profile, "soc")) == 32
    assert webhooks.teams_token(profile, "soc") in conns["teams_soc"]["password"]
    assert conns["teams_soc"]["host"] == f"http://127.0.0.1:{18080 + webhooks.PORT_OFFSET}"
    argv = " ".join(webhooks.standin_argv(profile))
    assert webhooks.routing_key(profile, "soc") not in argv
    assert webhooks.teams_token(profile, "soc") not in argv
    config = json.loads((tmp_path / "secrets" / webhooks.CONFIG_LOCAL_NAME).read_text())
    assert config["pagerduty"] == {webhooks.routing_key(profile, "soc"): "soc"}
    assert (tmp_path / "secrets" / webhooks.CONFIG_LOCAL_NAME).stat().st_mode & 0o077 == 0
