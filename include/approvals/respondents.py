"""Who may answer an approval request, encoded in the request itself.

Airflow's HITL request stores ``assigned_users`` and asks the auth manager, on every answer,
whether the answering user is one of them (``is_authorized_hitl_task``). FAB user ids are
database row numbers, which a workflow cannot know at parse time and should not look up at run
time, so the gate assigns *roles* and *exclusions* instead of people:

- ``role:<name>``: any member of that role may answer (membership is checked when the answer
  arrives, so the person on call at that moment can answer, not only whoever was on call when
  the request was made);
- ``not:<username>``: this person may not (four-eyes: the user who triggered the run, and anyone
  who already answered an earlier step of the same approval);
- ``after:<YYYY-MM-DDTHH:MM:SSZ>:role:<name>``: any member of that role may answer, but only from
  that moment (UTC) on: the escalation groups of the action (``escalate_to`` in approvals.yaml),
  written by the gate at the request time plus the ladder's ``escalate_after``. Before it they are
  refused, as is anyone when the time is malformed or no clock is given (fail closed).

:func:`may_answer` is the whole rule; :class:`include.auth.fab.ApprovalAwareFabAuthManager` calls
it. Under any other auth manager the entries match no user id and nobody can answer: the gate
fails closed.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from datetime import UTC, datetime, timedelta
from typing import TypedDict

ROLE_PREFIX = "role:"
EXCLUDE_PREFIX = "not:"
AFTER_PREFIX = "after:"
# The one accepted shape of a time-gated entry: whole seconds, UTC ("Z"), a role name as
# approvals.schema.json allows it. Anything else starting with ``after:`` grants nothing.
_AFTER = re.compile(
    r"after:(?P<at>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z):role:(?P<role>[a-z][a-z0-9_]{2,63})", re.ASCII
)
_AFTER_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


class Respondent(TypedDict):
    """The shape of ``airflow.sdk.execution_time.hitl.HITLUser``."""

    id: str
    name: str


def assigned_respondents(roles: Iterable[str], excluded_usernames: Iterable[str]) -> list[Respondent]:
    """``assigned_users`` entries: a step answered by any of ``roles``, except ``excluded_usernames``."""
    entries = [Respondent(id=f"{ROLE_PREFIX}{role}", name=f"any member of {role}") for role in roles]
    if not entries:
        raise ValueError("an approval step needs at least one approver role")
    entries += [
        Respondent(id=f"{EXCLUDE_PREFIX}{user}", name=f"not {user} (four-eyes)")
        for user in sorted({user for user in excluded_usernames if user})
    ]
    return entries


def escalation_time(escalate_at: datetime) -> datetime:
    """The moment escalation groups may answer: ``escalate_at`` in UTC, rounded *up* to the second
    (the entry has whole seconds; rounding down would open the door up to a second early)."""
    if escalate_at.tzinfo is None:
        raise ValueError("escalation time without a time zone")
    at = escalate_at.astimezone(UTC)
    whole = at.replace(microsecond=0)
    return whole if whole == at else whole + timedelta(seconds=1)


def escalation_entry(role: str, at: datetime) -> str:
    """``after:<time>:role:<role>``: ``role`` may answer from ``at`` (see :func:`escalation_time`)."""
    entry = f"{AFTER_PREFIX}{escalation_time(at).strftime(_AFTER_FORMAT)}:{ROLE_PREFIX}{role}"
    if not _AFTER.fullmatch(entry):
        raise ValueError(f"escalation group {role!r}: not a role name")
    return entry


def parse_escalation(entry: str) -> tuple[datetime, str] | None:
    """``(time, role)`` of a well-formed ``after:`` entry, else ``None`` (which grants nothing)."""
    match = _AFTER.fullmatch(entry)
    if match is None:
        return None
    try:
        at = datetime.strptime(match["at"], _AFTER_FORMAT).replace(tzinfo=UTC)
    except ValueError:  # e.g. month 13: the regex checks the shape only
        return None
    return at, match["role"]


def escalation_respondents(roles: Iterable[str], escalate_at: datetime) -> list[Respondent]:
    """``assigned_users`` entries for the escalation groups: each may answer from ``escalate_at`` on."""
    return [
        Respondent(
            id=escalation_entry(role, escalate_at),
            name=f"any member of {role}, after escalation at {escalation_time(escalate_at).isoformat()}",
        )
        for role in roles
    ]


def may_answer(
    assigned_ids: Collection[str],
    *,
    user_id: str,
    username: str,
    roles: Collection[str],
    now: datetime | None = None,
) -> bool:
    """Whether a user may answer a request assigned to ``assigned_ids`` (never empty, per Airflow).

    :param now: the moment of the answer (aware); time-gated ``after:`` entries grant nothing
        without it, and nothing before their time.
    """
    excluded = {entry[len(EXCLUDE_PREFIX) :] for entry in assigned_ids if entry.startswith(EXCLUDE_PREFIX)}
    if username in excluded:
        return False
    prefixes = (ROLE_PREFIX, EXCLUDE_PREFIX, AFTER_PREFIX)
    allowed_roles = {entry[len(ROLE_PREFIX) :] for entry in assigned_ids if entry.startswith(ROLE_PREFIX)}
    if now is not None:
        for entry in assigned_ids:
            parsed = parse_escalation(entry) if entry.startswith(AFTER_PREFIX) else None
            if parsed is not None and now >= parsed[0]:
                allowed_roles.add(parsed[1])
    people = {entry for entry in assigned_ids if not entry.startswith(prefixes)}
    return user_id in people or bool(allowed_roles & set(roles))
