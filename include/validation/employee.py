"""The employee record of HR onboarding, checked with Great Expectations before any account exists.

The onboarding workflow gets the record from a form or an HR ticket, runs
:func:`validate_employee_records` as its first task, and stops when it fails: the result's
:meth:`EmployeeValidation.markdown` goes to the ticket, nothing is created anywhere. Only a record
that passed reaches the HR lead's approval and the identity steps.

Steps:

1. **Shape** (plain Python): one record (a mapping of field name to value) or a list of them.
   Anything else, an empty list, or a record with none of the employee fields raises
   :class:`EmployeeRecordError`; nothing is validated.
2. **Expectations**: the suite below (kept in code, :func:`build_suite`) runs with
   great_expectations' own API on a pandas DataFrame, one row per record, in an *ephemeral*
   context (in-memory stores: no project folder, no data docs, nothing written). Blank text counts
   as missing; a ``datetime.date`` start date is taken as its ISO text. Every rule is a stock
   expectation; one typed view is added as a column: ``start_date_ordinal`` =
   ``date.toordinal()`` of the start date, ``0`` when a start date is given but is not a real
   calendar day written ``YYYY-MM-DD``, empty when it is missing.
3. **Result**: :class:`EmployeeValidation` with the outcome of every expectation and the problems
   in words an HR person reads (``email 'x@gmail.com' is not a secops.example address``), one per
   record and field (a value of the wrong type is reported as such, not again as a bad format).

Rules: ``employee_id`` like ``E01234``; ``given_name``/``surname`` 1-64 characters without
surrounding spaces; ``email`` and ``manager_email`` in the company domain ``secops.example``;
``uid`` (the login name) ``^[a-z][a-z0-9._-]{1,31}$``; ``role`` one of ``hr_roles.yaml``;
``start_date`` an ISO date, for onboarding not before today (UTC); ``tenant`` optional, one of
``tenants.yaml``; every field text; no unknown fields; within one batch, ``employee_id``, ``uid``
and ``email`` unique.

Great Expectations takes seconds to import, so it (and pandas) are imported on first use only:
importing this module from a DAG file costs nothing at parse time.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any, Final

from include.validation.expectations import SuiteRunError, validate_frame
from include.validation.expectations import build_suite as _build_suite

if TYPE_CHECKING:
    import pandas as pd

COMPANY_DOMAIN: Final = "secops.example"
FIELDS: Final[tuple[str, ...]] = (
    "employee_id",
    "given_name",
    "surname",
    "email",
    "uid",
    "role",
    "manager_email",
    "start_date",
    "tenant",
)
REQUIRED: Final[tuple[str, ...]] = tuple(f for f in FIELDS if f != "tenant")
UNIQUE: Final[tuple[str, ...]] = ("employee_id", "uid", "email")
START_DATE_ORDINAL: Final = "start_date_ordinal"
DERIVED: Final[tuple[str, ...]] = (START_DATE_ORDINAL,)
SUITE_NAME: Final = "employee_record"

EMPLOYEE_ID: Final = r"^E[0-9]{5}$"
NAME: Final = r"^\S(?:.{0,62}\S)?$"
COMPANY_EMAIL: Final = r"^[A-Za-z0-9._%+-]+@" + re.escape(COMPANY_DOMAIN) + "$"
UID: Final = r"^[a-z][a-z0-9._-]{1,31}$"
_ISO_DATE: Final = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
_NOT_A_DATE: Final = 0.0


class EmployeeRecordError(ValueError):
    """The input is not an employee record at all (wrong shape); nothing was validated."""


# --- results ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    record: int | None  # 1-based; None for a problem of the batch as a whole
    field: str | None
    rule: str
    message: str


@dataclass(frozen=True)
class ExpectationOutcome:
    rule: str
    field: str | None
    expectation: str  # great_expectations' expectation type
    description: str  # what the rule checks, in words
    success: bool
    unexpected_count: int


@dataclass(frozen=True)
class EmployeeValidation:
    success: bool
    records: int
    employee_ids: tuple[str | None, ...]
    checked_on: date
    onboarding: bool
    outcomes: tuple[ExpectationOutcome, ...]
    problems: tuple[Problem, ...]
    seconds: float

    @property
    def failed(self) -> tuple[ExpectationOutcome, ...]:
        return tuple(o for o in self.outcomes if not o.success)

    def _who(self, record: int | None) -> str:
        if record is None:
            return ""
        if self.records == 1:
            return ""
        employee_id = self.employee_ids[record - 1]
        return f"record {record} ({employee_id}): " if employee_id else f"record {record}: "

    def problem_lines(self) -> list[str]:
        return [f"{self._who(p.record)}{p.message}" for p in self.problems]

    def _subject(self) -> str:
        if self.records == 1:
            return f"Employee record {self.employee_ids[0] or '(no valid employee_id)'}"
        return f"{self.records} employee records"

    def summary(self) -> str:
        """Plain text for a log line or an email: what is wrong, in words, one line per problem."""
        checks = len(self.outcomes)
        if self.success:
            return f"{self._subject()} passed all {checks} checks."
        head = (
            f"{self._subject()} failed {len(self.failed)} of {checks} checks "
            f"({len(self.problems)} problem{'s' if len(self.problems) != 1 else ''}):"
        )
        return "\n".join([head, *(f"- {line}" for line in self.problem_lines())])

    def markdown(self) -> str:
        """The comment for the HR ticket: verdict, problems, and every check with its outcome."""
        verdict = "passed" if self.success else "**failed**"
        lines = [
            "### Employee record validation",
            "",
            f"{_md(self._subject())} {verdict} "
            f"({len(self.outcomes) - len(self.failed)} of {len(self.outcomes)} checks passed, "
            f"checked on {self.checked_on.isoformat()}).",
        ]
        if not self.success:
            lines += [
                "",
                "Please correct the record and submit it again; no account has been created.",
                "",
                *(f"- {_md(line)}" for line in self.problem_lines()),
            ]
        lines += ["", "| Check | Field | Result |", "|---|---|---|"]
        for outcome in self.outcomes:
            result = "passed" if outcome.success else f"failed ({outcome.unexpected_count})"
            lines.append(f"| {_md(outcome.description)} | {_md(outcome.field or '-')} | {result} |")
        return "\n".join(lines) + "\n"

    def as_xcom(self) -> dict[str, Any]:
        """Ids and outcome only (the problems quote personal data: they go to the ticket, not XCom)."""
        return {
            "success": self.success,
            "records": self.records,
            "employee_ids": list(self.employee_ids),
            "checked_on": self.checked_on.isoformat(),
            "failed_rules": sorted({o.rule for o in self.failed}),
            "problem_count": len(self.problems),
        }

    def raise_for_failure(self) -> None:
        """:raises EmployeeRecordInvalid: the record failed; the message is :meth:`summary`."""
        if not self.success:
            raise EmployeeRecordInvalid(self)


class EmployeeRecordInvalid(ValueError):
    """The record failed validation; ``validation`` holds the full result (post its markdown)."""

    def __init__(self, validation: EmployeeValidation) -> None:
        super().__init__(validation.summary())
        self.validation = validation


def _md(text: str) -> str:
    """Text safe inside Markdown prose and table cells."""
    return re.sub(r"([\\`*\[\]|<>])", r"\\\1", text.replace("\n", " "))


# --- 1. shape -----------------------------------------------------------------------------------


def _kind(value: Any) -> str:
    return type(value).__name__


def _described_kind(value: Any) -> str:
    """What a non-text value is, in words: ``a number``, ``true/false``, ``a list``..."""
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list | tuple | set):
        return "a list"
    return f"a {_kind(value)}"


def _records(source: Any) -> list[Mapping[str, Any]]:
    if isinstance(source, Mapping):
        items: list[Any] = [source]
    elif isinstance(source, Sequence) and not isinstance(source, str | bytes):
        items = list(source)
        if not items:
            raise EmployeeRecordError("no employee record given: the list is empty")
    else:
        raise EmployeeRecordError(
            f"an employee record must be a mapping of field names to values, got {_kind(source)} "
            f"{str(source)[:40]!r}"
        )
    expected = ", ".join(FIELDS)
    for number, item in enumerate(items, start=1):
        where = "the employee record" if len(items) == 1 else f"record {number}"
        if not isinstance(item, Mapping):
            raise EmployeeRecordError(
                f"{where} must be a mapping of field names to values, got {_kind(item)}"
            )
        names = [k for k in item if isinstance(k, str)]
        if len(names) != len(item):
            bad = next(k for k in item if not isinstance(k, str))
            raise EmployeeRecordError(f"{where}: field names must be text, got {bad!r}")
        reserved = [k for k in names if k in DERIVED]
        if reserved:
            raise EmployeeRecordError(f"{where}: field name {reserved[0]!r} is reserved for the validation")
        if not set(names) & set(FIELDS):
            found = ", ".join(sorted(names)) or "no fields at all"
            raise EmployeeRecordError(
                f"{where} has none of the employee record fields ({expected}); found {found}"
            )
    return items


def _value(value: Any) -> Any:
    if isinstance(value, str) and not value.strip():
        return None  # a blank form field is a missing value
    if isinstance(value, date) and not isinstance(value, datetime):
        return value.isoformat()
    return value


def _ordinal(value: Any) -> float | None:
    if value is None:
        return None
    if not isinstance(value, str) or not _ISO_DATE.match(value):
        return _NOT_A_DATE
    try:
        return float(date.fromisoformat(value).toordinal())
    except ValueError:
        return _NOT_A_DATE


def build_frame(records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per record: every field (missing ones empty), any unknown field, the typed view."""
    import pandas as pd

    extra = sorted({k for r in records for k in r if k not in FIELDS and k not in DERIVED})
    columns: dict[str, list[Any]] = {
        name: [_value(r.get(name)) for r in records] for name in (*FIELDS, *extra)
    }
    columns[START_DATE_ORDINAL] = [_ordinal(v) for v in columns["start_date"]]
    frame = pd.DataFrame({name: pd.Series(values, dtype=object) for name, values in columns.items()})
    frame[START_DATE_ORDINAL] = frame[START_DATE_ORDINAL].astype(float)
    return frame


# --- 2. the suite -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    rule: str
    field: str | None
    description: str
    expectation: str  # class name in great_expectations.expectations
    kwargs: dict[str, Any]
    message: str  # str.format template: {field}, {value}, {known}, {today}

    def meta(self) -> dict[str, Any]:
        return {"rule": self.rule, "field": self.field}


def rules(*, onboarding: bool, today: date) -> list[Rule]:
    """The suite's rules in reporting order: shape and types first, then formats, then content."""
    from include.policies.hr_roles import known_roles
    from include.policies.tenants import tenant_ids

    found: list[Rule] = [
        Rule(
            "known_fields",
            None,
            "the record has only employee record fields",
            "ExpectTableColumnsToMatchSet",
            {"column_set": [*FIELDS, *DERIVED], "exact_match": True},
            "unexpected field(s) {value} (the fields are {known})",
        )
    ]
    found += [
        Rule(
            f"{f}_required",
            f,
            f"{f} is given",
            "ExpectColumnValuesToNotBeNull",
            {"column": f},
            "{field} is missing",
        )
        for f in REQUIRED
    ]
    found += [
        Rule(
            f"{f}_text",
            f,
            f"{f} is text",
            "ExpectColumnValuesToBeOfType",
            {"column": f, "type_": "str"},
            "{field} must be text, got {kind} ({value})",
        )
        for f in FIELDS
    ]
    found += [
        Rule(
            "employee_id_format",
            "employee_id",
            "employee_id is an employee number like E01234",
            "ExpectColumnValuesToMatchRegex",
            {"column": "employee_id", "regex": EMPLOYEE_ID},
            "employee_id {value} is not an employee number like E01234",
        ),
        *(
            Rule(
                f"{f}_format",
                f,
                f"{f} has 1 to 64 characters, no leading or trailing spaces",
                "ExpectColumnValuesToMatchRegex",
                {"column": f, "regex": NAME},
                "{field} {value} must have 1 to 64 characters and no leading or trailing spaces",
            )
            for f in ("given_name", "surname")
        ),
        *(
            Rule(
                f"{f}_company_domain",
                f,
                f"{f} is a {COMPANY_DOMAIN} address",
                "ExpectColumnValuesToMatchRegex",
                {"column": f, "regex": COMPANY_EMAIL},
                "{field} {value} is not a " + COMPANY_DOMAIN + " address",
            )
            for f in ("email", "manager_email")
        ),
        Rule(
            "uid_format",
            "uid",
            "uid is a login name: a lower-case letter, then 1 to 31 of a-z 0-9 . _ -",
            "ExpectColumnValuesToMatchRegex",
            {"column": "uid", "regex": UID},
            "uid {value} is not a valid login name (a lower-case letter, then 1 to 31 lower-case "
            "letters, digits, '.', '_' or '-')",
        ),
        Rule(
            "start_date_iso",
            "start_date",
            "start_date is a calendar date written YYYY-MM-DD",
            "ExpectColumnValuesToBeBetween",
            {"column": START_DATE_ORDINAL, "min_value": 1},
            "start_date {value} is not a date written YYYY-MM-DD",
        ),
    ]
    if onboarding:
        found.append(
            Rule(
                "start_date_not_past",
                "start_date",
                "start_date is not in the past",
                "ExpectColumnValuesToBeBetween",
                {"column": START_DATE_ORDINAL, "min_value": today.toordinal()},
                "start_date {value} is in the past (today is {today})",
            )
        )
    roles, tenants = known_roles(), tenant_ids()
    found += [
        Rule(
            "role_known",
            "role",
            "role is a job role of hr_roles.yaml",
            "ExpectColumnValuesToBeInSet",
            {"column": "role", "value_set": roles},
            "role {value} is not a known job role (known: " + ", ".join(roles) + ")",
        ),
        Rule(
            "tenant_known",
            "tenant",
            "tenant, if given, is a tenant of tenants.yaml",
            "ExpectColumnValuesToBeInSet",
            {"column": "tenant", "value_set": tenants},
            "tenant {value} is not a known tenant (known: " + ", ".join(tenants) + ")",
        ),
    ]
    found += [
        Rule(
            f"{f}_unique",
            f,
            f"{f} is unique within the batch",
            "ExpectColumnValuesToBeUnique",
            {"column": f},
            "{field} {value} appears in more than one record",
        )
        for f in UNIQUE
    ]
    return found


def build_suite(suite_rules: Sequence[Rule]) -> Any:
    """The great_expectations ``ExpectationSuite`` of ``rules`` (not saved anywhere)."""
    import great_expectations as gx

    expectations = [getattr(gx.expectations, r.expectation)(**r.kwargs, meta=r.meta()) for r in suite_rules]
    return _build_suite(SUITE_NAME, expectations)


def run_suite(frame: pd.DataFrame, suite_rules: Sequence[Rule]) -> dict[str, dict[str, Any]]:
    """Validate ``frame``; GE's JSON result of every expectation, by rule id."""
    results = validate_frame(
        frame,
        build_suite(suite_rules),
        data_source="hr_onboarding",
        asset="employee_records",
        batch="all_records",
    )
    by_rule = {item["expectation_config"]["meta"]["rule"]: item for item in results}
    missing = [r.rule for r in suite_rules if r.rule not in by_rule]
    if missing:
        raise SuiteRunError(f"no result for rule(s) {', '.join(missing)}")
    return by_rule


# --- 3. the result ------------------------------------------------------------------------------


def _problems(rule: Rule, item: Mapping[str, Any], frame: pd.DataFrame, today: date) -> list[Problem]:
    result = item.get("result") or {}
    if rule.rule == "known_fields":
        unexpected = ((result.get("details") or {}).get("mismatched") or {}).get("unexpected") or []
        if not unexpected:
            return []
        value = ", ".join(repr(name) for name in unexpected)
        return [Problem(None, None, rule.rule, rule.message.format(value=value, known=", ".join(FIELDS)))]
    problems = []
    for index in result.get("unexpected_index_list") or []:
        field = rule.field or ""
        raw = frame.at[index, field] if field in frame.columns else None
        message = rule.message.format(
            field=field, value=repr(raw), kind=_described_kind(raw), today=today.isoformat()
        )
        problems.append(Problem(int(index) + 1, rule.field, rule.rule, message))
    return problems


def validate_employee_records(
    records: Any, *, onboarding: bool = True, today: date | None = None
) -> EmployeeValidation:
    """Validate one employee record (a mapping) or a list of them; see the module docstring.

    ``onboarding``: the start date must not be in the past. ``today`` defaults to today's UTC date.
    :raises EmployeeRecordError: the input is not employee records at all (nothing was validated).
    """
    import time

    started = time.perf_counter()
    items = _records(records)
    day = today or datetime.now(UTC).date()
    suite_rules = rules(onboarding=onboarding, today=day)
    frame = build_frame(items)
    results = run_suite(frame, suite_rules)

    outcomes, problems, seen = [], [], set()
    for rule in suite_rules:
        item = results[rule.rule]
        found = _problems(rule, item, frame, day)
        outcomes.append(
            ExpectationOutcome(
                rule=rule.rule,
                field=rule.field,
                expectation=item["expectation_config"]["type"],
                description=rule.description,
                success=bool(item["success"]),
                unexpected_count=int((item.get("result") or {}).get("unexpected_count") or len(found)),
            )
        )
        for problem in found:
            key = (problem.record, problem.field)
            if problem.record is not None and key in seen:
                continue  # one problem per record and field: the first (type before format) says it
            seen.add(key)
            problems.append(problem)
    problems.sort(key=lambda p: (p.record or 0, FIELDS.index(p.field) if p.field in FIELDS else -1))
    ids = tuple(v if isinstance(v, str) and re.match(EMPLOYEE_ID, v) else None for v in frame["employee_id"])
    return EmployeeValidation(
        success=all(o.success for o in outcomes),
        records=len(items),
        employee_ids=ids,
        checked_on=day,
        onboarding=onboarding,
        outcomes=tuple(outcomes),
        problems=tuple(problems),
        seconds=time.perf_counter() - started,
    )


def validate_employee_record(
    record: Any, *, onboarding: bool = True, today: date | None = None
) -> EmployeeValidation:
    """:func:`validate_employee_records` for exactly one record (a mapping)."""
    if not isinstance(record, Mapping):
        raise EmployeeRecordError(
            f"an employee record must be a mapping of field names to values, got {_kind(record)} "
            f"{str(record)[:40]!r}"
        )
    return validate_employee_records(record, onboarding=onboarding, today=today)
