"""Streaming and incremental verify name the same damage as the whole-log verifier.

The corpus is test_chain's: 1,000 random mutations (flips of any field, deletions, swaps, forgeries,
truncations, dropped checkpoints) of real-looking 500-record logs. Segments are made small here
(tail pieces of 37 records, a lookahead of 100: a swap stays inside its 100-record zone) so that
many mutations sit on or across a segment boundary.
"""

from __future__ import annotations

import random
import tracemalloc
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from include.audit.memory import MemoryAuditLog
from include.audit.records import GENESIS_HASH, build_record
from include.audit.verify import (
    DELETED,
    INSERTED,
    MODIFIED,
    REORDERED,
    IncrementalBaseError,
    VerifyReport,
    hash_record,
    verify,
    verify_stream,
    verify_stream_hashed,
)
from tests.unit.audit.test_chain import (
    KEYS,
    SIGNER,
    ZONE,
    check_batch,
    forged_copy,
    make_log,
    mutate_zone,
)

LOOKAHEAD = 100
TAIL_CHUNK = 37


def stream(records: Any, checkpoints: Any, **kwargs: Any) -> VerifyReport:
    return verify_stream(
        iter(records), checkpoints, KEYS, lookahead=LOOKAHEAD, tail_chunk=TAIL_CHUNK, **kwargs
    )


def stream_hashed(records: Any, checkpoints: Any, **kwargs: Any) -> VerifyReport:
    """What the store does: hash every record first (another process may), then classify."""
    hashed = (hash_record(record) for record in records)
    return verify_stream_hashed(
        hashed, checkpoints, KEYS, lookahead=LOOKAHEAD, tail_chunk=TAIL_CHUNK, **kwargs
    )


@pytest.mark.parametrize("streamer", [stream, stream_hashed], ids=["records", "pre-hashed"])
@pytest.mark.parametrize(
    ("seed", "seal_every", "seal_end"),
    [(1, 48, False), (2, lambda rng: rng.randint(20, 90), True)],
    ids=["sealed-every-48-unsealed-tail", "random-seals-fully-sealed"],
)
def test_streaming_verify_finds_the_same_damage_on_the_mutation_corpus(
    seed: int,
    seal_every: int | Callable[[random.Random], int],
    seal_end: bool,
    streamer: Callable[..., VerifyReport],
) -> None:
    log = make_log(seed, 500, seal_every, seal_end=seal_end)
    rng = random.Random(seed * 7919)  # the same seeds as test_chain: the same 1,000 mutations
    base_records, base_checkpoints = log.record_dicts(), log.checkpoint_dicts()
    kinds: Counter[str] = Counter()
    done = 0
    while done < 500:
        records, checkpoints = list(base_records), list(base_checkpoints)
        count = min(rng.randint(1, 5), 500 - done)
        zones = sorted(rng.sample(range(len(log.records) // ZONE), count), reverse=True)
        mutations = [mutate_zone(rng, log, records, checkpoints, zone) for zone in zones]
        whole, streamed = verify(records, checkpoints, KEYS), streamer(records, checkpoints)
        described = "; ".join(m.description for m in mutations)
        assert streamed.damage() == whole.damage(), f"{described}\nwhole:\n{whole}\nstreamed:\n{streamed}"
        assert streamed.checkpoint_damage() == whole.checkpoint_damage(), described
        assert (streamed.records, streamed.last_seq, streamed.sealed_seq) == (
            whole.records,
            whole.last_seq,
            whole.sealed_seq,
        ), described
        check_batch(streamed, mutations)
        kinds.update(m.name for m in mutations)
        done += len(mutations)
    assert min(kinds[name] for name in ("flip", "delete", "swap", "forge", "drop_checkpoint")) >= 40, kinds


def test_untouched_logs_verify_clean_streamed_in_any_segmentation() -> None:
    rng = random.Random(4242)
    for round_ in range(30):
        size = rng.choice([0, 1, 2, rng.randint(3, 60), rng.randint(60, 400)])
        log = make_log(2000 + round_, size, lambda r: r.randint(1, 80), seal_end=rng.random() < 0.5)
        for lookahead, chunk in ((1, 1), (7, 13), (1000, 50_000)):
            report = verify_stream(log.records, log.checkpoints, KEYS, lookahead=lookahead, tail_chunk=chunk)
            assert report.ok, f"round {round_} ({lookahead}, {chunk}): false alarm\n{report}"
            assert report.records == size


def test_a_record_moved_further_than_the_lookahead_is_named_deleted_and_reordered() -> None:
    """The one documented difference: the segment was verified before the record turned up."""
    log = make_log(3, 300, 50, seal_end=True)
    records = log.record_dicts()
    moved = records.pop(9)  # seq 10, found 200 records later
    records.insert(210, moved)
    whole = verify(records, log.checkpoints, KEYS)
    streamed = verify_stream(records, log.checkpoints, KEYS, lookahead=20)
    assert whole.damage() == {(10, REORDERED)}
    assert streamed.damage() == {(10, DELETED), (10, REORDERED)}
    assert verify_stream(records, log.checkpoints, KEYS, lookahead=500).damage() == whole.damage()


def _sealed_log(size: int, seal_every: int) -> MemoryAuditLog:
    return make_log(7, size, seal_every, seal_end=False)


def test_incremental_verify_reads_only_the_records_after_the_checkpoint() -> None:
    log = _sealed_log(400, 50)
    checkpoint = log.checkpoints[5]  # sealed records 1..300
    after = [r for r in log.record_dicts() if r["seq"] > checkpoint.last_seq]
    report = verify_stream(after, log.checkpoints, KEYS, after_checkpoint=checkpoint.checkpoint_seq)
    assert report.ok, report
    assert report.records == 100
    assert report.after_checkpoint == checkpoint.checkpoint_seq
    assert "incremental" in str(report)


@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_incremental_verify_finds_damage_after_the_checkpoint(where: str) -> None:
    log = _sealed_log(400, 50)
    checkpoint = log.checkpoints[5]
    after = [r for r in log.record_dicts() if r["seq"] > checkpoint.last_seq]
    index = {"first": 0, "middle": 40, "last": len(after) - 1}[where]
    seq = after[index]["seq"]
    forged = forged_copy(after[index], actor="mallory")
    replaced = [*after[:index], forged, *after[index + 1 :]]
    report = verify_stream(replaced, log.checkpoints, KEYS, after_checkpoint=checkpoint.checkpoint_seq)
    assert (seq, INSERTED) in report.damage(), report
    altered = [*after[:index], {**after[index], "actor": "mallory"}, *after[index + 1 :]]
    report = verify_stream(altered, log.checkpoints, KEYS, after_checkpoint=checkpoint.checkpoint_seq)
    assert report.damage() == {(seq, MODIFIED)}, report
    without = [*after[:index], *after[index + 1 :]]
    report = verify_stream(without, log.checkpoints, KEYS, after_checkpoint=checkpoint.checkpoint_seq)
    kinds = {kind for _, kind in report.damage()}
    assert kinds & {DELETED, "truncated"} if where == "last" else report.damage() == {(seq, DELETED)}, report


def test_a_forged_chain_cannot_be_passed_off_as_incremental_from_a_forged_checkpoint() -> None:
    """The start is a signed checkpoint: one forged or re-signed with another key is refused."""
    log = _sealed_log(200, 50)
    checkpoints = log.checkpoint_dicts()
    checkpoints[2] = {**checkpoints[2], "last_hash": "0" * 64}
    after = [r for r in log.record_dicts() if r["seq"] > 150]
    with pytest.raises(IncrementalBaseError, match="checkpoint 3"):
        verify_stream(after, checkpoints, KEYS, after_checkpoint=3)
    with pytest.raises(IncrementalBaseError, match="checkpoint 9"):
        verify_stream(after, log.checkpoints, KEYS, after_checkpoint=9)


def test_incremental_verify_still_checks_the_whole_checkpoint_chain() -> None:
    log = _sealed_log(300, 50)
    checkpoints = log.checkpoint_dicts()
    del checkpoints[1]  # an old checkpoint deleted: the chain has a hole
    after = [r for r in log.record_dicts() if r["seq"] > 250]
    report = verify_stream(after, checkpoints, KEYS, after_checkpoint=5)
    assert (2, "checkpoint_invalid") in report.checkpoint_damage(), report


def test_the_first_record_after_the_checkpoint_must_link_to_the_sealed_hash() -> None:
    log = _sealed_log(200, 50)
    after = [r for r in log.record_dicts() if r["seq"] > 100]
    forged = forged_copy(after[0], prev_hash="f" * 64)
    report = verify_stream([forged, *after[1:]], log.checkpoints, KEYS, after_checkpoint=2)
    assert (101, INSERTED) in report.damage(), report


def _generated(count: int) -> Iterator[dict[str, Any]]:
    """A long chain built on the fly (never held whole)."""
    prev_hash = GENESIS_HASH
    for seq in range(1, count + 1):
        event = {"kind": "run.triggered", "actor": "bench", "details": {"n": seq}}
        record = build_record(event, seq=seq, at="2026-03-04T05:06:07.000000Z", prev_hash=prev_hash)
        prev_hash = record.hash
        yield record.to_dict()


def test_streaming_memory_does_not_grow_with_the_log() -> None:
    """Peak Python allocation for 2,000 and for 8,000 unsealed records (tail pieces of 500)."""

    def peak(count: int) -> int:
        tracemalloc.start()
        report = verify_stream(_generated(count), [], None, lookahead=100, tail_chunk=500)
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert report.ok
        assert report.records == count
        return top

    small, large = peak(2000), peak(8000)
    assert large < small * 1.5, (small, large)


def test_signer_is_the_corpus_signer() -> None:
    assert KEYS.public  # the corpus keys verify the corpus signer's checkpoints
    assert SIGNER.key_id in KEYS.public


def test_a_hashed_record_keeps_its_fields_only_when_its_own_hash_fails() -> None:
    """Open segments hold what a record's verdict needs: the record itself only if it is damaged."""
    log = make_log(5, 3, 10)
    good, bad = log.record_dicts()[1], {**log.record_dicts()[2], "actor": "mallory"}
    kept, seq, stored, computed, prev, own_ok, note = hash_record(good)
    assert (kept, seq, stored, computed, prev, own_ok, note) == (
        None,
        2,
        good["hash"],
        good["hash"],
        good["prev_hash"],
        True,
        "",
    )
    kept, seq, stored, computed, _, own_ok, _ = hash_record(bad)
    assert kept == bad
    assert (seq, stored, own_ok) == (3, bad["hash"], False)
    assert computed is not None
    assert computed != stored
    kept, seq, _, _, _, own_ok, note = hash_record({**good, "seq": "2"})
    assert (seq, own_ok, note) == (0, False, "seq field '2' is not a positive integer")
    assert kept is not None
    assert hash_record({**good, "details": {"x": float("nan")}})[3] is None  # not JSON: no hash
