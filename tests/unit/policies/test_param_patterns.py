"""param-patterns: a DAG param's pattern refuses a value with a final line break ("DEF-1\\n" would
be a second idempotency key for alert DEF-1), and compiles."""

from __future__ import annotations

import pytest
from airflow.sdk import DAG, Param
from airflow.sdk.exceptions import ParamValidationError

from include.policies.checks import PARAM_PATTERN_END, param_pattern_problems
from include.workflows.soc import ALERT_PATTERN


def _dag(**params: Param) -> DAG:
    return DAG("param_patterns_test", params=params, schedule=None)


def test_a_plain_dollar_accepts_a_final_line_break_and_is_flagged() -> None:
    loose = Param(type="string", pattern="^[A-Z]{3}-[0-9]$")
    assert loose.resolve("DEF-1\n") == "DEF-1\n"  # what the rule is for: Python's $ matches before it
    problems = param_pattern_problems(_dag(alert_id=loose))
    assert [name for name, _ in problems] == ["alert_id"]
    assert PARAM_PATTERN_END in problems[0][1]


def test_the_lookahead_refuses_it_and_keeps_the_value() -> None:
    strict = Param(type="string", pattern="^[A-Z]{3}-[0-9]" + PARAM_PATTERN_END)
    assert strict.resolve("DEF-1") == "DEF-1"
    with pytest.raises(ParamValidationError):
        strict.resolve("DEF-1\n")
    assert param_pattern_problems(_dag(alert_id=strict)) == []


def test_array_items_and_broken_patterns_are_checked_too() -> None:
    problems = param_pattern_problems(
        _dag(
            tickets=Param([], type="array", items={"type": "string", "pattern": "^[0-9]+$"}),
            broken=Param("x", type="string", pattern="^(x$"),
            free=Param("x", type="string"),
        )
    )
    assert sorted(name for name, _ in problems) == ["broken", "tickets items"]
    assert "does not compile" in dict(problems)["broken"]


def test_the_soc_alert_id_refuses_a_final_line_break() -> None:
    param = Param(type="string", pattern=ALERT_PATTERN)
    assert param.resolve("DEF-1001") == "DEF-1001"
    with pytest.raises(ParamValidationError):
        param.resolve("DEF-1001\n")
