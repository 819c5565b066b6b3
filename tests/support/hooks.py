"""Connector hooks in integration tests against a stand-in: their log lines where ``caplog`` sees
them, and their HTTP sessions closed when the test ends."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, ClassVar, TypeVar

H = TypeVar("H")


class CaplogLog:
    """Mixin (before the hook class): ``self.log`` is the stdlib logger :attr:`log_name`, so that
    ``caplog`` sees the hook's lines (Airflow's hook logger is structlog, which writes to stdout and
    bypasses ``caplog``)."""

    log_name: ClassVar[str]

    @property
    def log(self) -> logging.Logger:
        return logging.getLogger(self.log_name)


@contextmanager
def closing_hooks(make: Callable[..., H]) -> Iterator[Callable[..., H]]:
    """``make`` (a hook factory) for the block; every hook it made has its HTTP session, if one was
    opened, closed at the end (no socket left to the stand-in of the next test)."""
    made: list[Any] = []

    def tracked(*args: Any, **kwargs: Any) -> H:
        hook = make(*args, **kwargs)
        made.append(hook)
        return hook

    try:
        yield tracked
    finally:
        for hook in made:
            if "session" in vars(hook):
                hook.session.close()
