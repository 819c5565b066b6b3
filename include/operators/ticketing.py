"""Ticket steps for workflows: create, comment, attach evidence, update fields/status.

Thin over the ticketing hooks: each operator builds its hook in :attr:`TicketOperator.hook`,
prepares its inputs, makes one hook call and returns ids for XCom (never credentials). Idempotency
keys come from the run, task and tenant, so a retried or re-run task finds what it already created.
When the shared rate limit would keep the task waiting past its bound, the task defers (the
triggerer sleeps, the worker slot is freed) and resumes with the same call.

Customers' own ticketing (issue 22): in a support or SOC workflow, a tenant whose ``tenants.yaml``
says ``ticketing: {system: jira, ...}`` gets each RT step mirrored to its Jira Service Management
project after the RT call (create, comment, attach evidence, resolve;
:mod:`include.connectors.ticketing.mirror`). The RT ticket stays the MSSP's record: a mirror that
fails is logged, recorded
(``ticket.mirror_failed``) and returned in the XCom's ``mirror``, and never fails the step; the
next step or a re-run mirrors what is missing. A mirror held up by the tenant's Jira rate limit
defers like the RT call (the RT call, idempotent, runs again on resume).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.providers.standard.triggers.temporal import TimeDeltaTrigger
from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from include.audit.emit import emit as audit_emit
from include.audit.emit import side_effect as audit_side_effect
from include.audit.emit import task_event
from include.connectors.context import RunContext
from include.connectors.errors import RateLimitBackpressure
from include.connectors.idempotency import idempotency_key
from include.connectors.ticketing import SYSTEMS, ticketing_hook
from include.connectors.ticketing.interface import RESERVED_FIELDS, Ticket, TicketingHook
from include.policies.loader import domain_tags
from include.policies.tenants import tenant_ticketing
from include.triage.rules import BulkUpdateScope, load_rules

if TYPE_CHECKING:  # the mirror (and the Jira adapter) is imported when a step mirrors, not at parse
    from include.connectors.ticketing.mirror import MirrorResult, TicketMirror


class TicketOperator(BaseOperator):
    """Base of the ticket steps: the hook, the run context, rate-limit backpressure as a deferral.

    A subclass implements :meth:`call` (one hook call) and sets ``operation``; :meth:`execute`
    returns what :meth:`call` returned plus ``correlation_id`` and the hook's ``retries``, and
    records the side effect in the audit log.

    :param tenant: the tenant the ticket belongs to (templated).
    :param system: ``request_tracker`` or ``jira``.
    :param conn_id: the ticketing connection; default the adapter's (``rt_default``, ``jira_default``).
    :param idempotency_basis: what makes two runs "the same request" (e.g. the alert id): keys come
        from it instead of the run, so every run for the same alert finds the same ticket and
        comment (templated).
    :param mirror: mirror the step to the tenant's own ticketing when ``tenants.yaml`` names one
        (support and SOC workflows, RT steps only); ``False`` keeps this step in RT only.
    """

    template_fields: Sequence[str] = ("tenant", "idempotency_basis")
    operation = "ticket"
    # Bulk operators draw from the connector's bulk rate limit as well (see ticketing_hook).
    bulk = False

    def __init__(
        self,
        *,
        tenant: str,
        system: str = "request_tracker",
        conn_id: str | None = None,
        idempotency_basis: str | None = None,
        mirror: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.mirror = mirror
        if system not in SYSTEMS:
            raise ValueError(f"{self.task_id}: unknown ticketing system {system!r}")
        self.tenant = tenant
        self.system = system
        self.conn_id = conn_id
        self.idempotency_basis = idempotency_basis

    @cached_property
    def hook(self) -> TicketingHook:
        """The ticketing hook of ``system`` for the (rendered) tenant."""
        return ticketing_hook(self.system, self.conn_id, self.tenant, bulk=self.bulk)

    def call(self, run: RunContext) -> dict[str, Any]:
        """The step's one hook call; returns its XCom (ids, never credentials).

        :param run: the run, task, tenant and correlation id of this call.
        """
        raise NotImplementedError

    def execute(self, context: Any) -> dict[str, Any]:
        run = RunContext.from_airflow_context(context, self.tenant)
        try:
            result = self.call(run)
            self.audit(context, result)
            mirrored = self.mirror_step(context, run, result)
        except RateLimitBackpressure as exc:
            self.log.info("rate limit: deferring %.1fs instead of holding a worker slot", exc.wait_seconds)
            self.defer(
                trigger=TimeDeltaTrigger(timedelta(seconds=exc.wait_seconds)),
                method_name="execute_complete",
            )
        retries = getattr(self.hook, "retry_count", 0)
        if mirrored is not None:
            result = {**result, "mirror": mirrored}
        return {**result, "correlation_id": run.correlation_id, "retries": retries}

    # --- the mirror to the tenant's own ticketing ----------------------------------------------
    def mirrors(self, context: Any) -> bool:
        """Whether this step is mirrored: an RT step of a support or SOC DAG, for a tenant whose
        ``tenants.yaml`` ticketing is not RT only, and ``mirror`` not switched off."""
        from include.connectors.ticketing.mirror import mirrored_domain

        if not self.mirror or self.system != "request_tracker":
            return False
        task = context.get("task")
        dag = getattr(task, "dag", None)
        if dag is None or not mirrored_domain(domain_tags(dag)):
            return False
        return tenant_ticketing(self.tenant).mirrored

    def mirror_call(
        self, mirror: TicketMirror, run: RunContext, result: Mapping[str, Any]
    ) -> MirrorResult | None:
        """This step on the tenant's own ticketing; ``None`` when the step has nothing to mirror.

        :param mirror: the tenant's mirror.
        :param run: the run.
        :param result: what the RT call returned.
        """
        return None

    def mirror_step(self, context: Any, run: RunContext, result: Mapping[str, Any]) -> dict[str, Any] | None:
        """Mirror the step; a failure is logged, recorded and returned, never raised (rate-limit
        backpressure is raised: the step defers)."""
        from include.connectors.ticketing.mirror import CREATE_CAPABILITY, UPDATE_CAPABILITY, TicketMirror

        try:
            if not self.mirrors(context):
                return None
            mirror = TicketMirror(self.tenant, run)
            outcome = self.mirror_call(mirror, run, result)
        except RateLimitBackpressure:
            raise
        except Exception as exc:
            return self.mirror_failed(context, result, exc)
        if outcome is None:
            return None
        rt_ticket = str(result.get("ticket_id") or result.get("id") or "")
        self.log.info(
            "mirrored %s of RT ticket %s to Jira %s (project %s, created %s)",
            self.operation,
            rt_ticket,
            outcome.issue,
            outcome.project,
            outcome.created,
        )
        audit_side_effect(
            context,
            system=outcome.system,
            operation=f"mirror_{self.operation}",
            object_id=outcome.entry_id or outcome.issue,
            tenant=self.tenant,
            created=outcome.created,
            ticket_id=rt_ticket,
            issue=outcome.issue,
            project=outcome.project,
            capability=CREATE_CAPABILITY if self.operation == "create_ticket" else UPDATE_CAPABILITY,
        )
        return outcome.as_xcom()

    def mirror_failed(self, context: Any, result: Mapping[str, Any], exc: Exception) -> dict[str, Any]:
        """Log and record a failed mirror; the RT side is kept and the step goes on."""
        from include.connectors.ticketing.mirror import MIRROR_FAILED

        rt_ticket = str(result.get("ticket_id") or result.get("id") or "")
        try:
            ticketing = tenant_ticketing(self.tenant)
            system, project = ticketing.system, ticketing.project or ""
        except Exception:
            system, project = "unknown", ""
        error = f"{type(exc).__name__}: {exc}"[:500]
        self.log.error(
            "ticket mirror FAILED: %s of RT ticket %s to %s project %r of tenant %r: %s. The RT ticket is "
            "kept and this step goes on; the next step or a re-run of this one mirrors what is missing.",
            self.operation,
            rt_ticket,
            system,
            project,
            self.tenant,
            error,
        )
        details = {
            "system": system,
            "project": project,
            "operation": self.operation,
            "ticket_id": rt_ticket,
            "error": error,
        }
        try:
            audit_emit(
                task_event(context, MIRROR_FAILED, details=details, tenant=self.tenant, subject=rt_ticket)
            )
        except Exception:
            self.log.exception("the audit record of the failed mirror could not be written")
        return {"system": system, "project": project, "status": "failed", "error": error}

    def audit(self, context: Any, result: Mapping[str, Any]) -> None:
        """Record the side effect (``side_effect``); a found-not-created object is recorded too."""
        ticket_id = str(result.get("ticket_id") or result.get("id") or "")
        object_id = str(result.get("entry_id") or ticket_id)
        extra: dict[str, Any] = {"ticket_id": ticket_id} if ticket_id else {}
        if "status" in result and self.operation in ("create_ticket", "update"):
            extra["status"] = result["status"]
        if self.operation == "create_ticket":
            extra["queue"] = str(result.get("queue", ""))
            extra["summary"] = str(getattr(self, "subject", ""))[:200]
        extra["capability"] = "ticket-create" if self.operation == "create_ticket" else "ticket-update"
        audit_side_effect(
            context,
            system=self.system,
            operation=self.operation,
            object_id=object_id,
            tenant=self.tenant,
            created=result.get("created") if isinstance(result.get("created"), bool) else None,
            **extra,
        )

    def execute_complete(self, context: Any, event: Any = None) -> dict[str, Any]:
        """Resume after a rate-limit deferral: the same call again (it is idempotent)."""
        return self.execute(context)

    def key(self, run: RunContext) -> str:
        """The idempotency key of this step's side effect (from ``idempotency_basis`` if given)."""
        if self.idempotency_basis:
            run = replace(run, run_id=f"basis:{self.idempotency_basis}")
        return idempotency_key(run, self.operation)


class CreateTicketOperator(TicketOperator):
    """Open a ticket once per run (or per ``idempotency_basis``).

    XCom: ``id``, ``status``, ``queue``, ``created`` (False if it existed already).

    :param ticket_queue: the queue (RT) or project key (Jira) (templated). Not ``queue``: that is
        BaseOperator's executor queue.
    :param subject: the ticket's subject (templated).
    :param body: the first message (templated).
    :param fields: custom field values by name (templated).
    """

    template_fields: Sequence[str] = (
        "tenant",
        "ticket_queue",
        "subject",
        "body",
        "fields",
        "idempotency_basis",
    )
    operation = "create_ticket"

    def __init__(
        self,
        *,
        ticket_queue: str,
        subject: str,
        body: str,
        fields: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.ticket_queue = ticket_queue
        self.subject = subject
        self.body = body
        self.fields = dict(fields or {})

    def call(self, run: RunContext) -> dict[str, Any]:
        ticket = self.hook.create_ticket(
            queue=self.ticket_queue,
            subject=self.subject,
            body=self.body,
            idempotency_key=self.key(run),
            correlation_id=run.correlation_id,
            fields=self.fields,
        )
        self.created_ticket = ticket
        return ticket.as_xcom()

    def mirror_call(
        self, mirror: TicketMirror, run: RunContext, result: Mapping[str, Any]
    ) -> MirrorResult | None:
        ticket = getattr(self, "created_ticket", None)
        if not isinstance(ticket, Ticket):
            ticket = self.hook.get_ticket(str(result["id"]))
        issue = mirror.create(ticket, self.body)
        return mirror.result(issue.id, issue.created)


class CommentTicketOperator(TicketOperator):
    """Comment on a ticket once: XCom ``ticket_id``, ``entry_id``, ``created``.

    :param ticket_id: the ticket (templated).
    :param body: the comment's text (templated).
    :param public: a reply the requester sees, rather than an internal comment.
    :param skip_without_ticket: skip, rather than fail, when ``ticket_id`` renders empty: for a
        comment on a ticket the run may never have opened (the SOC failure comment after the
        read-only step failed: nothing to tell, and no ticket to tell it on). Off by default: an
        empty ticket id is otherwise a bug to see.
    """

    template_fields: Sequence[str] = ("tenant", "ticket_id", "body", "idempotency_basis")
    operation = "comment"

    def __init__(
        self,
        *,
        ticket_id: str,
        body: str,
        public: bool = False,
        skip_without_ticket: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.ticket_id = ticket_id
        self.body = body
        self.public = public
        self.skip_without_ticket = skip_without_ticket

    def execute(self, context: Any) -> dict[str, Any]:
        if self.skip_without_ticket and not str(self.ticket_id or "").strip():
            raise AirflowSkipException(f"{self.task_id}: the run has no ticket to comment on")
        return super().execute(context)

    def call(self, run: RunContext) -> dict[str, Any]:
        post = self.hook.reply if self.public else self.hook.comment
        entry = post(str(self.ticket_id), self.body, idempotency_key=self.key(run))
        return {"ticket_id": entry.ticket_id, "entry_id": entry.entry_id, "created": entry.created}

    def mirror_call(
        self, mirror: TicketMirror, run: RunContext, result: Mapping[str, Any]
    ) -> MirrorResult | None:
        return mirror.comment(
            str(self.ticket_id),
            self.body,
            idempotency_key=self.key(run),
            public=self.public,
            read_rt=self.hook.get_ticket,
        )


class AttachEvidenceOperator(TicketOperator):
    """Attach a text file to a ticket once: XCom ``ticket_id``, ``entry_id``, ``created``.

    :param ticket_id: the ticket (templated).
    :param filename: the attachment's file name (templated).
    :param content: the file's text, sent UTF-8 encoded (templated).
    :param content_type: its MIME type.
    """

    template_fields: Sequence[str] = ("tenant", "ticket_id", "filename", "content", "idempotency_basis")
    operation = "attach"

    def __init__(
        self, *, ticket_id: str, filename: str, content: str, content_type: str = "text/plain", **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.ticket_id = ticket_id
        self.filename = filename
        self.content = content
        self.content_type = content_type

    def call(self, run: RunContext) -> dict[str, Any]:
        entry = self.hook.attach(
            str(self.ticket_id),
            filename=self.filename,
            content=self.content.encode(),
            content_type=self.content_type,
            idempotency_key=self.key(run),
        )
        return {"ticket_id": entry.ticket_id, "entry_id": entry.entry_id, "created": entry.created}

    def mirror_call(
        self, mirror: TicketMirror, run: RunContext, result: Mapping[str, Any]
    ) -> MirrorResult | None:
        return mirror.attach(
            str(self.ticket_id),
            filename=self.filename,
            content=self.content.encode(),
            content_type=self.content_type,
            idempotency_key=self.key(run),
            read_rt=self.hook.get_ticket,
        )


class UpdateTicketOperator(TicketOperator):
    """Set custom fields and/or the status (a transition); both are naturally idempotent.

    XCom: the ticket as it now is (``id``, ``status``, ``queue``, ``created``).

    :param ticket_id: the ticket (templated).
    :param fields: custom field values by name (templated).
    :param status: the status to move to (templated).
    :raises ValueError: if neither ``fields`` nor ``status`` is given.
    """

    template_fields: Sequence[str] = ("tenant", "ticket_id", "fields", "status", "idempotency_basis")
    operation = "update"

    def __init__(
        self,
        *,
        ticket_id: str,
        fields: Mapping[str, str] | None = None,
        status: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not fields and not status:
            raise ValueError(f"{kwargs.get('task_id')}: give fields, status or both")
        self.ticket_id = ticket_id
        self.fields = dict(fields or {})
        self.status = status

    def call(self, run: RunContext) -> dict[str, Any]:
        # Each setter answers with the ticket as it now is; an unknown ticket fails in the first one.
        if self.fields:
            ticket = self.hook.set_fields(str(self.ticket_id), self.fields)
        if self.status:
            ticket = self.hook.set_status(str(self.ticket_id), self.status)
        return ticket.as_xcom()

    def mirror_call(
        self, mirror: TicketMirror, run: RunContext, result: Mapping[str, Any]
    ) -> MirrorResult | None:
        from include.connectors.ticketing.mirror import RESOLVED

        # Fields are the MSSP's (its queue's custom fields); a resolve is the customer's business too.
        if not self.status or self.status.casefold() != RESOLVED:
            return None
        return mirror.resolve(str(self.ticket_id), read_rt=self.hook.get_ticket)


class BulkChangeRefused(AirflowFailException):
    """A bulk change that would touch what it may not: nothing was written. Not retried."""


def bulk_field_problems(fields: Mapping[str, Any], scope: BulkUpdateScope) -> list[str]:
    """Why each of ``fields`` may not be bulk-set (reserved, or not in the allow-list); empty if all may.

    :param fields: the change's custom field values by name.
    :param scope: the allow-list (``bulk_update`` of ``include/policies/support_triage.yaml``).
    """
    allowed = ", ".join(scope.fields) or "none"
    problems = []
    for name in fields:
        if name in RESERVED_FIELDS:
            problems.append(
                f"field {name!r} is reserved for the orchestrator ({', '.join(RESERVED_FIELDS)} are "
                "never bulk-updated)"
            )
        elif name not in scope.fields:
            problems.append(
                f"field {name!r} is not in the bulk update allow-list ({allowed}: bulk_update.fields "
                "of include/policies/support_triage.yaml)"
            )
    return problems


def bulk_ticket_problems(
    ticket_ids: Sequence[str], tickets: Mapping[str, Ticket], *, tenant: str, scope: BulkUpdateScope
) -> list[str]:
    """Why each ticket may not be bulk-updated for ``tenant`` (missing, other queue, other tenant).

    :param ticket_ids: the change's tickets.
    :param tickets: the tickets as the ticketing system returned them, by id.
    :param tenant: the run's tenant.
    :param scope: the queue a bulk update may touch.
    """
    problems = []
    for ticket_id in ticket_ids:
        ticket = tickets.get(str(ticket_id))
        owner = ticket.fields.get(TicketingHook.TENANT_FIELD) if ticket else None
        if ticket is None:
            problems.append(f"ticket {ticket_id}: not found")
        elif ticket.queue != scope.queue:
            problems.append(f"ticket {ticket_id}: in queue {ticket.queue!r}, not {scope.queue!r}")
        elif owner != tenant:
            problems.append(f"ticket {ticket_id}: of tenant {owner or 'none'!r}, not {tenant!r}")
    return problems


def check_bulk_change(
    hook: TicketingHook,
    ticket_ids: Sequence[str],
    fields: Mapping[str, Any],
    *,
    tenant: str,
    scope: BulkUpdateScope | None = None,
) -> None:
    """Refuse a bulk change before any write: every field allowed, every ticket (read from the
    ticketing system) in the scope's queue and of ``tenant``. One refusal lists every problem.

    :param hook: the ticketing hook (reads only).
    :param ticket_ids: the change's tickets, all of them (not one batch) so a mixed list writes nothing.
    :param fields: the change's custom field values.
    :param tenant: the run's tenant.
    :param scope: the allow-list and queue; the deployed policy's by default.
    :raises BulkChangeRefused: naming each field and ticket that may not be changed.
    """
    scope = scope or load_rules().bulk_update
    ids = [str(t) for t in ticket_ids]
    where = f"bulk update of {len(ids)} ticket(s) for tenant {tenant!r}"
    problems = bulk_field_problems(fields, scope)
    if problems:  # refused without reading a ticket
        named = ", ".join(ids[:10]) + (f" and {len(ids) - 10} more" if len(ids) > 10 else "")
        raise BulkChangeRefused(f"{where} refused, nothing written (tickets {named}): " + "; ".join(problems))
    problems = bulk_ticket_problems(ids, hook.get_tickets(ids), tenant=tenant, scope=scope)
    if problems:
        raise BulkChangeRefused(f"{where} refused, nothing written: " + "; ".join(problems))


class BulkUpdateTicketsOperator(TicketOperator):
    """Update a batch of tickets: fields and/or status, and optionally one comment per ticket.

    Meant to be mapped over batches (``.partial(...).expand(ticket_ids=...)``) so a bulk change of
    hundreds of tickets runs as a few tasks in the support pool, each going through the shared
    rate limit (and the connector's bulk bucket). Every call is idempotent (fields and status are
    set, the comment is keyed by the change and the ticket), so a batch resumed after a rate-limit
    deferral or retried after a failure simply runs again from its first ticket; nothing is applied
    twice. XCom: ``ticket_ids``, ``updated``, ``comments_created``.

    Bounded (issue 19): before its first write the batch is checked with :func:`check_bulk_change`
    (fields from the allow-list, never a reserved one; every ticket in queue ``support`` and of the
    run's tenant, read back from the ticketing system); a refusal fails the task with nothing
    written. The DAG checks the whole change the same way before the first batch starts.

    :param ticket_ids: the batch, or one ticket id (templated).
    :param fields: custom field values by name, from the allow-list (templated).
    :param status: the status to move to (templated).
    :param comment: a comment to post on each ticket (templated).
    """

    template_fields: Sequence[str] = (
        "tenant",
        "ticket_ids",
        "fields",
        "status",
        "comment",
        "idempotency_basis",
    )
    operation = "bulk_update"
    bulk = True

    def __init__(
        self,
        *,
        ticket_ids: Sequence[str] | str,
        fields: Mapping[str, str] | None = None,
        status: str | None = None,
        comment: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.ticket_ids = ticket_ids
        self.fields = dict(fields or {})
        self.status = status
        self.comment = comment
        # Field names are never templated (Jinja renders values): refused here, before any run.
        problems = bulk_field_problems(self.fields, load_rules().bulk_update) if self.fields else []
        if problems:
            raise ValueError(f"{self.task_id}: " + "; ".join(problems))

    def call(self, run: RunContext) -> dict[str, Any]:
        ids = [
            str(t) for t in (self.ticket_ids if not isinstance(self.ticket_ids, str) else [self.ticket_ids])
        ]
        check_bulk_change(self.hook, ids, self.fields, tenant=self.tenant)
        commented = 0
        for ticket_id in ids:
            self.hook.update(ticket_id, fields=self.fields, status=self.status)
            if self.comment:
                key = idempotency_key(
                    replace(run, run_id=f"basis:{self.idempotency_basis}:{ticket_id}"), "comment"
                )
                commented += int(self.hook.comment(ticket_id, self.comment, idempotency_key=key).created)
        return {"ticket_ids": ids, "updated": len(ids), "comments_created": commented}

    def audit(self, context: Any, result: Mapping[str, Any]) -> None:
        audit_side_effect(
            context,
            system=self.system,
            operation=self.operation,
            object_id=",".join(result["ticket_ids"])[:500],
            tenant=self.tenant,
            capability="ticket-update",
            updated=result["updated"],
            comments_created=result["comments_created"],
        )
