"""Who may answer an approval request, encoded in the request itself.

Airflow's HITL request stores ``assigned_users`` and asks the auth manager, on every answer,
whether the answering user is one of them (``is_authorized_hitl_task``). FAB user ids are
database row numbers, which a workflow cannot know at parse time and should not look up at run
time, so the gate assigns *roles* and *exclusions* instead of people:

- ``role:<name>``: any member of that role may answer (membership is checked when the answer
  arrives, so the person on call at that moment can answer, not only whoever was on call when
  the request was made);
- ``not:<username>``: this person may not (four-eyes: the user who triggered the run, and anyone
  who already answered an earlier step of the same approval).

:func:`may_answer` is the whole rule; :class:`include.auth.fab.ApprovalAwareFabAuthManager` calls
it. Under any other auth manager the entries match no user id and nobody can answer: the gate
fails closed.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import TypedDict

ROLE_PREFIX = "role:"
EXCLUDE_PREFIX = "not:"


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


def may_answer(assigned_ids: Collection[str], *, user_id: str, username: str, roles: Collection[str]) -> bool:
    """Whether a user may answer a request assigned to ``assigned_ids`` (never empty, per Airflow)."""
    excluded = {entry[len(EXCLUDE_PREFIX) :] for entry in assigned_ids if entry.startswith(EXCLUDE_PREFIX)}
    if username in excluded:
        return False
    prefixes = (ROLE_PREFIX, EXCLUDE_PREFIX)
    allowed_roles = {entry[len(ROLE_PREFIX) :] for entry in assigned_ids if entry.startswith(ROLE_PREFIX)}
    people = {entry for entry in assigned_ids if not entry.startswith(prefixes)}
    return user_id in people or bool(allowed_roles & set(roles))
