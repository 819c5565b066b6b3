"""Airflow cluster policies: the domain rules enforced by the running DAG processor too.

The CI policy check stops a bad pull request; these hooks stop a DAG that reaches Airflow another
way (a hot-fix pushed to the tracked branch, a second bundle). A DAG that breaks a rule shows up
as an import error naming the rule, and never runs. Wired in through ``config/airflow_local_settings.py``.
"""

from __future__ import annotations

from typing import Any

from airflow.exceptions import AirflowClusterPolicyViolation

from include.policies.loader import domain_tag_problem, domain_tags, load_domain_policy


def dag_policy(dag: Any) -> None:
    problem = domain_tag_problem(dag, load_domain_policy())
    if problem:
        raise AirflowClusterPolicyViolation(f"known-domain: {problem}")


def task_policy(task: Any) -> None:
    dag = getattr(task, "dag", None)
    if dag is None:
        return
    names = domain_tags(dag)
    policy = load_domain_policy()
    if len(names) != 1 or names[0] not in policy.domains:
        return  # dag_policy reports the DAG itself
    expected = policy.domains[names[0]].pool
    if task.pool != expected:
        raise AirflowClusterPolicyViolation(
            f"domain-pool: DAG {dag.dag_id} task {task.task_id} runs in pool {task.pool!r}, "
            f"not its domain pool {expected!r}"
        )
