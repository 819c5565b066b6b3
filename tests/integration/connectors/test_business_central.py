"""The Business Central connector against the in-memory Business Central/Entra ID stand-in.

No network beyond 127.0.0.1 and no PostgreSQL: the connection (an ``AIRFLOW_CONN_<ID>`` JSON env
variable, as Airflow reads it) carries no rate limit, so the hook's shared limiter is off, and
retries back off from 0.05 s (a ``Retry-After`` still wins).
"""

from __future__ import annotations

import os
import tempfile

# Airflow reads its configuration when first imported: keep it away from any real installation.
if "AIRFLOW_HOME" not in os.environ:
    os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="orchestrator-itest-airflow-")
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")

import itertools
import json
import logging
import time
from collections.abc import Callable, Iterator
from datetime import date
from decimal import Decimal
from typing import Any

import pytest
import requests

from devstack.standins.erp import API_SCOPE, BusinessCentralStandIn
from include.connectors.erp.business_central import (
    BusinessCentralHook,
    InvoiceLine,
    InvoiceTotals,
    json_number,
    odata_string,
)
from include.connectors.errors import PermanentError, RetryBudgetExhausted
from tests.support.hooks import CaplogLog, closing_hooks

TENANT = "acme"
CUSTOMER = "10000"
LOGGER = "tests.integration.erp_connector"
REFERENCE = "MS-2026-04-acme"
_conn_ids = itertools.count(1)


class StandInBusinessCentralHook(CaplogLog, BusinessCentralHook):
    """The connector as is; only ``self.log`` is a stdlib logger so that ``caplog`` sees it."""

    log_name = LOGGER


@pytest.fixture
def bc() -> Iterator[BusinessCentralStandIn]:
    with BusinessCentralStandIn() as standin:
        yield standin


@pytest.fixture
def make_hook(
    bc: BusinessCentralStandIn, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., StandInBusinessCentralHook]]:
    """A hook on a fresh ``AIRFLOW_CONN_ERP_BC_<n>`` connection to the stand-in."""

    def make(
        *, password: str | None = None, login: str | None = None, **extras: Any
    ) -> StandInBusinessCentralHook:
        conn_id = f"erp_bc_{next(_conn_ids)}"
        extra = {
            "company_id": bc.company_id,
            "aad_tenant_id": bc.aad_tenant_id,
            "environment": bc.environment,
            "token_url": bc.token_url,
            "tax_codes": {"0": "ZERO", "0.07": "REDUCED", "0.19": "STANDARD", "0.2": "UK20"},
            "line_object_number": "8400",
            "local_currency": "EUR",
            "retry_base_delay": 0.05,
            "retry_max_delay": 0.2,
            "timeout_seconds": 5,
            **extras,
        }
        connection = {
            "conn_type": "http",
            "host": "127.0.0.1",
            "port": bc.port,
            "schema": "http",
            "login": bc.client_id if login is None else login,
            "password": bc.client_secret if password is None else password,
            "extra": extra,
        }
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(connection))
        return StandInBusinessCentralHook(conn_id, tenant=TENANT)

    with closing_hooks(make) as tracked:
        yield tracked


@pytest.fixture
def hook(make_hook: Callable[..., StandInBusinessCentralHook]) -> StandInBusinessCentralHook:
    return make_hook()


def _token_request(bc: BusinessCentralStandIn, *, scope: str = API_SCOPE) -> requests.Response:
    """The stand-in's OAuth2 client-credentials grant, asked directly (not through the hook)."""
    return requests.post(
        bc.token_url,
        data={
            "grant_type": "client_credentials",
            "client_id": bc.client_id,
            "client_secret": bc.client_secret,
            "scope": scope,
        },
        timeout=5,
    )


def _lines(count: int = 3, *, rate: str = "0.19") -> list[dict[str, Any]]:
    return [
        {
            "line_id": f"L-{n}",
            "description": f"SOC monitoring, April 2026, site {n}",
            "quantity": Decimal("1.5") * n,
            "unit_price": Decimal("120.50"),
            "vat_rate": Decimal(rate),
        }
        for n in range(1, count + 1)
    ]


def _create(hook: BusinessCentralHook, reference: str = REFERENCE, **kwargs: Any) -> Any:
    return hook.create_invoice(
        kwargs.pop("customer_number", CUSTOMER),
        reference,
        kwargs.pop("lines", _lines()),
        kwargs.pop("currency", "EUR"),
        kwargs.pop("invoice_date", date(2026, 4, 30)),
    )


def _secrets(bc: BusinessCentralStandIn) -> list[str]:
    return [bc.client_secret, *bc.issued_tokens]


# --- the happy path ----------------------------------------------------------------------------
def test_create_invoice_creates_a_draft_with_its_lines(
    hook: StandInBusinessCentralHook, bc: BusinessCentralStandIn
) -> None:
    result = _create(hook)

    assert result.created is True
    assert (result.status, result.lines_created, result.lines_total) == ("Draft", 3, 3)
    (invoice,) = bc.invoices_with_reference(REFERENCE)
    assert result.id == invoice["id"]
    assert result.number == invoice["number"] == "S-INV1001"
    assert invoice["customerNumber"] == CUSTOMER
    assert invoice["currencyCode"] == "EUR"
    assert invoice["invoiceDate"] == "2026-04-30"
    lines = bc.lines_of(result.id)
    assert [line["description"] for line in lines] == [
        "[L-1] SOC monitoring, April 2026, site 1",
        "[L-2] SOC monitoring, April 2026, site 2",
        "[L-3] SOC monitoring, April 2026, site 3",
    ]
    assert [(line["lineType"], line["lineObjectNumber"], line["taxCode"]) for line in lines] == [
        ("Account", "8400", "STANDARD")
    ] * 3
    assert [line["quantity"] for line in lines] == [Decimal("1.5"), Decimal("3.0"), Decimal("4.5")]
    # 9 x 120.50 = 1084.50 net; 19 % VAT on the document total = 206.055 -> 206.06
    assert result.totals == InvoiceTotals("EUR", Decimal("1084.50"), Decimal("206.06"), Decimal("1290.56"))
    assert isinstance(result.totals.net, Decimal)
    assert result.as_dict()["totals"] == {
        "currency": "EUR",
        "net": "1084.50",
        "tax": "206.06",
        "gross": "1290.56",
    }
    assert hook.retry_count == 0
    assert hook.token_requests == 1
    assert [r.status for r in bc.requests_to("POST", "/salesInvoiceLines")] == [201, 201, 201]


def test_same_reference_five_times_is_one_invoice_with_the_same_lines(
    hook: StandInBusinessCentralHook, bc: BusinessCentralStandIn
) -> None:
    results = [_create(hook) for _ in range(5)]

    assert [r.created for r in results] == [True, False, False, False, False]
    assert [r.lines_created for r in results] == [3, 0, 0, 0, 0]
    assert len({r.id for r in results}) == 1
    assert len({r.totals for r in results}) == 1
    assert len(bc.invoices) == 1
    assert len(bc.lines_of(results[0].id)) == 3
    assert len(bc.requests_to("POST", "/salesInvoices")) == 1 + 3  # the header, then 3 lines, once
    searches = [r for r in bc.requests_to("GET", "/salesInvoices") if "$filter" in r.query]
    assert searches[0].query["$filter"] == [f"externalDocumentNumber eq '{REFERENCE}'"]


def test_local_currency_is_sent_blank_and_foreign_currency_by_code(
    hook: StandInBusinessCentralHook, bc: BusinessCentralStandIn
) -> None:
    eur = _create(hook, "MS-EUR")
    usd = _create(hook, "MS-USD", currency="usd", lines=_lines(1, rate="0"))
    assert (eur.totals.currency, usd.totals.currency) == ("EUR", "USD")
    assert bc.invoices[usd.id]["currencyId"] == bc.currencies["USD"]
    assert usd.totals.tax == Decimal(0)


# --- failures on the way -----------------------------------------------------------------------
def test_lost_response_on_create_is_found_not_repeated(
    hook: StandInBusinessCentralHook, bc: BusinessCentralStandIn
) -> None:
    bc.lose_responses(1, path_contains="/salesInvoices", method="POST")

    result = _create(hook)

    assert len(bc.invoices) == 1
    assert result.created is False  # the answer was lost; the retry's search found it
    assert result.lines_created == 3
    headers = [r for r in bc.requests_to("POST") if r.path.endswith("/salesInvoices")]
    assert [(r.status, r.lost) for r in headers] == [(201, True)]
    assert hook.retry_count == 1


def test_lost_response_on_a_line_does_not_duplicate_it(
    hook: StandInBusinessCentralHook, bc: BusinessCentralStandIn
) -> None:
    bc.lose_responses(1, path_contains="/salesInvoiceLines", skip=1)  # the second line's answer

    result = _create(hook)

    descriptions = [line["description"][:5] for line in bc.lines_of(result.id)]
    assert descriptions == ["[L-1]", "[L-2]", "[L-3]"]
    assert result.lines_created == 3
    assert len(bc.requests_to("POST", "/salesInvoiceLines")) == 3
    assert hook.retry_count == 1


def test_429_waits_for_retry_after_then_succeeds(
    hook: StandInBusinessCentralHook, bc: BusinessCentralStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    bc.throttle(1, retry_after=1)

    started = time.monotonic()
    result = _create(hook)
    elapsed = time.monotonic() - started

    assert result.created is True
    assert elapsed >= 1.0
    statuses = [r.status for r in bc.requests if "/oauth2/" not in r.path]
    assert statuses[0] == 429
    assert 429 not in statuses[1:]
    api = [r for r in bc.requests if "/oauth2/" not in r.path]
    waited = api[1].at - api[0].at
    print(f"\nRetry-After: 1 s; waited {waited:.3f} s between the 429 and the retry")
    assert waited >= 1.0
    # (the other warning possible here: this test has no shared store to lock creates in)
    (warning,) = [
        r for r in caplog.records if r.levelno == logging.WARNING and "no shared store" not in r.getMessage()
    ]
    assert "attempt 1 failed" in warning.getMessage()
    assert "HTTP 429: Application_TooManyRequests: Too many requests reached." in warning.getMessage()
    assert hook.retry_count == 1


def test_429_without_retry_after_backs_off(
    hook: StandInBusinessCentralHook, bc: BusinessCentralStandIn
) -> None:
    bc.throttle(2, retry_after=None)  # Business Central does not promise the header
    waits: list[float] = []
    log_retry = hook._log_retry

    def record(attempt: int, wait: float, error: BaseException) -> None:
        waits.append(wait)
        log_retry(attempt, wait, error)

    hook._log_retry = record  # type: ignore[method-assign]
    assert _create(hook).created is True
    # The waits the retry chose (not wall time, which a busy machine stretches): full-jitter
    # backoff capped at retry_max_delay 0.2 s, not some fixed default for a missing header.
    assert len(waits) == 2
    assert all(0.0 <= wait <= 0.2 for wait in waits), waits
    assert hook.retry_count == 2


def test_5xx_is_retried(hook: StandInBusinessCentralHook, bc: BusinessCentralStandIn) -> None:
    bc.fail(2, status=503, method="POST", path_contains="/salesInvoices")
    bc.fail(1, status=502, method="GET")

    result = _create(hook)

    assert result.created is True
    assert len(bc.invoices) == 1
    assert len(bc.lines_of(result.id)) == 3
    assert hook.retry_count == 3
    assert [r.status for r in bc.requests_to("POST", "/salesInvoices")][:2] == [503, 503]


def test_400_fails_at_once_with_the_service_message(
    hook: StandInBusinessCentralHook, bc: BusinessCentralStandIn
) -> None:
    with pytest.raises(PermanentError) as raised:
        _create(hook, customer_number="99999")

    message = str(raised.value)
    assert raised.value.status == 400
    assert (
        "Internal_RecordNotFound: The Customer does not exist. Identification fields and values: No.='99999'"
        in message
    )
    assert "CorrelationId" in message
    assert hook.retry_count == 0
    assert bc.invoices == {}
    assert len(bc.requests_to("POST", "/salesInvoices")) == 1

    with pytest.raises(
        PermanentError, match=r"HTTP 400: Internal_InvalidTableRelation: The field Currency Code"
    ):
        _create(hook, "MS-JPY", currency="JPY")
    assert hook.retry_count == 0


def test_partial_lines_then_rerun_completes_without_duplicates(
    make_hook: Callable[..., StandInBusinessCentralHook],
    bc: BusinessCentralStandIn,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    hook = make_hook(retry_max_attempts=2)
    lines = _lines(5)
    bc.fail(
        10, status=503, method="POST", path_contains="/salesInvoiceLines", skip=2
    )  # an outage after 2 lines

    with pytest.raises(RetryBudgetExhausted):
        _create(hook, lines=lines)

    (invoice,) = bc.invoices.values()
    assert invoice["status"] == "Draft"
    assert [line["description"][:5] for line in invoice["_lines"]] == ["[L-1]", "[L-2]"]
    assert "stays a draft with 2 of 5 lines; a rerun adds the rest" in caplog.text

    bc.clear_faults()
    rerun = make_hook()  # the task's next try: a new process, a new hook
    result = _create(rerun, lines=lines)

    assert (result.created, result.id, result.lines_created, result.lines_total) == (
        False,
        invoice["id"],
        3,
        5,
    )
    assert [line["description"][:5] for line in bc.lines_of(result.id)] == [
        "[L-1]",
        "[L-2]",
        "[L-3]",
        "[L-4]",
        "[L-5]",
    ]
    assert len(bc.invoices) == 1
    assert _create(rerun, lines=lines).lines_created == 0


def test_a_line_that_changed_since_is_not_silently_kept(
    hook: StandInBusinessCentralHook, bc: BusinessCentralStandIn
) -> None:
    result = _create(hook)
    changed = _lines()
    changed[1]["quantity"] = Decimal("4")
    with pytest.raises(PermanentError, match=r"already has line L-2 with quantity 3 x 120.5, not 4 x 120.50"):
        _create(hook, lines=changed)
    assert len(bc.lines_of(result.id)) == 3


def test_reference_of_another_customer_is_refused(
    hook: StandInBusinessCentralHook, bc: BusinessCentralStandIn
) -> None:
    _create(hook)
    with pytest.raises(PermanentError, match=r"already used by invoice S-INV1001 for customer 10000 in EUR"):
        _create(hook, customer_number="20000")
    assert len(bc.invoices) == 1


def test_inputs_are_checked_before_anything_is_sent(
    hook: StandInBusinessCentralHook, bc: BusinessCentralStandIn
) -> None:
    with pytest.raises(ValueError, match="must be 1-35 characters"):
        _create(hook, "R" * 36)
    with pytest.raises(ValueError, match=r"no Business Central tax code for VAT rate 0\.25"):
        _create(hook, lines=_lines(1, rate="0.25"))
    with pytest.raises(ValueError, match=r"repeated: L-1"):
        _create(hook, lines=_lines(1) * 2)
    with pytest.raises(ValueError, match="cannot be sent exactly"):
        json_number(Decimal("0.12345678901234567"))
    assert bc.requests == []


def test_reference_with_a_quote_is_an_odata_literal(
    hook: StandInBusinessCentralHook, bc: BusinessCentralStandIn
) -> None:
    assert odata_string("O'Brien") == "'O''Brien'"
    result = _create(hook, "MS-O'Brien-04")
    found = hook.get_invoice_by_reference("MS-O'Brien-04")
    assert found is not None
    assert found.id == result.id
    assert hook.get_invoice_by_reference("MS-O'Brien") is None


def test_lines_are_read_across_pages(hook: StandInBusinessCentralHook, bc: BusinessCentralStandIn) -> None:
    bc.page_size = 2
    result = _create(hook, lines=_lines(5))
    assert result.lines_created == 5
    assert len(hook.get_invoice_lines(result.id)) == 5
    assert _create(hook, lines=_lines(5)).lines_created == 0
    assert any("$skiptoken" in r.query for r in bc.requests_to("GET", "/salesInvoiceLines"))


def test_get_customer_by_number(hook: StandInBusinessCentralHook, bc: BusinessCentralStandIn) -> None:
    customer = hook.get_customer(CUSTOMER)
    assert customer is not None
    assert (customer.number, customer.name, customer.blocked) == (CUSTOMER, "ACME Corp", "")
    assert customer.invoicing_blocked is False
    assert hook.get_customer("99999") is None
    bc.customers[CUSTOMER]["blocked"] = "Invoice"
    assert hook.get_customer(CUSTOMER).invoicing_blocked is True  # type: ignore[union-attr]
    (search, *_) = bc.requests_to("GET", "/customers")
    assert search.query["$filter"] == [f"number eq '{CUSTOMER}'"]


# --- posting -------------------------------------------------------------------------------------
def test_post_invoice_posts_once(hook: StandInBusinessCentralHook, bc: BusinessCentralStandIn) -> None:
    draft = _create(hook)
    approved = {"currency": "EUR", "net": "1084.50", "vat": "206.06", "gross": "1290.56"}

    posted = hook.post_invoice(draft.id, expected_totals=approved)
    again = hook.post_invoice(draft.id)

    assert (posted.posted, posted.status, posted.id) == (True, "Open", draft.id)
    assert posted.number == "103001" != draft.number
    assert (again.posted, again.number) == (False, "103001")
    assert bc.post_actions == 1
    # posted invoices are still found by reference, so a late rerun of the create changes nothing
    rerun = _create(hook)
    assert (rerun.created, rerun.id, rerun.status, rerun.lines_created) == (False, draft.id, "Open", 0)


def test_lost_response_on_post_is_not_posted_twice(
    hook: StandInBusinessCentralHook, bc: BusinessCentralStandIn
) -> None:
    draft = _create(hook)
    bc.lose_responses(1, path_contains="Microsoft.NAV.post")
    result = hook.post_invoice(draft.id)
    assert (result.posted, result.status) == (False, "Open")
    assert bc.post_actions == 1


def test_post_refuses_totals_other_than_approved(
    hook: StandInBusinessCentralHook, bc: BusinessCentralStandIn
) -> None:
    # 3 x 0.13 at 19 %: VAT per line rounds to 0.02 each (0.06); on the document total 0.0741 -> 0.07
    lines = [
        {
            "line_id": f"C-{n}",
            "description": "alert triage",
            "quantity": 1,
            "unit_price": "0.13",
            "vat_rate": "0.19",
        }
        for n in range(3)
    ]
    draft = _create(hook, lines=lines)
    per_line = InvoiceTotals("EUR", Decimal("0.39"), Decimal("0.06"), Decimal("0.45"))
    assert draft.totals == InvoiceTotals("EUR", Decimal("0.39"), Decimal("0.07"), Decimal("0.46"))

    with pytest.raises(
        PermanentError, match=r"tax 0.07 \(approved 0.06\); gross 0.46 \(approved 0.45\); not posted"
    ):
        hook.post_invoice(draft.id, expected_totals=per_line)
    assert bc.post_actions == 0
    assert hook.post_invoice(draft.id, expected_totals=per_line, tolerance="0.01").posted is True


def test_an_empty_draft_cannot_be_posted(
    hook: StandInBusinessCentralHook, bc: BusinessCentralStandIn
) -> None:
    token = _token_request(bc).json()["access_token"]
    created = requests.post(
        f"{bc.base_url}{bc.api_path}/companies({bc.company_id})/salesInvoices",
        json={"customerNumber": CUSTOMER, "externalDocumentNumber": "EMPTY"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=5,
    )
    assert created.status_code == 201
    with pytest.raises(PermanentError, match=r"Application_DialogException: There is nothing to post\."):
        hook.post_invoice(created.json()["id"])


# --- credentials -----------------------------------------------------------------------------------
def test_token_is_renewed_before_it_expires(
    make_hook: Callable[..., StandInBusinessCentralHook], bc: BusinessCentralStandIn
) -> None:
    bc.token_ttl = 2  # renewed at half its lifetime
    hook = make_hook()
    result = _create(hook)
    time.sleep(1.1)
    assert hook.get_invoice(result.id).id == result.id
    assert hook.token_requests == 2
    assert all(r.status != 401 for r in bc.requests)


def test_token_endpoint_outage_is_retried(
    hook: StandInBusinessCentralHook, bc: BusinessCentralStandIn
) -> None:
    bc.fail(1, status=503, token_endpoint=True)
    assert _create(hook).created is True
    assert (hook.token_requests, hook.retry_count) == (2, 1)


def test_wrong_secret_fails_at_once_with_entra_message(
    make_hook: Callable[..., StandInBusinessCentralHook], bc: BusinessCentralStandIn
) -> None:
    hook = make_hook(password="not-the-secret-" + bc.client_secret[::-1])
    with pytest.raises(PermanentError) as raised:
        _create(hook)
    assert raised.value.status == 401
    assert "invalid_client: AADSTS7000215: Invalid client secret provided." in str(raised.value)
    assert hook.retry_count == 0
    assert bc.invoices == {}
    assert [r.path.endswith("/oauth2/v2.0/token") for r in bc.requests] == [True]


def test_credentials_never_appear_in_logs_or_errors(
    make_hook: Callable[..., StandInBusinessCentralHook],
    bc: BusinessCentralStandIn,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)  # the hook's records and urllib3's request lines
    hook = make_hook()
    bc.throttle(1, retry_after=1)
    bc.lose_responses(1, path_contains="/salesInvoiceLines")
    result = _create(hook)
    hook.post_invoice(result.id)
    wrong = "wrong-" + bc.client_secret[::-1]
    errors: list[str] = []
    for call in (
        lambda: _create(hook, "MS-X", customer_number="99999"),
        lambda: hook.get_invoice("00000000-0000-0000-0000-000000000001"),
        lambda: _create(make_hook(password=wrong)),
        lambda: _create(make_hook(auth="bearer_token", password=bc.issued_tokens[0][::-1])),
    ):
        with pytest.raises(PermanentError) as raised:
            call()
        errors.append(f"{raised.value!s} {raised.value!r} {raised.value.__cause__!r}")

    out, err = capfd.readouterr()
    assert hook.retry_count == 2
    assert len(caplog.records) > 5
    assert "Internal_RecordNotFound" in errors[1]
    assert "Authentication_InvalidCredentials" in errors[3]
    for secret in [*_secrets(bc), wrong, bc.issued_tokens[0][::-1]]:
        assert secret not in caplog.text
        assert all(secret not in error for error in errors)
        assert secret not in out + err


def test_the_same_lines_from_a_validated_export(
    hook: StandInBusinessCentralHook, bc: BusinessCentralStandIn
) -> None:
    """Lines straight from include.validation (typed BillableLine objects) are accepted as they are."""
    from include.validation.billable_lines import validate_billable_lines

    export = [
        {
            "line_id": f"L-{n}",
            "customer_id": "acme",
            "project": "SOC",
            "date": "2026-04-10",
            "description": f"analyst hours {n}",
            "quantity": "2",
            "unit_price": "95.00",
            "currency": "EUR",
            "vat_rate": "0.19",
        }
        for n in range(1, 4)
    ]
    checked = validate_billable_lines(
        export, known_customers=["acme"], period_start=date(2026, 4, 1), period_end=date(2026, 4, 30)
    )
    assert checked.success, checked.summary
    (approved,) = checked.invoices or ()
    result = _create(hook, lines=checked.lines_for("acme"))
    assert result.totals == InvoiceTotals.from_mapping(approved.totals.as_dict())
    assert InvoiceLine.of(checked.lines[0]).reference == "L-1"


# --- the stand-in keeps Microsoft's contract ----------------------------------------------------
def test_standin_contract(bc: BusinessCentralStandIn) -> None:
    api = f"{bc.base_url}{bc.api_path}/companies({bc.company_id})"
    anonymous = requests.get(f"{api}/salesInvoices", timeout=5)
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["code"] == "Authentication_InvalidCredentials"

    bad_scope = _token_request(bc, scope="x")
    assert bad_scope.status_code == 400
    assert bad_scope.json()["error"] == "invalid_scope"
    assert bad_scope.json()["error_description"].startswith("AADSTS1002012:")
    token = _token_request(bc).json()
    assert (token["token_type"], token["expires_in"]) == ("Bearer", 3599)
    auth = {"Authorization": f"Bearer {token['access_token']}"}

    companies = requests.get(f"{bc.base_url}{bc.api_path}/companies", headers=auth, timeout=5).json()
    assert [c["id"] for c in companies["value"]] == [bc.company_id]
    no_customer = requests.post(
        f"{api}/salesInvoices", json={"externalDocumentNumber": "X"}, headers=auth, timeout=5
    )
    assert no_customer.status_code == 400
    assert no_customer.json()["error"]["code"] == "Application_DialogException"
    assert no_customer.json()["error"]["message"].startswith(
        "A customerNumber or a customerID must be provided."
    )
    typo = requests.post(
        f"{api}/salesInvoices",
        json={"customerNumber": CUSTOMER, "externalDocNo": "X"},
        headers=auth,
        timeout=5,
    )
    assert typo.status_code == 400
    assert "The property 'externalDocNo' does not exist on type 'Microsoft.NAV.salesInvoice'" in typo.text
    too_long = requests.post(
        f"{api}/salesInvoices",
        json={"customerNumber": CUSTOMER, "externalDocumentNumber": "X" * 36},
        headers=auth,
        timeout=5,
    )
    assert too_long.json()["error"]["code"] == "Application_StringExceededLength"
    created = requests.post(
        f"{api}/salesInvoices",
        json={"customerNumber": CUSTOMER, "externalDocumentNumber": "A'B"},
        headers=auth,
        timeout=5,
    )
    assert created.status_code == 201
    assert created.json()["status"] == "Draft"
    assert created.json()["@odata.context"].endswith(
        "/$metadata#companies(" + bc.company_id + ")/salesInvoices/$entity"
    )
    found = requests.get(
        f"{api}/salesInvoices",
        params={"$filter": "externalDocumentNumber eq 'A''B'"},
        headers=auth,
        timeout=5,
    ).json()
    assert [i["id"] for i in found["value"]] == [created.json()["id"]]
    unsupported = requests.get(
        f"{api}/salesInvoices", params={"$filter": "contains(number,'1')"}, headers=auth, timeout=5
    )
    assert unsupported.status_code == 400
    bc.throttle(1, retry_after=7)
    limited = requests.get(f"{api}/salesInvoices", headers=auth, timeout=5)
    assert (limited.status_code, limited.headers["Retry-After"]) == (429, "7")
    missing = requests.get(
        f"{api}/salesInvoices(00000000-0000-0000-0000-000000000001)", headers=auth, timeout=5
    )
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "Internal_RecordNotFound")
