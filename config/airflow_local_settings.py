"""Airflow imports this module (found on PYTHONPATH) at start-up in every component.

The production image puts ``config/`` on PYTHONPATH as the local stack does.
"""

from include.policies.cluster_policy import dag_policy, task_policy

__all__ = ["dag_policy", "task_policy"]
