"""Tenants (``tenants.yaml``), their AWS accounts and where their credentials live in the secrets backend."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Any

from include.policies.loader import PolicyError, load_yaml

TENANTS_FILE = Path(__file__).resolve().parent / "tenants.yaml"
NAMESPACE = "orchestrator"

_ACCOUNT_ID = re.compile(r"^[0-9]{12}$")


@cache
def _document() -> dict[str, Any]:
    return load_yaml(TENANTS_FILE.read_text(encoding="utf-8"))


@cache
def tenant_ids() -> list[str]:
    """The customer tenants (what customer workflows offer and invoicing bills)."""
    return sorted(_document()["tenants"])


@cache
def internal_tenant_ids() -> list[str]:
    """The company's own accounts, run like tenants but never a customer (e.g. ``secops``)."""
    return sorted(_document().get("internal") or {})


def all_tenant_ids() -> list[str]:
    """Customers and internal accounts: every account that holds capability roles."""
    return sorted({*tenant_ids(), *internal_tenant_ids()})


STAFF_TENANT = "secops"  # the internal account of the staff identities (HR workflows)


def secret_name(tenant: str, domain: str, name: str = "service-check") -> str:
    """Secrets Manager name of a tenant's per-domain credential: ``orchestrator/<tenant>/<domain>/<name>``."""
    return f"{NAMESPACE}/{tenant}/{domain}/{name}"


def _account_id(value: Any, key_path: str) -> str:
    # A string only: an unquoted YAML number loses leading zeros (or turns octal) silently.
    if not isinstance(value, str) or not _ACCOUNT_ID.match(value):
        raise PolicyError(f"{TENANTS_FILE}: {key_path}: {value!r} is not a quoted 12-digit AWS account id")
    return value


@cache
def tenant_accounts() -> dict[str, str]:
    """Tenant (customer or internal) -> AWS account id, checked: a shared account would void the
    isolation between tenants."""
    accounts: dict[str, str] = {}
    document = _document()
    entries = [("tenants", t, e) for t, e in document["tenants"].items()]
    entries += [("internal", t, e) for t, e in (document.get("internal") or {}).items()]
    for section, tenant, entry in entries:
        if section == "internal" and tenant in document["tenants"]:
            raise PolicyError(f"{TENANTS_FILE}: internal.{tenant}: also declared under tenants")
        account = _account_id((entry or {}).get("aws_account_id"), f"{section}.{tenant}.aws_account_id")
        owner = next((t for t, a in accounts.items() if a == account), None)
        if owner is not None:
            raise PolicyError(
                f"{TENANTS_FILE}: {section}.{tenant}.aws_account_id: {account} is also the account of "
                f"tenant {owner!r}; every tenant needs an AWS account of its own"
            )
        accounts[tenant] = account
    platform = platform_account_id()
    clash = next((t for t, a in accounts.items() if a == platform), None)
    if clash is not None:
        raise PolicyError(
            f"{TENANTS_FILE}: tenants.{clash}.aws_account_id: {platform} is the platform account; "
            "a tenant's account must be separate from the orchestrator's"
        )
    return accounts


def tenant_account_id(tenant: str) -> str:
    """The AWS account holding ``tenant``'s capability roles and secrets."""
    accounts = tenant_accounts()
    try:
        return accounts[tenant]
    except KeyError:
        declared = ", ".join(sorted(accounts))
        raise PolicyError(
            f"unknown tenant {tenant!r}: declared tenants in {TENANTS_FILE} are {declared}"
        ) from None


@cache
def platform_account_id() -> str:
    """The orchestrator's own AWS account: the only principal the capability roles trust."""
    platform = _document().get("platform") or {}
    return _account_id(platform.get("aws_account_id"), "platform.aws_account_id")
