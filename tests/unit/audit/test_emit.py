"""The platform's audit writer: never fails the work, never loses an event, never records a secret.

The store is unreachable on purpose here (a closed port): events must land in the spool and come
back, in order and unchanged, when the spool is drained into a log. The listener's parsing of a
cluster-policy refusal is checked on the stack trace Airflow hands it.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
import stat
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from include.audit import emit as audit_emit
from include.audit.memory import MemoryAuditLog
from include.audit.records import AUDIT_SPOOL_QUARANTINED as QUARANTINED
from include.audit.records import REDACTED, redact_details, validate_event
from include.audit.verify import verify


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed again when the block ends


@pytest.fixture
def unreachable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    spool = tmp_path / "spool"
    monkeypatch.setenv(audit_emit.SPOOL_ENV, str(spool))
    monkeypatch.setenv(audit_emit.SPOOL_KEYS_ENV, str(tmp_path / "spool-keys"))
    monkeypatch.setenv(audit_emit.COMPONENT_ENV, "scheduler")
    monkeypatch.delenv(audit_emit.DISABLE_ENV, raising=False)
    dsn = f"postgresql://airflow:pw-not-logged@127.0.0.1:{_closed_port()}/audit"
    monkeypatch.setattr(audit_emit, "_dsn", lambda conn_id: dsn)
    audit_emit._STORES.clear()
    audit_emit._down_until.clear()
    audit_emit._spooled_pids.clear()
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
    (spool_file,) = unreachable.glob("*.jsonl")
    assert spool_file.name == f"scheduler-{os.getpid()}.jsonl"
    lines = [json.loads(line) for line in spool_file.read_text().splitlines()]
    assert [line["event"]["details"]["n"] for line in lines] == [0, 1, 2, 3, 4]
    assert all("spooled_at" in line["event"]["details"] for line in lines)
    assert {line["event"]["details"]["spooled_by"] for line in lines} == {"scheduler"}
    assert {line["component"] for line in lines} == {"scheduler"}
    assert all(len(line["mac"]) == 64 for line in lines)

    log = MemoryAuditLog()
    assert audit_emit.drain_spool(log, unreachable).appended == 5
    assert [r.details["n"] for r in log.records] == [0, 1, 2, 3, 4]
    assert [r.run_id for r in log.records] == [f"run-{n}" for n in range(5)]
    assert verify(log.record_dicts(), [], None).ok
    assert list(unreachable.iterdir()) == []  # drained files are gone
    assert audit_emit.drain_spool(log, unreachable).appended == 0  # and nothing is appended twice


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
    (rest,) = unreachable.glob("*.jsonl")
    assert rest.name == f"scheduler-{os.getpid()}.rest-{os.getpid()}-3.jsonl"
    second = MemoryAuditLog()
    assert audit_emit.drain_spool(second, unreachable).appended == 2
    assert [r.details["n"] for r in second.records] == [2, 3]  # signed lines stay valid in the rest file


def test_only_the_credential_looking_value_is_redacted(unreachable: Path) -> None:
    """approval.answered with an access key id pasted in the comment keeps its outcome."""
    access_key = "AKIA" + "IOSFODNN7EXAMPLE"
    answered = {
        "kind": "approval.answered",
        "actor": "ali_lead",
        "task_id": "approve_host_isolate",
        "details": {
            "outcome": "approved",
            "option": "Approve",
            "chosen": ["Approve"],
            "comment": f"ok, the leaked key was {access_key}",
            "responded_at": "2026-03-04T05:06:07Z",
            "steps": [{"step": 1, "password": "hunter2-hunter2", "token_name": "rt"}],
        },
    }
    audit_emit.emit(answered)
    text = "".join(f.read_text() for f in unreachable.glob("*.jsonl"))
    assert access_key not in text
    assert "hunter2" not in text
    log = MemoryAuditLog()
    audit_emit.drain_spool(log, unreachable)
    (record,) = log.records
    details = {k: v for k, v in record.details.items() if k not in ("spooled_at", "spooled_by")}
    assert details == {
        "outcome": "approved",
        "option": "Approve",
        "chosen": ["Approve"],
        "comment": REDACTED,
        "responded_at": "2026-03-04T05:06:07Z",
        "steps": [{"step": 1, "password": REDACTED, "token_name": "rt"}],
    }


@pytest.mark.parametrize(
    ("details", "expected", "paths"),
    [
        pytest.param(
            {"a": 1, "dsn": "postgresql://app:hunter2hunter2@db/app"},
            {"a": 1, "dsn": REDACTED},
            ["details.dsn"],
            id="uri-password",
        ),
        pytest.param(
            {"apiKey": "x", "keep": [1, "two"]},
            {"apiKey": REDACTED, "keep": [1, "two"]},
            ["details.apiKey"],
            id="secret-key-name",
        ),
        pytest.param({"token": None}, {"token": None}, [], id="no-value-nothing-to-redact"),
        pytest.param({"token_name": "rt"}, {"token_name": "rt"}, [], id="a-reference-stays"),
    ],
)
def test_redact_details(details: dict[str, Any], expected: dict[str, Any], paths: list[str]) -> None:
    assert redact_details(details) == (expected, paths)
    assert validate_event({"kind": "side_effect", "actor": "w", "details": expected})["details"] == expected


def test_the_store_still_refuses_an_unredacted_secret() -> None:
    with pytest.raises(ValueError, match=r"details\.password: key names a secret"):
        validate_event({"kind": "side_effect", "actor": "w", "details": {"password": "x"}})


# --- the spool's MAC and quarantine ----------------------------------------------------------


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def test_a_tampered_line_is_quarantined_named_and_reported(
    unreachable: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for n in range(3):
        audit_emit.emit(_event(n))
    (spool_file,) = unreachable.glob("*.jsonl")
    lines = _lines(spool_file)
    tampered = json.loads(lines[1])
    tampered["event"]["actor"] = "mallory"  # claims another actor, keeps the old MAC
    lines[1] = json.dumps(tampered)
    spool_file.write_text("\n".join(lines) + "\n")

    log = MemoryAuditLog()
    result = audit_emit.drain_spool(log, unreachable)
    name = spool_file.name
    assert (result.appended, result.quarantined) == (2, [f"{name}:2"])
    assert [r.kind for r in log.records] == ["task.finished", QUARANTINED, "task.finished"]
    assert "mallory" not in {r.actor for r in log.records}
    report = log.records[1]
    assert (report.actor, report.subject) == ("audit-spool", name)
    assert report.details == {
        "file": name,
        "line": 2,
        "reason": "MAC does not match component 'scheduler''s key (altered or forged)",
        "quarantine_file": f"quarantine/{name}",
    }
    assert _lines(unreachable / "quarantine" / name) == [lines[1]]  # kept as it was, aside
    assert f"audit spool line {name}:2 quarantined (MAC does not match" in caplog.text
    assert [r.levelname for r in caplog.records if "quarantined" in r.getMessage()] == ["ERROR"]


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        pytest.param(
            json.dumps({"kind": "task.finished", "actor": "scheduler"}),
            "unsigned (no MAC)",
            id="unsigned-old-format",
        ),
        pytest.param("{not json", "not JSON", id="unparseable"),
        pytest.param(
            json.dumps(
                {"v": 1, "component": "triggerer", "event": {"kind": "x.y", "actor": "a"}, "mac": "0" * 64}
            ),
            "no spool key for component 'triggerer'",
            id="unknown-component",
        ),
        pytest.param(
            json.dumps({"v": 1, "component": "../etc", "event": {}, "mac": "0" * 64}),
            "component '../etc' is not a component name",
            id="path-in-component",
        ),
    ],
)
def test_unsigned_or_unreadable_lines_are_quarantined_and_the_drain_goes_on(
    unreachable: Path, line: str, reason: str
) -> None:
    audit_emit.emit(_event(1))
    (spool_file,) = unreachable.glob("*.jsonl")
    spool_file.write_text(line + "\n" + spool_file.read_text())
    log = MemoryAuditLog()
    result = audit_emit.drain_spool(log, unreachable)
    assert result.appended == 1
    assert result.quarantined == [f"{spool_file.name}:1"]
    assert log.records[0].details["reason"] == reason
    assert log.records[1].details["n"] == 1


def test_a_signed_event_the_store_refuses_is_quarantined_not_lost(unreachable: Path) -> None:
    key = audit_emit.spool_key("scheduler", create=True)
    assert key is not None
    bad = audit_emit.spool_line({"kind": "Not A Kind", "actor": "a"}, "scheduler", key)
    (unreachable / "scheduler-1.jsonl").parent.mkdir(parents=True, exist_ok=True)
    (unreachable / "scheduler-1.jsonl").write_text(bad + "\n")
    log = MemoryAuditLog()
    assert audit_emit.drain_spool(log, unreachable).quarantined == ["scheduler-1.jsonl:1"]
    assert log.records[0].details["reason"].startswith("event refused: kind: 'Not A Kind'")


def test_the_spool_key_is_the_components_own_and_private(unreachable: Path, tmp_path: Path) -> None:
    key = audit_emit.spool_key("scheduler", create=True)
    path = tmp_path / "spool-keys" / "scheduler.key"
    assert key is not None
    assert len(key) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert audit_emit.spool_key("scheduler") == key
    assert audit_emit.spool_key("triggerer") is None  # the drainer never creates one
    line = audit_emit.spool_line({"kind": "x.y", "actor": "a"}, "scheduler", key)
    assert audit_emit.read_spool_line(line, {"scheduler": key}.get) == (
        "scheduler",
        {"kind": "x.y", "actor": "a"},
    )
    other = bytes(32)
    with pytest.raises(audit_emit.SpoolLineError, match="MAC does not match"):
        audit_emit.read_spool_line(line, {"scheduler": other}.get)


def test_a_process_drains_its_own_spool_when_the_store_answers_again(
    unreachable: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for n in range(2):
        audit_emit.emit(_event(n))
    other = unreachable / "triggerer-999999.jsonl"  # another component's file: not this process's
    other.write_text("left for the seal\n")
    log = MemoryAuditLog()
    monkeypatch.setattr(audit_emit, "store", lambda conn_id=audit_emit.AUDIT_CONN_ID: log)
    monkeypatch.setattr(audit_emit.time, "monotonic", lambda: 10**9)  # the pause is over
    audit_emit.emit(_event(2))
    assert [r.details["n"] for r in log.records] == [2, 0, 1]
    assert sorted(p.name for p in unreachable.glob("*.jsonl")) == [other.name]
    assert os.getpid() not in audit_emit._spooled_pids


@pytest.mark.parametrize(
    ("env", "argv", "expected"),
    [
        pytest.param({}, ["airflow", "scheduler"], "scheduler", id="scheduler"),
        pytest.param({}, ["airflow", "api-server", "--port", "1"], "api-server", id="api-server"),
        pytest.param({}, ["airflow", "celery", "worker"], "worker", id="celery-worker"),
        pytest.param(
            {"AIRFLOW_CTX_DAG_ID": "d"}, ["airflow", "scheduler"], "task", id="task-forked-by-scheduler"
        ),
        pytest.param({"ORCH_AUDIT_COMPONENT": "seal"}, ["python"], "seal", id="configured"),
        pytest.param({}, ["python", "-m", "pytest"], "process", id="other"),
    ],
)
def test_component_name(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], argv: list[str], expected: str
) -> None:
    monkeypatch.delenv(audit_emit.COMPONENT_ENV, raising=False)
    monkeypatch.delenv("AIRFLOW_CTX_DAG_ID", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(audit_emit.sys, "argv", argv)
    assert audit_emit.component_name() == expected


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


def _spool_many(writer: int, count: int) -> None:
    for n in range(count):
        audit_emit._spool(audit_emit._clean(_event(n, writer=writer)), "test")


def test_draining_while_processes_spool_loses_and_repeats_nothing(unreachable: Path) -> None:
    """4 processes spool 150 events each while this one drains their files again and again: every
    event is appended exactly once (a claimed file is locked and renamed; a writer that opened it
    just before writes to the new file instead)."""
    fork = multiprocessing.get_context("fork")
    writers = [fork.Process(target=_spool_many, args=(writer, 150)) for writer in range(4)]
    for process in writers:
        process.start()
    log = MemoryAuditLog()
    while any(process.is_alive() for process in writers):
        audit_emit.drain_spool(log, unreachable)
    for process in writers:
        process.join()
        assert process.exitcode == 0
    audit_emit.drain_spool(log, unreachable)
    seen = [(r.details["writer"], r.details["n"]) for r in log.records]
    assert len(seen) == 600
    assert set(seen) == {(writer, n) for writer in range(4) for n in range(150)}
    assert not list(unreachable.glob("*.jsonl"))


def test_a_line_for_a_file_claimed_meanwhile_goes_to_a_fresh_file(
    unreachable: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race the lock closes: a writer opened the file, then a drain claimed it before the
    writer locked it. The line must not land in the claimed (already read) file."""
    unreachable.mkdir(parents=True)
    path = unreachable / "scheduler-1.jsonl"
    path.write_text("")
    real_flock = audit_emit.fcntl.flock
    claimed: list[Path | None] = []

    def drain_gets_in_first(fd: int, operation: int) -> None:
        if not claimed:
            claimed.append(None)
            claimed[0] = audit_emit._claim(path)
        real_flock(fd, operation)

    monkeypatch.setattr(audit_emit.fcntl, "flock", drain_gets_in_first)
    audit_emit._append_locked(path, "line")
    assert claimed[0] is not None
    assert claimed[0].read_text() == ""
    assert path.read_text() == "line\n"
