"""Tamper-evident audit trail: a hash chain of records in PostgreSQL, signed checkpoints, a verifier
that names every damaged record, and export of sealed segments to S3 under Object Lock.

Modules: :mod:`~include.audit.records` (schema, canonical form), :mod:`~include.audit.signing`
(checkpoint signers and public keys), :mod:`~include.audit.store` (PostgreSQL),
:mod:`~include.audit.verify`, :mod:`~include.audit.export`, :mod:`~include.audit.emit` (writes,
MAC-signed spool), :mod:`~include.audit.seal`, :mod:`~include.audit.cli`.
Nothing is imported here: the CLI lists commands without loading psycopg or boto3.
"""
