"""``python -m include.cli events``: publish checks first, dead-letters shows reasons."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from intake_samples import alert

from include.cli.__main__ import build_parser
from include.intake.policy import IntakePolicy
from include.intake.queues import IntakeQueues


def run(*argv: str) -> tuple[int, str]:
    args = build_parser().parse_args(["events", *argv, "--region", "us-east-1"])
    out = io.StringIO()
    code = args.handler(args, out)
    return code, out.getvalue()


def queued(sqs: Any, policy: IntakePolicy) -> list[str]:
    url = IntakeQueues(policy.source("siem-alerts"), sqs).url
    return [
        m["Body"] for m in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages") or []
    ]


def test_publish_a_file_sends_the_event(sqs: Any, policy: IntakePolicy, tmp_path: Path) -> None:
    path = tmp_path / "alert.json"
    path.write_text(json.dumps(alert()), encoding="utf-8")
    code, out = run("publish", "--source", "siem-alerts", "--file", str(path))
    assert code == 0
    assert json.loads(out)["event_id"] == "ALERT-0001"
    [body] = queued(sqs, policy)
    assert json.loads(body) == alert()


def test_publish_from_flags_fills_source_and_time(sqs: Any, policy: IntakePolicy) -> None:
    data = json.dumps({"tenant": "acme", "severity": "low", "ip": "198.51.100.4"})
    code, _ = run(
        "publish", "--source", "siem-alerts", "--kind", "siem.alert", "--id", "ALERT-9", "--data", data
    )
    assert code == 0
    [body] = queued(sqs, policy)
    event = json.loads(body)
    assert (event["source"], event["id"], event["data"]["ip"]) == ("siem-alerts", "ALERT-9", "198.51.100.4")


def test_publish_refuses_what_the_intake_would_refuse_and_sends_nothing(
    sqs: Any, policy: IntakePolicy, capsys: pytest.CaptureFixture[str]
) -> None:
    data = json.dumps({"tenant": "acme", "severity": "high", "host": "laptop"})
    code, _ = run(
        "publish", "--source", "siem-alerts", "--kind", "siem.alert", "--id", "ALERT-8", "--data", data
    )
    assert code == 2
    assert "data.host: does not satisfy pattern" in capsys.readouterr().err
    assert queued(sqs, policy) == []


def test_dead_letters_lists_reasons(sqs: Any, policy: IntakePolicy) -> None:
    queues = IntakeQueues(policy.source("siem-alerts"), sqs)
    queues.dead_letter({"MessageId": "m-1", "Body": "{}"}, "kind: unknown")
    code, out = run("dead-letters", "--source", "siem-alerts")
    assert code == 0
    assert json.loads(out) == {"message_id": "m-1", "reason": "kind: unknown"}
