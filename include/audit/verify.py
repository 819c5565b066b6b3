"""Check an audit log and its checkpoints; name every damaged record and how it was damaged.

An auditor asks two questions: is each record what was written (its own hash), and is the log the
one that was written (nothing removed, added, replaced or moved)? The hash chain answers the second
up to the last record; a signed checkpoint (CloudTrail's digest) answers it for everything sealed,
because the sealed hash is out of reach of whoever can rewrite the table but not sign. So the
verifier authenticates backwards from every trusted checkpoint along ``prev_hash`` links, and uses
the links alone only in the unsealed tail.

Kinds of damage, each reported with the record's ``seq``:

``modified``
    the record's content does not hash to its ``hash`` (a field was changed in place).
``deleted``
    a ``seq`` is missing below the highest one present.
``reordered``
    the record is out of ``seq`` order in the sequence handed in (an export or a copy shuffled).
``inserted``
    a second record claims a ``seq``, or a record hashes correctly but is not the record the chain
    links to (forged or replaced and re-hashed): its successor or a checkpoint vouches for another.
``truncated``
    the latest trusted checkpoint sealed records beyond the end of the log.
``checkpoint_invalid``
    a checkpoint's signature is wrong or its key unknown, or the checkpoint chain has a hole.

Signatures are checked with public keys only (:class:`~include.audit.signing.CheckpointKeys`): a
checkpoint names the fingerprint of the key that signed it, and only the public keys handed in are
trusted, so a chain re-signed with any other key (a fresh one, an old HMAC key, a connection
password) fails. Legacy HMAC checkpoints (written before asymmetric signing) are trusted when their
HMAC key is given, or when a later valid asymmetric checkpoint chains to them (its signed
``prev_checkpoint_signature`` pins every checkpoint before it); an HMAC checkpoint after the first
asymmetric one is always invalid: that key was readable by every task.

Limits, by design (as for CloudTrail): records after the latest checkpoint are only as safe as the
chain is, so deleting or replacing the very last unsealed records, or deleting the latest checkpoint,
cannot be seen from the database alone; seal often and export sealed segments to write-once storage
(:mod:`include.audit.export`). In the unsealed tail, a replaced last-but-one record is reported on
the last record (nothing after it tells which of the two is the forgery).
"""

from __future__ import annotations

import binascii
import bisect
import hmac
from collections import OrderedDict, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from include.audit.records import (
    GENESIS_HASH,
    AuditRecord,
    Checkpoint,
    checkpoint_message,
    record_hash,
)
from include.audit.signing import ASYMMETRIC, HMAC_SHA256, CheckpointKeys, hmac_sha256, verify_signature

MODIFIED: Final = "modified"
DELETED: Final = "deleted"
REORDERED: Final = "reordered"
INSERTED: Final = "inserted"
TRUNCATED: Final = "truncated"
CHECKPOINT_INVALID: Final = "checkpoint_invalid"
DAMAGE_KINDS: Final = (MODIFIED, DELETED, REORDERED, INSERTED, TRUNCATED, CHECKPOINT_INVALID)

NOT_VOUCHED: Final = (
    "legacy HMAC checkpoint not vouched for: no valid asymmetric checkpoint follows it "
    "(give its HMAC key with --legacy-hmac-key-file, or seal once with the new signer)"
)


@dataclass(frozen=True)
class Finding:
    """One problem: a kind of damage at a record (or a run of records) or at a checkpoint.

    :ivar kind: one of :data:`DAMAGE_KINDS`.
    :ivar detail: what exactly was seen, for a human.
    :ivar seq: the record concerned (``None`` for checkpoint problems).
    :ivar last_seq: the end (inclusive) of a run of deleted or truncated records.
    :ivar checkpoint: the checkpoint concerned (``checkpoint_seq``).
    """

    kind: str
    detail: str
    seq: int | None = None
    last_seq: int | None = None
    checkpoint: int | None = None

    @property
    def seqs(self) -> range:
        """Every record ``seq`` this finding is about (empty for checkpoint problems)."""
        if self.seq is None:
            return range(0)
        return range(self.seq, (self.last_seq if self.last_seq is not None else self.seq) + 1)

    def __str__(self) -> str:
        if self.seq is None:
            return f"checkpoint {self.checkpoint}: {self.kind} ({self.detail})"
        if self.last_seq is not None and self.last_seq != self.seq:
            return f"records {self.seq}-{self.last_seq}: {self.kind} ({self.detail})"
        return f"record {self.seq}: {self.kind} ({self.detail})"


@dataclass
class VerifyReport:
    """What :func:`verify` found; ``str(report)`` is the human-readable form, one problem a line.

    :ivar records: records handed in.
    :ivar checkpoints: checkpoints handed in.
    :ivar last_seq: the highest record ``seq`` seen.
    :ivar sealed_seq: ``last_seq`` of the latest trusted checkpoint (0: nothing sealed).
    :ivar signatures_checked: False when no keys were given (checkpoints then trusted as they are,
        and the report never calls the log intact).
    :ivar findings: every problem, in log order.
    """

    records: int = 0
    checkpoints: int = 0
    last_seq: int = 0
    sealed_seq: int = 0
    signatures_checked: bool = True
    findings: list[Finding] = field(default_factory=list)
    after_checkpoint: int = 0
    """0 for a full verify; N for an incremental one (records after checkpoint N only)."""

    @property
    def ok(self) -> bool:
        """True when nothing is damaged."""
        return not self.findings

    def damage(self) -> set[tuple[int, str]]:
        """``(seq, kind)`` for every damaged record (runs expanded)."""
        return {(seq, finding.kind) for finding in self.findings for seq in finding.seqs}

    def checkpoint_damage(self) -> set[tuple[int, str]]:
        """``(checkpoint_seq, kind)`` for every checkpoint problem."""
        return {
            (finding.checkpoint, finding.kind)
            for finding in self.findings
            if finding.seq is None and finding.checkpoint is not None
        }

    def lines(self) -> list[str]:
        """A summary line, a warning if signatures were not checked, then one line per problem."""
        if self.ok:
            unsealed = self.last_seq - self.sealed_seq
            counts = (
                f"{self.records} records (last seq {self.last_seq}), "
                f"{self.checkpoints} checkpoints, sealed up to record {self.sealed_seq}"
                + (f" ({unsealed} unsealed)" if unsealed > 0 else "")
            )
            # Without signatures a consistent chain proves nothing against whoever can write the
            # tables (they rebuild the hashes): never call that "intact".
            head = (
                f"audit log intact: {counts}"
                if self.signatures_checked
                else f"audit chain consistent: {counts}"
            )
        else:
            head = (
                f"audit log DAMAGED: {len(self.findings)} problem(s) in {self.records} records "
                f"and {self.checkpoints} checkpoints"
            )
        out = [head]
        if self.after_checkpoint:
            out.append(
                f"incremental: only records after checkpoint {self.after_checkpoint} were read, and "
                f"checkpoint signatures from {self.after_checkpoint} on (a full verify covers the rest)"
            )
        if not self.signatures_checked:
            out.append(
                "warning: checkpoint signatures NOT checked (--no-signatures): anyone who can write "
                "the tables could have rebuilt this chain; this does not show the log is authentic"
            )
        out += [str(finding) for finding in self.findings]
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())


@dataclass(eq=False, slots=True)
class _Entry:
    """A record as handed in, with what the verifier learnt about it."""

    pos: int
    raw: dict[str, Any]
    seq: int
    stored: str | None
    computed: str | None
    prev: str | None
    own_ok: bool
    seq_note: str = ""
    flagged: bool = False
    # The hashes a successor may legitimately link to: the stored one and the recomputed one. A
    # record whose content was changed keeps its stored hash; one whose ``hash`` field was changed
    # keeps its content: either way the successor still links to it, only the record is reported.
    hashes: frozenset[str] = frozenset()
    # Streaming only: the record's ``[seq, pos]`` in the order window (its seq may still change).
    cell: list[int] | None = None


@dataclass(frozen=True)
class _Anchor:
    hash: str
    checkpoint: int


def _safe_hash(raw: Mapping[str, Any]) -> str | None:
    try:
        return record_hash(raw)
    except (TypeError, ValueError):
        return None


def _as_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _as_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _as_dict(item: Mapping[str, Any]) -> dict[str, Any]:
    return item if type(item) is dict else dict(item)  # read, never changed: no copy needed


_NO_RAW: Final[dict[str, Any]] = {}
"""What an entry keeps of a record that hashes to its own ``hash``: nothing (only a record whose
own hash fails is ever re-hashed with another ``seq``), so open segments stay small."""


HashedRecord = tuple[dict[str, Any] | None, int, str | None, str | None, str | None, bool, str]
"""What the verifier keeps of one record (:func:`hash_record`): the record itself only when its own
hash fails, its seq (0: not a positive integer), stored hash, recomputed hash, ``prev_hash``,
whether the two hashes match, and a note on a malformed seq."""


def hash_record(raw: Mapping[str, Any]) -> HashedRecord:
    """Hash one record for :func:`verify_stream_hashed` (the costly part; another process may do it).

    :param raw: the record as stored or exported (a mapping of its fields).
    """
    raw = _as_dict(raw)
    stored = _as_str(raw.get("hash"))
    computed = _safe_hash(raw)
    own_ok = stored is not None and computed is not None and hmac.compare_digest(stored, computed)
    seq = _as_int(raw.get("seq"))
    valid_seq = seq is not None and seq >= 1
    return (
        None if own_ok else raw,
        seq if seq is not None and valid_seq else 0,
        stored,
        computed,
        _as_str(raw.get("prev_hash")),
        own_ok,
        "" if valid_seq else f"seq field {raw.get('seq')!r} is not a positive integer",
    )


def _hashed_entry(pos: int, hashed: HashedRecord) -> _Entry:
    kept, seq, stored, computed, prev, own_ok, note = hashed
    if own_ok and stored is not None:
        hashes: frozenset[str] = frozenset((stored,))
    else:
        hashes = frozenset(value for value in (stored, computed) if value is not None)
    raw = _NO_RAW if kept is None else kept
    return _Entry(pos, raw, seq, stored, computed, prev, own_ok, note, False, hashes)


def _make_entry(pos: int, raw: dict[str, Any]) -> _Entry:
    return _hashed_entry(pos, hash_record(raw))


def _rehome_candidates(
    entry: _Entry, seq_by_hash: Mapping[str, int], seq_by_prev: Mapping[str, int]
) -> list[int]:
    """Where the record's links place it: after the record it links to, before the one linking to it."""
    candidates = []
    prev, stored = entry.prev or "", entry.stored or ""
    if prev == GENESIS_HASH:
        candidates.append(1)
    elif prev in seq_by_hash:
        candidates.append(seq_by_hash[prev] + 1)
    if stored in seq_by_prev:
        candidates.append(seq_by_prev[stored] - 1)
    return candidates


def _rehome(entry: _Entry, seq_by_hash: Mapping[str, int], seq_by_prev: Mapping[str, int]) -> None:
    """A record whose ``seq`` field was changed: find its true seq from its links.

    If the stored hash matches the content with ``seq`` set to where the links place it, the record
    is that one with its seq field altered (two rows whose seqs were swapped in SQL are found as
    such), not a record that appeared at another position.
    """
    if entry.own_ok or entry.stored is None or entry.prev is None:
        return
    for candidate in _rehome_candidates(entry, seq_by_hash, seq_by_prev):
        if (
            candidate >= 1
            and candidate != entry.seq
            and _safe_hash({**entry.raw, "seq": candidate}) == entry.stored
        ):
            entry.seq_note = f"seq field altered (reads {entry.raw.get('seq')!r}, hash matches {candidate})"
            entry.seq = candidate
            return


def _entries(records: Iterable[Mapping[str, Any] | AuditRecord]) -> list[_Entry]:
    entries = [
        _make_entry(pos, item.to_dict() if isinstance(item, AuditRecord) else _as_dict(item))
        for pos, item in enumerate(records)
    ]
    seq_by_hash = {value: entry.seq for entry in entries if entry.seq for value in entry.hashes}
    seq_by_prev = {entry.prev: entry.seq for entry in entries if entry.seq and entry.prev}
    for entry in entries:
        _rehome(entry, seq_by_hash, seq_by_prev)
    previous = 0
    for entry in entries:
        if entry.seq == 0:  # seq not an integer and not recoverable: go by position
            entry.seq = previous + 1
        previous = entry.seq
    return entries


def _out_of_order(seqs: list[int]) -> list[int]:
    """Positions outside one longest non-decreasing run of ``seqs``: the fewest records that moved."""
    tails: list[int] = []
    tail_pos: list[int] = []
    parent = [-1] * len(seqs)
    for pos, seq in enumerate(seqs):
        at = bisect.bisect_right(tails, seq)
        if at == len(tails):
            tails.append(seq)
            tail_pos.append(pos)
        else:
            tails[at] = seq
            tail_pos[at] = pos
        parent[pos] = tail_pos[at - 1] if at > 0 else -1
    keep: set[int] = set()
    pos = tail_pos[-1] if tail_pos else -1
    while pos >= 0:
        keep.add(pos)
        pos = parent[pos]
    return [pos for pos in range(len(seqs)) if pos not in keep]


def _moved(seqs: list[int]) -> list[int]:
    """Positions of the records that are out of ``seq`` order.

    The fewest records whose moving explains the order (outside one longest non-decreasing run),
    unless the records away from their sorted place are hardly more: two swapped records are both
    named (not one of them and an innocent neighbour, which a longest run may leave out instead).
    """
    if seqs == sorted(seqs):  # in order (the usual case): one run holds them all, nothing moved
        return []
    moved = _out_of_order(seqs)
    if not moved:
        return moved
    ranked = sorted(seqs)
    displaced = [pos for pos, seq in enumerate(seqs) if seq != ranked[pos]]
    return displaced if len(displaced) <= 2 * len(moved) else moved


def _missing_runs(present: Iterable[int]) -> list[tuple[int, int]]:
    """``(first, last)`` of each run of seqs absent between 1 and the highest present."""
    runs: list[tuple[int, int]] = []
    expected = 1
    for seq in sorted(present):
        if seq > expected:
            runs.append((expected, seq - 1))
        expected = max(expected, seq + 1)
    return runs


class _Verifier:
    def __init__(self, keys: CheckpointKeys | None) -> None:
        self.keys = keys
        self.findings: list[Finding] = []
        self.chain: dict[int, _Entry] = {}
        self.authentic: set[int] = set()

    # --- checkpoints ------------------------------------------------------------------------

    def _signature_problem(self, checkpoint: Mapping[str, Any]) -> str | None:
        """Why the signature is not trusted, ``None`` when it is, :data:`NOT_VOUCHED` for a legacy
        HMAC checkpoint whose trust depends on a later asymmetric one."""
        if self.keys is None:
            return None
        algorithm, key_id = checkpoint.get("algorithm", HMAC_SHA256), checkpoint.get("key_id")
        try:
            message = checkpoint_message(checkpoint)
            signature = binascii.unhexlify(str(checkpoint.get("signature")))
        except (TypeError, ValueError, binascii.Error):
            return "content is not JSON or the signature is not hex, cannot be checked"
        if algorithm == HMAC_SHA256:
            key = self.keys.legacy_hmac.get(key_id) if isinstance(key_id, str) else None
            if key is None:
                return NOT_VOUCHED
            good = hmac.compare_digest(hmac_sha256(key, message), str(checkpoint.get("signature")))
            return None if good else "bad signature (legacy HMAC)"
        if algorithm not in ASYMMETRIC:
            return f"unknown algorithm {algorithm!r}"
        public_key = self.keys.public.get(key_id) if isinstance(key_id, str) else None
        if public_key is None:
            return f"no trusted public key for key id {key_id!r} (signed with another key?)"
        if not verify_signature(public_key, str(algorithm), signature, message):
            return f"bad signature ({algorithm}, key {key_id})"
        return None

    def _bad_checkpoint(self, number: int, detail: str) -> None:
        self.findings.append(Finding(CHECKPOINT_INVALID, detail, checkpoint=number))

    def _check_checkpoint_chain(self, numbered: list[tuple[int, dict[str, Any]]]) -> None:
        """Numbers 1, 2, 3... each naming the previous one's signature; last_seq never going back."""
        expected, prev_last = 1, 0
        prev_signature: Any = GENESIS_HASH
        for number, checkpoint in sorted(numbered, key=lambda item: item[0]):
            if number < expected:
                self._bad_checkpoint(number, "duplicate checkpoint number")
                continue
            for missing in range(expected, number):
                self._bad_checkpoint(missing, f"missing: checkpoint {number} follows {expected - 1}")
            if number == expected and checkpoint.get("prev_checkpoint_signature") != prev_signature:
                self._bad_checkpoint(number, f"does not chain to checkpoint {number - 1}")
            last = _as_int(checkpoint.get("last_seq"))
            if last is not None and last < prev_last:
                self._bad_checkpoint(number, f"last_seq {last} is before the previous one ({prev_last})")
            expected, prev_signature = number + 1, checkpoint.get("signature")
            prev_last = max(prev_last, last or 0)

    def _legacy_verdicts(
        self, numbered: list[tuple[int, dict[str, Any]]], problems: dict[int, str | None]
    ) -> None:
        """Settle the legacy HMAC checkpoints once every asymmetric one is judged.

        One is trusted (by its HMAC key or) when a valid asymmetric checkpoint with a higher
        number exists; any HMAC checkpoint after the first valid asymmetric one is refused.
        """
        valid_asymmetric = [
            number
            for number, checkpoint in numbered
            if problems.get(number) is None and checkpoint.get("algorithm", HMAC_SHA256) in ASYMMETRIC
        ]
        if self.keys is None:
            return
        first, last = min(valid_asymmetric, default=None), max(valid_asymmetric, default=0)
        for number, checkpoint in numbered:
            if checkpoint.get("algorithm", HMAC_SHA256) != HMAC_SHA256:
                continue
            if first is not None and number > first:
                problems[number] = (
                    f"HMAC-signed after asymmetric signing began (checkpoint {first}): "
                    "the old HMAC key was readable by tasks, so this is treated as forged"
                )
            elif problems.get(number) == NOT_VOUCHED and number < last:
                problems[number] = None

    def check_checkpoints(
        self, checkpoints: Iterable[Mapping[str, Any] | Checkpoint], *, signatures_from: int = 0
    ) -> dict[int, _Anchor]:
        """Report bad checkpoints; return the trusted ones as ``{last_seq: anchor}``.

        :param signatures_from: check signatures from this checkpoint number on only (an
            incremental verify); the chain of every checkpoint (numbers, links) is always checked.
        """
        anchors: dict[int, _Anchor] = {}
        numbered: list[tuple[int, dict[str, Any]]] = []
        problems: dict[int, str | None] = {}
        for pos, item in enumerate(checkpoints):
            checkpoint = item.to_dict() if isinstance(item, Checkpoint) else dict(item)
            number = _as_int(checkpoint.get("checkpoint_seq"))
            if number is None:
                self._bad_checkpoint(pos + 1, "checkpoint_seq is not an integer (numbered by position)")
                continue
            numbered.append((number, checkpoint))
            problem = self._signature_problem(checkpoint) if number >= signatures_from else None
            # A duplicated number keeps the worst verdict: a forged twin must not launder it.
            problems[number] = problem if problems.get(number) is None else problems[number]
        self._legacy_verdicts(numbered, problems)
        for number, checkpoint in numbered:
            problem = problems.get(number)
            last_seq, last_hash = _as_int(checkpoint.get("last_seq")), _as_str(checkpoint.get("last_hash"))
            if problem is not None:
                self._bad_checkpoint(number, problem)
            elif last_seq and last_hash and number >= anchors.get(last_seq, _Anchor("", 0)).checkpoint:
                anchors[last_seq] = _Anchor(last_hash, number)
        self._check_checkpoint_chain(numbered)
        return anchors

    # --- records ----------------------------------------------------------------------------

    def _record(self, kind: str, seq: int, detail: str, last_seq: int | None = None) -> None:
        self.findings.append(Finding(kind, detail, seq=seq, last_seq=last_seq))

    def _forged(self, entry: _Entry, why: str) -> None:
        """``entry`` hashes correctly but is not the record the chain vouches for."""
        if entry.flagged:
            return
        entry.flagged = True
        self._record(INSERTED, entry.seq, f"valid own hash, but {why}: forged or replaced")

    def check_own_hashes(self, entries: list[_Entry]) -> None:
        for entry in entries:
            if entry.own_ok and entry.seq_note:  # hashes correctly with an impossible seq: forged
                entry.flagged = True
                self._record(INSERTED, entry.seq, f"valid own hash, but {entry.seq_note}")
            if entry.own_ok:
                continue
            entry.flagged = True
            if entry.computed is None:
                detail = "content is not JSON, cannot be hashed"
            elif entry.stored is None:
                detail = "hash field missing"
            else:
                detail = entry.seq_note or "hash mismatch"
            self._record(MODIFIED, entry.seq, detail)

    def check_order(self, entries: list[_Entry]) -> None:
        for pos in _moved([entry.seq for entry in entries]):
            before = f"record {entries[pos - 1].seq}" if pos > 0 else "the start"
            after = f"record {entries[pos + 1].seq}" if pos + 1 < len(entries) else "the end"
            self._record(REORDERED, entries[pos].seq, f"at position {pos + 1}, between {before} and {after}")

    def check_missing(self, groups: Mapping[int, list[_Entry]], anchors: Mapping[int, _Anchor]) -> None:
        for first, last in _missing_runs(groups):
            count = last - first + 1
            self._record(DELETED, first, "missing" if count == 1 else f"{count} records missing", last)
        end = max(groups, default=0)
        sealed = max(anchors, default=0)
        if sealed > end:
            checkpoint = anchors[sealed].checkpoint
            detail = f"log ends at record {end}; checkpoint {checkpoint} sealed up to record {sealed}"
            self._record(TRUNCATED, end + 1, detail, sealed)

    def _score(
        self, entry: _Entry, groups: Mapping[int, list[_Entry]], anchors: Mapping[int, _Anchor]
    ) -> int:
        """How well a candidate for a duplicated seq fits the chain around it."""
        anchor = anchors.get(entry.seq)
        score = 8 if anchor is not None and anchor.hash in entry.hashes else 0
        if any(successor.prev in entry.hashes for successor in groups.get(entry.seq + 1, ())):
            score += 4
        score += 2 if entry.own_ok else 0
        before = (
            {GENESIS_HASH}
            if entry.seq == 1
            else {h for other in groups.get(entry.seq - 1, ()) for h in other.hashes}
        )
        return score + (1 if entry.prev in before else 0)

    def choose(
        self,
        groups: Mapping[int, list[_Entry]],
        anchors: Mapping[int, _Anchor],
        neighbours: Mapping[int, list[_Entry]] | None = None,
    ) -> None:
        """One record per seq; every other claimant of that seq is an insertion.

        :param neighbours: the groups a candidate's predecessor and successor are looked up in
            (default ``groups``; a segment adds the last seq of the segment before it).
        """
        around = groups if neighbours is None else neighbours
        for seq, candidates in groups.items():
            if len(candidates) == 1:
                self.chain[seq] = candidates[0]
                continue
            best = max(candidates, key=lambda entry: (self._score(entry, around, anchors), -entry.pos))
            self.chain[seq] = best
            for entry in candidates:
                if entry is not best and not entry.flagged:
                    entry.flagged = True
                    detail = f"duplicate seq: the record at position {best.pos + 1} holds it"
                    self._record(INSERTED, seq, detail)

    def _walk_down(self, seq: int, anchor: _Anchor) -> None:
        """Authenticate backwards from a trusted checkpoint along ``prev_hash`` links."""
        expected: str | None = anchor.hash
        why = f"checkpoint {anchor.checkpoint} sealed a different record {seq}"
        trusted = True  # False once the expectation comes from a modified record's prev_hash
        while seq in self.chain and expected is not None:
            entry = self.chain[seq]
            if expected not in entry.hashes:
                if trusted:
                    self._forged(entry, why)
                return
            if seq in self.authentic:
                return
            self.authentic.add(seq)
            trusted, expected = entry.own_ok, entry.prev
            why = f"record {seq} (sealed) links to a different record {seq - 1}"
            seq -= 1

    def walk_anchors(self, anchors: Mapping[int, _Anchor]) -> None:
        for seq in sorted(anchors, reverse=True):
            self._walk_down(seq, anchors[seq])

    def _blame_link(self, before: _Entry, entry: _Entry) -> None:
        """``entry`` does not link to ``before``, both hash correctly: which one is the forgery?"""
        seq = entry.seq
        if seq in self.authentic:
            self._forged(before, f"record {seq} (sealed) links to a different record {seq - 1}")
        elif seq - 1 in self.authentic:
            self._forged(entry, f"prev_hash does not match record {seq - 1} (sealed)")
        elif (after := self.chain.get(seq + 1)) is not None and after.prev in entry.hashes:
            self._forged(before, f"record {seq} links to a different record {seq - 1} (unsealed)")
        else:
            self._forged(entry, f"prev_hash does not match record {seq - 1} (unsealed)")

    def check_links(self, after: int = 0) -> None:
        """Check the link of every chosen record above ``after`` to the one before it."""
        for seq in sorted(self.chain):
            if seq <= after:
                continue
            entry = self.chain[seq]
            if entry.flagged:
                continue
            if seq == 1:
                if entry.prev != GENESIS_HASH:
                    self._forged(entry, "prev_hash of record 1 is not the genesis hash")
                continue
            before = self.chain.get(seq - 1)
            if before is not None and not before.flagged and entry.prev not in before.hashes:
                self._blame_link(before, entry)

    def run(
        self,
        records: Iterable[Mapping[str, Any] | AuditRecord],
        checkpoints: Iterable[Mapping[str, Any] | Checkpoint],
    ) -> VerifyReport:
        entries = _entries(records)
        checkpoint_list = list(checkpoints)
        anchors = self.check_checkpoints(checkpoint_list)
        self.check_own_hashes(entries)
        self.check_order(entries)
        groups: dict[int, list[_Entry]] = defaultdict(list)
        for entry in entries:
            groups[entry.seq].append(entry)
        self.check_missing(groups, anchors)
        self.choose(groups, anchors)
        self.walk_anchors(anchors)
        self.check_links()
        self.findings.sort(
            key=lambda f: (f.seq is None, f.seq or 0, f.checkpoint or 0, DAMAGE_KINDS.index(f.kind))
        )
        return VerifyReport(
            records=len(entries),
            checkpoints=len(checkpoint_list),
            last_seq=max(groups, default=0),
            sealed_seq=max(anchors, default=0),
            signatures_checked=self.keys is not None,
            findings=self.findings,
        )


def verify(
    records: Iterable[Mapping[str, Any] | AuditRecord],
    checkpoints: Iterable[Mapping[str, Any] | Checkpoint],
    keys: CheckpointKeys | None,
) -> VerifyReport:
    """Verify ``records`` (in the order stored or exported) against ``checkpoints``.

    :param records: the log, as :class:`~include.audit.records.AuditRecord` or plain mappings.
    :param checkpoints: the checkpoint chain, as :class:`~include.audit.records.Checkpoint` or mappings.
    :param keys: the trusted public keys (and legacy HMAC keys); ``None`` skips signature checks
        (checkpoints are then taken as they are; the report says so and never says "intact").
    :returns: every problem found; ``report.ok`` when there is none.
    """
    if keys is not None and not isinstance(keys, CheckpointKeys):
        raise TypeError(f"keys: a CheckpointKeys or None, got {type(keys).__name__}")
    return _Verifier(keys).run(records, checkpoints)


# --- streaming ------------------------------------------------------------------------------

DEFAULT_LOOKAHEAD: Final = 10_000
"""Records read past a segment's end before it is verified: how far a record may be out of place."""
DEFAULT_TAIL_CHUNK: Final = 50_000
"""Size of the pieces the unsealed tail is verified in (it has no checkpoint to cut it)."""


class IncrementalBaseError(ValueError):
    """The checkpoint an incremental verify was to start from is not trusted (or not there)."""


@dataclass
class _Segment:
    index: int
    low: int  # records low+1 .. high
    high: int
    entries: list[_Entry] = field(default_factory=list)
    passed_at: int | None = None  # stream position of the first record of a later segment


class _StreamVerifier(_Verifier):
    """The same classification as :class:`_Verifier`, one segment (checkpoint to checkpoint) at a time.

    Memory holds the open segments (the one being read, and those still within ``lookahead``
    records), a window of recent hashes for placing records whose ``seq`` field was altered, the
    record at each segment's end (the next segment links to it) and the findings.
    """

    def __init__(self, keys: CheckpointKeys | None, lookahead: int, tail_chunk: int) -> None:
        super().__init__(keys)
        if lookahead < 1 or tail_chunk < 1:
            raise ValueError("lookahead and tail_chunk must be positive")
        self.lookahead = lookahead
        self.tail_chunk = tail_chunk
        self.bounds: list[int] = []
        self.base_seq = 0
        self.open: dict[int, _Segment] = {}
        self.done_index = -1
        self.max_index = -1
        # Hashes of the records read lately -> their seq, oldest evicted first (an OrderedDict:
        # deleting a plain dict's first key over and over makes finding the next one ever slower).
        self.recent: OrderedDict[str, int] = OrderedDict()
        self.expected = 1
        self.end = 0
        self.count = 0
        self.previous_seq = 0
        # The record at the end of the last verified segment, and its claimants (for scoring).
        self.carry_seq = -1
        self.carry_group: list[_Entry] = []
        # Order is judged in windows of the stream, not per segment: a record swapped across a
        # segment boundary is out of place among the records around it, whichever segment they are.
        self.window: list[list[int]] = []  # [seq, pos] cells: not the records, only their order
        # Records whose own hash fails and that no link placed yet, by stored hash: a successor
        # that links to one places it (the second candidate of :func:`_rehome`).
        self.pending: OrderedDict[str, _Entry] = OrderedDict()
        self.window_start = 0  # entries before it were judged already (context only)
        # The range (low, high] of the last segment index computed, and that index.
        self.index_low, self.index_high, self.index_last = 0, 0, -1

    def _judge_order(self, upto: int) -> None:
        """Report the moved records among ``window[window_start:upto]``, the rest of the window as context."""
        for index in _moved([cell[0] for cell in self.window]):
            if self.window_start <= index < upto:
                seq, pos = self.window[index]
                before = f"record {self.window[index - 1][0]}" if index > 0 else "the start"
                after = f"record {self.window[index + 1][0]}" if index + 1 < len(self.window) else "the end"
                self._record(REORDERED, seq, f"at position {pos + 1}, between {before} and {after}")

    def _order(self, entry: _Entry | None) -> None:
        """Add ``entry`` to the order window (``None``: the end); judge a block once it has context."""
        if entry is not None:
            entry.cell = [entry.seq, entry.pos]
            self.window.append(entry.cell)
            if len(self.window) - self.window_start < 2 * self.lookahead:
                return
            upto = self.window_start + self.lookahead
            self._judge_order(upto)
            self.window = self.window[upto - self.lookahead :]
            self.window_start = self.lookahead
            return
        self._judge_order(len(self.window))
        self.window, self.window_start = [], 0

    # --- segments -----------------------------------------------------------------------

    def _index(self, seq: int) -> int:
        if self.bounds and seq <= self.bounds[-1]:
            return bisect.bisect_left(self.bounds, seq)
        last = self.bounds[-1] if self.bounds else self.base_seq
        return len(self.bounds) + (seq - last - 1) // self.tail_chunk

    def _range(self, index: int) -> tuple[int, int]:
        if index < len(self.bounds):
            return (self.bounds[index - 1] if index > 0 else self.base_seq), self.bounds[index]
        last = self.bounds[-1] if self.bounds else self.base_seq
        low = last + (index - len(self.bounds)) * self.tail_chunk
        return low, low + self.tail_chunk

    def _place(self, entry: _Entry) -> None:
        """Set ``entry.seq`` where its links put it when its own hash fails, as :func:`_rehome`
        does, from the hashes of the records read just before it."""
        if not entry.own_ok and entry.stored is not None and entry.prev is not None:
            candidates = []
            if entry.prev == GENESIS_HASH:
                candidates.append(1)
            elif entry.prev in self.recent:
                candidates.append(self.recent[entry.prev] + 1)
            for candidate in candidates:
                if (
                    candidate > self.base_seq
                    and candidate != entry.seq
                    and _safe_hash({**entry.raw, "seq": candidate}) == entry.stored
                ):
                    entry.seq_note = (
                        f"seq field altered (reads {entry.raw.get('seq')!r}, hash matches {candidate})"
                    )
                    entry.seq = candidate
                    break
        if entry.seq == 0:  # seq not an integer and not recoverable: go by position
            entry.seq = self.previous_seq + 1
        self.previous_seq = entry.seq
        for value in entry.hashes:
            self.recent[value] = entry.seq
        while len(self.recent) > 2 * self.lookahead:
            self.recent.popitem(last=False)

    def add(self, entry: _Entry, anchors: Mapping[int, _Anchor]) -> None:
        pos, seq = entry.pos, entry.seq
        self.count += 1
        if entry.own_ok and seq and entry.stored is not None:
            # :meth:`_place` for a record that hashes to its own hash (no candidates to try), inline.
            self.previous_seq = seq
            recent = self.recent
            recent[entry.stored] = seq
            while len(recent) > 2 * self.lookahead:
                recent.popitem(last=False)
        else:
            self._place(entry)
            seq = entry.seq
        window = self.window
        if len(window) + 1 - self.window_start < 2 * self.lookahead:  # :meth:`_order`, inline
            entry.cell = [seq, pos]
            window.append(entry.cell)
        else:
            self._order(entry)
        if self.pending or not entry.own_ok:
            self._link_pending(entry)
            seq = entry.seq
        self._file(entry, self._segment_of(seq), anchors)

    def _segment_of(self, seq: int) -> int:
        """:meth:`_index` of ``seq`` (-1 at or below the base), the last one remembered."""
        if seq <= self.base_seq:
            return -1
        if self.index_low < seq <= self.index_high:  # the segment of the record before, usually
            return self.index_last
        index = self._index(seq)
        self.index_low, self.index_high = self._range(index)
        self.index_last = index
        return index

    def _file(self, entry: _Entry, index: int, anchors: Mapping[int, _Anchor]) -> None:
        """Put ``entry`` in segment ``index``; verify the segments the stream has moved past."""
        pos = entry.pos
        if index <= self.done_index:
            self._late(entry)
            return
        segment = self.open.get(index)
        if segment is None:
            low, high = self._range(index)
            segment = self.open[index] = _Segment(index, low, high)
            if any(other > index for other in self.open):
                segment.passed_at = pos
        segment.entries.append(entry)
        if index > self.max_index:  # the stream moved on: the segments before it start counting down
            for other in self.open.values():
                if other.index < index and other.passed_at is None:
                    other.passed_at = pos
            self.max_index = index
        while self.open:
            lowest = self.open[min(self.open)]
            if lowest.passed_at is None or pos - lowest.passed_at < self.lookahead:
                break
            self._finish(self.open.pop(lowest.index), anchors)

    def _link_pending(self, entry: _Entry) -> None:
        """Place the unplaced record ``entry`` links to; remember ``entry`` if it is unplaced."""
        if entry.prev is not None and entry.prev in self.pending:
            self._place_by_successor(self.pending.pop(entry.prev), entry)
        placed = entry.seq_note.startswith("seq field altered")
        if not entry.own_ok and entry.stored is not None and entry.prev is not None and not placed:
            self.pending[entry.stored] = entry
            while len(self.pending) > self.lookahead:
                self.pending.popitem(last=False)

    def _place_by_successor(self, entry: _Entry, successor: _Entry) -> None:
        """``successor`` links to ``entry``, which its links did not place: try the seq before it."""
        candidate = successor.seq - 1
        if candidate <= self.base_seq or candidate == entry.seq:
            return
        if _safe_hash({**entry.raw, "seq": candidate}) != entry.stored:
            return
        old, new = self._index(entry.seq), self._index(candidate)
        if old not in self.open or new <= self.done_index or entry not in self.open[old].entries:
            return  # its segment was verified already: leave it where it was judged
        self.open[old].entries.remove(entry)
        entry.seq_note = f"seq field altered (reads {entry.raw.get('seq')!r}, hash matches {candidate})"
        entry.seq = candidate
        if entry.cell is not None:
            entry.cell[0] = candidate
        segment = self.open.get(new)
        if segment is None:
            low, high = self._range(new)
            segment = self.open[new] = _Segment(new, low, high, passed_at=entry.pos)
        segment.entries.append(entry)

    def _late(self, entry: _Entry) -> None:
        """A record of a segment already verified (it came more than ``lookahead`` records late)."""
        self.end = max(self.end, entry.seq)
        if entry.seq <= self.base_seq:
            self._record(REORDERED, entry.seq, "before the checkpoint the incremental verify starts from")
            return
        self._record(
            REORDERED,
            entry.seq,
            f"at position {entry.pos + 1}, more than {self.lookahead} records after its segment "
            "(that segment was verified without it)",
        )

    def finish_all(self, anchors: Mapping[int, _Anchor]) -> None:
        self._order(None)
        for index in sorted(self.open):
            self._finish(self.open.pop(index), anchors)

    def _finish(self, segment: _Segment, anchors: Mapping[int, _Anchor]) -> None:
        """Verify one segment: the checks of :meth:`_Verifier.run`, linked to the segment before."""
        entries = segment.entries
        base_group = self.carry_group if self.carry_seq == segment.low else []
        seq_by_hash = {value: entry.seq for entry in (*base_group, *entries) for value in entry.hashes}
        seq_by_prev = {entry.prev: entry.seq for entry in entries if entry.prev}
        for entry in entries:
            if entry.seq_note.startswith("seq field altered"):
                continue  # placed already (:meth:`_place`)
            seq, note = entry.seq, entry.seq_note
            _rehome(entry, seq_by_hash, seq_by_prev)
            if not segment.low < entry.seq <= segment.high:  # its links point outside: keep it here
                entry.seq, entry.seq_note = seq, note
        self.check_own_hashes(entries)
        groups: dict[int, list[_Entry]] = defaultdict(list)
        for entry in entries:
            groups[entry.seq].append(entry)
        for seq in sorted(groups):
            if seq > self.expected:
                count = seq - self.expected
                detail = "missing" if count == 1 else f"{count} records missing"
                self._record(DELETED, self.expected, detail, seq - 1)
            self.expected = max(self.expected, seq + 1)
        self.end = max(self.end, max(groups, default=0))
        neighbours: dict[int, list[_Entry]] = dict(groups)
        if base_group:
            neighbours[segment.low] = base_group
        self.choose(groups, anchors, neighbours)
        if segment.high in anchors and segment.index < len(self.bounds):
            self._walk_down(segment.high, anchors[segment.high])
        self.check_links(after=segment.low)
        # Keep only what the next segment links to.
        last = self.chain.get(segment.high)
        authentic = segment.high in self.authentic
        self.chain = {segment.high: last} if last is not None else {}
        self.authentic = {segment.high} if authentic else set()
        self.carry_seq = segment.high
        self.carry_group = groups.get(segment.high, [])
        self.done_index = segment.index

    def run_stream(
        self,
        records: Iterable[Mapping[str, Any] | AuditRecord],
        checkpoints: Iterable[Mapping[str, Any] | Checkpoint],
        after_checkpoint: int,
        hashed: Iterable[HashedRecord] | None = None,
    ) -> VerifyReport:
        checkpoint_list = list(checkpoints)
        anchors = self.check_checkpoints(checkpoint_list, signatures_from=after_checkpoint)
        if after_checkpoint:
            found = [(seq, a) for seq, a in anchors.items() if a.checkpoint == after_checkpoint]
            if not found:
                raise IncrementalBaseError(
                    f"checkpoint {after_checkpoint} is not a trusted checkpoint (missing, or its signature "
                    "fails): an incremental verify cannot start from it; run a full verify"
                )
            base_seq, base = found[0]
            self.base_seq = base_seq
            self.expected = base_seq + 1
            self.end = base_seq
            # The signed checkpoint stands for the record it sealed: the next one must link to it.
            pseudo = _Entry(
                pos=-1,
                raw={},
                seq=base_seq,
                stored=base.hash,
                computed=base.hash,
                prev=None,
                own_ok=True,
                hashes=frozenset({base.hash}),
            )
            self.chain = {base_seq: pseudo}
            self.authentic = {base_seq}
            self.carry_seq, self.carry_group = base_seq, [pseudo]
            self.recent = OrderedDict({base.hash: base_seq})
        self.bounds = sorted(seq for seq in anchors if seq > self.base_seq)
        if hashed is not None:
            for pos, fields in enumerate(hashed):
                self.add(_hashed_entry(pos, fields), anchors)
        for pos, item in enumerate(records):
            raw = item.to_dict() if isinstance(item, AuditRecord) else _as_dict(item)
            self.add(_make_entry(pos, raw), anchors)
        self.finish_all(anchors)
        sealed = max(anchors, default=0)
        if sealed > self.end:
            checkpoint = anchors[sealed].checkpoint
            detail = f"log ends at record {self.end}; checkpoint {checkpoint} sealed up to record {sealed}"
            self._record(TRUNCATED, self.end + 1, detail, sealed)
        self.findings.sort(
            key=lambda f: (f.seq is None, f.seq or 0, f.checkpoint or 0, DAMAGE_KINDS.index(f.kind))
        )
        return VerifyReport(
            records=self.count,
            checkpoints=len(checkpoint_list),
            last_seq=self.end,
            sealed_seq=sealed,
            signatures_checked=self.keys is not None,
            findings=self.findings,
            after_checkpoint=after_checkpoint,
        )


def verify_stream(
    records: Iterable[Mapping[str, Any] | AuditRecord],
    checkpoints: Iterable[Mapping[str, Any] | Checkpoint],
    keys: CheckpointKeys | None,
    *,
    after_checkpoint: int = 0,
    lookahead: int = DEFAULT_LOOKAHEAD,
    tail_chunk: int = DEFAULT_TAIL_CHUNK,
) -> VerifyReport:
    """:func:`verify` in memory bounded by the largest segment, not the log (docs/audit.md, "At scale").

    ``records`` is read once, in the order stored or exported (a database cursor ``ORDER BY seq``,
    an export's lines); each sealed segment (the records between two trusted checkpoints, and the
    unsealed tail in pieces of ``tail_chunk``) is verified once ``lookahead`` records past its end
    have been read, linked to the record that ended the segment before it. It names the same damage
    as :func:`verify`, except a record more than ``lookahead`` records away from its place: its
    segment reports it deleted, and where it is found it is reported reordered.

    :param after_checkpoint: 0 for a full verify; N: an incremental one, where ``records`` holds
        only the records after checkpoint N's ``last_seq`` (anchored by N's signed last hash), and
        signatures are checked from checkpoint N on (the chain of all checkpoints is still checked).
    :raises IncrementalBaseError: checkpoint ``after_checkpoint`` is missing or not trusted.
    """
    if keys is not None and not isinstance(keys, CheckpointKeys):
        raise TypeError(f"keys: a CheckpointKeys or None, got {type(keys).__name__}")
    return _StreamVerifier(keys, lookahead, tail_chunk).run_stream(records, checkpoints, after_checkpoint)


def verify_stream_hashed(
    hashed: Iterable[HashedRecord],
    checkpoints: Iterable[Mapping[str, Any] | Checkpoint],
    keys: CheckpointKeys | None,
    *,
    after_checkpoint: int = 0,
    lookahead: int = DEFAULT_LOOKAHEAD,
    tail_chunk: int = DEFAULT_TAIL_CHUNK,
) -> VerifyReport:
    """:func:`verify_stream` over records already hashed by :func:`hash_record`, in stream order.

    The same verdicts as ``verify_stream(records, ...)`` on the records those came from: hashing
    (decoding, canonical JSON, SHA-256) is most of the work and needs no other record, so another
    process can do it while this one classifies (:meth:`include.audit.store.AuditStore.verify`).

    :raises IncrementalBaseError: checkpoint ``after_checkpoint`` is missing or not trusted.
    """
    if keys is not None and not isinstance(keys, CheckpointKeys):
        raise TypeError(f"keys: a CheckpointKeys or None, got {type(keys).__name__}")
    return _StreamVerifier(keys, lookahead, tail_chunk).run_stream((), checkpoints, after_checkpoint, hashed)
