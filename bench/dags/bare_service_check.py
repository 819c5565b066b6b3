"""
### Bench baseline: a service check in bare Airflow

`support_service_check` as a bare-Airflow author would write it: the same two checks against the
same services (acme's support secret read from Secrets Manager with a plain boto3 client, an SMTP
NOOP to the alert relay with `smtplib`), then a report that joins them; no `domain_workflow`, no
audit records, no SLA deadline, no policy. What a run of that shape and that work costs Airflow
alone: the throughput baseline of `python -m bench.suite`, so the ratio is the platform's overhead,
not the cost of the work. (Until issue 8's tuning the baseline's tasks were empty: the ratio then
also counted the Secrets Manager and SMTP calls.)
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
        import boto3
        from airflow.sdk import Connection

        aws = Connection.get("aws_default")
        client = boto3.client(
            "secretsmanager",
            endpoint_url=aws.extra_dejson.get("endpoint_url"),
            region_name=aws.extra_dejson.get("region_name"),
            aws_access_key_id=aws.login,
            aws_secret_access_key=aws.password,
        )
        name = "orchestrator/acme/support/service-check"
        response = client.get_secret_value(SecretId=name)
        return {"secret": name, "version_id": response["VersionId"], "length": len(response["SecretString"])}

    @task
    def check_smtp_relay() -> dict:
        import smtplib

        from airflow.sdk import Connection

        relay = Connection.get("smtp_alerts")
        with smtplib.SMTP(relay.host, relay.port or 25, timeout=10) as smtp:
            code, _banner = smtp.noop()
        return {"smtp": f"{relay.host}:{relay.port}", "noop": code}

    @task
    def report(secret: dict, smtp: dict) -> str:
        return f"support: secret {secret['secret']} ok; smtp {smtp['smtp']} {smtp['noop']}"

    report(check_tenant_secret(), check_smtp_relay())
