"""param-patterns: a DAG param's pattern refuses a value with a final line break ("DEF-1\\n" would
be a second idempotency key for alert DEF-1), and compiles; in ``policy-check`` and, with the same
function, in the cluster policy at every parse."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from airflow.sdk import DAG, Param
from airflow.sdk.exceptions import ParamValidationError

from include.policies.checks import DEFAULT_DAGS_FOLDER, load_dag_folder
from include.policies.param_patterns import PARAM_PATTERN_END, param_pattern_problems, pattern_problem
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


@pytest.mark.parametrize(
    ("pattern", "flagged"),
    [
        pytest.param("^[0-9]+\\$", False, id="escaped-dollar-is-a-literal"),
        pytest.param("^[0-9]+\\\\$", True, id="escaped-backslash-then-anchor"),
        pytest.param("^[0-9]+\\\\\\$", False, id="escaped-backslash-then-literal-dollar"),
        pytest.param("^[0-9]+", False, id="not-anchored"),
        pytest.param("^$", True, id="empty-anchored"),
    ],
)
def test_only_a_final_end_anchor_is_flagged(pattern: str, flagged: bool) -> None:
    problem = pattern_problem(pattern)
    assert (problem is not None) is flagged, problem
    if flagged:
        assert "also accepts a final line break" in (problem or "")


def test_tuple_items_are_not_a_crash() -> None:
    """``items`` as a list (tuple validation) has no single pattern: nothing to check, nothing raised."""
    pair = Param(type="array", items=[{"type": "string", "pattern": "^a$"}])
    assert param_pattern_problems(_dag(pair=pair)) == []


def test_each_pattern_string_is_checked_once() -> None:
    """The check runs at every parse: a pattern shared by params (or DAGs) is compiled once."""
    pattern = "^shared-[0-9]{3}" + PARAM_PATTERN_END
    pattern_problem.cache_clear()
    dag = _dag(**{f"p{index}": Param(type="string", pattern=pattern) for index in range(5)})
    for _ in range(3):
        assert param_pattern_problems(dag) == []
    info = pattern_problem.cache_info()
    assert (info.misses, info.hits) == (1, 14)


# --------------------------------------------------------------------------------------------
# The cluster policy: a real DagBag parse with the policy registered as Airflow registers it


@pytest.fixture
def cluster_policy_loaded() -> Iterator[None]:
    """``dag_policy``/``task_policy`` registered with Airflow's policy plugin manager the way
    ``settings.import_local_settings`` registers ``config/airflow_local_settings.py``; removed after.

    Not the local settings module itself: importing it also installs the deadline fix
    (include/workflows/deadline_fix.py) into this test process; its export of the two hooks is
    what tests/e2e/test_cluster_policy.py exercises in the running DAG processor.
    """
    from airflow import policies, settings

    from include.policies import cluster_policy

    manager = settings.get_policy_plugin_manager()
    before = set(manager.get_plugins())
    policies.make_plugin_from_local_settings(manager, cluster_policy, {"dag_policy", "task_policy"})
    added = set(manager.get_plugins()) - before
    assert added, "the cluster policy was not registered"
    try:
        yield
    finally:
        for plugin in added:
            manager.unregister(plugin)


ROGUE = """
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import Param

from include.workflows import domain_workflow


@domain_workflow(domain="support", dag_id="{dag_id}", doc_md="pattern", params={params})
def rogue():
    EmptyOperator(task_id="noop")


rogue()
"""


def _parse(dag_folder: Callable[..., Path], dag_id: str, params: str) -> tuple[set[str], list[str]]:
    folder = dag_folder(**{dag_id: ROGUE.format(dag_id=dag_id, params=params)})
    scan = load_dag_folder(folder)
    return {dag.dag_id for dag in scan.dags}, [
        trace.splitlines()[-1] for trace in scan.import_errors.values()
    ]


@pytest.mark.usefixtures("cluster_policy_loaded")
@pytest.mark.parametrize(
    ("params", "expected"),
    [
        pytest.param(
            """{"alert_id": Param(type="string", pattern="^[A-Z]{3}-[0-9]+$")}""",
            "AirflowClusterPolicyViolation: param-patterns: DAG rogue_pattern param alert_id: pattern "
            "'^[A-Z]{3}-[0-9]+$' ends in '$', which also accepts a final line break: end it with (?!\\n)$",
            id="bare-dollar",
        ),
        pytest.param(
            """{"tickets": Param(type="array", items={"type": "string", "pattern": "^[0-9]+$"})}""",
            "AirflowClusterPolicyViolation: param-patterns: DAG rogue_pattern param tickets items: pattern "
            "'^[0-9]+$' ends in '$', which also accepts a final line break: end it with (?!\\n)$",
            id="array-items",
        ),
        pytest.param(
            """{"code": Param(type="string", pattern="^(E[0-9]+")}""",
            "AirflowClusterPolicyViolation: param-patterns: DAG rogue_pattern param code: pattern "
            "'^(E[0-9]+' does not compile: missing ), unterminated subpattern at position 1",
            id="does-not-compile",
        ),
        pytest.param(
            """{"a": Param(type="string", pattern="^a$"), "b": Param(type="string", pattern="^b$")}""",
            "AirflowClusterPolicyViolation: param-patterns: DAG rogue_pattern param a: pattern '^a$' ends "
            "in '$', which also accepts a final line break: end it with (?!\\n)$; param b: pattern '^b$' "
            "ends in '$', which also accepts a final line break: end it with (?!\\n)$",
            id="every-problem-in-one-error",
        ),
    ],
)
def test_the_cluster_policy_refuses_a_dag_with_a_bad_pattern(
    dag_folder: Callable[..., Path], params: str, expected: str
) -> None:
    dag_ids, errors = _parse(dag_folder, "rogue_pattern", params)
    assert dag_ids == set()
    assert errors == [expected]


@pytest.mark.usefixtures("cluster_policy_loaded")
def test_the_cluster_policy_accepts_strict_patterns(dag_folder: Callable[..., Path]) -> None:
    params = """{
        "alert_id": Param(type="string", pattern="^[A-Z]{3}-[0-9]+(?!\\\\n)$"),
        "tickets": Param(type="array", items={"type": "string", "pattern": "^[0-9]+(?!\\\\n)$"}),
        "price": Param(type="string", pattern="^[0-9]+\\\\$"),
    }"""
    assert _parse(dag_folder, "strict_pattern", params) == ({"strict_pattern"}, [])


def test_without_the_cluster_policy_the_same_dag_is_bagged(dag_folder: Callable[..., Path]) -> None:
    """What the policy adds: Airflow itself bags a DAG whose pattern accepts a final line break."""
    params = """{"alert_id": Param(type="string", pattern="^[A-Z]{3}-[0-9]+$")}"""
    assert _parse(dag_folder, "loose_pattern", params) == ({"loose_pattern"}, [])


@pytest.mark.usefixtures("cluster_policy_loaded")
def test_every_dag_in_the_repository_passes_the_cluster_policy() -> None:
    scan = load_dag_folder(DEFAULT_DAGS_FOLDER)
    assert {str(path): trace.splitlines()[-1] for path, trace in scan.import_errors.items()} == {}
    assert len(scan.dags) >= 16
