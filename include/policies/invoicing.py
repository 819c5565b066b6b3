"""Load and validate the invoicing policy (``include/policies/invoicing.yaml``).

Which tenant is which customer in the ERP is data reviewed by pull request, not a connection extra
someone edits in a console: a wrong number bills the wrong customer, so the line that sets it must
show up in a diff. The milestone invoice workflow reads it through :func:`load_invoicing`
(customer numbers, the posting tolerance, the archive retention); ``policy-check`` validates it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

from include.policies.loader import POLICY_DIR, PolicyError, _key_path, _read_yaml

INVOICING_FILE = POLICY_DIR / "invoicing.yaml"
INVOICING_SCHEMA = POLICY_DIR / "schema" / "invoicing.schema.json"


@dataclass(frozen=True)
class InvoicingPolicy:
    source: Path
    customers: dict[str, str]  # tenant -> ERP customer number
    totals_tolerance: Decimal
    archive_retention_days: int

    @property
    def tenants(self) -> list[str]:
        """The tenants that can be invoiced, sorted."""
        return sorted(self.customers)

    def customer_number(self, tenant: str) -> str:
        """The tenant's ERP customer number; :raises PolicyError: the tenant cannot be invoiced."""
        try:
            return self.customers[tenant]
        except (KeyError, TypeError):
            listed = ", ".join(self.tenants)
            raise PolicyError(
                f"tenant {tenant!r} has no ERP customer number in {self.source} (invoiceable tenants: "
                f"{listed}); add it there by pull request"
            ) from None


def validate_invoicing_document(document: Any, source: Path, tenants: Iterable[str]) -> list[str]:
    """Every schema and consistency problem of an invoicing policy document, one message each.

    :param tenants: the declared tenants (``tenants.yaml``).
    """
    schema = json.loads(INVOICING_SCHEMA.read_text(encoding="utf-8"))
    errors = sorted(
        Draft202012Validator(schema).iter_errors(document), key=lambda e: [str(p) for p in e.absolute_path]
    )
    messages = [f"{source}: {_key_path(e.absolute_path)}: {e.message}" for e in errors]
    if messages:
        return messages
    declared = sorted(tenants)
    owners: dict[str, str] = {}
    for tenant, entry in document["customers"].items():
        where = f"{source}: customers.{tenant}"
        if tenant not in declared:
            messages.append(f"{where}: unknown tenant (declared in tenants.yaml: {', '.join(declared)})")
        number = entry["erp_customer_number"]
        if number in owners:
            messages.append(
                f"{where}.erp_customer_number: {number} is also the customer of tenant {owners[number]!r}; "
                "each tenant is billed as its own customer"
            )
        owners.setdefault(number, tenant)
    return messages


def load_invoicing_file(path: Path, *, tenants: Iterable[str] | None = None) -> InvoicingPolicy:
    """Load and validate one invoicing policy file; raise :class:`PolicyError` listing every problem."""
    if tenants is None:
        from include.policies.tenants import tenant_ids

        tenants = tenant_ids()
    document = _read_yaml(path)
    problems = validate_invoicing_document(document, path, tenants)
    if problems:
        raise PolicyError("invalid invoicing policy:\n  " + "\n  ".join(problems))
    return InvoicingPolicy(
        source=path,
        customers={t: str(e["erp_customer_number"]) for t, e in sorted(document["customers"].items())},
        totals_tolerance=Decimal(document["posting"]["totals_tolerance"]),
        archive_retention_days=int(document["archive"]["retention_days"]),
    )


@cache
def load_invoicing() -> InvoicingPolicy:
    """The deployed invoicing policy, loaded once per process."""
    return load_invoicing_file(INVOICING_FILE)


def invoiceable_tenants() -> list[str]:
    """The tenants with an ERP customer number (the workflow's trigger form offers these)."""
    return load_invoicing().tenants
