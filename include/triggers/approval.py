"""The wait of an approval gate: Airflow's HITL trigger plus the escalation ladder.

:class:`~airflow.providers.standard.triggers.hitl.HITLTrigger` polls for the answer and applies
the default (our fail-safe "Reject") at the timeout. It stops short of escalation, so this
subclass also climbs the ladder while it waits: the reminder to the approvers and the escalation
to the backup group (plus a ticket comment) are sent from here, in the triggerer, and each step
is recorded in the gate's XCom ``approval_ladder`` as it happens. The task is resumed once, with
the answer or the timeout; an answer through the UI or the REST API resumes it directly (the API
server does that for a deferred HITL task), without waiting for the poll.

Why the ladder runs here and not by resuming the task for each step: no worker slot, no task
start per step, and one resume per gate. A restarted triggerer re-creates the trigger from its
kwargs; the steps already recorded in XCom are not sent again.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from airflow.providers.standard.triggers.hitl import HITLTrigger
from airflow.sdk.execution_time.xcom import XCom
from airflow.sdk.timezone import utcnow
from airflow.triggers.base import TriggerEvent
from asgiref.sync import sync_to_async

from include.approvals import messages
from include.approvals.channels import anotify as anotify_channels
from include.approvals.messages import RequestFacts
from include.approvals.notify import asend_email, comment_on_ticket
from include.audit.emit import aemit
from include.audit.records import APPROVAL_ESCALATED
from include.connectors.context import RunContext

LADDER_XCOM_KEY = "approval_ladder"


class ApprovalLadderTrigger(HITLTrigger):
    """Wait for the answer or the timeout; send the reminder and the escalation when due.

    :param facts: :meth:`RequestFacts.as_dict` of the request (what the emails say).
    :param approver_emails: who gets the reminder.
    :param target: ``dag_id``, ``run_id``, ``task_id``, ``map_index`` of the gate (for its XCom).
    :param ticket: ``{"system", "tenant", "ticket_id"}`` to comment on at escalation, or ``None``.
    :param tenant: the run's tenant, for its audit records (``None``: not a tenant's run).
    """

    def __init__(
        self,
        *,
        facts: dict[str, Any],
        approver_emails: list[str],
        target: dict[str, Any],
        ticket: dict[str, str] | None = None,
        tenant: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.facts = facts
        self.approver_emails = approver_emails
        self.target = target
        self.ticket = ticket
        self.tenant = tenant

    def serialize(self) -> tuple[str, dict[str, Any]]:
        _, kwargs = super().serialize()
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                **kwargs,
                "facts": self.facts,
                "approver_emails": self.approver_emails,
                "target": self.target,
                "ticket": self.ticket,
                "tenant": self.tenant,
            },
        )

    # ------------------------------------------------------------------------------------------

    def _xcom_address(self) -> dict[str, Any]:
        return {k: self.target[k] for k in ("dag_id", "run_id", "task_id", "map_index")}

    async def _recorded(self) -> list[dict[str, Any]]:
        value = await sync_to_async(XCom.get_one)(key=LADDER_XCOM_KEY, **self._xcom_address())
        return list(value or [])

    async def _record(self, ladder: list[dict[str, Any]], entry: dict[str, Any]) -> None:
        ladder.append(entry)
        await self._save(ladder)

    async def _save(self, ladder: list[dict[str, Any]]) -> None:
        await sync_to_async(XCom.set)(LADDER_XCOM_KEY, ladder, **self._xcom_address())

    async def _climb(self, step: str, facts: RequestFacts, now: datetime) -> dict[str, Any]:
        headers = messages.mail_headers(facts)
        if step == "reminder":
            subject, html = messages.reminder_email(facts, now)
            outcome = await asend_email(self.approver_emails, subject, html, headers=headers, log=self.log)
        else:
            subject, html = messages.escalation_email(facts, now)
            outcome = await asend_email(list(facts.escalate_to), subject, html, headers=headers, log=self.log)
            if self.ticket:
                run = RunContext(
                    self.target["dag_id"],
                    self.target["run_id"],
                    self.target["task_id"],
                    self.ticket["tenant"],
                    facts.correlation_id,
                )
                text = messages.escalation_comment(facts, now)
                outcome["ticket"] = await sync_to_async(comment_on_ticket)(
                    run, self.ticket["system"], self.ticket["ticket_id"], text
                )
        # The domain's Teams channel; at escalation the on-call's page (include/approvals/channels.py).
        outcome["channels"] = await anotify_channels(
            "reminder" if step == "reminder" else "escalation",
            facts,
            target=self.target,
            tenant=self.tenant,
            log=self.log,
            now=now,
        )
        self.log.info("approval %s: %s sent to %s", facts.action, step, ", ".join(outcome["to"]))
        return {"step": step, "at": now.isoformat(), **outcome}

    async def _audit(self, step: str, facts: RequestFacts, entry: dict[str, Any]) -> None:
        details: dict[str, Any] = {"action": facts.action, "gate_step": facts.step, "step": step}
        if facts.drill:
            details["drill"] = True
        details["to"] = list(entry.get("to", []))
        if self.ticket:
            details["ticket_id"] = str(self.ticket["ticket_id"])
            details["ticket_comment"] = entry.get("ticket")
        await aemit(
            {
                "kind": APPROVAL_ESCALATED,
                "actor": "airflow",
                "domain": facts.domain,
                "tenant": self.tenant or (self.ticket or {}).get("tenant"),
                "correlation_id": facts.correlation_id,
                "dag_id": self.target["dag_id"],
                "run_id": self.target["run_id"],
                "task_id": self.target["task_id"],
                "subject": facts.subject,
                "details": details,
            }
        )

    async def _announce(self, facts: RequestFacts, ladder: list[dict[str, Any]]) -> None:
        """The request's card to the domain's Teams channel, once (the gate records the request
        step; a restarted trigger finds ``channels`` on it and does not post again)."""
        requested = next((entry for entry in ladder if entry.get("step") == "requested"), None)
        if requested is None or "channels" in requested:
            return
        requested["channels"] = await anotify_channels(
            "requested",
            facts,
            target=self.target,
            tenant=self.tenant,
            log=self.log,
            now=facts.requested_at,
        )
        await self._save(ladder)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        facts = RequestFacts.from_dict(self.facts)
        ladder = await self._recorded()
        await self._announce(facts, ladder)
        done = {entry["step"] for entry in ladder}
        due = [(step, at) for step, at in (("reminder", facts.remind_at), ("escalation", facts.escalate_at))]
        while True:
            now = utcnow()
            if self.timeout_datetime and self.timeout_datetime < now:
                yield await self._handle_timeout()
                return
            event = await self._handle_response()
            if event:
                yield event
                return
            for step, at in due:
                if step not in done and at <= now:
                    entry = await self._climb(step, facts, now)
                    await self._record(ladder, entry)
                    await self._audit(step, facts, entry)
                    done.add(step)
            upcoming = [at for step, at in due if step not in done]
            if self.timeout_datetime:
                upcoming.append(self.timeout_datetime)
            wake = min([(at - now).total_seconds() for at in upcoming] + [self.poke_interval])
            await asyncio.sleep(max(wake, 0.05))
