"""Microsoft Dynamics 365 Business Central (online) over its standard REST API v2.0.

Calls made (``{api}`` = ``https://api.businesscentral.dynamics.com/v2.0/{aad tenant}/{environment}/api/v2.0``,
``{c}`` = ``companies({company id})``):

- ``GET {api}/{c}/customers?$filter=number eq '<no>'``: a customer by number (exists? blocked?)
- ``GET {api}/{c}/salesInvoices?$filter=externalDocumentNumber eq '<ref>'``: find by reference (200,
  ``{"value": [...]}``, paged with ``@odata.nextLink``)
- ``GET {api}/{c}/salesInvoices({id})``: one invoice
- ``POST {api}/{c}/salesInvoices``: create the header (201, ``status`` ``Draft``)
- ``GET {api}/{c}/salesInvoices({id})/salesInvoiceLines``: its lines
- ``POST {api}/{c}/salesInvoices({id})/salesInvoiceLines``: add a line (201)
- ``POST {api}/{c}/salesInvoices({id})/Microsoft.NAV.post``: the bound action ``post`` (204)

Errors come as ``{"error": {"code", "message"}}`` (``Application_DialogException``,
``Internal_RecordNotFound``, ...) and are reported as ``code: message``.

Authentication: OAuth 2.0 client credentials against Microsoft Entra ID (``POST
https://login.microsoftonline.com/{aad tenant}/oauth2/v2.0/token``, scope
``https://api.businesscentral.dynamics.com/.default``), then ``Authorization: Bearer <token>``. The
token is fetched on first use, renewed shortly before it expires, registered with Airflow's secrets
masker and never logged; neither is the client secret.

Connection (``business_central_default``): host ``api.businesscentral.dynamics.com`` (schema empty =
https), login = the Entra application (client) id, password = its client secret. Extras, besides the
base's retry/rate-limit/timeout ones:

``company_id`` (required)
    the company's id (GUID), from ``GET {api}/companies``.
``aad_tenant_id``, ``environment``
    the Entra tenant (GUID or domain) and the environment name (default ``production``); they make
    the API path and the token URL.
``base_path`` / ``token_url`` / ``scope``
    overrides of the API path (e.g. on-premises ``/BC/api/v2.0``), the token endpoint and the scope.
``auth``
    ``client_credentials`` (default) or ``bearer_token`` (the password *is* a bearer token; for an
    on-premises service tier in front of a token proxy, or tests).
``tax_codes``
    VAT rate (a fraction as text: ``"0.19"``) -> Business Central ``taxCode`` (the VAT product
    posting group, e.g. ``{"0.19": "STANDARD", "0.07": "REDUCED", "0": "ZERO"}``). Lines carry a
    rate or a tax code; a rate without a code here fails before anything is sent.
``line_type`` / ``line_object_number``
    what the lines book to unless a line says otherwise: ``Account`` (default) with a G/L revenue
    account number, or ``Item``/``Resource`` with its number.
``local_currency``
    the company's local currency (LCY) code. Business Central keeps LCY documents with a blank
    currency code; invoices in this currency are sent with ``currencyCode = ""`` and a blank code
    read back means this currency.

Business Central online allows 6,000 requests per user in a sliding 5-minute window (20/s) and 100
simultaneous requests; set ``rate_limit_per_second`` (e.g. 18) and ``rate_limit_burst`` to stay
under it across workers. Throttling is ``429``, maybe with ``Retry-After`` (honoured when present,
else backoff); a request running over 10 minutes is ``504``; both are retried, and creates are
searched for first (a ``504`` may have committed).

Idempotency, and what a rerun does:

* **Invoice**: the caller's external reference goes into ``externalDocumentNumber`` (at most 35
  characters). :meth:`create_invoice` searches ``$filter=externalDocumentNumber eq '<ref>'`` before
  creating and again before every retry of the create (``create_once``), so a lost response is found
  rather than created twice. ``salesInvoices`` lists drafts and posted invoices alike (a posted
  invoice keeps its id), so the search also finds an invoice posted since. A reference held by an
  invoice for another customer or currency, or by two invoices, is an error, never a guess.
* **Lines**: the header is created first, then the lines one by one. Each line's description
  starts with ``[<line reference>] `` (the billable line id), which is how a rerun recognises the
  lines already there: it lists the invoice's lines, skips those it finds (and fails if one differs
  in quantity or price) and adds the rest, each with search-before-create on retry. If lines fail
  part way, the invoice stays a draft with the lines so far, and the next run completes it without
  duplicating one. Lines added on a rerun come after the existing ones.
* **Posting** is separate (:meth:`post_invoice`): a draft is posted once, after an optional check
  of its totals against the approved ones; a posted invoice is left alone.

Business Central computes the totals (``totalAmountExcludingTax``, ``totalTaxAmount``,
``totalAmountIncludingTax``) itself; they are returned as read back, as exact decimals.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from functools import cached_property
from typing import Any
from urllib.parse import quote

import requests

from include.connectors.base import USER_AGENT, HttpConnectorHook, service_message
from include.connectors.errors import PermanentError, TransientError
from include.connectors.retry import call_with_retries

API_SCOPE = "https://api.businesscentral.dynamics.com/.default"
TOKEN_URL = "https://login.microsoftonline.com/{aad_tenant_id}/oauth2/v2.0/token"  # noqa: S105 - a URL
BASE_PATH = "/v2.0/{aad_tenant_id}/{environment}/api/v2.0"
DRAFT = "Draft"
MAX_EXTERNAL_REFERENCE = 35  # Sales Header "External Document No.", Code[35]
MAX_CUSTOMER_NUMBER = 20  # Customer "No.", Code[20]
MAX_DESCRIPTION = 100  # Sales Line "Description", Text[100]
MAX_LINE_REFERENCE = 40
TOKEN_RENEW_SECONDS = 300  # renew this long before expiry (at most half the token's lifetime)
_LINE_REFERENCE = re.compile(r"^\[([^\]\r\n]+)\] ")
_CURRENCY = re.compile(r"^[A-Z]{3}$")


# --- values --------------------------------------------------------------------------------------
def _decimal(value: Any, name: str) -> Decimal:
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a number, not {value!r}")
    try:
        number = value if isinstance(value, Decimal) else Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"{name} must be a number, not {value!r}") from None
    if not number.is_finite():
        raise ValueError(f"{name} must be a finite number, not {value!r}")
    return number


def _amount(value: Any, name: str) -> Decimal:
    """An amount read back, with at least two decimals (``1084.5`` -> ``1084.50``), never rounded."""
    number = _decimal(value if value is not None else 0, name)
    exponent = number.as_tuple().exponent  # finite: an int (_decimal refuses NaN and infinity)
    return number if isinstance(exponent, int) and exponent < -2 else number.quantize(Decimal("0.01"))


def json_number(value: Decimal) -> int | float:
    """A decimal as a JSON number, refused if a double would not carry it exactly.

    Edm.Decimal travels as a JSON number; integers and up to 15 significant digits survive the
    round trip through a double, which covers quantities and prices with cents.
    """
    if value == value.to_integral_value() and abs(value) < 2**53:
        return int(value)
    as_float = float(value)
    if Decimal(repr(as_float)) != value:
        raise ValueError(f"{value} cannot be sent exactly as a JSON number")
    return as_float


def odata_string(value: str) -> str:
    """An OData string literal: single quotes, an embedded quote doubled."""
    return "'" + value.replace("'", "''") + "'"


def odata_message(response: requests.Response) -> str:
    """Business Central's error text: ``{"error": {"code", "message"}}`` as ``code: message``."""
    try:
        body = response.json()
    except ValueError:
        return service_message(response)
    error = body.get("error") if isinstance(body, Mapping) else None
    if isinstance(error, Mapping) and error.get("message"):
        code = f"{error['code']}: " if error.get("code") else ""
        return f"{code}{error['message']}"[:500]
    if isinstance(error, str):  # Entra ID's token endpoint: {"error", "error_description"}
        description = str(body.get("error_description") or "").splitlines()
        return f"{error}: {description[0] if description else ''}".strip(": ")[:500]
    return service_message(response)


@dataclass(frozen=True)
class InvoiceTotals:
    """An invoice's amounts in its currency: net, tax (VAT) and gross."""

    currency: str
    net: Decimal
    tax: Decimal
    gross: Decimal

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> InvoiceTotals:
        """From ``{"currency", "net", "vat"|"tax", "gross"}`` with amounts as text or numbers (XCom)."""
        tax = values["tax"] if "tax" in values else values["vat"]
        return cls(
            currency=str(values["currency"]),
            net=_decimal(values["net"], "net"),
            tax=_decimal(tax, "tax"),
            gross=_decimal(values["gross"], "gross"),
        )

    def as_dict(self) -> dict[str, str]:
        return {
            "currency": self.currency,
            "net": str(self.net),
            "tax": str(self.tax),
            "gross": str(self.gross),
        }


@dataclass(frozen=True)
class InvoiceLine:
    """One line to invoice. ``reference`` identifies it on the invoice (the billable line id)."""

    reference: str
    description: str
    quantity: Decimal
    unit_price: Decimal
    vat_rate: Decimal | None = None
    tax_code: str | None = None
    line_type: str | None = None
    line_object_number: str | None = None

    @classmethod
    def of(cls, line: InvoiceLine | Mapping[str, Any] | Any) -> InvoiceLine:
        """From an :class:`InvoiceLine`, a mapping or a validated billable line (``line_id``,
        ``description``, ``quantity``, ``unit_price``, ``vat_rate``; ``reference``/``tax_code``/
        ``line_type``/``line_object_number`` optional)."""
        if isinstance(line, InvoiceLine):
            return line
        get = (
            line.get
            if isinstance(line, Mapping)
            else (lambda name, default=None: getattr(line, name, default))
        )
        reference = get("reference") or get("line_id")
        vat_rate = get("vat_rate")
        return cls(
            reference=str(reference or ""),
            description=str(get("description") or ""),
            quantity=_decimal(get("quantity"), "quantity"),
            unit_price=_decimal(get("unit_price"), "unit_price"),
            vat_rate=None if vat_rate is None else _decimal(vat_rate, "vat_rate"),
            tax_code=get("tax_code"),
            line_type=get("line_type"),
            line_object_number=get("line_object_number"),
        )

    @property
    def prefix(self) -> str:
        return f"[{self.reference}] "


@dataclass(frozen=True)
class Customer:
    """A customer as Business Central returns it (the fields invoicing checks)."""

    id: str
    number: str
    name: str
    blocked: str  # "" (not blocked), "Ship", "Invoice" or "All"

    @property
    def invoicing_blocked(self) -> bool:
        """Business Central refuses to post invoices for a customer blocked for "Invoice" or "All"."""
        return self.blocked in ("Invoice", "All")


@dataclass(frozen=True)
class Invoice:
    """A sales invoice as Business Central returns it (the fields the workflow uses)."""

    id: str
    number: str
    external_reference: str
    customer_number: str
    status: str
    invoice_date: str
    totals: InvoiceTotals


@dataclass(frozen=True)
class InvoiceResult:
    """What :meth:`BusinessCentralHook.create_invoice` did. ``created``: this call created the header
    and saw the answer (False when it found it, also after a lost answer)."""

    id: str
    number: str
    created: bool
    totals: InvoiceTotals
    status: str
    lines_created: int
    lines_total: int

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe (amounts as text), for XCom."""
        return {**asdict(self), "totals": self.totals.as_dict()}


@dataclass(frozen=True)
class PostResult:
    """What :meth:`BusinessCentralHook.post_invoice` did. ``posted``: this call posted it."""

    id: str
    number: str
    status: str
    posted: bool
    totals: InvoiceTotals

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "totals": self.totals.as_dict()}


# --- the hook ------------------------------------------------------------------------------------
class BusinessCentralHook(HttpConnectorHook):
    """Sales invoices in Dynamics 365 Business Central. Connection: API host, Entra client id + secret.

    :param conn_id: the Business Central connection (extras: see the module docstring); default
        ``business_central_default``.
    :param tenant: the tenant the calls are made for: its own rate-limit bucket.
    """

    system = "business_central"
    default_conn_name = "business_central_default"
    hook_name = "Dynamics 365 Business Central"

    def __init__(self, conn_id: str | None = None, *, tenant: str, **kwargs: Any) -> None:
        super().__init__(conn_id, tenant=tenant, **kwargs)
        self._token: str | None = None
        self._token_renew_at = 0.0
        self.token_requests = 0

    # --- configuration ---------------------------------------------------------------------
    def _extra(self, name: str, default: str | None = None) -> str:
        value = self.extras.get(name, default)
        if value in (None, ""):
            raise PermanentError(
                f"connection {self.conn_id!r} needs the extra {name!r}",
                system=self.system,
                operation="config",
            )
        return str(value)

    @cached_property
    def base_url(self) -> str:
        """The base's URL (:attr:`HttpConnectorHook.base_url`: the origin, then the ``base_path``
        extra); without ``base_path``, the online API's path of the Entra tenant and environment."""
        base_path = str(self.extras.get("base_path") or "")
        if base_path and not base_path.startswith("/"):
            raise PermanentError(
                f"connection {self.conn_id!r}: the extra 'base_path' must start with '/' "
                f"({base_path[:80]!r})",
                system=self.system,
                operation="config",
            )
        # The base's cached value is stored under the same name, then replaced by this one on return.
        url = super().base_url
        if base_path:
            return url
        path = BASE_PATH.format(
            aad_tenant_id=self._extra("aad_tenant_id"), environment=self._extra("environment", "production")
        )
        return f"{url}{path}"

    @cached_property
    def company_path(self) -> str:
        return f"companies({self._extra('company_id')})"

    @cached_property
    def tax_codes(self) -> dict[str, str]:
        codes = dict(self.extras.get("tax_codes") or {})
        return {
            format(_decimal(rate, "tax_codes").normalize(), "f"): str(code) for rate, code in codes.items()
        }

    @cached_property
    def local_currency(self) -> str | None:
        value = self.extras.get("local_currency")
        return str(value).upper() if value else None

    # --- authentication --------------------------------------------------------------------
    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._access_token()}"}

    def _access_token(self) -> str:
        if self._token is not None and time.monotonic() < self._token_renew_at:
            return self._token
        conn = self.connection
        if not conn.password:
            raise PermanentError(
                f"connection {self.conn_id!r} needs a password (client secret or bearer token)",
                system=self.system,
                operation="auth",
            )
        if self.extras.get("auth", "client_credentials") == "bearer_token":
            self._token, self._token_renew_at = str(conn.password), float("inf")
            return self._token
        if not conn.login:
            raise PermanentError(
                f"connection {self.conn_id!r} needs login (the Entra application id)",
                system=self.system,
                operation="auth",
            )
        token, lifetime = call_with_retries(
            self._request_token,
            self.retry_policy,
            system=self.system,
            operation="token",
            on_retry=self._log_retry,
        )
        _mask(token)
        self._token = token
        self._token_renew_at = time.monotonic() + lifetime - min(TOKEN_RENEW_SECONDS, lifetime / 2)
        return token

    def _request_token(self) -> tuple[str, float]:
        """One client-credentials grant at Entra ID (form-encoded); the secret goes in the body only."""
        conn = self.connection
        url = self.extras.get("token_url") or TOKEN_URL.format(aad_tenant_id=self._extra("aad_tenant_id"))
        form = {
            "grant_type": "client_credentials",
            "client_id": str(conn.login),
            "client_secret": str(conn.password),
            "scope": str(self.extras.get("scope") or API_SCOPE),
        }
        self.token_requests += 1
        try:
            response = requests.post(
                url,
                data=form,
                timeout=self.timeout,
                headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
            )
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise TransientError(
                f"{type(exc).__name__} calling the token endpoint", system=self.system, operation="token"
            ) from None
        if response.status_code == 200:
            body = response.json()
            return str(body["access_token"]), float(body.get("expires_in") or 3599)
        self.raise_for(
            response, f"token endpoint -> HTTP {response.status_code}: {odata_message(response)}", "token"
        )

    # Business Central's error shape, short paths in messages, and a bearer token renewed before
    # it expires: the base's request/retry/classification is used as it is.
    def before_send(self) -> None:
        session = self.session  # built with a fresh token on first use
        if time.monotonic() >= self._token_renew_at:
            session.headers["Authorization"] = f"Bearer {self._access_token()}"

    def path_label(self, path: str) -> str:
        return _short(path)

    def error_text(self, response: requests.Response) -> str:
        return odata_message(response)

    # --- reading -----------------------------------------------------------------------------
    def _invoice_path(self, invoice_id: str, suffix: str = "") -> str:
        if not re.fullmatch(r"[0-9A-Fa-f-]{36}", invoice_id):
            raise PermanentError(
                f"{invoice_id!r} is not an invoice id (GUID)", system=self.system, operation="path"
            )
        return f"{self.company_path}/salesInvoices({invoice_id}){suffix}"

    def _json(self, response: requests.Response) -> Any:
        return response.json(parse_float=Decimal)

    def _collection(self, path: str, operation: str) -> Iterator[dict[str, Any]]:
        """Every entity of a collection, following ``@odata.nextLink`` (only within the API)."""
        while True:
            body = self._json(self.request("GET", path, operation=operation, expect=(200,)))
            yield from body.get("value", [])
            next_link = body.get("@odata.nextLink")
            if not next_link:
                return
            if not str(next_link).startswith(self.base_url + "/"):
                raise PermanentError(
                    "@odata.nextLink points outside the API; not following it with the token",
                    system=self.system,
                    operation=operation,
                )
            path = str(next_link)[len(self.base_url) + 1 :]

    def _invoice(self, raw: Mapping[str, Any]) -> Invoice:
        currency = str(raw.get("currencyCode") or self.local_currency or "")
        return Invoice(
            id=str(raw["id"]),
            number=str(raw.get("number") or ""),
            external_reference=str(raw.get("externalDocumentNumber") or ""),
            customer_number=str(raw.get("customerNumber") or ""),
            status=str(raw.get("status") or ""),
            invoice_date=str(raw.get("invoiceDate") or ""),
            totals=InvoiceTotals(
                currency=currency,
                net=_amount(raw.get("totalAmountExcludingTax"), "totalAmountExcludingTax"),
                tax=_amount(raw.get("totalTaxAmount"), "totalTaxAmount"),
                gross=_amount(raw.get("totalAmountIncludingTax"), "totalAmountIncludingTax"),
            ),
        )

    def get_invoice(self, invoice_id: str) -> Invoice:
        """One invoice (draft or posted).

        :param invoice_id: its id (a GUID).
        """
        response = self.request("GET", self._invoice_path(invoice_id), operation="get_invoice", expect=(200,))
        return self._invoice(self._json(response))

    def get_invoice_by_reference(self, external_reference: str) -> Invoice | None:
        """The invoice (draft or posted) whose ``externalDocumentNumber`` is ``external_reference``.

        :param external_reference: the caller's reference (at most 35 characters).
        :raises PermanentError: two invoices carry the reference.
        """
        query = quote(f"externalDocumentNumber eq {odata_string(external_reference)}", safe="")
        path = f"{self.company_path}/salesInvoices?$filter={query}"
        found = [self._invoice(raw) for raw in self._collection(path, "find_invoice")]
        if len(found) > 1:
            numbers = ", ".join(i.number for i in found)
            raise PermanentError(
                f"external reference {external_reference!r} is on {len(found)} invoices ({numbers}); "
                "resolve that in Business Central first",
                system=self.system,
                operation="find_invoice",
            )
        return found[0] if found else None

    def get_customer(self, number: str) -> Customer | None:
        """The customer whose ``number`` (Customer No.) is ``number``, or ``None``.

        :param number: the customer number.
        """
        query = quote(f"number eq {odata_string(number)}", safe="")
        path = f"{self.company_path}/customers?$filter={query}"
        for raw in self._collection(path, "find_customer"):
            return Customer(
                id=str(raw["id"]),
                number=str(raw.get("number") or ""),
                name=str(raw.get("displayName") or ""),
                blocked=str(raw.get("blocked") or "").strip(),
            )
        return None

    def get_invoice_lines(self, invoice_id: str) -> list[dict[str, Any]]:
        """The invoice's lines as Business Central returns them (amounts as Decimal).

        :param invoice_id: the invoice's id (a GUID).
        """
        return list(self._collection(self._invoice_path(invoice_id, "/salesInvoiceLines"), "list_lines"))

    # --- writing ---------------------------------------------------------------------------
    def _line_payload(self, line: InvoiceLine) -> dict[str, Any]:
        reference = line.reference
        if (
            not reference
            or len(reference) > MAX_LINE_REFERENCE
            or not _LINE_REFERENCE.match(f"[{reference}] ")
        ):
            raise ValueError(
                f"line reference {reference!r} must be 1-{MAX_LINE_REFERENCE} characters without ']'"
            )
        tax_code = line.tax_code
        if tax_code is None and line.vat_rate is not None:
            rate = format(line.vat_rate.normalize(), "f")
            tax_code = self.tax_codes.get(rate)
            if tax_code is None:
                raise ValueError(
                    f"line {reference}: no Business Central tax code for VAT rate {rate} "
                    f"(connection extra tax_codes has {', '.join(sorted(self.tax_codes)) or 'none'})"
                )
        line_type = line.line_type or str(self.extras.get("line_type") or "Account")
        number = line.line_object_number or self.extras.get("line_object_number")
        if not number:
            raise ValueError(
                f"line {reference}: no account/item number (extra line_object_number) to book it to"
            )
        payload: dict[str, Any] = {
            "lineType": line_type,
            "lineObjectNumber": str(number),
            "description": (line.prefix + line.description.strip())[:MAX_DESCRIPTION],
            "quantity": json_number(line.quantity),
            "unitPrice": json_number(line.unit_price),
        }
        if tax_code:
            payload["taxCode"] = tax_code
        return payload

    def _header_payload(
        self, customer_number: str, external_reference: str, currency: str, invoice_date: date | str
    ) -> dict[str, Any]:
        if not 0 < len(external_reference) <= MAX_EXTERNAL_REFERENCE:
            raise ValueError(
                f"external reference {external_reference!r} must be 1-{MAX_EXTERNAL_REFERENCE} characters"
            )
        if not 0 < len(customer_number) <= MAX_CUSTOMER_NUMBER:
            raise ValueError(
                f"customer number {customer_number!r} must be 1-{MAX_CUSTOMER_NUMBER} characters"
            )
        if not _CURRENCY.match(currency):
            raise ValueError(f"currency {currency!r} must be an ISO 4217 code such as EUR")
        day = invoice_date if isinstance(invoice_date, date) else date.fromisoformat(str(invoice_date))
        return {
            "customerNumber": customer_number,
            "externalDocumentNumber": external_reference,
            "invoiceDate": day.isoformat(),
            "currencyCode": "" if currency == self.local_currency else currency,
        }

    def _check_found(self, invoice: Invoice, customer_number: str, currency: str) -> None:
        found_currency = invoice.totals.currency.upper()  # blank: LCY, and local_currency is not configured
        if invoice.customer_number != customer_number or found_currency not in ("", currency):
            raise PermanentError(
                f"external reference {invoice.external_reference!r} is already used by invoice "
                f"{invoice.number} for customer {invoice.customer_number} in "
                f"{invoice.totals.currency or 'LCY'}, not for customer {customer_number} in {currency}",
                system=self.system,
                operation="create_invoice",
            )

    def create_invoice(
        self,
        customer_number: str,
        external_reference: str,
        lines: Sequence[InvoiceLine | Mapping[str, Any] | Any],
        currency: str,
        invoice_date: date | str,
    ) -> InvoiceResult:
        """Create (or complete) the draft invoice ``external_reference`` for ``customer_number``.

        Everything is checked before the first request (reference and number lengths, currency,
        unique line references, tax codes, amounts exact as JSON numbers). Safe to repeat: see the
        module docstring. Raises the connector errors; after a failure among the lines the draft
        keeps the lines made so far and the next call adds the rest.

        :param customer_number: the customer's number (Customer No.).
        :param external_reference: the invoice's idempotency key (``externalDocumentNumber``).
        :param lines: the lines (:class:`InvoiceLine`, mappings or validated billable lines).
        :param currency: the ISO 4217 code.
        :param invoice_date: the invoice's date.
        :raises ValueError: an input Business Central would refuse; nothing was sent.
        """
        currency = currency.upper()
        header = self._header_payload(customer_number, external_reference, currency, invoice_date)
        wanted = [InvoiceLine.of(line) for line in lines]
        if not wanted:
            raise ValueError("an invoice needs at least one line")
        repeated = sorted(
            {x.reference for x in wanted if sum(y.reference == x.reference for y in wanted) > 1}
        )
        if repeated:
            raise ValueError(f"line references must be unique on an invoice; repeated: {', '.join(repeated)}")
        payloads = [(line, self._line_payload(line)) for line in wanted]

        def find() -> tuple[Invoice, bool] | None:
            existing = self.get_invoice_by_reference(external_reference)
            return None if existing is None else (existing, False)

        def create() -> tuple[Invoice, bool]:
            response = self.request(
                "POST",
                f"{self.company_path}/salesInvoices",
                operation="create_invoice",
                json=header,
                expect=(201,),
                retry=False,
            )
            invoice = self._invoice(self._json(response))
            self.log.info(
                "created draft invoice %s (%s) for %s", invoice.number, external_reference, customer_number
            )
            return invoice, True

        invoice, created = self.create_once(find, create, operation="create_invoice", key=external_reference)
        self._check_found(invoice, customer_number, currency)
        added = self._complete_lines(invoice, payloads)
        final = self.get_invoice(invoice.id)
        return InvoiceResult(
            id=final.id,
            number=final.number,
            created=created,
            totals=final.totals,
            status=final.status,
            lines_created=added,
            lines_total=len(payloads),
        )

    def _complete_lines(self, invoice: Invoice, payloads: list[tuple[InvoiceLine, dict[str, Any]]]) -> int:
        """Add the lines the invoice lacks; the number added."""
        present = self._lines_by_reference(invoice.id)
        missing = [(line, payload) for line, payload in payloads if line.reference not in present]
        for line, _ in payloads:
            if line.reference in present:
                self._check_line(invoice, line, present[line.reference])
        if not missing:
            return 0
        if invoice.status != DRAFT:
            raise PermanentError(
                f"invoice {invoice.number} is {invoice.status}, not a draft, and lacks "
                f"{len(missing)} line(s) ({', '.join(line.reference for line, _ in missing[:10])}); "
                "it can no longer be changed",
                system=self.system,
                operation="create_invoice_line",
            )
        added = 0
        path = self._invoice_path(invoice.id, "/salesInvoiceLines")
        for line, payload in missing:
            listed = True  # the lines were just listed: the first attempt needs no new search

            def find(reference: str = line.reference) -> dict[str, Any] | None:
                nonlocal listed
                if listed:
                    listed = False
                    return None
                return self._lines_by_reference(invoice.id).get(reference)

            def create(body: dict[str, Any] = payload) -> dict[str, Any]:
                response = self.request(
                    "POST", path, operation="create_invoice_line", json=body, expect=(201,), retry=False
                )
                result: dict[str, Any] = self._json(response)
                return result

            try:
                self.create_once(find, create, operation="create_invoice_line")
            except Exception:
                self.log.error(
                    "invoice %s stays a draft with %d of %d lines; a rerun adds the rest",
                    invoice.number,
                    len(payloads) - len(missing) + added,
                    len(payloads),
                )
                raise
            added += 1
        self.log.info("invoice %s: added %d line(s), %d in all", invoice.number, added, len(payloads))
        return added

    def _lines_by_reference(self, invoice_id: str) -> dict[str, dict[str, Any]]:
        lines: dict[str, dict[str, Any]] = {}
        for raw in self.get_invoice_lines(invoice_id):
            match = _LINE_REFERENCE.match(str(raw.get("description") or ""))
            if match:
                lines.setdefault(match.group(1), raw)
        return lines

    def _check_line(self, invoice: Invoice, line: InvoiceLine, raw: Mapping[str, Any]) -> None:
        quantity = _decimal(raw.get("quantity", 0), "quantity")
        unit_price = _decimal(raw.get("unitPrice", 0), "unitPrice")
        if (quantity, unit_price) != (line.quantity, line.unit_price):
            raise PermanentError(
                f"invoice {invoice.number} already has line {line.reference} with quantity {quantity} x "
                f"{unit_price}, not {line.quantity} x {line.unit_price}; fix it in Business Central",
                system=self.system,
                operation="create_invoice_line",
            )

    def post_invoice(
        self,
        invoice_id: str,
        *,
        expected_totals: InvoiceTotals | Mapping[str, Any] | None = None,
        tolerance: Decimal | str = "0.00",
    ) -> PostResult:
        """Post the draft ``invoice_id`` (bound action ``Microsoft.NAV.post``), once.

        ``expected_totals`` (e.g. the approved totals): the draft is posted only if its currency
        matches and net, tax and gross are each within ``tolerance`` of them. An invoice already
        posted is returned as it is (``posted=False``); so is one whose post answer was lost.

        :param invoice_id: the draft's id (a GUID).
        :param expected_totals: the totals the draft must have (``None``: not checked).
        :param tolerance: the largest difference allowed per amount.
        :raises PermanentError: the totals differ beyond the tolerance (not posted).
        """
        expected = None
        if expected_totals is not None:
            expected = (
                expected_totals
                if isinstance(expected_totals, InvoiceTotals)
                else InvoiceTotals.from_mapping(expected_totals)
            )
        allowed = _decimal(tolerance, "tolerance")
        path = self._invoice_path(invoice_id, "/Microsoft.NAV.post")

        def find() -> PostResult | None:
            invoice = self.get_invoice(invoice_id)
            if invoice.status != DRAFT:
                return PostResult(invoice.id, invoice.number, invoice.status, False, invoice.totals)
            if expected is not None:
                self._check_totals(invoice, expected, allowed)
            return None

        def post() -> PostResult:
            self.request("POST", path, operation="post_invoice", expect=(204,), retry=False)
            invoice = self.get_invoice(invoice_id)
            self.log.info("posted invoice %s (%s)", invoice.number, invoice.external_reference)
            return PostResult(invoice.id, invoice.number, invoice.status, True, invoice.totals)

        return self.create_once(find, post, operation="post_invoice")

    def _check_totals(self, invoice: Invoice, expected: InvoiceTotals, tolerance: Decimal) -> None:
        actual = invoice.totals
        off = [
            f"{name} {getattr(actual, name)} (approved {getattr(expected, name)})"
            for name in ("net", "tax", "gross")
            if abs(getattr(actual, name) - getattr(expected, name)) > tolerance
        ]
        if actual.currency.upper() != expected.currency.upper():
            off.insert(0, f"currency {actual.currency} (approved {expected.currency})")
        if off:
            raise PermanentError(
                f"draft {invoice.number} differs from the approved totals beyond {tolerance}: "
                f"{'; '.join(off)}; not posted",
                system=self.system,
                operation="post_invoice",
            )


def _short(path: str) -> str:
    """A path for messages: without the query string (filter values stay out of logs)."""
    return path.split("?", 1)[0]


def _mask(secret: str) -> None:
    """Register a secret with Airflow's masker (task logs); a no-op outside Airflow."""
    try:
        from airflow.sdk.log import mask_secret
    except ImportError:  # pragma: no cover - Airflow is installed wherever this runs
        return
    mask_secret(secret)
