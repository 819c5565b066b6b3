"""``approval_gate(...)``: the one line a workflow writes before a privileged step.

    gate = approval_gate("host-isolate", subject="Isolate {{ params.host }}", body=PLAN)
    triage >> gate >> isolate

One step (one approver group) gives one :class:`ApprovalGateOperator`; an action whose policy
asks for several approvals gives a task group with one gate per step, in order, each answered by
a different person. Reject or timeout at any step skips everything after it. With
``destroy_steps`` in the policy the group has as many gates as the longer list, and each gate
picks its step at run time from ``destructive`` (a step a change does not need passes);
``privileged_steps`` and ``privileged`` work the same way.

A DAG with a gate also gets the boolean param ``approval_drill`` (default false): a run triggered
with it is an approval drill, whose ladder runs at the policy's ``drill_ladder`` pace and whose
privileged steps are skipped whatever the answer (:mod:`include.approvals.verify`).

A gate's ``execution_timeout`` is its approval wait (the ladder's timeout) plus the domain's
``execution_timeout`` for the DAG's kind (:mod:`include.policies.timeouts`): it must never be cut
off while an approver may still answer, whichever way Airflow counts a deferred task's time.

What a gate approves is bound to its request: ``artifact`` (a plan's or export's SHA-256) or
``artifact_params`` (the run params naming the host, account or employee). The privileged step
after it re-reads the answer from Airflow and acts only on that (:mod:`include.approvals.verify`).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from airflow.sdk import Param, TaskGroup
from airflow.sdk.definitions._internal.contextmanager import DagContext

from include.operators.approval import DRILL_PARAM, ApprovalGateOperator, domain_of_dag
from include.policies.approvals import load_approvals
from include.policies.loader import load_domain_policy, workflow_kind
from include.policies.timeouts import task_maximum


def drill_param() -> Param:
    """The ``approval_drill`` trigger param every DAG with an approval gate gets."""
    return Param(
        False,
        type="boolean",
        title="Approval drill",
        description=(
            "Run the approval ladder at drill pace (reminder, escalation and auto-reject within "
            "seconds) to exercise the escalation path: requests, mails and ticket comments are real, "
            "but the privileged steps are skipped whatever the answer, so a drill changes nothing."
        ),
        source="dag",
    )


def approval_gate(
    action: str,
    *,
    subject: str,
    body: str,
    tenant: str | None = None,
    ticket_id: str | None = None,
    ladder: Mapping[str, timedelta] | None = None,
    artifact: str | None = None,
    destructive: str | bool = False,
    privileged: str | bool = False,
    task_id: str | None = None,
    **kwargs: Any,
) -> ApprovalGateOperator | TaskGroup:
    """The approval for ``action`` as the policy declares it for the current DAG's domain."""
    dag = DagContext.get_current()
    domain = domain_of_dag(dag) if dag is not None else None
    if dag is None or domain is None:
        raise ValueError(f"approval_gate({action!r}) must be called inside a domain_workflow DAG")
    rule = load_approvals().rule(domain, action)
    if "execution_timeout" in kwargs:
        raise ValueError(f"approval_gate({action!r}): execution_timeout comes from the approval policy")
    limits = load_domain_policy().domain(domain).timeouts[workflow_kind(dag)]
    if DRILL_PARAM not in dag.params:
        dag.params[DRILL_PARAM] = drill_param()
    name = task_id or f"approve_{action.replace('-', '_')}"
    common: dict[str, Any] = {
        "approval_action": action,
        "subject": subject,
        "body": body,
        "tenant": tenant,
        "ticket_id": ticket_id,
        "ladder": ladder,
        "artifact": artifact,
        "destructive": destructive,
        "privileged": privileged,
        # Not the DAG's default: Airflow's HITL operator would take a default execution_timeout
        # for its response timeout (deprecated). Set below, once the gate knows its ladder.
        "execution_timeout": None,
        **kwargs,
    }

    def bounded(gate: ApprovalGateOperator) -> ApprovalGateOperator:
        gate.execution_timeout = task_maximum(gate, limits)
        return gate

    if rule.max_steps == 1:
        return bounded(ApprovalGateOperator(task_id=name, **common))
    with TaskGroup(group_id=name) as group:
        previous: ApprovalGateOperator | None = None
        earlier: list[str] = []
        for number in range(1, rule.max_steps + 1):
            # Steps are named by who answers them, unless that depends on the change
            # (destroy_steps, privileged_steps).
            label = "" if rule.conditional else "_" + "_or_".join(rule.steps[number - 1].any_of)
            gate = bounded(
                ApprovalGateOperator(
                    task_id=f"step_{number}{label}", step=number, earlier_steps=earlier, **common
                )
            )
            if previous is not None:
                previous >> gate
            earlier = [*earlier, gate.task_id]
            previous = gate
    return group
