"""Event intake end to end: events published to the SQS queues (moto) start workflows through the
asset watchers and the intake DAGs, in the real stack (triggerer, scheduler, Execution API).

An alert starts soc_contain_host with the event in its conf; the same alert sent twice gives one run;
a malformed alert lands in the dead-letter queue with its reason and starts nothing; an HRIS leaver
starts hr_offboarding. Runs are only looked at, not driven to the end (their own tests do that).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from devstack.api_client import AirflowApi, ApiError
from devstack.aws_seed import account_client
from devstack.config import REGION
from devstack.stack import Stack
from include.audit.store import AuditStore
from include.intake.events import EVENT_CONF_KEY, run_id_for
from include.intake.policy import load_intake
from include.intake.queues import REASON_ATTRIBUTE, IntakeQueues
from include.policies.tenants import platform_account_id

POLICY = load_intake()
INTAKE_DAGS = {source.dag_id for source in POLICY.sources.values()}
TARGETS = {"soc_contain_host", "hr_offboarding"}


@pytest.fixture(scope="module")
def sqs(stack: Stack, api: AirflowApi) -> Any:
    api.wait_for_dags(INTAKE_DAGS | TARGETS)
    return account_client("sqs", platform_account_id(), stack.profile.moto_url, REGION)


def queues(sqs: Any, source: str) -> IntakeQueues:
    return IntakeQueues(POLICY.source(source), sqs)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def alert(event_id: str, host: str = "i-0abc1234def567890") -> dict[str, Any]:
    return {
        "source": "siem-alerts",
        "id": event_id,
        "kind": "siem.alert",
        "occurred_at": "2026-12-07T01:00:00Z",
        "data": {"tenant": "acme", "severity": "high", "host": host, "summary": "EDR: beacon to known C2"},
    }


def wait_for(what: str, probe: Callable[[], Any], timeout: float = 60, poll: float = 0.3) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        if (value := probe()) is not None:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not after {timeout:.0f}s")
        time.sleep(poll)


def run_or_none(api: AirflowApi, dag_id: str, run_id: str) -> dict[str, Any] | None:
    try:
        return api.run(dag_id, run_id)
    except ApiError as error:
        if error.status_code == 404:
            return None
        raise


def audit_of(stack: Stack, correlation_id: str, kind: str) -> list[dict[str, Any]] | None:
    """The audit records of one kind for an event (its correlation id), or ``None`` while there are none."""
    with AuditStore(stack.audit_dsn) as audit:
        found = [r for r in audit.records() if r["correlation_id"] == correlation_id and r["kind"] == kind]
    return found or None


def queue_drained(sqs: Any, url: str) -> bool | None:
    attributes = sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return (
        True
        if int(attributes["ApproximateNumberOfMessages"])
        + int(attributes["ApproximateNumberOfMessagesNotVisible"])
        == 0
        else None
    )


def test_an_alert_starts_contain_host_with_the_event_in_its_conf(
    stack: Stack, api: AirflowApi, sqs: Any
) -> None:
    event_id = unique("ALERT")
    message_id = queues(sqs, "siem-alerts").publish(alert(event_id))
    run_id = run_id_for("siem-alerts", event_id)
    run = wait_for("the soc_contain_host run", lambda: run_or_none(api, "soc_contain_host", run_id))
    assert run["conf"]["host"] == "i-0abc1234def567890"
    assert run["conf"]["alert_id"] == event_id
    assert run["conf"]["correlation_id"] == f"siem-alerts:{event_id}"
    assert run["conf"][EVENT_CONF_KEY] == {
        "source": "siem-alerts",
        "id": event_id,
        "kind": "siem.alert",
        "message_id": message_id,
    }
    # Started, not only created: its first task gets going.
    wait_for(
        "inspect_host to start",
        lambda: (
            api.task_states("soc_contain_host", run_id).get("inspect_host")
            not in (None, "scheduled", "queued")
            or None
        ),
    )
    wait_for("the siem-alerts queue to be empty", lambda: queue_drained(sqs, queues(sqs, "siem-alerts").url))
    # Who started it: the intake's record, and the run's own run.triggered under the event's id.
    correlation = f"siem-alerts:{event_id}"
    [started] = wait_for("intake.started", lambda: audit_of(stack, correlation, "intake.started"))
    assert (started["actor"], started["dag_id"], started["run_id"]) == (
        "intake:siem-alerts",
        "soc_contain_host",
        run_id,
    )
    assert started["details"]["message_id"] == message_id
    [triggered] = wait_for("run.triggered", lambda: audit_of(stack, correlation, "run.triggered"))
    assert triggered["run_id"] == run_id


def test_the_same_alert_twice_gives_one_run(stack: Stack, api: AirflowApi, sqs: Any) -> None:
    event_id = unique("ALERT")
    intake = queues(sqs, "siem-alerts")
    intake.publish(alert(event_id))
    run_id = run_id_for("siem-alerts", event_id)
    wait_for("the first run", lambda: run_or_none(api, "soc_contain_host", run_id))
    intake.publish(alert(event_id))  # the SIEM re-sends (or SQS redelivers) the same alert
    wait_for("the siem-alerts queue to be empty", lambda: queue_drained(sqs, intake.url))
    runs = api.get("dags/soc_contain_host/dagRuns", limit=100, run_id_pattern=event_id)["dag_runs"]
    assert [r["dag_run_id"] for r in runs] == [run_id]
    assert len(audit_of(stack, f"siem-alerts:{event_id}", "intake.duplicate") or []) == 1


def test_a_malformed_alert_is_dead_lettered_with_its_reason_and_starts_nothing(
    stack: Stack, api: AirflowApi, sqs: Any
) -> None:
    event_id = unique("ALERT")
    intake = queues(sqs, "siem-alerts")
    message_id = intake.publish(alert(event_id, host="laptop-of-bob"))

    def dead_lettered() -> dict[str, Any] | None:
        response = sqs.receive_message(
            QueueUrl=intake.dead_letter_url,
            MaxNumberOfMessages=10,
            MessageAttributeNames=["All"],
            VisibilityTimeout=0,
        )
        for message in response.get("Messages") or ():
            if json.loads(message["Body"]).get("id") == event_id:
                return message
        return None

    dead = wait_for("the alert in siem-alerts-dlq", dead_lettered)
    attributes = dead["MessageAttributes"]
    assert attributes[REASON_ATTRIBUTE]["StringValue"].startswith("data.host: does not satisfy pattern")
    assert attributes["intake-message-id"]["StringValue"] == message_id
    assert run_or_none(api, "soc_contain_host", run_id_for("siem-alerts", event_id)) is None
    [rejected] = wait_for(
        "intake.rejected", lambda: audit_of(stack, f"siem-alerts:{event_id}", "intake.rejected")
    )
    assert rejected["details"]["reason"].startswith("data.host: does not satisfy pattern")
    assert "laptop-of-bob" not in json.dumps(rejected)
    wait_for("the siem-alerts queue to be empty", lambda: queue_drained(sqs, intake.url))


def test_an_hris_leaver_starts_offboarding(api: AirflowApi, sqs: Any) -> None:
    event_id = unique("HR")
    queues(sqs, "hris-events").publish(
        {
            "source": "hris-events",
            "id": event_id,
            "kind": "hris.leaver",
            "occurred_at": "2026-12-07T01:00:00Z",
            "data": {"employee_id": "E07001", "uid": "intake.leaver", "last_day": "2026-12-31"},
        }
    )
    run = wait_for(
        "the hr_offboarding run",
        lambda: run_or_none(api, "hr_offboarding", run_id_for("hris-events", event_id)),
    )
    assert (run["conf"]["uid"], run["conf"]["employee_id"]) == ("intake.leaver", "E07001")
    assert run["conf"][EVENT_CONF_KEY]["source"] == "hris-events"
