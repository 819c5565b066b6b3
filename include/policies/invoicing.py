"""Load and validate the invoicing policy (``include/policies/invoicing.yaml``).

Which tenant is which customer in the ERP is data reviewed by pull request, not a connection extra
someone edits in a console: a wrong number bills the wrong customer, so the line that sets it must
show up in a diff. The milestone invoice workflow reads it through :func:`load_invoicing`
(customer numbers, the posting tolerance, the archive retention); ``policy-check`` validates it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

from include.policies.loader import POLICY_DIR, PolicyError, PolicyFile
from include.policies.tenants import tenant_ids

INVOICING_FILE = POLICY_DIR / "invoicing.yaml"


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
        """The tenant's ERP customer number.

        :param tenant: the tenant to invoice.
        :raises PolicyError: the tenant cannot be invoiced (no customer number).
        """
        try:
            return self.customers[tenant]
        except (KeyError, TypeError):
            listed = ", ".join(self.tenants)
            raise PolicyError(
                f"tenant {tenant!r} has no ERP customer number in {self.source} (invoiceable tenants: "
                f"{listed}); add it there by pull request"
            ) from None


def _rules(document: dict[str, Any], *, tenants: Iterable[str]) -> list[str]:
    declared = sorted(tenants)
    messages = []
    owners: dict[str, str] = {}
    for tenant, entry in document["customers"].items():
        where = f"customers.{tenant}"
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


def _build(document: dict[str, Any], source: Path, **_: object) -> InvoicingPolicy:
    return InvoicingPolicy(
        source=source,
        customers={t: str(e["erp_customer_number"]) for t, e in sorted(document["customers"].items())},
        totals_tolerance=Decimal(document["posting"]["totals_tolerance"]),
        archive_retention_days=int(document["archive"]["retention_days"]),
    )


INVOICING = PolicyFile("invoicing", "invoicing policy", build=_build, rules=_rules)


def load_invoicing_file(path: Path, *, tenants: Iterable[str] | None = None) -> InvoicingPolicy:
    """Load and validate one invoicing policy file.

    :param path: the file to load.
    :param tenants: the declared tenants a customer must be one of; by default ``tenants.yaml``'s.
    :raises PolicyError: the file is unreadable or invalid; the message lists every problem.
    """
    return INVOICING.load(path, tenants=tenant_ids() if tenants is None else tenants)


@cache
def load_invoicing() -> InvoicingPolicy:
    """The deployed invoicing policy (``invoicing.yaml``), loaded once per process."""
    return load_invoicing_file(INVOICING_FILE)


def invoiceable_tenants() -> list[str]:
    """The tenants with an ERP customer number (the workflow's trigger form offers these)."""
    return load_invoicing().tenants
