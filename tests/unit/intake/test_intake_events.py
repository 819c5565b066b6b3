from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from intake_samples import alert

from include.intake.events import EVENT_CONF_KEY, EventRejected, parse_event, run_id_for, starts_for
from include.intake.policy import IntakePolicy

NOW = datetime(2026, 12, 7, 1, 0, tzinfo=UTC)


def plan(policy: IntakePolicy, event: dict) -> list:
    source = (
        policy.source(event["source"])
        if event.get("source") in policy.sources
        else policy.source("siem-alerts")
    )
    parsed = parse_event(json.dumps(event), source)
    return starts_for(parsed, source.events[parsed.kind], message_id="m-1", now=NOW)


def test_an_alert_naming_a_host_starts_contain_host_with_the_mapped_params(policy: IntakePolicy) -> None:
    [start] = plan(policy, alert())
    assert start.workflow == "soc_contain_host"
    assert start.run_id == "intake__siem-alerts__ALERT-0001"
    assert start.conf["host"] == "i-0123456789abcdef0"
    assert start.conf["alert_id"] == "ALERT-0001"
    assert start.conf["tenant"] == "acme"
    assert start.conf["correlation_id"] == "siem-alerts:ALERT-0001"
    assert start.conf[EVENT_CONF_KEY] == {
        "source": "siem-alerts",
        "id": "ALERT-0001",
        "kind": "siem.alert",
        "message_id": "m-1",
    }


def test_an_alert_naming_an_ip_also_blocks_it_until_the_policy_expiry(policy: IntakePolicy) -> None:
    starts = plan(policy, alert(ip="203.0.113.7"))
    assert [s.workflow for s in starts] == ["soc_contain_host", "soc_block_indicator"]
    block = starts[1].conf
    assert block["indicator"] == "203.0.113.7"
    assert block["expires_at"] == "2026-12-07T04:00:00Z"  # 3h in intake.yaml
    assert "host" not in block


def test_an_absent_optional_field_is_left_to_the_workflow_default(policy: IntakePolicy) -> None:
    [start] = plan(policy, alert(summary=None))
    assert "summary" not in start.conf


def test_the_same_event_gives_the_same_run_id_and_another_event_another() -> None:
    assert run_id_for("siem-alerts", "A-1") == run_id_for("siem-alerts", "A-1")
    assert run_id_for("siem-alerts", "A-1") != run_id_for("siem-alerts", "A-2")
    assert run_id_for("siem-alerts", "A-1") != run_id_for("hris-events", "A-1")


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        pytest.param(
            alert(host="not-an-instance; rm -rf /"), "data.host: does not satisfy pattern", id="bad-host"
        ),
        pytest.param(alert(severity="apocalyptic"), "data.severity: does not satisfy enum", id="bad-enum"),
        pytest.param(alert(host=None), "data: does not satisfy anyOf host or ip", id="neither-host-nor-ip"),
        pytest.param(
            alert(extra="x"),
            "data: Additional properties are not allowed ('extra' was unexpected)",
            id="unknown-field",
        ),
        pytest.param(
            {**alert(), "kind": "siem.unknown"},
            "kind: 'siem.unknown' is not an event of siem-alerts",
            id="unknown-kind",
        ),
        pytest.param(
            {**alert(), "source": "hris-events"},
            "source: 'hris-events' sent to the queue of 'siem-alerts'",
            id="other-source",
        ),
        pytest.param({**alert(), "id": "x"}, "id: does not satisfy pattern", id="short-id"),
        pytest.param(
            {**alert(), "occurred_at": "yesterday"},
            "occurred_at: does not satisfy format date-time",
            id="bad-time",
        ),
    ],
)
def test_an_invalid_event_is_refused_with_where_and_which_rule(
    policy: IntakePolicy, event: dict, reason: str
) -> None:
    with pytest.raises(EventRejected) as refused:
        parse_event(json.dumps(event), policy.source("siem-alerts"))
    assert reason in refused.value.reason


def test_a_refusal_never_repeats_the_offending_value(policy: IntakePolicy) -> None:
    with pytest.raises(EventRejected) as refused:
        parse_event(json.dumps(alert(host="SECRET-LOOKING-VALUE")), policy.source("siem-alerts"))
    assert "SECRET-LOOKING-VALUE" not in refused.value.reason
    assert refused.value.event_id == "ALERT-0001"


@pytest.mark.parametrize("body", ["not json", "[1, 2]", "x" * (256 * 1024 + 1)])
def test_a_body_that_is_no_event_is_refused(policy: IntakePolicy, body: str) -> None:
    with pytest.raises(EventRejected):
        parse_event(body, policy.source("siem-alerts"))


def test_a_leaver_starts_offboarding(policy: IntakePolicy) -> None:
    event = {
        "source": "hris-events",
        "id": "HR-2026-0042",
        "kind": "hris.leaver",
        "occurred_at": "2026-12-07T01:00:00+01:00",
        "data": {"employee_id": "E01234", "uid": "frank.leaver", "last_day": "2026-12-31"},
    }
    [start] = plan(policy, event)
    assert (start.workflow, start.conf["uid"], start.conf["last_day"]) == (
        "hr_offboarding",
        "frank.leaver",
        "2026-12-31",
    )


def test_a_psa_milestone_starts_the_invoice(policy: IntakePolicy) -> None:
    data = {
        "tenant": "acme",
        "contract_id": "CT-2026-001",
        "milestone_id": "M1",
        "period_start": "2026-11-01",
        "period_end": "2026-11-30",
        "export_key": "exports/acme/CT-2026-001/M1.csv",
    }
    event = {
        "source": "psa-events",
        "id": "PSA-77",
        "kind": "psa.milestone",
        "occurred_at": "2026-12-07T01:00:00Z",
        "data": data,
    }
    [start] = plan(policy, event)
    assert start.workflow == "invoicing_milestone_invoice"
    assert {k: start.conf[k] for k in data} == data
