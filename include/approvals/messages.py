"""What an approval request says, in the UI and by email.

An approver decides from the request alone: what will happen (the author's body: the plan, the
account, the host), for which run and correlation id, who triggered it, who may answer, and when
it escalates and is rejected by default. The same facts go into every email of the ladder.
A drill (``RequestFacts.drill``) says DRILL in every subject and in the ticket comment.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from datetime import datetime
from html import escape
from typing import Any


@dataclass(frozen=True)
class RequestFacts:
    domain: str
    action: str
    subject: str
    body: str
    step: int
    steps: int
    approver_roles: Sequence[str]
    excluded: Sequence[str]
    triggered_by: str | None
    correlation_id: str
    run_url: str
    answer_url: str
    requested_at: datetime
    remind_at: datetime
    escalate_at: datetime
    deadline: datetime
    escalate_to: Sequence[str]
    # An approval drill: the ladder runs at drill pace (include/policies/approvals.yaml).
    drill: bool = False
    # What exactly is approved (include.approvals.verify.binding): the body's last line.
    binding: Mapping[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly (datetimes as ISO strings), for trigger kwargs and deferral state."""
        return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RequestFacts:
        values = dict(data)
        for field in fields(cls):
            if field.type in ("datetime", datetime) and isinstance(values[field.name], str):
                values[field.name] = datetime.fromisoformat(values[field.name])
        return cls(**values)


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def waited(since: datetime, now: datetime) -> str:
    """``"1h 05m 03s"``-style wait, for subjects and bodies."""
    seconds = max(int((now - since).total_seconds()), 0)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m {secs:02d}s"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def _drill(facts: RequestFacts) -> str:
    return "[DRILL]" if facts.drill else ""


def mail_headers(facts: RequestFacts) -> dict[str, str]:
    """Headers on every mail of a request, so a person (and a test) can group them."""
    return {
        "X-Orchestrator-Correlation-Id": facts.correlation_id,
        "X-Orchestrator-Approval": f"{facts.domain}/{facts.action}/{facts.step}",
    }


def request_subject(facts: RequestFacts) -> str:
    return f"{_drill(facts)}[{facts.domain}] Approve {facts.action}: {facts.subject}"


def request_body(facts: RequestFacts) -> str:
    """Markdown for the UI: the author's body, then the platform's facts."""
    excluded = ", ".join(facts.excluded) or "nobody"
    lines = [
        facts.body.strip(),
        "",
        "---",
        f"- **Action:** `{facts.action}` in domain `{facts.domain}`, approval {facts.step} of {facts.steps}",
        f"- **Correlation id:** `{facts.correlation_id}`",
        f"- **Triggered by:** {facts.triggered_by or 'schedule or event (no user)'}",
        f"- **Who may answer:** any member of {', '.join(facts.approver_roles)}; not {excluded} (four-eyes)",
        f"- **Reminder** at {_when(facts.remind_at)}; **escalation** to {', '.join(facts.escalate_to)} "
        f"at {_when(facts.escalate_at)}",
        f"- **No answer by {_when(facts.deadline)} = Reject** (fail-safe: the step is skipped, never run)",
        f"- **Run:** {facts.run_url}",
    ]
    if facts.binding is not None:
        from include.approvals.verify import binding_line

        # Last, always: the privileged step reads only the last line, which no rendered text can forge.
        lines.append(binding_line(facts.binding))
    return "\n".join(lines)


def _html(facts: RequestFacts, headline: str) -> str:
    rows = [
        ("Domain", facts.domain),
        ("Action", f"{facts.action} (approval {facts.step} of {facts.steps})"),
        ("Request", facts.subject),
        ("Correlation id", facts.correlation_id),
        ("Triggered by", facts.triggered_by or "schedule or event"),
        ("Who may answer", ", ".join(facts.approver_roles)),
        ("Requested at", _when(facts.requested_at)),
        ("Auto-reject at", _when(facts.deadline)),
    ]
    table = "".join(f"<tr><th align='left'>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in rows)
    details = escape(facts.body).replace("\n", "<br>")
    return (
        f"<p><b>{escape(headline)}</b></p><table>{table}</table><p>{details}</p>"
        f'<p><a href="{escape(facts.answer_url)}">Answer the request</a> · '
        f'<a href="{escape(facts.run_url)}">Open the run</a></p>'
    )


def request_email(facts: RequestFacts) -> tuple[str, str]:
    return (
        f"{_drill(facts)}[Approval needed][{facts.domain}] {facts.action}: {facts.subject}",
        _html(facts, "An approval is waiting for you."),
    )


def reminder_email(facts: RequestFacts, now: datetime) -> tuple[str, str]:
    age = waited(facts.requested_at, now)
    return (
        f"{_drill(facts)}[Reminder][{facts.domain}] {facts.action} waiting {age} for approval: "
        f"{facts.subject}",
        _html(facts, f"Still waiting for an answer after {age}. Escalation at {_when(facts.escalate_at)}."),
    )


def escalation_email(facts: RequestFacts, now: datetime) -> tuple[str, str]:
    age = waited(facts.requested_at, now)
    return (
        f"{_drill(facts)}[Escalation][{facts.domain}] {facts.action} unanswered for {age}: {facts.subject}",
        _html(
            facts,
            f"Nobody has answered in {age}. Without an answer by {_when(facts.deadline)} the request is "
            "rejected and the step is skipped.",
        ),
    )


MISSED_SUFFIX = "_missed"
"""A ladder step that came due but was never sent (its gate's wait was not running from then until
the deadline: the triggerer down or stalled) is recorded at the timeout as ``<step>_missed``, with
the time it was ``due`` (include/triggers/approval.py). Its own step name, so nothing that counts
``escalation`` entries (KPIs, evidence packs, the page's resolve) counts a step that did not happen."""


def missed_steps(ladder: Sequence[Mapping[str, Any]]) -> list[tuple[str, datetime]]:
    """``(step, due)`` of the ladder steps recorded as missed, in ladder order."""
    missed = []
    for entry in ladder:
        step = str(entry.get("step") or "")
        if step.endswith(MISSED_SUFFIX) and isinstance(entry.get("due"), str):
            missed.append((step.removesuffix(MISSED_SUFFIX), datetime.fromisoformat(entry["due"])))
    return missed


def missed_sentence(missed: Sequence[tuple[str, datetime]]) -> str:
    """What the timeout notice says of missed steps ("" when none)."""
    if not missed:
        return ""
    steps = " and ".join(f"the {step} (due {_when(due)})" for step, due in missed)
    return (
        f"Not sent: {steps}. The wait for this answer was not running from then until the deadline "
        "(the triggerer down or stalled); check the triggerer."
    )


def timeout_email(
    facts: RequestFacts, skipped: Sequence[str], missed: Sequence[tuple[str, datetime]] = ()
) -> tuple[str, str]:
    wait = waited(facts.requested_at, facts.deadline)
    steps = ", ".join(skipped) or "none"
    headline = f"No answer within {wait}: rejected by the fail-safe rule. Skipped, not executed: {steps}."
    if missed:
        headline += " " + missed_sentence(missed)
    return (
        f"{_drill(facts)}[Approval timed out][{facts.domain}] {facts.action} rejected (fail-safe): "
        f"{facts.subject}",
        _html(facts, headline),
    )


def escalation_comment(facts: RequestFacts, now: datetime) -> str:
    """Plain text for the ticket: the escalation is part of the ticket's history too."""
    drill = f"{_drill(facts)} " if facts.drill else ""
    return (
        f"{drill}Approval for {facts.action} ({facts.subject}) "
        f"unanswered for {waited(facts.requested_at, now)}; "
        f"escalated to {', '.join(facts.escalate_to)}. Auto-reject at {_when(facts.deadline)}. "
        f"Correlation id {facts.correlation_id}. Run: {facts.run_url}"
    )
