"""The bulk update's trigger schema: the form and the REST trigger refuse a field off the allow-list
(a reserved one above all) before a run exists; the operator checks again (tests/unit/operators)."""

from __future__ import annotations

import re

import pytest
from airflow.sdk import Param
from airflow.sdk.definitions.param import ParamValidationError

from include.policies.checks import DEFAULT_DAGS_FOLDER, load_dag_folder

BULK_UPDATE = DEFAULT_DAGS_FOLDER / "support" / "bulk_update.py"


@pytest.fixture(scope="module")
def fields_param() -> Param:
    scan = load_dag_folder(BULK_UPDATE)
    assert not scan.import_errors
    (dag,) = scan.dags
    return dag.params.get_param("fields")


@pytest.mark.parametrize("fields", [{}, {"Severity": "low"}, {"Severity": "low", "Category": "outage"}])
def test_fields_of_the_allow_list_are_accepted(fields_param: Param, fields: dict[str, str]) -> None:
    assert fields_param.resolve(fields) == fields


@pytest.mark.parametrize("field", ["Tenant", "IdempotencyKey", "CorrelationId", "Team"])
def test_a_reserved_or_unlisted_field_is_refused(fields_param: Param, field: str) -> None:
    with pytest.raises(
        ParamValidationError, match=re.escape(f"'{field}' is not one of ['Severity', 'Category']")
    ):
        fields_param.resolve({"Severity": "low", field: "globex"})
