"""The audit chain without a database: canonical hashing, checkpoints, and a verifier that names
every damaged record with the right kind of damage, and never cries wolf on an untouched log.

The property test damages real-looking 500-record logs 1,000 times (a flipped character in any
field, a deleted record, two records swapped, a forged record, a truncated tail, a deleted
checkpoint) and checks that each mutation is reported at the record it touched, and nothing else is.
Several mutations share one verification, each in its own 100-record zone of the log (hashing 500
records is most of a verification; one per mutation would take ~15 s here). Seeded: reproducible.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import re
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from include.audit.memory import MemoryAuditLog
from include.audit.records import (
    GENESIS_HASH,
    RECORD_FIELDS,
    AuditRecord,
    build_checkpoint,
    build_record,
    checkpoint_message,
    is_secret_key_name,
    record_hash,
    validate_event,
)
from include.audit.signing import ED25519, CheckpointKeys, Ed25519Signer, key_fingerprint
from include.audit.verify import (
    CHECKPOINT_INVALID,
    DELETED,
    INSERTED,
    MODIFIED,
    REORDERED,
    TRUNCATED,
    VerifyReport,
    verify,
)

SIGNER = Ed25519Signer.generate()
ROTATED = Ed25519Signer.generate()
SIGNERS = {"audit-2026-01": SIGNER, "audit-2026-02": ROTATED}
KEYS = CheckpointKeys.of(SIGNER.public_key, ROTATED.public_key)
START = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)

# --- a real-looking log ----------------------------------------------------------------------

DAGS = {
    "firewall_change": ("network", "aws_security_group.web"),
    "user_offboarding": ("identity", "user:jdoe"),
    "terraform_apply": ("cloud", "module.vpc.aws_vpc.main"),
}
TENANTS = ("acme", "globex")
APPROVERS = ("alice", "bob", "chloé")


def _run_events(rng: random.Random) -> list[dict[str, Any]]:
    """The records of one workflow run: triggered, approval asked and answered, effects, finished."""
    dag_id = rng.choice(sorted(DAGS))
    domain, resource = DAGS[dag_id]
    tenant = rng.choice(TENANTS)
    ticket = f"SEC-{rng.randrange(1, 9999)}"
    triggered = START + timedelta(seconds=rng.randrange(86400))
    common = {
        "domain": domain,
        "tenant": tenant,
        "correlation_id": str(uuid.UUID(int=rng.getrandbits(128))),
        "dag_id": dag_id,
        "run_id": f"manual__{triggered.isoformat()}",
    }
    approver = rng.choice(APPROVERS)
    events = [
        {**common, "kind": "run.triggered", "actor": "jdoe", "subject": ticket, "details": {"conf": {}}},
        {
            **common,
            "kind": "approval.requested",
            "actor": "scheduler",
            "task_id": "approve",
            "subject": ticket,
            "details": {"approvers": list(APPROVERS), "timeout_s": 3600, "plan": {"add": 1, "destroy": 0}},
        },
    ]
    if rng.random() < 0.2:
        events.append({**common, "kind": "approval.escalated", "actor": "scheduler", "task_id": "approve"})
    decision = rng.choice(("approve", "approve", "reject"))
    events.append(
        {
            **common,
            "kind": "approval.answered",
            "actor": approver,
            "task_id": "approve",
            "subject": ticket,
            "details": {"decision": decision, "comment": "ok für prod", "latency_s": rng.random() * 100},
        }
    )
    if decision == "approve":
        for _ in range(rng.randrange(1, 4)):
            events.append(
                {
                    **common,
                    "kind": "side_effect",
                    "actor": f"worker:{domain}-writer",
                    "task_id": "apply",
                    "subject": resource,
                    "details": {"action": "update", "idempotency_key": f"idem-{rng.getrandbits(96):024x}"},
                }
            )
    if rng.random() < 0.05:
        events.append({**common, "kind": "policy.violation", "actor": "policy", "details": {"rule": "r1"}})
    state = "success" if decision == "approve" else "skipped"
    events.append(
        {
            **common,
            "kind": "task.finished",
            "actor": "worker",
            "task_id": "apply",
            "details": {"state": state},
        }
    )
    return events


def make_log(
    seed: int,
    size: int = 500,
    seal_every: int | Callable[[random.Random], int] = 48,
    *,
    seal_end: bool = False,
) -> MemoryAuditLog:
    """``size`` records of real-looking runs, sealed every ``seal_every`` records, keys rotating."""
    rng = random.Random(seed)
    log = MemoryAuditLog()
    moment = START
    next_seal = seal_every(rng) if callable(seal_every) else seal_every
    while len(log.records) < size:
        for event in _run_events(rng):
            if len(log.records) == size:
                break
            moment += timedelta(microseconds=rng.randrange(1, 5_000_000))
            log.append(event, at=moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
            if len(log.records) == next_seal:
                key_id = "audit-2026-01" if len(log.checkpoints) < 5 else "audit-2026-02"
                log.seal(SIGNERS[key_id], at=moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
                next_seal += seal_every(rng) if callable(seal_every) else seal_every
    if seal_end:
        log.seal(SIGNER)
    return log


@pytest.fixture(scope="module")
def log() -> MemoryAuditLog:
    """500 records, checkpoints every 48 (sealed up to 480), 20 unsealed at the end."""
    return make_log(seed=417)


def forged_copy(record: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """What a forger without the key can do: change a record and recompute its hash."""
    forged = {**record, **changes}
    forged["hash"] = record_hash(forged)
    return forged


def damaged(
    log: MemoryAuditLog, mutate: Callable[[list[dict[str, Any]], list[dict[str, Any]]], None]
) -> VerifyReport:
    records, checkpoints = log.record_dicts(), log.checkpoint_dicts()
    mutate(records, checkpoints)
    return verify(records, checkpoints, KEYS)


# --- schema and canonical form ------------------------------------------------------------------


def test_hash_is_sha256_of_the_documented_canonical_json() -> None:
    event = {"kind": "approval.answered", "actor": "chloé", "tenant": "acme", "details": {"b": 1, "a": [2.5]}}
    record = build_record(event, seq=1, at="2026-03-04T05:06:07.000001Z", prev_hash=GENESIS_HASH)

    body = {name: value for name, value in record.to_dict().items() if name != "hash"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert canonical.startswith('{"actor":"chloé","at":"2026-03-04T05:06:07.000001Z","correlation_id":null,')
    assert '"details":{"a":[2.5],"b":1}' in canonical
    assert record.hash == hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    assert record_hash(record.to_dict()) == record.hash


def test_first_record_links_to_genesis_and_each_record_to_the_one_before(log: MemoryAuditLog) -> None:
    assert GENESIS_HASH == "0" * 64
    assert log.records[0].seq == 1
    assert log.records[0].prev_hash == GENESIS_HASH
    for before, after in zip(log.records, log.records[1:], strict=False):
        assert after.seq == before.seq + 1
        assert after.prev_hash == before.hash
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", after.at)


def test_checkpoints_are_ed25519_signed_and_chained(log: MemoryAuditLog) -> None:
    first, second = log.checkpoints[0], log.checkpoints[1]
    body = {name: value for name, value in first.to_dict().items() if name != "signature"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert checkpoint_message(first.to_dict()) == canonical.encode()
    assert '"algorithm":"ed25519"' in canonical  # the algorithm is signed too
    SIGNER.public_key.verify(bytes.fromhex(first.signature), canonical.encode())  # raises if not
    assert (first.key_id, first.algorithm) == (key_fingerprint(SIGNER.public_key), ED25519)
    assert first.prev_checkpoint_signature == GENESIS_HASH
    assert (first.last_seq, first.last_hash, first.count) == (48, log.records[47].hash, 48)
    assert second.prev_checkpoint_signature == first.signature
    assert log.checkpoints[5].key_id == ROTATED.key_id


def test_sealing_twice_without_new_records_writes_no_checkpoint() -> None:
    log = MemoryAuditLog()
    assert log.seal(SIGNER) is None
    log.append({"kind": "run.triggered", "actor": "jdoe"})
    assert log.seal(SIGNER) is not None
    assert log.seal(SIGNER) is None
    assert len(log.checkpoints) == 1


@pytest.mark.parametrize(
    ("details", "field_named"),
    [
        ({"when": datetime(2026, 1, 1, tzinfo=UTC)}, r"details\.when: datetime is not JSON-serialisable"),
        ({"ids": {1, 2}}, r"details\.ids: set is not JSON-serialisable"),
        ({"plan": {"cost": float("nan")}}, r"details\.plan\.cost: nan is not a JSON number"),
        ({"items": [1, b"raw"]}, r"details\.items\[1\]: bytes is not JSON-serialisable"),
        ({1: "x"}, r"details: key 1 is not a string"),
        (["not", "an", "object"], r"details: must be a JSON object, got list"),
    ],
)
def test_details_must_be_plain_json(details: Any, field_named: str) -> None:
    with pytest.raises(ValueError, match=field_named):
        validate_event({"kind": "side_effect", "actor": "worker", "details": details})


@pytest.mark.parametrize(
    ("details", "field_named"),
    [
        ({"password": "x"}, r"details\.password: key names a secret"),
        ({"db_password": "x"}, r"details\.db_password"),
        ({"apiKey": "x"}, r"details\.apiKey"),
        ({"API-Key": "x"}, r"details\.API-Key"),
        ({"client_secret": "x"}, r"details\.client_secret"),
        ({"session_token": "x"}, r"details\.session_token"),
        ({"private_key": "x"}, r"details\.private_key"),
        ({"auth": {"credentials": {"user": "u"}}}, r"details\.auth\.credentials"),
        (
            {"calls": [{"headers": {"Authorization": "Bearer x"}}]},
            r"details\.calls\[0\]\.headers\.Authorization",
        ),
        ({"dsn": "postgresql://app:hunter2hunter2@db/app"}, r"details\.dsn: looks like a credential"),
        ({"note": "key AKIAIOSFODNN7EXAMPLE"}, r"details\.note: looks like a credential"),
    ],
)
def test_details_must_not_carry_secrets(details: dict[str, Any], field_named: str) -> None:
    with pytest.raises(ValueError, match=field_named):
        validate_event({"kind": "side_effect", "actor": "worker", "details": details})


@pytest.mark.parametrize(
    "name", ["token_name", "secret_arn", "secret_id", "password_rotated_at", "idempotency_key", "key", "keys"]
)
def test_references_to_secrets_are_allowed(name: str) -> None:
    assert not is_secret_key_name(name)
    assert validate_event({"kind": "side_effect", "actor": "w", "details": {name: "x"}})["details"] == {
        name: "x"
    }


@pytest.mark.parametrize(
    ("fields", "field_named"),
    [
        ({"kind": "run.triggered", "actor": "a", "seq": 5}, r"seq: assigned by the audit chain"),
        ({"kind": "run.triggered", "actor": "a", "hash": "x"}, r"hash: assigned by the audit chain"),
        ({"kind": "run.triggered", "actor": "a", "colour": "red"}, r"colour: not an audit record field"),
        ({"kind": "run.triggered"}, r"actor: must be a non-empty string"),
        ({"kind": "Run Triggered", "actor": "a"}, r"kind: 'Run Triggered' is not a dotted lower-case name"),
        ({"kind": "run.triggered", "actor": "a", "tenant": 7}, r"tenant: must be a string"),
        ({"kind": "run.triggered", "actor": "a\x00b"}, r"actor: contains a NUL character"),
    ],
)
def test_events_are_checked_field_by_field(fields: dict[str, Any], field_named: str) -> None:
    with pytest.raises(ValueError, match=field_named):
        validate_event(fields)


# --- each kind of damage, by hand -----------------------------------------------------------


def test_an_untouched_log_verifies_clean(log: MemoryAuditLog) -> None:
    report = verify(log.records, log.checkpoints, KEYS)
    assert report.ok, str(report)
    assert str(report) == (
        "audit log intact: 500 records (last seq 500), 10 checkpoints, sealed up to record 480 (20 unsealed)"
    )
    assert verify(log.record_dicts(), log.checkpoint_dicts(), KEYS).ok


def test_a_modified_field_is_reported_at_its_record(log: MemoryAuditLog) -> None:
    def mutate(records: list[dict[str, Any]], _: list[dict[str, Any]]) -> None:
        records[416]["actor"] = "mallory"

    report = damaged(log, mutate)
    assert report.damage() == {(417, MODIFIED)}
    assert "record 417: modified (hash mismatch)" in str(report).splitlines()


def test_a_modified_hash_field_is_reported_at_its_record_only(log: MemoryAuditLog) -> None:
    def mutate(records: list[dict[str, Any]], _: list[dict[str, Any]]) -> None:
        records[47]["hash"] = "f" * 64  # record 48 is sealed by checkpoint 1

    assert damaged(log, mutate).damage() == {(48, MODIFIED)}


def test_an_altered_seq_field_is_reported_at_the_true_seq(log: MemoryAuditLog) -> None:
    def mutate(records: list[dict[str, Any]], _: list[dict[str, Any]]) -> None:
        records[99]["seq"] = 7

    report = damaged(log, mutate)
    assert report.damage() == {(100, MODIFIED)}
    assert "record 100: modified (seq field altered (reads 7, hash matches 100))" in str(report)


def test_seqs_swapped_between_two_rows_are_named(log: MemoryAuditLog) -> None:
    """What ``UPDATE ... SET seq`` on two rows looks like once read back ``ORDER BY seq``."""

    def mutate(records: list[dict[str, Any]], _: list[dict[str, Any]]) -> None:
        records[2]["seq"], records[3]["seq"] = 4, 3
        records.sort(key=lambda record: record["seq"])

    report = damaged(log, mutate)
    assert report.damage() == {(3, MODIFIED), (4, MODIFIED), (3, REORDERED), (4, REORDERED)}
    assert "record 3: modified (seq field altered (reads 4, hash matches 3))" in str(report)


def test_deleted_records_are_reported_as_a_run(log: MemoryAuditLog) -> None:
    def mutate(records: list[dict[str, Any]], _: list[dict[str, Any]]) -> None:
        del records[249]
        del records[99:109]

    report = damaged(log, mutate)
    assert report.damage() == {(250, DELETED)} | {(seq, DELETED) for seq in range(100, 110)}
    assert "records 100-109: deleted (10 records missing)" in str(report)
    assert "record 250: deleted (missing)" in str(report)


def test_swapped_records_are_reported_as_reordered(log: MemoryAuditLog) -> None:
    def mutate(records: list[dict[str, Any]], _: list[dict[str, Any]]) -> None:
        records[10], records[20] = records[20], records[10]

    report = damaged(log, mutate)
    assert report.damage() == {(11, REORDERED), (21, REORDERED)}
    assert "record 21: reordered (at position 11, between record 10 and record 12)" in str(report)


def test_a_forged_duplicate_is_reported_as_inserted(log: MemoryAuditLog) -> None:
    def mutate(records: list[dict[str, Any]], _: list[dict[str, Any]]) -> None:
        records.insert(299, forged_copy(records[299], actor="mallory", details={"decision": "approve"}))

    report = damaged(log, mutate)
    assert report.damage() == {(300, INSERTED)}
    assert "record 300: inserted (duplicate seq: the record at position 301 holds it)" in str(report)


@pytest.mark.parametrize("seq", [1, 200, 480, 490])
def test_a_replaced_and_rehashed_record_is_reported_as_inserted(log: MemoryAuditLog, seq: int) -> None:
    """Sealed (1, 200, 480: the checkpoint vouches for another) or not (490: its successor does)."""

    def mutate(records: list[dict[str, Any]], _: list[dict[str, Any]]) -> None:
        records[seq - 1] = forged_copy(records[seq - 1], details={"decision": "approve"})

    assert damaged(log, mutate).damage() == {(seq, INSERTED)}


def test_a_truncated_sealed_tail_is_reported(log: MemoryAuditLog) -> None:
    def mutate(records: list[dict[str, Any]], _: list[dict[str, Any]]) -> None:
        del records[450:]

    report = damaged(log, mutate)
    assert report.damage() == {(seq, TRUNCATED) for seq in range(451, 481)}
    assert (
        "records 451-480: truncated (log ends at record 450; checkpoint 10 sealed up to record 480)"
        in str(report)
    )


def test_a_rewritten_sealed_history_is_caught_at_every_checkpoint(log: MemoryAuditLog) -> None:
    """Truncate, then append a consistent forged chain: each checkpoint it passes vouches otherwise."""

    def mutate(records: list[dict[str, Any]], _: list[dict[str, Any]]) -> None:
        for index in range(400, 500):
            records[index] = forged_copy(
                records[index], prev_hash=records[index - 1]["hash"], actor="mallory"
            )

    report = damaged(log, mutate)
    assert {(432, INSERTED), (480, INSERTED)} <= report.damage()
    assert not report.ok


def test_a_deleted_checkpoint_is_reported(log: MemoryAuditLog) -> None:
    def mutate(_: list[dict[str, Any]], checkpoints: list[dict[str, Any]]) -> None:
        del checkpoints[3]

    report = damaged(log, mutate)
    assert report.checkpoint_damage() == {(4, CHECKPOINT_INVALID)}
    assert report.damage() == set()
    assert "checkpoint 4: checkpoint_invalid (missing: checkpoint 5 follows 3)" in str(report)


@pytest.mark.parametrize(
    ("change", "detail"),
    [
        ({"last_seq": 47}, "bad signature"),
        ({"at": "2026-01-01T00:00:00.000000Z"}, "bad signature"),
        ({"key_id": "audit-2030-01"}, "no trusted public key for key id 'audit-2030-01'"),
        ({"algorithm": "ecdsa-p256-sha256"}, "bad signature (ecdsa-p256-sha256"),
    ],
)
def test_a_tampered_checkpoint_is_invalid(log: MemoryAuditLog, change: dict[str, Any], detail: str) -> None:
    def mutate(_: list[dict[str, Any]], checkpoints: list[dict[str, Any]]) -> None:
        checkpoints[2].update(change)

    report = damaged(log, mutate)
    assert report.checkpoint_damage() == {(3, CHECKPOINT_INVALID)}
    assert f"checkpoint 3: checkpoint_invalid ({detail}" in str(report)


def test_a_checkpoint_signed_with_another_key_is_invalid(log: MemoryAuditLog) -> None:
    def mutate(_: list[dict[str, Any]], checkpoints: list[dict[str, Any]]) -> None:
        body = {k: v for k, v in checkpoints[-1].items() if k not in ("signature", "key_id", "algorithm")}
        resigned = build_checkpoint(**body, signer=Ed25519Signer.generate())
        checkpoints[-1] = {**resigned.to_dict(), "key_id": checkpoints[-1]["key_id"]}  # claims ours

    assert damaged(log, mutate).checkpoint_damage() == {(10, CHECKPOINT_INVALID)}


def test_rotated_keys_need_every_key(log: MemoryAuditLog) -> None:
    report = verify(log.records, log.checkpoints, CheckpointKeys.of(SIGNER.public_key))
    assert report.checkpoint_damage() == {(n, CHECKPOINT_INVALID) for n in range(6, 11)}
    assert f"checkpoint 6: checkpoint_invalid (no trusted public key for key id '{ROTATED.key_id}'" in str(
        report
    )


def test_without_keys_the_chain_is_still_checked_and_the_report_says_so(log: MemoryAuditLog) -> None:
    clean = verify(log.records, log.checkpoints, None)
    assert clean.ok
    assert str(clean).startswith("audit chain consistent: 500 records")
    assert "intact" not in str(clean)
    assert "warning: checkpoint signatures NOT checked (--no-signatures)" in str(clean)

    records = log.record_dicts()
    records[9]["details"] = {"decision": "approve"}
    assert verify(records, log.checkpoints, None).damage() == {(10, MODIFIED)}


def test_malformed_records_are_reported_not_raised(log: MemoryAuditLog) -> None:
    def mutate(records: list[dict[str, Any]], _: list[dict[str, Any]]) -> None:
        records[5]["details"] = "{not json"  # a text column tampered into non-JSON
        records[6]["seq"] = "7x"
        del records[7]["hash"]
        records[8]["details"] = {"x": float("inf")}

    report = damaged(log, mutate)
    assert report.damage() == {(6, MODIFIED), (7, MODIFIED), (8, MODIFIED), (9, MODIFIED)}
    assert "record 9: modified (content is not JSON, cannot be hashed)" in str(report)


def test_limits_by_design_unsealed_tail_and_latest_checkpoint(log: MemoryAuditLog) -> None:
    """What no database-only verifier can see (as for CloudTrail): the export is the answer."""
    records, checkpoints = log.record_dicts(), log.checkpoint_dicts()
    assert verify(records[:481], checkpoints, KEYS).ok  # unsealed records 482-500 gone
    assert verify(records, checkpoints[:-1], KEYS).ok  # the latest checkpoint gone
    assert verify(records[:480], checkpoints, KEYS).ok  # exactly the unsealed tail gone
    assert not verify(records[:479], checkpoints, KEYS).ok  # one sealed record more: caught


# --- the property test ------------------------------------------------------------------------


@dataclass
class Mutation:
    """One damage: what the report must contain (any of ``expected``) and may name (``touched``)."""

    name: str
    description: str
    expected: set[tuple[int, str]] = field(default_factory=set)
    touched: set[int] = field(default_factory=set)
    checkpoint: int | None = None


def _flip_char(rng: random.Random, text: str) -> str:
    at = rng.randrange(len(text))
    return text[:at] + chr(ord(text[at]) ^ (1 << rng.randrange(7))) + text[at + 1 :]


def _flip_details(rng: random.Random, details: Any) -> Any:
    text = json.dumps(details, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    while True:
        flipped = _flip_char(rng, text)
        try:
            parsed = json.loads(flipped)
            changed = json.dumps(parsed, sort_keys=True, separators=(",", ":"), ensure_ascii=False) != text
        except ValueError:
            continue
        if changed:
            return parsed


def _flip_seq(rng: random.Random, seq: int) -> Any:
    while True:
        text = _flip_char(rng, str(seq))
        try:
            value: Any = int(text)
        except ValueError:
            value = text
        if value != seq:
            return value


def flip(rng: random.Random, records: list[dict[str, Any]], seq: int) -> Mutation:
    record = records[seq - 1] = dict(records[seq - 1])
    name = rng.choice([name for name in RECORD_FIELDS if record[name] not in (None, {}, "")])
    if name == "seq":
        record["seq"] = _flip_seq(rng, seq)
    elif name == "details":
        record["details"] = _flip_details(rng, record["details"])
    else:
        record[name] = _flip_char(rng, record[name])
    return Mutation("flip", f"flip {name} of {seq}", {(seq, MODIFIED)}, {seq})


def delete(records: list[dict[str, Any]], seq: int) -> Mutation:
    del records[seq - 1]
    return Mutation("delete", f"delete {seq}", {(seq, DELETED)}, {seq})


def swap(records: list[dict[str, Any]], first: int, second: int) -> Mutation:
    records[first - 1], records[second - 1] = records[second - 1], records[first - 1]
    return Mutation(
        "swap", f"swap {first} and {second}", {(first, REORDERED), (second, REORDERED)}, {first, second}
    )


def forge(rng: random.Random, records: list[dict[str, Any]], seq: int) -> Mutation:
    forged = forged_copy(
        records[seq - 1], actor="mallory", details={"decision": "approve", "n": rng.random()}
    )
    if rng.random() < 0.5:
        records[seq - 1] = forged
        how = "replace"
    else:
        records.insert(seq - 1 + rng.randrange(2), forged)
        how = "duplicate"
    return Mutation("forge", f"forge {seq} ({how})", {(seq, INSERTED)}, {seq})


def truncate(records: list[dict[str, Any]], keep: int, sealed: int) -> Mutation:
    del records[keep:]
    return Mutation(
        "truncate", f"truncate after {keep}", {(keep + 1, TRUNCATED)}, set(range(keep + 1, sealed + 1))
    )


def drop_checkpoint(checkpoints: list[dict[str, Any]], number: int) -> Mutation:
    checkpoints[:] = [cp for cp in checkpoints if cp["checkpoint_seq"] != number]
    return Mutation("drop_checkpoint", f"delete checkpoint {number}", checkpoint=number)


ZONE = 100
EDGE = 3  # a mutation stays this far inside its zone: the zones' effects never meet


def mutate_zone(
    rng: random.Random,
    log: MemoryAuditLog,
    records: list[dict[str, Any]],
    checkpoints: list[dict[str, Any]],
    zone: int,
) -> Mutation:
    """One random mutation of records ``zone * 100 + 1`` .. ``+ 100`` (zones are done last first,
    so the positions of earlier zones still equal their ``seq - 1``)."""
    low, high = zone * ZONE + 1 + EDGE, (zone + 1) * ZONE - EDGE
    sealed = log.checkpoints[-1].last_seq
    names = ["flip", "delete", "swap", "forge", "drop_checkpoint"]
    if low < sealed:
        names.append("truncate")
    name = rng.choice(names)
    if name == "truncate" and zone != len(log.records) // ZONE - 1:
        name = "flip"  # truncation only in the last zone: it removes everything after it
    seq = rng.randint(low, high)
    if name == "flip":
        return flip(rng, records, seq)
    if name == "delete":
        return delete(records, seq)
    if name == "swap":
        return swap(records, *sorted(rng.sample(range(low, high + 1), 2)))
    if name == "forge":
        return forge(rng, records, seq)
    if name == "truncate":
        return truncate(records, rng.randint(low, sealed - 1), sealed)
    # Any checkpoint but the latest (which nothing in the database can vouch for).
    present = [cp["checkpoint_seq"] for cp in checkpoints if cp["checkpoint_seq"] < len(log.checkpoints)]
    return drop_checkpoint(checkpoints, rng.choice(present)) if present else flip(rng, records, seq)


def check_batch(report: VerifyReport, mutations: list[Mutation]) -> None:
    described = "; ".join(m.description for m in mutations)
    damage, checkpoint_damage = report.damage(), report.checkpoint_damage()
    for mutation in mutations:
        if mutation.checkpoint is not None:
            assert (mutation.checkpoint, CHECKPOINT_INVALID) in checkpoint_damage, f"{described}\n{report}"
        else:
            assert mutation.expected & damage, f"missed {mutation.description} ({described})\n{report}"
    touched = set().union(*(m.touched for m in mutations))
    dropped = {m.checkpoint for m in mutations if m.checkpoint is not None}
    assert {seq for seq, _ in damage} <= touched, f"false alarm ({described})\n{report}"
    assert {n for n, _ in checkpoint_damage} <= dropped, f"false alarm ({described})\n{report}"


@pytest.mark.parametrize(
    ("seed", "seal_every", "seal_end"),
    [(1, 48, False), (2, lambda rng: rng.randint(20, 90), True)],
    ids=["sealed-every-48-unsealed-tail", "random-seals-fully-sealed"],
)
def test_every_random_mutation_is_detected_and_named(
    seed: int, seal_every: int | Callable[[random.Random], int], seal_end: bool
) -> None:
    """500 random mutations per log shape (1,000 in all), 1-5 per verification, one per zone."""
    log = make_log(seed, 500, seal_every, seal_end=seal_end)
    rng = random.Random(seed * 7919)
    kinds: Counter[str] = Counter()
    done = 0
    base_records, base_checkpoints = log.record_dicts(), log.checkpoint_dicts()
    while done < 500:
        # Mutations copy a record before changing it: the untouched ones can be shared.
        records, checkpoints = list(base_records), list(base_checkpoints)
        count = min(rng.randint(1, 5), 500 - done)
        zones = sorted(rng.sample(range(len(log.records) // ZONE), count), reverse=True)
        mutations = [mutate_zone(rng, log, records, checkpoints, zone) for zone in zones]
        check_batch(verify(records, checkpoints, KEYS), mutations)
        kinds.update(m.name for m in mutations)
        done += len(mutations)
    assert sum(kinds.values()) == 500
    assert min(kinds[name] for name in ("flip", "delete", "swap", "forge", "drop_checkpoint")) >= 40, kinds
    assert kinds["truncate"] >= 5, kinds


def test_random_untouched_logs_raise_no_false_alarm() -> None:
    """Any size, any sealing rhythm, rotated keys, read back whole, as a prefix, or through JSON."""
    rng = random.Random(2026)
    for round_ in range(40):
        size = rng.choice([0, 1, 2, rng.randint(3, 60), rng.randint(60, 300)])
        log = make_log(1000 + round_, size, lambda r: r.randint(1, 80), seal_end=rng.random() < 0.5)
        round_trip = json.loads(json.dumps({"r": log.record_dicts(), "c": log.checkpoint_dicts()}))
        prefix = rng.randint(0, size)
        sealed_in_prefix = [cp for cp in log.checkpoints if cp.last_seq <= prefix]
        for report in (
            verify(log.records, log.checkpoints, KEYS),
            verify(round_trip["r"], round_trip["c"], KEYS),
            verify(log.records[:prefix], sealed_in_prefix, KEYS),  # read while being appended to
        ):
            assert report.ok, f"round {round_}: false alarm\n{report}"


def test_records_are_immutable_values() -> None:
    record = build_record(
        {"kind": "run.triggered", "actor": "a"},
        seq=1,
        at="2026-03-04T05:06:07.000000Z",
        prev_hash=GENESIS_HASH,
    )
    assert isinstance(record, AuditRecord)
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.actor = "mallory"  # type: ignore[misc]
