"""Verify an evidence pack offline: the pack directory and the platform's public key(s), nothing else.

Every problem is named: a file whose sha256 is not the manifest's, a missing record (its ``seq``
and the checkpoint that committed it), an altered record (``seq`` and ``records.jsonl`` line), a
foreign record (``belongs to tenant X``, or ``not in the tenant's commitment``), a bad checkpoint
signature, a commitment that does not reach the signed root, a broken checkpoint chain. What the
pack cannot prove (segments sealed before per-tenant commitments, a period that ends after the
newest checkpoint) is a warning, never silently passed: :attr:`PackReport.complete` is then
``False``. docs/evidence.md gives the argument and the same checks with openssl and sha256sum.
"""

from __future__ import annotations

import binascii
import hashlib
import itertools
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from include.audit.records import GENESIS_HASH, canonical_json, checkpoint_message, record_hash
from include.audit.signing import (
    ASYMMETRIC,
    HMAC_SHA256,
    CheckpointKeys,
    PublicKey,
    key_fingerprint,
    verify_signature,
)
from include.evidence.proof import TenantCommitment, tenant_digest

PACK_FORMAT: Final = "orchestrator-evidence-pack/1"
MANIFEST_FORMAT: Final = "orchestrator-evidence-manifest/1"
RECORDS_FILE: Final = "records.jsonl"
PROOF_FILE: Final = "proof.json"
SUMMARY_FILE: Final = "summary.json"
REPORT_FILE: Final = "report.html"
MANIFEST_FILE: Final = "manifest.json"
SUMS_FILE: Final = "SHA256SUMS"
MANIFEST_SIG_FILE: Final = "manifest.sig"
UNHASHED: Final = frozenset({MANIFEST_FILE, SUMS_FILE, MANIFEST_SIG_FILE})
"""Files the manifest does not list (itself, its ``sha256sum`` twin, its signature)."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class PackReport:
    """The verdict on one pack.

    :ivar problems: damage, one line each (any: :attr:`ok` is ``False``).
    :ivar warnings: what the pack cannot prove (any: :attr:`complete` is ``False``).
    :ivar notes: facts a reader should know (an unsigned manifest).
    """

    path: Path
    tenant: str | None = None
    period: Mapping[str, Any] = field(default_factory=dict)
    records: int = 0
    segments: int = 0
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def complete(self) -> bool:
        return self.ok and not self.warnings

    def lines(self) -> list[str]:
        period = f"{self.period.get('start')} .. {self.period.get('end')}" if self.period else "?"
        if not self.ok:
            verdict = f"FAILED: {len(self.problems)} problem(s)"
        elif not self.complete:
            verdict = "INTACT, BUT COMPLETENESS NOT PROVEN for part of the period"
        else:
            verdict = "VERIFIED: intact and complete"
        head = (
            f"evidence pack {self.path}: tenant {self.tenant!r}, {period}, "
            f"{self.records} records, {self.segments} segments: {verdict}"
        )
        return (
            [head]
            + [f"PROBLEM: {line}" for line in self.problems]
            + [f"WARNING: {line}" for line in self.warnings]
            + [f"note: {line}" for line in self.notes]
        )

    def __str__(self) -> str:
        return "\n".join(self.lines())


def _keys(
    public_keys: Iterable[PublicKey] | Mapping[str, PublicKey] | CheckpointKeys,
) -> dict[str, PublicKey]:
    if isinstance(public_keys, CheckpointKeys):
        return dict(public_keys.public)
    if isinstance(public_keys, Mapping):
        return dict(public_keys)
    return {key_fingerprint(key): key for key in public_keys}


def _load_records(root: Path, report: PackReport) -> list[tuple[int, str, dict[str, Any]]]:
    lines: list[tuple[int, str, dict[str, Any]]] = []
    try:
        text = (root / RECORDS_FILE).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        report.problems.append(f"{RECORDS_FILE}: unreadable ({error})")
        return lines
    for number, line in enumerate(text.splitlines(), start=1):
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError("not an object")
        except ValueError:
            report.problems.append(f"{RECORDS_FILE} line {number}: not a JSON record (altered)")
            continue
        lines.append((number, line, record))
    return lines


def _read_manifest(root: Path, report: PackReport) -> tuple[bytes, dict[str, Any]] | None:
    try:
        manifest_bytes = (root / MANIFEST_FILE).read_bytes()
        manifest = json.loads(manifest_bytes)
        if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
            raise ValueError("not an evidence manifest")
        if not isinstance(manifest.get("files"), dict):
            raise ValueError("no files")
    except (OSError, ValueError) as error:
        report.problems.append(f"{MANIFEST_FILE}: unreadable ({error})")
        return None
    return manifest_bytes, manifest


def _check_files(root: Path, files: Mapping[str, Any], report: PackReport) -> None:
    for name, digest in sorted(files.items()):
        target = root / name
        if name.startswith("/") or ".." in Path(name).parts or target.is_symlink():
            report.problems.append(f"manifest mismatch: {name!r} is not a plain file inside the pack")
        elif not target.is_file():
            report.problems.append(f"manifest mismatch: {name} is listed but missing from the pack")
        elif sha256_file(target) != digest:
            report.problems.append(f"manifest mismatch: {name} (its sha256 is not the manifest's: altered)")
    for target in sorted(root.rglob("*")):
        name = target.relative_to(root).as_posix()
        if target.is_file() and name not in files and name not in UNHASHED:
            report.problems.append(
                f"manifest mismatch: {name} is in the pack but not in the manifest (added)"
            )
    expected_sums = "".join(f"{digest}  {name}\n" for name, digest in files.items())
    sums = root / SUMS_FILE
    if sums.is_file() and sums.read_text(encoding="utf-8", errors="replace") != expected_sums:
        report.problems.append(f"{SUMS_FILE} does not list what {MANIFEST_FILE} lists")


def _check_manifest_signature(
    root: Path,
    manifest_bytes: bytes,
    manifest: Mapping[str, Any],
    keys: Mapping[str, PublicKey],
    report: PackReport,
) -> None:
    signature_path = root / MANIFEST_SIG_FILE
    if not signature_path.is_file():
        report.notes.append(
            "manifest not signed: records.jsonl and proof.json are proven by the signed checkpoints; "
            "summary.json and report.html only by the manifest's hashes"
        )
        return
    signed_by = manifest.get("signed_by")
    signed_by = signed_by if isinstance(signed_by, dict) else {}
    key_id, algorithm = signed_by.get("key_id"), str(signed_by.get("algorithm"))
    key = keys.get(key_id) if isinstance(key_id, str) else None
    if key is None:
        report.problems.append(f"{MANIFEST_SIG_FILE}: signed by key {key_id!r}, not a trusted public key")
    elif not verify_signature(key, algorithm, signature_path.read_bytes(), manifest_bytes):
        report.problems.append(f"{MANIFEST_SIG_FILE}: bad signature over {MANIFEST_FILE}")
    else:
        report.notes.append(f"manifest signed by {key_id}")


class _PackVerifier:
    """One pack's checks, in order; every finding goes to :attr:`report`."""

    def __init__(self, root: Path, keys: Mapping[str, PublicKey]) -> None:
        self.root = root
        self.keys = keys
        self.report = PackReport(path=root)
        self.checkpoints: dict[int, dict[str, Any]] = {}
        self.committed: dict[int, tuple[str, int]] = {}  # seq -> (hash, checkpoint): signed commitments
        self.listed: dict[int, tuple[str, int]] = {}  # seq -> (hash, checkpoint): unsigned lists
        self.since: int | None = None

    def problem(self, text: str) -> None:
        self.report.problems.append(text)

    # --- manifest -----------------------------------------------------------------------------

    def manifest(self) -> None:
        read = _read_manifest(self.root, self.report)
        if read is None:
            return
        manifest_bytes, manifest = read
        _check_files(self.root, manifest["files"], self.report)
        _check_manifest_signature(self.root, manifest_bytes, manifest, self.keys, self.report)

    # --- checkpoints --------------------------------------------------------------------------

    def _signature(self, number: int, checkpoint: Mapping[str, Any]) -> bool | None:
        """True: trusted; False: legacy HMAC (vouched for later); None: a problem (reported)."""
        algorithm = checkpoint.get("algorithm", HMAC_SHA256)
        key_id = checkpoint.get("key_id")
        try:
            message = checkpoint_message(checkpoint)
            signature = binascii.unhexlify(str(checkpoint.get("signature")))
        except (TypeError, ValueError, binascii.Error):
            self.problem(f"checkpoint {number}: not JSON or its signature is not hex")
            return None
        for suffix, expected in (("msg", message), ("sig", signature)):
            twin = self.root / "checkpoints" / f"{number}.{suffix}"
            if twin.is_file() and twin.read_bytes() != expected:
                self.problem(f"checkpoints/{number}.{suffix} is not checkpoint {number} of {PROOF_FILE}")
        if algorithm == HMAC_SHA256:
            return False
        key = self.keys.get(str(key_id))
        if algorithm not in ASYMMETRIC or key is None:
            self.problem(f"checkpoint {number}: signed by key {key_id!r} ({algorithm}), not a trusted key")
            return None
        if not verify_signature(key, str(algorithm), signature, message):
            self.problem(f"checkpoint {number}: bad signature ({algorithm}, key {key_id})")
            return None
        return True

    def _chain(self) -> None:
        numbers = sorted(self.checkpoints)
        for previous, number in itertools.pairwise(numbers):
            if number != previous + 1:
                self.problem(f"checkpoints {previous + 1}..{number - 1} are missing from {PROOF_FILE}")
            elif self.checkpoints[number].get("prev_checkpoint_signature") != self.checkpoints[previous].get(
                "signature"
            ):
                self.problem(f"checkpoint {number} does not chain to checkpoint {previous}")
        if (
            numbers
            and numbers[0] == 1
            and self.checkpoints[1].get("prev_checkpoint_signature") != GENESIS_HASH
        ):
            self.problem("checkpoint 1 does not start the checkpoint chain")

    def checkpoint_chain(self, proof: Mapping[str, Any]) -> None:
        """Signatures (trusted keys only), the chain between them, the .msg/.sig twins."""
        for checkpoint in proof.get("checkpoints") or []:
            number = checkpoint.get("checkpoint_seq") if isinstance(checkpoint, dict) else None
            if not isinstance(number, int) or number in self.checkpoints:
                self.problem(f"{PROOF_FILE}: a checkpoint without a number, or a number twice")
                continue
            self.checkpoints[number] = checkpoint
        trusted = {number: self._signature(number, cp) for number, cp in sorted(self.checkpoints.items())}
        self._chain()
        vouched = False
        for number in sorted(self.checkpoints, reverse=True):  # a trusted one pins those it chains back to
            vouched = vouched or bool(trusted[number])
            if trusted[number] is False and not vouched:
                self.report.warnings.append(
                    f"checkpoint {number}: legacy HMAC signature no later checkpoint of the pack vouches for"
                )

    # --- the period and its segments ----------------------------------------------------------

    def boundary(self, period: Mapping[str, Any], first: int, last: int, before: Any) -> None:
        """Nothing of the period before the first segment, nothing after the last."""
        if before is None:
            if first != 1:
                self.problem(f"boundary: first checkpoint {first} but no checkpoint before it in the pack")
        elif before != first - 1 or before not in self.checkpoints:
            self.problem(f"boundary: checkpoint {first - 1} (before the period) is missing")
        elif str(self.checkpoints[before]["at"]) >= str(period["start"]):
            at = self.checkpoints[before]["at"]
            self.problem(f"boundary: checkpoint {before} (at {at}) is not before the period's start")
        if last not in self.checkpoints:
            self.problem(f"boundary: last checkpoint {last} is missing")
        elif str(self.checkpoints[last]["at"]) < str(period["end"]):
            self.report.warnings.append(
                f"the period ends at {period['end']} but the newest checkpoint in the pack ({last}) is at "
                f"{self.checkpoints[last]['at']}: records between the two cannot be shown complete"
            )

    def _bounds(self, number: int, low: int, high: int, pairs: list[tuple[int, str]]) -> str:
        checkpoint = self.checkpoints[number]
        previous = self.checkpoints.get(number - 1)
        expected_low = int(previous["last_seq"]) + 1 if previous else (1 if number == 1 else None)
        if high != checkpoint["last_seq"] or (expected_low is not None and low != expected_low):
            self.problem(f"segment of checkpoint {number}: seq {low}..{high} are not the segment it sealed")
        where = f"segment of checkpoint {number} (seq {low}..{high})"
        seqs = [seq for seq, _ in pairs]
        if any(not low <= seq <= high for seq in seqs) or seqs != sorted(set(seqs)):
            self.problem(f"{where}: its record list is out of order or outside the segment")
        return where

    def _commitment(
        self, number: int, where: str, raw: Any, pairs: list[tuple[int, str]], tenant: Any
    ) -> None:
        if raw is None:
            if self.since is not None and number < self.since:
                if pairs:
                    self.problem(f"{where}: records listed before the tenant's first commitment")
                return
            if self.since is not None:
                self.problem(
                    f"{where}: the tenant's commitment is missing (every checkpoint from "
                    f"{self.since} carries one): the segment's records of the tenant were dropped"
                )
                return
            self.report.warnings.append(
                f"{where}: no commitment of the tenant: the pack cannot show that it has no records there"
            )
            return
        try:
            commitment = TenantCommitment.from_dict(raw)
            reaches = commitment.root()
        except (KeyError, TypeError, ValueError) as error:
            self.problem(f"{where}: malformed commitment ({error})")
            return
        if commitment.tenant != tenant or commitment.checkpoint_seq != number:
            self.problem(
                f"{where}: the commitment is tenant {commitment.tenant!r}'s "
                f"of checkpoint {commitment.checkpoint_seq}"
            )
        if reaches != self.checkpoints[number].get("tenant_root"):
            self.problem(
                f"{where}: the tenant's commitment does not reach checkpoint {number}'s signed tenant_root"
            )
            return
        if commitment.count != len(pairs) or commitment.digest != tenant_digest(pairs):
            self.problem(
                f"{where}: the record list of {PROOF_FILE} is not the committed one "
                f"(committed {commitment.count} records, listed {len(pairs)}): records missing or foreign"
            )
        for seq, value in pairs:
            self.committed[seq] = (value, number)

    def segment(self, segment: Any, tenant: Any) -> int | None:
        try:
            number = int(segment["checkpoint_seq"])
            low, high = int(segment["first_seq"]), int(segment["last_seq"])
            pairs = [(int(seq), str(value)) for seq, value in segment["records"]]
        except (KeyError, TypeError, ValueError):
            self.problem(f"{PROOF_FILE}: a malformed segment")
            return None
        if number not in self.checkpoints:
            self.problem(f"segment of checkpoint {number}: the checkpoint is not in the pack")
            return number
        where = self._bounds(number, low, high, pairs)
        if self.checkpoints[number].get("tenant_root") is None:
            self.report.warnings.append(
                f"{where}: sealed before per-tenant commitments: completeness cannot be proven there "
                f"(its {len(pairs)} records of the tenant are checked for integrity only)"
            )
            self.listed.update((seq, (value, number)) for seq, value in pairs)
            return number
        self._commitment(number, where, segment.get("commitment"), pairs, tenant)
        return number

    def segments(self, segments: list[Any], tenant: Any, first: int, last: int) -> None:
        since_values = {
            s["commitment"].get("since")
            for s in segments
            if isinstance(s, dict) and isinstance(s.get("commitment"), dict)
        }
        if len(since_values) > 1:
            self.problem(
                f"commitments disagree on the tenant's first checkpoint: {sorted(map(str, since_values))}"
            )
        self.since = min((v for v in since_values if isinstance(v, int)), default=None)
        numbers = [self.segment(segment, tenant) for segment in segments]
        if sorted(n for n in numbers if n is not None) != list(range(first, last + 1)) or None in numbers:
            self.problem(f"{PROOF_FILE}: its segments are not those of checkpoints {first}..{last}")

    # --- records ------------------------------------------------------------------------------

    def _record(self, line: int, text: str, record: dict[str, Any], tenant: Any, domain: Any) -> None:
        seq = record["seq"]
        where = f"record seq {seq} ({RECORDS_FILE} line {line})"
        if canonical_json(record) != text:
            self.problem(f"{where}: altered (not the canonical form it was written in)")
        if record_hash(record) != record.get("hash"):
            self.problem(f"{where}: altered (its content does not hash to its hash)")
            return
        if record.get("tenant") != tenant:
            self.problem(f"{where}: foreign record: belongs to tenant {record.get('tenant')!r}")
            return
        if domain is not None and record.get("domain") != domain:
            self.problem(f"{where}: of domain {record.get('domain')!r}, not the pack's {domain!r}")
        entry = self.committed.get(seq) or self.listed.get(seq)
        if entry is None:
            self.problem(f"{where}: foreign record: not in the tenant's commitment")
        elif entry[0] != record["hash"]:
            self.problem(f"{where}: altered (not the record checkpoint {entry[1]} committed for seq {seq})")

    def records(self, tenant: Any, domain: Any, withheld: set[int]) -> None:
        if withheld and domain is None:
            self.problem(f"{PROOF_FILE}: records withheld in a pack that is not per domain")
        found: set[int] = set()
        loaded = _load_records(self.root, self.report)
        self.report.records = len(loaded)
        for line, text, record in loaded:
            seq = record.get("seq")
            if not isinstance(seq, int) or isinstance(seq, bool):
                self.problem(f"{RECORDS_FILE} line {line}: no seq (altered)")
            elif seq in found:
                self.problem(f"record seq {seq} ({RECORDS_FILE} line {line}): appears twice")
            elif seq in withheld:
                self.problem(f"record seq {seq} ({RECORDS_FILE} line {line}): listed as withheld and present")
            else:
                found.add(seq)
                self._record(line, text, record, tenant, domain)
        for seq, (_, number) in sorted({**self.listed, **self.committed}.items()):
            if seq not in found and seq not in withheld:
                self.problem(
                    f"record seq {seq}: missing from {RECORDS_FILE} (committed by checkpoint {number})"
                )
        for seq in sorted(withheld - set(self.committed) - set(self.listed)):
            self.problem(f"record seq {seq}: withheld but not in the tenant's commitment")
        if withheld:
            self.report.notes.append(
                f"{len(withheld)} records of the tenant in other domains are withheld (hash only)"
            )


def _read_proof(root: Path, report: PackReport) -> dict[str, Any] | None:
    try:
        proof = json.loads((root / PROOF_FILE).read_text(encoding="utf-8"))
        if not isinstance(proof, dict) or proof.get("format") != PACK_FORMAT:
            raise ValueError(f"not an evidence pack proof ({PACK_FORMAT})")
        proof["period"], proof["boundary"] = dict(proof["period"]), dict(proof["boundary"])
        proof["first"], proof["last"] = int(proof["boundary"]["first"]), int(proof["boundary"]["last"])
        proof["segments"] = list(proof["segments"])
        proof["withheld"] = {int(seq) for seq in proof.get("withheld") or []}
    except (OSError, ValueError, KeyError, TypeError) as error:
        report.problems.append(f"{PROOF_FILE}: unreadable ({error})")
        return None
    return proof


def verify_pack(
    path: Path | str, public_keys: Iterable[PublicKey] | Mapping[str, PublicKey] | CheckpointKeys
) -> PackReport:
    """Verify the pack at ``path`` with the platform's public keys only (the pack's own ``keys/``
    are not trusted). See the module doc for what is named; never raises for a damaged pack.

    :param public_keys: the checkpoint (and manifest) signing keys, ``{key_id: key}`` or
        :class:`~include.audit.signing.CheckpointKeys`.
    """
    root = Path(path)
    verifier = _PackVerifier(root, _keys(public_keys))
    report = verifier.report
    verifier.manifest()
    proof = _read_proof(root, report)
    if proof is None:
        return report
    tenant, domain = proof.get("tenant"), proof.get("domain")
    report.tenant, report.period, report.segments = tenant, proof["period"], len(proof["segments"])
    verifier.checkpoint_chain(proof)
    verifier.boundary(proof["period"], proof["first"], proof["last"], proof["boundary"].get("before"))
    verifier.segments(proof["segments"], tenant, proof["first"], proof["last"])
    verifier.records(tenant, domain, proof["withheld"])
    return report


def pack_digest(path: Path) -> str:
    """SHA-256 of manifest.json (the one value a ticket or mail needs to pin a pack)."""
    return hashlib.sha256((path / MANIFEST_FILE).read_bytes()).hexdigest()
