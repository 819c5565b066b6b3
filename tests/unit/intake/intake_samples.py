"""Sample intake events for the intake unit tests."""

from __future__ import annotations

from typing import Any


def alert(event_id: str = "ALERT-0001", **data: Any) -> dict[str, Any]:
    """A valid siem.alert naming a host; ``data`` overrides (``None`` removes a field)."""
    fields = {"tenant": "acme", "severity": "high", "host": "i-0123456789abcdef0", "summary": "EDR: beacon"}
    fields.update(data)
    return {
        "source": "siem-alerts",
        "id": event_id,
        "kind": "siem.alert",
        "occurred_at": "2026-12-07T01:00:00Z",
        "data": {k: v for k, v in fields.items() if v is not None},
    }
