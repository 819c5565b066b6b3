"""Find credentials written into source files: the ``no-literal-secrets`` rule of policy-check.

Python files are read as syntax trees (string literals assigned to credential-like names, known
token formats in any literal), other text files line by line. Findings carry the line and a masked
description, never the value. A line can opt out with ``# policy: allow-literal <reason>``.
"""

from __future__ import annotations

import ast
import contextlib
import io
import re
import tokenize
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

_SKIPPED_DIRS = {"__pycache__", ".git", ".venv", "node_modules", "tests", "testdata", "test_data"}
_MAX_SCAN_BYTES = 1_000_000
_OPT_OUT = re.compile(r"#\s*policy:\s*allow-literal\s+\S")
# Names whose last word says "credential"; "token_name" or "secret_id" end in another word.
_SUSPICIOUS_NAME = re.compile(
    r"(?:^|_)(?:password|passwd|pwd|secret|token|api_?key|secret_(?:access_)?key|private_key)$"
)
_AWS_SECRET_KEY = re.compile(r"^[A-Za-z0-9/+]{40}$")
_MIN_LITERAL_LENGTH = 8
# (what, pattern, how many leading characters are safe to show)
_VALUE_PATTERNS: tuple[tuple[str, re.Pattern[str], int], ...] = (
    ("AWS access key id", re.compile(r"(?<![A-Z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Z0-9])"), 4),
    ("GitHub token", re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})"), 4),
    ("GitLab token", re.compile(r"\bglpat-[A-Za-z0-9_-]{20,}"), 6),
    ("Slack token", re.compile(r"\bxox[baprs]-[A-Za-z0-9-]{10,}"), 5),
)
_PRIVATE_KEY = re.compile(r"-----BEGIN[A-Z0-9 ]* PRIVATE KEY-----")
_URI_PASSWORD = re.compile(r"\b([a-z][a-z0-9+.-]*://[^\s/:@'\"]+:)([^\s/@'\"]+)@")
# key: value or key = value in YAML, INI, .env, Terraform, shell.
_KEY_VALUE = re.compile(r"""([A-Za-z_][\w.-]*)["']?\s*[:=]\s*["']?([^\s"',#]+)""")


@dataclass(frozen=True)
class SecretFinding:
    line: int
    description: str
    allowed: bool = False


def mask(value: str, keep: int = 0) -> str:
    """``AKIA1234...`` -> ``AKIA****************``: the kind stays recognisable, the secret does not."""
    return value[:keep] + "*" * (len(value) - keep)


def _is_placeholder(value: str) -> bool:
    """Templates, environment references and masks are not literal credentials."""
    return any(marker in value for marker in ("{", "$", "%(", "<")) or set(value) <= set("*x.")


def secrets_in_value(value: str) -> list[str]:
    """Descriptions (masked) of credential patterns inside one string value."""
    found = [
        f"{what} {mask(match.group(0), keep)!r} in a literal"
        for what, pattern, keep in _VALUE_PATTERNS
        for match in pattern.finditer(value)
    ]
    found += [f"private key block {match.group(0)!r} in a literal" for match in _PRIVATE_KEY.finditer(value)]
    for match in _URI_PASSWORD.finditer(value):
        if not _is_placeholder(match.group(2)):
            found.append(f"connection URI with an inline password {match.group(1) + mask(match.group(2))!r}")
    return found


def _assigned_secret(name: str, value: str) -> str | None:
    """Describe ``name = "value"`` if it looks like a credential written into the code."""
    normalised = name.lower().replace("-", "_")
    if not _SUSPICIOUS_NAME.search(normalised):
        return None
    if len(value) < _MIN_LITERAL_LENGTH or any(c.isspace() for c in value) or _is_placeholder(value):
        return None
    if secrets_in_value(value):
        return None  # reported once, under its specific kind (token, key id, URI)
    what = "AWS secret access key" if _AWS_SECRET_KEY.match(value) else "credential"
    return f"literal {what} assigned to {name} ({mask(value)!r})"


def _target_name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
        return str(node.slice.value)
    return None


def _str_value(node: ast.AST | None) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _named_literals(node: ast.AST) -> Iterator[tuple[str | None, ast.expr | None]]:
    """(name, value node) pairs where a value is bound to a name: assignments, keywords, dict items."""
    if isinstance(node, ast.Assign):
        yield from ((_target_name(target), node.value) for target in node.targets)
    elif isinstance(node, ast.AnnAssign):
        yield _target_name(node.target), node.value
    elif isinstance(node, ast.keyword):
        yield node.arg, node.value
    elif isinstance(node, ast.Dict):
        yield from ((_str_value(key), value) for key, value in zip(node.keys, node.values, strict=True))
    elif isinstance(node, ast.arguments):
        positional = [*node.posonlyargs, *node.args]
        yield from (
            (a.arg, d) for a, d in zip(positional[-len(node.defaults) :], node.defaults, strict=False)
        )
        yield from ((a.arg, d) for a, d in zip(node.kwonlyargs, node.kw_defaults, strict=True))


def _python_findings(source: str) -> Iterator[tuple[int, int, str]]:
    """(first line, last line, description) of every literal credential in Python source."""
    for node in ast.walk(ast.parse(source)):
        for name, value_node in _named_literals(node):
            value = _str_value(value_node)
            assigned = _assigned_secret(name, value) if name and value is not None else None
            if assigned and value_node is not None:
                yield value_node.lineno, value_node.end_lineno or value_node.lineno, assigned
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            for description in secrets_in_value(node.value):
                yield node.lineno, node.end_lineno or node.lineno, description


def _python_comments(source: str) -> dict[int, str]:
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    return {tok.start[0]: tok.string for tok in tokens if tok.type == tokenize.COMMENT}


def _text_findings(source: str) -> Iterator[tuple[int, int, str]]:
    """Line-based scan for files that are not Python (YAML, Terraform, .env, SQL, ...)."""
    for number, line in enumerate(source.splitlines(), start=1):
        for description in secrets_in_value(line):
            yield number, number, description
        for match in _KEY_VALUE.finditer(line):
            assigned = _assigned_secret(match.group(1), match.group(2))
            if assigned:
                yield number, number, assigned


def find_literal_secrets(path: Path) -> list[SecretFinding]:
    """Every literal credential in one file, each marked allowed if its lines carry the opt-out."""
    try:
        source = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return []  # binary or unreadable: not source code
    findings, comments = list(_text_findings(source)), dict(enumerate(source.splitlines(), start=1))
    if path.suffix == ".py":
        # A file that does not parse is still scanned, line by line (dag-imports reports the error).
        with contextlib.suppress(SyntaxError, tokenize.TokenError):
            findings, comments = list(_python_findings(source)), _python_comments(source)
    return [
        SecretFinding(first, description, allowed=_opted_out(comments, first, last))
        for first, last, description in dict.fromkeys(findings)
    ]


def _opted_out(comments: dict[int, str], first: int, last: int) -> bool:
    return any(_OPT_OUT.search(comments.get(line, "")) for line in range(first, last + 1))


def files_to_scan(roots: tuple[Path, ...]) -> list[Path]:
    """Regular files under ``roots``, skipping caches, virtualenvs and test data."""
    files: set[Path] = set()
    for root in roots:
        candidates = [root] if root.is_file() else root.rglob("*")
        for path in candidates:
            relative = path.relative_to(root).parts if path != root else ()
            if path.is_file() and not _SKIPPED_DIRS & set(relative[:-1]) and _small(path):
                files.add(path.resolve())
    return sorted(files)


def _small(path: Path) -> bool:
    return path.stat().st_size <= _MAX_SCAN_BYTES and path.suffix not in {".pyc", ".pyo"}
