"""An audit log held in memory: the chain rules without a database.

It builds records and checkpoints with the same functions as :class:`include.audit.store.AuditStore`
(:func:`~include.audit.records.build_record`, :func:`~include.audit.records.build_checkpoint`), so
tests of the verifier exercise real chains, and a tool can assemble a chain offline (e.g. to check a
verifier written in another language against this one). Not for production writes: nothing here is
durable or shared between processes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from include.audit.records import (
    GENESIS_HASH,
    AuditRecord,
    Checkpoint,
    build_checkpoint,
    build_record,
    utc_now,
)
from include.audit.signing import CheckpointSigner


@dataclass
class MemoryAuditLog:
    """Records and checkpoints in lists, appended in order.

    :ivar records: the chain, ``records[i].seq == i + 1``.
    :ivar checkpoints: the checkpoint chain, ``checkpoints[i].checkpoint_seq == i + 1``.
    """

    records: list[AuditRecord] = field(default_factory=list)
    checkpoints: list[Checkpoint] = field(default_factory=list)

    def append(self, event: Mapping[str, Any], *, at: str | None = None) -> AuditRecord:
        """Append ``event`` (see :class:`~include.audit.records.AuditEvent`) at ``at`` (default: now)."""
        prev_hash = self.records[-1].hash if self.records else GENESIS_HASH
        record = build_record(event, seq=len(self.records) + 1, at=at or utc_now(), prev_hash=prev_hash)
        self.records.append(record)
        return record

    def seal(self, signer: CheckpointSigner, *, at: str | None = None) -> Checkpoint | None:
        """Sign a checkpoint over every record so far; ``None`` when nothing was appended since the last."""
        last = self.checkpoints[-1] if self.checkpoints else None
        if not self.records or (last is not None and last.last_seq == len(self.records)):
            return None
        checkpoint = build_checkpoint(
            checkpoint_seq=len(self.checkpoints) + 1,
            last_seq=self.records[-1].seq,
            last_hash=self.records[-1].hash,
            count=len(self.records),
            at=at or utc_now(),
            prev_checkpoint_signature=last.signature if last else GENESIS_HASH,
            signer=signer,
        )
        self.checkpoints.append(checkpoint)
        return checkpoint

    def record_dicts(self) -> list[dict[str, Any]]:
        """The records as plain mappings (what a store or an export hands to the verifier)."""
        return [record.to_dict() for record in self.records]

    def checkpoint_dicts(self) -> list[dict[str, Any]]:
        """The checkpoints as plain mappings."""
        return [checkpoint.to_dict() for checkpoint in self.checkpoints]
