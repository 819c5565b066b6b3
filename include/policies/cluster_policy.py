"""Airflow cluster policies: the domain rules enforced by the running DAG processor too.

The CI policy check stops a bad pull request; these hooks stop a DAG that reaches Airflow another
way (a hot-fix pushed to the tracked branch, a second bundle). A DAG that breaks a rule shows up
as an import error naming the rule, and never runs. Wired in through ``config/airflow_local_settings.py``.

Rules: known-domain; domain-pool; run-timeouts (a run without ``dagrun_timeout``, a task without
``execution_timeout``, either over the domain's, or a run that could end while an approver may still
answer: :mod:`include.policies.timeouts`, the same messages as ``policy-check``); param-patterns (a
DAG param or its array items whose ``pattern`` does not compile or ends in a bare ``$``:
:mod:`include.policies.param_patterns`, the same function as ``policy-check``).
"""

from __future__ import annotations

from typing import Any

from airflow.exceptions import AirflowClusterPolicyViolation

from include.policies.loader import DomainPolicy, domain_tag_problem, domain_tags, load_domain_policy
from include.policies.param_patterns import param_pattern_problems
from include.policies.timeouts import dag_timeout_problem, task_timeout_problem


def _domain(dag: Any) -> DomainPolicy | None:
    names = domain_tags(dag)
    policy = load_domain_policy()
    if len(names) != 1 or names[0] not in policy.domains:
        return None  # dag_policy reports the DAG itself
    return policy.domains[names[0]]


def dag_policy(dag: Any) -> None:
    problem = domain_tag_problem(dag, load_domain_policy())
    if problem:
        raise AirflowClusterPolicyViolation(f"known-domain: {problem}")
    domain = _domain(dag)
    if domain is not None and (problem := dag_timeout_problem(dag, domain)):
        raise AirflowClusterPolicyViolation(f"run-timeouts: {problem}")
    if problems := param_pattern_problems(dag):  # all of them on one line: one import error to fix
        found = "; ".join(f"param {name}: {problem}" for name, problem in problems)
        raise AirflowClusterPolicyViolation(f"param-patterns: DAG {dag.dag_id} {found}")


def task_policy(task: Any) -> None:
    dag = getattr(task, "dag", None)
    if dag is None:
        return
    domain = _domain(dag)
    if domain is None:
        return
    if task.pool != domain.pool:
        raise AirflowClusterPolicyViolation(
            f"domain-pool: DAG {dag.dag_id} task {task.task_id} runs in pool {task.pool!r}, "
            f"not its domain pool {domain.pool!r}"
        )
    if problem := task_timeout_problem(dag, task, domain):
        raise AirflowClusterPolicyViolation(f"run-timeouts: {problem}")
