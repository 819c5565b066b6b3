"""The employee record suite (great_expectations 1.x, ephemeral context): every rule, named with the value."""

from __future__ import annotations

import re
import time
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from include.policies.hr_roles import known_roles
from include.validation.employee import (
    FIELDS,
    EmployeeRecordError,
    EmployeeRecordInvalid,
    validate_employee_record,
    validate_employee_records,
)

TODAY = date(2026, 3, 2)
ROLES = ", ".join(known_roles())
VALID: dict[str, Any] = {
    "employee_id": "E01234",
    "given_name": "Ada",
    "surname": "Lovelace",
    "email": "ada.lovelace@secops.example",
    "uid": "alovelace",
    "role": "soc-analyst",
    "manager_email": "grace.hopper@secops.example",
    "start_date": "2026-03-16",
    "tenant": "acme",
}


def exactly(message: str) -> str:
    return f"^{re.escape(message)}$"


def markdown_escaped(text: str) -> str:
    """Markdown's special characters in values are backslash-escaped in the ticket comment."""
    return re.sub(r"([\\`*\[\]|<>])", r"\\\1", text)


def record(**changes: Any) -> dict[str, Any]:
    changed = {**VALID, **changes}
    return {k: v for k, v in changed.items() if v is not DROP}


DROP = object()


@pytest.fixture(scope="module", autouse=True)
def _warm_up(request: pytest.FixtureRequest) -> None:
    """The first validation imports great_expectations and pandas: time it once, apart from the rest."""
    started = time.perf_counter()
    validate_employee_record(VALID, today=TODAY)
    cold = time.perf_counter() - started
    capmanager = request.config.pluginmanager.getplugin("capturemanager")
    with capmanager.global_and_fixture_disabled():
        print(f"\n[timing] first employee validation (imports great_expectations): {cold:.2f} s")


def test_valid_record_passes_every_check():
    result = validate_employee_record(VALID, today=TODAY)

    assert result.success
    assert result.problems == ()
    assert all(o.success for o in result.outcomes)
    assert len(result.outcomes) == 31
    assert result.summary() == "Employee record E01234 passed all 31 checks."
    assert result.as_xcom() == {
        "success": True,
        "records": 1,
        "employee_ids": ["E01234"],
        "checked_on": "2026-03-02",
        "failed_rules": [],
        "problem_count": 0,
    }
    result.raise_for_failure()  # no-op


def test_one_validation_is_fast_once_imported(request: pytest.FixtureRequest):
    started = time.perf_counter()
    result = validate_employee_record(VALID, today=TODAY)
    elapsed = time.perf_counter() - started
    capmanager = request.config.pluginmanager.getplugin("capturemanager")
    with capmanager.global_and_fixture_disabled():
        print(f"\n[timing] one employee validation (warm): {elapsed:.3f} s (reported {result.seconds:.3f} s)")

    assert result.success
    assert elapsed < 5


def test_optional_tenant_and_date_object_are_accepted():
    assert validate_employee_record(record(tenant=DROP), today=TODAY).success
    assert validate_employee_record(record(tenant=None), today=TODAY).success
    assert validate_employee_record(record(tenant=""), today=TODAY).success
    assert validate_employee_record(record(start_date=date(2026, 3, 2)), today=TODAY).success


# One broken rule per case; all cases are validated together as one batch (one suite run).
BROKEN = [
    pytest.param(
        {"employee_id": "12345"},
        "employee_id_format",
        "employee_id '12345' is not an employee number like E01234",
        id="employee-id-pattern",
    ),
    pytest.param(
        {"employee_id": "E1234"},
        "employee_id_format",
        "employee_id 'E1234' is not an employee number like E01234",
        id="employee-id-short",
    ),
    pytest.param(
        {"employee_id": 12345},
        "employee_id_text",
        "employee_id must be text, got a number (12345)",
        id="employee-id-number",
    ),
    pytest.param(
        {"given_name": DROP}, "given_name_required", "given_name is missing", id="given-name-absent"
    ),
    pytest.param({"given_name": "  "}, "given_name_required", "given_name is missing", id="given-name-blank"),
    pytest.param(
        {"given_name": True},
        "given_name_text",
        "given_name must be text, got true/false (True)",
        id="given-name-bool",
    ),
    pytest.param(
        {"surname": " Lovelace"},
        "surname_format",
        "surname ' Lovelace' must have 1 to 64 characters and no leading or trailing spaces",
        id="surname-leading-space",
    ),
    pytest.param(
        {"surname": "x" * 65},
        "surname_format",
        f"surname {'x' * 65!r} must have 1 to 64 characters and no leading or trailing spaces",
        id="surname-too-long",
    ),
    pytest.param(
        {"email": "x@gmail.com"},
        "email_company_domain",
        "email 'x@gmail.com' is not a secops.example address",
        id="email-foreign-domain",
    ),
    pytest.param(
        {"email": "ada@secops.example.evil.com"},
        "email_company_domain",
        "email 'ada@secops.example.evil.com' is not a secops.example address",
        id="email-lookalike-domain",
    ),
    pytest.param({"email": None}, "email_required", "email is missing", id="email-null"),
    pytest.param(
        {"manager_email": "boss@example.com"},
        "manager_email_company_domain",
        "manager_email 'boss@example.com' is not a secops.example address",
        id="manager-email-domain",
    ),
    pytest.param(
        {"uid": "Ada.Lovelace"},
        "uid_format",
        "uid 'Ada.Lovelace' is not a valid login name (a lower-case letter, then 1 to 31 lower-case "
        "letters, digits, '.', '_' or '-')",
        id="uid-upper-case",
    ),
    pytest.param(
        {"uid": "a"},
        "uid_format",
        "uid 'a' is not a valid login name (a lower-case letter, then 1 to 31 lower-case "
        "letters, digits, '.', '_' or '-')",
        id="uid-too-short",
    ),
    pytest.param(
        {"uid": ["alovelace"]},
        "uid_text",
        "uid must be text, got a list (['alovelace'])",
        id="uid-list",
    ),
    pytest.param(
        {"role": "ceo"},
        "role_known",
        f"role 'ceo' is not a known job role (known: {ROLES})",
        id="role-unknown",
    ),
    pytest.param({"role": DROP}, "role_required", "role is missing", id="role-absent"),
    pytest.param(
        {"start_date": "2020-01-01"},
        "start_date_not_past",
        "start_date '2020-01-01' is in the past (today is 2026-03-02)",
        id="start-date-past",
    ),
    pytest.param(
        {"start_date": "16/03/2026"},
        "start_date_iso",
        "start_date '16/03/2026' is not a date written YYYY-MM-DD",
        id="start-date-not-iso",
    ),
    pytest.param(
        {"start_date": "2026-02-30"},
        "start_date_iso",
        "start_date '2026-02-30' is not a date written YYYY-MM-DD",
        id="start-date-no-such-day",
    ),
    pytest.param(
        {"start_date": 20260316},
        "start_date_text",
        "start_date must be text, got a number (20260316)",
        id="start-date-number",
    ),
    pytest.param(
        {"tenant": "initech"},
        "tenant_known",
        "tenant 'initech' is not a known tenant (known: acme, globex)",
        id="tenant-unknown",
    ),
    pytest.param(
        {"surename": "Lovelace"},
        "known_fields",
        "unexpected field(s) 'surename' (the fields are " + ", ".join(FIELDS) + ")",
        id="unknown-field",
    ),
]


@pytest.fixture(scope="module")
def broken_batch() -> Any:
    """Every BROKEN case as one record of a batch, each with its own id, uid and email."""
    records = [
        {
            **record(employee_id=f"E1{index:04d}", uid=f"user{index}", email=f"user{index}@secops.example"),
            **case.values[0],
        }
        for index, case in enumerate(BROKEN)
    ]
    return validate_employee_records(
        [{k: v for k, v in r.items() if v is not DROP} for r in records], today=TODAY
    )


@pytest.mark.parametrize(
    ("index", "changes", "rule", "problem"),
    [pytest.param(index, *case.values, id=case.id) for index, case in enumerate(BROKEN)],
)
def test_each_broken_rule_is_named_with_the_value(
    broken_batch: Any, index: int, changes: dict[str, Any], rule: str, problem: str
):
    table_level = rule == "known_fields"
    mine = [p for p in broken_batch.problems if p.record == (None if table_level else index + 1)]

    assert [p.message for p in mine] == [problem]
    assert [p.rule for p in mine] == [rule]
    assert rule in {o.rule for o in broken_batch.failed}


def test_a_single_broken_record_fails_with_summary_markdown_and_exception():
    problem = "email 'x@gmail.com' is not a secops.example address"
    result = validate_employee_record(record(email="x@gmail.com"), today=TODAY)

    assert not result.success
    assert result.problem_lines() == [problem]
    assert result.summary() == f"Employee record E01234 failed 1 of 31 checks (1 problem):\n- {problem}"
    assert f"- {markdown_escaped(problem)}\n" in result.markdown()
    with pytest.raises(EmployeeRecordInvalid, match=exactly(result.summary())) as raised:
        result.raise_for_failure()
    assert raised.value.validation is result


def test_a_value_of_the_wrong_type_is_reported_once():
    result = validate_employee_record(record(employee_id=12345), today=TODAY)

    assert {o.rule for o in result.failed} == {"employee_id_text", "employee_id_format"}
    assert result.problem_lines() == ["employee_id must be text, got a number (12345)"]


def test_several_problems_in_field_order_with_a_summary():
    result = validate_employee_record(
        record(email="x@gmail.com", role="ceo", start_date="2020-01-01", tenant=DROP), today=TODAY
    )

    assert result.summary() == (
        "Employee record E01234 failed 3 of 31 checks (3 problems):\n"
        "- email 'x@gmail.com' is not a secops.example address\n"
        f"- role 'ceo' is not a known job role (known: {ROLES})\n"
        "- start_date '2020-01-01' is in the past (today is 2026-03-02)"
    )
    assert result.as_xcom() == {
        "success": False,
        "records": 1,
        "employee_ids": ["E01234"],
        "checked_on": "2026-03-02",
        "failed_rules": ["email_company_domain", "role_known", "start_date_not_past"],
        "problem_count": 3,
    }


def test_markdown_for_the_ticket():
    markdown = validate_employee_record(record(email="a|b@gmail.com"), today=TODAY).markdown()

    assert markdown.startswith(
        "### Employee record validation\n\nEmployee record E01234 **failed** (30 of 31 checks passed, "
        "checked on 2026-03-02).\n\n"
        "Please correct the record and submit it again; no account has been created.\n"
    )
    assert "- email 'a\\|b@gmail.com' is not a secops.example address\n" in markdown
    assert "| email is a secops.example address | email | failed (1) |\n" in markdown
    assert "| employee_id is given | employee_id | passed |\n" in markdown
    assert markdown.count("\n| ") == 32  # header + one row per check


def test_past_start_date_is_fine_outside_onboarding():
    result = validate_employee_record(record(start_date="2020-01-01"), onboarding=False, today=TODAY)

    assert result.success
    assert "start_date_not_past" not in {o.rule for o in result.outcomes}


def test_a_batch_names_the_record_and_finds_duplicates():
    second = record(employee_id="E01235", uid="alovelace", email="ada2@secops.example")
    third = record(employee_id="E01236", uid="ghopper", email="grace@secops.example", start_date="2026-02-30")

    result = validate_employee_records([VALID, second, third], today=TODAY)

    assert result.records == 3
    assert result.employee_ids == ("E01234", "E01235", "E01236")
    assert result.problem_lines() == [
        "record 1 (E01234): uid 'alovelace' appears in more than one record",
        "record 2 (E01235): uid 'alovelace' appears in more than one record",
        "record 3 (E01236): start_date '2026-02-30' is not a date written YYYY-MM-DD",
    ]
    assert validate_employee_records(
        [VALID, record(employee_id="E01235", uid="b.c", email="b@secops.example")], today=TODAY
    ).success


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        pytest.param(
            "E01234",
            "an employee record must be a mapping of field names to values, got str 'E01234'",
            id="string",
        ),
        pytest.param(
            42, "an employee record must be a mapping of field names to values, got int '42'", id="number"
        ),
        pytest.param(
            None,
            "an employee record must be a mapping of field names to values, got NoneType 'None'",
            id="none",
        ),
        pytest.param([], "no employee record given: the list is empty", id="empty-list"),
        pytest.param(
            [VALID, "x"],
            "record 2 must be a mapping of field names to values, got str",
            id="list-with-a-string",
        ),
        pytest.param(
            {},
            "the employee record has none of the employee record fields (" + ", ".join(FIELDS) + "); "
            "found no fields at all",
            id="empty-mapping",
        ),
        pytest.param(
            {"name": "Ada", "mail": "ada@secops.example"},
            "the employee record has none of the employee record fields (" + ", ".join(FIELDS) + "); "
            "found mail, name",
            id="nothing-known",
        ),
        pytest.param(
            {1: "E01234"}, "the employee record: field names must be text, got 1", id="non-text-key"
        ),
        pytest.param(
            {**VALID, "start_date_ordinal": 1.0},
            "the employee record: field name 'start_date_ordinal' is reserved for the validation",
            id="reserved-name",
        ),
    ],
)
def test_bad_input_shape_is_a_clear_error(source: Any, problem: str):
    with pytest.raises(EmployeeRecordError, match=exactly(problem)):
        validate_employee_records(source, today=TODAY)


def test_single_record_api_refuses_a_list():
    with pytest.raises(
        EmployeeRecordError,
        match=r"^an employee record must be a mapping of field names to values, got list ",
    ):
        validate_employee_record([VALID], today=TODAY)


def test_no_great_expectations_project_is_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)

    validate_employee_record(VALID, today=TODAY)

    assert list(tmp_path.iterdir()) == []
