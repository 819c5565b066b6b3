"""Billable lines of a PSA/timesheet export, checked with Great Expectations before they are invoiced.

The invoicing workflow collects billable lines (CSV or JSON), validates them here, shows the totals
to a finance approver and only then creates invoices in the ERP (``include.connectors.erp``). One
invoice per customer and milestone period, so "one currency per invoice" means one currency per
customer in the export.

Steps of :func:`validate_billable_lines`:

1. **Shape** (plain Python, before anything else): JSON must be a list of objects, each with every
   required field; CSV must have a header naming every required column once. Anything else raises
   :class:`BillableLinesFormatError` and nothing is validated.
2. **Expectations**: the suite in ``suites/billable_lines.json`` runs with great_expectations' own
   API on a pandas DataFrame in an *ephemeral* context (in-memory stores: no project folder, no
   data docs, nothing written). Values stay text as exported; a few typed views are added as
   columns (``quantity_value``, ``vat_rate_key``, ``date_ordinal``, ``customer_currency_count``...,
   described in the suite's ``meta``) so that every rule is a stock expectation. Known customers
   and the milestone period are suite parameters, passed in per run.
3. **Result**: :class:`BillableLinesResult` with the outcome of every expectation, the offending
   rows (row number, line id and the offending value only, never the line itself), problems in
   words a finance person reads (``line L-7 has VAT rate 0.25 (allowed: ...)``) and, only when
   every expectation passed, Decimal-exact totals: per line ``net = quantity x unit_price`` and
   ``VAT = net x rate``, each rounded half-up to cents, then summed per invoice and per currency.

The ERP may round VAT per document (per VAT rate on the invoice total) rather than per line, so its
totals can differ from these by a cent per rate; compare with ``post_invoice(expected_totals=...,
tolerance=...)`` of the ERP connector before posting.

Great Expectations takes about 10 s to import, so it (and pandas) are imported on first use only:
importing this module from a DAG file costs nothing at parse time.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from functools import cache
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from include.validation.expectations import build_suite, validate_frame

if TYPE_CHECKING:
    import pandas as pd

SUITE_FILE = Path(__file__).resolve().parent / "suites" / "billable_lines.json"
REQUIRED_COLUMNS: tuple[str, ...] = (
    "line_id",
    "customer_id",
    "project",
    "date",
    "description",
    "quantity",
    "unit_price",
    "currency",
    "vat_rate",
)
LABELS = {
    "line_id": "line id",
    "customer_id": "customer",
    "project": "project",
    "date": "date",
    "description": "description",
    "quantity": "quantity",
    "unit_price": "unit price",
    "currency": "currency",
    "vat_rate": "VAT rate",
}
CENT = Decimal("0.01")
MAX_LISTED_PROBLEMS = 25
_NUMBER = re.compile(r"^[+-]?[0-9]+(\.[0-9]+)?$")
_ISO_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
_DUPLICATE_KEY = ("customer_id", "project", "date", "description", "quantity_key", "unit_price_key")

Format = Literal["csv", "json"]


class BillableLinesFormatError(ValueError):
    """The export is not a list of billable lines at all (wrong shape or header); nothing was validated."""


# --- result types ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Offender:
    """One offending row: where it is and the offending value, never the whole line."""

    row: int
    line_id: str | None
    value: str | None


@dataclass(frozen=True)
class ExpectationOutcome:
    rule: str
    expectation: str
    column: str | None
    success: bool
    unexpected_count: int
    offenders: tuple[Offender, ...] = ()
    observed: Any = None


@dataclass(frozen=True)
class Problem:
    rule: str
    message: str
    line_ids: tuple[str, ...] = ()
    rows: tuple[int, ...] = ()
    value: str | None = None


@dataclass(frozen=True)
class BillableLine:
    """A line that passed validation, typed; ``net``/``vat``/``gross`` rounded half-up to cents."""

    row: int
    line_id: str
    customer_id: str
    project: str
    date: date
    description: str
    quantity: Decimal
    unit_price: Decimal
    currency: str
    vat_rate: Decimal
    net: Decimal
    vat: Decimal
    gross: Decimal


@dataclass(frozen=True)
class Totals:
    """Net, VAT and gross of a set of lines in one currency, with the split per VAT rate."""

    currency: str
    net: Decimal
    vat: Decimal
    gross: Decimal
    lines: int
    by_vat_rate: dict[str, tuple[Decimal, Decimal]] = field(default_factory=dict)  # rate -> (net, vat)

    def as_dict(self) -> dict[str, Any]:
        return {
            "currency": self.currency,
            "net": str(self.net),
            "vat": str(self.vat),
            "gross": str(self.gross),
            "lines": self.lines,
            "by_vat_rate": {
                rate: {"net": str(n), "vat": str(v)} for rate, (n, v) in self.by_vat_rate.items()
            },
        }


@dataclass(frozen=True)
class InvoiceTotals:
    """What one invoice (one customer, one currency) will amount to."""

    customer_id: str
    totals: Totals

    def as_dict(self) -> dict[str, Any]:
        return {"customer_id": self.customer_id, **self.totals.as_dict()}


@dataclass(frozen=True)
class BillableLinesResult:
    success: bool
    line_count: int
    period_start: date
    period_end: date
    outcomes: tuple[ExpectationOutcome, ...]
    problems: tuple[Problem, ...]
    summary: str
    run_seconds: float
    totals: dict[str, Totals] | None = None  # per currency, only when success
    invoices: tuple[InvoiceTotals, ...] | None = None  # per customer, only when success
    lines: tuple[BillableLine, ...] = ()  # typed lines, only when success

    def lines_for(self, customer_id: str) -> list[BillableLine]:
        return [line for line in self.lines if line.customer_id == customer_id]

    def xcom_value(self) -> dict[str, Any]:
        """Small and JSON-safe: outcome, counts and totals (amounts as strings); no line data."""
        return {
            "success": self.success,
            "line_count": self.line_count,
            "problem_count": len(self.problems),
            "period": [self.period_start.isoformat(), self.period_end.isoformat()],
            "totals": {c: t.as_dict() for c, t in (self.totals or {}).items()} if self.success else None,
            "invoices": [i.as_dict() for i in self.invoices or ()] if self.success else None,
        }

    def to_dict(self, *, include_lines: bool = False) -> dict[str, Any]:
        """The whole result, JSON-safe, for the archive (``include_lines`` adds the typed lines)."""
        document = {
            **self.xcom_value(),
            "summary": self.summary,
            "run_seconds": round(self.run_seconds, 3),
            "expectations": [
                {
                    "rule": o.rule,
                    "expectation": o.expectation,
                    "column": o.column,
                    "success": o.success,
                    "unexpected_count": o.unexpected_count,
                    "offenders": [
                        {"row": x.row, "line_id": x.line_id, "value": x.value} for x in o.offenders
                    ],
                }
                for o in self.outcomes
            ],
            "problems": [
                {"rule": p.rule, "message": p.message, "line_ids": list(p.line_ids), "rows": list(p.rows)}
                for p in self.problems
            ],
        }
        if include_lines:
            document["lines"] = [
                {
                    "line_id": x.line_id,
                    "customer_id": x.customer_id,
                    "project": x.project,
                    "date": x.date.isoformat(),
                    "description": x.description,
                    "quantity": str(x.quantity),
                    "unit_price": str(x.unit_price),
                    "currency": x.currency,
                    "vat_rate": str(x.vat_rate),
                    "net": str(x.net),
                    "vat": str(x.vat),
                    "gross": str(x.gross),
                }
                for x in self.lines
            ]
        return document


# --- 1. shape ----------------------------------------------------------------------------------
Record = dict[str, str | None]


def _text(value: Any, row: int, name: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool | Mapping | list | tuple):
        raise BillableLinesFormatError(
            f"line {row}: field {name!r} must be text or a number, not {json.dumps(value, default=str)[:40]}"
        )
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        text = repr(value)
    else:
        text = str(value)
    text = text.strip()
    return text or None


def _records_from_objects(items: Any, *, what: str) -> list[Record]:
    if not isinstance(items, list):
        raise BillableLinesFormatError(
            f"{what} must be a list of objects (one per line), got {type(items).__name__}"
        )
    records = []
    for row, item in enumerate(items, start=1):
        if not isinstance(item, Mapping):
            raise BillableLinesFormatError(f"{what}: item {row} is a {type(item).__name__}, not an object")
        missing = [name for name in REQUIRED_COLUMNS if name not in item]
        if missing:
            raise BillableLinesFormatError(f"{what}: item {row} lacks the field(s) {', '.join(missing)}")
        records.append({name: _text(item[name], row, name) for name in REQUIRED_COLUMNS})
    return records


def _records_from_csv(text: str) -> list[Record]:
    text = text.lstrip("\ufeff")
    if not text.strip():
        raise BillableLinesFormatError("the CSV export is empty (no header)")
    first_line = text.splitlines()[0]
    delimiter = ";" if first_line.count(";") > first_line.count(",") else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    header = [name.strip() for name in next(reader)]
    duplicated = sorted(name for name, n in Counter(header).items() if n > 1)
    missing = [name for name in REQUIRED_COLUMNS if name not in header]
    if duplicated or missing:
        problems = []
        if missing:
            problems.append(f"missing column(s) {', '.join(missing)}")
        if duplicated:
            problems.append(f"duplicated column(s) {', '.join(duplicated)}")
        raise BillableLinesFormatError(
            f"the CSV header is wrong: {'; '.join(problems)}; found {', '.join(header) or 'nothing'}; "
            f"required {', '.join(REQUIRED_COLUMNS)}"
        )
    position = {name: header.index(name) for name in REQUIRED_COLUMNS}
    records = []
    for row, cells in enumerate(reader, start=1):
        if not any(cell.strip() for cell in cells):
            continue  # blank line, e.g. at the end of the file
        if len(cells) != len(header):
            raise BillableLinesFormatError(
                f"CSV data row {row} has {len(cells)} cells, the header has {len(header)} columns"
            )
        records.append({name: cells[i].strip() or None for name, i in position.items()})
    return records


def load_billable_lines(
    source: str | bytes | PathLike[str] | Sequence[Mapping[str, Any]], *, fmt: Format | None = None
) -> list[Record]:
    """The export as records of the required fields (text or None); raises :class:`BillableLinesFormatError`.

    ``source``: a path (format from its suffix unless ``fmt``), CSV/JSON text or bytes (format from
    ``fmt``, else JSON when it starts with ``[`` or ``{``), or already parsed JSON (a list of
    objects). JSON numbers are read as decimals, so ``54.90`` stays exact. Extra fields and columns
    are ignored.
    """
    if isinstance(source, PathLike):
        path = Path(source)
        fmt = fmt or ("json" if path.suffix.lower() == ".json" else "csv")
        source = path.read_bytes()
    if isinstance(source, bytes):
        try:
            source = source.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise BillableLinesFormatError(f"the export is not UTF-8 text: {exc}") from None
    if isinstance(source, str):
        stripped = source.lstrip("\ufeff \t\r\n")
        fmt = fmt or ("json" if stripped[:1] in ("[", "{") else "csv")
        if fmt == "csv":
            return _records_from_csv(source)
        try:
            parsed = json.loads(stripped, parse_float=Decimal)
        except ValueError as exc:
            raise BillableLinesFormatError(f"the JSON export is not valid JSON: {exc}") from None
        return _records_from_objects(parsed, what="the JSON export")
    return _records_from_objects(source, what="the billable lines")


# --- 2. the suite, run with great_expectations ------------------------------------------------
def _decimal(text: str | None) -> Decimal | None:
    if text is None or not _NUMBER.match(text):
        return None
    try:
        return Decimal(text)
    except InvalidOperation:  # pragma: no cover - the pattern admits only plain decimals
        return None


def _normalised(text: str | None) -> str | None:
    number = _decimal(text)
    return text if number is None else format(number.normalize(), "f")


def _iso_date(text: str | None) -> date | None:
    if text is None or not _ISO_DATE.match(text):
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


def build_frame(records: Sequence[Record]) -> pd.DataFrame:
    """The DataFrame the suite runs on: the exported text columns, a 1-based ``row`` and typed views."""
    import pandas as pd

    allowed = set(allowed_values("currency_allowed"))
    currencies: dict[str, set[str]] = defaultdict(
        set
    )  # per customer; a currency not allowed is its own problem
    for record in records:
        if record["customer_id"] is not None and record["currency"] in allowed:
            currencies[record["customer_id"]].add(str(record["currency"]))
    columns: dict[str, list[Any]] = {"row": list(range(1, len(records) + 1))}
    for name in REQUIRED_COLUMNS:
        columns[name] = [record[name] for record in records]
    nan = float("nan")

    def number(text: str | None) -> float:
        value = _decimal(text)
        return nan if value is None else float(value)

    columns["quantity_value"] = [number(r["quantity"]) for r in records]
    columns["unit_price_value"] = [number(r["unit_price"]) for r in records]
    columns["quantity_key"] = [_normalised(r["quantity"]) for r in records]
    columns["unit_price_key"] = [_normalised(r["unit_price"]) for r in records]
    columns["vat_rate_key"] = [_normalised(r["vat_rate"]) for r in records]
    columns["date_ordinal"] = [
        nan if (day := _iso_date(r["date"])) is None else float(day.toordinal()) for r in records
    ]
    columns["customer_currency_count"] = [
        float(len(currencies[r["customer_id"]])) if r["customer_id"] and r["currency"] in allowed else nan
        for r in records
    ]
    frame = pd.DataFrame(columns)
    for name in (*REQUIRED_COLUMNS, "quantity_key", "unit_price_key", "vat_rate_key"):
        frame[name] = frame[name].astype(object).where(frame[name].notna(), None)
    return frame


@cache
def suite_document() -> dict[str, Any]:
    """The suite as stored in ``suites/billable_lines.json``."""
    document: dict[str, Any] = json.loads(SUITE_FILE.read_text(encoding="utf-8"))
    return document


def allowed_values(rule: str) -> list[str]:
    """The ``value_set`` of the suite's expectation for ``rule`` (the allowed currencies or VAT rates)."""
    for expectation in suite_document()["expectations"]:
        if expectation["meta"]["rule"] == rule:
            return list(expectation["kwargs"]["value_set"])
    raise KeyError(rule)


def _gx_suite() -> Any:
    document = suite_document()
    return build_suite(
        document["name"], document["expectations"], meta=document.get("meta"), source=str(SUITE_FILE)
    )


def run_suite(frame: pd.DataFrame, parameters: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Validate ``frame`` with the suite; one JSON dict per expectation result (GE's own shape)."""
    return validate_frame(
        frame,
        _gx_suite(),
        data_source="billable_lines",
        asset="export",
        batch="whole_export",
        parameters=parameters,
        index_columns=("row", "line_id"),
    )


# --- 3. words and numbers ----------------------------------------------------------------------
def _who(row: int, line_id: str | None) -> str:
    return f"line {line_id}" if line_id else f"row {row} (no line id)"


def _clean_id(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return str(value)


class _Reporter:
    """Turns expectation results into outcomes and finance-readable problems."""

    def __init__(
        self, frame: pd.DataFrame, *, known_customers: Sequence[str], start: date, end: date
    ) -> None:
        self.frame = frame
        self.known = sorted(known_customers)
        self.start, self.end = start, end
        self.problems: list[Problem] = []
        self._seen: set[tuple[str, int]] = set()
        self.raw = {name: frame[name].tolist() for name in REQUIRED_COLUMNS if name in frame.columns}

    def value(self, column: str | None, row: int) -> str | None:
        if column is None or column not in self.raw:
            return None
        value = self.raw[column][row - 1]
        return None if value is None else str(value)

    def outcome(self, item: Mapping[str, Any]) -> ExpectationOutcome:
        config = item["expectation_config"]
        meta, kwargs = config.get("meta") or {}, config.get("kwargs") or {}
        rule = str(meta.get("rule", config["type"]))
        column = kwargs.get("column")
        shown = meta.get("source_column", column)
        result = item.get("result") or {}
        offenders = tuple(
            Offender(
                row=int(index["row"]),
                line_id=_clean_id(index.get("line_id")),
                value=self.value(shown, int(index["row"])),
            )
            for index in result.get("unexpected_index_list") or []
        )
        outcome = ExpectationOutcome(
            rule=rule,
            expectation=str(config["type"]),
            column=column,
            success=bool(item["success"]),
            unexpected_count=int(result.get("unexpected_count") or len(offenders)),
            offenders=offenders,
            observed=result.get("observed_value"),
        )
        if not outcome.success:
            self._describe(outcome, kwargs)
        return outcome

    def _add(self, rule: str, message: str, offenders: Sequence[Offender], value: str | None = None) -> None:
        self.problems.append(
            Problem(
                rule=rule,
                message=message,
                line_ids=tuple(o.line_id for o in offenders if o.line_id),
                rows=tuple(o.row for o in offenders),
                value=value,
            )
        )

    def _each(self, outcome: ExpectationOutcome, template: str) -> None:
        """One problem per offending row (a rule reported by two expectations counts once per row)."""
        for offender in outcome.offenders:
            if (outcome.rule, offender.row) in self._seen:
                continue
            self._seen.add((outcome.rule, offender.row))
            message = template.format(who=_who(offender.row, offender.line_id), value=offender.value)
            self._add(outcome.rule, message, [offender], offender.value)

    def _describe(self, outcome: ExpectationOutcome, kwargs: Mapping[str, Any]) -> None:  # noqa: C901
        rule = outcome.rule
        if rule == "not_empty":
            self._add(rule, "the export has no billable lines", [])
        elif rule == "required_columns":
            missing = [c for c in REQUIRED_COLUMNS if c not in self.frame.columns]
            self._add(rule, f"the export lacks the column(s) {', '.join(missing)}", [])
        elif rule == "required_value":
            self._each(outcome, "{who} has no " + LABELS.get(str(outcome.column), str(outcome.column)))
        elif rule == "unique_line_id":
            self._grouped(outcome, lambda o: o.line_id, "line id {key} is used by {n} lines (rows {rows})")
        elif rule == "known_customer":
            known = ", ".join(self.known) or "none"
            self._each(
                outcome,
                "{who} is for customer '{value}', which is not a known customer (known: " + known + ")",
            )
        elif rule in ("quantity_is_number", "unit_price_is_number"):
            label = "quantity" if rule.startswith("quantity") else "unit price"
            self._each(outcome, "{who} has " + label + " '{value}', which is not a plain number like 1234.50")
        elif rule == "quantity_positive":
            self._each(outcome, "{who} has quantity {value} (must be more than 0)")
        elif rule == "unit_price_cents":
            self._each(outcome, "{who} has unit price {value} (at most 2 decimals)")
        elif rule == "unit_price_not_negative":
            self._each(outcome, "{who} has unit price {value} (must not be negative)")
        elif rule == "currency_allowed":
            allowed = ", ".join(kwargs.get("value_set") or ())
            self._each(outcome, "{who} has currency {value} (allowed: " + allowed + ")")
        elif rule == "one_currency_per_invoice":
            self._mixed_currencies(outcome)
        elif rule == "vat_rate_allowed":
            allowed = ", ".join(kwargs.get("value_set") or ())
            self._each(outcome, "{who} has VAT rate {value} (allowed: " + allowed + ")")
        elif rule == "date_iso":
            self._each(outcome, "{who} has date '{value}', which is not a date in the form YYYY-MM-DD")
        elif rule == "date_in_period":
            period = f"{self.start.isoformat()} to {self.end.isoformat()}"
            self._each(outcome, "{who} is dated {value}, outside the milestone period " + period)
        elif rule == "no_duplicate_lines":
            self._duplicates(outcome)
        else:  # a rule added to the suite without wording here: still reported, plainly
            self._each(outcome, "{who} fails " + rule + " (value {value})")

    def _grouped(self, outcome: ExpectationOutcome, key: Any, template: str) -> None:
        groups: dict[Any, list[Offender]] = defaultdict(list)
        for offender in outcome.offenders:
            groups[key(offender)].append(offender)
        for group_key, members in groups.items():
            rows = ", ".join(str(o.row) for o in members)
            self._add(outcome.rule, template.format(key=group_key, n=len(members), rows=rows), members)

    def _mixed_currencies(self, outcome: ExpectationOutcome) -> None:
        customers = self.raw["customer_id"]
        by_customer: dict[str, list[Offender]] = defaultdict(list)
        for offender in outcome.offenders:
            by_customer[str(customers[offender.row - 1])].append(offender)
        for customer, members in by_customer.items():
            counts = Counter(o.value for o in members)
            minority = min(counts, key=lambda c: (counts[c], str(c)))
            examples = ", ".join(o.line_id or f"row {o.row}" for o in members if o.value == minority)
            split = ", ".join(f"{c}: {n} line{'s' if n != 1 else ''}" for c, n in sorted(counts.items()))
            self._add(
                outcome.rule,
                f"customer {customer} has lines in {len(counts)} currencies ({split}; {minority} on "
                f"{examples}); one invoice takes one currency",
                members,
            )

    def _duplicates(self, outcome: ExpectationOutcome) -> None:
        columns = {name: self.frame[name].tolist() for name in _DUPLICATE_KEY}
        groups: dict[tuple[Any, ...], list[Offender]] = defaultdict(list)
        for offender in outcome.offenders:
            groups[tuple(columns[name][offender.row - 1] for name in _DUPLICATE_KEY)].append(offender)
        for members in groups.values():
            names = [o.line_id or f"row {o.row}" for o in members]
            listed = ", ".join(names[:-1]) + f" and {names[-1]}" if len(names) > 1 else names[0]
            self._add(
                outcome.rule,
                f"lines {listed} are duplicates (same customer, project, date, description, quantity "
                "and unit price)",
                members,
            )


def _cents(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def _typed_lines(records: Sequence[Record]) -> list[BillableLine]:
    lines = []
    for row, r in enumerate(records, start=1):
        quantity, unit_price, rate = (
            Decimal(str(r["quantity"])),
            Decimal(str(r["unit_price"])),
            Decimal(str(r["vat_rate"])),
        )
        net = _cents(quantity * unit_price)
        vat = _cents(net * rate)
        lines.append(
            BillableLine(
                row=row,
                line_id=str(r["line_id"]),
                customer_id=str(r["customer_id"]),
                project=str(r["project"]),
                date=date.fromisoformat(str(r["date"])),
                description=str(r["description"]),
                quantity=quantity,
                unit_price=unit_price,
                currency=str(r["currency"]),
                vat_rate=rate,
                net=net,
                vat=vat,
                gross=net + vat,
            )
        )
    return lines


def totals_of(lines: Iterable[BillableLine], currency: str) -> Totals:
    """Sum of already rounded line amounts (all in ``currency``), with the split per VAT rate."""
    net = vat = Decimal("0.00")
    count = 0
    by_rate: dict[str, tuple[Decimal, Decimal]] = {}
    for line in lines:
        net, vat, count = net + line.net, vat + line.vat, count + 1
        key = format(line.vat_rate.normalize(), "f")
        rate_net, rate_vat = by_rate.get(key, (Decimal("0.00"), Decimal("0.00")))
        by_rate[key] = (rate_net + line.net, rate_vat + line.vat)
    return Totals(currency, net, vat, net + vat, count, dict(sorted(by_rate.items())))


def _money(amount: Decimal, currency: str) -> str:
    return f"{currency} {amount:,.2f}"


def _amounts(label: str, t: Totals) -> str:
    return (
        f"{label}: net {_money(t.net, t.currency)} + VAT {_money(t.vat, t.currency)} = "
        f"gross {_money(t.gross, t.currency)} ({t.lines:,} line{'s' if t.lines != 1 else ''})"
    )


def _summary(
    problems: Sequence[Problem],
    line_count: int,
    totals: Mapping[str, Totals] | None,
    invoices: Sequence[InvoiceTotals],
) -> str:
    if problems:
        count = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
        listed = [f"- {p.message}" for p in problems[:MAX_LISTED_PROBLEMS]]
        if len(problems) > MAX_LISTED_PROBLEMS:
            listed.append(f"- ... and {len(problems) - MAX_LISTED_PROBLEMS} more")
        return f"{count} in {line_count:,} billable lines:\n" + "\n".join(listed)
    n = len(invoices)
    parts = [f"No problems in {line_count:,} billable lines ({n} invoice{'s' if n != 1 else ''})."]
    parts += [_amounts(f"Invoice {i.customer_id}", i.totals) for i in invoices]
    parts += [_amounts(f"Total {currency}", t) for currency, t in sorted((totals or {}).items())]
    return "\n".join(parts)


# --- the entry point ---------------------------------------------------------------------------
def validate_billable_lines(
    source: str | bytes | PathLike[str] | Sequence[Mapping[str, Any]],
    *,
    known_customers: Iterable[str],
    period_start: date,
    period_end: date,
    fmt: Format | None = None,
) -> BillableLinesResult:
    """Check an export against the suite; see the module docstring.

    :param known_customers: the customers that may be invoiced; a line's ``customer_id`` is a
        tenant id, so pass ``include.policies.tenants.tenant_ids()``.
    :param period_start, period_end: the milestone period, both days included.
    :raises BillableLinesFormatError: the export is not a list of lines with the required fields.
    :raises include.validation.expectations.SuiteRunError: Great Expectations could not evaluate the suite.
    """
    if period_start > period_end:
        raise ValueError(f"the milestone period ends ({period_end}) before it starts ({period_start})")
    known = sorted({str(c) for c in known_customers})
    records = load_billable_lines(source, fmt=fmt)
    started = time.monotonic()
    frame = build_frame(records)
    results = run_suite(
        frame,
        {
            "known_customers": known,
            "period_start": period_start.toordinal(),
            "period_end": period_end.toordinal(),
        },
    )
    reporter = _Reporter(frame, known_customers=known, start=period_start, end=period_end)
    outcomes = tuple(reporter.outcome(item) for item in results)
    problems = tuple(sorted(reporter.problems, key=lambda p: (min(p.rows, default=0), p.rule)))
    success = all(o.success for o in outcomes)
    totals: dict[str, Totals] | None = None
    invoices: tuple[InvoiceTotals, ...] | None = None
    lines: tuple[BillableLine, ...] = ()
    if success:
        lines = tuple(_typed_lines(records))
        by_currency: dict[str, list[BillableLine]] = defaultdict(list)
        by_customer: dict[str, list[BillableLine]] = defaultdict(list)
        for line in lines:
            by_currency[line.currency].append(line)
            by_customer[line.customer_id].append(line)
        totals = {c: totals_of(ls, c) for c, ls in sorted(by_currency.items())}
        invoices = tuple(
            InvoiceTotals(customer, totals_of(ls, ls[0].currency))
            for customer, ls in sorted(by_customer.items())
        )
    return BillableLinesResult(
        success=success,
        line_count=len(records),
        period_start=period_start,
        period_end=period_end,
        outcomes=outcomes,
        problems=problems,
        summary=_summary(problems, len(records), totals, invoices or ()),
        run_seconds=time.monotonic() - started,
        totals=totals,
        invoices=invoices,
        lines=lines,
    )
