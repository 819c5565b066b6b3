"""Classify a support ticket with the rules of ``include/policies/support_triage.yaml``.

Pure functions, no I/O beyond reading the rules file: the triage task (``dags/support/triage.py``)
reads the ticket, calls :func:`classify`, and writes the result back. First matching rule wins;
keywords match whole words (or phrases) case-insensitively in the subject and the body.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import Any

from include.policies.loader import PolicyError, load_yaml

RULES_FILE = Path(__file__).resolve().parents[1] / "policies" / "support_triage.yaml"
SEVERITIES = ("low", "medium", "high", "critical")
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
class TriageRules:
    tenants: dict[str, str]
    rules: tuple[Rule, ...]
    default: Classification


def _outcome(where: str, body: Any, problems: list[str]) -> tuple[str, str, int]:
    if not isinstance(body, dict):
        problems.append(f"{where}: must be a mapping")
        return "general", "low", 0
    category, severity, priority = body.get("category"), body.get("severity"), body.get("priority")
    if not isinstance(category, str) or not re.fullmatch(r"[a-z][a-z0-9-]*", category):
        problems.append(f"{where}.category: {category!r} is not a lower-case name")
    if severity not in SEVERITIES:
        problems.append(f"{where}.severity: {severity!r} is not one of {', '.join(SEVERITIES)}")
    if not isinstance(priority, int) or isinstance(priority, bool) or not 0 <= priority <= 99:
        problems.append(f"{where}.priority: {priority!r} is not an integer 0-99")
    return str(category), str(severity), int(priority) if isinstance(priority, int) else 0


def load_rules_file(path: Path, known_tenants: list[str] | None = None) -> TriageRules:
    """:raises PolicyError: every problem, each naming the file and the key path."""
    from include.policies.tenants import tenant_ids

    tenants_known = known_tenants if known_tenants is not None else tenant_ids()
    document = load_yaml(path.read_text(encoding="utf-8")) or {}
    problems: list[str] = []
    tenants = document.get("tenants") or {}
    for domain, tenant in tenants.items():
        if tenant not in tenants_known:
            problems.append(
                f"tenants.{domain}: unknown tenant {tenant!r} (known: {', '.join(tenants_known)})"
            )
    rules: list[Rule] = []
    for index, raw in enumerate(document.get("rules") or []):
        where = f"rules.{index}"
        keywords = raw.get("keywords") if isinstance(raw, dict) else None
        if (
            not isinstance(keywords, list)
            or not keywords
            or not all(isinstance(k, str) and k for k in keywords)
        ):
            problems.append(f"{where}.keywords: a non-empty list of words or phrases is required")
            keywords = ["-"]
        category, severity, priority = _outcome(where, raw, problems)
        words = "|".join(re.escape(k.lower()) for k in keywords)
        rules.append(
            Rule(
                str(raw.get("name", where)) if isinstance(raw, dict) else where,
                re.compile(rf"\b({words})\b"),
                category,
                severity,
                priority,
            )
        )
    category, severity, priority = _outcome("default", document.get("default"), problems)
    if problems:
        raise PolicyError(
            f"invalid triage rules in {path}:\n" + "\n".join(f"  {path}: {p}" for p in problems)
        )
    default = Classification("default", category, severity, priority, UNASSIGNED, None)
    return TriageRules(tenants=dict(tenants), rules=tuple(rules), default=default)


@cache
def load_rules() -> TriageRules:
    return load_rules_file(RULES_FILE)


def tenant_of(requestor: str | None, rules: TriageRules) -> str:
    domain = (requestor or "").rpartition("@")[2].lower()
    return rules.tenants.get(domain, UNASSIGNED)


def classify(
    subject: str, body: str, requestor: str | None, rules: TriageRules | None = None
) -> Classification:
    """The first rule whose keywords occur in the subject or body; the default otherwise."""
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
