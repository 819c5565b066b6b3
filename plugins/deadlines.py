"""Airflow plugin: the platform's custom Deadline references (:mod:`include.workflows.holds`).

Airflow finds a custom reference by its class path among the plugins' ``deadline_references`` when
it creates a DAG run (API server and scheduler), so the reference must be registered here.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from include.workflows.holds import HoldEndDeadline


class DeadlineReferencesPlugin(AirflowPlugin):
    name = "orchestrator_deadlines"
    deadline_references = [HoldEndDeadline]
