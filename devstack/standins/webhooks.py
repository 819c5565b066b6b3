"""A contract stand-in for the approval channels: Microsoft Teams webhooks and PagerDuty Events API v2.

One process of the local stack on 127.0.0.1 (service ``webhooks-standin``, :func:`port`), built on
:class:`devstack.standins.base.HttpStandIn`; in tests also in-process (``with WebhookStandIn(...)``).

Microsoft Teams (an incoming webhook, or a Teams Workflows "When a Teams webhook request is received"
URL, per domain channel). The URL itself is the secret: its path carries the token.

===========================================================  ======================================
``POST /webhookb2/{token}``                                  incoming webhook: 200 ``1`` (text)
``POST /workflows/{token}/triggers/manual/paths/invoke``     Workflows webhook: 202, no body
===========================================================  ======================================

- Body: ``{"type": "message", "attachments": [{"contentType":
  "application/vnd.microsoft.card.adaptive", "content": {"type": "AdaptiveCard", "version", "body":
  [...]}}]}``; anything else is 400 with Teams' wording, a body over 28 KB is 413.
- An unknown token is 404 (Teams: the webhook was deleted or never existed).
- Throttling: 429 with ``Retry-After`` when switched on (:meth:`WebhookStandIn.fault`).

PagerDuty Events API v2.

- ``POST /v2/enqueue`` ``{"routing_key", "event_action": trigger|acknowledge|resolve, "dedup_key",
  "payload": {"summary", "source", "severity": critical|error|warning|info, ...}}``: 202
  ``{"status": "success", "message": "Event processed", "dedup_key"}``; an invalid event is 400
  ``{"status": "invalid event", "message": "Event object is invalid", "errors": [...]}``; an unknown
  routing key is 400 too (``Invalid routing key``); 429 when throttled.
- Incidents: a trigger opens an incident for its ``dedup_key`` unless one is open (then the event is
  appended to it: one incident however often it is re-sent); ``acknowledge`` and ``resolve`` act on
  the open incident of the key (none: accepted, nothing happens, as PagerDuty does). A trigger after
  a resolve opens a new incident. Without ``dedup_key`` a trigger gets a fresh one.

For the tests (127.0.0.1 only, never on a real service):

- ``GET /_records``: what was received, per channel/service name, never a token or routing key:
  ``{"teams": [{"channel", "style", "status", "message", "at"}], "pagerduty": {"events": [...],
  "incidents": [...]}}``.
- ``POST /_faults`` ``{"target": "teams"|"pagerduty", "mode": "5xx"|"timeout"|"429", "times": n}``
  answers the next ``n`` requests of the target that way (``times: 0`` switches it off); with
  ``"match": "<text>"`` only the requests whose body holds that text (a PagerDuty ``dedup_key``, a
  run id in a card), so a test can fail one run's pages while other runs page beside it;
  :meth:`WebhookStandIn.fault` does the same in-process.

Not shown: Teams message cards (the legacy ``MessageCard``), card rendering, @mentions; PagerDuty
change events, links/images, incident assignment and escalation policies, the REST API.
"""

from __future__ import annotations

import itertools
import json
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devstack.standins.base import (
    HOST,
    HttpStandIn,
    Request,
    Response,
    serve_main,
    service_argv,
    write_config_file,
)

__all__ = ["HOST", "WebhookStandIn", "main"]

CARD_CONTENT_TYPE = "application/vnd.microsoft.card.adaptive"
TEAMS_MAX_BYTES = 28 * 1024
PD_ACTIONS = frozenset({"trigger", "acknowledge", "resolve"})
PD_SEVERITIES = frozenset({"critical", "error", "warning", "info"})
FAULT_MODES = frozenset({"5xx", "timeout", "429"})

_INCOMING = re.compile(r"/webhookb2/(?P<token>[A-Za-z0-9_\-@.]+)")
_WORKFLOWS = re.compile(r"/workflows/(?P<token>[A-Za-z0-9_\-]+)/triggers/manual/paths/invoke")


@dataclass(frozen=True)
class Received:
    """The request log entry: method, path class and status; never the path itself (a token)."""

    method: str
    route: str
    status: int
    at: float


def _attachment_errors(index: int, attachment: Any) -> list[str]:
    where = f"attachments[{index}]"
    if not isinstance(attachment, Mapping):
        return [f"{where} is not an object"]
    errors = []
    if attachment.get("contentType") != CARD_CONTENT_TYPE:
        errors.append(f'{where}.contentType must be "{CARD_CONTENT_TYPE}"')
    content = attachment.get("content")
    if not isinstance(content, Mapping):
        return [*errors, f"{where}.content is not an object"]
    if content.get("type") != "AdaptiveCard":
        errors.append(f'{where}.content.type must be "AdaptiveCard"')
    if not isinstance(content.get("version"), str):
        errors.append(f"{where}.content.version is missing")
    if not isinstance(content.get("body"), list) or not content["body"]:
        errors.append(f"{where}.content.body must be a non-empty list")
    return errors


def card_errors(message: Any) -> list[str]:
    """What Teams would refuse in a webhook message carrying an Adaptive Card (empty: valid)."""
    if not isinstance(message, Mapping):
        return ["the body is not a JSON object"]
    errors = [] if message.get("type") == "message" else ['"type" must be "message"']
    attachments = message.get("attachments")
    if not isinstance(attachments, list) or not attachments:
        return [*errors, '"attachments" must be a non-empty list']
    for index, attachment in enumerate(attachments):
        errors.extend(_attachment_errors(index, attachment))
    return errors


def _payload_errors(payload: Any) -> list[str]:
    if not isinstance(payload, Mapping):
        return ["'payload' is missing or not an object"]
    errors = []
    summary = payload.get("summary")
    if not isinstance(summary, str) or not summary.strip():
        errors.append("'payload.summary' is missing or blank")
    elif len(summary) > 1024:
        errors.append("'payload.summary' is longer than 1024 characters")
    if not isinstance(payload.get("source"), str) or not payload["source"].strip():
        errors.append("'payload.source' is missing or blank")
    if payload.get("severity") not in PD_SEVERITIES:
        errors.append("'payload.severity' is invalid (must be one of critical, error, warning, info)")
    return errors


def event_errors(event: Any) -> list[str]:
    """What PagerDuty's Events API v2 would refuse in an event (empty: valid)."""
    if not isinstance(event, Mapping):
        return ["Event object is not a JSON object"]
    errors = []
    if not isinstance(event.get("routing_key"), str) or not event["routing_key"]:
        errors.append("'routing_key' is missing or blank")
    action = event.get("event_action")
    if action not in PD_ACTIONS:
        errors.append("'event_action' is invalid (must be one of trigger, acknowledge, resolve)")
    dedup = event.get("dedup_key")
    if dedup is not None and (not isinstance(dedup, str) or not dedup or len(dedup) > 255):
        errors.append("'dedup_key' must be a non-empty string of at most 255 characters")
    if action in ("acknowledge", "resolve") and dedup is None:
        errors.append("'dedup_key' is missing")
    if action == "trigger":
        errors.extend(_payload_errors(event.get("payload")))
    return errors


class WebhookStandIn(HttpStandIn[Received]):
    """Teams channels and PagerDuty services by secret: ``teams`` token -> channel name,
    ``pagerduty`` routing key -> service name (what the records show instead of the secret)."""

    server_version = "WebhookStandIn/1.0"

    def __init__(
        self,
        *,
        teams: Mapping[str, str] | None = None,
        pagerduty: Mapping[str, str] | None = None,
        timeout_seconds: float = 30.0,
        port: int = 0,
        max_recorded: int | None = None,
    ) -> None:
        super().__init__(port=port, max_recorded=max_recorded)
        self.teams_tokens = dict(teams or {})
        self.routing_keys = dict(pagerduty or {})
        self.timeout_seconds = timeout_seconds
        self.teams_messages: list[dict[str, Any]] = []
        self.pd_events: list[dict[str, Any]] = []
        self.incidents: list[dict[str, Any]] = []
        self._numbers = itertools.count(1)
        self._faults: dict[tuple[str, str | None], dict[str, Any]] = {}  # (target, match) -> spec

    # --- test controls ----------------------------------------------------------------------------
    def fault(
        self, target: str, mode: str, times: int = 1, *, retry_after: int = 1, match: str | None = None
    ) -> None:
        """Answer the next ``times`` requests to ``target`` (teams, pagerduty) with ``mode``; with
        ``match``, only those whose body holds that text."""
        if target not in ("teams", "pagerduty") or mode not in FAULT_MODES or times < 0:
            raise ValueError(f"fault: target teams|pagerduty, mode one of {sorted(FAULT_MODES)}, times >= 0")
        if match is not None and (not isinstance(match, str) or not match):
            raise ValueError("fault: match is a non-empty string")
        with self._lock:
            self._faults[(target, match)] = {"mode": mode, "times": times, "retry_after": retry_after}

    def records(self) -> dict[str, Any]:
        with self._lock:
            return json.loads(
                json.dumps(
                    {
                        "teams": self.teams_messages,
                        "pagerduty": {"events": self.pd_events, "incidents": self.incidents},
                    }
                )
            )

    # --- serving ------------------------------------------------------------------------------------
    def record(self, request: Request, response: Response) -> Received:
        if _INCOMING.fullmatch(request.path) or _WORKFLOWS.fullmatch(request.path):
            label = "teams"
        else:
            label = request.path if request.path.startswith(("/v2/", "/_")) else "other"
        return Received(request.method, label, response.status, time.monotonic())

    def handle(self, request: Request) -> Response:
        if request.path == "/_records" and request.method == "GET":
            return Response(200, self.records())
        if request.path == "/_faults" and request.method == "POST":
            try:
                spec = json.loads(request.body or b"{}")
                self.fault(spec["target"], spec["mode"], int(spec.get("times", 1)), match=spec.get("match"))
            except (ValueError, KeyError, TypeError) as exc:
                return Response(400, {"message": f"bad fault: {exc}"})
            return Response(204)
        if request.path == "/v2/enqueue":
            if request.method != "POST":
                return Response(405, {"status": "error", "message": "Method Not Allowed"})
            return self._fault("pagerduty", request.body) or self._enqueue(request)
        for style, pattern in (("incoming", _INCOMING), ("workflows", _WORKFLOWS)):
            if match := pattern.fullmatch(request.path):
                if request.method != "POST":
                    return Response(405, "Method Not Allowed")
                return self._fault("teams", request.body) or self._teams(request, style, match["token"])
        return Response(404, {"message": "Not Found"})

    def _fault(self, target: str, body: bytes) -> Response | None:
        text = body.decode("utf-8", "replace")
        with self._lock:
            spec = next(
                (
                    spec
                    for (on, match), spec in self._faults.items()
                    if on == target and spec["times"] > 0 and (match is None or match in text)
                ),
                None,
            )
            if spec is None:
                return None
            spec["times"] -= 1
        if spec["mode"] == "429":
            if target == "teams":
                text = "Microsoft Teams endpoint returned HTTP error 429 with ContextId MS-CV=standin."
                return Response(429, text, {"Retry-After": str(spec["retry_after"])})
            return Response(
                429, {"status": "throttle event", "message": "Too many requests"}, {"Retry-After": "1"}
            )
        if spec["mode"] == "timeout":
            return Response(503, {"message": "timed out"}, delay=self.timeout_seconds)
        return Response(503, {"message": "Service Unavailable"})

    def _teams(self, request: Request, style: str, token: str) -> Response:
        channel = self.teams_tokens.get(token)
        if channel is None:
            return Response(
                404, "Webhook not found" if style == "incoming" else {"error": {"code": "NotFound"}}
            )
        if len(request.body) > TEAMS_MAX_BYTES:
            return Response(413, "Message size is too big (limit 28 KB).")
        try:
            message = json.loads(request.body or b"null")
        except ValueError:
            message = None
        errors = card_errors(message)
        status = 400 if errors else (200 if style == "incoming" else 202)
        with self._lock:
            self.teams_messages.append(
                {
                    "channel": channel,
                    "style": style,
                    "status": status,
                    "message": message if not errors else None,
                    "errors": errors,
                    "at": time.time(),
                }
            )
        if errors:
            return Response(400, "Bad payload: " + "; ".join(errors))
        return Response(200, "1") if style == "incoming" else Response(202)

    def _enqueue(self, request: Request) -> Response:
        try:
            event = json.loads(request.body or b"null")
        except ValueError:
            event = None
        errors = event_errors(event)
        service = self.routing_keys.get(str(event.get("routing_key"))) if isinstance(event, Mapping) else None
        if not errors and service is None:
            errors = ["Invalid routing key"]
        if errors:
            body = {"status": "invalid event", "message": "Event object is invalid", "errors": errors}
            return Response(400, body)
        assert isinstance(event, Mapping)
        assert service is not None
        action = event["event_action"]
        dedup = event.get("dedup_key") or uuid.uuid4().hex
        with self._lock:
            open_incident = next(
                (i for i in self.incidents if i["dedup_key"] == dedup and i["status"] != "resolved"), None
            )
            if action == "trigger":
                if open_incident is None:
                    open_incident = {
                        "number": next(self._numbers),
                        "service": service,
                        "dedup_key": dedup,
                        "status": "triggered",
                        "summary": event["payload"]["summary"],
                        "severity": event["payload"]["severity"],
                        "source": event["payload"]["source"],
                        "custom_details": event["payload"].get("custom_details"),
                        "triggers": 0,
                        "opened_at": time.time(),
                    }
                    self.incidents.append(open_incident)
                open_incident["triggers"] += 1
            elif open_incident is not None:
                open_incident["status"] = "acknowledged" if action == "acknowledge" else "resolved"
                open_incident[f"{open_incident['status']}_at"] = time.time()
            self.pd_events.append(
                {
                    "service": service,
                    "event_action": action,
                    "dedup_key": dedup,
                    "payload": event.get("payload"),
                    "incident": open_incident["number"] if open_incident else None,
                    "at": time.time(),
                }
            )
        return Response(202, {"status": "success", "message": "Event processed", "dedup_key": dedup})


# --- the stand-in as a service of the local stack ---------------------------------------------------
SERVICE = "webhooks-standin"
PORT_OFFSET = 47  # profile.api_port + 47 (RT +10, log servers +13.., ERP +20, Redis +30, MFA +40, MS +45)
CONFIG_LOCAL_NAME = "webhooks-standin.json"


def port(profile: Any) -> int:
    return int(profile.api_port) + PORT_OFFSET


def base_url(profile: Any) -> str:
    return f"http://{HOST}:{port(profile)}"


def teams_token(profile: Any, domain: str) -> str:
    """The path token of ``domain``'s Teams webhook (a secret, generated once per profile)."""
    return str(profile.local_secret(f"teams-webhook-{domain}", lambda: uuid.uuid4().hex + uuid.uuid4().hex))


def routing_key(profile: Any, domain: str) -> str:
    """The PagerDuty integration (routing) key of ``domain``'s service: 32 characters, a secret."""
    return str(profile.local_secret(f"pagerduty-routing-key-{domain}", lambda: uuid.uuid4().hex))


def teams_connection(profile: Any, domain: str) -> dict[str, Any]:
    """The Airflow connection of ``domain``'s Teams channel: host = the webhook's origin, password = the
    secret rest of the URL (its path with the token)."""
    return {
        "conn_type": "http",
        "host": base_url(profile),
        "password": f"/workflows/{teams_token(profile, domain)}/triggers/manual/paths/invoke",
        "extra": {"timeout_seconds": 5, "retry_max_attempts": 3},
    }


def pagerduty_connection(profile: Any, domain: str) -> dict[str, Any]:
    """The Airflow connection of ``domain``'s PagerDuty service: host = the Events API, password = the key."""
    return {
        "conn_type": "http",
        "host": base_url(profile),
        "password": routing_key(profile, domain),
        "extra": {"timeout_seconds": 5, "retry_max_attempts": 3},
    }


def standin_config(profile: Any, domains: Mapping[str, tuple[str | None, str | None]]) -> dict[str, Any]:
    """``domains``: domain -> (Teams conn id or None, PagerDuty conn id or None)."""
    teams = {teams_token(profile, d): d for d, (t, _) in domains.items() if t}
    pagerduty = {routing_key(profile, d): d for d, (_, p) in domains.items() if p}
    return {"teams": teams, "pagerduty": pagerduty}


def write_config(profile: Any, domains: Mapping[str, tuple[str | None, str | None]]) -> Path:
    return write_config_file(profile, CONFIG_LOCAL_NAME, standin_config(profile, domains))


def policy_channels() -> dict[str, tuple[str | None, str | None]]:
    """domains.yaml: domain -> (its Teams channel conn id, its PagerDuty conn id)."""
    from include.policies.loader import load_domain_policy

    policy = load_domain_policy()
    return {name: (d.teams_channel, d.pagerduty) for name, d in policy.domains.items()}


def connections(profile: Any) -> dict[str, dict[str, Any]]:
    """The Airflow connections of every channel domains.yaml names (devstack/moto_seed.py seeds them)."""
    seeded: dict[str, dict[str, Any]] = {}
    for domain, (teams, pagerduty) in policy_channels().items():
        if teams:
            seeded[teams] = teams_connection(profile, domain)
        if pagerduty:
            seeded[pagerduty] = pagerduty_connection(profile, domain)
    return seeded


def standin_argv(profile: Any) -> list[str]:
    return service_argv("devstack.standins.webhooks", port(profile), write_config(profile, policy_channels()))


def main(argv: list[str] | None = None) -> None:
    """Serve on 127.0.0.1 until SIGTERM or SIGINT. Tokens and routing keys come from a 0600 file,
    never from the command line (``ps`` shows it)."""
    serve_main(
        "Teams webhook + PagerDuty Events v2 stand-in (local stack)",
        lambda args, service: WebhookStandIn(
            teams=args.config.get("teams"), pagerduty=args.config.get("pagerduty"), **service
        ),
        argv,
    )


if __name__ == "__main__":
    main()
