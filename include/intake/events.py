"""One intake event: parsed, validated against its JSON Schemas, and turned into workflow starts.

Validation happens here, in the intake task, BEFORE any workflow run exists: the envelope
(``schema/events/envelope.schema.json``), the source (the envelope's must be the queue's), the
kind (listed under the source in ``intake.yaml``) and the kind's ``data``
(``schema/events/<kind>.schema.json``). A refusal is an :class:`EventRejected` whose reason names
the field and the broken rule, never the value (reasons go to audit records and logs; the body
itself stays in the dead-letter queue only).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from jsonschema import Draft202012Validator, ValidationError

from include.connectors.context import CORRELATION_CONF_KEY
from include.intake.policy import ENVELOPE_SCHEMA, RUN_ID_PREFIX, Route, Source, kind_schema_path
from include.policies.loader import parse_duration, schema_validator

MAX_BODY_BYTES: Final = 256 * 1024
"""The SQS maximum; a larger body cannot have come through the queue."""
EVENT_CONF_KEY: Final = "intake_event"
"""The conf key of a started run that names the event (source, id, kind, message id): who started it."""
_SCALARS = (str, int, float, bool)


class EventRejected(ValueError):
    """The event cannot start anything, now or later: it goes to the dead-letter queue with ``reason``."""

    def __init__(self, reason: str, *, event_id: str | None = None, kind: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.event_id = event_id
        self.kind = kind


@dataclass(frozen=True)
class Event:
    """A valid event of a source."""

    source: str
    id: str
    kind: str
    occurred_at: str
    data: Mapping[str, Any]

    def value(self, path: str) -> Any:
        """The value at ``id`` / ``kind`` / ``occurred_at`` / ``data.<field>``; ``None`` when absent."""
        if path.startswith("data."):
            return self.data.get(path.removeprefix("data."))
        return getattr(self, path)


@dataclass(frozen=True)
class Start:
    """One workflow run an event asks for: the target, its deterministic run id and its conf."""

    workflow: str
    run_id: str
    conf: dict[str, Any]


def _validator(path: Path) -> Draft202012Validator:
    """The event schema's validator, formats checked: the policies' loader builds and caches it."""
    return schema_validator(path, check_formats=True)


def _where(error: ValidationError, prefix: str) -> str:
    return ".".join([prefix, *(str(p) for p in error.absolute_path)]).strip(".") or "<event>"


def _reason(error: ValidationError, prefix: str) -> str:
    """What is wrong and where, without the offending value (which may be personal data)."""
    where = _where(error, prefix)
    if error.validator in ("required", "additionalProperties"):
        # These messages quote property names only (the schema's or the sender's keys).
        return f"{where}: {error.message}"
    rule = error.validator_value
    shown = f" {rule}" if isinstance(rule, _SCALARS) and len(str(rule)) <= 80 else ""
    if error.validator == "anyOf":
        shown = " " + " or ".join(
            "/".join(option.get("required", [])) for option in rule if isinstance(option, Mapping)
        )
    return f"{where}: does not satisfy {error.validator}{shown}"


def _problems(validator: Draft202012Validator, instance: Any, prefix: str) -> list[str]:
    errors = sorted(validator.iter_errors(instance), key=lambda e: [str(p) for p in e.absolute_path])
    return list(dict.fromkeys(_reason(error, prefix) for error in errors))


def parse_event(body: str, source: Source) -> Event:
    """The event in a message body of ``source``'s queue.

    :param body: the SQS message body (a JSON document, the envelope).
    :param source: the source whose queue it came from.
    :raises EventRejected: not JSON, not a valid envelope, another source, an unknown kind or
        invalid data; the reason lists every problem found (at most five).
    """
    if len(body.encode("utf-8")) > MAX_BODY_BYTES:
        raise EventRejected(f"body larger than {MAX_BODY_BYTES} bytes")
    try:
        document = json.loads(body)
    except ValueError:
        raise EventRejected("body is not JSON") from None
    if not isinstance(document, dict):
        raise EventRejected("body is not a JSON object (the intake envelope)")
    event_id = document.get("id") if isinstance(document.get("id"), str) else None
    kind = document.get("kind") if isinstance(document.get("kind"), str) else None
    if problems := _problems(_validator(ENVELOPE_SCHEMA), document, ""):
        raise EventRejected("; ".join(problems[:5]), event_id=None, kind=None)
    if document["source"] != source.name:
        raise EventRejected(
            f"source: {document['source']!r} sent to the queue of {source.name!r}",
            event_id=event_id,
            kind=kind,
        )
    if kind not in source.events:
        raise EventRejected(
            f"kind: {kind!r} is not an event of {source.name} "
            f"(intake.yaml: {', '.join(sorted(source.events))})",
            event_id=event_id,
            kind=kind,
        )
    if problems := _problems(_validator(kind_schema_path(str(kind))), document["data"], "data"):
        raise EventRejected("; ".join(problems[:5]), event_id=event_id, kind=kind)
    return Event(
        source=source.name,
        id=document["id"],
        kind=document["kind"],
        occurred_at=document["occurred_at"],
        data=document["data"],
    )


def run_id_for(source: str, event_id: str) -> str:
    """``intake__<source>__<event id>``: the same event gives the same run id, so it starts once."""
    return f"{RUN_ID_PREFIX}__{source}__{event_id}"


def _param(spec: Any, event: Event, now: datetime) -> Any:
    if isinstance(spec, str):
        return event.value(spec)
    if "value" in spec:
        return spec["value"]
    expires = now + parse_duration(spec["expires_in"])
    return expires.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def starts_for(
    event: Event, routes: tuple[Route, ...], *, message_id: str, now: datetime | None = None
) -> list[Start]:
    """The runs an event starts: one per route whose ``when`` value is present.

    The conf holds the mapped params, ``correlation_id`` ``<source>:<event id>`` and
    ``intake_event`` (source, id, kind, message id): the run says which event started it.

    :param event: a valid event.
    :param routes: its kind's routes (``intake.yaml``).
    :param message_id: the SQS message id, recorded in the conf.
    :param now: for ``expires_in`` params; the current time by default.
    :raises EventRejected: no route applies (the event names nothing a workflow acts on).
    """
    moment = now or datetime.now(UTC)
    starts = []
    for route in routes:
        if route.when is not None and event.value(route.when) in (None, ""):
            continue
        params = {name: _param(spec, event, moment) for name, spec in route.params.items()}
        conf: dict[str, Any] = {name: value for name, value in params.items() if value is not None}
        conf[CORRELATION_CONF_KEY] = f"{event.source}:{event.id}"
        conf[EVENT_CONF_KEY] = {
            "source": event.source,
            "id": event.id,
            "kind": event.kind,
            "message_id": message_id,
        }
        starts.append(Start(workflow=route.workflow, run_id=run_id_for(event.source, event.id), conf=conf))
    if not starts:
        whens = ", ".join(sorted({r.when for r in routes if r.when}))
        raise EventRejected(
            f"no workflow applies: none of {whens} present", event_id=event.id, kind=event.kind
        )
    return starts
