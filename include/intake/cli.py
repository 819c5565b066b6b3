"""``python -m include.cli events ...``: publish an intake event by hand, read a dead-letter queue.

``events publish --source siem-alerts --file alert.json`` sends the file's event (the envelope of
docs/intake.md); or give the parts: ``--kind siem.alert --id ALERT-1 --data '{"tenant": ...}'``
(``source`` and ``occurred_at`` are filled in). The event is checked against its schema first (what
the intake task would refuse is refused here, with the reason), unless ``--no-check``.
``events dead-letters --source siem-alerts`` lists the dead-lettered messages with their reasons
(without removing them). AWS credentials and region: boto3's usual chain (environment, profile,
instance role); ``--endpoint-url`` for moto.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from include.intake.queues import MESSAGE_ID_ATTRIBUTE, REASON_ATTRIBUTE


def _client(args: argparse.Namespace) -> Any:
    import boto3

    return boto3.client("sqs", endpoint_url=args.endpoint_url, region_name=args.region)


def build_event(args: argparse.Namespace) -> dict[str, Any]:
    """The event to send: the file's, or one made of ``--kind``/``--id``/``--data``."""
    if args.file is not None:
        try:
            event = json.loads(Path(args.file).read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise SystemExit(f"events publish: cannot read an event from {args.file}: {error}") from None
        if isinstance(event, dict):
            event.setdefault("source", args.source)
        return event
    missing = [
        flag for flag, value in (("--kind", args.kind), ("--id", args.id), ("--data", args.data)) if not value
    ]
    if missing:
        raise SystemExit(f"events publish: give --file, or {', '.join(missing)}")
    try:
        data = json.loads(args.data)
    except ValueError:
        raise SystemExit("events publish: --data is not JSON") from None
    return {
        "source": args.source,
        "id": args.id,
        "kind": args.kind,
        "occurred_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "data": data,
    }


def publish(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    from include.intake.events import EventRejected, parse_event
    from include.intake.policy import load_intake
    from include.intake.queues import IntakeQueues

    source = load_intake().source(args.source)
    event = build_event(args)
    body = json.dumps(event, separators=(",", ":"))
    if not args.no_check:
        try:
            parse_event(body, source)
        except EventRejected as rejected:
            print(f"events publish: not sent, the intake would refuse it: {rejected.reason}", file=sys.stderr)
            return 2
    message_id = IntakeQueues(source, _client(args)).publish(body)
    print(
        json.dumps({"queue": source.queue, "message_id": message_id, "event_id": event.get("id")}), file=out
    )
    return 0


def dead_letters(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    from include.intake.policy import load_intake
    from include.intake.queues import IntakeQueues

    queues = IntakeQueues(load_intake().source(args.source), _client(args))
    response = queues.client.receive_message(
        QueueUrl=queues.dead_letter_url,
        MaxNumberOfMessages=10,
        VisibilityTimeout=0,  # a look, not a take: they stay visible for the next reader
        MessageAttributeNames=["All"],
    )
    for message in response.get("Messages") or ():
        attributes = message.get("MessageAttributes") or {}
        print(
            json.dumps(
                {
                    "message_id": (attributes.get(MESSAGE_ID_ATTRIBUTE) or {}).get("StringValue"),
                    "reason": (attributes.get(REASON_ATTRIBUTE) or {}).get(
                        "StringValue", "redriven by SQS (no reason)"
                    ),
                }
            ),
            file=out,
        )
    return 0


def register(subparsers: Any) -> None:
    events = subparsers.add_parser("events", help="publish an intake event; read a dead-letter queue")
    commands = events.add_subparsers(dest="events_command", required=True)
    for name, handler, help_text in (
        ("publish", publish, "send one event to its source's queue"),
        ("dead-letters", dead_letters, "list a source's dead-lettered messages and their reasons"),
    ):
        command = commands.add_parser(name, help=help_text, allow_abbrev=False)
        command.add_argument("--source", required=True, help="the source (intake.yaml), e.g. siem-alerts")
        command.add_argument("--endpoint-url", default=None, help="SQS endpoint (moto locally)")
        command.add_argument("--region", default=None, help="AWS region (default: boto3's)")
        command.set_defaults(handler=handler)
        if name == "publish":
            command.add_argument("--file", default=None, help="a JSON file holding the event")
            command.add_argument("--kind", default=None, help="the event kind, e.g. siem.alert")
            command.add_argument("--id", default=None, help="the event's id at the source")
            command.add_argument("--data", default=None, help="the event's data, a JSON object")
            command.add_argument("--no-check", action="store_true", help="send without checking the schema")
