"""PagerDuty Events API v2: trigger, acknowledge and resolve an alert by ``dedup_key``.

Why not the provider (apache-airflow-providers-pagerduty 5.3.1): its hooks ignore the connection's
host (the sync client always posts to ``https://events.pagerduty.com`` and refuses any non-https base
URL), so it can reach neither a contract stand-in nor a regional or proxied endpoint without patching
the library (measured: ``../shared/notes/providers-intake-notify.md`` (c)), and it has none of the
connector base's retry, ``Retry-After`` and rate-limit policy. This is the same contract in a few
lines: ``POST {host}/v2/enqueue`` with ``{"routing_key", "event_action", "dedup_key", "payload"}``,
202 ``{"status": "success", "dedup_key"}``.

Connection: ``host`` = the Events API (``https://events.pagerduty.com``, or ``https://events.eu.
pagerduty.com``), ``password`` = the service's integration (routing) key, a secret: it is in the
request body only, never in a log, an error or XCom.

One incident per ``dedup_key``: PagerDuty appends a trigger with the key of an open incident to it,
so a re-sent page (a retry, a cleared gate) is the same incident; ``resolve`` closes it.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property
from typing import Any, ClassVar, Literal

from include.connectors.base import HttpConnectorHook
from include.connectors.errors import PermanentError

EventAction = Literal["trigger", "acknowledge", "resolve"]
Severity = Literal["critical", "error", "warning", "info"]
MAX_DEDUP_KEY = 255
MAX_SUMMARY = 1024
ENQUEUE_PATH = "/v2/enqueue"


class PagerDutyEventsHook(HttpConnectorHook):
    """One PagerDuty service's Events API v2 integration.

    :param conn_id: the service's connection (``host`` = the Events API, ``password`` = routing key).
    :param tenant: whose rate-limit bucket the events draw from.
    """

    system: ClassVar[str] = "pagerduty"
    default_conn_name = "pagerduty_default"
    hook_name = "PagerDuty Events API v2"
    default_host = "https://events.pagerduty.com"  # the connection's host may stay empty

    @cached_property
    def routing_key(self) -> str:
        key = str(self.connection.password or "")
        if not key:
            raise PermanentError(
                f"connection {self.conn_id!r}: password (the integration's routing key) is empty",
                system=self.system,
                operation="configure",
            )
        return key

    def auth_headers(self) -> dict[str, str]:
        return {"Content-Type": "application/json"}  # the routing key travels in the body

    def send_event(
        self,
        action: EventAction,
        dedup_key: str,
        *,
        summary: str | None = None,
        source: str | None = None,
        severity: Severity = "critical",
        component: str | None = None,
        group: str | None = None,
        custom_details: Mapping[str, Any] | None = None,
        links: list[dict[str, str]] | None = None,
    ) -> str:
        """Send one event; return the ``dedup_key`` PagerDuty acknowledged.

        :param action: ``trigger`` (needs ``summary`` and ``source``), ``acknowledge`` or ``resolve``.
        :param dedup_key: the alert's key (at most 255 characters): one incident per key.
        :raises ValueError: an event PagerDuty would refuse, before anything is sent.
        :raises PermanentError: PagerDuty refused it (400: invalid event or unknown routing key).
        """
        if not dedup_key or len(dedup_key) > MAX_DEDUP_KEY:
            raise ValueError(f"pagerduty {action}: dedup_key must be 1-{MAX_DEDUP_KEY} characters")
        event: dict[str, Any] = {
            "routing_key": self.routing_key,
            "event_action": action,
            "dedup_key": dedup_key,
        }
        if action == "trigger":
            if not summary or not source:
                raise ValueError("pagerduty trigger: summary and source are required")
            payload: dict[str, Any] = {
                "summary": summary[:MAX_SUMMARY],
                "source": source,
                "severity": severity,
            }
            if component:
                payload["component"] = component
            if group:
                payload["group"] = group
            if custom_details:
                payload["custom_details"] = dict(custom_details)
            event["payload"] = payload
            if links:
                event["links"] = links
        response = self.request("POST", ENQUEUE_PATH, operation=f"event_{action}", expect=(202,), json=event)
        try:
            return str(response.json().get("dedup_key") or dedup_key)
        except ValueError:
            return dedup_key
