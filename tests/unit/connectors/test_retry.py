"""``Retry-After`` is delta-seconds or an HTTP-date (RFC 9110 10.2.3); anything else means "not given"."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from include.connectors.retry import parse_retry_after

NOW = datetime(2026, 3, 2, 9, 30, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("120", 120.0, id="delta-seconds"),
        pytest.param(" 120 ", 120.0, id="delta-seconds-padded"),
        pytest.param("0", 0.0, id="delta-zero"),
        pytest.param("Mon, 02 Mar 2026 09:29:00 GMT", 0.0, id="http-date-past"),
        pytest.param("Mon, 02 Mar 2026 09:30:30 GMT", 30.0, id="http-date-30s-ahead"),
        pytest.param("Mon, 02 Mar 2026 09:30:30", 30.0, id="http-date-without-zone-is-utc"),
        pytest.param("soon", None, id="garbage-word"),
        pytest.param("1.5", None, id="garbage-fraction"),
        pytest.param("-5", None, id="garbage-negative"),
        pytest.param("\u00b2", None, id="garbage-superscript-digit"),
        pytest.param("Mon, 99 Mar 2026 09:30:30 GMT", None, id="garbage-date"),
        pytest.param("", None, id="empty"),
        pytest.param("   ", None, id="blank"),
        pytest.param(None, None, id="absent"),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, now=NOW) == expected
