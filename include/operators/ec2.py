"""EC2 host containment: inspect a host (read-only) and isolate it (privileged, after approval).

Both run in the tenant's own AWS account through :class:`~include.connectors.ec2.Ec2Hook`:
inspection as ``orchestrator-host-inspect`` (Describe only), isolation as
``orchestrator-host-isolate``, each a 15-minute session tagged with the run's tenant and correlation
id (:mod:`include.connectors.aws`). The isolation is recorded on the audit trail as a side effect
(instance, previous groups, quarantine group, role).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypeVar

from airflow.sdk import BaseOperator

from include.approvals.verify import RequiresApproval
from include.audit.emit import side_effect as audit_side_effect
from include.operators.failing import failing_fast

if TYPE_CHECKING:
    from include.connectors.ec2 import Ec2Hook

T = TypeVar("T")


class _Ec2Step(BaseOperator):
    """Base of the EC2 steps: the host, its tenant and the hook of the step's capability.

    :param tenant: the tenant whose AWS account holds the host (templated).
    :param host: the EC2 instance id (templated).
    :param aws_conn_id: the Airflow AWS connection of the platform's base credentials.
    """

    template_fields: Sequence[str] = ("tenant", "host")
    capability = ""  # each step declares its own

    def __init__(self, *, tenant: str, host: str, aws_conn_id: str = "aws_default", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.tenant = tenant
        self.host = host
        self.aws_conn_id = aws_conn_id

    @cached_property
    def hook(self) -> Ec2Hook:
        from include.connectors.ec2 import Ec2Hook

        return Ec2Hook(self.aws_conn_id, capability=self.capability, tenant=self.tenant)

    def failing_fast(self, step: Callable[[], T]) -> T:
        """Run ``step`` (:func:`include.operators.failing.failing_fast`); a permanent connector error
        or a :class:`ContainmentError` (unknown host, no quarantine group) fails the task at once:
        retrying cannot make the host exist, and a SOC analyst needs the answer now."""
        from include.connectors.ec2 import ContainmentError

        return failing_fast(self.task_id, step, ContainmentError)


class InspectHostOperator(_Ec2Step):
    """What isolating the host would change, for the approval question (read-only role).

    Returns the isolation plan and its ``markdown``.

    :param tenant: the tenant whose AWS account holds the host (templated).
    :param host: the EC2 instance id (templated).
    :param aws_conn_id: the Airflow AWS connection of the platform's base credentials.
    """

    capability = "host-inspect"

    def execute(self, context: Any) -> dict[str, Any]:
        plan = self.failing_fast(lambda: self.hook.plan_isolation(self.host))
        self.log.info("%s", plan.markdown())
        return {**plan.as_xcom(), "markdown": plan.markdown()}


class IsolateHostOperator(RequiresApproval, _Ec2Step):
    """Swap the host's security groups for the quarantine group (privileged: needs the approval).

    Acts only on a verified approval of exactly this host in this tenant (the gate binds
    ``artifact_params=("host", "tenant")``). Returns what was done and the run's correlation id.

    :param tenant: the tenant whose AWS account holds the host (templated).
    :param host: the EC2 instance id (templated).
    :param aws_conn_id: the Airflow AWS connection of the platform's base credentials.
    """

    capability = "host-isolate"
    artifact_fields = {"host": "host", "tenant": "tenant"}

    def act(self, context: Any) -> dict[str, Any]:
        result = self.failing_fast(lambda: self.hook.isolate(self.host))
        self.log.info(
            "%s %s: groups %s -> %s",
            "isolated" if result["changed"] else "already isolated",
            self.host,
            result["previous_groups"],
            result["quarantine_group"],
        )
        audit_side_effect(
            context,
            system="aws",
            operation="isolate-host",
            object_id=self.host,
            tenant=self.tenant,
            created=result["changed"],
            capability=self.capability,
            role_arn=self.hook.role_arn,
            previous_groups=result["previous_groups"],
            quarantine_group=result["quarantine_group"],
            vpc_id=result["vpc_id"],
        )
        return result
