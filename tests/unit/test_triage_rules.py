"""Support triage rules: the real rules file classifies as documented; a broken file names each problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from include.policies.loader import PolicyError
from include.triage.rules import classify, load_rules, load_rules_file


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


def test_every_problem_is_named(tmp_path: Path) -> None:
    path = tmp_path / "support_triage.yaml"
    path.write_text(
        "tenants: {initech.example: initech}\n"
        "rules:\n"
        "  - {name: a, keywords: [], category: Outage, severity: urgent, priority: 120}\n"
        "default: {category: general, severity: low, priority: 10}\n"
    )
    with pytest.raises(PolicyError) as error:
        load_rules_file(path, known_tenants=["acme", "globex"])
    lines = str(error.value).splitlines()[1:]
    assert lines == [
        f"  {path}: tenants.initech.example: unknown tenant 'initech' (known: acme, globex)",
        f"  {path}: rules.0.keywords: a non-empty list of words or phrases is required",
        f"  {path}: rules.0.category: 'Outage' is not a lower-case name",
        f"  {path}: rules.0.severity: 'urgent' is not one of low, medium, high, critical",
        f"  {path}: rules.0.priority: 120 is not an integer 0-99",
    ]
