"""Per-tenant, per-period evidence packs anyone can verify offline (issue 25, docs/evidence.md).

:mod:`include.evidence.proof` (the commitment maths, pure), :mod:`include.evidence.pack` (build),
:mod:`include.evidence.verify` (offline verify), :mod:`include.evidence.cli` (``evidence build|verify``).
Nothing is imported here: :mod:`include.audit.store` imports the maths while sealing.
"""
