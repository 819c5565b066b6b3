"""The per-tenant commitment maths (include/evidence/proof.py): inclusion, and every way to break it."""

from __future__ import annotations

import hashlib
import json

import pytest

from include.audit.records import canonical_json
from include.evidence.proof import (
    MIN_DEPTH,
    TenantCommitment,
    commit_segment,
    covering_checkpoints,
    digest_lines,
    root_from_path,
    tenant_digest,
    tenant_leaf,
)


def _hash(n: int) -> str:
    return hashlib.sha256(str(n).encode()).hexdigest()


ROWS = [(seq, _hash(seq), ("acme" if seq % 3 else "globex") if seq % 7 else None) for seq in range(1, 41)]


def _segment() -> tuple[str, dict[str | None, TenantCommitment]]:
    root, commitments = commit_segment(5, ROWS, {"initech": 2})
    return root, {c.tenant: c for c in commitments}


def test_every_tenant_leaf_reaches_the_root_and_carries_its_own_records() -> None:
    root, by_tenant = _segment()
    assert set(by_tenant) == {"acme", "globex", None, "initech"}
    for tenant, commitment in by_tenant.items():
        assert commitment.root() == root
        mine = [(seq, value) for seq, value, owner in ROWS if owner == tenant]
        assert commitment.count == len(mine)
        assert commitment.digest == tenant_digest(mine)
        assert len(commitment.path) == MIN_DEPTH
    assert by_tenant["initech"].count == 0
    assert by_tenant["initech"].since == 2
    assert by_tenant["acme"].since == 5  # first seen in this segment


def test_the_digest_is_sha256sum_of_seq_hash_lines() -> None:
    pairs = [(3, _hash(3)), (10, _hash(10))]
    assert digest_lines(pairs) == f"3 {_hash(3)}\n10 {_hash(10)}\n".encode()
    assert tenant_digest(pairs) == hashlib.sha256(digest_lines(pairs)).hexdigest()
    assert tenant_digest([]) == hashlib.sha256(b"").hexdigest()


def test_the_leaf_is_salted_canonical_json() -> None:
    salt = "ab" * 32
    body = canonical_json({"count": 2, "digest": _hash(1), "since": 4, "tenant": "acme"}).encode()
    expected = hashlib.sha256(b"\x00" + bytes.fromhex(salt) + body).hexdigest()
    assert tenant_leaf(tenant="acme", count=2, digest=_hash(1), since=4, salt=salt) == expected
    other_salt = tenant_leaf(tenant="acme", count=2, digest=_hash(1), since=4, salt="cd" * 32)
    assert other_salt != expected


def test_two_seals_of_the_same_segment_differ_in_salts_and_slots_but_each_verifies() -> None:
    first, a = commit_segment(5, ROWS, {})
    second, b = commit_segment(5, ROWS, {})
    assert first != second
    assert {c.salt for c in a}.isdisjoint({c.salt for c in b})
    assert all(c.root() == first for c in a)
    assert all(c.root() == second for c in b)


@pytest.mark.parametrize("field", ["tenant", "count", "digest", "since", "salt", "index"])
def test_changing_any_field_of_a_commitment_breaks_inclusion(field: str) -> None:
    root, by_tenant = _segment()
    value = by_tenant["acme"].to_dict()
    changed = {
        "tenant": "globex",
        "count": value["count"] + 1,
        "digest": _hash(999),
        "since": value["since"] - 1,
        "salt": "00" * 32,
        "index": value["index"] ^ 1,
    }[field]
    assert TenantCommitment.from_dict({**value, field: changed}).root() != root


@pytest.mark.parametrize("position", [0, 5, MIN_DEPTH - 1])
def test_tampering_any_byte_of_the_path_breaks_inclusion(position: int) -> None:
    root, by_tenant = _segment()
    commitment = by_tenant["acme"]
    path = list(commitment.path)
    flipped = format(int(path[position][:2], 16) ^ 0x01, "02x")
    path[position] = flipped + path[position][2:]
    assert root_from_path(commitment.leaf, commitment.index, path) != root


def test_record_list_changes_change_the_digest() -> None:
    _, by_tenant = _segment()
    mine = [(seq, value) for seq, value, owner in ROWS if owner == "acme"]
    committed = by_tenant["acme"].digest
    assert tenant_digest(mine) == committed
    assert tenant_digest(list(reversed(mine))) != committed  # swapped order
    assert tenant_digest(mine[:-1]) != committed  # dropped a record
    assert tenant_digest(mine[1:]) != committed
    theirs = next((seq, value) for seq, value, owner in ROWS if owner == "globex")
    assert tenant_digest(sorted([*mine, theirs])) != committed  # another tenant's record added
    altered = [(seq, value if seq != mine[2][0] else _hash(-1)) for seq, value in mine]
    assert tenant_digest(altered) != committed


def test_a_leaf_cannot_pass_as_a_node_or_sit_at_another_depth() -> None:
    root, by_tenant = _segment()
    commitment = by_tenant["acme"]
    with pytest.raises(ValueError, match="outside a tree"):
        root_from_path(commitment.leaf, 2**MIN_DEPTH, commitment.path)
    assert root_from_path(commitment.leaf, commitment.index // 2, commitment.path[1:]) != root


def test_two_tenants_commitments_share_nothing_but_the_root() -> None:
    _root, by_tenant = _segment()
    acme, globex = by_tenant["acme"], by_tenant["globex"]
    assert acme.index != globex.index
    assert acme.salt != globex.salt
    assert acme.digest != globex.digest
    # what acme's pack shows of the others is hashes: no name, no count
    shown = json.dumps(acme.to_dict())
    assert "globex" not in shown
    assert "initech" not in shown
    assert globex.leaf not in acme.path or (acme.index ^ 1) == globex.index  # a sibling hash at most


def test_the_tree_hides_how_many_tenants_there_are() -> None:
    _, few = commit_segment(1, [(1, _hash(1), "a")], {})
    _, many = commit_segment(1, [(n, _hash(n), f"t{n}") for n in range(1, 300)], {})
    assert len(few[0].path) == len(many[0].path) == MIN_DEPTH
    _, lots = commit_segment(1, [(n, _hash(n), f"t{n}") for n in range(1, 2**MIN_DEPTH + 2)], {})
    assert len(lots[0].path) == MIN_DEPTH + 1


def test_from_dict_refuses_malformed_commitments() -> None:
    _, by_tenant = _segment()
    value = by_tenant["acme"].to_dict()
    for bad in (
        {**value, "path": "x"},
        {**value, "count": -1},
        {**value, "tenant": 3},
        {**value, "index": True},
    ):
        with pytest.raises(ValueError, match="must be"):
            TenantCommitment.from_dict(bad)


def _cp(number: int, at: str) -> dict[str, object]:
    return {"checkpoint_seq": number, "at": at, "last_seq": number * 10}


def test_covering_checkpoints_pick_the_segments_around_the_period() -> None:
    checkpoints = [
        _cp(1, "2026-10-31T23:50:00.000000Z"),
        _cp(2, "2026-11-01T00:05:00.000000Z"),
        _cp(3, "2026-11-15T00:00:00.000000Z"),
        _cp(4, "2026-12-01T00:10:00.000000Z"),
        _cp(5, "2026-12-02T00:00:00.000000Z"),
    ]
    november = {"start": "2026-11-01T00:00:00.000000Z", "end": "2026-12-01T00:00:00.000000Z"}
    assert covering_checkpoints(checkpoints, **november) == (2, 4)
    assert covering_checkpoints(checkpoints[:3], **november) == (2, 3)  # newest before the end
    assert (
        covering_checkpoints(
            checkpoints, start="2027-01-01T00:00:00.000000Z", end="2027-02-01T00:00:00.000000Z"
        )
        is None
    )
    assert covering_checkpoints(
        checkpoints, start="2026-01-01T00:00:00.000000Z", end="2026-11-01T00:00:00.000000Z"
    ) == (1, 2)
