"""Airflow imports this module (found on PYTHONPATH) at start-up in every component.

The production image puts ``config/`` on PYTHONPATH as the local stack does.
"""

from include.policies.cluster_policy import dag_policy, task_policy
from include.workflows.deadline_fix import install as install_deadline_fix

# Airflow 3.3.2 answers 500 to any clear of a run with a pending SLA deadline (apache/airflow#70368);
# version-guarded, see the module.
install_deadline_fix()

__all__ = ["dag_policy", "task_policy"]
