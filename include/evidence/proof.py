"""Per-tenant commitments of a sealed segment: the maths, pure (no database, no files).

Each checkpoint (:meth:`include.audit.store.AuditStore.seal`) signs, besides the chain head, a
``tenant_root``: the root of a Merkle tree with one leaf per tenant *ever seen* (records without a
tenant count as the platform's, tenant ``None``), so that a tenant's evidence pack can show that it
holds every record of that tenant in the segment, and nothing of anyone else. docs/evidence.md
gives the argument; the byte forms, so that a verifier can be written in any language:

- tenant digest of a segment: ``SHA-256`` of the lines ``"<seq> <hash>\\n"`` of the tenant's records
  in the segment, in ``seq`` order (UTF-8; the SHA-256 of nothing for a segment with none of its
  records). It is a flat hash, not a tree: a pack always carries the tenant's whole list, so
  ``sha256sum`` can check it.
- leaf: ``SHA-256(0x00 || salt || canonical_json({"count", "digest", "since", "tenant"}))``, where
  ``salt`` is 32 random bytes per leaf (kept in the store, shown only in the tenant's own pack):
  without it, a tenant who knows another's record hash (a ``prev_hash`` of its own records is
  one) could confirm a guess of that tenant's name and count against a sibling hash.
  ``since`` is the first checkpoint that carried the tenant's leaf: from there on every checkpoint
  carries one (``count`` 0 in a segment without its records), so a dropped segment or a dropped
  tail of a pack is a missing leaf, not a silence.
- node: ``SHA-256(0x01 || left || right)`` (the prefixes keep a leaf from passing as a node).
- tree: ``2**depth`` slots, ``depth`` at least :data:`MIN_DEPTH`; tenants in random slots, the other
  slots random 32-byte values (indistinguishable from leaves), so an inclusion path says nothing of
  how many tenants there are (up to ``2**MIN_DEPTH``), of their names or of their counts.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from include.audit.records import canonical_json

MIN_DEPTH: Final = 10
"""Tree depth at least this: 1024 slots, so a path hides the number of tenants below that."""
MAX_DEPTH: Final = 24
LEAF_PREFIX: Final = b"\x00"
NODE_PREFIX: Final = b"\x01"
EMPTY_DIGEST: Final = hashlib.sha256(b"").hexdigest()

Tenant = str | None


def _hex32(value: Any, what: str) -> bytes:
    if not isinstance(value, str) or len(value) != 64:
        raise ValueError(f"{what}: must be 64 hex digits")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise ValueError(f"{what}: must be 64 hex digits") from None


def digest_lines(entries: Iterable[tuple[int, str]]) -> bytes:
    """The bytes a tenant digest hashes: ``"<seq> <hash>\\n"`` per record, in the order given."""
    return "".join(f"{seq} {record_hash}\n" for seq, record_hash in entries).encode("utf-8")


def tenant_digest(entries: Iterable[tuple[int, str]]) -> str:
    """SHA-256 (hex) of :func:`digest_lines` (``entries``: ``(seq, hash)`` in ``seq`` order)."""
    return hashlib.sha256(digest_lines(entries)).hexdigest()


def leaf_body(*, tenant: Tenant, count: int, digest: str, since: int) -> bytes:
    """The canonical JSON (UTF-8) a leaf hashes after its prefix and salt."""
    return canonical_json({"count": count, "digest": digest, "since": since, "tenant": tenant}).encode(
        "utf-8"
    )


def tenant_leaf(*, tenant: Tenant, count: int, digest: str, since: int, salt: str) -> str:
    """The leaf (hex) of one tenant in one segment.

    :raises ValueError: a salt or digest that is not 64 hex digits.
    """
    _hex32(digest, "digest")
    body = leaf_body(tenant=tenant, count=count, digest=digest, since=since)
    return hashlib.sha256(LEAF_PREFIX + _hex32(salt, "salt") + body).hexdigest()


def node(left: str, right: str) -> str:
    """An inner node (hex) over two children (hex)."""
    return hashlib.sha256(NODE_PREFIX + bytes.fromhex(left) + bytes.fromhex(right)).hexdigest()


def root_from_path(leaf: str, index: int, path: Sequence[str]) -> str:
    """The root a leaf at slot ``index`` reaches through ``path`` (siblings, leaf level first).

    :raises ValueError: an index outside the tree, or a sibling that is not 64 hex digits.
    """
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < 2 ** len(path):
        raise ValueError(f"leaf index {index!r} is outside a tree of depth {len(path)}")
    current = _hex32(leaf, "leaf")
    for level, sibling in enumerate(path):
        other = _hex32(sibling, f"path[{level}]")
        pair = other + current if (index >> level) & 1 else current + other
        current = hashlib.sha256(NODE_PREFIX + pair).digest()
    return current.hex()


@dataclass(frozen=True)
class TenantCommitment:
    """One tenant's leaf in one checkpoint's tree, and what proves it.

    :ivar checkpoint_seq: the checkpoint whose ``tenant_root`` the path reaches.
    :ivar tenant: the tenant (``None``: the platform's own records).
    :ivar count: its records in the segment. :ivar digest: :func:`tenant_digest` of them.
    :ivar since: the first checkpoint with a leaf of this tenant.
    :ivar salt: 64 hex digits. :ivar index: the slot. :ivar path: siblings, leaf level first.
    """

    checkpoint_seq: int
    tenant: Tenant
    count: int
    digest: str
    since: int
    salt: str
    index: int
    path: tuple[str, ...]

    @property
    def leaf(self) -> str:
        return tenant_leaf(
            tenant=self.tenant, count=self.count, digest=self.digest, since=self.since, salt=self.salt
        )

    def root(self) -> str:
        """The root this commitment's path leads to (compare with the checkpoint's ``tenant_root``)."""
        return root_from_path(self.leaf, self.index, self.path)

    def to_dict(self) -> dict[str, Any]:
        return {
            "checkpoint_seq": self.checkpoint_seq,
            "tenant": self.tenant,
            "count": self.count,
            "digest": self.digest,
            "since": self.since,
            "salt": self.salt,
            "index": self.index,
            "path": list(self.path),
        }

    @classmethod
    def from_dict(cls, value: Mapping[str, Any]) -> TenantCommitment:
        """:raises ValueError, KeyError, TypeError: a malformed commitment."""
        path = value["path"]
        if not isinstance(path, list) or not all(isinstance(item, str) for item in path):
            raise ValueError("path: must be a list of hex strings")
        tenant = value["tenant"]
        if tenant is not None and not isinstance(tenant, str):
            raise ValueError("tenant: must be a string or null")
        numbers = {name: value[name] for name in ("checkpoint_seq", "count", "since", "index")}
        for name, number in numbers.items():
            if isinstance(number, bool) or not isinstance(number, int) or number < 0:
                raise ValueError(f"{name}: must be a non-negative integer")
        return cls(
            checkpoint_seq=numbers["checkpoint_seq"],
            tenant=tenant,
            count=numbers["count"],
            digest=str(value["digest"]),
            since=numbers["since"],
            salt=str(value["salt"]),
            index=numbers["index"],
            path=tuple(path),
        )


def group_by_tenant(rows: Iterable[tuple[int, str, Tenant]]) -> dict[Tenant, list[tuple[int, str]]]:
    """``(seq, hash, tenant)`` rows in ``seq`` order -> ``{tenant: [(seq, hash), ...]}``."""
    groups: dict[Tenant, list[tuple[int, str]]] = {}
    for seq, record_hash, tenant in rows:
        groups.setdefault(tenant, []).append((seq, record_hash))
    return groups


def commit_segment(
    checkpoint_seq: int,
    rows: Iterable[tuple[int, str, Tenant]],
    known: Mapping[Tenant, int],
    *,
    min_depth: int = MIN_DEPTH,
) -> tuple[str, list[TenantCommitment]]:
    """The tree of one segment: its root and every tenant's commitment.

    :param checkpoint_seq: the checkpoint being sealed.
    :param rows: ``(seq, hash, tenant)`` of the segment's records, in ``seq`` order.
    :param known: ``{tenant: since}`` of the tenants with a leaf in earlier checkpoints; each gets
        one here too (count 0 if the segment holds none of its records). A new tenant's ``since``
        is ``checkpoint_seq``.
    :raises ValueError: more tenants than a tree of :data:`MAX_DEPTH` holds.
    """
    groups = group_by_tenant(rows)
    tenants: dict[Tenant, int] = dict(known)
    for tenant in groups:
        tenants.setdefault(tenant, checkpoint_seq)
    depth = max(min_depth, (len(tenants) - 1).bit_length())
    if depth > MAX_DEPTH:
        raise ValueError(f"{len(tenants)} tenants: more than a commitment tree of depth {MAX_DEPTH} holds")
    size = 2**depth
    slots = list(range(size))
    secrets.SystemRandom().shuffle(slots)
    level: list[bytes] = [secrets.token_bytes(32) for _ in range(size)]
    placed: list[tuple[Tenant, int, str, int, str, int]] = []
    for (tenant, since), slot in zip(
        sorted(tenants.items(), key=lambda item: (item[0] is None, item[0] or "")), slots, strict=False
    ):
        entries = groups.get(tenant, [])
        digest = tenant_digest(entries)
        salt = secrets.token_hex(32)
        leaf = tenant_leaf(tenant=tenant, count=len(entries), digest=digest, since=since, salt=salt)
        level[slot] = bytes.fromhex(leaf)
        placed.append((tenant, len(entries), digest, since, salt, slot))
    levels = [level]
    while len(level) > 1:
        level = [
            hashlib.sha256(NODE_PREFIX + level[i] + level[i + 1]).digest() for i in range(0, len(level), 2)
        ]
        levels.append(level)
    root = level[0].hex()
    commitments = [
        TenantCommitment(
            checkpoint_seq=checkpoint_seq,
            tenant=tenant,
            count=count,
            digest=digest,
            since=since,
            salt=salt,
            index=slot,
            path=tuple(levels[height][(slot >> height) ^ 1].hex() for height in range(depth)),
        )
        for tenant, count, digest, since, salt, slot in placed
    ]
    return root, commitments


def covering_checkpoints(
    checkpoints: Sequence[Mapping[str, Any]], *, start: str, end: str
) -> tuple[int, int] | None:
    """The checkpoints whose segments hold every record with ``start`` <= ``at`` < ``end``.

    ``at`` of records and checkpoints come from the database clock under the chain lock, so they
    never go back along the chain: the records of checkpoint N's segment are no later than N's
    ``at``, and records after it are no earlier. The first checkpoint is the first one at or after
    ``start`` (everything before its predecessor is earlier than ``start``), the last is the first
    one at or after ``end`` (everything after it is at ``end`` or later), or the newest one.

    :param checkpoints: in ``checkpoint_seq`` order. :param start: :param end: in
        :data:`include.audit.records.AT_FORMAT` (fixed width, so text order is time order).
    :returns: ``(first, last)`` checkpoint numbers, or ``None`` when no checkpoint is at or after ``start``.
    """
    ordered = sorted(checkpoints, key=lambda cp: int(cp["checkpoint_seq"]))
    first = next((cp for cp in ordered if str(cp["at"]) >= start), None)
    if first is None:
        return None
    last = next((cp for cp in ordered if str(cp["at"]) >= end), ordered[-1])
    return int(first["checkpoint_seq"]), int(last["checkpoint_seq"])
