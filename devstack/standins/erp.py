"""An in-memory stand-in for Dynamics 365 Business Central online (API v2.0) and its Entra ID token
endpoint on 127.0.0.1: for the ERP connector's tests (in-process, a random port and fresh
credentials per instance) and, as a service of the local stack, for the invoicing workflows
(``python -m devstack.standins.erp``, see :func:`main`; fixed port and credentials per
profile, state in memory until the process stops, like moto's).

The real SaaS is unreachable from here, so this server implements, in memory, the calls the
connector makes, with the URLs, shapes and status codes of Microsoft's documented contract (Business
Central API v2.0 reference: salesInvoice, salesInvoiceLine, bound actions; "Error Codes"; "Working
with API limits"; Microsoft identity platform client-credentials flow):

=====================================================================  =================================
``POST /{aadTenant}/oauth2/v2.0/token`` (form)                          client credentials: 200
                                                                        ``{"token_type": "Bearer",
                                                                        "expires_in", "access_token"}``
``GET  {api}/companies``                                                ``{"value": [company]}``
``GET  {api}/companies({id})/customers``                                ``$filter`` (e.g. ``number eq
                                                                        '10000'``); ``{"value"}``
``GET  {api}/companies({id})/salesInvoices``                            ``$filter``, ``$top``,
                                                                        ``$skiptoken``; ``{"value"}`` +
                                                                        ``@odata.nextLink``
``POST {api}/companies({id})/salesInvoices``                            201 invoice, status ``Draft``
``GET  {api}/companies({id})/salesInvoices({id})``                      200 invoice
``GET  {api}/companies({id})/salesInvoices({id})/salesInvoiceLines``    200 ``{"value"}`` (paged)
``POST {api}/companies({id})/salesInvoices({id})/salesInvoiceLines``    201 line
``POST {api}/companies({id})/salesInvoices({id})/Microsoft.NAV.post``   204, status ``Open``
=====================================================================  =================================

``{api}`` is ``/v2.0/{aadTenant}/{environment}/api/v2.0``. Built on
:class:`devstack.standins.base.HttpStandIn` (127.0.0.1 only; port 0 in tests, the profile's in the stack).

- Auth: bearer tokens from the token endpoint only (client credentials, scope :data:`API_SCOPE`),
  expiring after ``expires_in``; anything else is 401 ``Authentication_InvalidCredentials`` "The
  server has rejected the client credentials." with ``WWW-Authenticate: Bearer authorization_uri=...``.
- Shapes: ``application/json; odata.metadata=minimal; odata.streaming=true`` with ``OData-Version:
  4.0``, ``@odata.context``/``@odata.etag`` on entities, ``{"value"}`` + ``@odata.nextLink`` pages;
  decimals are JSON numbers; an unknown property in a body is 400 (OData's wording); manual numbers
  are refused (no "Manual Nos." on the series); a blank currency code means the local currency (LCY)
  and the LCY code is accepted and returned for it; ``externalDocumentNumber`` is Code[35] and not
  unique; ``salesInvoices`` lists drafts and posted invoices (posting keeps the id and assigns the
  posted number); amounts are rounded to cents half away from zero, VAT per tax code on the running
  document total (so a document's VAT is ``round(net of the tax code x rate)``, not the sum of
  rounded line VAT), which is how I read Business Central's sales line VAT calculation.
- Errors: Entra errors as ``{"error", "error_description": "AADSTS...", "error_codes",
  "trace_id", "correlation_id", "timestamp"}`` (401 ``invalid_client`` for a wrong secret);
  Business Central errors as ``{"error": {"code", "message"}}`` with the codes and message patterns
  of Microsoft's error table (``Application_DialogException`` "A customerNumber or a customerID must
  be provided.", ``Application_StringExceededLength``, ``Internal_InvalidTableRelation``,
  ``Internal_RecordNotFound``, ``BadRequest_ResourceNotFound``, ``Application_EvaluateException``)
  and "  CorrelationId:  <guid>." appended.
- Throttling: only when a test says so, :meth:`BusinessCentralStandIn.throttle`: 429
  ``Application_TooManyRequests`` with ``Retry-After`` (or without: ``retry_after=None``).
- Faults for the tests: :meth:`~BusinessCentralStandIn.fail` (5xx, not applied),
  :meth:`~BusinessCentralStandIn.refuse` (a 4xx refusal in Business Central's error shape, not
  applied: what no retry mends, e.g. a blocked customer),
  :meth:`~BusinessCentralStandIn.lose_responses` (the request is applied, then the connection is
  dropped without an answer). The stack's service takes the same switches over HTTP (127.0.0.1
  only, never on a real service, no credentials needed): ``POST /_faults`` ``{"mode":
  "refuse"|"5xx"|"429"|"lose", "times": n, "method": "POST", "path_contains": "salesInvoices",
  "status": 400, "message": "..."}`` (``method``, ``path_contains``, ``status`` and ``message``
  optional; 204), ``DELETE /_faults`` switches every fault off (204); a bad spec is 400.

Assumed, not documented: the HTTP status of a code (Microsoft's table gives codes, not statuses:
400 for a bad write, 404 ``Internal_RecordNotFound`` for an unknown id in the URL), the wording of
"There is nothing to post." for an empty draft and of a second post, and the 429/5xx bodies
(Microsoft documents the status codes only).

Not shown:

- whether a real 429 carries ``Retry-After`` (Business Central does not promise it), and the
  service's own limits (6,000 requests per 5 minutes: no 429 unless a test throttles);
- ETags/``If-Match`` (the connector makes no PATCH/DELETE), ``$select``/``$expand``/``$orderby``/
  ``$batch``/deep insert, OData filters beyond ``prop eq 'text'`` joined by ``and``;
- dimensions, discounts, payment terms beyond a fixed 30 days, prices including tax, sales tax (US),
  posting errors other than an empty invoice;
- permissions (one app with every permission), several companies, eventual consistency (the search
  is immediately consistent), state beyond the process (it lives in memory, like moto's).

Every request is recorded (method, path, query, status; no credentials or bodies).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import re
import secrets
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

from devstack.standins.base import (
    HOST,
    HttpStandIn,
    RecordedRequest,
    Request,
    Response,
    Route,
    StandInError,
    route,
    serve_main,
)

__all__ = [
    "API_SCOPE",
    "HOST",
    "BusinessCentralStandIn",
    "EntraError",
    "ODataError",
    "RecordedRequest",
    "Response",
]

API_SCOPE = "https://api.businesscentral.dynamics.com/.default"
CENT = Decimal("0.01")
ZERO_GUID = "00000000-0000-0000-0000-000000000000"
GUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
LINE_TYPES = ("Comment", "Account", "Item", "Resource")
REJECTED_CREDENTIALS = "The server has rejected the client credentials."
INVOICE_WRITABLE = frozenset(
    {
        "externalDocumentNumber",
        "invoiceDate",
        "postingDate",
        "dueDate",
        "customerPurchaseOrderReference",
        "customerId",
        "customerNumber",
        "currencyCode",
        "currencyId",
        "salesperson",
        "email",
        "phoneNumber",
    }
)
INVOICE_READ_ONLY = frozenset(
    {
        "id",
        "customerName",
        "status",
        "totalAmountExcludingTax",
        "totalTaxAmount",
        "totalAmountIncludingTax",
        "remainingAmount",
        "lastModifiedDateTime",
        "pricesIncludeTax",
        "orderId",
        "orderNumber",
    }
)
LINE_WRITABLE = frozenset(
    {
        "lineType",
        "lineObjectNumber",
        "itemId",
        "accountId",
        "description",
        "unitOfMeasureCode",
        "unitPrice",
        "quantity",
        "discountAmount",
        "discountPercent",
        "taxCode",
        "shipmentDate",
    }
)
LINE_READ_ONLY = frozenset(
    {
        "id",
        "documentId",
        "amountExcludingTax",
        "taxPercent",
        "totalTaxAmount",
        "amountIncludingTax",
        "netAmount",
        "netTaxAmount",
        "netAmountIncludingTax",
        "invoiceDiscountAllocation",
    }
)
#: Business Central's error code for a status the stand-in answers without a request-specific code.
STATUS_CODES = {
    429: "Application_TooManyRequests",
    500: "Internal_ServerError",
    503: "Internal_ServiceUnavailable",
    504: "Internal_GatewayTimeout",
}
_FILTER_CLAUSE = re.compile(r"^\s*(?P<prop>[A-Za-z]+)\s+eq\s+'(?P<value>(?:[^']|'')*)'\s*$")


@dataclass
class Fault:
    """Answer ``status`` (or drop the answer: ``lose``) for the next ``times`` matching requests,
    after letting ``skip`` matching requests through."""

    times: int
    status: int = 503
    method: str | None = None
    path_contains: str | None = None
    skip: int = 0
    retry_after: int | None = None
    lose: bool = False
    token_endpoint: bool = False  # the fault hits Entra ID's token endpoint instead of the API
    message: str | None = None  # a refusal's message (4xx other than 429)

    def matches(self, method: str, path: str) -> bool:
        is_token = path.endswith("/oauth2/v2.0/token")
        return (
            is_token == self.token_endpoint
            and (self.method is None or self.method == method)
            and (self.path_contains is None or self.path_contains in path)
        )


class ODataError(StandInError):
    """Answer with Business Central's error shape."""

    def __init__(self, status: int, code: str, message: str) -> None:
        correlation = uuid.uuid4()
        body = {"error": {"code": code, "message": f"{message}  CorrelationId:  {correlation}."}}
        super().__init__(message, Response(status, body))


class EntraError(StandInError):
    """Answer with the Microsoft identity platform's error shape."""

    def __init__(self, status: int, error: str, code: int, description: str) -> None:
        trace, correlation = uuid.uuid4(), uuid.uuid4()
        now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        super().__init__(
            description,
            Response(
                status,
                {
                    "error": error,
                    "error_description": f"AADSTS{code}: {description}\r\nTrace ID: {trace}\r\n"
                    f"Correlation ID: {correlation}\r\nTimestamp: {now}",
                    "error_codes": [code],
                    "timestamp": now,
                    "trace_id": str(trace),
                    "correlation_id": str(correlation),
                    "error_uri": f"https://login.microsoftonline.com/error?code={code}",
                },
            ),
        )


def _cents(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _too_long(value: str, limit: int) -> ODataError:
    return ODataError(
        400,
        "Application_StringExceededLength",
        f"The length of the string is {len(value)}, but it must be less than or equal to {limit} "
        f"characters. Value: {value}",
    )


def _no_relation(field_name: str, table: str, value: str, related: str) -> ODataError:
    return ODataError(
        400,
        "Internal_InvalidTableRelation",
        f"The field {field_name} of table {table} contains a value ({value}) that cannot be found in "
        f"the related table ({related}).",
    )


class BusinessCentralStandIn(HttpStandIn[RecordedRequest]):
    """The service: state, contract checks and one :meth:`handle` per request; :meth:`start` serves it."""

    server_version = "BusinessCentralStandIn/1.0"
    json_content_type = "application/json; odata.metadata=minimal; odata.streaming=true"
    keep_blank_values = True

    def __init__(
        self,
        *,
        environment: str = "production",
        customers: Mapping[str, str] | None = None,
        accounts: Mapping[str, str] | None = None,
        items: Mapping[str, str] | None = None,
        tax_codes: Mapping[str, Decimal | int | str] | None = None,
        default_tax_code: str = "STANDARD",
        local_currency: str = "EUR",
        currencies: tuple[str, ...] = ("USD", "GBP", "CHF"),
        token_ttl: int = 3599,
        page_size: int = 20000,
        aad_tenant_id: str | None = None,
        client_id: str | None = None,
        client_secret: str | None = None,
        company_id: str | None = None,
        port: int = 0,
        max_recorded: int | None = None,
    ) -> None:
        # A long-running service keeps only the latest requests and tokens (tests keep them all).
        super().__init__(port=port, max_recorded=max_recorded)
        # Fresh identities and secret per instance unless given (the devstack keeps them per profile).
        self.aad_tenant_id = aad_tenant_id or str(uuid.uuid4())
        self.environment = environment
        self.client_id = client_id or str(uuid.uuid4())
        self.client_secret = client_secret or "Xq8Q~" + secrets.token_urlsafe(30)
        self.company_id = (company_id or str(uuid.uuid4())).lower()
        self.company_name = "CRONUS MSSP"
        self.customers = {
            number: {
                "id": str(uuid.uuid4()),
                "number": number,
                "displayName": name,
                "type": "Company",
                "currencyCode": "",  # blank: the local currency
                "blocked": " ",  # " ", "Ship", "Invoice" or "All" (Business Central's option values)
                "lastModifiedDateTime": "2025-01-01T00:00:00Z",
            }
            for number, name in (customers or {"10000": "ACME Corp", "20000": "Globex Corporation"}).items()
        }
        self.accounts = dict(accounts or {"8400": "Revenue, managed services"})
        self.items = dict(items or {"SOC-HOUR": "SOC analyst hour"})
        self.tax_codes = {
            code: Decimal(str(pct))
            for code, pct in (
                tax_codes
                or {"ZERO": 0, "REDUCED": 7, "STANDARD": 19, "UK20": 20, "CH77": "7.7", "CH81": "8.1"}
            ).items()
        }
        self.default_tax_code = default_tax_code
        self.local_currency = local_currency
        self.currencies = {code: str(uuid.uuid4()) for code in currencies}
        self.token_ttl = token_ttl
        self.page_size = page_size
        self.invoices: dict[str, dict[str, Any]] = {}  # id -> invoice (with "_lines")
        self.issued_tokens: list[str] = []
        self.post_actions = 0
        self._tokens: dict[str, float] = {}  # token -> expiry (monotonic)
        self._draft_numbers = itertools.count(1001)
        self._posted_numbers = itertools.count(103001)
        self._faults: list[Fault] = []

    @property
    def api_path(self) -> str:
        return f"/v2.0/{self.aad_tenant_id}/{self.environment}/api/v2.0"

    @property
    def token_url(self) -> str:
        return f"{self.base_url}/{self.aad_tenant_id}/oauth2/v2.0/token"

    # --- test controls --------------------------------------------------------------------
    def throttle(self, times: int = 1, *, retry_after: int | None = 1, **match: Any) -> None:
        """Answer the next ``times`` (matching, authenticated) requests with 429 and ``Retry-After``."""
        self._add(Fault(times, status=429, retry_after=retry_after, **match))

    def fail(self, times: int = 1, *, status: int = 503, **match: Any) -> None:
        """Answer the next ``times`` matching requests with a 5xx, without carrying them out."""
        assert status >= 500, status
        self._add(Fault(times, status=status, **match))

    def refuse(self, times: int = 1, *, status: int = 400, message: str | None = None, **match: Any) -> None:
        """Refuse the next ``times`` matching (authenticated) requests with a 4xx other than 429,
        in Business Central's error shape (``Application_DialogException``), without carrying them
        out: what the connector must treat as permanent."""
        if not 400 <= status < 500 or status == 429:
            raise ValueError(f"a refusal is a 4xx other than 429, not {status}")
        self._add(Fault(times, status=status, message=message, **match))

    def lose_responses(self, times: int = 1, *, method: str | None = "POST", **match: Any) -> None:
        """Carry out the next ``times`` matching requests, then drop the connection without an answer."""
        self._add(Fault(times, lose=True, method=method, **match))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def _add(self, fault: Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def _fault(self, method: str, path: str, *, lose: bool) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.lose != lose or fault.times <= 0 or not fault.matches(method, path):
                    continue
                if fault.skip > 0:
                    fault.skip -= 1
                    return None
                fault.times -= 1
                return fault
        return None

    def requests_to(self, method: str, path_contains: str = "") -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == method and path_contains in r.path]

    def invoices_with_reference(self, reference: str) -> list[dict[str, Any]]:
        return [i for i in self.invoices.values() if i["externalDocumentNumber"] == reference]

    def lines_of(self, invoice_id: str) -> list[dict[str, Any]]:
        return list(self.invoices[invoice_id]["_lines"])

    # --- request handling -----------------------------------------------------------------
    def error_body(self, status: int, message: str) -> dict[str, Any]:
        """Business Central's error shape, with the code Microsoft's error table gives the status."""
        return {
            "error": {"code": STATUS_CODES.get(status, "Internal_ServiceUnavailable"), "message": message}
        }

    def json_default(self, value: Any) -> Any:
        if isinstance(value, Decimal):  # decimals are JSON numbers
            return int(value) if value == value.to_integral_value() else float(value)
        return super().json_default(value)

    def encode_body(self, body: Any) -> tuple[bytes, dict[str, str]]:
        payload, headers = super().encode_body(body)
        return payload, {**headers, "OData-Version": "4.0"} if headers else headers

    def banner(self) -> str:
        return (
            f"Business Central stand-in on {self.base_url}{self.api_path}, company {self.company_id}, "
            f"customers {', '.join(sorted(self.customers))}"
        )

    def record(self, request: Request, response: Response) -> RecordedRequest:
        return RecordedRequest.of(request, response)

    def handle(self, request: Request) -> Response:
        if request.path == "/_faults":
            return self.switch_faults(request.method, request.body)
        headers = {name.lower(): value for name, value in request.headers.items()}
        response = self._dispatch(request.method, request.path, request.query, headers, request.body)
        if response.status < 300 and self._fault(request.method, request.path, lose=True) is not None:
            response = dataclasses.replace(response, lost=True)
        return response

    def _dispatch(
        self, method: str, path: str, query: dict[str, list[str]], headers: Mapping[str, str], body: bytes
    ) -> Response:
        if path == f"/{self.aad_tenant_id}/oauth2/v2.0/token" or path.endswith("/oauth2/v2.0/token"):
            if (fault := self._fault(method, path, lose=False)) is not None:
                return self._fault_response(fault)
            if method != "POST":
                raise EntraError(400, "invalid_request", 900561, "The endpoint only accepts POST requests.")
            return self._token(path, body)
        if not path.startswith(self.api_path + "/"):
            raise ODataError(
                404, "BadRequest_ResourceNotFound", f"Resource not found for the segment '{path}'."
            )
        if not self._authenticated(headers.get("authorization", "")):
            return Response(
                401,
                {"error": {"code": "Authentication_InvalidCredentials", "message": REJECTED_CREDENTIALS}},
                {
                    "WWW-Authenticate": f'Bearer authorization_uri="https://login.microsoftonline.com/{self.aad_tenant_id}"'
                },
            )
        if (fault := self._fault(method, path, lose=False)) is not None:
            return self._fault_response(fault)
        resource = path[len(self.api_path) + 1 :]
        self._check_options(query)
        match route(self._routes(), method, resource):
            case (action, groups):
                with self._lock:
                    return action(*groups, query=query, body=body)
            case 405:
                message = f"'{method}' requests for '{resource}' are not allowed."
                raise ODataError(405, "BadRequest_MethodNotAllowed", message)
            case _:
                raise ODataError(
                    404, "BadRequest_ResourceNotFound", f"Resource not found for the segment '{resource}'."
                )

    def _routes(self) -> list[Route]:
        company = rf"companies\(({GUID})\)"
        invoice = company + rf"/salesInvoices\(({GUID})\)"
        return [
            ("GET", "companies", self._list_companies),
            ("GET", company + "/customers", self._list_customers),
            ("GET", company + "/salesInvoices", self._list_invoices),
            ("POST", company + "/salesInvoices", self._create_invoice),
            ("GET", invoice, self._get_invoice),
            ("GET", invoice + "/salesInvoiceLines", self._list_lines),
            ("POST", invoice + "/salesInvoiceLines", self._create_line),
            ("POST", invoice + r"/Microsoft\.NAV\.post", self._post_invoice),
        ]

    def switch_faults(self, method: str, body: bytes) -> Response:
        """``POST /_faults`` (one fault, see the module docstring) and ``DELETE /_faults`` (all off)."""
        if method == "DELETE":
            self.clear_faults()
            return Response(204)
        if method != "POST":
            return Response(405, {"message": "POST or DELETE"})
        try:
            spec = json.loads(body or b"{}")
            mode, times = spec["mode"], int(spec.get("times", 1))
            match = {k: spec[k] for k in ("method", "path_contains") if spec.get(k) is not None}
            if times < 1 or not all(isinstance(v, str) for v in match.values()):
                raise ValueError("times >= 1; method and path_contains are strings")
            if mode == "refuse":
                self.refuse(times, status=int(spec.get("status", 400)), message=spec.get("message"), **match)
            elif mode == "5xx":
                self.fail(times, status=int(spec.get("status", 503)), **match)
            elif mode == "429":
                self.throttle(times, **match)
            elif mode == "lose":
                self.lose_responses(times, **{"method": "POST", **match})
            else:
                raise ValueError(f"mode {mode!r}: one of refuse, 5xx, 429, lose")
        except (ValueError, KeyError, TypeError, AssertionError) as exc:  # fail() asserts a 5xx
            return Response(400, {"message": f"bad fault: {exc}"})
        return Response(204)

    def _fault_response(self, fault: Fault) -> Response:
        if 400 <= fault.status < 500 and fault.status != 429:
            message = fault.message or "The request was refused."
            return Response(
                fault.status,
                {
                    "error": {
                        "code": "Application_DialogException",
                        "message": f"{message}  CorrelationId:  {uuid.uuid4()}.",
                    }
                },
            )
        if fault.status == 429:
            return self.throttled(
                fault.retry_after, "Too many requests reached.  Actual (601).  Maximum (600)."
            )
        return Response(
            fault.status, self.error_body(fault.status, "The service is temporarily unavailable.")
        )

    @staticmethod
    def _check_options(query: Mapping[str, list[str]]) -> None:
        for name in query:
            if name.startswith("$") and name not in ("$filter", "$top", "$skiptoken"):
                raise ODataError(
                    400, "BadRequest", f"The stand-in does not support the query option '{name}'."
                )

    # --- authentication ---------------------------------------------------------------------
    def _token(self, path: str, body: bytes) -> Response:
        form = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
        if path != f"/{self.aad_tenant_id}/oauth2/v2.0/token":
            tenant = path.strip("/").split("/")[0]
            raise EntraError(400, "invalid_request", 90002, f"Tenant '{tenant}' not found.")
        if form.get("grant_type") != "client_credentials":
            raise EntraError(
                400, "unsupported_grant_type", 70003, "The app requested an unsupported grant type."
            )
        if form.get("client_id") != self.client_id:
            raise EntraError(
                400,
                "unauthorized_client",
                700016,
                f"Application with identifier '{form.get('client_id')}' was not found in the directory "
                f"'{self.aad_tenant_id}'.",
            )
        if not secrets.compare_digest(form.get("client_secret", ""), self.client_secret):
            raise EntraError(
                401,
                "invalid_client",
                7000215,
                "Invalid client secret provided. Ensure the secret being sent in the request is the client "
                f"secret value, not the client secret ID, for a secret added to app '{self.client_id}'.",
            )
        if form.get("scope") != API_SCOPE:
            raise EntraError(
                400,
                "invalid_scope",
                1002012,
                f"The provided value for scope {form.get('scope')} is not valid. Client credential flows "
                "must have a scope value with /.default suffixed to the resource identifier.",
            )
        token = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9." + secrets.token_urlsafe(48)
        with self._lock:
            now = time.monotonic()
            self._tokens = {t: expiry for t, expiry in self._tokens.items() if expiry > now}
            self._tokens[token] = now + self.token_ttl
            self.issued_tokens.append(token)
            if self.max_recorded is not None and len(self.issued_tokens) > self.max_recorded:
                del self.issued_tokens[: len(self.issued_tokens) - self.max_recorded]
        return Response(
            200,
            {
                "token_type": "Bearer",
                "expires_in": self.token_ttl,
                "ext_expires_in": self.token_ttl,
                "access_token": token,
            },
        )

    def _authenticated(self, header: str) -> bool:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer":
            return False
        with self._lock:
            expiry = self._tokens.get(token.strip())
        return expiry is not None and time.monotonic() < expiry

    # --- helpers ------------------------------------------------------------------------------
    @staticmethod
    def _json(
        body: bytes,
        entity: str,
        writable: frozenset[str],
        read_only: frozenset[str],
        *,
        numbered: bool = False,
    ) -> dict[str, Any]:
        try:
            value = json.loads(body or b"null", parse_float=Decimal)
        except ValueError:
            raise ODataError(400, "BadRequest", "Invalid Request Body") from None
        if not isinstance(value, dict):
            raise ODataError(400, "BadRequest", "Invalid Request Body")
        for name in value:
            if name in read_only:
                raise ODataError(400, "BadRequest_InvalidOperation", f"Control '{name}' is read-only.")
            if name not in writable and not (numbered and name == "number"):
                raise ODataError(
                    400,
                    "BadRequest",
                    f"The property '{name}' does not exist on type 'Microsoft.NAV.{entity}'. Make sure to "
                    "only use property names that are defined by the type.",
                )
        return value

    @staticmethod
    def _number(value: Any, name: str) -> Decimal:
        if isinstance(value, bool) or not isinstance(value, int | Decimal):
            raise ODataError(
                400, "BadRequest", f"Cannot convert the literal '{value}' to the expected type 'Edm.Decimal'."
            )
        return Decimal(value)

    @staticmethod
    def _date(value: Any) -> date:
        try:
            return date.fromisoformat(str(value))
        except ValueError:
            raise ODataError(
                400, "BadRequest", f"Cannot convert the literal '{value}' to the expected type 'Edm.Date'."
            ) from None

    def _company(self, company_id: str) -> None:
        if company_id.lower() != self.company_id:
            raise ODataError(
                404, "BadRequest_NotFound", f"The company with id '{company_id}' does not exist."
            )

    def _find(self, company_id: str, invoice_id: str) -> dict[str, Any]:
        self._company(company_id)
        invoice = self.invoices.get(invoice_id.lower())
        if invoice is None:
            raise ODataError(
                404,
                "Internal_RecordNotFound",
                f"The Sales Invoice Entity Aggregate does not exist. Identification fields and values: "
                f"Id='{{{invoice_id.upper()}}}'",
            )
        return invoice

    def _context(self, suffix: str) -> str:
        return f"{self.base_url}{self.api_path}/$metadata#{suffix}"

    def _entity(self, raw: Mapping[str, Any], context: str) -> dict[str, Any]:
        visible = {k: v for k, v in raw.items() if not k.startswith("_")}
        etag = 'W/"JzIwOzE' + str(abs(hash((raw["id"], raw.get("lastModifiedDateTime")))))[:12] + 'Oyc="'
        return {"@odata.context": self._context(context), "@odata.etag": etag, **visible}

    def _page(
        self, entities: list[dict[str, Any]], query: Mapping[str, list[str]], context: str, path: str
    ) -> Response:
        start = int((query.get("$skiptoken") or ["0"])[0] or 0)
        size = min(int((query.get("$top") or [str(self.page_size)])[0]), self.page_size)
        page = entities[start : start + size]
        body: dict[str, Any] = {"@odata.context": self._context(context), "value": page}
        if start + size < len(entities) and "$top" not in query:
            rest = "".join(f"$filter={quote(v, safe='')}&" for v in query.get("$filter", []))
            body["@odata.nextLink"] = f"{self.base_url}{self.api_path}/{path}?{rest}$skiptoken={start + size}"
        return Response(200, body)

    def _filter(
        self, query: Mapping[str, list[str]], entity_type: str, sample: Mapping[str, Any]
    ) -> Callable[..., bool]:
        expression = (query.get("$filter") or [""])[0]
        if not expression:
            return lambda _: True
        clauses = []
        for part in re.split(r"\s+and\s+", expression):
            match = _FILTER_CLAUSE.match(part)
            if match is None:
                raise ODataError(400, "BadRequest", f"The stand-in cannot parse the filter '{expression}'.")
            prop = match["prop"]
            if prop not in sample:
                raise ODataError(
                    400,
                    "BadRequest",
                    f"Could not find a property named '{prop}' on type 'Microsoft.NAV.{entity_type}'.",
                )
            clauses.append((prop, match["value"].replace("''", "'")))
        return lambda entity: all(str(entity.get(p)) == v for p, v in clauses)

    # --- companies and invoices ---------------------------------------------------------------
    def _list_companies(self, *, query: Mapping[str, list[str]], **_: Any) -> Response:
        company = {
            "id": self.company_id,
            "systemVersion": "25.0.23364.25238",
            "timestamp": 1,
            "name": self.company_name,
            "displayName": self.company_name,
            "businessProfileId": "",
            "systemCreatedAt": "2025-01-01T00:00:00Z",
            "systemCreatedBy": ZERO_GUID,
            "systemModifiedAt": "2025-01-01T00:00:00Z",
            "systemModifiedBy": ZERO_GUID,
        }
        return Response(200, {"@odata.context": self._context("companies"), "value": [company]})

    def _list_customers(self, company_id: str, *, query: Mapping[str, list[str]], **_: Any) -> Response:
        self._company(company_id)
        context = f"companies({company_id})/customers"
        shown = [self._entity(c, context + "/$entity") for c in self.customers.values()]
        sample = next(iter(self.customers.values()), {"number": "", "displayName": ""})
        keep = self._filter(query, "customer", sample)
        return self._page([e for e in shown if keep(e)], query, context, context)

    def _list_invoices(self, company_id: str, *, query: Mapping[str, list[str]], **_: Any) -> Response:
        self._company(company_id)
        context = f"companies({company_id})/salesInvoices"
        shown = [self._entity(i, context + "/$entity") for i in self.invoices.values()]
        keep = self._filter(query, "salesInvoice", self._invoice_sample())
        return self._page([e for e in shown if keep(e)], query, context, context)

    def _invoice_sample(self) -> dict[str, Any]:
        return dict.fromkeys(INVOICE_WRITABLE | INVOICE_READ_ONLY | {"number"}, "")

    def _get_invoice(self, company_id: str, invoice_id: str, **_: Any) -> Response:
        invoice = self._find(company_id, invoice_id)
        return Response(200, self._entity(invoice, f"companies({company_id})/salesInvoices/$entity"))

    def _create_invoice(self, company_id: str, *, body: bytes, **_: Any) -> Response:
        self._company(company_id)
        request = self._json(body, "salesInvoice", INVOICE_WRITABLE, INVOICE_READ_ONLY, numbered=True)
        if "number" in request:
            raise ODataError(
                400,
                "Application_DialogException",
                "You may not enter numbers manually. If you want to enter numbers manually, please activate "
                "Manual Nos. in No. Series S-INV.",
            )
        customer = self._customer(request)
        reference = str(request.get("externalDocumentNumber") or "")
        if len(reference) > 35:
            raise _too_long(reference, 35)
        currency = str(request.get("currencyCode") or "")
        if currency == self.local_currency:
            currency = ""
        if currency and currency not in self.currencies:
            raise _no_relation("Currency Code", "Sales Header", currency, "Currency")
        invoice_date = self._date(request.get("invoiceDate") or date.today().isoformat())
        invoice_id = str(uuid.uuid4())
        invoice = {
            "id": invoice_id,
            "number": f"S-INV{next(self._draft_numbers)}",
            "externalDocumentNumber": reference,
            "invoiceDate": invoice_date.isoformat(),
            "postingDate": invoice_date.isoformat(),
            "dueDate": (invoice_date + timedelta(days=30)).isoformat(),
            "customerPurchaseOrderReference": str(request.get("customerPurchaseOrderReference") or ""),
            "customerId": customer["id"],
            "customerNumber": customer["number"],
            "customerName": customer["displayName"],
            "billToName": customer["displayName"],
            "billToCustomerId": customer["id"],
            "billToCustomerNumber": customer["number"],
            "currencyId": self.currencies.get(currency, ZERO_GUID),
            "currencyCode": currency or self.local_currency,
            "pricesIncludeTax": False,
            "discountAmount": Decimal(0),
            "discountAppliedBeforeTax": False,
            "totalAmountExcludingTax": Decimal(0),
            "totalTaxAmount": Decimal(0),
            "totalAmountIncludingTax": Decimal(0),
            "remainingAmount": Decimal(0),
            "status": "Draft",
            "lastModifiedDateTime": _now(),
            "_lines": [],
        }
        self.invoices[invoice_id] = invoice
        return Response(201, self._entity(invoice, f"companies({company_id})/salesInvoices/$entity"))

    def _customer(self, request: Mapping[str, Any]) -> dict[str, str]:
        number, customer_id = request.get("customerNumber"), request.get("customerId")
        if not number and not customer_id:
            raise ODataError(
                400, "Application_DialogException", "A customerNumber or a customerID must be provided."
            )
        for customer in self.customers.values():
            if customer["number"] == number or customer["id"] == customer_id:
                return customer
        field_name, value = ("No.", number) if number else ("Id", customer_id)
        raise ODataError(
            400,
            "Internal_RecordNotFound",
            f"The Customer does not exist. Identification fields and values: {field_name}='{value}'",
        )

    def _post_invoice(self, company_id: str, invoice_id: str, **_: Any) -> Response:
        invoice = self._find(company_id, invoice_id)
        self.post_actions += 1
        if invoice["status"] != "Draft":
            raise ODataError(400, "Application_DialogException", "The sales invoice has already been posted.")
        if not any(line["lineType"] != "Comment" for line in invoice["_lines"]):
            raise ODataError(400, "Application_DialogException", "There is nothing to post.")
        invoice["status"] = "Open"
        invoice["number"] = str(next(self._posted_numbers))
        invoice["remainingAmount"] = invoice["totalAmountIncludingTax"]
        invoice["lastModifiedDateTime"] = _now()
        return Response(204)

    # --- lines ------------------------------------------------------------------------------------
    def _list_lines(
        self, company_id: str, invoice_id: str, *, query: Mapping[str, list[str]], **_: Any
    ) -> Response:
        invoice = self._find(company_id, invoice_id)
        context = f"companies({company_id})/salesInvoices({invoice_id})/salesInvoiceLines"
        shown = [self._entity(line, context + "/$entity") for line in invoice["_lines"]]
        return self._page(shown, query, context, context)

    def _create_line(self, company_id: str, invoice_id: str, *, body: bytes, **_: Any) -> Response:
        invoice = self._find(company_id, invoice_id)
        if invoice["status"] != "Draft":
            raise ODataError(
                400, "Application_DialogException", "The sales invoice has been posted and cannot be changed."
            )
        request = self._json(body, "salesInvoiceLine", LINE_WRITABLE, LINE_READ_ONLY)
        line_type = str(request.get("lineType") or "Item")
        if line_type not in LINE_TYPES:
            raise ODataError(
                400,
                "Application_EvaluateException",
                f'The value "{line_type}" cannot be evaluated into type Option.',
            )
        number = str(request.get("lineObjectNumber") or "")
        table, related = {"Account": (self.accounts, "G/L Account"), "Item": (self.items, "Item")}.get(
            line_type, ({}, line_type)
        )
        if line_type != "Comment" and number not in table:
            raise _no_relation("No.", "Sales Line", number, related)
        description = str(request.get("description") or table.get(number, ""))
        if len(description) > 100:
            raise _too_long(description, 100)
        tax_code = str(request.get("taxCode") or self.default_tax_code)
        if line_type != "Comment" and tax_code not in self.tax_codes:
            raise _no_relation("VAT Prod. Posting Group", "Sales Line", tax_code, "VAT Product Posting Group")
        quantity = self._number(request.get("quantity", 0), "quantity")
        unit_price = self._number(request.get("unitPrice", 0), "unitPrice")
        line = {
            "id": str(uuid.uuid4()),
            "documentId": invoice["id"],
            "sequence": 10000 * (len(invoice["_lines"]) + 1),
            "itemId": ZERO_GUID,
            "accountId": ZERO_GUID,
            "lineType": line_type,
            "lineObjectNumber": number,
            "description": description,
            "unitOfMeasureCode": str(request.get("unitOfMeasureCode") or ""),
            "unitPrice": unit_price,
            "quantity": quantity,
            "discountAmount": Decimal(0),
            "discountPercent": Decimal(0),
            "discountAppliedBeforeTax": False,
            "taxCode": tax_code if line_type != "Comment" else "",
            "shipmentDate": invoice["invoiceDate"],
            "lastModifiedDateTime": _now(),
        }
        invoice["_lines"].append(line)
        self._recalculate(invoice)
        return Response(
            201,
            self._entity(
                line, f"companies({company_id})/salesInvoices({invoice_id})/salesInvoiceLines/$entity"
            ),
        )

    def _recalculate(self, invoice: dict[str, Any]) -> None:
        """Line and document amounts: net per line rounded; VAT per tax code on the running total."""
        running: dict[str, tuple[Decimal, Decimal]] = {}  # tax code -> (net so far, VAT so far)
        for line in invoice["_lines"]:
            if line["lineType"] == "Comment":
                continue
            net = _cents(line["quantity"] * line["unitPrice"])
            percent = self.tax_codes[line["taxCode"]]
            net_before, vat_before = running.get(line["taxCode"], (Decimal(0), Decimal(0)))
            vat = _cents((net_before + net) * percent / 100) - vat_before
            running[line["taxCode"]] = (net_before + net, vat_before + vat)
            line.update(
                amountExcludingTax=net,
                taxPercent=percent,
                totalTaxAmount=vat,
                amountIncludingTax=net + vat,
                invoiceDiscountAllocation=Decimal(0),
                netAmount=net,
                netTaxAmount=vat,
                netAmountIncludingTax=net + vat,
            )
        net_total = sum((n for n, _ in running.values()), Decimal("0.00"))
        vat_total = sum((v for _, v in running.values()), Decimal("0.00"))
        invoice.update(
            totalAmountExcludingTax=net_total,
            totalTaxAmount=vat_total,
            totalAmountIncludingTax=net_total + vat_total,
            lastModifiedDateTime=_now(),
        )


def main(argv: list[str] | None = None) -> None:
    """Serve the stand-in on 127.0.0.1 until SIGTERM or SIGINT: the local stack's Business Central.

    The client secret is read from a file (0600, the profile's secrets folder), never taken from the
    command line, where ``ps`` would show it; nothing the service prints carries it or a token.
    """

    def options(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--aad-tenant-id", required=True)
        parser.add_argument("--client-id", required=True)
        parser.add_argument("--company-id", required=True)
        parser.add_argument("--client-secret-file", type=Path, required=True)
        parser.add_argument("--customers", help="JSON object: customer number -> name")

    serve_main(
        "Business Central API v2.0 stand-in (local stack)",
        lambda args, service: BusinessCentralStandIn(
            customers=json.loads(args.customers) if args.customers else None,
            aad_tenant_id=args.aad_tenant_id,
            client_id=args.client_id,
            client_secret=args.client_secret_file.read_text(encoding="utf-8").strip(),
            company_id=args.company_id,
            **service,
        ),
        argv,
        config_file=False,
        options=options,
    )


if __name__ == "__main__":
    main()
