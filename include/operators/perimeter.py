"""Perimeter block with an expiry: inspect (read-only), block (privileged), wait, unblock (privileged).

All four run in the tenant's own AWS account through :class:`~include.connectors.perimeter.PerimeterHook`:
inspection and the wait as ``orchestrator-perimeter-inspect`` (Get/List only), the block and its
removal as ``orchestrator-perimeter-block``, which acts only on the verified approval of exactly this
indicator, tenant and expiry (:class:`~include.approvals.verify.RequiresApproval`; the gate binds
``artifact_params=("indicator", "tenant", "expires_at")``). Block and removal are recorded on the audit
trail as side effects (indicator, IP set, expiry, role, correlation id).

The wait holds no worker: :class:`WaitForBlockExpiryOperator` defers to a
:class:`~airflow.providers.standard.triggers.temporal.DateTimeTrigger` at the recorded expiry and,
when it wakes, reads the record again: a later expiry (a re-run extended the block) means wait again,
or, if that is beyond what this run may still wait (its ``dagrun_timeout``, or its SLA, which counts
from the expiry it asked for: :mod:`include.workflows.holds`), hand the removal over to the run that
set it.

The longest block (:func:`max_block_duration`) follows from the SOC policy: the run must outlast its
block, so it is the domain's ``dagrun_timeout`` for the workflow's kind, less its approval chain and
the steps after the wait (:data:`TAIL`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any, Final, TypeVar

from airflow.sdk import BaseOperator

from include.approvals.verify import RequiresApproval
from include.audit.emit import side_effect as audit_side_effect
from include.operators.failing import failing_fast
from include.policies.loader import WorkflowKind

if TYPE_CHECKING:
    from include.connectors.perimeter import PerimeterHook

T = TypeVar("T")
DOMAIN: Final = "soc"
KIND: Final[WorkflowKind] = "infrastructure_change"
ACTION: Final = "perimeter-block"
# What a run needs after its wait ends: the removal, the evidence, the resolution (each a few seconds,
# each bounded by STEP_TIMEOUT), with room to spare.
TAIL: Final = timedelta(minutes=20)
STEP_TIMEOUT: Final = timedelta(minutes=5)


def max_block_duration(domain: str = DOMAIN, kind: WorkflowKind = KIND) -> timedelta:
    """The longest block a run may hold: ``dagrun_timeout`` less the approval chain and :data:`TAIL`.

    :param domain: the workflow's domain (``domains.yaml``).
    :param kind: the workflow's kind (``fast_path`` or ``infrastructure_change``).
    """
    from include.policies.approvals import load_approvals
    from include.policies.loader import load_domain_policy

    limits = load_domain_policy().domain(domain).timeouts[kind]
    rule = load_approvals().rule(domain, ACTION)
    return limits.dagrun_timeout - rule.max_steps * rule.ladder.timeout - TAIL


def utcnow() -> datetime:
    return datetime.now(UTC)


class _PerimeterStep(BaseOperator):
    """Base of the perimeter steps: the indicator, its tenant, its expiry, and the step's hook.

    :param tenant: the tenant whose AWS account holds the block lists (templated).
    :param indicator: the IP address or CIDR to block (templated).
    :param expires_at: when the block ends, ISO 8601 with a time zone (templated).
    :param aws_conn_id: the Airflow AWS connection of the platform's base credentials.
    """

    template_fields: Sequence[str] = ("tenant", "indicator", "expires_at")
    capability = ""  # each step declares its own

    def __init__(
        self,
        *,
        tenant: str,
        indicator: str,
        expires_at: str,
        aws_conn_id: str = "aws_default",
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("execution_timeout", STEP_TIMEOUT)
        super().__init__(**kwargs)
        self.tenant = tenant
        self.indicator = indicator
        self.expires_at = expires_at
        self.aws_conn_id = aws_conn_id

    @cached_property
    def hook(self) -> PerimeterHook:
        from include.connectors.perimeter import PerimeterHook

        return PerimeterHook(self.aws_conn_id, capability=self.capability, tenant=self.tenant)

    def failing_fast(self, step: Callable[[], T]) -> T:
        """Run ``step`` (:func:`include.operators.failing.failing_fast`); a permanent connector error,
        a :class:`PerimeterError` (bad indicator or expiry, unknown tenant, no block list) or a
        policy error fails the task at once: a retry cannot fix the input."""
        from include.connectors.perimeter import PerimeterError
        from include.policies.loader import PolicyError

        return failing_fast(self.task_id, step, PerimeterError, PolicyError)

    def checked_input(self) -> tuple[str, datetime]:
        """The normalised network and the expiry, checked now (tenant, indicator, expiry in range)."""
        from include.connectors.perimeter import check_expiry, check_indicator
        from include.policies.tenants import tenant_ids

        def check() -> tuple[str, datetime]:
            if self.tenant not in tenant_ids():
                from include.connectors.perimeter import PerimeterError

                raise PerimeterError(
                    f"tenant {self.tenant!r} is not a customer tenant (known: {', '.join(tenant_ids())})"
                )
            network = check_indicator(self.indicator)
            expiry = check_expiry(self.expires_at, now=utcnow(), maximum=max_block_duration())
            return str(network), expiry

        return self.failing_fast(check)


class InspectIndicatorOperator(_PerimeterStep):
    """Check the input, then what blocking the indicator would change, for the approval question.

    Read-only role. Refuses a malformed or too-wide indicator, a private range, a domain, an expiry in
    the past or beyond :func:`max_block_duration`, an unknown tenant: before any AWS call. Returns the
    block plan, the checked ``expires_at`` and its ``markdown``.

    :param tenant: the tenant whose AWS account holds the block lists (templated).
    :param indicator: the IP address or CIDR to block (templated).
    :param expires_at: when the block ends, ISO 8601 with a time zone (templated).
    :param aws_conn_id: the Airflow AWS connection of the platform's base credentials.
    """

    capability = "perimeter-inspect"

    def execute(self, context: Any) -> dict[str, Any]:
        _, expiry = self.checked_input()
        plan = self.failing_fast(lambda: self.hook.plan_block(self.indicator))
        markdown = plan.markdown(expiry)
        self.log.info("%s", markdown)
        return {**plan.as_xcom(), "expires_at": expiry.isoformat(), "markdown": markdown}


class BlockIndicatorOperator(RequiresApproval, _PerimeterStep):
    """Add the indicator to the tenant's WAF block list until its expiry (privileged: needs the approval).

    Acts only on a verified approval of exactly this indicator, tenant and expiry. The input is
    checked again (the approval may have taken long enough for the expiry to pass). Returns what the
    hook did (:meth:`~include.connectors.perimeter.PerimeterHook.block`).

    :param tenant: the tenant whose AWS account holds the block lists (templated).
    :param indicator: the IP address or CIDR to block (templated).
    :param expires_at: when the block ends, ISO 8601 with a time zone (templated).
    :param aws_conn_id: the Airflow AWS connection of the platform's base credentials.
    """

    capability = "perimeter-block"
    artifact_fields = {"indicator": "indicator", "tenant": "tenant", "expires_at": "expires_at"}

    def act(self, context: Any) -> dict[str, Any]:
        _, expiry = self.checked_input()
        result = self.failing_fast(lambda: self.hook.block(self.indicator, expiry))
        self.log.info(
            "%s %s in %s until %s",
            "blocked" if result["added"] else "already blocked",
            result["indicator"],
            result["ip_set"],
            result["expires_at"],
        )
        audit_side_effect(
            context,
            system="aws",
            operation="block-indicator",
            object_id=result["indicator"],
            tenant=self.tenant,
            created=result["added"],
            capability=self.capability,
            role_arn=self.hook.role_arn,
            ip_set_arn=result["ip_set_arn"],
            expires_at=result["expires_at"],
            previous_expires_at=result["previous_expires_at"],
            extended=result["extended"],
            correlation_id=result["correlation_id"],
        )
        return result


class WaitForBlockExpiryOperator(_PerimeterStep):
    """Wait, deferred (no worker held), until the block's recorded expiry; again if it was extended.

    Read-only role. Returns ``outcome``: ``expired`` (time to remove), ``no-block`` (nothing recorded:
    removed already), or ``handed-over`` (a later run extended the block beyond what this run may
    wait: that run removes it), with the recorded ``expires_at`` and the ``run_id`` that set it.

    :param tenant: the tenant whose AWS account holds the block lists (templated).
    :param indicator: the IP address or CIDR blocked (templated).
    :param expires_at: the expiry this run asked for, ISO 8601 (templated; the record decides).
    :param aws_conn_id: the Airflow AWS connection of the platform's base credentials.
    """

    capability = "perimeter-inspect"

    def execute(self, context: Any) -> dict[str, Any] | None:
        return self.wait_or_finish(context)

    def execute_complete(self, context: Any, event: Any = None) -> dict[str, Any] | None:
        """Woken by the trigger: read the record again."""
        return self.wait_or_finish(context)

    def latest_wake(self, context: Any) -> datetime | None:
        """The last moment this run may wake and still finish in time, less :data:`TAIL`.

        In time: before its hard end (start + ``dagrun_timeout``) and before its SLA deadline, which
        counts from the expiry it asked for (the DAG's ``hold_until``, :mod:`include.workflows.holds`):
        an extension by another run must not make this run late.
        """
        from include.policies.loader import load_domain_policy
        from include.workflows.holds import hold_end

        limits = []
        dag_run = context.get("dag_run")
        start = getattr(dag_run, "start_date", None)
        timeout = getattr(getattr(self, "dag", None), "dagrun_timeout", None)
        if start is not None and timeout is not None:
            limits.append(start.astimezone(UTC) + timeout)
        asked = hold_end({"expires_at": self.expires_at}, "expires_at")
        if asked is not None:
            limits.append(asked + load_domain_policy().domain(DOMAIN).sla[KIND])
        return min(limits) - TAIL if limits else None

    def wait_or_finish(self, context: Any) -> dict[str, Any] | None:
        from airflow.providers.standard.triggers.temporal import DateTimeTrigger

        recorded = self.failing_fast(lambda: self.hook.expiry(self.indicator))
        if recorded is None:
            self.log.info("no expiry recorded for %s: the block was removed already", self.indicator)
            return {"outcome": "no-block", "expires_at": None, "run_id": None}
        found = {"expires_at": recorded.expires_at.isoformat(), "run_id": recorded.run_id}
        if recorded.expires_at <= utcnow():
            return {"outcome": "expired", **found}
        latest = self.latest_wake(context)
        if latest is not None and recorded.expires_at > latest:
            self.log.info(
                "block of %s extended to %s by run %s, beyond this run's latest wake %s: that run removes it",
                self.indicator,
                recorded.expires_at.isoformat(),
                recorded.run_id,
                latest.isoformat(),
            )
            return {"outcome": "handed-over", **found}
        self.log.info("waiting for the expiry of %s at %s", self.indicator, recorded.expires_at.isoformat())
        self.defer(trigger=DateTimeTrigger(moment=recorded.expires_at), method_name="execute_complete")
        return None  # not reached: defer raises


class UnblockIndicatorOperator(RequiresApproval, _PerimeterStep):
    """Remove the indicator from the block list once its recorded expiry has passed (privileged).

    The same approval as the block (the block was approved with its expiry). A later expiry on record
    (an extension) leaves the block alone; an entry gone already is not an error. Returns what the hook
    did (:meth:`~include.connectors.perimeter.PerimeterHook.unblock`).

    :param tenant: the tenant whose AWS account holds the block lists (templated).
    :param indicator: the IP address or CIDR blocked (templated).
    :param expires_at: the expiry this run asked for, ISO 8601 (templated; bound by the approval).
    :param aws_conn_id: the Airflow AWS connection of the platform's base credentials.
    """

    capability = "perimeter-block"
    artifact_fields = {"indicator": "indicator", "tenant": "tenant", "expires_at": "expires_at"}

    def act(self, context: Any) -> dict[str, Any]:
        result = self.failing_fast(lambda: self.hook.unblock(self.indicator, now=utcnow()))
        self.log.info("unblock %s in %s: %s", result["indicator"], result["ip_set"], result["outcome"])
        audit_side_effect(
            context,
            system="aws",
            operation="unblock-indicator",
            object_id=result["indicator"],
            tenant=self.tenant,
            created=False,
            removed=result["removed"],
            outcome=result["outcome"],
            capability=self.capability,
            role_arn=self.hook.role_arn,
            ip_set_arn=result["ip_set_arn"],
            expires_at=result["expires_at"],
        )
        return result
