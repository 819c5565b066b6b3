"""Handle one batch of intake messages: validate, start, then delete (at least once, never lost).

For each message of the batch, in order:

1. Parse and validate it (:func:`include.intake.events.parse_event`). Invalid, unknown kind, wrong
   source or no applicable route: the message goes to the source's dead-letter queue with the
   reason (attribute ``intake-reason``), is deleted from the source queue and is an
   ``intake.rejected`` audit record. No run exists.
2. Start each mapped workflow with the run id derived from (source, event id). Started or already
   there (a redelivery, the same event sent twice): ``intake.started`` / ``intake.duplicate``.
   Refused by Airflow (the conf fails the DAG's params): dead-lettered like 1.
3. Delete the message only after all its runs exist. A failure in between (the API server down, the
   task killed) leaves the message in the queue: SQS makes it visible again after the visibility
   timeout, the watcher receives it again and step 2 finds the runs there. After
   ``max_receive_count`` receives SQS moves it to the dead-letter queue (RedrivePolicy).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from include.audit import records
from include.intake.events import EventRejected, Start, parse_event, starts_for
from include.intake.policy import Source
from include.intake.queues import IntakeQueues
from include.intake.starter import Starter, StartRefused

log = logging.getLogger(__name__)

Status = Literal["started", "duplicate", "rejected", "failed"]
Audit = Callable[[Mapping[str, Any]], Any]


@dataclass
class Outcome:
    """What became of one message."""

    message_id: str
    status: Status
    event_id: str | None = None
    kind: str | None = None
    runs: list[dict[str, str]] = field(default_factory=list)
    reason: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if v not in (None, [])}


def _default_audit(fields: Mapping[str, Any]) -> Any:
    from include.audit.emit import emit

    return emit(fields)


def _record(kind: str, source: Source, outcome: Outcome, **fields: Any) -> dict[str, Any]:
    details: dict[str, Any] = {"source": source.name, "message_id": outcome.message_id}
    for key in ("event_id", "kind", "reason"):
        if (value := getattr(outcome, key)) is not None:
            details[key if key != "kind" else "event_kind"] = value
    return {
        "kind": kind,
        "actor": f"intake:{source.name}",
        "domain": "platform",
        "correlation_id": f"{source.name}:{outcome.event_id}" if outcome.event_id else None,
        "subject": f"{source.name} event {outcome.event_id or outcome.message_id}",
        "details": details,
        **fields,
    }


class BatchHandler:
    """Handles the messages of one source.

    :param source: the source whose queue the messages came from.
    :param queues: its queues (delete, dead-letter).
    :param starter: what creates the runs (:class:`~include.intake.starter.TaskSdkStarter` in a task).
    :param audit: writes one audit record (:func:`include.audit.emit.emit` by default).
    :param now: the clock for ``expires_in`` params (tests).
    """

    def __init__(
        self,
        source: Source,
        queues: IntakeQueues,
        starter: Starter,
        *,
        audit: Audit | None = None,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        self.source = source
        self.queues = queues
        self.starter = starter
        self.audit = audit or _default_audit
        self.now = now

    def handle(self, messages: Iterable[Mapping[str, Any]]) -> list[Outcome]:
        """Handle each message (in order); never raises for one message's problem."""
        return [self.handle_one(message) for message in messages]

    def _reject(self, message: Mapping[str, Any], outcome: Outcome, reason: str) -> Outcome:
        outcome.status, outcome.reason = "rejected", reason
        try:
            self.queues.dead_letter(message, reason)
            self.queues.delete(str(message["ReceiptHandle"]))
        except Exception as error:  # stays in the queue; redrive takes it to the DLQ at the latest
            outcome.status = "failed"
            outcome.reason = f"{reason}; dead-lettering failed ({type(error).__name__})"
            log.error("message %s: %s", outcome.message_id, outcome.reason)
            return outcome
        self.audit(_record(records.INTAKE_REJECTED, self.source, outcome))
        log.warning("message %s refused: %s", outcome.message_id, reason)
        return outcome

    def handle_one(self, message: Mapping[str, Any]) -> Outcome:
        outcome = Outcome(message_id=str(message.get("MessageId")), status="failed")
        try:
            event = parse_event(str(message.get("Body", "")), self.source)
            outcome.event_id, outcome.kind = event.id, event.kind
            starts = starts_for(
                event,
                self.source.events[event.kind],
                message_id=outcome.message_id,
                now=self.now() if self.now else None,
            )
        except EventRejected as rejected:
            outcome.event_id, outcome.kind = rejected.event_id, rejected.kind
            return self._reject(message, outcome, rejected.reason)
        refusals: list[str] = []
        failures: list[str] = []
        for start in starts:
            result = self._start(start, outcome, refusals, failures)
            if result is not None:
                outcome.runs.append({"dag_id": start.workflow, "run_id": start.run_id, "result": result})
        if failures:
            outcome.reason = "; ".join(failures)
            log.error("message %s kept for redelivery: %s", outcome.message_id, outcome.reason)
            return outcome
        if refusals:
            return self._reject(message, outcome, "; ".join(refusals))
        try:
            self.queues.delete(str(message["ReceiptHandle"]))
        except Exception as error:  # the runs exist: a redelivery is a duplicate, which starts nothing
            log.warning(
                "message %s: delete failed (%s), a redelivery will start nothing",
                outcome.message_id,
                type(error).__name__,
            )
        started = any(run["result"] == "started" for run in outcome.runs)
        outcome.status = "started" if started else "duplicate"
        return outcome

    def _start(self, start: Start, outcome: Outcome, refusals: list[str], failures: list[str]) -> str | None:
        try:
            result = self.starter.start(start)
        except StartRefused as refused:
            refusals.append(refused.reason)
            return None
        except Exception as error:
            failures.append(f"{start.workflow}: {type(error).__name__}: {str(error)[:200]}")
            return None
        kind = records.INTAKE_STARTED if result == "started" else records.INTAKE_DUPLICATE
        self.audit(_record(kind, self.source, outcome, dag_id=start.workflow, run_id=start.run_id))
        return result


def messages_of(triggering_asset_events: Mapping[Any, Iterable[Any]]) -> list[dict[str, Any]]:
    """The messages the watcher's asset events carry (``extra.payload.messages``), each once."""
    seen: set[str] = set()
    messages = []
    for events in triggering_asset_events.values():
        for asset_event in events:
            extra = getattr(asset_event, "extra", None) or {}
            for message in (extra.get("payload") or {}).get("messages") or ():
                if message.get("MessageId") not in seen:
                    seen.add(message.get("MessageId"))
                    messages.append(dict(message))
    return messages
