"""The bare-Airflow baselines of ``bench/`` run under the same domain settings as the platform's DAGs.

The throughput ratio is only the platform's overhead if both sides get the same concurrency quota,
scheduling settings and SLA alert: a bare DAG at Airflow's default of 16 active runs and without a
deadline measures a different job. The policy checker is the referee for the settings, as it is for
every DAG in ``dags/``.
"""

from __future__ import annotations

from pathlib import Path

from airflow.sdk.definitions.deadline import DeadlineReference

from include.policies.checks import (
    CheckContext,
    check_dag_imports,
    check_domain_pool,
    check_domain_settings,
    check_known_domain,
    check_run_timeouts,
    run_checks,
)

BENCH_DAGS = Path(__file__).resolve().parents[3] / "bench" / "dags"


def test_bare_baselines_follow_the_support_domain_settings():
    context = CheckContext(dags_folder=BENCH_DAGS)
    rules = [
        check_dag_imports,
        check_known_domain,
        check_domain_pool,
        check_domain_settings,
        check_run_timeouts,
    ]

    assert run_checks(context, rules) == []
    dags = {dag.dag_id: dag for dag, _domain in context.dags_with_domain()}
    assert set(dags) == {"bench_bare_service_check", "bench_bare_triage"}
    support = context.policy.domain("support")
    assert {dag.max_active_runs for dag in dags.values()} == {support.max_active_runs}


def test_the_bare_service_check_alerts_on_the_support_sla_with_airflow_alone():
    context = CheckContext(dags_folder=BENCH_DAGS)
    dag = next(dag for dag, _ in context.dags_with_domain() if dag.dag_id == "bench_bare_service_check")
    support = context.policy.domain("support")

    [deadline] = dag.deadline
    assert deadline.reference == DeadlineReference.DAGRUN_QUEUED_AT
    assert deadline.interval == support.sla["fast_path"]
    assert deadline.callback.path == "airflow.providers.smtp.notifications.smtp.SmtpNotifier"
    assert deadline.callback.kwargs["to"] == list(support.alert_emails)
    assert deadline.callback.kwargs["smtp_conn_id"] == "smtp_alerts"
