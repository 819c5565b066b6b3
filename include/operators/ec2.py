"""EC2 host containment: inspect a host (read-only) and isolate it (privileged, after approval).

Both run in the tenant's own AWS account: inspection as ``orchestrator-host-inspect`` (Describe
only), isolation as ``orchestrator-host-isolate``, each a 15-minute session tagged with the run's
tenant and correlation id (:mod:`include.connectors.aws`). The work itself is
:mod:`include.connectors.ec2_isolation`; the isolation is recorded on the audit trail as a side
effect (instance, previous groups, quarantine group, role).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from include.approvals.verify import RequiresApproval
from include.audit.emit import side_effect as audit_side_effect
from include.connectors.context import RunContext


class _Ec2Step(BaseOperator):
    template_fields: Sequence[str] = ("tenant", "host")
    capability = ""

    def __init__(self, *, tenant: str, host: str, aws_conn_id: str = "aws_default", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.tenant = tenant
        self.host = host
        self.aws_conn_id = aws_conn_id

    def work(self, context: Any, step: Callable[[Any, RunContext], dict[str, Any]]) -> dict[str, Any]:
        """Run ``step``; a :class:`ContainmentError` (unknown host, no quarantine group) fails the
        task at once: retrying cannot make the host exist, and a SOC analyst needs the answer now."""
        from include.connectors.ec2_isolation import ContainmentError

        run = RunContext.from_airflow_context(context, self.tenant)
        try:
            return step(self.ec2(run), run)
        except ContainmentError as error:
            raise AirflowFailException(f"{self.task_id}: {error}") from None

    def ec2(self, run: RunContext) -> Any:
        from include.connectors.aws import capability_client

        return capability_client(
            self.capability, self.tenant, "ec2", run_context=run, aws_conn_id=self.aws_conn_id
        )


class InspectHostOperator(_Ec2Step):
    """What isolating the host would change, for the approval question (read-only role)."""

    capability = "host-inspect"

    def execute(self, context: Any) -> dict[str, Any]:
        from include.connectors.ec2_isolation import plan_isolation

        def inspect(ec2: Any, run: RunContext) -> dict[str, Any]:
            plan = plan_isolation(ec2, self.host)
            self.log.info("%s", plan.markdown())
            return {**plan.as_xcom(), "markdown": plan.markdown()}

        return self.work(context, inspect)


class IsolateHostOperator(RequiresApproval, _Ec2Step):
    """Swap the host's security groups for the quarantine group (privileged: needs the approval).

    Acts only on a verified approval of exactly this host in this tenant (the gate binds
    ``artifact_params=("host", "tenant")``).
    """

    capability = "host-isolate"
    artifact_fields = {"host": "host", "tenant": "tenant"}

    def act(self, context: Any) -> dict[str, Any]:
        from include.connectors.aws import role_arn
        from include.connectors.ec2_isolation import isolate

        run = RunContext.from_airflow_context(context, self.tenant)
        result = self.work(
            context, lambda ec2, run: isolate(ec2, self.host, correlation_id=run.correlation_id)
        )
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
            role_arn=role_arn(self.capability, self.tenant),
            previous_groups=result["previous_groups"],
            quarantine_group=result["quarantine_group"],
            vpc_id=result["vpc_id"],
        )
        return {**result, "correlation_id": run.correlation_id}
