"""Bounded runs: every task has an ``execution_timeout`` and every run a ``dagrun_timeout``, from the
domain policy (``timeouts.<kind>`` in ``domains.yaml``), and no run can end while a person may
still answer one of its approvals.

The factory (:mod:`include.workflows.factory`) sets both; an approval gate gets its approval wait
(the ladder's timeout) plus the kind's ``execution_timeout``. ``policy-check`` (run-timeouts) and
the cluster policy refuse what breaks them with these functions, so both say the same thing:

- a task without ``execution_timeout``, or with one over its maximum (the kind's, plus its
  approval wait for a human-in-the-loop task), or a gate whose timeout is shorter than its wait;
- a DAG without ``dagrun_timeout``, over its domain's, or shorter than its longest path (each task
  at its ``execution_timeout``, each gate at its wait: the approval chain plus the work);
- a domain whose ``dagrun_timeout`` is shorter than its longest approval chain in
  ``approvals.yaml`` (steps x timeout) plus one task.

Deferred tasks: Airflow's documentation counts ``execution_timeout`` over a task's total runtime,
deferrals included, but Airflow 3.3.2 applies it to each stretch on a worker only (the execution
API does not carry it into the deferral: apache/airflow#69678, fix proposed in #69734). A gate's
timeout therefore covers its whole wait, which is right under both readings; the trigger ends the
wait itself at the ladder's timeout.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from include.policies.loader import (
    DomainPolicy,
    Policy,
    PolicyError,
    RunLimits,
    format_duration,
    workflow_kind,
)

if TYPE_CHECKING:
    from include.policies.approvals import ApprovalPolicy

NO_TIME = timedelta(0)


def human_wait(task: Any) -> timedelta | None:
    """How long a task may wait for a person: a human-in-the-loop task's ``response_timeout``.

    :param task: an operator (an approval gate has its ladder's timeout there).
    """
    wait = getattr(task, "response_timeout", None)
    return wait if isinstance(wait, timedelta) else None


def task_maximum(task: Any, limits: RunLimits) -> timedelta:
    """The longest ``execution_timeout`` ``task`` may have: the kind's, plus its approval wait.

    :param task: an operator.
    :param limits: the timeouts of the DAG's domain and kind.
    """
    return limits.execution_timeout + (human_wait(task) or NO_TIME)


def _limits(dag: Any, domain: DomainPolicy) -> tuple[str, RunLimits]:
    kind = workflow_kind(dag)
    return kind, domain.timeouts[kind]


def task_timeout_problem(dag: Any, task: Any, domain: DomainPolicy) -> str | None:
    """Why ``task``'s ``execution_timeout`` breaks the policy, or ``None``.

    :param dag: the task's DAG (its ``kind:`` tag picks the limits).
    :param task: the operator.
    :param domain: the DAG's domain.
    """
    subject = f"DAG {dag.dag_id} task {task.task_id}"
    try:
        kind, limits = _limits(dag, domain)
    except PolicyError as error:
        return str(error)
    timeout, wait = task.execution_timeout, human_wait(task)
    maximum = task_maximum(task, limits)
    of = f"the {domain.name} {kind} maximum {format_duration(maximum)}"
    if wait is not None:
        of += f" (approval wait {format_duration(wait)} + {format_duration(limits.execution_timeout)})"
    if timeout is None:
        return f"{subject} has no execution_timeout ({of})"
    if timeout > maximum:
        return f"{subject} has execution_timeout {format_duration(timeout)}, over {of}"
    if wait is not None and timeout < wait:
        return (
            f"{subject} waits up to {format_duration(wait)} for an approver but has execution_timeout "
            f"{format_duration(timeout)}: it would be cut off while an approver may still answer"
        )
    return None


def longest_path(dag: Any, limits: RunLimits | None = None) -> tuple[timedelta, timedelta]:
    """The longest path through ``dag``: each task at its ``execution_timeout``, a gate at least at
    its approval wait; returns the path's length and the approval waits on it.

    A mapped task counts once (its instances run side by side); retries and queueing are not
    counted: they come out of what ``dagrun_timeout`` leaves over.

    :param dag: the DAG.
    :param limits: count a task at most at its maximum (:func:`task_maximum`): one over it is its
        own problem (:func:`task_timeout_problem`), not its run's.
    """
    memo: dict[str, tuple[timedelta, timedelta]] = {}

    def through(task_id: str) -> tuple[timedelta, timedelta]:
        if task_id not in memo:
            task = dag.task_dict[task_id]
            wait = human_wait(task) or NO_TIME
            own = max(task.execution_timeout or NO_TIME, wait)
            if limits is not None:
                own = min(own, task_maximum(task, limits))
            before = max((through(up) for up in task.upstream_task_ids), default=(NO_TIME, NO_TIME))
            memo[task_id] = (before[0] + own, before[1] + wait)
        return memo[task_id]

    return max((through(task_id) for task_id in dag.task_dict), default=(NO_TIME, NO_TIME))


def dag_timeout_problem(dag: Any, domain: DomainPolicy) -> str | None:
    """Why the DAG's ``dagrun_timeout`` breaks the policy, or ``None``.

    :param dag: the DAG.
    :param domain: its domain.
    """
    subject = f"DAG {dag.dag_id}"
    try:
        kind, limits = _limits(dag, domain)
    except PolicyError as error:
        return str(error)
    timeout, maximum = dag.dagrun_timeout, limits.dagrun_timeout
    if timeout is None:
        return f"{subject} has no dagrun_timeout (the {domain.name} {kind} one is {format_duration(maximum)})"
    if timeout > maximum:
        return (
            f"{subject} has dagrun_timeout {format_duration(timeout)}, over the {domain.name} {kind} "
            f"maximum {format_duration(maximum)}"
        )
    path, waits = longest_path(dag, limits)
    if timeout < path:
        included = f", approval waits {format_duration(waits)} included" if waits else ""
        return (
            f"{subject} has dagrun_timeout {format_duration(timeout)}, shorter than its longest path "
            f"{format_duration(path)} (each task at its execution_timeout{included}): a run could be "
            "killed before its tasks and approvers had their time"
        )
    return None


def approval_chain_problems(domains: Policy, approvals: ApprovalPolicy) -> list[tuple[str, str]]:
    """Each domain and kind whose ``dagrun_timeout`` is shorter than the domain's longest approval
    chain (``approvals.yaml``: steps x timeout) plus one task: ``(key path, problem)``.

    :param domains: the domain policy.
    :param approvals: the approval policy checked against it.
    """
    problems = []
    for name, domain in domains.domains.items():
        rules = [rule for (rule_domain, _), rule in sorted(approvals.rules.items()) if rule_domain == name]
        if not rules:
            continue
        longest = max(rules, key=lambda rule: rule.max_steps * rule.ladder.timeout)
        chain = longest.max_steps * longest.ladder.timeout
        for kind, limits in domain.timeouts.items():
            if limits.dagrun_timeout >= chain + limits.execution_timeout:
                continue
            problems.append(
                (
                    f"domains.{name}.timeouts.{kind}.dagrun_timeout",
                    f"{format_duration(limits.dagrun_timeout)} is shorter than the {longest.action!r} "
                    f"approval chain of {name} ({longest.max_steps} step(s) of up to "
                    f"{format_duration(longest.ladder.timeout)}, {format_duration(chain)}) plus one "
                    f"task's execution_timeout ({format_duration(limits.execution_timeout)}): a run would "
                    "be killed while an approver may still answer",
                )
            )
    return problems
