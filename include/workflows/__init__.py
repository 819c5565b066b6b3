"""Shared workflow helpers: every DAG in ``dags/`` is declared through :func:`domain_workflow`."""

from include.workflows.factory import WorkflowDefinitionError, domain_workflow, workflow_dag_kwargs

__all__ = ["WorkflowDefinitionError", "domain_workflow", "workflow_dag_kwargs"]
