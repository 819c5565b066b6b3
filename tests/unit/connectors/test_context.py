"""The run context every connector call carries: ids, tenant and correlation id of the task."""

from __future__ import annotations

import hashlib
from types import SimpleNamespace

from include.connectors.context import RunContext, default_correlation_id


def test_run_context_from_airflow_context():
    ti = SimpleNamespace(dag_id="hr_offboarding", task_id="disable_account", run_id="manual__1")
    with_conf = {
        "ti": ti,
        "run_id": "manual__1",
        "dag_run": SimpleNamespace(conf={"correlation_id": "RT-77"}),
    }
    without_conf = {"ti": ti, "run_id": "manual__1", "dag_run": SimpleNamespace(conf=None)}

    assert RunContext.from_airflow_context(with_conf, "globex") == RunContext(
        dag_id="hr_offboarding",
        run_id="manual__1",
        task_id="disable_account",
        tenant="globex",
        correlation_id="RT-77",
    )
    derived = RunContext.from_airflow_context(without_conf, "globex").correlation_id
    expected = "corr-" + hashlib.sha256(b"hr_offboardingmanual__1").hexdigest()[:16]
    assert derived == default_correlation_id("hr_offboarding", "manual__1") == expected
