"""Airflow plugin: per-task and per-run StatsD metrics with domain and tenant tags
(:mod:`include.metrics.listener`)."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from include.metrics.listener import LISTENER


class MetricsListenerPlugin(AirflowPlugin):
    name = "orchestrator_metrics"
    listeners = [LISTENER]
