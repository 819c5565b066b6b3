"""Billable-line validation: the Great Expectations suite on pandas, its findings in words, its totals.

Offline: an ephemeral GE context, nothing written. The first test pays GE's import (about 10 s).
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections import defaultdict
from datetime import date
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from include.policies.tenants import tenant_ids
from include.validation import billable_lines as module
from include.validation.billable_lines import (
    REQUIRED_COLUMNS,
    BillableLinesFormatError,
    BillableLinesResult,
    allowed_values,
    load_billable_lines,
    validate_billable_lines,
)

APRIL = {"period_start": date(2026, 4, 1), "period_end": date(2026, 4, 30)}
CUSTOMERS = tenant_ids()  # acme, globex
CURRENCY = {"acme": "EUR", "globex": "GBP"}
RATES = ["0.19", "0.07", "0", "0.2", "0.077", "0.081"]


def _export(count: int) -> list[dict[str, str]]:
    """A clean export: unique ids and descriptions, one currency per customer, amounts with cents."""
    lines = []
    for i in range(1, count + 1):
        customer = CUSTOMERS[i % len(CUSTOMERS)]
        lines.append(
            {
                "line_id": f"L-{i}",
                "customer_id": customer,
                "project": f"P-{i % 5}",
                "date": f"2026-04-{i % 30 + 1:02d}",
                "description": f"SOC service item {i}",
                "quantity": f"{i % 8 + 1}.{i * 7 % 100:02d}",
                "unit_price": f"{i * 37 % 500}.{i * 13 % 100:02d}",
                "currency": CURRENCY[customer],
                "vat_rate": RATES[i % len(RATES)],
            }
        )
    return lines


def _csv(lines: list[dict[str, Any]], *, delimiter: str = ",", columns: list[str] | None = None) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(
        out, fieldnames=columns or list(REQUIRED_COLUMNS), delimiter=delimiter, extrasaction="ignore"
    )
    writer.writeheader()
    writer.writerows(lines)
    return out.getvalue()


def _cents_half_up(value: Fraction) -> int:
    """Independent of the module's Decimal code: exact fractions, half-up to whole cents (value >= 0)."""
    scaled = value * 100
    return int(scaled + Fraction(1, 2)) if scaled >= 0 else -int(-scaled + Fraction(1, 2))


def _expected_totals(lines: list[dict[str, str]]) -> dict[str, tuple[int, int]]:
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for line in lines:
        net = _cents_half_up(Fraction(line["quantity"]) * Fraction(line["unit_price"]))
        vat = _cents_half_up(Fraction(net, 100) * Fraction(line["vat_rate"]))
        totals[line["currency"]][0] += net
        totals[line["currency"]][1] += vat
    return {currency: (net, vat) for currency, (net, vat) in totals.items()}


def _validate(source: Any, **kwargs: Any) -> BillableLinesResult:
    return validate_billable_lines(source, known_customers=CUSTOMERS, **{**APRIL, **kwargs})


def _messages(result: BillableLinesResult) -> list[str]:
    return [p.message for p in result.problems]


# --- a clean export -----------------------------------------------------------------------------
def test_clean_1000_line_export_passes_with_exact_totals(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # anything GE wrote would land here
    lines = _export(1000)
    _validate(_export(5))  # warm up: GE's import and first context are not the suite's run time

    started = time.monotonic()
    result = _validate(lines)
    elapsed = time.monotonic() - started

    print(f"\nsuite on 1,000 lines: {result.run_seconds:.3f} s ({elapsed:.3f} s with loading and totals)")
    assert result.success, result.summary
    assert result.problems == ()
    assert all(o.success for o in result.outcomes)
    assert len(result.outcomes) == len(module.suite_document()["expectations"]) == 25
    expected = _expected_totals(lines)
    assert result.totals is not None
    assert set(result.totals) == {"EUR", "GBP"}
    for currency, (net_cents, vat_cents) in expected.items():
        totals = result.totals[currency]
        assert totals.net == Decimal(net_cents) / 100
        assert totals.vat == Decimal(vat_cents) / 100
        assert totals.gross == Decimal(net_cents + vat_cents) / 100
        assert totals.lines == 500
        assert sum(n for n, _ in totals.by_vat_rate.values()) == totals.net
    assert [(i.customer_id, i.totals.currency, i.totals.lines) for i in result.invoices or ()] == [
        ("acme", "EUR", 500),
        ("globex", "GBP", 500),
    ]
    assert result.summary.startswith("No problems in 1,000 billable lines (2 invoices).")
    acme = next(i.totals for i in result.invoices or () if i.customer_id == "acme")
    assert (
        f"\nInvoice acme: net EUR {acme.net:,.2f} + VAT EUR {acme.vat:,.2f} = gross EUR {acme.gross:,.2f}"
        in (result.summary)
    )
    assert f"\nTotal GBP: net GBP {result.totals['GBP'].net:,.2f} + VAT" in result.summary
    print(result.summary)
    assert len(result.lines) == 1000
    assert result.lines[0].net == Decimal(_cents_half_up(Fraction("2.07") * Fraction("37.13"))) / 100
    xcom = result.xcom_value()
    assert json.loads(json.dumps(xcom)) == xcom
    assert xcom["totals"]["EUR"]["gross"] == str(result.totals["EUR"].gross)
    assert "lines" not in xcom
    assert list(tmp_path.iterdir()) == []  # ephemeral context: no gx/ folder, no data docs


def test_csv_and_json_exports_give_the_same_result(tmp_path: Path) -> None:
    lines = _export(40)
    as_json = tmp_path / "export.json"
    as_json.write_text(json.dumps(lines), encoding="utf-8")
    as_csv = tmp_path / "export.csv"
    as_csv.write_text(_csv(lines), encoding="utf-8")
    # JSON numbers are read as decimals: 54.90 stays 54.90
    numbers = [
        {**line, "quantity": Decimal(line["quantity"]), "unit_price": Decimal(line["unit_price"])}
        for line in lines
    ]
    text_with_numbers = json.dumps(numbers, default=lambda d: float(d))

    results = [
        _validate(as_json),
        _validate(as_csv),
        _validate(text_with_numbers),
        _validate("\ufeff" + _csv(lines, delimiter=";")),
    ]

    assert all(r.success for r in results), [r.summary for r in results]
    assert len({json.dumps(r.xcom_value(), sort_keys=True) for r in results}) == 1


# --- each rule, named by line and value ----------------------------------------------------------
ALLOWED_VAT = "0, 0.07, 0.077, 0.081, 0.19, 0.2"
BROKEN = [
    ("vat_rate", "0.25", "vat_rate_allowed", f"line L-7 has VAT rate 0.25 (allowed: {ALLOWED_VAT})"),
    ("vat_rate", "19", "vat_rate_allowed", f"line L-7 has VAT rate 19 (allowed: {ALLOWED_VAT})"),
    (
        "customer_id",
        "initech",
        "known_customer",
        "line L-7 is for customer 'initech', which is not a known customer (known: acme, globex)",
    ),
    ("quantity", "0", "quantity_positive", "line L-7 has quantity 0 (must be more than 0)"),
    ("quantity", "-2", "quantity_positive", "line L-7 has quantity -2 (must be more than 0)"),
    (
        "quantity",
        "two",
        "quantity_is_number",
        "line L-7 has quantity 'two', which is not a plain number like 1234.50",
    ),
    (
        "unit_price",
        "-10.00",
        "unit_price_not_negative",
        "line L-7 has unit price -10.00 (must not be negative)",
    ),
    ("unit_price", "10.005", "unit_price_cents", "line L-7 has unit price 10.005 (at most 2 decimals)"),
    (
        "unit_price",
        "12,50",
        "unit_price_is_number",
        "line L-7 has unit price '12,50', which is not a plain number like 1234.50",
    ),
    ("currency", "JPY", "currency_allowed", "line L-7 has currency JPY (allowed: CHF, EUR, GBP, USD)"),
    (
        "date",
        "2026-02-30",
        "date_iso",
        "line L-7 has date '2026-02-30', which is not a date in the form YYYY-MM-DD",
    ),
    (
        "date",
        "30.04.2026",
        "date_iso",
        "line L-7 has date '30.04.2026', which is not a date in the form YYYY-MM-DD",
    ),
    (
        "date",
        "2026-05-01",
        "date_in_period",
        "line L-7 is dated 2026-05-01, outside the milestone period 2026-04-01 to 2026-04-30",
    ),
    (
        "date",
        "2026-03-31",
        "date_in_period",
        "line L-7 is dated 2026-03-31, outside the milestone period 2026-04-01 to 2026-04-30",
    ),
    ("description", "", "required_value", "line L-7 has no description"),
    ("vat_rate", None, "required_value", "line L-7 has no VAT rate"),
    ("line_id", "", "required_value", "row 7 (no line id) has no line id"),
]


@pytest.mark.parametrize(
    ("column", "value", "rule", "message"), BROKEN, ids=[f"{c}={v!r}" for c, v, _, _ in BROKEN]
)
def test_each_broken_rule_names_the_line_and_the_value(
    column: str, value: str | None, rule: str, message: str
) -> None:
    lines = _export(12)
    lines[6][column] = value  # type: ignore[assignment]

    result = _validate(lines)

    assert result.success is False
    assert _messages(result) == [message]
    assert result.summary == f"1 problem in 12 billable lines:\n- {message}"
    failed = [o for o in result.outcomes if not o.success]
    assert {o.rule for o in failed} == {rule}
    assert all((x.row, x.line_id) == (7, lines[6]["line_id"] or None) for o in failed for x in o.offenders)
    assert result.totals is None
    assert result.invoices is None
    assert result.lines == ()
    assert result.xcom_value()["totals"] is None


def test_several_problems_are_counted_and_listed_in_row_order() -> None:
    lines = _export(12)
    lines[2]["vat_rate"] = "0.25"
    lines[8]["quantity"] = "-1"
    lines[10]["currency"] = "JPY"

    result = _validate(lines)

    assert result.summary.splitlines() == [
        "3 problems in 12 billable lines:",
        f"- line L-3 has VAT rate 0.25 (allowed: {ALLOWED_VAT})",
        "- line L-9 has quantity -1 (must be more than 0)",
        "- line L-11 has currency JPY (allowed: CHF, EUR, GBP, USD)",
    ]


def test_a_long_list_of_problems_is_cut_short() -> None:
    lines = _export(40)
    for line in lines:
        line["vat_rate"] = "0.5"
    result = _validate(lines)
    assert result.summary.startswith("40 problems in 40 billable lines:")
    assert result.summary.splitlines()[-1] == "- ... and 15 more"
    assert len(result.problems) == 40


def test_duplicates_are_found() -> None:
    lines = _export(12)
    lines[8] = {**lines[2], "line_id": "L-9b", "quantity": lines[2]["quantity"] + "0"}  # 4.21 == 4.210
    lines[10]["line_id"] = "L-4"

    result = _validate(lines)

    assert _messages(result) == [
        "lines L-3 and L-9b are duplicates "
        "(same customer, project, date, description, quantity and unit price)",
        "line id L-4 is used by 2 lines (rows 4, 11)",
    ]
    duplicate = next(p for p in result.problems if p.rule == "no_duplicate_lines")
    assert (duplicate.line_ids, duplicate.rows) == (("L-3", "L-9b"), (3, 9))


def test_mixed_currencies_in_one_invoice_are_refused() -> None:
    lines = _export(12)
    lines[4]["currency"] = "USD"  # globex: GBP elsewhere

    result = _validate(lines)

    assert lines[4]["customer_id"] == "globex"
    assert _messages(result) == [
        "customer globex has lines in 2 currencies (GBP: 5 lines, USD: 1 line; USD on L-5); "
        "one invoice takes one currency"
    ]
    assert result.totals is None


def test_different_customers_may_use_different_currencies() -> None:
    lines = _export(12)  # acme in EUR, globex in GBP
    assert _validate(lines).success


def test_unknown_customers_come_from_the_list_passed_in() -> None:
    lines = _export(6)
    result = validate_billable_lines(
        lines, known_customers=["acme"], period_start=date(2026, 4, 1), period_end=date(2026, 4, 30)
    )
    assert {p.rule for p in result.problems} == {"known_customer"}
    assert all("(known: acme)" in m for m in _messages(result))
    assert len(result.problems) == 3


def test_results_carry_ids_and_values_never_whole_lines() -> None:
    lines = _export(12)
    for line in lines:
        line["description"] = f"confidential engagement notes for {line['line_id']}"
    lines[6]["vat_rate"] = "0.25"
    lines[8] = {**lines[2], "line_id": "L-dup"}

    document = json.dumps(_validate(lines).to_dict())

    assert "confidential" not in document
    assert '"line_id": "L-7", "value": "0.25"' in document


def test_an_export_without_lines_is_a_problem_not_a_crash() -> None:
    result = _validate(_csv([]))
    assert _messages(result) == ["the export has no billable lines"]
    assert result.success is False


# --- wrong shapes are refused before validation ----------------------------------------------------
SHAPES = [
    pytest.param('{"lines": []}', "must be a list of objects (one per line), got dict", id="json-object"),
    pytest.param('["L-1", "L-2"]', "item 1 is a str, not an object", id="json-list-of-strings"),
    pytest.param("[{", "is not valid JSON", id="json-broken"),
    pytest.param(
        json.dumps([{"line_id": "L-1"}]),
        "item 1 lacks the field(s) customer_id, project, date",
        id="json-missing-fields",
    ),
    pytest.param(
        json.dumps([{**_export(1)[0], "quantity": {"value": 1}}]),
        "field 'quantity' must be text or a number",
        id="json-nested",
    ),
    pytest.param("", "the CSV export is empty (no header)", id="csv-empty"),
    pytest.param(
        "id,customer,amount\n1,acme,10\n",
        "the CSV header is wrong: missing column(s) line_id, customer_id, project, date, description, "
        "quantity, unit_price, currency, vat_rate; found id, customer, amount",
        id="csv-wrong-header",
    ),
    pytest.param(
        _csv(_export(1), columns=[*REQUIRED_COLUMNS, "currency"]),
        "duplicated column(s) currency",
        id="csv-duplicate-column",
    ),
    pytest.param(
        _csv(_export(2)) + "L-3,acme\n",
        "CSV data row 3 has 2 cells, the header has 9 columns",
        id="csv-ragged",
    ),
]


@pytest.mark.parametrize(("source", "message"), SHAPES)
def test_wrong_shape_is_refused_before_anything_else(
    source: str, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def must_not_run(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the suite ran on a malformed export")

    monkeypatch.setattr(module, "run_suite", must_not_run)
    with pytest.raises(BillableLinesFormatError) as raised:
        _validate(source)
    assert message in str(raised.value)


def test_parsed_json_that_is_not_a_list_is_refused() -> None:
    with pytest.raises(BillableLinesFormatError, match="must be a list of objects"):
        load_billable_lines({"line_id": "L-1"})  # type: ignore[arg-type]


def test_period_must_not_end_before_it_starts() -> None:
    with pytest.raises(ValueError, match=r"ends .* before it starts"):
        validate_billable_lines(
            [], known_customers=CUSTOMERS, period_start=date(2026, 4, 30), period_end=date(2026, 4, 1)
        )


def test_allowed_values_are_documented_in_the_suite() -> None:
    assert allowed_values("currency_allowed") == ["CHF", "EUR", "GBP", "USD"]
    assert allowed_values("vat_rate_allowed") == ["0", "0.07", "0.077", "0.081", "0.19", "0.2"]
    assert "0.081 (CH from 2024-01-01)" in module.suite_document()["meta"]["allowed_vat_rates_note"]
