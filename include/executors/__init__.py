"""Executors of the orchestrator: Airflow's own, with fixes Airflow 3.3.2 does not ship yet."""
