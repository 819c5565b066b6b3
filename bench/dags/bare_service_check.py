"""
### Bench baseline: a service check in bare Airflow

The shape of `support_service_check` (two independent checks, then a report that joins them) as
plain `@task`s with no `domain_workflow`, no audit, no pools or SLA deadlines, no secrets read:
what a run of that shape costs Airflow alone. The throughput baseline of `python -m bench.suite`.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, task

with DAG(
    dag_id="bench_bare_service_check",
    schedule=None,
    start_date=datetime(2024, 1, 1),
    catchup=False,
    doc_md=__doc__,
    # The cluster policy (include/policies/cluster_policy.py) wants a domain tag and the domain's
    # pool: the same concurrency quota as the platform's DAG, nothing else of the domain policy.
    tags=["bench", "domain:support"],
    default_args={"pool": "support"},
):

    @task
    def check_tenant_secret() -> dict:
        return {"ok": True}

    @task
    def check_smtp_relay() -> dict:
        return {"ok": True}

    @task
    def report(secret: dict, smtp: dict) -> str:
        return "ok" if secret["ok"] and smtp["ok"] else "failed"

    report(check_tenant_secret(), check_smtp_relay())
