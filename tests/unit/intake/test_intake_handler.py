"""The batch handler against real SQS semantics (moto): delete only after the runs exist."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pytest
from intake_samples import alert

from include.audit import records
from include.intake.events import Start
from include.intake.handler import BatchHandler, messages_of
from include.intake.policy import IntakePolicy
from include.intake.queues import MESSAGE_ID_ATTRIBUTE, REASON_ATTRIBUTE, IntakeQueues
from include.intake.starter import StartRefused, StartResult


class FakeAirflow:
    """Run ids that exist, as Airflow keeps them: a second start of one is a duplicate."""

    def __init__(self, fail: type[Exception] | None = None, refuse: str | None = None) -> None:
        self.runs: dict[tuple[str, str], dict[str, Any]] = {}
        self.fail = fail
        self.refuse = refuse

    def start(self, start: Start) -> StartResult:
        if self.fail is not None:
            raise self.fail("API server unreachable")
        if self.refuse is not None:
            raise StartRefused(self.refuse)
        if (start.workflow, start.run_id) in self.runs:
            return "duplicate"
        self.runs[(start.workflow, start.run_id)] = start.conf
        return "started"


def receive(sqs: Any, url: str, visibility: int = 30) -> list[dict[str, Any]]:
    response = sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=visibility, MessageAttributeNames=["All"]
    )
    return response.get("Messages") or []


def counts(sqs: Any, url: str) -> tuple[int, int]:
    attributes = sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]), int(
        attributes["ApproximateNumberOfMessagesNotVisible"]
    )


def setup(
    policy: IntakePolicy, sqs: Any, airflow: FakeAirflow, *bodies: str
) -> tuple[BatchHandler, IntakeQueues, list]:
    source = policy.source("siem-alerts")
    queues = IntakeQueues(source, sqs)
    for body in bodies:
        queues.publish(body)
    audit: list[Mapping[str, Any]] = []
    handler = BatchHandler(source, queues, airflow, audit=audit.append)
    return handler, queues, audit


def test_a_valid_alert_starts_its_run_and_only_then_is_deleted(policy: IntakePolicy, sqs: Any) -> None:
    airflow = FakeAirflow()
    handler, queues, audit = setup(policy, sqs, airflow, json.dumps(alert()))
    [outcome] = handler.handle(receive(sqs, queues.url))
    assert outcome.status == "started"
    assert list(airflow.runs) == [("soc_contain_host", "intake__siem-alerts__ALERT-0001")]
    assert counts(sqs, queues.url) == (0, 0)
    assert [(r["kind"], r["dag_id"], r["details"]["event_id"]) for r in audit] == [
        (records.INTAKE_STARTED, "soc_contain_host", "ALERT-0001")
    ]
    assert audit[0]["actor"] == "intake:siem-alerts"


def test_the_same_event_twice_starts_one_run_and_both_messages_go(policy: IntakePolicy, sqs: Any) -> None:
    airflow = FakeAirflow()
    handler, queues, audit = setup(policy, sqs, airflow, json.dumps(alert()), json.dumps(alert()))
    outcomes = handler.handle(receive(sqs, queues.url))
    assert sorted(o.status for o in outcomes) == ["duplicate", "started"]
    assert len(airflow.runs) == 1
    assert counts(sqs, queues.url) == (0, 0)
    assert sorted(r["kind"] for r in audit) == [records.INTAKE_DUPLICATE, records.INTAKE_STARTED]


def test_a_malformed_event_goes_to_the_dead_letter_queue_with_its_reason(
    policy: IntakePolicy, sqs: Any
) -> None:
    airflow = FakeAirflow()
    body = json.dumps(alert(host="laptop-42"))
    handler, queues, audit = setup(policy, sqs, airflow, body)
    [message] = receive(sqs, queues.url)
    [outcome] = handler.handle([message])
    assert outcome.status == "rejected"
    assert airflow.runs == {}
    assert counts(sqs, queues.url) == (0, 0)
    [dead] = receive(sqs, queues.dead_letter_url)
    assert dead["Body"] == body
    assert dead["MessageAttributes"][REASON_ATTRIBUTE]["StringValue"].startswith(
        "data.host: does not satisfy pattern"
    )
    assert dead["MessageAttributes"][MESSAGE_ID_ATTRIBUTE]["StringValue"] == message["MessageId"]
    [record] = audit
    assert record["kind"] == records.INTAKE_REJECTED
    assert "laptop-42" not in json.dumps(record)


def test_a_failed_start_keeps_the_message_for_redelivery(policy: IntakePolicy, sqs: Any) -> None:
    handler, queues, audit = setup(policy, sqs, FakeAirflow(fail=ConnectionError), json.dumps(alert()))
    [outcome] = handler.handle(receive(sqs, queues.url, visibility=0))
    assert outcome.status == "failed"
    assert "ConnectionError" in (outcome.reason or "")
    assert audit == []
    # Not deleted: received again (here at once: visibility 0), and this time the run starts once.
    airflow = FakeAirflow()
    handler.starter = airflow
    [again] = handler.handle(receive(sqs, queues.url))
    assert again.status == "started"
    assert len(airflow.runs) == 1
    assert counts(sqs, queues.url) == (0, 0)


def test_params_airflow_refuses_dead_letter_the_event(policy: IntakePolicy, sqs: Any) -> None:
    refusal = "soc_contain_host refused the run (value_error): tenant not in enum"
    handler, queues, _ = setup(policy, sqs, FakeAirflow(refuse=refusal), json.dumps(alert(tenant="nobody")))
    [outcome] = handler.handle(receive(sqs, queues.url))
    assert outcome.status == "rejected"
    [dead] = receive(sqs, queues.dead_letter_url)
    assert dead["MessageAttributes"][REASON_ATTRIBUTE]["StringValue"] == refusal
    assert counts(sqs, queues.url) == (0, 0)


def test_after_max_receive_count_sqs_moves_an_unhandled_message_to_the_dead_letter_queue(
    policy: IntakePolicy, sqs: Any
) -> None:
    source = policy.source("siem-alerts")
    handler, queues, _ = setup(policy, sqs, FakeAirflow(fail=ConnectionError), json.dumps(alert()))
    for _ in range(source.max_receive_count):
        handler.handle(receive(sqs, queues.url, visibility=0))
    assert receive(sqs, queues.url) == []
    assert len(receive(sqs, queues.dead_letter_url)) == 1


class _AssetEvent:
    def __init__(self, messages: list[dict[str, Any]]) -> None:
        self.extra = {"from_trigger": True, "payload": {"queue": "siem-alerts", "messages": messages}}


def test_messages_of_reads_every_asset_event_and_each_message_once() -> None:
    first = [{"MessageId": "a", "Body": "1"}, {"MessageId": "b", "Body": "2"}]
    second = [{"MessageId": "b", "Body": "2"}, {"MessageId": "c", "Body": "3"}]
    messages = messages_of({"asset": [_AssetEvent(first), _AssetEvent(second)]})
    assert [m["MessageId"] for m in messages] == ["a", "b", "c"]


@pytest.mark.parametrize("extra", [None, {}, {"payload": None}, {"payload": {"status": "x"}}])
def test_messages_of_ignores_events_without_messages(extra: Any) -> None:
    event = _AssetEvent([])
    event.extra = extra
    assert messages_of({"asset": [event]}) == []


def test_the_lazy_client_builds_its_client_on_first_use_only(monkeypatch: pytest.MonkeyPatch) -> None:
    from include.intake import queues

    built: list[str] = []

    class Client:
        def delete_message(self, **kwargs: Any) -> str:
            return "deleted"

    def build(conn_id: str) -> Client:
        built.append(conn_id)
        return Client()

    monkeypatch.setattr(queues, "sqs_client", build)
    lazy = queues.LazySqsClient("aws_intake")
    assert built == []
    assert lazy.delete_message(QueueUrl="u", ReceiptHandle="r") == "deleted"
    assert lazy.delete_message(QueueUrl="u", ReceiptHandle="r") == "deleted"
    assert built == ["aws_intake"]
