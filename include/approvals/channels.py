"""The approval ladder beyond e-mail: a Teams card per domain channel, a PagerDuty page for SOC escalations.

What goes where (``alerts.teams_channel`` and ``alerts.pagerduty`` of the domain in
``include/policies/domains.yaml`` name the Airflow connections):

=============  =========================================  ============================================
stage          Teams (every domain with a channel)        PagerDuty (a domain with ``pagerduty``)
=============  =========================================  ============================================
requested      card: the question, deadline, deep link    -
reminder       card: still waiting, escalation time       -
escalation     card: unanswered, auto-reject time         trigger, ``dedup_key`` per request
answered       card: approved / rejected by whom          resolve (if the request was escalated)
timed_out      card: rejected by the fail-safe rule       resolve (if the request was escalated)
=============  =========================================  ============================================

Delivery is observable and never in the way: a post is retried with the connection's retry policy
(:class:`~include.connectors.base.HttpConnectorHook`); if it still fails it is an audit record
(``notification.failed``) and a StatsD counter (``notification.failed``, tags domain, channel,
stage), and :func:`notify` returns the outcome instead of raising, so the gate and the workflow go
on exactly as before (the e-mail path is separate and unchanged). No webhook URL or routing key is
logged, recorded or returned: outcomes name the connection id only.

Idempotent: the page's ``dedup_key`` is derived from the gate (dag_id, run_id, task_id, map_index),
so a re-sent trigger (a retry, a restarted triggerer, a cleared gate) is the same PagerDuty incident.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime
from logging import Logger
from typing import Any, Final, Literal

from include.approvals.messages import RequestFacts, waited

Stage = Literal["requested", "reminder", "escalation", "answered", "timed_out"]
STAGES: Final = ("requested", "reminder", "escalation", "answered", "timed_out")
PAGE_STAGE: Final = "escalation"
RESOLVE_STAGES: Final = ("answered", "timed_out")
METRIC_FAILED: Final = "notification.failed"
METRIC_SENT: Final = "notification.sent"
CARD_VERSION: Final = "1.4"
MAX_TEXT: Final = 2000


def dedup_key(target: Mapping[str, Any]) -> str:
    """The PagerDuty ``dedup_key`` of one approval request: one incident per gate and map index."""
    key = f"approval/{target['dag_id']}/{target['run_id']}/{target['task_id']}/{target.get('map_index', -1)}"
    if len(key) <= 255:
        return key
    return "approval/sha256/" + hashlib.sha256(key.encode()).hexdigest()


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _headline(stage: str, facts: RequestFacts, now: datetime, outcome: Mapping[str, Any] | None) -> str:
    drill = "[DRILL] " if facts.drill else ""
    age = waited(facts.requested_at, now)
    outcome = outcome or {}
    by = outcome.get("responded_by") or "someone"
    headlines = {
        "requested": f"{drill}Approval needed: {facts.action}",
        "reminder": f"{drill}Reminder: {facts.action} waiting {age} for approval",
        "escalation": f"{drill}Escalation: {facts.action} unanswered for {age}",
        "answered": f"{drill}{'Approved' if outcome.get('approved') else 'Rejected'} by {by}: {facts.action}",
        "timed_out": f"{drill}Timed out, rejected (fail-safe): {facts.action}",
    }
    return headlines[stage]


def teams_card(
    stage: Stage, facts: RequestFacts, now: datetime, *, outcome: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The Adaptive Card of one ladder stage: the question, the deadline and the deep link to the
    request in the UI's Required actions (while it can still be answered)."""
    open_request = stage in ("requested", "reminder", "escalation")
    facts_rows = [
        ("Domain", facts.domain),
        ("Approval", f"{facts.step} of {facts.steps}"),
        ("Correlation id", facts.correlation_id),
        ("Triggered by", facts.triggered_by or "schedule or event"),
        ("Who may answer", ", ".join(facts.approver_roles)),
        ("Requested at", _when(facts.requested_at)),
    ]
    if open_request:
        if stage == "requested":
            facts_rows.append(("Reminder at", _when(facts.remind_at)))
        if stage in ("requested", "reminder"):
            facts_rows.append(("Escalation at", _when(facts.escalate_at)))
        if stage == "escalation":
            facts_rows.append(("Escalated to", ", ".join(facts.escalate_to)))
        facts_rows.append(("Deadline (no answer = Reject)", _when(facts.deadline)))
    body: list[dict[str, Any]] = [
        {
            "type": "TextBlock",
            "text": _headline(stage, facts, now, outcome),
            "size": "Medium",
            "weight": "Bolder",
            "wrap": True,
        },
        {"type": "TextBlock", "text": facts.subject[:MAX_TEXT], "wrap": True},
    ]
    if open_request and facts.body.strip():
        body.append(
            {"type": "TextBlock", "text": facts.body.strip()[:MAX_TEXT], "wrap": True, "isSubtle": True}
        )
    body.append({"type": "FactSet", "facts": [{"title": t, "value": v} for t, v in facts_rows]})
    links = [("Answer the request", facts.answer_url)] if open_request else []
    links.append(("Open the run", facts.run_url))
    actions = [{"type": "Action.OpenUrl", "title": t, "url": u} for t, u in links if u.startswith("http")]
    if not actions:  # no [api] base_url: a relative link is no button, but still the way to the request
        body.append({"type": "TextBlock", "text": " · ".join(f"{t}: {u}" for t, u in links), "wrap": True})
    card: dict[str, Any] = {
        "type": "AdaptiveCard",
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "version": CARD_VERSION,
        "body": body,
        "msteams": {"width": "Full"},
    }
    if actions:
        card["actions"] = actions
    return card


def _page(facts: RequestFacts, target: Mapping[str, Any]) -> dict[str, Any]:
    """The trigger's fields (summary, source, severity, details): what the on-call sees."""
    drill = "[DRILL] " if facts.drill else ""
    return {
        "summary": f"{drill}{facts.domain.upper()} approval unanswered: {facts.action}: {facts.subject}",
        "source": f"orchestrator/{target['dag_id']}",
        "severity": "info" if facts.drill else "critical",
        "component": facts.action,
        "group": facts.domain,
        "custom_details": {
            "correlation_id": facts.correlation_id,
            "answer_url": facts.answer_url,
            "run_url": facts.run_url,
            "deadline": facts.deadline.isoformat(),
            "escalate_to": list(facts.escalate_to),
            "dag_id": target["dag_id"],
            "run_id": target["run_id"],
            "task_id": target["task_id"],
        },
        "links": [{"href": facts.answer_url, "text": "Answer the request"}]
        if facts.answer_url.startswith("http")
        else None,
    }


def _error_text(exc: BaseException, hook: Any) -> str:
    """What a failure says, without the connection's secret (a URL path or routing key)."""
    from include.connectors.errors import ConnectorError

    text = f"{type(exc).__name__}: {exc}" if isinstance(exc, ConnectorError) else type(exc).__name__
    connection = getattr(hook, "__dict__", {}).get("connection")
    secret = str(getattr(connection, "password", "") or "")
    if secret:
        text = text.replace(secret, "***")
    return text[:300]


def _metric(name: str, *, domain: str, channel: str, stage: str, tenant: str | None) -> None:
    from include.metrics.statsd import configured_client

    try:
        client = configured_client()
        if client is not None:
            client.incr(name, {"domain": domain, "channel": channel, "stage": stage, "tenant": tenant})
    except Exception:  # a metric must never fail a notification's caller
        return


def _failed(
    channel: str,
    conn_id: str,
    stage: str,
    facts: RequestFacts,
    target: Mapping[str, Any],
    tenant: str | None,
    error: str,
    log: Logger | Any,
) -> None:
    from include.audit.emit import emit
    from include.audit.records import NOTIFICATION_FAILED

    log.warning(
        "approval %s: %s %s notification via %s failed: %s", facts.action, stage, channel, conn_id, error
    )
    _metric(METRIC_FAILED, domain=facts.domain, channel=channel, stage=stage, tenant=tenant)
    emit(
        {
            "kind": NOTIFICATION_FAILED,
            "actor": "airflow",
            "domain": facts.domain,
            "tenant": tenant,
            "correlation_id": facts.correlation_id,
            "dag_id": target.get("dag_id"),
            "run_id": target.get("run_id"),
            "task_id": target.get("task_id"),
            "subject": facts.subject,
            "details": {
                "channel": channel,
                "conn_id": conn_id,
                "stage": stage,
                "action": facts.action,
                "error": error,
                **({"drill": True} if facts.drill else {}),
            },
        }
    )


def _send_teams(
    conn_id: str,
    stage: Stage,
    facts: RequestFacts,
    now: datetime,
    outcome: Mapping[str, Any] | None,
    tenant: str,
) -> tuple[dict[str, Any], Any]:
    from include.connectors.teams import TeamsWebhookHook

    hook = TeamsWebhookHook(conn_id, tenant=tenant)
    try:
        status = hook.post_card(teams_card(stage, facts, now, outcome=outcome))
    except Exception as exc:  # recorded, never raised: see module doc
        return {"conn_id": conn_id, "error": _error_text(exc, hook), "retries": hook.retry_count}, hook
    return {"conn_id": conn_id, "status": status, "retries": hook.retry_count}, hook


def _send_page(
    conn_id: str, stage: Stage, facts: RequestFacts, target: Mapping[str, Any], tenant: str
) -> dict[str, Any]:
    from include.connectors.pagerduty import PagerDutyEventsHook

    hook = PagerDutyEventsHook(conn_id, tenant=tenant)
    key = dedup_key(target)
    action: Literal["trigger", "resolve"] = "trigger" if stage == PAGE_STAGE else "resolve"
    result: dict[str, Any] = {"conn_id": conn_id, "action": action, "dedup_key": key}
    try:
        if action == "trigger":
            page = _page(facts, target)
            hook.send_event("trigger", key, **page)
        else:
            hook.send_event("resolve", key)
    except Exception as exc:  # recorded, never raised: see module doc
        return {**result, "error": _error_text(exc, hook), "retries": hook.retry_count}
    return {**result, "retries": hook.retry_count}


def notify(
    stage: Stage,
    facts: RequestFacts,
    *,
    target: Mapping[str, Any],
    tenant: str | None,
    log: Logger | Any,
    now: datetime,
    outcome: Mapping[str, Any] | None = None,
    escalated: bool = False,
) -> dict[str, Any]:
    """Send ``stage`` of the request to the domain's channels; never raises.

    :param stage: ``requested``, ``reminder``, ``escalation``, ``answered`` or ``timed_out``.
    :param facts: the request (what the card and the page say).
    :param target: ``dag_id``, ``run_id``, ``task_id``, ``map_index`` of the gate (the page's key).
    :param tenant: the run's tenant (rate-limit bucket, audit record); None: the platform's.
    :param log: the task's or trigger's logger.
    :param now: the moment of the stage (waits in the card).
    :param outcome: for ``answered``: ``{"approved": bool, "responded_by": name}``.
    :param escalated: for ``answered``/``timed_out``: the request was paged, so resolve it.
    :returns: ``{"teams": {...}, "pagerduty": {...}}`` for the channels used (``error`` on a failure).
    """
    result: dict[str, Any] = {}
    try:
        from include.policies.loader import load_domain_policy

        domain = load_domain_policy().domain(facts.domain)
        teams, pagerduty = domain.teams_channel, domain.pagerduty
    except Exception as exc:  # a broken policy is policy-check's to report; the gate goes on
        log.warning("approval channels of %s not read: %s", facts.domain, type(exc).__name__)
        return result
    bucket = tenant or "platform"
    if teams:
        result["teams"], _ = _send_teams(teams, stage, facts, now, outcome, bucket)
    if pagerduty and (stage == PAGE_STAGE or (stage in RESOLVE_STAGES and escalated)):
        result["pagerduty"] = _send_page(pagerduty, stage, facts, target, bucket)
    for channel, sent in result.items():
        if "error" in sent:
            _failed(channel, sent["conn_id"], stage, facts, target, tenant, sent["error"], log)
        else:
            _metric(METRIC_SENT, domain=facts.domain, channel=channel, stage=stage, tenant=tenant)
    return result


async def anotify(
    stage: Stage,
    facts: RequestFacts,
    *,
    target: Mapping[str, Any],
    tenant: str | None,
    log: Logger | Any,
    now: datetime,
    outcome: Mapping[str, Any] | None = None,
    escalated: bool = False,
) -> dict[str, Any]:
    """:func:`notify` for the triggerer: the blocking posts (with their retries) run on the ladder's
    side-effect threads (:func:`include.approvals.notify.off_loop`), so a slow or dead webhook
    delays neither the event loop nor any gate's answer poll."""
    import asyncio
    import importlib

    # Imported in a thread: the first import (the SMTP and HTTP connectors) must not hold the loop.
    side_effects = await asyncio.to_thread(importlib.import_module, "include.approvals.notify")
    result: dict[str, Any] = await side_effects.off_loop(
        notify,
        stage,
        facts,
        target=target,
        tenant=tenant,
        log=log,
        now=now,
        outcome=outcome,
        escalated=escalated,
    )
    return result


def text_card(title: str, lines: list[str], *, links: Mapping[str, str] | None = None) -> dict[str, Any]:
    """A plain Adaptive Card (a title, lines of text, link buttons): for senders other than the
    approval ladder, e.g. the SLA digest."""
    body: list[dict[str, Any]] = [
        {"type": "TextBlock", "text": title, "size": "Medium", "weight": "Bolder", "wrap": True}
    ]
    body += [{"type": "TextBlock", "text": line[:MAX_TEXT], "wrap": True} for line in lines]
    card: dict[str, Any] = {
        "type": "AdaptiveCard",
        "version": CARD_VERSION,
        "body": body,
        "msteams": {"width": "Full"},
    }
    actions = [
        {"type": "Action.OpenUrl", "title": t, "url": u}
        for t, u in (links or {}).items()
        if u.startswith("http")
    ]
    if actions:
        card["actions"] = actions
    return card


def post_domain_card(
    domain: str,
    card: Mapping[str, Any],
    *,
    what: str,
    log: Logger | Any,
    tenant: str | None = None,
    correlation_id: str | None = None,
) -> dict[str, Any] | None:
    """Post ``card`` to ``domain``'s Teams channel (``alerts.teams_channel``); never raises.

    Same delivery rules as the ladder: the connection's retries, then a ``notification.failed``
    audit record and metric (stage = ``what``, e.g. ``sla_digest``). None: the domain has no channel.
    """
    from include.audit.emit import emit
    from include.audit.records import NOTIFICATION_FAILED
    from include.connectors.teams import TeamsWebhookHook
    from include.policies.loader import load_domain_policy

    try:
        conn_id = load_domain_policy().domain(domain).teams_channel
    except Exception as exc:  # a broken policy is policy-check's to report
        log.warning("Teams channel of %s not read: %s", domain, type(exc).__name__)
        return None
    if not conn_id:
        return None
    hook = TeamsWebhookHook(conn_id, tenant=tenant or "platform")
    try:
        status = hook.post_card(card)
    except Exception as exc:  # recorded, never raised
        error = _error_text(exc, hook)
        log.warning("%s to Teams via %s failed: %s", what, conn_id, error)
        _metric(METRIC_FAILED, domain=domain, channel="teams", stage=what, tenant=tenant)
        emit(
            {
                "kind": NOTIFICATION_FAILED,
                "actor": "airflow",
                "domain": domain,
                "tenant": tenant,
                "correlation_id": correlation_id,
                "details": {"channel": "teams", "conn_id": conn_id, "stage": what, "error": error},
            }
        )
        return {"conn_id": conn_id, "error": error, "retries": hook.retry_count}
    _metric(METRIC_SENT, domain=domain, channel="teams", stage=what, tenant=tenant)
    return {"conn_id": conn_id, "status": status, "retries": hook.retry_count}
