"""``audit trace <id>``: the whole story of one ticket, run or cloud resource, from the audit log.

:meth:`include.audit.store.AuditStore.trace` resolves the identifier (a correlation id, which the
platform also tags cloud resources with as ``CorrelationId``; a run id; a ticket id; a side
effect's object id such as an ARN or a security-group id) to the runs it belongs to and reads every
record of them. This module turns those records into the story: per correlation id a header (domain,
tenant, tickets, who triggered each run, how, from which bundle version), one line per record
(time, kind, actor, a sentence built from ``details``), a summary (approvals, changes, final run
state), and an integrity line from each record's own hash. The chain itself (deletions, reordering,
checkpoint signatures) is ``audit verify``'s job; the text says so.

Everything printed from a record is sanitised: control and bidirectional-override characters are
escaped and long values shortened, so a comment or a run's ``conf`` cannot forge or hide lines of
the story. ``--json`` output carries the records exactly as stored, so their hashes can be
recomputed from it.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from include.audit.records import (
    APPROVAL_ANSWERED,
    APPROVAL_ESCALATED,
    APPROVAL_REQUESTED,
    POLICY_VIOLATION,
    RUN_TRIGGERED,
    SIDE_EFFECT,
    TASK_FINISHED,
    canonical_json,
    record_hash,
)
from include.audit.store import MATCH_ORDER, TICKETING_SYSTEMS, TraceMatch

RUN_FINISHED: Final = "run.finished"
CHAIN_NOTE: Final = "own hashes only; the chain and checkpoints are checked by `audit verify`"
MAX_VALUE_CHARS: Final = 160
"""A value longer than this is cut (the full value is in ``--json``)."""

_ESCAPED_CATEGORIES: Final = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
_NAMED_ESCAPES: Final = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def clean(value: Any, limit: int = MAX_VALUE_CHARS) -> str:
    """``value`` as one printable line: control, format (bidi overrides) and line-separator
    characters escaped, at most ``limit`` characters (then ``...``)."""
    text = value if isinstance(value, str) else canonical_text(value)
    out = []
    for char in text:
        if unicodedata.category(char) in _ESCAPED_CATEGORIES:
            code = ord(char)
            escape = (
                f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"
            )
            out.append(_NAMED_ESCAPES.get(char, escape))
        else:
            out.append(char)
    line = "".join(out)
    return line if len(line) <= limit else line[: max(limit - 3, 1)] + "..."


def canonical_text(value: Any) -> str:
    """A non-string value as compact JSON (``repr`` when it is not JSON)."""
    try:
        return canonical_json(value)
    except (TypeError, ValueError):
        return repr(value)


def _field(details: Mapping[str, Any], key: str, limit: int = 60, default: str = "?") -> str:
    value = details.get(key)
    return clean(value, limit) if value not in (None, "") else default


def _seconds(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return f"{float(value):.1f} s"


def _names(values: Any) -> str:
    if isinstance(values, list | tuple):
        return ", ".join(clean(v, 60) for v in values) or "-"
    return clean(values, 60) if values not in (None, "") else "-"


def _step(details: Mapping[str, Any], steps_hint: Any = None) -> str | None:
    step = details.get("step")
    steps = details.get("steps", steps_hint)
    if step in (None, ""):
        return None
    return (
        f"step {clean(step, 20)}/{clean(steps, 20)}" if steps not in (None, "") else f"step {clean(step, 20)}"
    )


def is_ticketing(details: Mapping[str, Any]) -> bool:
    return details.get("system") in TICKETING_SYSTEMS


def side_effect_target(details: Mapping[str, Any]) -> str:
    """``ticket 42``, ``entry 7 on ticket 42`` or the object id (an ARN, ``sg-...``)."""
    object_id = details.get("object_id")
    ticket = details.get("ticket_id")
    has_object, has_ticket = object_id not in (None, ""), ticket not in (None, "")
    if (
        is_ticketing(details)
        and has_object
        and (str(object_id) == str(ticket) or details.get("operation") == "create_ticket")
    ):
        return f"ticket {clean(object_id, 80)}"
    if is_ticketing(details) and has_object:
        target = f"entry {clean(object_id, 80)}"
    elif has_object:
        target = clean(object_id, 120)
    else:
        target = "(no object id)"
    return target + (
        f" on ticket {clean(ticket, 80)}" if has_ticket and str(ticket) != str(object_id) else ""
    )


def _created(details: Mapping[str, Any]) -> str:
    created = details.get("created")
    if created is True:
        return " (created)"
    if created is False:
        return " (already existed)"
    return ""


def _describe_trigger(actor: str, details: Mapping[str, Any]) -> str:
    text = f"run triggered by {actor} via {clean(details.get('how') or 'unknown', 40)}"
    if details.get("run_type"):
        text += f" ({clean(details['run_type'], 40)})"
    text += _bundle(details)
    if details.get("logical_date"):
        text += f", logical date {clean(details['logical_date'], 40)}"
    if details.get("ticket_id") not in (None, ""):
        text += f", ticket {clean(details['ticket_id'], 80)}"
    if details.get("conf"):
        text += f", conf {clean(details['conf'], 100)}"
    return text


def _bundle(details: Mapping[str, Any]) -> str:
    name, version = details.get("bundle_name"), details.get("bundle_version")
    if not name and not version:
        return ""
    return f", bundle {clean(name or '?', 60)}" + (f" version {clean(version, 60)}" if version else "")


def _task_counts(tasks: Any) -> str:
    if not isinstance(tasks, Mapping) or not tasks:
        return ""
    counts = Counter(clean(state, 30) for state in tasks.values())
    text = "; tasks: " + ", ".join(f"{n} {state}" for state, n in counts.most_common())
    unhappy = [clean(task, 60) for task, state in tasks.items() if state not in ("success", "skipped")]
    if unhappy:
        text += " (not successful: " + ", ".join(unhappy[:5]) + (", ..." if len(unhappy) > 5 else "") + ")"
    return text


def _describe_finished(details: Mapping[str, Any]) -> str:
    text = f"run finished: {clean(details.get('state') or 'unknown', 30)}"
    duration = _seconds(details.get("duration_seconds"))
    if duration:
        text += f" in {duration}"
    return text + _task_counts(details.get("tasks"))


def _describe_task(record: Mapping[str, Any], details: Mapping[str, Any]) -> str:
    name = clean(record.get("task_id") or "?", 80)
    map_index = details.get("map_index")
    if isinstance(map_index, int) and not isinstance(map_index, bool) and map_index >= 0:
        name += f"[{map_index}]"
    facts = [f"try {clean(details['try_number'], 10)}"] if details.get("try_number") is not None else []
    duration = _seconds(details.get("duration_seconds"))
    if duration:
        facts.append(duration)
    if details.get("error_type"):
        facts.append(clean(details["error_type"], 60))
    suffix = f" ({', '.join(facts)})" if facts else ""
    return f"task finished: {name} {clean(details.get('state') or 'unknown', 30)}{suffix}"


def _describe_request(record: Mapping[str, Any], details: Mapping[str, Any]) -> str:
    text = f"approval requested: {clean(details.get('action') or '?', 60)}"
    if record.get("task_id"):
        text += f" at gate {clean(record['task_id'], 60)}"
    step = _step(details)
    if step:
        text += f" ({step})"
    text += f", any of {_names(details.get('any_of'))}"
    if details.get("excluded"):
        text += f", excluding {_names(details['excluded'])}"
    if details.get("deadline"):
        text += f", deadline {clean(details['deadline'], 40)}"
    if details.get("ticket_id") not in (None, ""):
        text += f", ticket {clean(details['ticket_id'], 80)}"
    if details.get("artifact"):
        text += f", artifact {clean(details['artifact'], 100)}"
    return text


def _describe_escalation(details: Mapping[str, Any]) -> str:
    text = f"approval {_field(details, 'step', 30, 'escalation')}: {_field(details, 'action')}"
    if details.get("gate_step") is not None:
        text += f" (gate step {clean(details['gate_step'], 10)})"
    text += f", sent to {_names(details.get('to'))}"
    if details.get("ticket_id") not in (None, ""):
        text += f", ticket {clean(details['ticket_id'], 80)}"
    return text


def _option_is_informative(option: Any, outcome: str) -> bool:
    """False for an option that only repeats the outcome (``Approve`` for ``approved``)."""
    word = str(option).strip().lower() if option is not None else ""
    return bool(word) and not outcome.startswith(word.rstrip("d").rstrip("e"))


def _describe_answer(actor: str, details: Mapping[str, Any], steps_hint: Any) -> str:
    outcome = str(details.get("outcome") or "unknown")
    step = _step(details, steps_hint)
    where = f" ({step})" if step else ""
    if outcome == "timed_out":
        text = f"approval answered: timed out{where}, no answer before the deadline"
        missed = details.get("missed_steps")
        if isinstance(missed, list) and missed:
            text += f"; never sent (triggerer not running): {', '.join(clean(step, 30) for step in missed)}"
    else:
        text = f"approval answered: {clean(outcome, 30)} by {actor}{where}"
        if details.get("comment") not in (None, ""):
            text += f' "{clean(details["comment"], 120)}"'
    if _option_is_informative(details.get("option"), outcome):
        text += f", option {clean(details['option'], 60)}"
    return text


def change_line(details: Mapping[str, Any]) -> str:
    """``request_tracker create_ticket -> ticket 42 (created)``: one side effect, briefly."""
    return (
        f"{_field(details, 'system', 40)} {_field(details, 'operation')}"
        f" -> {side_effect_target(details)}{_created(details)}"
    )


def _describe_side_effect(details: Mapping[str, Any]) -> str:
    text = f"side effect: {change_line(details)}"
    if details.get("capability"):
        text += f" via capability {clean(details['capability'], 60)}"
    if details.get("role_arn"):
        text += f" as {clean(details['role_arn'], 120)}"
    if details.get("summary"):
        text += f': "{clean(details["summary"], 100)}"'
    return text


def _describe_violation(details: Mapping[str, Any]) -> str:
    return (
        f"policy violation: {_field(details, 'rule')} in {_field(details, 'file', 100)}"
        f": {_field(details, 'message', 160, '')}"
    )


def describe(record: Mapping[str, Any], steps_hint: Any = None) -> str:
    """One sentence for ``record`` from its kind and ``details`` (never raises on odd details).

    :param steps_hint: the step count of the approval a ``approval.answered`` record answers, when
        its own details do not carry ``steps``.
    """
    details = record.get("details")
    kind = str(record.get("kind"))
    if not isinstance(details, Mapping):
        return "details unreadable: not a JSON object (see the integrity line)"
    actor = clean(record.get("actor") or "?", 60)
    if kind == RUN_TRIGGERED:
        return _describe_trigger(actor, details)
    if kind == RUN_FINISHED:
        return _describe_finished(details)
    if kind == TASK_FINISHED:
        return _describe_task(record, details)
    if kind == APPROVAL_REQUESTED:
        return _describe_request(record, details)
    if kind == APPROVAL_ESCALATED:
        return _describe_escalation(details)
    if kind == APPROVAL_ANSWERED:
        return _describe_answer(actor, details, steps_hint)
    if kind == SIDE_EFFECT:
        return _describe_side_effect(details)
    if kind == POLICY_VIOLATION:
        return _describe_violation(details)
    return f"{clean(kind, 60)}: {clean(details, 120)}"


def _details(record: Mapping[str, Any]) -> Mapping[str, Any]:
    details = record.get("details")
    return details if isinstance(details, Mapping) else {}


def _run_name(dag_id: Any, run_id: Any) -> str:
    return f"{clean(dag_id or '?', 80)}/{clean(run_id or '?', 100)}"


def _distinct(values: Iterable[Any]) -> list[Any]:
    return list(dict.fromkeys(v for v in values if v not in (None, "")))


def _gate_key(record: Mapping[str, Any]) -> tuple[str, str]:
    """Which approval step a request, escalation or answer is about (hashable whatever details hold)."""
    return canonical_text(record.get("task_id")), canonical_text(_details(record).get("step"))


def tickets_of(records: Iterable[Mapping[str, Any]]) -> list[str]:
    """Ticket ids involved, in order of first mention: ``details.ticket_id`` of any record, and the
    object id of a ticketing side effect that names no ticket of its own."""
    found: list[Any] = []
    for record in records:
        details = _details(record)
        found.append(details.get("ticket_id"))
        if (
            record.get("kind") == SIDE_EFFECT
            and is_ticketing(details)
            and details.get("ticket_id") in (None, "")
        ):
            found.append(details.get("object_id"))
    return _distinct(t if isinstance(t, str) else canonical_text(t) for t in found if t not in (None, ""))


@dataclass
class Story:
    """The records of one correlation id (``None``: records of a matched run that carry none)."""

    correlation_id: str | None
    records: list[dict[str, Any]] = field(default_factory=list)

    @property
    def runs(self) -> list[tuple[Any, Any]]:
        return _distinct((r.get("dag_id"), r.get("run_id")) for r in self.records if r.get("run_id"))

    def header(self) -> list[str]:
        name = clean(self.correlation_id, 120) if self.correlation_id else "(none)"
        domains = ", ".join(clean(d, 40) for d in _distinct(r.get("domain") for r in self.records)) or "-"
        tenants = ", ".join(clean(t, 40) for t in _distinct(r.get("tenant") for r in self.records)) or "-"
        lines = [f"correlation {name}  domain {domains}  tenant {tenants}"]
        tickets = tickets_of(self.records)
        lines.append("  tickets: " + (", ".join(clean(t, 80) for t in tickets) if tickets else "none"))
        for dag_id, run_id in self.runs:
            triggers = [
                r
                for r in self.records
                if r.get("kind") == RUN_TRIGGERED and (r.get("dag_id"), r.get("run_id")) == (dag_id, run_id)
            ]
            if triggers:
                details = _details(triggers[0])
                how = clean(details.get("how") or "unknown", 40)
                who = clean(triggers[0].get("actor") or "?", 60)
                lines.append(
                    f"  run {_run_name(dag_id, run_id)}: triggered by {who} via {how}{_bundle(details)}"
                )
            else:
                lines.append(f"  run {_run_name(dag_id, run_id)}: no run.triggered record in this view")
        return lines

    def lines(self, bad_seqs: set[int], seq_width: int = 1) -> list[str]:
        """One line per record: ``!`` when its own hash does not match, seq, time, kind, actor,
        sentence."""
        steps: dict[tuple[str, str], Any] = {}
        out = []
        for record in self.records:
            key = _gate_key(record)
            if record.get("kind") == APPROVAL_REQUESTED:
                steps[key] = _details(record).get("steps")
            mark = "!" if record.get("seq") in bad_seqs else " "
            at = str(record.get("at") or "")
            at = at[:19] + "Z" if len(at) >= 19 else clean(at, 30)
            out.append(
                f" {mark}#{record.get('seq')!s:<{seq_width}}  {at}  {clean(record.get('kind'), 40):<18}  "
                f"{clean(record.get('actor') or '?', 40):<12}  {describe(record, steps.get(key))}"
            )
        return out

    def summary(self) -> list[str]:
        lines = ["  summary:"]
        lines += _approval_summary(self.records)
        changes = [r for r in self.records if r.get("kind") == SIDE_EFFECT]
        lines.append("    changes: " + ("none" if not changes else f"{len(changes)}"))
        for record in changes:
            lines.append(f"      {change_line(_details(record))}")
        for dag_id, run_id in self.runs or [(None, None)]:
            finished = [
                r
                for r in self.records
                if r.get("kind") == RUN_FINISHED and (r.get("dag_id"), r.get("run_id")) == (dag_id, run_id)
            ]
            if finished:
                state = _describe_finished(_details(finished[-1])).removeprefix("run finished: ")
            else:
                state = "not finished in this view (no run.finished record)"
            lines.append(f"    final state {_run_name(dag_id, run_id)}: {state}")
        return lines


def _gate(details: Mapping[str, Any], steps_hint: Any = None) -> str:
    step = _step(details, steps_hint)
    return _field(details, "action") + (f" {step}" if step else "")


def _approval_summary(records: Sequence[Mapping[str, Any]]) -> list[str]:
    requested: dict[tuple[str, str], Mapping[str, Any]] = {}
    answered: set[tuple[str, str]] = set()
    lines = []
    for record in records:
        details = _details(record)
        key = _gate_key(record)
        if record.get("kind") == APPROVAL_REQUESTED:
            requested[key] = details
        elif record.get("kind") == APPROVAL_ANSWERED:
            answered.add(key)
            outcome = _field(details, "outcome", 30, "unknown")
            who = (
                ""
                if details.get("outcome") == "timed_out"
                else f" by {clean(record.get('actor') or '?', 60)}"
            )
            lines.append(f"      {_gate(details, requested.get(key, {}).get('steps'))}: {outcome}{who}")
    for key, details in requested.items():
        if key not in answered:
            lines.append(
                f"      {_gate(details)}: no answer recorded (deadline {_field(details, 'deadline', 40)})"
            )
    return ["    approvals: " + (str(len(lines)) if lines else "none"), *lines]


@dataclass
class Trace:
    """What ``audit trace`` found for ``query`` (in the ``domain`` / ``tenant`` view, when given)."""

    query: str
    matches: list[TraceMatch]
    records: list[dict[str, Any]]
    domain: str | None = None
    tenant: str | None = None

    @property
    def matched_as(self) -> str | None:
        return self.matches[0].matched_as if self.matches else None

    @property
    def correlation_ids(self) -> list[str]:
        """Matched correlation ids first (in order), then any other a matched run's records carry."""
        return _distinct(
            [*(m.correlation_id for m in self.matches), *(r.get("correlation_id") for r in self.records)]
        )

    @property
    def found(self) -> bool:
        return bool(self.records)

    def bad_hashes(self) -> list[int]:
        """Seqs of records whose stored fields no longer hash to their stored ``hash``."""
        bad: list[int] = []
        for record in self.records:
            try:
                ok = record_hash(record) == record.get("hash")
            except (TypeError, ValueError):
                ok = False
            if not ok:
                bad.append(record["seq"])
        return bad

    def stories(self) -> list[Story]:
        """The records grouped per correlation id, groups in order of their first record."""
        groups: dict[str | None, Story] = {}
        for record in self.records:
            cid = record.get("correlation_id")
            groups.setdefault(cid, Story(cid)).records.append(record)
        return list(groups.values())

    def integrity(self) -> dict[str, Any]:
        bad = self.bad_hashes()
        return {
            "records": len(self.records),
            "own_hashes_ok": not bad,
            "mismatched_seqs": bad,
            "chain_checked": False,
            "note": CHAIN_NOTE,
        }

    def integrity_line(self) -> str:
        bad = self.bad_hashes()
        if not bad:
            return f"integrity: {len(self.records)} records, own hashes OK ({CHAIN_NOTE})"
        seqs = ", ".join(str(s) for s in bad)
        return (
            f"integrity: {len(self.records)} records, {len(bad)} whose own hash does NOT match "
            f"(altered after writing): seq {seqs} ({CHAIN_NOTE})"
        )

    def not_found_message(self) -> str:
        looked = ", ".join(MATCH_ORDER)
        view = "".join(
            f" in {name} '{clean(value, 80)}'"
            for name, value in (("domain", self.domain), ("tenant", self.tenant))
            if value is not None
        )
        return f"no audit record matches '{clean(self.query, 200)}'{view} (looked for {looked})"

    def to_json(self) -> dict[str, Any]:
        """``{"query", "filters", "matched_as", "matches", "correlation_ids", "records", "integrity"}``;
        the records exactly as stored (their hashes recompute from this document)."""
        document: dict[str, Any] = {
            "query": self.query,
            "filters": {"domain": self.domain, "tenant": self.tenant},
            "matched_as": self.matched_as,
            "matches": [m._asdict() for m in self.matches],
            "correlation_ids": self.correlation_ids,
            "records": self.records,
            "integrity": self.integrity(),
        }
        if not self.found:
            document["message"] = self.not_found_message()
        return document

    def to_text(self) -> str:
        """The story: what matched, then per correlation id header, records and summary, then
        the integrity line."""
        if not self.found:
            return self.not_found_message()
        ids = self.correlation_ids
        view = ", ".join(
            f"{n} {clean(v, 80)}"
            for n, v in (("domain", self.domain), ("tenant", self.tenant))
            if v is not None
        )
        plural = "s" if len(ids) != 1 else ""
        lines = [
            f"audit trace '{clean(self.query, 200)}': matched as {self.matched_as}; "
            f"{len(ids)} correlation id{plural}: {', '.join(clean(i, 120) for i in ids) or '-'}"
            + (f" (view: {view})" if view else "")
        ]
        bad = set(self.bad_hashes())
        width = max(len(str(r.get("seq"))) for r in self.records)
        for story in self.stories():
            lines += ["", *story.header(), *story.lines(bad, width), *story.summary()]
        lines += ["", self.integrity_line()]
        return "\n".join(lines)
