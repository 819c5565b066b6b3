"""What can go wrong when a connector talks to an external system, sorted by what to do about it."""

from __future__ import annotations


class ConnectorError(Exception):
    """Base class; ``system`` and ``operation`` say where it happened."""

    def __init__(self, message: str, *, system: str, operation: str) -> None:
        super().__init__(f"{system} {operation}: {message}")
        self.system = system
        self.operation = operation


class PermanentError(ConnectorError):
    """The service refused the request (4xx other than 429): retrying cannot help."""

    def __init__(self, message: str, *, system: str, operation: str, status: int | None = None) -> None:
        super().__init__(message, system=system, operation=operation)
        self.status = status


class TransientError(ConnectorError):
    """429, 5xx, timeout or connection error: worth another try, after ``retry_after`` if given."""

    def __init__(
        self,
        message: str,
        *,
        system: str,
        operation: str,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, system=system, operation=operation)
        self.status = status
        self.retry_after = retry_after


class RetryBudgetExhausted(ConnectorError):
    """Transient failures went on past the retry budget; the last one is the ``__cause__``."""

    def __init__(self, message: str, *, system: str, operation: str, attempts: int) -> None:
        super().__init__(message, system=system, operation=operation)
        self.attempts = attempts


class RateLimitBackpressure(ConnectorError):
    """The shared rate limit would make us wait longer than the bound: give the worker slot back.

    Operators catch it and defer for ``wait_seconds`` instead of sleeping in a worker.
    """

    def __init__(self, message: str, *, system: str, operation: str, wait_seconds: float) -> None:
        super().__init__(message, system=system, operation=operation)
        self.wait_seconds = wait_seconds
