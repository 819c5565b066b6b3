"""``failing_fast(task_id, step, ...)``: a connector error no retry can mend fails the task at once.

Every operator family that calls a connector runs its calls through this one function: a
:class:`~include.connectors.errors.PermanentError` (the system refused the request: a 4xx other
than 429, a conflict, a missing object) and the family's own "cannot succeed" errors (bad input, an
unknown host, a credential that is not the tenant's) raise :class:`AirflowFailException`, which
Airflow fails without its retries, naming the step; anything else (a
:class:`~include.connectors.errors.TransientError`, a retry budget spent, a timeout) propagates
as it is and goes to the domain's retries.

Our own, not Airflow's: Airflow retries every exception but ``AirflowFailException`` (and the
sensor/skip ones), and has no notion of a connector's permanent error; this maps ours onto it.
The message is the error's text with its whitespace folded and cut at 1,000 characters (a
connector's error names the system, operation and field; it never carries a credential).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from airflow.sdk.exceptions import AirflowFailException

from include.connectors.errors import PermanentError

T = TypeVar("T")
MESSAGE_MAX = 1000


def message_of(error: BaseException) -> str:
    """The error's text on one line, at most :data:`MESSAGE_MAX` characters (its type if empty)."""
    return " ".join(str(error).split())[:MESSAGE_MAX] or type(error).__name__


def is_permanent(error: BaseException, *also: type[BaseException]) -> bool:
    """A :class:`PermanentError`, or one of ``also`` (the family's own errors no retry can mend)."""
    return isinstance(error, (PermanentError, *also))


def failing_fast(task_id: str, step: Callable[[], T], *also: type[BaseException]) -> T:
    """Run ``step``; a permanent error (:func:`is_permanent`) fails the task at once as
    ``AirflowFailException("<task_id>: <message>")``; every other error propagates unchanged.

    :param task_id: the step's task id, named in the message.
    :param step: the connector call(s).
    :param also: further exception types that no retry can mend (a family's input or state errors).
    """
    try:
        return step()
    except AirflowFailException:
        raise
    except Exception as error:
        if is_permanent(error, *also):
            raise AirflowFailException(f"{task_id}: {message_of(error)}") from None
        raise
