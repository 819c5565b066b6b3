"""The 3.3.2 clear-with-a-deadline fix (include/workflows/deadline_fix.py) on Airflow's real models.

Rows are written the way Airflow writes them: the DeadlineAlert from the workflow factory, encoded
by Airflow's serializer into a ``deadline_alert`` row, and its Deadline created as DAG run creation
creates it, in an in-memory SQLite database with Airflow's own tables.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import airflow
import pytest
import uuid6
from airflow.models import import_all_models, taskinstance
from airflow.models.base import Base
from airflow.models.deadline import Deadline
from airflow.models.deadline_alert import DeadlineAlert as DeadlineAlertModel
from airflow.sdk.definitions.deadline import VariableInterval
from airflow.serialization.decoders import decode_deadline_alert
from airflow.serialization.encoders import encode_deadline_alert
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from include.policies.loader import load_domain_policy
from include.workflows import deadline_fix
from include.workflows.factory import sla_deadline

REPO_ROOT = Path(__file__).resolve().parents[3]
UPSTREAM = getattr(taskinstance, deadline_fix.TARGET_FUNCTION)
SLA_ALERT = sla_deadline(load_domain_policy().domain("support"), "infrastructure_change")
SLA = timedelta(hours=1)  # support's infrastructure-change SLA in include/policies/domains.yaml
QUEUED_AT = datetime(2026, 3, 2, 9, 0, 0, 250_000, tzinfo=UTC)
CLEARED_AT = datetime(2026, 3, 2, 9, 17, 41, 123_456, tzinfo=UTC)
RUN_ID = 7


@pytest.fixture(scope="module", autouse=True)
def upstream_is_unpatched() -> None:
    assert UPSTREAM is not deadline_fix.recalculate_dagrun_queued_at_deadlines


@pytest.fixture
def session() -> Iterator[Session]:
    import_all_models()  # the deadline tables' foreign keys name the other tables
    engine = create_engine("sqlite://")
    tables = [Base.metadata.tables[name] for name in ("callback", "deadline_alert", "deadline")]
    Base.metadata.create_all(engine, tables=tables)
    with Session(engine) as db:
        yield db
    engine.dispose()


def store_deadline(
    db: Session,
    *,
    interval: Any = None,
    alert: Any = SLA_ALERT,
    dagrun_id: int = RUN_ID,
    missed: bool = False,
    reference: dict[str, str] | None = None,
) -> Deadline:
    """A deadline_alert row as SerializedDagModel writes it and its Deadline as DAG run creation does.

    ``interval`` replaces the stored interval (a legacy number, a malformed value).
    """
    encoded = encode_deadline_alert(alert)
    row = DeadlineAlertModel(
        serialized_dag_id=uuid6.uuid7(),
        name=encoded["name"],
        reference=reference or encoded["reference"],
        interval=encoded["interval"] if interval is None else interval,
        callback_def=encoded["callback"],
    )
    db.add(row)
    db.flush()
    decoded = decode_deadline_alert(encoded)
    deadline = Deadline(
        deadline_time=QUEUED_AT + SLA,
        callback=decoded.callback,
        dagrun_id=dagrun_id,
        deadline_alert_id=row.id,
        dag_id="support_e2e",
    )
    deadline.missed = missed
    db.add(deadline)
    db.commit()
    return deadline


def stored_time(db: Session, deadline: Deadline) -> datetime:
    db.expire_all()
    return db.execute(select(Deadline.deadline_time).where(Deadline.id == deadline.id)).scalar_one()


def clear(db: Session, function: Any = deadline_fix.recalculate_dagrun_queued_at_deadlines) -> None:
    """What clear_task_instances does for the run: recalculate with the new queued_at, then commit."""
    function(SimpleNamespace(id=RUN_ID, dag_id="support_e2e", run_id="manual__1"), CLEARED_AT, db)
    db.commit()


def test_the_stored_interval_is_a_serialized_dict() -> None:
    assert encode_deadline_alert(SLA_ALERT)["interval"] == {
        "__classname__": "datetime.timedelta",
        "__version__": 2,
        "__data__": 3600.0,
    }


def test_airflow_3_3_2_fails_the_clear(session: Session) -> None:
    """The bug, on the installed Airflow: if this fails, upstream fixed it (see the module doc)."""
    store_deadline(session)
    with pytest.raises(TypeError, match="unsupported type for timedelta seconds component: dict"):
        clear(session, UPSTREAM)


@pytest.mark.parametrize(
    "interval",
    [
        pytest.param(None, id="serialized-timedelta"),
        pytest.param(3600, id="legacy-int-seconds"),
        pytest.param(3600.0, id="legacy-float-seconds"),
    ],
)
def test_the_deadline_moves_to_the_new_queued_at_plus_the_interval(session: Session, interval: Any) -> None:
    deadline = store_deadline(session, interval=interval)
    clear(session)
    assert stored_time(session, deadline) == datetime(2026, 3, 2, 10, 17, 41, 123_456, tzinfo=UTC)
    assert stored_time(session, deadline) == CLEARED_AT + SLA


def test_only_this_runs_pending_queued_at_deadlines_move(session: Session) -> None:
    pending = store_deadline(session)
    missed = store_deadline(session, missed=True)
    other_run = store_deadline(session, dagrun_id=RUN_ID + 1)
    logical_date = store_deadline(session, reference={"reference_type": "DagRunLogicalDateDeadline"})
    clear(session)
    assert stored_time(session, pending) == CLEARED_AT + SLA
    for untouched in (missed, other_run, logical_date):
        assert stored_time(session, untouched) == QUEUED_AT + SLA


def test_a_variable_backed_interval_keeps_its_deadline(
    session: Session, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from airflow.models.variable import Variable

    def no_variable_reads(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the clear must not read a Variable (nested session)")

    monkeypatch.setattr(Variable, "get", no_variable_reads)
    alert = SLA_ALERT.__class__(
        reference=SLA_ALERT.reference,
        interval=VariableInterval("support_sla_seconds"),
        callback=SLA_ALERT.callback,
        name="variable-sla",
    )
    deadline = store_deadline(session, alert=alert)
    with caplog.at_level(logging.WARNING, logger=deadline_fix.__name__):
        clear(session)
    assert stored_time(session, deadline) == QUEUED_AT + SLA
    assert "has a variable-backed interval" in caplog.text
    assert "support_sla_seconds" in caplog.text


def test_an_interval_that_does_not_decode_keeps_its_deadline(
    session: Session, caplog: pytest.LogCaptureFixture
) -> None:
    deadline = store_deadline(session, interval={"seconds": 3600})
    fine = store_deadline(session)
    with caplog.at_level(logging.WARNING, logger=deadline_fix.__name__):
        clear(session)
    assert stored_time(session, deadline) == QUEUED_AT + SLA
    assert stored_time(session, fine) == CLEARED_AT + SLA
    assert "does not decode; its deadlines keep their time" in caplog.text


# --- the guard -------------------------------------------------------------------------------


@pytest.fixture
def restore_upstream(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(taskinstance, deadline_fix.TARGET_FUNCTION, UPSTREAM)


@pytest.mark.usefixtures("restore_upstream")
def test_install_patches_the_pinned_airflow_once() -> None:
    assert airflow.__version__ in deadline_fix.PATCHED_AIRFLOW_VERSIONS, (
        f"Airflow is {airflow.__version__}: see 'Removal' in include/workflows/deadline_fix.py"
    )
    deadline_fix.install()
    deadline_fix.install()
    assert (
        getattr(taskinstance, deadline_fix.TARGET_FUNCTION)
        is deadline_fix.recalculate_dagrun_queued_at_deadlines
    )


@pytest.mark.usefixtures("restore_upstream")
def test_install_refuses_another_airflow_version(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(airflow, "__version__", "3.3.3")
    deadline_fix.install()
    assert getattr(taskinstance, deadline_fix.TARGET_FUNCTION) is UPSTREAM
    assert "is for Airflow 3.3.2, not 3.3.3: not installed" in caplog.text


def _fixed_upstream(dagrun: Any, new_queued_at: datetime, session: Any) -> None:
    """Stands for an upstream function that decodes the interval (no faulty expression)."""


@pytest.mark.parametrize(
    ("function", "version", "reason"),
    [
        pytest.param(UPSTREAM, "3.3.2", None, id="faulty-3.3.2"),
        pytest.param(UPSTREAM, "3.4.0", "Airflow 3.4.0 is not a patched version (3.3.2)", id="other-version"),
        pytest.param(
            _fixed_upstream,
            "3.3.2",
            "_recalculate_dagrun_queued_at_deadlines no longer contains "
            "'timedelta(seconds=deadline_alert.interval)' (fixed upstream?)",
            id="fixed-upstream",
        ),
        pytest.param(None, "3.3.2", "airflow.models.taskinstance has no", id="function-gone"),
        pytest.param(len, "3.3.2", "cannot be read to check it", id="no-source"),
    ],
)
def test_refusal(function: Any, version: str, reason: str | None) -> None:
    problem = deadline_fix.refusal(function, version)
    if reason is None:
        assert problem is None
    else:
        assert problem is not None
        assert reason in problem


def test_patch_leaves_a_fixed_upstream_alone(caplog: pytest.LogCaptureFixture) -> None:
    module = SimpleNamespace(**{deadline_fix.TARGET_FUNCTION: _fixed_upstream})
    assert deadline_fix.patch(module) is False  # type: ignore[arg-type]
    assert getattr(module, deadline_fix.TARGET_FUNCTION) is _fixed_upstream
    assert "fixed upstream?" in caplog.text


def test_every_component_gets_the_patch_through_airflow_local_settings(tmp_path: Path) -> None:
    """A fresh interpreter set up as the stack's components are (config/ on PYTHONPATH)."""
    probe = textwrap.dedent(
        """
        import sys
        import airflow
        from airflow.models import TaskInstance
        from airflow.models import taskinstance
        from include.workflows import deadline_fix
        assert taskinstance._recalculate_dagrun_queued_at_deadlines is (
            deadline_fix.recalculate_dagrun_queued_at_deadlines
        )
        assert not any(isinstance(f, deadline_fix._PatchAfterImport) for f in sys.meta_path)
        assert type(taskinstance.__spec__.loader).__name__ == "SourceFileLoader"
        print("patched")
        """
    )
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path),
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), str(REPO_ROOT / "config")]),
    }
    result = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("patched")
