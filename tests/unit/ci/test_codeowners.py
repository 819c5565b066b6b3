""".github/CODEOWNERS: every line names a path that exists, and every sensitive file has its owners.

GitHub applies the last matching line; :func:`owners_of` does the same for the patterns this file
uses (root-anchored folders and files, and the catch-all ``*``), and refuses any other form.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from include.policies.loader import load_domain_policy

ROOT = Path(__file__).resolve().parents[3]
CODEOWNERS = ROOT / ".github" / "CODEOWNERS"
SECURITY = "@mssp/platform-security"
TEAM = re.compile(r"^@mssp/[a-z][a-z0-9-]*$")
# What decides what runs, who may approve it and how a PR is graded.
SENSITIVE = (
    "include/policies",
    "include/auth",
    "include/operators",
    "include/approvals",
    "include/audit",
    "include/cli",
    "include/triage/rules.py",
    "terraform",
    ".github",
    ".ci",
    "Makefile",
    ".pre-commit-config.yaml",
    "requirements.txt",
    "requirements-dev.txt",
    "constraints.txt",
)
IGNORED_PARTS = {"__pycache__", ".terraform"}


def parse(text: str) -> list[tuple[str, list[str]]]:
    """``(pattern, owners)`` per rule line, in file order."""
    rules = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            pattern, *owners = line.split()
            rules.append((pattern, owners))
    return rules


def _matches(pattern: str, path: str) -> bool:
    if pattern == "*":
        return True
    if not pattern.startswith("/") or "*" in pattern:
        raise ValueError(f"pattern {pattern!r}: only /anchored paths and the catch-all * are used here")
    anchored = pattern.lstrip("/")
    return path.startswith(anchored) if anchored.endswith("/") else path == anchored


def owners_of(path: str, rules: list[tuple[str, list[str]]]) -> list[str]:
    """The owners GitHub would request for ``path`` (relative, ``/``-separated): the last match's."""
    owners: list[str] = []
    for pattern, rule_owners in rules:
        if _matches(pattern, path):
            owners = rule_owners
    return owners


def files_under(relative: str) -> list[str]:
    path = ROOT / relative
    if path.is_file():
        return [relative]
    return [
        str(p.relative_to(ROOT))
        for p in sorted(path.rglob("*"))
        if p.is_file() and not IGNORED_PARTS & set(p.parts)
    ]


@pytest.fixture(scope="module")
def rules() -> list[tuple[str, list[str]]]:
    return parse(CODEOWNERS.read_text(encoding="utf-8"))


def test_every_listed_path_exists_and_every_owner_is_a_team(rules: list[tuple[str, list[str]]]) -> None:
    assert len(rules) > 10
    for pattern, owners in rules:
        assert owners, pattern
        assert [o for o in owners if not TEAM.match(o)] == [], pattern
        if pattern != "*":
            assert (ROOT / pattern.strip("/")).exists(), f"CODEOWNERS names {pattern}, which does not exist"
    patterns = [pattern for pattern, _ in rules]
    assert len(patterns) == len(set(patterns))  # a repeated line would silently override the first


def test_every_sensitive_file_needs_platform_security(rules: list[tuple[str, list[str]]]) -> None:
    checked = 0
    unowned = []
    for relative in SENSITIVE:
        for path in files_under(relative):
            checked += 1
            if SECURITY not in owners_of(path, rules):
                unowned.append(path)
    assert unowned == []
    assert checked > 60  # the walk reached the files (policies, operators, modules, workflows)


def test_each_domains_workflows_are_owned_by_the_domain_owner(rules: list[tuple[str, list[str]]]) -> None:
    for name, domain in load_domain_policy().domains.items():
        for path in files_under(f"dags/{name}"):
            assert owners_of(path, rules) == [f"@mssp/{domain.owner}"], path


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        pytest.param("include/policies/checks.py", [SECURITY], id="folder"),
        pytest.param("include/triage/rules.py", [SECURITY], id="single-file"),
        pytest.param("include/triage/tickets.py", ["@mssp/platform"], id="sibling-falls-to-catch-all"),
        pytest.param("terraform/modules/kms/main.tf", [SECURITY, "@mssp/cloud-engineering"], id="two-teams"),
        pytest.param("dags/soc/contain_host.py", ["@mssp/soc"], id="domain"),
        pytest.param("README.md", ["@mssp/platform"], id="catch-all"),
    ],
)
def test_owners_follow_the_last_matching_line(
    path: str, expected: list[str], rules: list[tuple[str, list[str]]]
) -> None:
    assert owners_of(path, rules) == expected


def test_the_matcher_lets_a_later_line_win_and_refuses_unknown_patterns() -> None:
    rules = parse("* @mssp/a\n/x/ @mssp/b  # comment\n/x/y.py @mssp/c\n")
    assert [owners_of(p, rules) for p in ("x/y.py", "x/z.py", "xy.py")] == [
        ["@mssp/c"],
        ["@mssp/b"],
        ["@mssp/a"],
    ]
    with pytest.raises(ValueError, match=r"pattern '\*\.py': only /anchored paths"):
        owners_of("a.py", parse("*.py @mssp/a\n"))


def test_docs_say_branch_protection_must_require_code_owner_review() -> None:
    text = (ROOT / "docs" / "policies.md").read_text(encoding="utf-8")
    assert "## Code owners" in text
    assert "Require review from Code Owners" in text
