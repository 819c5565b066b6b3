"""The one way Great Expectations runs here: a complete suite or none, an ephemeral context, GE's JSON
results, and an expectation GE could not evaluate as an error (not as bad data).

What each suite reports, in words, is tested per input: test_billable_lines.py, test_employee.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from include.validation.expectations import SuiteRunError, build_suite, exception_message, validate_frame

NOT_NULL = {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "id"}, "meta": {"rule": "id"}}
IN_SET = {
    "type": "expect_column_values_to_be_in_set",
    "kwargs": {"column": "kind", "value_set": {"$PARAMETER": "kinds"}},
    "meta": {"rule": "kind"},
}


def _validate(frame: pd.DataFrame, *expectations: dict[str, Any], **kwargs: Any) -> list[dict[str, Any]]:
    suite = build_suite("test", list(expectations))
    return validate_frame(frame, suite, data_source="src", asset="asset", batch="whole", **kwargs)


def test_results_are_ges_json_in_suite_order_with_the_parameters_and_index_columns() -> None:
    frame = pd.DataFrame({"row": [1, 2, 3], "id": ["a", None, "c"], "kind": ["x", "y", "z"]})
    results = _validate(frame, NOT_NULL, IN_SET, parameters={"kinds": ["x", "y"]}, index_columns=("row",))
    assert [(r["expectation_config"]["meta"]["rule"], r["success"]) for r in results] == [
        ("id", False),
        ("kind", False),
    ]
    assert results[0]["expectation_config"]["kwargs"]["batch_id"] == "src-asset"
    assert results[0]["result"]["unexpected_index_list"] == [{"row": 2, "id": None}]
    assert results[1]["result"]["unexpected_index_list"] == [{"row": 3, "kind": "z"}]


def test_without_index_columns_the_frames_index_names_the_rows() -> None:
    frame = pd.DataFrame({"id": ["a", None]})
    assert _validate(frame, NOT_NULL)[0]["result"]["unexpected_index_list"] == [1]


def test_a_suite_missing_an_expectation_is_refused() -> None:
    broken = {"type": "expect_nothing_real", "kwargs": {}, "meta": {"rule": "broken"}}
    with pytest.raises(SuiteRunError, match=r"^suites/x\.json: only 1 of 2 expectations could be built$"):
        build_suite("x", [NOT_NULL, broken], source="suites/x.json")


def test_an_expectation_ge_cannot_evaluate_is_an_error_not_a_finding() -> None:
    frame = pd.DataFrame({"other": [1]})
    with pytest.raises(
        SuiteRunError,
        match=r"^expect_column_values_to_not_be_null \{.*'column': 'id'.*\} could not run: .*id",
    ):
        _validate(frame, NOT_NULL)


@pytest.mark.parametrize(
    ("info", "message"),
    [
        pytest.param(None, None, id="none"),
        pytest.param({"raised_exception": False, "exception_message": None}, None, id="not-raised"),
        pytest.param({"raised_exception": True, "exception_message": "boom"}, "boom", id="one"),
        pytest.param(
            {"m1": {"raised_exception": False}, "m2": {"raised_exception": True, "exception_message": "bad"}},
            "bad",
            id="per-metric",
        ),
    ],
)
def test_exception_message_reads_both_shapes(info: Any, message: str | None) -> None:
    assert exception_message(info) == message


def test_nothing_is_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    _validate(pd.DataFrame({"id": ["a"]}), NOT_NULL)
    assert list(tmp_path.iterdir()) == []
