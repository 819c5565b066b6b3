"""
### Bench baseline: a service check in bare Airflow

`support_service_check` as a bare-Airflow author would write it: the same two checks against the
same services (acme's support secret read from Secrets Manager with a plain boto3 client, an SMTP
NOOP to the alert relay with `smtplib`), then a report that joins them, under the support domain's
settings and SLA: Airflow's own Deadline Alert with the stock `SmtpNotifier`, as the mission asks
of every workflow (an email when a run misses its SLA). No `domain_workflow`, no audit records, no
connector, no composed alert. What a run of that shape and that work costs Airflow alone: the
throughput baseline of `python -m bench.suite`, so the ratio is the platform's overhead, not the
cost of the work. (Until issue 8's tuning the baseline's tasks were empty: the ratio then also
counted the Secrets Manager and SMTP calls. Until the end of issue 8 it had no SLA: a 200-run
burst on 2 cores runs past the 2-minute SLA, and the 120-odd alerts it sends are the triggerer's
work, 0.16 CPU-s a run, which only the platform's side then paid.)
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.providers.smtp.notifications.smtp import SmtpNotifier
from airflow.sdk import DAG, task
from airflow.sdk.definitions.deadline import AsyncCallback, DeadlineAlert, DeadlineReference

with DAG(
    dag_id="bench_bare_service_check",
    schedule=None,
    start_date=datetime(2024, 1, 1),
    catchup=False,
    doc_md=__doc__,
    # The support domain's settings (include/policies/domains.yaml), written out as any author in
    # that domain would have to: the same pool, active-run cap and scheduling settings as the
    # platform's DAG, and its SLA alert, so the ratio measures the platform and not a different
    # quota or job. tests/unit/test_bench_baselines.py holds them to the policy.
    tags=["bench", "domain:support"],
    deadline=DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT,
        interval=timedelta(minutes=2),  # support's fast_path SLA
        callback=AsyncCallback(
            SmtpNotifier,
            kwargs={
                "to": ["support-alerts@secops.example"],
                "from_email": "orchestrator@secops.example",
                "smtp_conn_id": "smtp_alerts",
                "subject": "[SLA miss] {{ dag_run.dag_id }} run {{ dag_run.dag_run_id }} missed its SLA",
                "html_content": "Run {{ dag_run.dag_run_id }} is past its 2-minute deadline.",
            },
        ),
        name="support-fast_path-sla",
    ),
    max_active_runs=64,
    max_active_tasks=16,
    dagrun_timeout=timedelta(hours=6),  # support's fast_path run timeout
    default_args={
        "pool": "support",
        "execution_timeout": timedelta(minutes=30),  # and its task timeout
        "owner": "support-engineering",
        "priority_weight": 1,
        "weight_rule": "absolute",
    },
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
