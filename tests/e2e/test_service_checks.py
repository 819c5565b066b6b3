"""Each domain's service-check workflow runs for real: REST trigger -> scheduler -> worker -> success."""

from __future__ import annotations

import json
from typing import Any

import pytest

from devstack.api_client import AirflowApi, ApiError
from devstack.moto_seed import secrets_client
from devstack.stack import Stack
from include.policies.loader import load_domain_policy
from include.policies.tenants import secret_name

DOMAINS = sorted(load_domain_policy().domains)


@pytest.fixture(scope="module")
def service_check_runs(api: AirflowApi) -> dict[str, tuple[str, dict]]:
    """Trigger every domain's check at once (tenant globex), then wait for all of them."""
    run_ids = {domain: api.trigger(f"{domain}_service_check", {"tenant": "globex"}) for domain in DOMAINS}
    return {
        domain: (run_id, api.wait_for_run(f"{domain}_service_check", run_id, timeout=180))
        for domain, run_id in run_ids.items()
    }


@pytest.mark.parametrize("domain", DOMAINS)
def test_service_check_succeeds_in_domain_pool(api: AirflowApi, service_check_runs, domain: str) -> None:
    run_id, run = service_check_runs[domain]
    assert run["state"] == "success"
    assert run["conf"] == {"tenant": "globex"}
    policy = load_domain_policy().domain(domain)
    tis = api.task_instances(f"{domain}_service_check", run_id)
    assert {ti["task_id"] for ti in tis} == {"check_tenant_secret", "check_smtp_relay", "report"}
    for ti in tis:
        assert (ti["state"], ti["pool"], ti["priority_weight"]) == ("success", domain, policy.priority_weight)
    report = api.xcom(f"{domain}_service_check", run_id, "report")
    assert report.startswith(f"{domain}: secret {secret_name('globex', domain)} v")


def test_secret_values_never_reach_xcom_or_logs(api: AirflowApi, stack: Stack, service_check_runs) -> None:
    client: Any = secrets_client(stack.profile)
    tokens = {
        json.loads(client.get_secret_value(SecretId=secret_name("globex", d))["SecretString"])["token"]
        for d in DOMAINS
    }
    exposed: list[str] = []
    for domain in DOMAINS:
        run_id, _ = service_check_runs[domain]
        xcom = json.dumps(api.xcom(f"{domain}_service_check", run_id, "check_tenant_secret"))
        exposed += [f"XCom of {domain}" for token in tokens if token in xcom]
    log_files = [p for p in stack.profile.root.rglob("*.log") if p.is_file()]
    log_files += [p for p in (stack.profile.airflow_home / "logs").rglob("*") if p.is_file()]
    assert len(log_files) > 5
    for path in log_files:
        text = path.read_text(errors="replace")
        exposed += [str(path) for token in tokens if token in text]
    assert exposed == []


def test_trigger_with_invalid_param_is_refused_with_the_reason(api: AirflowApi) -> None:
    with pytest.raises(ApiError) as refused:
        api.trigger("soc_service_check", {"tenant": "initech"})
    assert refused.value.status_code == 400
    assert "Invalid input for param tenant: 'initech' is not one of ['acme', 'globex']" in refused.value.body
