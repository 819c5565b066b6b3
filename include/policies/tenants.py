"""Tenants (``tenants.yaml``), their AWS accounts and where their credentials live in the secrets backend.

Customers (``tenants``) and the company's own accounts run like tenants (``internal``), each with an
AWS account of its own, and the platform's account that the capability roles trust. The file is
validated by ``schema/tenants.schema.json`` plus the rule a schema cannot express: no two tenants,
and no tenant and the platform, share an account (a shared account would void the isolation).

``ORCH_TENANTS_FILE`` (read here only, by :func:`tenants_file`) points the loader at another
tenants file: the tenant-scale benchmark (``bench/scale_tenants.py``) runs the DAGs and the seeding
against hundreds of generated tenants with it. A deployment never sets it; whoever can set a
component's environment can change far more than the tenant list.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from include.policies.loader import POLICY_DIR, PolicyError, PolicyFile

TENANTS_FILE = POLICY_DIR / "tenants.yaml"
TENANTS_FILE_ENV = "ORCH_TENANTS_FILE"
NAMESPACE = "orchestrator"
STAFF_TENANT = "secops"  # the internal account of the staff identities (HR workflows)
SECTIONS = ("tenants", "internal")


TICKETING_SYSTEMS = ("request_tracker", "jira")
"""The ticketing systems a tenant may name (tenants.yaml ``ticketing.system``)."""


@dataclass(frozen=True)
class Ticketing:
    """A tenant's ticketing (tenants.yaml ``ticketing``): ``request_tracker`` (the MSSP's RT only, the
    default) or ``jira`` (the customer's Jira Service Management project, mirrored from RT)."""

    system: str = "request_tracker"
    project: str | None = None
    issue_type: str = "Task"
    resolve_path: tuple[str, ...] = ("Done",)

    @property
    def mirrored(self) -> bool:
        """Whether support and SOC tickets are mirrored to the customer's system."""
        return self.system != "request_tracker"


@dataclass(frozen=True)
class Tenant:
    name: str
    display_name: str
    aws_account_id: str
    internal: bool
    security_contact: str | None = None
    """Who receives the tenant's evidence packs (tenants.yaml ``security_contact``)."""
    entra_tenant_id: str | None = None
    """The customer's Microsoft Entra tenant (tenants.yaml ``entra_tenant_id``)."""
    entra_domains: tuple[str, ...] = ()
    """Its verified Entra domains (tenants.yaml ``entra_domains``)."""
    ticketing: Ticketing = Ticketing()
    """Where its tickets are mirrored (tenants.yaml ``ticketing``); RT only by default."""


@dataclass(frozen=True)
class TenantPolicy:
    source: Path
    platform_account_id: str
    tenants: dict[str, Tenant]  # customers and internal accounts

    @property
    def customers(self) -> list[str]:
        """The customer tenants, sorted."""
        return sorted(name for name, tenant in self.tenants.items() if not tenant.internal)

    @property
    def internal(self) -> list[str]:
        """The internal accounts, sorted."""
        return sorted(name for name, tenant in self.tenants.items() if tenant.internal)

    def tenant(self, name: str) -> Tenant:
        """A declared tenant, customer or internal.

        :param name: the tenant id (``acme``, ``secops``, ...).
        :raises PolicyError: the tenant is not declared, naming every declared one.
        """
        try:
            return self.tenants[name]
        except (KeyError, TypeError):
            declared = ", ".join(sorted(self.tenants))
            raise PolicyError(
                f"unknown tenant {name!r}: declared tenants in {self.source} are {declared}"
            ) from None


def _entries(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (section, name, entry)
        for section in SECTIONS
        for name, entry in (document.get(section) or {}).items()
    ]


def _rules(document: dict[str, Any]) -> list[str]:
    problems = []
    owners: dict[str, str] = {}
    platform = document["platform"]["aws_account_id"]
    for section, name, entry in _entries(document):
        where = f"{section}.{name}"
        if section == "internal" and name in document["tenants"]:
            problems.append(f"{where}: also declared under tenants")
            continue
        account = entry["aws_account_id"]
        if account in owners:
            problems.append(
                f"{where}.aws_account_id: {account} is also the account of tenant {owners[account]!r}; "
                "every tenant needs an AWS account of its own"
            )
        elif account == platform:
            problems.append(
                f"{where}.aws_account_id: {platform} is the platform account; "
                "a tenant's account must be separate from the orchestrator's"
            )
        owners.setdefault(account, name)
        problems.extend(ticketing_problems(where, entry.get("ticketing")))
    return problems


def ticketing_problems(where: str, ticketing: Any) -> list[str]:
    """What is wrong with a tenant's ``ticketing`` entry beyond its schema: an unknown system, a Jira
    tenant without its project, a project on the MSSP's own RT (which has queues, not projects)."""
    if not isinstance(ticketing, dict):
        return []
    system = ticketing.get("system")
    if system not in TICKETING_SYSTEMS:
        return [
            f"{where}.ticketing.system: unknown ticketing system {system!r}; "
            f"use one of {', '.join(TICKETING_SYSTEMS)}"
        ]
    if system == "jira" and not ticketing.get("project"):
        return [
            f"{where}.ticketing.project: missing; a jira tenant names its Jira Service Management project key"
        ]
    if system == "request_tracker" and ({"project", "issue_type", "resolve_path"} & set(ticketing)):
        extra = ", ".join(sorted({"project", "issue_type", "resolve_path"} & set(ticketing)))
        return [
            f"{where}.ticketing: {extra} only apply to system jira (request_tracker is the MSSP's own RT)"
        ]
    return []


def _build(document: dict[str, Any], source: Path) -> TenantPolicy:
    tenants = {
        name: Tenant(
            name,
            entry["display_name"],
            entry["aws_account_id"],
            internal=section == "internal",
            security_contact=entry.get("security_contact"),
            entra_tenant_id=entry.get("entra_tenant_id"),
            entra_domains=tuple(entry.get("entra_domains", ())),
            ticketing=_ticketing(entry.get("ticketing")),
        )
        for section, name, entry in _entries(document)
    }
    return TenantPolicy(source, document["platform"]["aws_account_id"], tenants)


def _ticketing(entry: dict[str, Any] | None) -> Ticketing:
    if not entry:
        return Ticketing()
    return Ticketing(
        system=entry["system"],
        project=entry.get("project"),
        issue_type=entry.get("issue_type", "Task"),
        resolve_path=tuple(entry.get("resolve_path", ("Done",))),
    )


TENANTS = PolicyFile("tenants", "tenant policy", build=_build, rules=_rules)


def load_tenants_file(path: Path) -> TenantPolicy:
    """Load and validate one tenants file.

    :param path: the file to load.
    :raises PolicyError: the file is unreadable or invalid; the message lists every problem.
    """
    return TENANTS.load(path)


def tenants_file() -> Path:
    """``tenants.yaml`` beside this module, or the file ``ORCH_TENANTS_FILE`` names."""
    override = os.environ.get(TENANTS_FILE_ENV, "").strip()
    return Path(override) if override else TENANTS_FILE


@cache
def load_tenants() -> TenantPolicy:
    """The deployed tenants (``tenants.yaml``, or ``ORCH_TENANTS_FILE``), loaded once per process."""
    return TENANTS.load(tenants_file())


@cache
def tenant_ids() -> list[str]:
    """The customer tenants (what customer workflows offer and invoicing bills)."""
    return load_tenants().customers


@cache
def internal_tenant_ids() -> list[str]:
    """The company's own accounts, run like tenants but never a customer (e.g. ``secops``)."""
    return load_tenants().internal


def all_tenant_ids() -> list[str]:
    """Customers and internal accounts: every account that holds capability roles."""
    return sorted({*tenant_ids(), *internal_tenant_ids()})


def secret_name(tenant: str, domain: str, name: str = "service-check") -> str:
    """Secrets Manager name of a tenant's per-domain credential: ``orchestrator/<tenant>/<domain>/<name>``.

    :param tenant: the tenant id.
    :param domain: the domain whose credential it is.
    :param name: the credential's name within the domain.
    """
    return f"{NAMESPACE}/{tenant}/{domain}/{name}"


@cache
def tenant_accounts() -> dict[str, str]:
    """Tenant (customer or internal) -> AWS account id; every account is the tenant's own."""
    return {name: tenant.aws_account_id for name, tenant in load_tenants().tenants.items()}


def tenant_account_id(tenant: str) -> str:
    """The AWS account holding ``tenant``'s capability roles and secrets.

    :param tenant: the tenant id, customer or internal.
    :raises PolicyError: the tenant is not declared, naming every declared one.
    """
    return load_tenants().tenant(tenant).aws_account_id


@cache
def platform_account_id() -> str:
    """The orchestrator's own AWS account: the only principal the capability roles trust."""
    return load_tenants().platform_account_id


def entra_tenant_id(tenant: str) -> str:
    """The Entra tenant id of ``tenant`` (tenants.yaml ``entra_tenant_id``).

    :raises PolicyError: the tenant is not declared, or has no Entra tenant.
    """
    declared = load_tenants().tenant(tenant)
    if not declared.entra_tenant_id:
        raise PolicyError(f"tenant {tenant!r} has no entra_tenant_id in {load_tenants().source}")
    return declared.entra_tenant_id


def tenant_ticketing(tenant: str) -> Ticketing:
    """Where ``tenant``'s tickets are mirrored (tenants.yaml ``ticketing``); RT only by default.

    :raises PolicyError: the tenant is not declared.
    """
    return load_tenants().tenant(tenant).ticketing
