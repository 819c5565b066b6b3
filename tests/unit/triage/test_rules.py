"""Support triage rules: the real rules file classifies as documented; a broken file names each problem."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from include.policies.loader import PolicyError
from include.triage.rules import NO_BULK_FIELDS, BulkUpdateScope, classify, load_rules, load_rules_file


@pytest.mark.parametrize(
    ("subject", "body", "requestor", "expected"),
    [
        ("Site DOWN", "", "a@acme.example", ("outage", "high", 70, "acme", "down")),
        (
            "hi",
            "Possible ransomware!",
            "b@globex.example",
            ("security-incident", "critical", 90, "globex", "ransomware"),
        ),
        ("Downtime report", "", "c@acme.example", ("general", "low", 10, "acme", None)),  # whole words only
        ("can't log in", "", None, ("outage", "high", 70, "unassigned", "can't log in")),
        ("breach and invoice", "", "x@acme.example", ("security-incident", "critical", 90, "acme", "breach")),
    ],
)
def test_real_rules_classify(subject: str, body: str, requestor: str | None, expected: tuple) -> None:
    verdict = classify(subject, body, requestor, load_rules())
    assert (verdict.category, verdict.severity, verdict.priority, verdict.tenant, verdict.matched) == expected
    assert verdict.category in verdict.comment()


def exactly(message: str) -> str:
    return f"^{re.escape(message)}$"


# --- broken files: every problem names file, key path and problem -----------------------------

VALID = """\
version: 1
tenants: {acme.example: acme}
rules:
  - {name: outage, keywords: [down], category: outage, severity: high, priority: 70}
default: {category: general, severity: low, priority: 10}
"""


def _rules_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "support_triage.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_valid_file_builds_the_rules(tmp_path: Path) -> None:
    rules = load_rules_file(_rules_file(tmp_path, VALID), known_tenants=["acme"])

    assert rules.tenants == {"acme.example": "acme"}
    assert [(r.name, r.pattern.pattern, r.category, r.severity, r.priority) for r in rules.rules] == [
        ("outage", r"\b(down)\b", "outage", "high", 70)
    ]
    assert classify("all quiet", "", "x@acme.example", rules).as_dict() == {
        "rule": "default",
        "category": "general",
        "severity": "low",
        "priority": 10,
        "tenant": "acme",
        "matched": None,
    }


@pytest.mark.parametrize(
    ("old", "new", "problem"),
    [
        pytest.param(
            "keywords: [down]",
            "keywords: []",
            "rules.0.keywords: a non-empty list of words or phrases is required",
            id="no-keywords",
        ),
        pytest.param(
            "keywords: [down]",
            "keywords: down",
            "rules.0.keywords: a non-empty list of words or phrases is required",
            id="keywords-not-a-list",
        ),
        pytest.param(
            "keywords: [down]",
            "keywords: [down, '']",
            "rules.0.keywords.1: '' is not a word or phrase",
            id="empty-keyword",
        ),
        pytest.param(
            "category: outage",
            "category: Outage",
            "rules.0.category: 'Outage' is not a lower-case name",
            id="category-not-lower-case",
        ),
        pytest.param(
            "severity: high",
            "severity: urgent",
            "rules.0.severity: 'urgent' is not one of low, medium, high, critical",
            id="unknown-severity",
        ),
        pytest.param(
            "priority: 70",
            "priority: 120",
            "rules.0.priority: 120 is not an integer 0-99",
            id="priority-too-high",
        ),
        pytest.param(
            "priority: 70",
            "priority: 7.5",
            "rules.0.priority: 7.5 is not an integer 0-99",
            id="priority-not-integer",
        ),
        pytest.param(
            "priority: 10}",
            "priority: true}",
            "default.priority: True is not an integer 0-99",
            id="priority-boolean",
        ),
        pytest.param("name: outage, ", "", "rules.0: 'name' is a required property", id="rule-without-name"),
        pytest.param(
            "priority: 70}",
            "priority: 70, owner: soc}",
            "rules.0: Additional properties are not allowed ('owner' was unexpected)",
            id="unknown-rule-key",
        ),
        pytest.param(
            ", priority: 10}", "}", "default: 'priority' is a required property", id="default-incomplete"
        ),
        pytest.param("version: 1", "version: 2", "version: 1 was expected", id="unknown-version"),
        pytest.param(
            "acme.example:",
            "ACME.example:",
            "tenants: 'ACME.example' does not match "
            r"'^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)+$'",
            id="domain-not-lower-case",
        ),
        pytest.param(
            "tenants: {acme.example: acme}",
            "tenants: {acme.example: initech}",
            "tenants.acme.example: unknown tenant 'initech' (known: acme)",
            id="unknown-tenant",
        ),
    ],
)
def test_invalid_rules_name_file_key_and_problem(tmp_path: Path, old: str, new: str, problem: str) -> None:
    assert old in VALID
    path = _rules_file(tmp_path, VALID.replace(old, new, 1))

    with pytest.raises(PolicyError, match=exactly(f"invalid triage rules:\n  {path}: {problem}")):
        load_rules_file(path, known_tenants=["acme"])


def test_every_problem_is_named(tmp_path: Path) -> None:
    path = _rules_file(
        tmp_path,
        "version: 1\n"
        "tenants: {initech.example: initech}\n"
        "rules:\n"
        "  - {name: a, keywords: [], category: Outage, severity: urgent, priority: 120}\n"
        "default: {category: general, severity: low, priority: 10}\n",
    )
    with pytest.raises(PolicyError) as error:
        load_rules_file(path, known_tenants=["acme", "globex"])

    assert str(error.value).splitlines() == [
        "invalid triage rules:",
        f"  {path}: rules.0.category: 'Outage' is not a lower-case name",
        f"  {path}: rules.0.keywords: a non-empty list of words or phrases is required",
        f"  {path}: rules.0.priority: 120 is not an integer 0-99",
        f"  {path}: rules.0.severity: 'urgent' is not one of low, medium, high, critical",
    ]


def test_the_tenants_default_to_the_customers_of_tenants_yaml(tmp_path: Path) -> None:
    path = _rules_file(tmp_path, VALID.replace("acme.example: acme", "secops.example: secops"))

    with pytest.raises(
        PolicyError,
        match=exactly(
            f"invalid triage rules:\n  {path}: "
            "tenants.secops.example: unknown tenant 'secops' (known: acme, globex)"
        ),
    ):
        load_rules_file(path)


# --- bulk_update: what support_bulk_update may change -----------------------------------------


def test_the_real_rules_allow_bulk_updates_of_support_tickets_severity_and_category() -> None:
    assert load_rules().bulk_update == BulkUpdateScope(queue="support", fields=("Severity", "Category"))


def test_without_a_bulk_update_section_no_field_may_be_bulk_set(tmp_path: Path) -> None:
    rules = load_rules_file(_rules_file(tmp_path, VALID), known_tenants=["acme"])
    assert rules.bulk_update == NO_BULK_FIELDS == BulkUpdateScope(queue="support", fields=())


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        pytest.param(
            "[Severity, Tenant]",
            "bulk_update.fields.1: 'Tenant' is reserved for the orchestrator "
            "(Tenant, IdempotencyKey, CorrelationId are never bulk-updated)",
            id="tenant",
        ),
        pytest.param(
            "[IdempotencyKey]",
            "bulk_update.fields.0: 'IdempotencyKey' is reserved for the orchestrator "
            "(Tenant, IdempotencyKey, CorrelationId are never bulk-updated)",
            id="idempotency-key",
        ),
        pytest.param(
            "[CorrelationId]",
            "bulk_update.fields.0: 'CorrelationId' is reserved for the orchestrator "
            "(Tenant, IdempotencyKey, CorrelationId are never bulk-updated)",
            id="correlation-id",
        ),
        pytest.param(
            "['Sev erity']", "bulk_update.fields.0: 'Sev erity' is not a custom field name", id="name"
        ),
    ],
)
def test_a_reserved_or_malformed_bulk_field_is_refused(tmp_path: Path, fields: str, problem: str) -> None:
    path = _rules_file(tmp_path, VALID + f"bulk_update: {{queue: support, fields: {fields}}}\n")

    with pytest.raises(PolicyError, match=exactly(f"invalid triage rules:\n  {path}: {problem}")):
        load_rules_file(path, known_tenants=["acme"])
