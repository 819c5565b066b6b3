"""The platform's audit writer: never fails the work, never loses an event, never records a secret.

The store is unreachable on purpose here (a closed port): events must land in the spool and come
back, in order and unchanged, when the spool is drained into a log. The listener's parsing of a
cluster-policy refusal is checked on the stack trace Airflow hands it.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from include.audit import emit as audit_emit
from include.audit.memory import MemoryAuditLog
from include.audit.verify import verify


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed again when the block ends


@pytest.fixture
def unreachable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    spool = tmp_path / "spool"
    monkeypatch.setenv(audit_emit.SPOOL_ENV, str(spool))
    monkeypatch.delenv(audit_emit.DISABLE_ENV, raising=False)
    dsn = f"postgresql://airflow:pw-not-logged@127.0.0.1:{_closed_port()}/audit"
    monkeypatch.setattr(audit_emit, "_dsn", lambda conn_id: dsn)
    audit_emit._STORES.clear()
    audit_emit._down_until.clear()
    return spool


def _event(n: int, **details: Any) -> dict[str, Any]:
    return {"kind": "task.finished", "actor": "worker", "run_id": f"run-{n}", "details": {"n": n, **details}}


def test_dsn_from_connection_quotes_credentials() -> None:
    conn = SimpleNamespace(login="audit writer", password="p@ss:/w", host="db", port=None, schema=None)
    assert audit_emit.dsn_from_connection(conn) == "postgresql://audit%20writer:p%40ss%3A%2Fw@db:5432/audit"
    bare = SimpleNamespace(login=None, password=None, host="127.0.0.1", port=25432, schema="audit")
    assert audit_emit.dsn_from_connection(bare) == "postgresql://127.0.0.1:25432/audit"


def test_unreachable_store_spools_and_drain_restores_every_event_in_order(
    unreachable: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for n in range(5):
        assert audit_emit.emit(_event(n)) is None  # spooled, not raised
    assert "pw-not-logged" not in caplog.text
    assert "audit store unavailable (OperationalError)" in caplog.text
    lines = [json.loads(line) for f in unreachable.glob("*.jsonl") for line in f.read_text().splitlines()]
    assert [line["details"]["n"] for line in lines] == [0, 1, 2, 3, 4]
    assert all("spooled_at" in line["details"] for line in lines)

    log = MemoryAuditLog()
    assert audit_emit.drain_spool(log, unreachable) == 5
    assert [r.details["n"] for r in log.records] == [0, 1, 2, 3, 4]
    assert [r.run_id for r in log.records] == [f"run-{n}" for n in range(5)]
    assert verify(log.record_dicts(), [], None).ok
    assert list(unreachable.iterdir()) == []  # drained files are gone
    assert audit_emit.drain_spool(log, unreachable) == 0  # and nothing is appended twice


def test_after_a_failure_the_store_is_not_tried_again_for_a_while(
    unreachable: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    attempts: list[str] = []
    original = audit_emit.store

    def counting(conn_id: str = audit_emit.AUDIT_CONN_ID) -> Any:
        attempts.append(conn_id)
        return original(conn_id)

    monkeypatch.setattr(audit_emit, "store", counting)
    for n in range(3):
        audit_emit.emit(_event(n))
    assert len(attempts) == 1  # the scheduler does not wait for a connect timeout per event
    spooled = [line for f in unreachable.glob("*.jsonl") for line in f.read_text().splitlines()]
    assert len(spooled) == 3  # and nothing is lost
    monkeypatch.setattr(audit_emit.time, "monotonic", lambda: 10**9)  # the pause is over
    audit_emit.emit(_event(3))
    assert len(attempts) == 2


def test_a_failed_drain_keeps_the_rest_for_the_next(unreachable: Path) -> None:
    for n in range(4):
        audit_emit.emit(_event(n))

    class FailsOnThird(MemoryAuditLog):
        def append(self, event: Any, *, at: str | None = None) -> Any:
            if len(self.records) == 2:
                raise ConnectionError("store went away")
            return super().append(event, at=at)

    first = FailsOnThird()
    with pytest.raises(ConnectionError):
        audit_emit.drain_spool(first, unreachable)
    assert [r.details["n"] for r in first.records] == [0, 1]
    second = MemoryAuditLog()
    assert audit_emit.drain_spool(second, unreachable) == 2
    assert [r.details["n"] for r in second.records] == [2, 3]


def test_secret_looking_details_are_refused_by_name_not_recorded(unreachable: Path) -> None:
    token = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"
    audit_emit.emit(_event(1, comment=f"use {token}"))
    audit_emit.emit(_event(2, password="hunter2-hunter2"))
    text = "".join(f.read_text() for f in unreachable.glob("*.jsonl"))
    assert token not in text
    assert "hunter2" not in text
    spooled = [json.loads(line)["details"] for line in text.splitlines()]
    assert "details.comment" in spooled[0]["refused_details"]
    assert "details.password" in spooled[1]["refused_details"]


def test_disabled_audit_writes_nothing(unreachable: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(audit_emit.DISABLE_ENV, "1")
    assert audit_emit.emit(_event(1)) is None
    assert not unreachable.exists()


def test_listener_records_cluster_policy_refusals_only(monkeypatch: pytest.MonkeyPatch) -> None:
    from include.audit import listener as audit_listener

    written: list[dict[str, Any]] = []
    monkeypatch.setattr(audit_listener, "emit", written.append)
    trace = (
        "Traceback (most recent call last):\n  File ...\n"
        "airflow.exceptions.AirflowClusterPolicyViolation: domain-pool: task t of DAG d runs in pool "
        "'default_pool', not its domain's pool 'soc'\n"
    )
    audit_listener.on_new_dag_import_error("dags/soc/bad.py", trace)
    audit_listener.on_new_dag_import_error("dags/soc/typo.py", "SyntaxError: invalid syntax\n")
    assert len(written) == 1
    assert written[0]["kind"] == "policy.violation"
    assert written[0]["details"] == {
        "file": "dags/soc/bad.py",
        "rule": "domain-pool",
        "message": "task t of DAG d runs in pool 'default_pool', not its domain's pool 'soc'",
    }
