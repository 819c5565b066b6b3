"""Milestone invoicing end to end: a PSA export in S3 (moto), the REST trigger the PSA uses, the
Great Expectations validation, a finance controller's approval through the REST API, the invoice
created and posted in Business Central (the stack's stand-in service), the archive in the Object
Lock audit bucket, the invoicing ticket in Request Tracker and the audit trail.

Checked in the target systems, not in our records: invoices and their lines through Business
Central's own API (a client-credentials token, as any client), objects and their locks in S3, the
ticket and its comments in Request Tracker. Five runs for the same milestone leave one invoice with
its lines once; a rejection, a failed validation and an approval nobody answers (an approval drill)
create nothing in the ERP; bad input is refused by the trigger form or by the first step.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from urllib.parse import quote

import pytest
import requests

from devstack.api_client import AirflowApi, ApiError
from devstack.aws_seed import account_client
from devstack.config import REGION
from devstack.invoicing import erp_base_url, erp_identity, erp_token_url, psa_bucket
from devstack.stack import Stack
from devstack.standins.smtp import read_messages
from include.audit.store import AuditStore
from include.connectors.ticketing.request_tracker import RequestTrackerHook
from include.policies.tenants import platform_account_id
from tests.e2e.conftest import sign_up, ticket_texts

DAG = "invoicing_milestone_invoice"
GATE = "approve_invoice_post"
USERS = {"pia_psa_service": ["invoicing_operator"], "fred_finance": ["finance_controller"]}
HEADER = [
    "line_id",
    "customer_id",
    "project",
    "date",
    "description",
    "quantity",
    "unit_price",
    "currency",
    "vat_rate",
]
OCTOBER = {"period_start": "2026-10-01", "period_end": "2026-10-31"}
# (line id, date, description, quantity, unit price, VAT rate): EUR, tenant acme.
LINES = [
    ("L-1", "2026-10-05", "SOC 24x7 monitoring, October", "1", "4500.00", "0.19"),
    ("L-2", "2026-10-12", "Incident response, retainer hours", "6.5", "180.00", "0.19"),
    ("L-3", "2026-10-13", "Forensic analysis of host ws-0042", "3", "210.55", "0.19"),
    ("L-4", "2026-10-20", "Security handbook, printed copies", "12", "24.95", "0.07"),
]
TOKEN_PREFIX = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9."  # every token the stand-in issues starts so


# --- the systems, as their own clients see them --------------------------------------------------
class BusinessCentral:
    """Business Central's API read as any client would: a client-credentials token, then OData GETs."""

    def __init__(self, stack: Stack) -> None:
        identity = erp_identity(stack.profile)
        self.secret = identity.client_secret
        token = requests.post(
            erp_token_url(stack.profile),
            data={
                "grant_type": "client_credentials",
                "client_id": identity.client_id,
                "client_secret": self.secret,
                "scope": "https://api.businesscentral.dynamics.com/.default",
            },
            timeout=10,
        )
        token.raise_for_status()
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
        self.api = (
            f"{erp_base_url(stack.profile)}/v2.0/{identity.aad_tenant_id}/production/api/v2.0/"
            f"companies({identity.company_id})"
        )

    def _get(self, path: str) -> Any:
        response = self.session.get(f"{self.api}/{path}", timeout=10)
        response.raise_for_status()
        return response.json(parse_float=Decimal)

    def invoices(self, reference: str) -> list[dict[str, Any]]:
        literal = quote(f"externalDocumentNumber eq '{reference}'", safe="")
        return list(self._get(f"salesInvoices?$filter={literal}")["value"])

    def lines(self, invoice_id: str) -> list[dict[str, Any]]:
        return list(self._get(f"salesInvoices({invoice_id})/salesInvoiceLines")["value"])


@pytest.fixture(scope="module")
def users(stack: Stack, api: AirflowApi) -> dict[str, AirflowApi]:
    api.wait_for_dags({DAG})
    return sign_up(stack, USERS)


@pytest.fixture(scope="module")
def erp(stack: Stack) -> BusinessCentral:
    return BusinessCentral(stack)


@pytest.fixture(scope="module")
def s3(stack: Stack) -> Any:
    return account_client("s3", platform_account_id(), stack.profile.moto_url, REGION)


@pytest.fixture(scope="module")
def audit(stack: Stack) -> Iterator[AuditStore]:
    with AuditStore(stack.audit_dsn) as store:
        yield store


DRILL_CORRELATION_ID = "corr-e2e-invoice-drill"


@pytest.fixture(scope="module", autouse=True)
def drill(stack: Stack, users: dict[str, AirflowApi], s3: Any) -> str:
    """The approval drill nobody answers, triggered as the module starts (an early drill,
    tests/e2e/conftest.py); its test, last in the module, checks the finished run."""
    key = put_export(stack, s3, "exports/acme/CT-E2E-400/M1.csv", LINES[:1])
    conf = milestone("CT-E2E-400", key, approval_drill=True, correlation_id=DRILL_CORRELATION_ID)
    return users["pia_psa_service"].trigger(DAG, conf)


def put_export(stack: Stack, s3: Any, key: str, rows: Sequence[tuple[str, ...]]) -> str:
    """Write an export as the PSA does: CSV, one billable line per row (acme in EUR unless the row
    ends with another customer and currency)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(HEADER)
    for row in rows:
        line_id, day, description, quantity, price, rate = row[:6]
        customer, currency = row[6:8] if len(row) > 6 else ("acme", "EUR")
        writer.writerow([line_id, customer, "PRJ-1", day, description, quantity, price, currency, rate])
    s3.put_object(Bucket=psa_bucket(stack.profile), Key=key, Body=out.getvalue().encode())
    return key


def milestone(contract: str, key: str, **extra: Any) -> dict[str, Any]:
    return {
        "tenant": "acme",
        "contract_id": contract,
        "milestone_id": "M1",
        **OCTOBER,
        "export_key": key,
        **extra,
    }


def cents(value: Decimal) -> Decimal:
    return value.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def expected_totals(rows: Sequence[tuple[str, ...]]) -> tuple[Decimal, Decimal, Decimal]:
    """Net, VAT and gross as an invoice shows them: VAT per rate on that rate's net total."""
    by_rate: dict[str, Decimal] = {}
    for _, _, _, quantity, price, rate in rows:
        by_rate[rate] = by_rate.get(rate, Decimal(0)) + cents(Decimal(quantity) * Decimal(price))
    net = sum(by_rate.values(), Decimal("0.00"))
    vat = sum((cents(amount * Decimal(rate)) for rate, amount in by_rate.items()), Decimal("0.00"))
    return net, vat, net + vat


def tickets(rt: RequestTrackerHook, reference: str) -> list[Any]:
    return rt._search(f"Subject LIKE 'Invoice {reference}:'", "test_search")


def side_effects(audit: AuditStore, run_id: str) -> dict[str, dict[str, Any]]:
    """operation -> details of the run's side-effect records on the audit trail."""
    return {
        r["details"]["operation"]: r["details"]
        for r in audit.records()
        if r["kind"] == "side_effect" and r["run_id"] == run_id and r["dag_id"] == DAG
    }


def audit_bucket(stack: Stack) -> str:
    return f"orchestrator-audit-{stack.profile.name}"


def approve(users: dict[str, AirflowApi], api: AirflowApi, run_id: str) -> dict[str, Any]:
    request = users["fred_finance"].wait_for_request(DAG, run_id, GATE, timeout=180)
    users["fred_finance"].answer(DAG, run_id, GATE, "Approve", comment="milestone signed off by the customer")
    assert api.wait_for_run(DAG, run_id, timeout=240)["state"] == "success", api.task_states(DAG, run_id)
    return request


# --- the tests -----------------------------------------------------------------------------------
def test_milestone_invoiced_posted_archived_and_four_more_runs_change_nothing(
    stack: Stack,
    api: AirflowApi,
    users: dict[str, AirflowApi],
    erp: BusinessCentral,
    s3: Any,
    rt: RequestTrackerHook,
    audit: AuditStore,
) -> None:
    reference = "ACME/CT-E2E-100/M1"
    conf = milestone("CT-E2E-100", put_export(stack, s3, "exports/acme/CT-E2E-100/M1.csv", LINES))
    net, vat, gross = expected_totals(LINES)
    assert (net, vat, gross) == (Decimal("6601.05"), Decimal("1218.27"), Decimal("7819.32"))

    run_id = users["pia_psa_service"].trigger(DAG, conf)
    request = approve(users, api, run_id)

    # What the controller was asked: customer, totals per rate, lines, the exact file.
    assert request["subject"].startswith(
        f"[invoicing] Approve invoice-post: Post invoice {reference}: EUR 7,819.32 to ACME Corp"
    )
    body = request["body"]
    assert "Invoice **ACME Corp** (Business Central customer **10000**, tenant `acme`)" in body
    assert "**EUR 7,819.32** gross, 4 lines." in body
    assert "| VAT 19 % on 6,301.65 | 1,197.31 |" in body
    assert "| VAT 7 % on 299.40 | 20.96 |" in body
    assert "no invoice with this reference yet" in body
    validated = api.xcom(DAG, run_id, "validate_lines")
    assert validated["export_sha256"] in body

    # Business Central: one posted invoice with the approved totals and the four lines.
    (invoice,) = erp.invoices(reference)
    assert (invoice["status"], invoice["customerNumber"], invoice["currencyCode"]) == ("Open", "10000", "EUR")
    assert (
        invoice["totalAmountExcludingTax"],
        invoice["totalTaxAmount"],
        invoice["totalAmountIncludingTax"],
    ) == (
        net,
        vat,
        gross,
    )
    lines = erp.lines(invoice["id"])
    assert [line["description"] for line in lines] == [f"[{lid}] {text}" for lid, _, text, *_ in LINES]
    assert [line["taxCode"] for line in lines] == ["STANDARD", "STANDARD", "STANDARD", "REDUCED"]

    # The archive: invoice and validation, each locked in COMPLIANCE mode for the legal 10 years.
    archived = api.xcom(DAG, run_id, "archive_invoice")
    assert archived["bucket"] == audit_bucket(stack)
    keys = [item["key"] for item in archived["objects"]]
    assert keys[1] == "invoices/acme/CT-E2E-100/M1/invoice.json"
    assert keys[0].startswith(
        f"invoices/acme/CT-E2E-100/M1/validation-{validated['export_sha256'][:16]}-suite-"
    )
    for key in keys:
        head = s3.head_object(Bucket=archived["bucket"], Key=key)
        assert head["ObjectLockMode"] == "COMPLIANCE"
        assert head["ObjectLockRetainUntilDate"] > datetime.now(UTC) + timedelta(days=3650)
    document = json.loads(s3.get_object(Bucket=archived["bucket"], Key=keys[1])["Body"].read())
    assert (document["erp"]["number"], document["erp"]["invoice_id"]) == (invoice["number"], invoice["id"])
    assert document["erp"]["totals"] == {
        "currency": "EUR",
        "net": "6601.05",
        "tax": "1218.27",
        "gross": "7819.32",
    }
    assert document["export"]["sha256"] == validated["export_sha256"]
    assert document["validation"] == keys[0]
    validation = json.loads(s3.get_object(Bucket=archived["bucket"], Key=keys[0])["Body"].read())
    assert (validation["result"]["success"], validation["result"]["line_count"]) == (True, 4)

    # The ticket: resolved, with the outcome; the audit trail: each side effect with the run's ids.
    ticket_id = str(api.xcom(DAG, run_id, "open_ticket")["id"])
    (ticket,) = tickets(rt, reference)
    assert (ticket.queue, ticket.status) == ("invoicing", "resolved")
    outcome = [
        t for t in ticket_texts(rt, ticket_id) if t.startswith(f"Invoice {invoice['number']} is posted")
    ]
    assert len(outcome) == 1
    assert "gross EUR 7,819.32, 4 lines (created by this run)" in outcome[0]
    assert "Approved by fred_finance" in outcome[0]
    effects = side_effects(audit, run_id)
    assert {"archive_validation", "create_invoice", "post_invoice", "archive_invoice"} <= set(effects)
    assert effects["create_invoice"]["created"] is True
    assert effects["create_invoice"]["capability"] == "invoice-post"
    assert effects["post_invoice"]["number"] == invoice["number"]
    assert effects["archive_invoice"]["object_id"] == f"s3://{archived['bucket']}/{keys[1]}"

    # SCALE-3: the same milestone four more times, each approved: nothing new anywhere.
    runs = [run_id]
    for _ in range(4):
        again = users["pia_psa_service"].trigger(DAG, conf)
        assert "already posted as invoice" in approve(users, api, again)["body"]
        runs.append(again)
    assert len(erp.invoices(reference)) == 1
    assert erp.lines(invoice["id"]) == lines
    created = [api.xcom(DAG, r, "create_invoice") for r in runs]
    assert [(c["created"], c["lines_created"]) for c in created] == [(True, 4)] + [(False, 0)] * 4
    assert [api.xcom(DAG, r, "post_invoice")["posted"] for r in runs] == [True, False, False, False, False]
    again_archived = [api.xcom(DAG, r, "archive_invoice") for r in runs[1:]]
    assert all(not item["written"] for a in again_archived for item in a["objects"][1:])
    assert {o["sha256"] for a in [archived, *again_archived] for o in a["objects"][1:]} == {
        archived["objects"][1]["sha256"]
    }
    assert len(s3.list_object_versions(Bucket=archived["bucket"], Prefix=keys[1])["Versions"]) == 1
    assert len(tickets(rt, reference)) == 1
    assert {str(api.xcom(DAG, r, "open_ticket")["id"]) for r in runs} == {ticket_id}
    assert len({api.xcom(DAG, r, "report")["entry_id"] for r in runs}) == 1

    # No client secret or token in XCom, rendered fields or any log of these runs.
    leaked = []
    for r in runs:
        for ti in api.task_instances(DAG, r):
            path = f"dags/{DAG}/dagRuns/{r}/taskInstances/{ti['task_id']}"
            entries = api.get(f"{path}/xcomEntries")["xcom_entries"]
            values = [api.xcom(DAG, r, ti["task_id"], key=e["key"]) for e in entries]
            text = json.dumps(api.get(path).get("rendered_fields")) + json.dumps(values)
            leaked += [f"{r}/{ti['task_id']}" for needle in (erp.secret, TOKEN_PREFIX) if needle in text]
    logs = [p for p in stack.profile.root.rglob("*") if p.is_file() and p.suffix in (".log", "")]
    logs = [p for p in logs if f"dag_id={DAG}" in str(p) or p.parent == stack.profile.logs]
    assert any(f"dag_id={DAG}" in str(p) for p in logs)
    for path in logs:
        text = path.read_text(errors="replace")
        leaked += [str(path) for needle in (erp.secret, TOKEN_PREFIX) if needle in text]
    assert leaked == []


def test_rejection_creates_nothing_in_the_erp(
    stack: Stack,
    api: AirflowApi,
    users: dict[str, AirflowApi],
    erp: BusinessCentral,
    s3: Any,
    rt: RequestTrackerHook,
) -> None:
    reference = "ACME/CT-E2E-200/M1"
    conf = milestone("CT-E2E-200", put_export(stack, s3, "exports/acme/CT-E2E-200/M1.csv", LINES[:2]))
    run_id = users["pia_psa_service"].trigger(DAG, conf)
    users["fred_finance"].wait_for_request(DAG, run_id, GATE, timeout=180)
    users["fred_finance"].answer(DAG, run_id, GATE, "Reject", comment="wrong rate card, re-export")

    assert api.wait_for_run(DAG, run_id, timeout=240)["state"] == "success"
    states = api.task_states(DAG, run_id)
    assert [states[t] for t in ("create_invoice", "post_invoice", "archive_invoice")] == ["skipped"] * 3
    assert (states["report"], states["close_ticket"], states["report_failure"]) == (
        "success",
        "success",
        "skipped",
    )
    assert erp.invoices(reference) == []
    (ticket,) = tickets(rt, reference)
    assert ticket.status == "rejected"
    texts = ticket_texts(rt, str(ticket.id))
    assert any('fred_finance rejected it ("wrong rate card, re-export")' in t for t in texts)


def test_failed_validation_stops_before_the_erp_and_reports_the_problems(
    stack: Stack,
    api: AirflowApi,
    users: dict[str, AirflowApi],
    erp: BusinessCentral,
    s3: Any,
    rt: RequestTrackerHook,
) -> None:
    reference = "ACME/CT-E2E-300/M1"
    rows = [
        LINES[0],
        (
            "L-2",
            "2026-10-12",
            "Incident response, retainer hours",
            "6.5",
            "180.00",
            "0.25",
        ),  # no such VAT rate
        ("L-3", "2026-10-12", "Incident response, retainer hours", "6.5", "180.00", "0.19"),  # duplicates L-2
        ("L-4", "2026-11-02", "Forensic analysis", "3", "210.00", "0.19"),  # after the period
        ("L-5", "2026-10-20", "Monitoring", "1", "100.00", "0.2", "globex", "GBP"),  # another customer
    ]
    conf = milestone("CT-E2E-300", put_export(stack, s3, "exports/acme/CT-E2E-300/M1.csv", rows))
    run_id = users["pia_psa_service"].trigger(DAG, conf)

    assert api.wait_for_run(DAG, run_id, timeout=240)["state"] == "failed"
    states = api.task_states(DAG, run_id)
    assert (states["validate_lines"], states[GATE], states["create_invoice"]) == (
        "failed",
        "upstream_failed",
        "upstream_failed",
    )
    assert states["report_failure"] == "success"
    assert erp.invoices(reference) == []

    (ticket,) = tickets(rt, reference)
    (comment,) = [t for t in ticket_texts(rt, str(ticket.id)) if "cannot be invoiced" in t]
    assert comment.startswith(
        "The billable lines of milestone M1 (contract CT-E2E-300, tenant acme) cannot be invoiced: "
        "4 problems in 5 lines of s3://"
    )
    assert (
        "- lines L-2 and L-3 are duplicates (same customer, project, date, description, quantity" in comment
    )
    assert "- line L-2 has VAT rate 0.25 (allowed: 0, 0.07, 0.077, 0.081, 0.19, 0.2)" in comment
    assert "- line L-4 is dated 2026-11-02, outside the milestone period 2026-10-01 to 2026-10-31" in comment
    assert "- 1 line (L-5) is for customer globex, but this invoice is for acme" in comment
    assert "Nothing was created in Business Central." in comment

    problems = api.xcom(DAG, run_id, "validate_lines", key="problems")
    key = f"invoices/acme/CT-E2E-300/M1/validation-{problems['export_sha256'][:16]}-suite-"
    (stored,) = s3.list_objects_v2(Bucket=audit_bucket(stack), Prefix=key)["Contents"]
    archived = json.loads(s3.get_object(Bucket=audit_bucket(stack), Key=stored["Key"])["Body"].read())
    assert archived["result"]["success"] is False
    assert archived["result"]["problems"] == problems["problems"]


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param({"tenant": "initech"}, id="unknown-tenant"),
        pytest.param({"tenant": "secops"}, id="tenant-not-invoiceable"),
        pytest.param({"milestone_id": None}, id="missing-field"),
        pytest.param({"period_start": 20261001}, id="wrong-type"),
        pytest.param({"period_end": "31.10.2026"}, id="not-a-date"),
        pytest.param({"export_key": "../etc/passwd"}, id="not-an-export"),
    ],
)
def test_malformed_request_is_refused_by_the_trigger(
    stack: Stack, users: dict[str, AirflowApi], bad: dict[str, Any]
) -> None:
    conf = {
        k: v for k, v in {**milestone("CT-E2E-500", "exports/acme/x.csv"), **bad}.items() if v is not None
    }
    with pytest.raises(ApiError) as refused:
        users["pia_psa_service"].trigger(DAG, conf)
    assert refused.value.status_code == 400


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        pytest.param({"export_key": "exports/acme/CT-E2E-600/none.csv"}, "does not exist", id="no-export"),
        pytest.param(
            {"period_end": "2026-09-30"}, "the period ends (2026-09-30) before it starts", id="period"
        ),
    ],
)
def test_invalid_request_fails_at_the_first_step_before_any_ticket(
    stack: Stack,
    api: AirflowApi,
    users: dict[str, AirflowApi],
    erp: BusinessCentral,
    s3: Any,
    rt: RequestTrackerHook,
    change: dict[str, Any],
    reason: str,
) -> None:
    key = put_export(stack, s3, "exports/acme/CT-E2E-600/M1.csv", LINES[:1])
    run_id = users["pia_psa_service"].trigger(DAG, {**milestone("CT-E2E-600", key), **change})
    assert api.wait_for_run(DAG, run_id, timeout=180)["state"] == "failed"
    states = api.task_states(DAG, run_id)
    assert (states["check_request"], states["open_ticket"], states["report_failure"]) == (
        "failed",
        "upstream_failed",
        "skipped",
    )
    assert reason in api.xcom(DAG, run_id, "check_request", key="failure")["message"]
    assert tickets(rt, "ACME/CT-E2E-600/M1") == []
    assert erp.invoices("ACME/CT-E2E-600/M1") == []


def test_unanswered_approval_drill_times_out_and_creates_nothing(
    stack: Stack, api: AirflowApi, drill: str, erp: BusinessCentral, rt: RequestTrackerHook
) -> None:
    reference = "ACME/CT-E2E-400/M1"
    run_id = drill
    assert api.wait_for_run(DAG, run_id, timeout=300)["state"] == "success"
    record = api.xcom(DAG, run_id, GATE, key="approval")
    assert (record["outcome"], record["approved"], record["responded_by"]) == ("timed_out", False, None)
    assert [s["step"] for s in record["ladder"]] == ["requested", "reminder", "escalation", "timeout"]
    states = api.task_states(DAG, run_id)
    assert [states[t] for t in ("create_invoice", "post_invoice", "archive_invoice")] == ["skipped"] * 3
    assert erp.invoices(reference) == []
    (ticket,) = tickets(rt, reference)
    assert ticket.status == "rejected"
    assert any("nobody answered the finance approval in time" in t for t in ticket_texts(rt, str(ticket.id)))
    subjects = [
        m.subject
        for m in read_messages(stack.profile.maildir)
        if m.message()["X-Orchestrator-Correlation-Id"] == DRILL_CORRELATION_ID
    ]
    assert [any(word in s for s in subjects) for word in ("Reminder", "Escalation", "timed out")] == [
        True
    ] * 3
