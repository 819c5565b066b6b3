"""The SLA of a hold counts from the hold's end (:mod:`include.workflows.holds`), as Airflow evaluates it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from unittest import mock

import pytest
from airflow.models import DagRun
from airflow.models.base import Base
from airflow.sdk import Param
from airflow.serialization.decoders import decode_deadline_alert
from airflow.serialization.encoders import encode_deadline_alert
from airflow.utils.db import import_all_models
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from include.policies.loader import load_domain_policy
from include.workflows.factory import WorkflowDefinitionError, sla_deadline, workflow_dag_kwargs
from include.workflows.holds import HoldEndDeadline, deadline_base, hold_end

SOC = load_domain_policy().domain("soc")
SLA = SOC.sla["infrastructure_change"]  # 30 min in include/policies/domains.yaml
LONGEST = SOC.timeouts["infrastructure_change"].dagrun_timeout  # 4 h
QUEUED = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)


def test_the_end_is_read_from_the_conf_as_an_aware_time() -> None:
    assert hold_end({"expires_at": "2026-12-07T11:00:00Z"}, "expires_at") == datetime(
        2026, 12, 7, 11, tzinfo=UTC
    )
    assert hold_end({"expires_at": "2026-12-07T12:00:00+01:00"}, "expires_at") == datetime(
        2026, 12, 7, 11, tzinfo=UTC
    )
    for conf in ({}, None, {"expires_at": 5}, {"expires_at": "tomorrow"}, {"expires_at": "2026-12-07T11:00"}):
        assert hold_end(conf, "expires_at") is None, conf


def test_the_base_is_the_later_of_queue_time_and_end_bounded_by_the_run_limit() -> None:
    assert deadline_base(QUEUED, QUEUED + timedelta(hours=2), LONGEST) == QUEUED + timedelta(hours=2)
    assert deadline_base(QUEUED, QUEUED - timedelta(hours=1), LONGEST) == QUEUED
    assert deadline_base(QUEUED, None, LONGEST) == QUEUED
    assert deadline_base(QUEUED, QUEUED + timedelta(days=5), LONGEST) == QUEUED + LONGEST


@pytest.fixture
def session() -> Iterator[Session]:
    import_all_models()
    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine, tables=[Base.metadata.tables[t] for t in ("log_template", "dag_run")])
    with Session(engine) as db:
        yield db
    engine.dispose()


def _run(db: Session, run_id: str, conf: dict | None) -> None:
    run = DagRun(dag_id="soc_block_indicator", run_id=run_id, conf=conf, run_type="manual", state="queued")
    run.queued_at = QUEUED
    db.add(run)
    db.flush()


@pytest.mark.parametrize(
    ("conf", "expected"),
    [
        ({"expires_at": "2026-12-07T11:00:00Z"}, datetime(2026, 12, 7, 11, tzinfo=UTC) + SLA),
        ({"expires_at": "2026-12-07T08:00:00Z"}, QUEUED + SLA),  # already over: counts from the queue time
        ({"expires_at": "2027-01-07T08:00:00Z"}, QUEUED + LONGEST + SLA),  # never beyond the run's end
        (None, QUEUED + SLA),
    ],
)
def test_airflow_evaluates_the_serialized_alert_to_the_hold_end_plus_the_sla(
    session: Session, conf: dict | None, expected: datetime
) -> None:
    """As the API server and the scheduler do at run creation: encode, decode (via the plugin), evaluate."""
    _run(session, "manual__1", conf)
    encoded = encode_deadline_alert(sla_deadline(SOC, "infrastructure_change", hold_until="expires_at"))
    assert encoded["reference"]["__class_path"] == "include.workflows.holds.HoldEndDeadline"
    assert encoded["reference"]["longest_seconds"] == LONGEST.total_seconds()
    registered = {"include.workflows.holds.HoldEndDeadline": HoldEndDeadline}
    with mock.patch("airflow.plugins_manager.get_deadline_references_plugins", return_value=registered):
        decoded = decode_deadline_alert(encoded)
    deadline = decoded.reference.evaluate_with(
        session=session, interval=decoded.interval, dag_id="soc_block_indicator", run_id="manual__1"
    )
    assert deadline == expected


def test_other_workflows_keep_the_queue_time_reference() -> None:
    encoded = encode_deadline_alert(sla_deadline(SOC, "infrastructure_change"))
    assert encoded["reference"] == {"reference_type": "DagRunQueuedAtDeadline"}


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"expires_at": Param("2026-12-07T11:00:00Z", type="string")},  # optional: a default
        {"expires_at": Param(type="integer")},
    ],
)
def test_hold_until_must_name_a_required_string_param(params: dict) -> None:
    with pytest.raises(WorkflowDefinitionError, match="hold_until='expires_at' must name a required string"):
        workflow_dag_kwargs(
            dag_id="soc_x",
            domain="soc",
            doc_md="x",
            kind="infrastructure_change",
            params=params,
            hold_until="expires_at",
        )
