"""``audit trace`` on a real PostgreSQL: a ticket, a run, a security group and an ARN each resolve
to the runs they belong to, and the story, the per-tenant / per-domain views, the JSON document and
the integrity line are checked through the CLI entry point.

Runs on a PostgreSQL cluster of its own (profile ``audit-trace-itest``, 127.0.0.1:25482), started
fresh for this module and stopped at its end; never the shared stacks.

The log holds three runs and some noise:

* A (tenant acme, domain network, ``firewall_change``): triggered by alice from ticket SEC-42,
  approval requested, reminded, approved by lead_bob; opens a port on a security group; comments
  on SEC-42; succeeds.
* B (acme, network, ``incident_response``, scheduled): comments on SEC-42 (so the ticket is touched
  by two acme runs), creates a log group (an ARN), a task fails, the run fails. One of its records
  carries a NUL in a details string and its ``conf`` tries to forge a line of the story.
* C (tenant globex, domain compute, ``patch_hosts``): globex's own Jira also has a SEC-42; same
  run id as A (two manual runs in the same second), creates Request Tracker ticket 42, its approval
  times out, the run fails.
* Noise: a run D that shares nothing with the others (its Jira ticket OPS-7 is recorded only as
  a side effect's object id), and a policy violation with no run.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest

from devstack import postgres
from devstack.config import HOST, Profile
from include.audit.records import record_hash
from include.audit.store import AuditStore
from include.cli.__main__ import main as cli_main
from include.connectors.context import default_correlation_id
from tests.support.stores import postgres_cluster

PROFILE = Profile(name="audit-trace-itest", api_port=0, pg_port=25482, moto_port=0, smtp_port=0)

RUN_A = RUN_C = "manual__2026-03-04T05:06:07+00:00"
RUN_B = "scheduled__2026-03-04T06:00:00+00:00"
RUN_D = "manual__2026-03-05T09:00:00+00:00"
CORR_A = default_correlation_id("firewall_change", RUN_A)
CORR_B = default_correlation_id("incident_response", RUN_B)
CORR_C = default_correlation_id("patch_hosts", RUN_C)
CORR_D = default_correlation_id("rotate_keys", RUN_D)
SG = "sg-0123456789abcdef0"
ROLE = "arn:aws:iam::123456789012:role/orch-network-admin"
LOG_GROUP = "arn:aws:logs:eu-west-1:123456789012:log-group:/orch/incident-7"
NOT_FOUND = "(looked for correlation id, run id, ticket id, object id)"


def _run(tenant: str, domain: str, correlation_id: str, dag_id: str, run_id: str) -> dict[str, Any]:
    return {
        "tenant": tenant,
        "domain": domain,
        "correlation_id": correlation_id,
        "dag_id": dag_id,
        "run_id": run_id,
    }


def _events() -> list[dict[str, Any]]:
    """The log, in append order (runs interleaved, as a busy platform writes them)."""
    a = _run("acme", "network", CORR_A, "firewall_change", RUN_A)
    b = _run("acme", "network", CORR_B, "incident_response", RUN_B)
    c = _run("globex", "compute", CORR_C, "patch_hosts", RUN_C)
    d = _run("acme", "identity", CORR_D, "rotate_keys", RUN_D)
    trigger = {
        "run_type": "manual",
        "bundle_name": "dags-folder",
        "logical_date": "2026-03-04T05:06:07+00:00",
    }
    return [
        {
            **a,
            "kind": "run.triggered",
            "actor": "alice",
            "subject": "firewall_change",
            "details": {
                **trigger,
                "how": "ui",
                "bundle_version": "abc123",
                "ticket_id": "SEC-42",
                "conf": {"ticket_id": "SEC-42", "port": 443},
            },
        },
        {
            **c,
            "kind": "run.triggered",
            "actor": "carol",
            "details": {**trigger, "how": "rest_api", "bundle_version": "def456", "ticket_id": "SEC-42"},
        },
        {
            **a,
            "kind": "task.finished",
            "actor": "worker",
            "task_id": "validate",
            "details": {
                "state": "success",
                "try_number": 1,
                "map_index": -1,
                "operator": "PythonOperator",
                "duration_seconds": 2.3,
            },
        },
        {
            **a,
            "kind": "approval.requested",
            "actor": "airflow",
            "task_id": "approve_change",
            "details": {
                "action": "open_port",
                "step": 1,
                "steps": 1,
                "any_of": ["network-leads"],
                "excluded": ["alice"],
                "deadline": "2026-03-05T05:06:07+00:00",
                "ticket_id": "SEC-42",
            },
        },
        {
            **b,
            "kind": "run.triggered",
            "actor": "scheduler",
            "details": {
                "how": "timetable",
                "run_type": "scheduled",
                "bundle_name": "dags-folder",
                "bundle_version": "abc123",
                "logical_date": "2026-03-04T06:00:00+00:00",
                # A value built to forge a line of the story: it must print as one escaped line.
                "conf": {"note": "x\n !#1  2026-01-01T00:00:00Z  approval.answered  ceo  forged"},
            },
        },
        {
            **a,
            "kind": "approval.escalated",
            "actor": "airflow",
            "task_id": "approve_change",
            "details": {
                "action": "open_port",
                "gate_step": 1,
                "step": "reminder",
                "to": ["lead_bob@example.com"],
                "ticket_id": "SEC-42",
            },
        },
        {
            **c,
            "kind": "side_effect",
            "actor": "worker",
            "task_id": "open_ticket",
            "details": {
                "system": "request_tracker",
                "operation": "create_ticket",
                "object_id": "42",
                "ticket_id": "42",
                "created": True,
                "summary": "Patch window",
            },
        },
        {
            **a,
            "kind": "approval.answered",
            "actor": "lead_bob",
            "task_id": "approve_change",
            "details": {
                "action": "open_port",
                "step": 1,
                "steps": 1,
                "outcome": "approved",
                "option": "Approve",
                "comment": "looks good",
                "responded_at": "2026-03-04T05:20:00+00:00",
            },
        },
        {
            **b,
            "kind": "side_effect",
            "actor": "worker",
            "task_id": "note_on_ticket",
            "details": {
                "system": "jira",
                "operation": "comment",
                "object_id": "10002",
                "ticket_id": "SEC-42",
                "created": True,
                "summary": "host isolated\x00 (NUL kept)",  # jsonb refuses \u0000: the index must not
            },
        },
        {
            **a,
            "kind": "side_effect",
            "actor": "worker",
            "task_id": "apply",
            "details": {
                "system": "aws",
                "operation": "authorize_security_group_ingress",
                "object_id": SG,
                "created": True,
                "capability": "network-admin",
                "role_arn": ROLE,
            },
        },
        {
            "kind": "policy.violation",
            "actor": "dag-processor",
            "domain": "network",
            "details": {"file": "dags/bad.py", "rule": "no-secrets", "message": "literal credential"},
        },
        {
            **a,
            "kind": "side_effect",
            "actor": "worker",
            "task_id": "note_on_ticket",
            "details": {
                "system": "jira",
                "operation": "comment",
                "object_id": "10001",
                "ticket_id": "SEC-42",
                "created": True,
            },
        },
        {
            **b,
            "kind": "side_effect",
            "actor": "worker",
            "task_id": "collect_logs",
            "details": {
                "system": "aws",
                "operation": "create_log_group",
                "object_id": LOG_GROUP,
                "created": True,
            },
        },
        {
            **d,
            "kind": "run.triggered",
            "actor": "scheduler",
            "details": {"how": "timetable", "run_type": "scheduled", "bundle_version": "abc123"},
        },
        {
            **d,
            "kind": "side_effect",
            "actor": "worker",
            "task_id": "open_ticket",
            # A ticketing side effect that names its ticket only as the object id.
            "details": {
                "system": "jira",
                "operation": "create_ticket",
                "object_id": "OPS-7",
                "created": False,
            },
        },
        {
            **c,
            "kind": "approval.requested",
            "actor": "airflow",
            "task_id": "approve_patch",
            "details": {
                "action": "patch",
                "step": 1,
                "steps": 1,
                "any_of": ["compute-leads"],
                "excluded": ["carol"],
                "deadline": "2026-03-04T06:06:07+00:00",
            },
        },
        {
            **a,
            "kind": "task.finished",
            "actor": "worker",
            "task_id": "apply",
            "details": {"state": "success", "try_number": 2, "map_index": -1, "duration_seconds": 41.0},
        },
        {
            **b,
            "kind": "task.finished",
            "actor": "worker",
            "task_id": "isolate_host",
            "details": {
                "state": "failed",
                "try_number": 3,
                "map_index": 0,
                "duration_seconds": 300,
                "error_type": "TimeoutError",
            },
        },
        {
            **a,
            "kind": "run.finished",
            "actor": "scheduler",
            "details": {
                "state": "success",
                "tasks": {"validate": "success", "approve_change": "success", "apply": "success"},
                "duration_seconds": 95.2,
            },
        },
        {
            **c,
            "kind": "approval.escalated",
            "actor": "airflow",
            "task_id": "approve_patch",
            "details": {"action": "patch", "gate_step": 1, "step": "timeout", "to": ["ops@example.com"]},
        },
        {
            **c,
            "kind": "approval.answered",
            "actor": "timeout",
            "task_id": "approve_patch",
            "details": {"action": "patch", "step": 1, "steps": 1, "outcome": "timed_out", "option": None},
        },
        {
            **b,
            "kind": "run.finished",
            "actor": "scheduler",
            "details": {"state": "failed", "tasks": {"isolate_host[0]": "failed", "collect_logs": "success"}},
        },
        {
            **c,
            "kind": "run.finished",
            "actor": "scheduler",
            "details": {"state": "failed", "tasks": {"approve_patch": "failed"}, "duration_seconds": 3600},
        },
    ]


@dataclass
class Log:
    dsn: str
    seqs: dict[str, list[int]]  # correlation id -> seqs of its records, in order


@pytest.fixture(scope="module")
def cluster() -> Iterator[Profile]:
    with postgres_cluster(PROFILE):
        yield PROFILE


def _filled(profile: Profile, name: str) -> Log:
    postgres.create_database(profile, name)
    dsn = postgres.dsn(profile, postgres.DB_USER, name)
    seqs: dict[str, list[int]] = {}
    with AuditStore(dsn) as audit:
        audit.ensure_schema()
        for event in _events():
            record = audit.append(event)
            seqs.setdefault(str(record.correlation_id), []).append(record.seq)
        audit.ensure_schema()  # idempotent, also over rows jsonb would refuse
    return Log(dsn, seqs)


@pytest.fixture(scope="module")
def log(cluster: Profile) -> Log:
    """The shared, untouched log (tests that tamper make their own)."""
    return _filled(cluster, "audit_trace_story")


def _trace(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli_main(["audit", "trace", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _trace_json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any]]:
    code, out, _ = _trace(capsys, *args, "--json")
    return code, json.loads(out)


_RECORD_LINE = re.compile(r" [ !]#(?P<seq>\d+) +(?P<at>\S+)  (?P<kind>\S+) +(?P<actor>\S+) +(?P<sentence>.*)")


def _record_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if _RECORD_LINE.fullmatch(line)]


def _seqs(text: str) -> list[int]:
    return [int(_RECORD_LINE.fullmatch(line)["seq"]) for line in _record_lines(text)]  # type: ignore[index]


def _sentences(text: str) -> list[str]:
    return [_RECORD_LINE.fullmatch(line)["sentence"] for line in _record_lines(text)]  # type: ignore[index]


def test_trace_by_correlation_id_tells_the_story(log: Log, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _trace(capsys, CORR_A, "--dsn", log.dsn)

    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == f"audit trace '{CORR_A}': matched as correlation id; 1 correlation id: {CORR_A}"
    assert f"correlation {CORR_A}  domain network  tenant acme" in lines
    assert "  tickets: SEC-42" in lines
    assert (
        f"  run firewall_change/{RUN_A}: triggered by alice via ui, bundle dags-folder version abc123"
        in lines
    )
    assert _seqs(out) == log.seqs[CORR_A]  # every record of the run, in chain order, nothing else
    assert _sentences(out) == [
        "run triggered by alice via ui (manual), bundle dags-folder version abc123, "
        'logical date 2026-03-04T05:06:07+00:00, ticket SEC-42, conf {"port":443,"ticket_id":"SEC-42"}',
        "task finished: validate success (try 1, 2.3 s)",
        "approval requested: open_port at gate approve_change (step 1/1), any of network-leads, "
        "excluding alice, deadline 2026-03-05T05:06:07+00:00, ticket SEC-42",
        "approval reminder: open_port (gate step 1), sent to lead_bob@example.com, ticket SEC-42",
        'approval answered: approved by lead_bob (step 1/1) "looks good"',
        f"side effect: aws authorize_security_group_ingress -> {SG} (created) via capability network-admin"
        f" as {ROLE}",
        "side effect: jira comment -> entry 10001 on ticket SEC-42 (created)",
        "task finished: apply success (try 2, 41.0 s)",
        "run finished: success in 95.2 s; tasks: 3 success",
    ]
    first = _record_lines(out)[0]
    assert re.match(r"  #\d+ +\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ  run\.triggered\s+alice\s+run triggered", first)
    summary = lines[lines.index("  summary:") :]
    assert summary[:7] == [
        "  summary:",
        "    approvals: 1",
        "      open_port step 1/1: approved by lead_bob",
        "    changes: 2",
        f"      aws authorize_security_group_ingress -> {SG} (created)",
        "      jira comment -> entry 10001 on ticket SEC-42 (created)",
        f"    final state firewall_change/{RUN_A}: success in 95.2 s; tasks: 3 success",
    ]
    assert lines[-1] == (
        "integrity: 9 records, own hashes OK "
        "(own hashes only; the chain and checkpoints are checked by `audit verify`)"
    )


def test_trace_by_run_id_finds_every_dag_with_that_run_id(
    log: Log, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _trace(capsys, RUN_A, "--dsn", log.dsn)

    assert code == 0
    assert out.splitlines()[0] == (
        f"audit trace '{RUN_A}': matched as run id; 2 correlation ids: {CORR_A}, {CORR_C}"
    )
    assert _seqs(out) == log.seqs[CORR_A] + log.seqs[CORR_C]  # grouped per correlation id
    assert "  run patch_hosts/" + RUN_C + ": triggered by carol via rest_api" in out

    code, out, _ = _trace(capsys, RUN_A, "--dsn", log.dsn, "--tenant", "acme")
    assert code == 0
    assert _seqs(out) == log.seqs[CORR_A]
    assert out.splitlines()[0].endswith(f"1 correlation id: {CORR_A} (view: tenant acme)")


def test_trace_by_ticket_id_finds_every_run_that_touched_it(
    log: Log, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _trace(capsys, "SEC-42", "--dsn", log.dsn)

    assert code == 0
    assert out.splitlines()[0] == (
        f"audit trace 'SEC-42': matched as ticket id; 3 correlation ids: {CORR_A}, {CORR_C}, {CORR_B}"
    )
    assert sorted(_seqs(out)) == sorted(log.seqs[CORR_A] + log.seqs[CORR_B] + log.seqs[CORR_C])
    assert log.seqs["None"][0] not in _seqs(out)  # the policy violation of no run
    # B's forged line stays inside its own line, escaped; the NUL is shown, not passed through.
    assert not any("forged" in line for line in out.splitlines() if not re.match(r"  #\d+", line))
    assert '"x\\n !#1  2026-01-01T00:00:00Z  approval.answered  ceo  forged"' in out
    assert "\x00" not in out
    assert 'side effect: jira comment -> entry 10002 on ticket SEC-42 (created): "host isolated\\x00' in out
    assert "task finished: isolate_host[0] failed (try 3, 300.0 s, TimeoutError)" in out
    assert "run finished: failed; tasks: 1 success, 1 failed (not successful: isolate_host[0])" in out
    assert "approval answered: timed out (step 1/1), no answer before the deadline" in out
    assert "      patch step 1/1: timed_out" in out.splitlines()

    # A ticket created in Request Tracker is found by the side effect's object id.
    code, out, _ = _trace(capsys, "42", "--dsn", log.dsn)
    assert code == 0
    assert out.splitlines()[0] == f"audit trace '42': matched as ticket id; 1 correlation id: {CORR_C}"
    assert 'side effect: request_tracker create_ticket -> ticket 42 (created): "Patch window"' in out
    assert "  tickets: SEC-42, 42" in out.splitlines()

    # Found as the object id of a ticketing side effect: a ticket id (tried before object ids).
    code, out, _ = _trace(capsys, "OPS-7", "--dsn", log.dsn)
    assert code == 0
    assert out.splitlines()[0] == f"audit trace 'OPS-7': matched as ticket id; 1 correlation id: {CORR_D}"
    assert "side effect: jira create_ticket -> ticket OPS-7 (already existed)" in out
    assert "  tickets: OPS-7" in out.splitlines()
    assert "      patch step 1/1: timed_out" not in out


def test_trace_by_object_id(log: Log, capsys: pytest.CaptureFixture[str]) -> None:
    for identifier, correlation_id in ((SG, CORR_A), (LOG_GROUP, CORR_B)):
        code, out, _ = _trace(capsys, identifier, "--dsn", log.dsn)
        assert code == 0
        assert out.splitlines()[0] == (
            f"audit trace '{identifier}': matched as object id; 1 correlation id: {correlation_id}"
        )
        assert _seqs(out) == log.seqs[correlation_id]
    # The role a side effect used is not the object it changed.
    code, out, _ = _trace(capsys, ROLE, "--dsn", log.dsn)
    assert code == 1


def test_tenant_and_domain_views_leave_the_others_out(log: Log, capsys: pytest.CaptureFixture[str]) -> None:
    code, doc = _trace_json(capsys, "SEC-42", "--dsn", log.dsn, "--tenant", "acme")
    assert code == 0
    assert doc["correlation_ids"] == [CORR_A, CORR_B]
    assert [r["seq"] for r in doc["records"]] == sorted(log.seqs[CORR_A] + log.seqs[CORR_B])
    assert {r["tenant"] for r in doc["records"]} == {"acme"}

    code, doc = _trace_json(capsys, "SEC-42", "--dsn", log.dsn, "--domain", "compute")
    assert code == 0
    assert doc["correlation_ids"] == [CORR_C]
    assert {(r["tenant"], r["domain"]) for r in doc["records"]} == {("globex", "compute")}
    assert doc["filters"] == {"domain": "compute", "tenant": None}

    code, doc = _trace_json(capsys, "SEC-42", "--dsn", log.dsn, "--domain", "network", "--tenant", "globex")
    assert code == 1
    assert doc["records"] == []

    # Another tenant's object is not found at all in a tenant's view (its existence is not leaked).
    code, out, _ = _trace(capsys, SG, "--dsn", log.dsn, "--tenant", "globex")
    assert code == 1
    assert out.strip() == f"no audit record matches '{SG}' in tenant 'globex' {NOT_FOUND}"


def test_json_document(log: Log, capsys: pytest.CaptureFixture[str]) -> None:
    code, doc = _trace_json(capsys, "SEC-42", "--dsn", log.dsn)

    assert code == 0
    assert set(doc) == {
        "query",
        "filters",
        "matched_as",
        "matches",
        "correlation_ids",
        "records",
        "integrity",
    }
    assert (doc["query"], doc["matched_as"]) == ("SEC-42", "ticket id")
    assert doc["correlation_ids"] == [CORR_A, CORR_C, CORR_B]
    assert doc["matches"][0] == {
        "matched_as": "ticket id",
        "correlation_id": CORR_A,
        "dag_id": "firewall_change",
        "run_id": RUN_A,
    }
    seqs = [r["seq"] for r in doc["records"]]
    assert seqs == sorted(log.seqs[CORR_A] + log.seqs[CORR_B] + log.seqs[CORR_C])
    with AuditStore(log.dsn) as audit:
        stored = {r["seq"]: r for r in audit.records()}
    assert doc["records"] == [stored[seq] for seq in seqs]  # exactly as stored
    assert all(record_hash(r) == r["hash"] for r in doc["records"])  # recomputable from the document
    assert doc["integrity"] == {
        "records": len(seqs),
        "own_hashes_ok": True,
        "mismatched_seqs": [],
        "chain_checked": False,
        "note": "own hashes only; the chain and checkpoints are checked by `audit verify`",
    }


def test_nothing_found_exits_1(log: Log, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _trace(capsys, "SEC-404", "--dsn", log.dsn)
    assert code == 1
    assert out.strip() == f"no audit record matches 'SEC-404' {NOT_FOUND}"

    code, doc = _trace_json(capsys, "SEC-404", "--dsn", log.dsn)
    assert code == 1
    assert (doc["matched_as"], doc["correlation_ids"], doc["records"]) == (None, [], [])
    assert doc["message"] == f"no audit record matches 'SEC-404' {NOT_FOUND}"


def test_usage_and_connection_errors_exit_2_without_the_password(
    log: Log, cluster: Profile, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AUDIT_STORE_DSN", raising=False)
    code, out, err = _trace(capsys, "SEC-42")
    assert (code, out) == (2, "")
    assert err.strip() == "audit trace: no audit store: pass --dsn or set $AUDIT_STORE_DSN"

    code, _, err = _trace(capsys, "  ", "--dsn", log.dsn)
    assert (code, err.strip()) == (2, "audit trace: <id> must not be empty")

    closed = f"postgresql://auditor:s3cr3t-pw@{HOST}:1/audit"
    code, out, err = _trace(capsys, "SEC-42", "--dsn", closed)
    assert (code, out) == (2, "")
    assert err.startswith("audit trace: cannot reach the audit store: ")
    assert "s3cr3t-pw" not in err

    code, _, err = _trace(capsys, "SEC-42", "--dsn", "bogus password=s3cr3t-pw")
    assert code == 2
    assert "s3cr3t-pw" not in err

    # A store whose schema predates ``audit trace`` (no accessor function, so no indexes on it).
    postgres.create_database(cluster, "audit_trace_old_schema")
    old = postgres.dsn(cluster, postgres.DB_USER, "audit_trace_old_schema")
    with AuditStore(old) as audit:
        audit.ensure_schema()
        audit.append({"kind": "run.triggered", "actor": "alice", "correlation_id": "corr-old"})
    with psycopg.connect(old, autocommit=True) as conn:
        conn.execute("DROP FUNCTION audit_details_field CASCADE")
    assert _trace(capsys, "corr-old", "--dsn", old)[0] == 0  # what needs no function still works
    code, _, err = _trace(capsys, "SEC-42", "--dsn", old)
    assert code == 2
    assert "schema predates `audit trace` (function audit_details_field missing)" in err

    no_tables = postgres.dsn(cluster, postgres.DB_USER, "airflow")
    code, _, err = _trace(capsys, "SEC-42", "--dsn", no_tables)
    assert (code, err.strip()) == (
        2,
        "audit trace: the database has no audit tables "
        "(not an audit store, or nothing was ever set up there)",
    )


def test_the_details_accessor_never_fails(log: Log) -> None:
    """jsonb refuses a document with a NUL anywhere; the accessor (and so the index) must not."""
    cases = [
        ('{"a":"x\\u0000y","ticket_id":"SEC-1"}', "ticket_id", "SEC-1"),
        ('{"a":"x\\u0000y","ticket_id":"SEC-1"}', "a", "x\ufffdy"),  # text cannot hold a NUL
        # "\\u0000" (a backslash, then u0000) reads as "\\ufffd": that string changes, nothing breaks.
        ('{"a":"x\\\\u0000y","ticket_id":"SEC-1"}', "a", "x\\ufffdy"),
        ('{"a":"x\\\\u0000y","ticket_id":"SEC-1"}', "ticket_id", "SEC-1"),
        ('{"ticket_id":42}', "ticket_id", "42"),
        ('{"ticket_id":{"nested":1}}', "ticket_id", '{"nested":1}'),
        ("[1,2]", "ticket_id", None),
        ("not json at all", "ticket_id", None),
    ]
    with psycopg.connect(log.dsn, autocommit=True) as conn:
        for details, field, expected in cases:
            row = conn.execute("SELECT audit_details_field(%s, %s)", (details, field)).fetchone()
            assert row == (expected,), (details, field)


def test_lookups_use_the_indexes(log: Log) -> None:
    from include.audit.store import _MATCH_CONDITIONS, _MATCH_SQL, MATCH_ORDER

    expected = {
        "correlation id": {"audit_record_correlation_id"},
        "run id": {"audit_record_run_id"},
        "ticket id": {"audit_record_ticket_id", "audit_record_object_id"},
        "object id": {"audit_record_object_id"},
    }
    with psycopg.connect(log.dsn, autocommit=True) as conn:
        conn.execute("SET enable_seqscan = off")  # a tiny table: show the index is usable at all
        for matched_as in MATCH_ORDER:
            query = _MATCH_SQL.format(condition=_MATCH_CONDITIONS[matched_as], filters="")
            params = {"id": "SEC-42", "ticketing": ["jira", "request_tracker"]}
            plan = "\n".join(row[0] for row in conn.execute("EXPLAIN " + query, params))
            used = set(re.findall(r"Index (?:Only )?Scan using (\w+)|Bitmap Index Scan on (\w+)", plan))
            assert {name for pair in used for name in pair if name} == expected[matched_as], plan


def test_a_record_altered_behind_the_stores_back_is_named(
    cluster: Profile, capsys: pytest.CaptureFixture[str]
) -> None:
    log = _filled(cluster, "audit_trace_tampered")
    answered = log.seqs[CORR_A][4]
    with psycopg.connect(log.dsn, autocommit=True) as conn:  # what the table's owner can do
        conn.execute("ALTER TABLE audit_record DISABLE TRIGGER USER")
        conn.execute(
            "UPDATE audit_record SET details = replace(details, %s, %s) WHERE seq = %s",
            ('"approved"', '"rejected"', answered),
        )
        conn.execute("ALTER TABLE audit_record ENABLE TRIGGER USER")

    code, out, _ = _trace(capsys, CORR_A, "--dsn", log.dsn)

    assert code == 0
    assert out.splitlines()[-1] == (
        f"integrity: 9 records, 1 whose own hash does NOT match (altered after writing): seq {answered} "
        "(own hashes only; the chain and checkpoints are checked by `audit verify`)"
    )
    marked = [line for line in _record_lines(out) if line.startswith(" !")]
    assert marked == [line for line in _record_lines(out) if f"#{answered} " in line]
    assert 'approval answered: rejected by lead_bob (step 1/1) "looks good"' in marked[0]

    code, doc = _trace_json(capsys, "SEC-42", "--dsn", log.dsn)
    assert doc["integrity"]["own_hashes_ok"] is False
    assert doc["integrity"]["mismatched_seqs"] == [answered]
