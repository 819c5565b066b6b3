"""Milestone invoicing: the policy file, the request check, the external reference, the totals the
ERP will compute, the export validation's own rule, and what finance reads.

One test runs the Great Expectations suite (its import costs about 10 s the first time).
"""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from include.invoicing.messages import approval_body, erp_state_sentence, outcome_comment
from include.invoicing.milestone import (
    MAX_REFERENCE,
    InvoiceRequestError,
    MilestoneRequest,
    external_reference,
    invoice_totals,
    validate_export,
)
from include.policies.invoicing import INVOICING_FILE, load_invoicing, load_invoicing_file
from include.policies.loader import PolicyError
from include.validation.billable_lines import Totals

PARAMS = {
    "tenant": "acme",
    "contract_id": "CT-2026-001",
    "milestone_id": "M1",
    "period_start": "2026-10-01",
    "period_end": "2026-10-31",
    "export_key": "exports/acme/CT-2026-001/M1.csv",
}
HEADER = "line_id,customer_id,project,date,description,quantity,unit_price,currency,vat_rate\n"


def exactly(message: str) -> str:
    return f"^{re.escape(message)}$"


# --- the policy --------------------------------------------------------------------------------


def test_deployed_policy_maps_the_customer_tenants() -> None:
    policy = load_invoicing()
    assert policy.customers == {"acme": "10000", "globex": "20000"}
    assert policy.totals_tolerance == Decimal("0.01")
    assert policy.archive_retention_days == 3653


def _write(tmp_path: Path, change: dict[str, Any]) -> Path:
    document = yaml.safe_load(INVOICING_FILE.read_text(encoding="utf-8"))
    document.update(change)
    path = tmp_path / "invoicing.yaml"
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        pytest.param(
            {
                "customers": {
                    "acme": {"erp_customer_number": "10000"},
                    "initech": {"erp_customer_number": "30000"},
                }
            },
            "customers.initech: unknown tenant (declared in tenants.yaml: acme, globex)",
            id="unknown-tenant",
        ),
        pytest.param(
            {
                "customers": {
                    "acme": {"erp_customer_number": "10000"},
                    "globex": {"erp_customer_number": "10000"},
                }
            },
            "customers.globex.erp_customer_number: 10000 is also the customer of tenant 'acme'; each tenant "
            "is billed as its own customer",
            id="shared-number",
        ),
        pytest.param(
            {"posting": {"totals_tolerance": "1.50"}},
            "posting.totals_tolerance: '1.50' does not match '^0\\\\.[0-9]{2}$'",
            id="tolerance",
        ),
    ],
)
def test_invalid_policy_names_file_key_and_problem(
    tmp_path: Path, change: dict[str, Any], problem: str
) -> None:
    path = _write(tmp_path, change)
    with pytest.raises(PolicyError, match=exactly(f"invalid invoicing policy:\n  {path}: {problem}")):
        load_invoicing_file(path, tenants=["acme", "globex"])


def test_a_tenant_without_customer_number_cannot_be_invoiced() -> None:
    with pytest.raises(PolicyError, match=r"tenant 'secops' has no ERP customer number in .*invoicing\.yaml"):
        load_invoicing().customer_number("secops")


# --- the request -------------------------------------------------------------------------------


def test_request_from_params() -> None:
    request = MilestoneRequest.from_params(PARAMS)
    assert (request.customer_number, request.period_end, request.export_format) == (
        "10000",
        date(2026, 10, 31),
        "csv",
    )
    assert request.external_reference == "ACME/CT-2026-001/M1"
    assert request.archive_prefix == "invoices/acme/CT-2026-001/M1/"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        pytest.param({"milestone_id": None}, "missing: milestone_id", id="missing"),
        pytest.param({"tenant": "initech"}, "tenant 'initech' has no ERP customer number", id="tenant"),
        pytest.param(
            {"period_end": "2026-09-30"}, "the period ends (2026-09-30) before it starts", id="order"
        ),
        pytest.param({"period_end": "2027-10-31"}, "the period is 396 days long", id="long"),
        pytest.param(
            {"period_start": "1 Oct"}, "period_start '1 Oct' is not a date like 2026-10-31", id="date"
        ),
        pytest.param({"contract_id": "ct 1"}, "contract_id 'ct 1' is not valid", id="contract"),
        pytest.param(
            {"export_key": "exports/x.xlsx"}, "export_key 'exports/x.xlsx' is not valid", id="export"
        ),
    ],
)
def test_bad_request_is_refused_with_its_reason(change: dict[str, Any], message: str) -> None:
    with pytest.raises(InvoiceRequestError, match=re.escape(message)):
        MilestoneRequest.from_params({**PARAMS, **change})


def test_external_reference_fits_business_central_and_stays_unique() -> None:
    short = external_reference("acme", "CT-1", "M1")
    long_a = external_reference("acme", "CT-2026-000000000001", "MILESTONE-01")
    long_b = external_reference("acme", "CT-2026-000000000001", "MILESTONE-02")
    assert short == "ACME/CT-1/M1"
    assert len(long_a) == len(long_b) == MAX_REFERENCE
    assert long_a.startswith("ACME/CT-2026-000000000001")
    assert long_a != long_b
    assert long_a == external_reference("acme", "CT-2026-000000000001", "MILESTONE-01")


# --- totals ------------------------------------------------------------------------------------


def test_invoice_totals_round_vat_per_rate_on_the_total() -> None:
    # Three lines of 10.05 at 19 %: per line 1.91 (1.9095) each = 5.73; on the total 30.15 x 0.19 =
    # 5.7285 -> 5.73.
    # Two lines of 0.05 at 7 %: per line 0.00 (0.0035) each; on the total 0.10 x 0.07 = 0.007 -> 0.01.
    totals = Totals(
        "EUR",
        net=Decimal("30.25"),
        vat=Decimal("5.73"),
        gross=Decimal("35.98"),
        lines=5,
        by_vat_rate={"0.07": (Decimal("0.10"), Decimal("0.00")), "0.19": (Decimal("30.15"), Decimal("5.73"))},
    )
    result = invoice_totals(totals)
    assert (result["net"], result["vat"], result["gross"], result["line_vat"]) == (
        "30.25",
        "5.74",
        "35.99",
        "5.73",
    )
    assert result["by_vat_rate"] == {
        "0.07": {"net": "0.10", "vat": "0.01"},
        "0.19": {"net": "30.15", "vat": "5.73"},
    }


# --- validation --------------------------------------------------------------------------------


def test_validation_refuses_lines_of_another_customer_and_passes_a_clean_export() -> None:
    request = MilestoneRequest.from_params(PARAMS)
    clean = HEADER + "L-1,acme,P,2026-10-02,Monitoring,1,100.00,EUR,0.19\n"
    mixed = (
        clean
        + "L-2,globex,P,2026-10-03,Monitoring,2,50.00,GBP,0.2\nL-3,globex,P,2026-10-04,IR,1,5.00,GBP,0.2\n"
    )

    passed = validate_export(clean.encode(), request, known_customers=["acme", "globex"])
    refused = validate_export(mixed.encode(), request, known_customers=["acme", "globex"])

    assert (passed.success, passed.problems, passed.line_count) == (True, (), 1)
    assert "run_seconds" not in passed.archive_document()["suite"]
    assert refused.success is False
    assert refused.problems == (
        "2 lines (L-2, L-3) are for customer globex, but this invoice is for acme (contract CT-2026-001, "
        "milestone M1); the export must hold this milestone's lines only",
    )
    unreadable = validate_export(b"line_id;amount\n1;2\n", request, known_customers=["acme"])
    assert unreadable.result is None
    assert unreadable.problems[0].startswith(
        "the export cannot be read as billable lines: the CSV header is wrong"
    )


# --- what finance reads ------------------------------------------------------------------------


def test_approval_body_shows_totals_and_escapes_psa_text() -> None:
    request = MilestoneRequest.from_params(PARAMS).as_xcom()
    totals = {
        "currency": "EUR",
        "net": "1234.50",
        "vat": "234.56",
        "gross": "1469.06",
        "lines": 1,
        "by_vat_rate": {"0.19": {"net": "1234.50", "vat": "234.56"}},
        "line_vat": "234.56",
    }
    line = {
        "line_id": "L-1",
        "date": "2026-10-02",
        "project": "P|1",
        "description": "[click](http://evil.example)",
        "quantity": "1",
        "unit_price": "1234.50",
        "vat_rate": "0.19",
        "net": "1234.50",
    }
    body = approval_body(
        request,
        customer_name="ACME Corp",
        totals=totals,
        lines=[line],
        export_uri="s3://b/k.csv",
        export_sha256="ab" * 32,
        existing=None,
        tolerance="0.01",
    )
    assert "**EUR 1,469.06** gross, 1 line." in body
    assert "| VAT 19 % on 1,234.50 | 234.56 |" in body
    assert "\\[click\\]\\(http://evil.example\\)" in body
    assert "P\\|1" in body
    assert "`ACME/CT-2026-001/M1`" in body
    assert "within EUR 0.01" in body
    assert erp_state_sentence({"number": "103001", "status": "Open"}).startswith(
        "already posted as invoice 103001"
    )


def test_outcome_comment_says_why_nothing_was_posted() -> None:
    request = MilestoneRequest.from_params(PARAMS).as_xcom()
    timed_out = {"outcome": "timed_out", "responded_by": None, "comment": None}
    rejected = {"outcome": "rejected", "responded_by": {"name": "fiona"}, "comment": "wrong rate"}
    common: dict[str, Any] = {"created": None, "posted": None, "archived": None}
    assert outcome_comment(request, approval=timed_out, **common) == (
        "Invoice ACME/CT-2026-001/M1 was not posted: nobody answered the finance approval in time "
        "(fail-safe: rejected). Nothing was created in Business Central by this run."
    )
    assert 'fiona rejected it ("wrong rate")' in outcome_comment(request, approval=rejected, **common)
