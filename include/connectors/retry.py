"""One retry policy for every connector: capped exponential backoff with full jitter, honouring
``Retry-After``, within a retry budget; only transient failures are retried.

Built on tenacity. tenacity's ``wait_random_exponential`` is the full-jitter backoff; it has no
notion of a server-imposed minimum, so :class:`FullJitterAtLeastRetryAfter` wraps it and waits at
least what the server asked for.
"""

from __future__ import annotations

import email.utils
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import tenacity

from include.connectors.errors import RetryBudgetExhausted, TransientError

T = TypeVar("T")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetryPolicy:
    """:param max_attempts: attempts in all, the first one included.
    :param base_delay: first backoff ceiling in seconds (doubles per attempt).
    :param max_delay: backoff ceiling in seconds.
    :param budget_seconds: the most one call may spend waiting between attempts; past it the call
        fails, so a dead service is not hammered and the task's own retry takes over later.
    """

    max_attempts: int = 6
    base_delay: float = 0.5
    max_delay: float = 30.0
    budget_seconds: float = 120.0

    @classmethod
    def from_extras(cls, extras: Mapping[str, Any]) -> RetryPolicy:
        default = cls()
        return cls(
            max_attempts=int(extras.get("retry_max_attempts", default.max_attempts)),
            base_delay=float(extras.get("retry_base_delay", default.base_delay)),
            max_delay=float(extras.get("retry_max_delay", default.max_delay)),
            budget_seconds=float(extras.get("retry_budget_seconds", default.budget_seconds)),
        )


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP-date; None if absent/bad."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # str.isdigit() also accepts "²", which float() refuses
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


class FullJitterAtLeastRetryAfter(tenacity.wait.wait_base):
    """Full-jitter exponential backoff, but never shorter than the server's ``Retry-After``."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.jitter = tenacity.wait_random_exponential(multiplier=policy.base_delay, max=policy.max_delay)

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        backoff = self.jitter(retry_state)
        outcome = retry_state.outcome
        error = outcome.exception() if outcome is not None else None
        retry_after = getattr(error, "retry_after", None)
        return max(backoff, retry_after) if retry_after is not None else backoff


def call_with_retries(
    func: Callable[[], T],
    policy: RetryPolicy,
    *,
    system: str,
    operation: str,
    on_retry: Callable[[int, float, BaseException], None] | None = None,
    sleep: Callable[[float], None] | None = None,
) -> T:
    """Run ``func``; retry :class:`TransientError` per ``policy``; anything else propagates at once."""

    def before_sleep(state: tenacity.RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        wait = state.next_action.sleep if state.next_action is not None else 0.0
        if on_retry is not None and error is not None:
            on_retry(state.attempt_number, wait, error)

    def give_up(state: tenacity.RetryCallState) -> T:
        error = state.outcome.exception() if state.outcome is not None else None
        raise RetryBudgetExhausted(
            f"gave up after {state.attempt_number} attempts in {state.seconds_since_start:.1f}s: {error}",
            system=system,
            operation=operation,
            attempts=state.attempt_number,
        ) from error

    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(TransientError),
        wait=FullJitterAtLeastRetryAfter(policy),
        stop=tenacity.stop_after_attempt(policy.max_attempts)
        | tenacity.stop_before_delay(policy.budget_seconds),
        before_sleep=before_sleep,
        retry_error_callback=give_up,
        sleep=sleep or tenacity.nap.sleep,
    )
    return retrying(func)
