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

The steps are sent beside the poll, never in its way: each is a task of its own whose blocking
work (mail, ticket comment, Teams card, page, audit record) runs on the ladder's own threads
(:func:`include.approvals.notify.off_loop`), not on the event loop and not on the one thread
asgiref's ``sync_to_async`` gives every trigger of the process, where Airflow's HITL trigger polls
for the answer and applies the timeout's default. A webhook that hangs delays no gate's answer,
next step or fail-safe reject.
"""

from __future__ import annotations

import asyncio
import copy
import importlib
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from types import ModuleType
from typing import Any, Final

from airflow.providers.standard.triggers.hitl import HITLTrigger
from airflow.sdk.execution_time.xcom import XCom
from airflow.sdk.timezone import utcnow
from airflow.triggers.base import TriggerEvent
from asgiref.sync import sync_to_async

from include.approvals import messages
from include.approvals.channels import anotify as anotify_channels
from include.approvals.messages import RequestFacts
from include.connectors.context import RunContext

# Airflow's TriggerRunner imports this module ON its event loop (``import_string`` in
# ``create_triggers``) and every trigger of the triggerer waits meanwhile; so its top level is what
# the class needs (Airflow's HITL trigger, the request's facts, the stdlib). The side effects'
# modules (the SMTP and HTTP connectors, psycopg and cryptography for the audit trail) are imported
# off the loop when a trigger first runs (:func:`side_effects`). Measured: they are 139 modules,
# 0.15 CPU-s cold on an idle machine, many times that on a loaded one (tests/unit/triggers).
SIDE_EFFECT_MODULES: Final = ("include.approvals.notify", "include.audit.emit", "include.audit.records")

TIMEOUT_GRACE_SECONDS: Final = 15.0
"""After the timeout's fail-safe answer is recorded (on time), how long the event waits for a
ladder step still being sent, so the gate's record lists it."""
ANSWER_GRACE_SECONDS: Final = 1.0
"""The same at an answer: the answer decides, a slow post of the step it overtook does not hold it."""


def _import_all(names: tuple[str, ...]) -> list[ModuleType]:
    return [importlib.import_module(name) for name in names]


_side_effects: tuple[ModuleType, ModuleType, ModuleType] | None = None


async def side_effects() -> tuple[ModuleType, ModuleType, ModuleType]:
    """``include.approvals.notify``, ``include.audit.emit``, ``include.audit.records``, imported in a
    worker thread: the import lock makes a thread that finds one half imported wait for it, so
    this never sees a partial module (a ``sys.modules`` look-up on the loop could). Kept once
    imported (set only after the thread returned them whole): every ladder step and record asks
    for them, and a hop to the loop's default executor would queue behind whatever else a
    trigger put there."""
    global _side_effects
    if _side_effects is None:
        notify, emit, records = await asyncio.to_thread(_import_all, SIDE_EFFECT_MODULES)
        _side_effects = (notify, emit, records)
    return _side_effects


async def asend_email(to: list[str], subject: str, html: str, **kwargs: Any) -> dict[str, Any]:
    """:func:`include.approvals.notify.send_email` on the ladder's threads: the connection's read
    (secrets backend), the TLS context and the relay's rate-limit permit all block, so none of it
    runs on the loop; a failure is the outcome's ``error``, never raised."""
    notify, _, _ = await side_effects()
    result: dict[str, Any] = await notify.off_loop(notify.send_email, to, subject, html, **kwargs)
    return result


async def off_loop(function: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """:func:`include.approvals.notify.off_loop`: a blocking side effect on the ladder's own threads."""
    notify, _, _ = await side_effects()
    return await notify.off_loop(function, *args, **kwargs)


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
        # A copy: the steps sent beside the poll change the ladder on the loop while a save runs.
        await sync_to_async(XCom.set)(LADDER_XCOM_KEY, copy.deepcopy(ladder), **self._xcom_address())

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
                notify, _, _ = await side_effects()
                outcome["ticket"] = await off_loop(
                    notify.comment_on_ticket, run, self.ticket["system"], self.ticket["ticket_id"], text
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
        _, emit, records = await side_effects()
        # On the ladder's threads, not asgiref's shared sync_to_async thread (the answer poll's).
        await off_loop(
            emit.emit,
            {
                "kind": records.APPROVAL_ESCALATED,
                "actor": "airflow",
                "domain": facts.domain,
                "tenant": self.tenant or (self.ticket or {}).get("tenant"),
                "correlation_id": facts.correlation_id,
                "dag_id": self.target["dag_id"],
                "run_id": self.target["run_id"],
                "task_id": self.target["task_id"],
                "subject": facts.subject,
                "details": details,
            },
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

    async def _announce_quietly(self, facts: RequestFacts, ladder: list[dict[str, Any]]) -> None:
        try:
            await self._announce(facts, ladder)
        except Exception:  # best effort, as every step: see _step
            self.log.exception("approval %s: the request card failed", facts.action)

    async def _step(
        self,
        step: str,
        facts: RequestFacts,
        now: datetime,
        ladder: list[dict[str, Any]],
        after: asyncio.Task[None] | None,
    ) -> None:
        """Send one ladder step, then record it (after the step before it: the ladder keeps its order).
        Never raises: a step is best effort (its sends record their own failures)."""
        try:
            entry = await self._climb(step, facts, now)
            if after is not None:
                await asyncio.wait([after])
            await self._record(ladder, entry)
            await self._audit(step, facts, entry)
        except Exception:
            self.log.exception("approval %s: the %s step failed", facts.action, step)

    async def _record_missed(
        self,
        facts: RequestFacts,
        ladder: list[dict[str, Any]],
        missed: list[tuple[str, datetime]],
        now: datetime,
    ) -> None:
        """Steps that came due while this wait was not running (a triggerer down or stalled from
        their time until past the deadline) are not sent after the reject (a reminder or an
        escalation asking for an answer that can no longer be given would mislead); they are
        recorded as missed, so the gate's timeout notice (to the approvers, the escalation group and
        the domain's alert list) and its audit record say so. Best effort: the reject stands."""
        for step, at in missed:
            self.log.warning(
                "approval %s: the %s due at %s was never sent: this wait was not running from then "
                "until the deadline %s (triggerer down or stalled)",
                facts.action,
                step,
                at.isoformat(),
                facts.deadline.isoformat(),
            )
            ladder.append(
                {"step": f"{step}{messages.MISSED_SUFFIX}", "due": at.isoformat(), "at": now.isoformat()}
            )
        try:
            await self._save(ladder)
        except Exception:
            self.log.exception("approval %s: recording the missed step(s) failed", facts.action)

    async def _settle(self, sending: list[asyncio.Task[None]], grace: float) -> None:
        """Give the steps still being sent ``grace`` seconds to finish, so the gate's record lists them."""
        pending = [task for task in sending if not task.done()]
        if not pending:
            return
        _, late = await asyncio.wait(pending, timeout=grace)
        if late:
            self.log.warning(
                "approval ladder: %d step(s) still being sent after %.0fs; the gate resumes without them",
                len(late),
                grace,
            )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Poll for the answer every ``poke_interval`` (or sooner, when a step or the timeout is
        due) while the ladder's steps are sent beside it: a slow mail, post or page never delays
        the poll, the next step or the fail-safe reject."""
        facts = RequestFacts.from_dict(self.facts)
        ladder = await self._recorded()
        # Back after the deadline (the triggerer was down): no request card for a request already rejected.
        late = bool(self.timeout_datetime and self.timeout_datetime < utcnow())
        sending = [] if late else [asyncio.create_task(self._announce_quietly(facts, ladder))]
        done = {entry["step"] for entry in ladder}
        due = [(step, at) for step, at in (("reminder", facts.remind_at), ("escalation", facts.escalate_at))]
        last: asyncio.Task[None] | None = None
        while True:
            now = utcnow()
            if self.timeout_datetime and self.timeout_datetime < now:
                event = await self._handle_timeout()  # the fail-safe answer is recorded here, on time
                await self._settle(sending, TIMEOUT_GRACE_SECONDS)
                missed = [(step, at) for step, at in due if step not in done and at <= self.timeout_datetime]
                if missed:
                    await self._record_missed(facts, ladder, missed, now)
                yield event
                return
            answered = await self._handle_response()
            if answered:
                await self._settle(sending, ANSWER_GRACE_SECONDS)
                yield answered
                return
            for step, at in due:
                if step not in done and at <= now:
                    last = asyncio.create_task(self._step(step, facts, now, ladder, last))
                    sending.append(last)
                    done.add(step)
            upcoming = [at for step, at in due if step not in done]
            if self.timeout_datetime:
                upcoming.append(self.timeout_datetime)
            wake = min([(at - now).total_seconds() for at in upcoming] + [self.poke_interval])
            await asyncio.sleep(max(wake, 0.05))
