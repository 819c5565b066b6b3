"""intake.yaml: its schema and rules, and policy-check's intake-routes against the target DAGs' params."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from airflow.sdk import DAG, Param

from include.intake.policy import INTAKE_FILE, load_intake_file
from include.policies.checks import CheckContext, DagFolderScan, check_intake_routes
from include.policies.loader import DOMAINS_FILE, PolicyError

DOCUMENT = yaml.safe_load(INTAKE_FILE.read_text(encoding="utf-8"))


def write(tmp_path: Path, document: Any) -> Path:
    shutil.copy(DOMAINS_FILE, tmp_path / "domains.yaml")
    path = tmp_path / "intake.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


def test_the_deployed_policy_loads_with_one_queue_and_dlq_per_source() -> None:
    policy = load_intake_file(INTAKE_FILE)
    assert set(policy.sources) == {"siem-alerts", "hris-events", "psa-events"}
    assert {s.queue for s in policy.sources.values()} == {"siem-alerts", "hris-events", "psa-events"}
    assert all(s.dead_letter_queue == f"{s.queue}-dlq" for s in policy.sources.values())
    assert policy.source("siem-alerts").dag_id == "intake_siem_alerts"


def test_a_queue_shared_by_two_sources_is_refused(tmp_path: Path) -> None:
    document = copy.deepcopy(DOCUMENT)
    document["sources"]["psa-events"]["queue"] = "siem-alerts"
    with pytest.raises(
        PolicyError, match=r"sources.psa-events.queue: queue 'siem-alerts' is also sources.siem-alerts.queue"
    ):
        load_intake_file(write(tmp_path, document))


def test_a_kind_without_its_schema_is_refused(tmp_path: Path) -> None:
    document = copy.deepcopy(DOCUMENT)
    document["sources"]["psa-events"]["events"]["psa.po_received"] = [
        {"workflow": "invoicing_milestone_invoice", "params": {"tenant": "data.tenant"}}
    ]
    with pytest.raises(PolicyError, match=r"no schema schema/events/psa.po_received.schema.json"):
        load_intake_file(write(tmp_path, document))


def test_a_param_source_outside_the_event_is_refused_by_the_schema(tmp_path: Path) -> None:
    document = copy.deepcopy(DOCUMENT)
    document["sources"]["siem-alerts"]["events"]["siem.alert"][0]["params"]["host"] = "conf.host"
    with pytest.raises(PolicyError, match=r"sources.siem-alerts.events.siem.alert.0.params.host"):
        load_intake_file(write(tmp_path, document))


def context_with(tmp_path: Path, document: Any, *dags: Any) -> CheckContext:
    write(tmp_path, document)
    context = CheckContext(dags_folder=tmp_path, policy_file=tmp_path / "domains.yaml")
    intake = DAG("intake_siem_alerts", schedule=None)  # the folder deploys the intake
    context.__dict__["dag_scan"] = DagFolderScan(dags=[intake, *dags], import_errors={}, parse_seconds={})
    return context


def contain_host(**params: Param) -> DAG:
    return DAG(
        "soc_contain_host",
        schedule=None,
        params=params
        or {
            "host": Param(type="string"),
            "tenant": Param(type="string"),
            "severity": Param("high", type="string"),
            "alert_id": Param(type="string"),
            "summary": Param("", type="string"),
            "incident_id": Param("", type="string"),
            "correlation_id": Param(None, type=["null", "string"]),
        },
    )


def only_contain_host(document: Any) -> Any:
    document = copy.deepcopy(document)
    document["sources"] = {"siem-alerts": document["sources"]["siem-alerts"]}
    document["sources"]["siem-alerts"]["events"]["siem.alert"] = document["sources"]["siem-alerts"]["events"][
        "siem.alert"
    ][:1]
    return document


def test_routes_that_fit_their_workflow_pass(tmp_path: Path) -> None:
    assert check_intake_routes(context_with(tmp_path, only_contain_host(DOCUMENT), contain_host())) == []


def test_a_route_to_a_missing_workflow_is_a_violation(tmp_path: Path) -> None:
    [violation] = check_intake_routes(context_with(tmp_path, only_contain_host(DOCUMENT)))
    assert violation.rule == "intake-routes"
    assert "workflow 'soc_contain_host' is not a DAG" in violation.message


def test_an_unknown_param_and_an_unmapped_required_param_are_violations(tmp_path: Path) -> None:
    document = only_contain_host(DOCUMENT)
    params = document["sources"]["siem-alerts"]["events"]["siem.alert"][0]["params"]
    params["hostname"] = params.pop("host")
    messages = sorted(
        v.message for v in check_intake_routes(context_with(tmp_path, document, contain_host()))
    )
    assert messages == [
        "sources.siem-alerts.events.siem.alert[0]: param 'hostname' is not a param of soc_contain_host "
        "(its params: alert_id, correlation_id, host, incident_id, severity, summary, tenant)",
        "sources.siem-alerts.events.siem.alert[0]: soc_contain_host requires param 'host', "
        "which the route does not map",
    ]


def test_an_invalid_intake_policy_is_an_intake_routes_violation(tmp_path: Path) -> None:
    document = copy.deepcopy(DOCUMENT)
    document["polling"]["max_messages"] = 50
    [violation] = check_intake_routes(context_with(tmp_path, document, contain_host()))
    assert "polling.max_messages" in violation.message


def test_a_folder_without_the_intake_dags_is_not_held_to_the_routes(tmp_path: Path) -> None:
    context = context_with(tmp_path, only_contain_host(DOCUMENT))
    context.__dict__["dag_scan"] = DagFolderScan(dags=[], import_errors={}, parse_seconds={})
    assert check_intake_routes(context) == []


def test_a_block_started_by_an_alert_expires_within_the_soc_maximum() -> None:
    from include.operators.perimeter import max_block_duration
    from include.policies.loader import parse_duration

    routes = [
        route
        for source in load_intake_file(INTAKE_FILE).sources.values()
        for routes in source.events.values()
        for route in routes
        if route.workflow == "soc_block_indicator"
    ]
    assert routes
    for route in routes:
        assert parse_duration(route.params["expires_at"]["expires_in"]) <= max_block_duration()
