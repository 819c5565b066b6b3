"""Deterministic idempotency keys: the same task of the same run asking for the same operation
for the same tenant always gets the same key, so a retried or re-run task finds what it already
created (search-before-create) instead of creating it again.
"""

from __future__ import annotations

import hashlib

from include.connectors.context import RunContext

KEY_PREFIX = "idem-"


def idempotency_key(context: RunContext, operation: str) -> str:
    """``idem-<24 hex>`` from (dag_id, run_id, task_id, operation, tenant)."""
    material = "\x1f".join((context.dag_id, context.run_id, context.task_id, operation, context.tenant))
    return KEY_PREFIX + hashlib.sha256(material.encode()).hexdigest()[:24]
