"""Load and validate the intake policy (``include/policies/intake.yaml``): sources, kinds, routes.

Which event starts which workflow with which params is reviewed by pull request like every other
policy. The file is validated by its JSON schema and by the rules below; ``policy-check``
(``intake-routes``) also checks each route against the target DAG's params.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from functools import cache
from pathlib import Path
from typing import Any

from include.policies.loader import POLICY_DIR, SCHEMA_DIR, PolicyFile, parse_duration

INTAKE_FILE = POLICY_DIR / "intake.yaml"
EVENT_SCHEMA_DIR = SCHEMA_DIR / "events"
ENVELOPE_SCHEMA = EVENT_SCHEMA_DIR / "envelope.schema.json"
RUN_ID_PREFIX = "intake"


def kind_schema_path(kind: str) -> Path:
    """``include/policies/schema/events/<kind>.schema.json``: the schema of a kind's ``data``."""
    return EVENT_SCHEMA_DIR / f"{kind}.schema.json"


@dataclass(frozen=True)
class Route:
    """One workflow an event kind starts.

    ``params`` maps each workflow param to where its value comes from: a path (``id``, ``kind``,
    ``occurred_at``, ``data.<field>``), ``{"value": literal}`` or ``{"expires_in": "24h"}``.
    """

    workflow: str
    params: Mapping[str, Any]
    when: str | None = None


@dataclass(frozen=True)
class Source:
    """One system of record: its queue, its dead-letter queue and the kinds it may send."""

    name: str
    description: str
    queue: str
    dead_letter_queue: str
    visibility_timeout: timedelta
    max_receive_count: int
    events: Mapping[str, tuple[Route, ...]]

    @property
    def dag_id(self) -> str:
        """The source's intake DAG: ``intake_<source with _ for ->``."""
        return "intake_" + self.name.replace("-", "_")

    @property
    def asset_name(self) -> str:
        """The asset its queue is: ``intake_<source>`` (the watcher's events schedule the intake DAG)."""
        return self.dag_id


@dataclass(frozen=True)
class IntakePolicy:
    source_file: Path
    connection: str
    wait_time_seconds: int
    waiter_delay: timedelta
    max_messages: int
    sources: Mapping[str, Source]

    def source(self, name: str) -> Source:
        """The source ``name``.

        :raises KeyError: naming the file and the declared sources, when there is no such source.
        """
        try:
            return self.sources[name]
        except KeyError:
            raise KeyError(
                f"no source {name!r} in {self.source_file} (declared: {', '.join(sorted(self.sources))})"
            ) from None


def _rules(document: dict[str, Any], **_: object) -> list[str]:
    messages = []
    queues: dict[str, str] = {}
    for name, source in document["sources"].items():
        for key in ("queue", "dead_letter_queue"):
            queue = source[key]
            if queue in queues:
                messages.append(f"sources.{name}.{key}: queue {queue!r} is also {queues[queue]}")
            queues.setdefault(queue, f"sources.{name}.{key}")
        for kind, routes in source["events"].items():
            schema = kind_schema_path(kind)
            if not schema.is_file():
                messages.append(f"sources.{name}.events.{kind}: no schema {schema.relative_to(POLICY_DIR)}")
            targets = [route["workflow"] for route in routes]
            for workflow in sorted({t for t in targets if targets.count(t) > 1}):
                where = f"sources.{name}.events.{kind}"
                messages.append(f"{where}: workflow {workflow!r} twice (one run per event and workflow)")
        if parse_duration(source["visibility_timeout"]) > timedelta(hours=12):
            messages.append(f"sources.{name}.visibility_timeout: at most 12h (the SQS maximum)")
    return messages


def _build(document: dict[str, Any], source: Path, **_: object) -> IntakePolicy:
    sources = {
        name: Source(
            name=name,
            description=entry["description"],
            queue=entry["queue"],
            dead_letter_queue=entry["dead_letter_queue"],
            visibility_timeout=parse_duration(entry["visibility_timeout"]),
            max_receive_count=int(entry["max_receive_count"]),
            events={
                kind: tuple(
                    Route(workflow=r["workflow"], params=dict(r["params"]), when=r.get("when"))
                    for r in routes
                )
                for kind, routes in entry["events"].items()
            },
        )
        for name, entry in document["sources"].items()
    }
    polling = document["polling"]
    return IntakePolicy(
        source_file=source,
        connection=document["connection"],
        wait_time_seconds=int(polling["wait_time_seconds"]),
        waiter_delay=parse_duration(polling["waiter_delay"]),
        max_messages=int(polling["max_messages"]),
        sources=sources,
    )


INTAKE = PolicyFile("intake", "intake policy", build=_build, rules=_rules)


def load_intake_file(path: Path) -> IntakePolicy:
    """Load and validate one intake policy file.

    :param path: the file to load.
    :raises PolicyError: the file is unreadable or invalid; the message lists every problem.
    """
    return INTAKE.load(path)


@cache
def load_intake() -> IntakePolicy:
    """The deployed intake policy (``intake.yaml``), loaded once per process."""
    return load_intake_file(INTAKE_FILE)
