"""``approval_gate(...)``: the one line a workflow writes before a privileged step.

    gate = approval_gate("host-isolate", subject="Isolate {{ params.host }}", body=PLAN)
    triage >> gate >> isolate

One step (one approver group) gives one :class:`ApprovalGateOperator`; an action whose policy
asks for several approvals gives a task group with one gate per step, in order, each answered by
a different person. Reject or timeout at any step skips everything after it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from airflow.sdk import TaskGroup
from airflow.sdk.definitions._internal.contextmanager import DagContext

from include.policies.approvals import load_approvals
from plugins.operators.approval import ApprovalGateOperator, domain_of_dag


def approval_gate(
    action: str,
    *,
    subject: str,
    body: str,
    tenant: str | None = None,
    ticket_id: str | None = None,
    ladder: Mapping[str, timedelta] | None = None,
    task_id: str | None = None,
    **kwargs: Any,
) -> ApprovalGateOperator | TaskGroup:
    """The approval for ``action`` as the policy declares it for the current DAG's domain."""
    dag = DagContext.get_current()
    domain = domain_of_dag(dag) if dag is not None else None
    if domain is None:
        raise ValueError(f"approval_gate({action!r}) must be called inside a domain_workflow DAG")
    rule = load_approvals().rule(domain, action)
    name = task_id or f"approve_{action.replace('-', '_')}"
    common: dict[str, Any] = {
        "approval_action": action,
        "subject": subject,
        "body": body,
        "tenant": tenant,
        "ticket_id": ticket_id,
        "ladder": ladder,
        **kwargs,
    }
    if len(rule.steps) == 1:
        return ApprovalGateOperator(task_id=name, **common)
    with TaskGroup(group_id=name) as group:
        previous: ApprovalGateOperator | None = None
        earlier: list[str] = []
        for number, step in enumerate(rule.steps, start=1):
            gate = ApprovalGateOperator(
                task_id=f"step_{number}_{'_or_'.join(step.any_of)}",
                step=number,
                earlier_steps=earlier,
                **common,
            )
            if previous is not None:
                previous >> gate
            earlier = [*earlier, gate.task_id]
            previous = gate
    return group
