"""Airflow plugin: the audit trail's run and task records (:mod:`include.audit.listener`)."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from include.audit.listener import LISTENER


class AuditListenerPlugin(AirflowPlugin):
    name = "orchestrator_audit"
    listeners = [LISTENER]
