"""param-patterns: a DAG param's ``pattern`` compiles and, anchored at the end, refuses a final line break.

Airflow validates params with jsonschema, which uses ``re.search``; Python's ``$`` also matches
before a final line break, so ``^E[0-9]{5}$`` accepts ``"E01234\\n"``: a second idempotency key for
the same alert or employee. :data:`PARAM_PATTERN_END` refuses it, in Python and in the UI's
ECMAScript alike. A pattern that does not compile fails every run that resolves the param.

``policy-check`` (:func:`include.policies.checks.check_param_patterns`, CI) and the cluster policy
(:func:`include.policies.cluster_policy.dag_policy`, every parse in the DAG processor) both call
:func:`param_pattern_problems`, so both say the same thing.

Known limits of this textual rule: a ``$`` inside a group or before an alternation
(``^(a$)``, ``^a$|^b(?!\\n)$``) is not looked at; ``\\Z`` is not required (ECMAScript lacks it).
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any, Final

PARAM_PATTERN_END: Final = "(?!\\n)$"

# Distinct pattern strings seen by one process; the DAG processor parses each file in a forked
# child, so this cache lives for one parse there (and for the whole run of policy-check).
_CACHE_SIZE: Final = 1024


def param_pattern_problems(dag: Any) -> list[tuple[str, str]]:
    """(param, problem) for each string param (or its array items) whose ``pattern`` ends in ``$``
    without refusing a final line break, and each pattern that does not compile."""
    problems: list[tuple[str, str]] = []
    for name, param in dag.params.items():
        schema = getattr(param, "schema", None) or {}
        items = schema.get("items")
        item_pattern = items.get("pattern") if isinstance(items, dict) else None
        for where, pattern in (("", schema.get("pattern")), (" items", item_pattern)):
            if isinstance(pattern, str) and (problem := pattern_problem(pattern)):
                problems.append((f"{name}{where}", problem))
    return problems


@lru_cache(maxsize=_CACHE_SIZE)
def pattern_problem(pattern: str) -> str | None:
    """What is wrong with one pattern, or ``None``; compiled once per distinct string (cached)."""
    try:
        re.compile(pattern)
    except re.error as error:
        return f"pattern {pattern!r} does not compile: {error}"
    if _ends_in_anchor(pattern) and not pattern.endswith(PARAM_PATTERN_END):
        return (
            f"pattern {pattern!r} ends in '$', which also accepts a final line break: "
            f"end it with {PARAM_PATTERN_END}"
        )
    return None


def _ends_in_anchor(pattern: str) -> bool:
    """The final ``$`` is the end anchor, not an escaped literal ``\\$`` (an odd run of backslashes)."""
    if not pattern.endswith("$"):
        return False
    backslashes = len(pattern) - 1 - len(pattern[:-1].rstrip("\\"))
    return backslashes % 2 == 0
