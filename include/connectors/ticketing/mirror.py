"""Mirror the MSSP's tickets to a customer's own Jira Service Management project (issue 22, item 4).

The ticket in Request Tracker stays the MSSP's own record; a tenant whose ``tenants.yaml`` names
``ticketing: {system: jira, project: KEY}`` also gets each support and SOC ticket in its project:
created, commented, with the evidence attached, resolved. :class:`TicketMirror` does that through
the Jira adapter (:class:`~include.connectors.ticketing.jira.JiraServiceManagementHook`):

- **the tenant's own credentials**: :class:`TenantJiraHook` reads its Airflow connection (site,
  account email, API token, rate-limit extras) from the tenant's own AWS account, as the step's
  capability: ``orchestrator/<tenant>/ticket-create/jira`` to create, ``.../ticket-update/jira`` to
  comment, attach and resolve; never from a connection id a caller names. The project comes from
  ``tenants.yaml`` only, so a run of tenant A cannot name tenant B's project or secret.
- **the tenant's limits**: the hook's connection id is ``jira:<tenant>``, so its rate-limit buckets
  (the connector base's shared limiter) are that customer's site's, whatever other tenants do.
- **idempotent**: the mirrored issue carries a key label derived from the tenant and the RT ticket
  (:func:`mirror_key`) plus the RT ticket's correlation id (``correlation:<id>``); every later step,
  re-run or retry finds it by that label and never creates a second one. Comments and attachments
  carry the RT step's own idempotency key, as in RT. A comment, attachment or resolve whose issue
  is missing (its create failed while Jira was down) creates it first: the mirror heals on the
  next step or re-run.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property, partial
from typing import Any

from include.connectors.aws import TenantBound, tenant_connection
from include.connectors.context import RunContext
from include.connectors.errors import PermanentError
from include.connectors.idempotency import KEY_PREFIX
from include.connectors.ticketing.interface import Ticket, TicketEntry, TicketingHook
from include.connectors.ticketing.jira import JiraServiceManagementHook
from include.policies.tenants import Ticketing, tenant_ticketing

CREDENTIAL_LEAF = "jira"
CREATE_CAPABILITY = "ticket-create"
UPDATE_CAPABILITY = "ticket-update"
CAPABILITIES = (CREATE_CAPABILITY, UPDATE_CAPABILITY)
# The workflows whose tickets are mirrored (issue 22: "support and SOC workflows").
MIRRORED_DOMAINS = frozenset({"support", "soc"})
# The RT statuses a mirror follows; "resolved" walks the tenant's resolve_path.
RESOLVED = "resolved"
# The audit record of a mirror that failed (the RT side was kept): docs/audit.md, "Records".
MIRROR_FAILED = "ticket.mirror_failed"


class MirrorCredentialError(PermanentError):
    """The tenant's Jira credential is missing or unusable: refused before any Jira call."""


def mirror_key(tenant: str, rt_ticket_id: str) -> str:
    """The mirrored issue's idempotency label: one per tenant and RT ticket (``idem-<24 hex>``)."""
    material = "\x1f".join(("ticket-mirror", tenant, "request_tracker", str(rt_ticket_id)))
    return KEY_PREFIX + hashlib.sha256(material.encode()).hexdigest()[:24]


class TenantJiraHook(TenantBound, JiraServiceManagementHook):
    """The Jira adapter on one tenant's own site, with the credential of one capability.

    :param capability: ``ticket-create`` or ``ticket-update``: whose secret (and role, in the
        tenant's account) holds the credential.
    :param tenant: the customer tenant; the run must be this tenant's.
    :param run_context: the run making the calls (session tags, the audit's correlation id).
    :param aws_conn_id: the platform's base AWS connection (to assume the capability role).
    """

    hook_name = "Jira Service Management (per tenant)"

    def __init__(
        self, *, capability: str, tenant: str, run_context: RunContext, aws_conn_id: str = "aws_default"
    ) -> None:
        if capability not in CAPABILITIES:
            raise ValueError(
                f"jira mirror: capability {capability!r} is not one of {', '.join(CAPABILITIES)}"
            )
        super().__init__(f"jira:{tenant}", tenant=tenant)
        self.capability = capability
        self.given_run_context = run_context
        self.aws_conn_id = aws_conn_id

    @property
    def secret_id(self) -> str:
        return f"orchestrator/{self.tenant}/{self.capability}/{CREDENTIAL_LEAF}"

    @cached_property
    def connection(self) -> Any:
        """The tenant's Jira connection, read as the capability's role in the tenant's own account."""
        read: dict[str, Any] = {
            "tenant": self.tenant,
            "secret_id": self.secret_id,
            "conn_id": self.conn_id,
            "run_context": self.run_context,
            "aws_conn_id": self.aws_conn_id,
            "error": partial(MirrorCredentialError, system=self.system, operation="credential"),
            "system": "Jira",
        }
        # Each capability spelled out: the capability-calls policy check follows literals only.
        if self.capability == CREATE_CAPABILITY:
            return tenant_connection("ticket-create", **read)
        return tenant_connection("ticket-update", **read)


@dataclass(frozen=True)
class MirrorResult:
    """What one mirrored step did: the Jira issue, and whether this call created the object."""

    system: str
    project: str
    issue: str
    created: bool
    entry_id: str | None = None

    def as_xcom(self) -> dict[str, Any]:
        result: dict[str, Any] = {
            "system": self.system,
            "project": self.project,
            "issue": self.issue,
            "created": self.created,
        }
        if self.entry_id is not None:
            result["entry_id"] = self.entry_id
        return result


HookFactory = Callable[[str], JiraServiceManagementHook]


class TicketMirror:
    """The mirror of one tenant's RT tickets in its Jira project, for one run.

    :param tenant: the tenant (its ``ticketing`` of ``tenants.yaml`` says where).
    :param run: the run making the calls.
    :param hook_factory: capability -> hook; default :class:`TenantJiraHook` (tests pass their own).
    :param ticketing: the tenant's ticketing; default from ``tenants.yaml``.
    :raises ValueError: the tenant is not a Jira tenant.
    """

    def __init__(
        self,
        tenant: str,
        run: RunContext,
        *,
        hook_factory: HookFactory | None = None,
        ticketing: Ticketing | None = None,
    ) -> None:
        self.tenant = tenant
        self.run = run
        self.ticketing = ticketing or tenant_ticketing(tenant)
        if self.ticketing.system != "jira" or not self.ticketing.project:
            raise ValueError(f"tenant {tenant!r} has no Jira project to mirror to (tenants.yaml ticketing)")
        self.project: str = self.ticketing.project
        self._factory = hook_factory or self._tenant_hook
        self._hooks: dict[str, JiraServiceManagementHook] = {}

    def _tenant_hook(self, capability: str) -> JiraServiceManagementHook:
        return TenantJiraHook(capability=capability, tenant=self.tenant, run_context=self.run)

    def hook(self, capability: str) -> JiraServiceManagementHook:
        """The tenant's Jira hook with ``capability``'s credential (one per capability and mirror)."""
        if capability not in self._hooks:
            hook = self._factory(capability)
            if hook.tenant != self.tenant:
                raise ValueError(f"jira mirror of tenant {self.tenant!r} was given a hook of {hook.tenant!r}")
            self._hooks[capability] = hook
        return self._hooks[capability]

    @property
    def retries(self) -> int:
        return sum(int(getattr(hook, "retry_count", 0)) for hook in self._hooks.values())

    def result(self, issue: str, created: bool, entry_id: str | None = None) -> MirrorResult:
        return MirrorResult("jira", self.project, issue, created, entry_id)

    # --- the issue ------------------------------------------------------------------------------
    def find(self, rt_ticket_id: str) -> Ticket | None:
        """The mirrored issue of an RT ticket, if it exists."""
        return self.hook(UPDATE_CAPABILITY).find_by_key(self.project, mirror_key(self.tenant, rt_ticket_id))

    def create(self, rt_ticket: Ticket, body: str) -> Ticket:
        """The mirrored issue of ``rt_ticket``: found by its key label, or created once.

        :param rt_ticket: the MSSP's ticket as RT returned it (its correlation id is kept).
        :param body: the issue's description.
        """
        correlation = rt_ticket.fields.get(TicketingHook.CORRELATION_FIELD) or self.run.correlation_id
        return self.hook(CREATE_CAPABILITY).create_ticket(
            queue=self.project,
            subject=rt_ticket.subject or f"Ticket {rt_ticket.id}",
            body=f"{body}\n\nMirrored from the MSSP's ticket #{rt_ticket.id} (correlation {correlation}).",
            idempotency_key=mirror_key(self.tenant, rt_ticket.id),
            correlation_id=correlation,
        )

    def ensure(self, rt_ticket_id: str, read_rt: Callable[[str], Ticket]) -> Ticket:
        """The mirrored issue of an RT ticket; created from the RT ticket when it is missing."""
        found = self.find(rt_ticket_id)
        if found is not None:
            return found
        rt_ticket = read_rt(rt_ticket_id)
        return self.create(rt_ticket, f"{rt_ticket.subject}")

    # --- steps ----------------------------------------------------------------------------------
    def comment(
        self,
        rt_ticket_id: str,
        body: str,
        *,
        idempotency_key: str,
        public: bool,
        read_rt: Callable[[str], Ticket],
    ) -> MirrorResult:
        issue = self.ensure(rt_ticket_id, read_rt)
        hook = self.hook(UPDATE_CAPABILITY)
        post = hook.reply if public else hook.comment
        entry: TicketEntry = post(issue.id, body, idempotency_key=idempotency_key)
        return self.result(issue.id, entry.created, entry.entry_id)

    def attach(
        self,
        rt_ticket_id: str,
        *,
        filename: str,
        content: bytes,
        content_type: str,
        idempotency_key: str,
        read_rt: Callable[[str], Ticket],
    ) -> MirrorResult:
        issue = self.ensure(rt_ticket_id, read_rt)
        entry = self.hook(UPDATE_CAPABILITY).attach(
            issue.id,
            filename=filename,
            content=content,
            content_type=content_type,
            idempotency_key=idempotency_key,
        )
        return self.result(issue.id, entry.created, entry.entry_id)

    def resolve(self, rt_ticket_id: str, *, read_rt: Callable[[str], Ticket]) -> MirrorResult:
        """Walk the tenant's ``resolve_path`` one transition at a time, from wherever the issue is (a
        no-op once it is in the last status). A transition refused because another run of the same
        request moved the issue meanwhile is read again, not reported."""
        issue = self.ensure(rt_ticket_id, read_rt)
        hook = self.hook(UPDATE_CAPABILITY)
        path = [step.casefold() for step in self.ticketing.resolve_path]
        status, moved = issue.status, False
        for attempt in range(2 * len(path) + 1):
            if status.casefold() == path[-1]:
                return self.result(issue.id, moved)
            here = path.index(status.casefold()) if status.casefold() in path else -1
            step = self.ticketing.resolve_path[here + 1]
            try:
                status = hook.set_status(issue.id, step).status
                moved = True
            except PermanentError:
                if attempt == 2 * len(path):
                    raise
                status = hook.get_ticket(issue.id).status
        if status.casefold() == path[-1]:
            return self.result(issue.id, moved)
        raise PermanentError(
            f"{issue.id} is {status!r}, not {self.ticketing.resolve_path[-1]!r}, after walking "
            f"{' -> '.join(self.ticketing.resolve_path)} (tenants.yaml resolve_path of {self.tenant!r})",
            system="jira",
            operation="resolve",
        )


def mirrored_domain(domains: list[str]) -> bool:
    """Whether a DAG of these domain tags mirrors its tickets (support and SOC)."""
    return len(domains) == 1 and domains[0] in MIRRORED_DOMAINS
