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
from collections import defaultdict
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


def _make_entry(pos: int, raw: dict[str, Any]) -> _Entry:
    stored = _as_str(raw.get("hash"))
    computed = _safe_hash(raw)
    own_ok = stored is not None and computed is not None and hmac.compare_digest(stored, computed)
    seq = _as_int(raw.get("seq"))
    valid_seq = seq is not None and seq >= 1
    return _Entry(
        pos=pos,
        raw=raw,
        seq=seq if seq is not None and valid_seq else 0,
        stored=stored,
        computed=computed,
        prev=_as_str(raw.get("prev_hash")),
        own_ok=own_ok,
        seq_note="" if valid_seq else f"seq field {raw.get('seq')!r} is not a positive integer",
        hashes=frozenset(value for value in (stored, computed) if value is not None),
    )


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

    def check_checkpoints(self, checkpoints: Iterable[Mapping[str, Any] | Checkpoint]) -> dict[int, _Anchor]:
        """Report bad checkpoints; return the trusted ones as ``{last_seq: anchor}``."""
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
            problem = self._signature_problem(checkpoint)
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

    def choose(self, groups: Mapping[int, list[_Entry]], anchors: Mapping[int, _Anchor]) -> None:
        """One record per seq; every other claimant of that seq is an insertion."""
        for seq, candidates in groups.items():
            if len(candidates) == 1:
                self.chain[seq] = candidates[0]
                continue
            best = max(candidates, key=lambda entry: (self._score(entry, groups, anchors), -entry.pos))
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

    def check_links(self) -> None:
        for seq in sorted(self.chain):
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
