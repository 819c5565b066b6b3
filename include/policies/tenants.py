"""Tenants (``tenants.yaml``) and where their credentials live in the secrets backend."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import yaml

TENANTS_FILE = Path(__file__).resolve().parent / "tenants.yaml"
NAMESPACE = "orchestrator"


@cache
def tenant_ids() -> list[str]:
    document = yaml.safe_load(TENANTS_FILE.read_text(encoding="utf-8"))
    return sorted(document["tenants"])


def secret_name(tenant: str, domain: str, name: str = "service-check") -> str:
    """Secrets Manager name of a tenant's per-domain credential: ``orchestrator/<tenant>/<domain>/<name>``."""
    return f"{NAMESPACE}/{tenant}/{domain}/{name}"
