"""bench/scale_audit.py without a database: its key names and the history it generates."""

from __future__ import annotations

import random

import pytest

from bench.scale_audit import DEFAULT_SIZES, SEAL_EVERY, _run_events, label, main
from include.audit.memory import MemoryAuditLog
from include.audit.signing import CheckpointKeys, Ed25519Signer
from include.audit.verify import verify_stream


@pytest.mark.parametrize(
    ("size", "expected"), [(100_000, "100k"), (1_000_000, "1M"), (2_500_000, "2.5M"), (999, "999")]
)
def test_size_labels(size: int, expected: str) -> None:
    assert label(size) == expected


def test_default_sizes_are_three_ascending() -> None:
    assert len(DEFAULT_SIZES) == 3
    assert list(DEFAULT_SIZES) == sorted(DEFAULT_SIZES)


def test_generated_runs_are_valid_events_with_traceable_tickets_and_chain_and_verify() -> None:
    rng = random.Random(1)
    signer = Ed25519Signer.generate()
    log = MemoryAuditLog()
    tenants = set()
    for run in range(1, 200):
        events = _run_events(rng, run)
        assert events[0]["kind"] == "run.triggered"
        assert events[0]["details"]["ticket_id"] == f"RT-{run}"
        assert events[-1]["kind"] == "task.finished"
        assert {event["correlation_id"] for event in events} == {f"corr-{run:09d}"}
        tenants.add(events[0]["tenant"])
        for event in events:
            log.append(event)
            if len(log.records) % SEAL_EVERY == 0:
                log.seal(signer)
    assert len(tenants) > 100
    assert verify_stream(log.records, log.checkpoints, CheckpointKeys.of(signer.public_key)).ok


def test_sizes_below_one_seal_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--sizes", "10"])
    assert f"each at least {SEAL_EVERY}" in capsys.readouterr().err
