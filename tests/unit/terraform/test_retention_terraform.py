"""The buckets' Object Lock settings in terraform/ against the retention policy (retention.yaml).

The audit bucket holds the exported audit segments (every tenant's records in one segment), the
invoice archive and the evidence packs. Its default COMPLIANCE retention must be the audit
retention; invoices and evidence packs set their own, longer, retention per object
(``invoicing.yaml`` archive, :func:`include.policies.retention.retain_until`), which the module's
variable bounds must allow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hcl2

from include.audit.export import DEFAULT_RETENTION_DAYS
from include.policies.retention import KINDS, load_retention

TERRAFORM = Path(__file__).resolve().parents[3] / "terraform"
OPTIONS = hcl2.SerializationOptions(strip_string_quotes=True, explicit_blocks=False, with_comments=False)


def parsed(path: Path) -> dict[str, Any]:
    return hcl2.loads(path.read_text(encoding="utf-8"), serialization_options=OPTIONS)


def audit_bucket_calls() -> list[tuple[Path, dict[str, Any]]]:
    """Every module block in terraform/ that instantiates the audit-bucket module."""
    calls = []
    for path in sorted(TERRAFORM.rglob("*.tf")):
        for block in parsed(path).get("module", []):
            for _, body in block.items():
                if str(body.get("source", "")).rstrip("/").endswith("modules/audit-bucket"):
                    calls.append((path, body))
    return calls


def test_every_audit_bucket_keeps_the_audit_retention() -> None:
    audit = load_retention().longest("audit")
    calls = audit_bucket_calls()
    assert calls, "no audit-bucket module call found under terraform/"
    for path, body in calls:
        assert int(body["retention_days"]) == audit.days, (
            f"{path}: retention_days != retention.yaml audit {audit.text}"
        )
    assert audit.days <= DEFAULT_RETENTION_DAYS


def test_the_module_allows_every_retention_of_the_policy() -> None:
    [variables] = [parsed(TERRAFORM / "modules/audit-bucket/variables.tf")]
    [retention] = [v["retention_days"] for v in variables["variable"] if "retention_days" in v]
    condition = retention["validation"][0]["condition"]
    assert "var.retention_days <= 36500" in condition
    policy = load_retention()
    longest = max(policy.longest(kind).days for kind in KINDS)
    assert longest <= 36500
