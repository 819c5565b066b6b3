"""Classify a support ticket with the rules of ``include/policies/support_triage.yaml``.

Pure functions, no I/O beyond reading the rules file: the triage task (:mod:`include.triage.tickets`,
run by ``dags/support/triage.py``) reads the ticket, calls :func:`classify`, and writes the result
back. First matching rule wins; keywords match whole words (or phrases) case-insensitively in the
subject and the body. The file's schema: ``include/policies/schema/support_triage.schema.json``.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import Any

from include.connectors.ticketing.interface import RESERVED_FIELDS
from include.policies.loader import POLICY_DIR, PolicyFile
from include.policies.tenants import tenant_ids

RULES_FILE = POLICY_DIR / "support_triage.yaml"
UNASSIGNED = "unassigned"


@dataclass(frozen=True)
class Rule:
    name: str
    pattern: re.Pattern[str]
    category: str
    severity: str
    priority: int


@dataclass(frozen=True)
class Classification:
    rule: str
    category: str
    severity: str
    priority: int
    tenant: str
    matched: str | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def comment(self) -> str:
        why = f'matched "{self.matched}" (rule {self.rule})' if self.matched else "no rule matched (default)"
        return (
            f"Triage: category {self.category}, severity {self.severity}, priority {self.priority}, "
            f"tenant {self.tenant}; {why}. Rules: include/policies/support_triage.yaml."
        )


@dataclass(frozen=True)
class BulkUpdateScope:
    """What ``support_bulk_update`` may change: tickets of ``queue`` (of the run's tenant), and only
    the custom ``fields`` listed; never a reserved field (the file's rules refuse one)."""

    queue: str
    fields: tuple[str, ...]


# Without a ``bulk_update`` section a bulk update may set the status and comment, but no field.
NO_BULK_FIELDS = BulkUpdateScope(queue="support", fields=())


@dataclass(frozen=True)
class TriageRules:
    tenants: dict[str, str]
    rules: tuple[Rule, ...]
    default: Classification
    bulk_update: BulkUpdateScope = NO_BULK_FIELDS


def _rules(document: dict[str, Any], *, known_tenants: list[str]) -> list[str]:
    problems = [
        f"tenants.{domain}: unknown tenant {tenant!r} (known: {', '.join(known_tenants)})"
        for domain, tenant in document["tenants"].items()
        if tenant not in known_tenants
    ]
    for index, name in enumerate((document.get("bulk_update") or {}).get("fields", [])):
        if name in RESERVED_FIELDS:
            problems.append(
                f"bulk_update.fields.{index}: {name!r} is reserved for the orchestrator "
                f"({', '.join(RESERVED_FIELDS)} are never bulk-updated)"
            )
    return problems


def _rule(raw: dict[str, Any]) -> Rule:
    words = "|".join(re.escape(keyword.lower()) for keyword in raw["keywords"])
    return Rule(raw["name"], re.compile(rf"\b({words})\b"), raw["category"], raw["severity"], raw["priority"])


def _build(document: dict[str, Any], source: Path, **_: object) -> TriageRules:
    default = document["default"]
    bulk = document.get("bulk_update")
    return TriageRules(
        tenants=dict(document["tenants"]),
        rules=tuple(_rule(raw) for raw in document["rules"]),
        default=Classification(
            "default", default["category"], default["severity"], default["priority"], UNASSIGNED, None
        ),
        bulk_update=BulkUpdateScope(bulk["queue"], tuple(bulk["fields"])) if bulk else NO_BULK_FIELDS,
    )


TRIAGE_RULES = PolicyFile("support_triage", "triage rules", build=_build, rules=_rules)


def load_rules_file(path: Path, known_tenants: list[str] | None = None) -> TriageRules:
    """Load and validate one triage rules file.

    :param path: the file to load.
    :param known_tenants: the tenants a requestor domain may map to; by default ``tenants.yaml``'s
        customers.
    :raises PolicyError: the file is unreadable or invalid; the message lists every problem, each
        naming the file and the key path.
    """
    return TRIAGE_RULES.load(path, known_tenants=tenant_ids() if known_tenants is None else known_tenants)


@cache
def load_rules() -> TriageRules:
    """The deployed triage rules (``support_triage.yaml``), loaded once per process."""
    return load_rules_file(RULES_FILE)


def tenant_of(requestor: str | None, rules: TriageRules) -> str:
    """The tenant of a requestor's e-mail domain, or ``unassigned``.

    :param requestor: the requestor's e-mail address, if any.
    :param rules: the triage rules mapping domains to tenants.
    """
    domain = (requestor or "").rpartition("@")[2].lower()
    return rules.tenants.get(domain, UNASSIGNED)


def classify(
    subject: str, body: str, requestor: str | None, rules: TriageRules | None = None
) -> Classification:
    """The first rule whose keywords occur in the subject or body; the default otherwise.

    :param subject: the ticket's subject.
    :param body: the ticket's first message.
    :param requestor: the requestor's e-mail address, whose domain names the tenant.
    :param rules: the rules to apply; the deployed ones by default.
    """
    rules = rules or load_rules()
    text = f"{subject}\n{body}".lower()
    tenant = tenant_of(requestor, rules)
    for rule in rules.rules:
        found = rule.pattern.search(text)
        if found:
            return Classification(
                rule.name, rule.category, rule.severity, rule.priority, tenant, found.group(1)
            )
    return Classification(**{**rules.default.as_dict(), "tenant": tenant})
