"""An in-memory stand-in for Microsoft Entra ID (token endpoint), Microsoft Graph v1.0 and the
Microsoft Defender for Endpoint API, per Entra tenant, over HTTPS on 127.0.0.1: for the Microsoft
connectors' tests (in-process, a free port) and, as a service of the local stack, for the SOC's
Entra and Defender workflows (``python -m devstack.standins.microsoft``, see :func:`main`).

The real services are SaaS and unreachable here; this server implements, in memory, the calls the
connectors make with the URLs, shapes and status codes of Microsoft's documented contract
(identity platform client-credentials flow; Graph v1.0 user, revokeSignInSessions,
authentication methods, security incident; Defender for Endpoint machine and machineAction):

=================================================================  ====================================
``POST /{tenant}/oauth2/v2.0/token`` (form)                         client credentials; scope
                                                                    ``https://graph.microsoft.com/
                                                                    .default`` or ``https://api.
                                                                    securitycenter.microsoft.com/
                                                                    .default``
``GET /v1.0/users/{id | userPrincipalName}``                        user (``accountEnabled``,
                                                                    ``signInSessionsValidFromDateTime``)
``PATCH /v1.0/users/{id}`` ``{"accountEnabled": bool}``             204
``POST /v1.0/users/{id}/revokeSignInSessions``                      200 ``{"value": true}``
``GET /v1.0/users/{id}/authentication/methods``                     ``{"value": [method]}``
``DELETE /v1.0/users/{id}/authentication/{kind}Methods/{mid}``      204 (``passwordMethods``: 400,
                                                                    the contract has no delete)
``GET /v1.0/security/incidents[/{id}]``                             ``{"value"}`` / incident
``PATCH /v1.0/security/incidents/{id}`` ``{"status"}``              200 incident
``POST /v1.0/security/incidents/{id}/comments``                     200 ``{"value": [alertComment]}``
``GET /api/machines[/{id}]``                                        ``{"value"}`` / machine
``POST /api/machines/{id}/isolate`` / ``unisolate``                 201 machineAction ``Pending``
``GET /api/machineactions[/{id}]``                                  ``Pending`` -> ``InProgress`` ->
                                                                    ``Succeeded`` after
                                                                    ``action_seconds``
=================================================================  ====================================

- **Tenants**: every Entra tenant has its own apps (client id, secret, application permissions),
  users, incidents and machines. A token is bound to its tenant, app and audience (Graph or
  Defender): the data a call sees is its token's tenant's, so a user id of tenant B is 404 with a
  token of tenant A, exactly like the real services. A missing permission is 403.
- **Throttling**: a budget per app and tenant (``budget_per_window`` calls in ``budget_window``
  seconds; None: unlimited): past it 429 with ``Retry-After`` (whole seconds, rounded up) and the
  vendor's error body; :meth:`MicrosoftStandIn.throttle` forces the next n calls to 429.
- **Errors**: Entra ``{"error", "error_description": "AADSTS...", "error_codes", "timestamp",
  "trace_id", "correlation_id"}``; Graph ``{"error": {"code", "message", "innerError": {"date",
  "request-id", "client-request-id"}}}``; Defender ``{"error": {"code", "message", "target"}}``.
- **TLS**: the identity platform refuses an http authority (azure-identity), so the stand-in speaks
  HTTPS only, with a certificate of a CA made by :func:`ensure_certificates` (cryptography; SAN
  ``IP:127.0.0.1``), kept in the stack's run folder, never committed.
- **Request log**: method, path, query, status, the token's tenant and client id; never headers,
  secrets, tokens or bodies. ``GET /_records`` (for the stack's tests, not Microsoft's contract)
  answers it with every tenant's machine actions and each machine's isolation.

Assumed, not documented: the exact 429 budget (Graph's limits vary per resource; Defender documents
100 calls per minute and 1,500 per hour per app: here one sliding window), the moment an isolation
takes effect (when its action succeeds), and the wording of a second isolate while one is pending
(``ActiveRequestAlreadyExists``).

Not shown: delegated (user) tokens, certificates as client credentials, ``$select``/``$expand``/
``$filter`` beyond ``machineId eq '...'`` on machine actions and
``startswith(computerDnsName,'...')`` / ``computerDnsName eq '...'`` on machines, paging,
Conditional Access and continuous access evaluation (the ``claims`` challenge is accepted and
ignored), the Graph ``$batch`` endpoint, incidents' alerts, Defender's other actions (scan,
restrict app execution, investigation package), state beyond the process (it lives in memory, like moto's).
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import json
import math
import re
import secrets
import ssl
import threading
import time
import uuid
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote

from devstack.standins.base import (
    HOST,
    HttpStandIn,
    Request,
    Response,
    Route,
    ServiceArgs,
    StandInError,
    _Server,
    route,
    serve_main,
    service_argv,
    write_config_file,
)

GRAPH_SCOPE = "https://graph.microsoft.com/.default"
DEFENDER_SCOPE = "https://api.securitycenter.microsoft.com/.default"
AUDIENCES = {GRAPH_SCOPE: "graph", DEFENDER_SCOPE: "defender"}
TOKEN_SECONDS = 3599
# Application permissions (app roles) the routes need.
USER_READ = "User.Read.All"
USER_ENABLE_DISABLE = "User.EnableDisableAccount.All"
USER_REVOKE = "User.RevokeSessions.All"
AUTH_METHODS = "UserAuthenticationMethod.ReadWrite.All"
AUTH_METHODS_READ = "UserAuthenticationMethod.Read.All"
INCIDENTS_READ = "SecurityIncident.Read.All"
INCIDENTS_WRITE = "SecurityIncident.ReadWrite.All"
MACHINE_READ = "Machine.Read.All"
MACHINE_ISOLATE = "Machine.Isolate"
METHOD_KINDS = {
    "microsoftAuthenticatorMethods": "#microsoft.graph.microsoftAuthenticatorAuthenticationMethod",
    "phoneMethods": "#microsoft.graph.phoneAuthenticationMethod",
    "softwareOathMethods": "#microsoft.graph.softwareOathAuthenticationMethod",
    "fido2Methods": "#microsoft.graph.fido2AuthenticationMethod",
    "emailMethods": "#microsoft.graph.emailAuthenticationMethod",
    "passwordMethods": "#microsoft.graph.passwordAuthenticationMethod",
}
INCIDENT_STATUSES = ("active", "resolved", "inProgress", "redirected", "unknownFutureValue")
GUID = r"[0-9a-fA-F-]{36}"
SEG = r"([^/]+)"


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class App:
    client_id: str
    client_secret: str
    roles: frozenset[str]


@dataclass
class EntraTenant:
    """One Entra tenant: its apps and directory/security data (dicts in the vendor's shapes)."""

    tenant_id: str
    apps: dict[str, App] = field(default_factory=dict)
    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    methods: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # user id -> methods
    incidents: dict[str, dict[str, Any]] = field(default_factory=dict)
    machines: dict[str, dict[str, Any]] = field(default_factory=dict)
    actions: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def from_config(cls, tenant_id: str, config: Mapping[str, Any]) -> EntraTenant:
        """``config``: ``apps`` [{client_id, client_secret, roles}], ``users`` [{userPrincipalName,
        displayName, id?, accountEnabled?, methods?: [kind, ...]}], ``incidents`` [{id, displayName}],
        ``machines`` [{id, computerDnsName}]."""
        tenant = cls(tenant_id)
        for app in config.get("apps", []):
            tenant.apps[app["client_id"]] = App(
                app["client_id"], app["client_secret"], frozenset(app["roles"])
            )
        for user in config.get("users", []):
            uid = user.get("id") or str(
                uuid.uuid5(uuid.NAMESPACE_URL, f"{tenant_id}/{user['userPrincipalName']}")
            )
            tenant.users[uid] = {
                "id": uid,
                "userPrincipalName": user["userPrincipalName"],
                "displayName": user.get("displayName", user["userPrincipalName"]),
                "mail": user.get("mail", user["userPrincipalName"]),
                "accountEnabled": bool(user.get("accountEnabled", True)),
                "signInSessionsValidFromDateTime": "2026-01-01T00:00:00Z",
            }
            kinds = ["passwordMethods", *user.get("methods", ["microsoftAuthenticatorMethods"])]
            tenant.methods[uid] = [
                {
                    "@odata.type": METHOD_KINDS[kind],
                    "id": "28c10230-6103-485e-b985-444c60001490"
                    if kind == "passwordMethods"
                    else str(uuid.uuid5(uuid.NAMESPACE_URL, f"{uid}/{kind}")),
                }
                for kind in kinds
            ]
        for incident in config.get("incidents", []):
            tenant.incidents[str(incident["id"])] = {
                "id": str(incident["id"]),
                "tenantId": tenant_id,
                "displayName": incident.get("displayName", f"Incident {incident['id']}"),
                "status": incident.get("status", "active"),
                "severity": incident.get("severity", "high"),
                "createdDateTime": _now(),
                "lastUpdateDateTime": _now(),
                "comments": [],
            }
        for machine in config.get("machines", []):
            tenant.machines[machine["id"]] = {
                "id": machine["id"],
                "computerDnsName": machine["computerDnsName"],
                "osPlatform": machine.get("osPlatform", "Windows11"),
                "healthStatus": "Active",
                "riskScore": machine.get("riskScore", "High"),
                "aadDeviceId": machine.get("aadDeviceId"),
                "lastSeen": _now(),
                "isolated": False,  # not in Defender's machine entity: kept for the stand-in's own view
            }
        return tenant


@dataclass(frozen=True)
class Token:
    tenant_id: str
    client_id: str
    audience: str
    expires: float


@dataclass(frozen=True)
class MicrosoftRequest:
    """The request log's entry: no headers, no bodies, no tokens."""

    method: str
    path: str
    query: dict[str, list[str]]
    status: int
    at: float
    tenant_id: str | None
    client_id: str | None


class _TlsServer(_Server):
    ssl_context: ssl.SSLContext

    def finish_request(self, request: Any, client_address: Any) -> None:
        # The TLS handshake in the request's own thread, not in the accepting one.
        try:
            wrapped = self.ssl_context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return
        self.accepted_at[wrapped] = self.accepted_at.pop(request, time.monotonic())
        super().finish_request(wrapped, client_address)


class MicrosoftStandIn(HttpStandIn[MicrosoftRequest]):
    """Entra token endpoint + Graph v1.0 + Defender for Endpoint, per Entra tenant, over HTTPS.

    :param tenants: Entra tenant id -> its configuration (:meth:`EntraTenant.from_config`).
    :param cert_file: the server certificate chain (PEM); :param key_file: its key.
    :param budget_per_window: calls per app and tenant allowed in ``budget_window`` seconds; None: no limit.
    :param action_seconds: how long a machine action takes to succeed (Pending the first half).
    """

    keep_blank_values = True

    def __init__(
        self,
        tenants: Mapping[str, Mapping[str, Any]],
        *,
        cert_file: Path,
        key_file: Path,
        budget_per_window: int | None = None,
        budget_window: float = 10.0,
        action_seconds: float = 4.0,
        port: int = 0,
        max_recorded: int | None = None,
    ) -> None:
        super().__init__(port=port, max_recorded=max_recorded)
        self.tenants = {tid: EntraTenant.from_config(tid, config) for tid, config in tenants.items()}
        self.cert_file = cert_file
        self.key_file = key_file
        self.budget_per_window = budget_per_window
        self.budget_window = budget_window
        self.action_seconds = action_seconds
        self._tokens: dict[str, Token] = {}
        self._calls: dict[tuple[str, str], deque[float]] = {}
        self._forced_429: list[tuple[int, float]] = []  # [(count, retry_after)]
        self._routes: list[Route] = [
            ("POST", rf"/{SEG}/oauth2/v2\.0/token", self._token),
            ("GET", rf"/v1\.0/users/{SEG}", self._get_user),
            ("PATCH", rf"/v1\.0/users/{SEG}", self._patch_user),
            ("POST", rf"/v1\.0/users/{SEG}/revokeSignInSessions", self._revoke),
            ("GET", rf"/v1\.0/users/{SEG}/authentication/methods", self._list_methods),
            ("DELETE", rf"/v1\.0/users/{SEG}/authentication/{SEG}/{SEG}", self._delete_method),
            ("GET", r"/v1\.0/security/incidents", self._list_incidents),
            ("GET", rf"/v1\.0/security/incidents/{SEG}", self._get_incident),
            ("PATCH", rf"/v1\.0/security/incidents/{SEG}", self._patch_incident),
            ("POST", rf"/v1\.0/security/incidents/{SEG}/comments", self._comment_incident),
            ("GET", r"/api/machines", self._list_machines),
            ("GET", rf"/api/machines/{SEG}", self._get_machine),
            ("POST", rf"/api/machines/{SEG}/isolate", self._isolate),
            ("POST", rf"/api/machines/{SEG}/unisolate", self._unisolate),
            ("GET", r"/api/machineactions", self._list_actions),
            ("GET", rf"/api/machineactions/{SEG}", self._get_action),
        ]
        self._local = threading.local()

    # --- serving over TLS ------------------------------------------------------------------------
    def make_server(self, address: tuple[str, int]) -> _Server:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.cert_file, self.key_file)
        server = _TlsServer(self, address)
        server.ssl_context = context
        return server

    @property
    def base_url(self) -> str:
        return f"https://{HOST}:{self.port}"

    # --- test controls -----------------------------------------------------------------------------
    def throttle(self, count: int = 1, retry_after: float = 1.0) -> None:
        """The next ``count`` resource calls (not token requests) answer 429 with ``Retry-After``."""
        with self._lock:
            self._forced_429.append((count, retry_after))

    def tenant(self, tenant_id: str) -> EntraTenant:
        return self.tenants[tenant_id]

    # --- the vendor's shapes -----------------------------------------------------------------------
    def error_body(self, status: int, message: str) -> Any:
        code = {429: "TooManyRequests", 500: "InternalServerError"}.get(status, "generalException")
        return self._graph_error_body(code, message)

    @staticmethod
    def _graph_error_body(code: str, message: str) -> dict[str, Any]:
        request_id = str(uuid.uuid4())
        return {
            "error": {
                "code": code,
                "message": message,
                "innerError": {
                    "date": _now()[:19],
                    "request-id": request_id,
                    "client-request-id": request_id,
                },
            }
        }

    def _error(self, status: int, code: str, message: str, *, defender: bool = False) -> StandInError:
        body = (
            {"error": {"code": code, "message": message, "target": str(uuid.uuid4())}}
            if defender
            else self._graph_error_body(code, message)
        )
        return StandInError(message, Response(status, body))

    @staticmethod
    def _aad_error(status: int, error: str, code: int, description: str) -> StandInError:
        trace = str(uuid.uuid4())
        body = {
            "error": error,
            "error_description": f"AADSTS{code}: {description} Trace ID: {trace} Correlation ID: "
            f"{uuid.uuid4()} Timestamp: {_now()[:19]}Z",
            "error_codes": [code],
            "timestamp": _now()[:19] + "Z",
            "trace_id": trace,
            "correlation_id": str(uuid.uuid4()),
        }
        return StandInError(description, Response(status, body))

    def record(self, request: Request, response: Response) -> MicrosoftRequest:
        who = getattr(self._local, "who", (None, None))
        self._local.who = (None, None)
        return MicrosoftRequest(
            request.method, request.path, request.query, response.status, time.monotonic(), who[0], who[1]
        )

    # --- dispatch ------------------------------------------------------------------------------------
    def handle(self, request: Request) -> Response:
        self._local.who = (None, None)
        if request.path == "/_records" and request.method == "GET":
            return Response(200, self.records())
        found = route(self._routes, request.method, request.path)
        if found == 404:
            raise self._error(404, "UnknownError", f"Resource not found for the segment '{request.path}'.")
        if found == 405:
            raise self._error(
                405, "Request_BadRequest", "Specified HTTP method is not allowed for the request target."
            )
        action, groups = found
        if action == self._token:
            return action(request, *groups)
        audience = "defender" if request.path.startswith("/api/") else "graph"
        token = self._authenticate(request, audience)
        self._local.who = (token.tenant_id, token.client_id)
        if (limited := self._budget(token, request.arrived)) is not None:
            return limited
        with self._lock:
            return action(request, token, *groups)

    def _authenticate(self, request: Request, audience: str) -> Token:
        header = request.header("Authorization")
        defender = audience == "defender"
        if not header.startswith("Bearer "):
            raise self._error(401, "InvalidAuthenticationToken", "Access token is empty.", defender=defender)
        with self._lock:
            token = self._tokens.get(header[len("Bearer ") :])
        if token is None or token.expires < time.monotonic():
            raise self._error(
                401,
                "InvalidAuthenticationToken",
                "Access token validation failure. Invalid audience.",
                defender=defender,
            )
        if token.audience != audience:
            raise self._error(
                401,
                "InvalidAuthenticationToken",
                "Access token validation failure. Invalid audience.",
                defender=defender,
            )
        return token

    def _budget(self, token: Token, now: float) -> Response | None:
        """Counted by arrival (when the request reached the server), as the service counts."""
        with self._lock:
            if self._forced_429:
                count, retry_after = self._forced_429[0]
                if count <= 1:
                    self._forced_429.pop(0)
                else:
                    self._forced_429[0] = (count - 1, retry_after)
                return self._too_many(retry_after, token.audience)
            if self.budget_per_window is None:
                return None
            calls = self._calls.setdefault((token.tenant_id, token.client_id), deque())
            while calls and calls[0] <= now - self.budget_window:
                calls.popleft()
            if len(calls) >= self.budget_per_window:
                return self._too_many(calls[0] + self.budget_window - now, token.audience)
            calls.append(now)
        return None

    def _too_many(self, retry_after: float, audience: str) -> Response:
        seconds = str(max(1, math.ceil(retry_after)))
        if audience == "defender":
            body = {
                "error": {
                    "code": "TooManyRequests",
                    "message": "Too many requests.",
                    "target": str(uuid.uuid4()),
                }
            }
        else:
            body = self._graph_error_body("TooManyRequests", "Too many requests.")
        return Response(429, body, {"Retry-After": seconds})

    def _require(self, token: Token, role: str) -> EntraTenant:
        tenant = self.tenants[token.tenant_id]
        if role not in tenant.apps[token.client_id].roles:
            if token.audience == "defender":
                raise self._error(
                    403, "Forbidden", f"The application does not have the {role} permission.", defender=True
                )
            raise self._error(
                403, "Authorization_RequestDenied", "Insufficient privileges to complete the operation."
            )
        return tenant

    # --- Entra ID: client credentials ------------------------------------------------------------------
    def _token(self, request: Request, tenant_id: str) -> Response:
        form = {k: v[0] for k, v in parse_qs(request.body.decode("utf-8", "replace")).items()}
        tenant = self.tenants.get(tenant_id)
        if tenant is None:
            raise self._aad_error(400, "invalid_request", 90002, f"Tenant '{tenant_id}' not found.")
        if form.get("grant_type") != "client_credentials":
            raise self._aad_error(
                400, "unsupported_grant_type", 70003, "The app requested an unsupported grant type."
            )
        app = tenant.apps.get(form.get("client_id", ""))
        if app is None:
            raise self._aad_error(
                400,
                "unauthorized_client",
                700016,
                f"Application with identifier '{form.get('client_id', '')}' was not found in the directory "
                f"'{tenant_id}'.",
            )
        if not secrets.compare_digest(form.get("client_secret", ""), app.client_secret):
            raise self._aad_error(
                401,
                "invalid_client",
                7000215,
                "Invalid client secret provided. Ensure the secret being sent "
                "in the request is the client secret value, not the client secret ID.",
            )
        scope = form.get("scope", "")
        audience = AUDIENCES.get(scope)
        if audience is None:
            raise self._aad_error(
                400, "invalid_scope", 1002012, f"The provided value for scope {scope} is not valid."
            )
        value = secrets.token_urlsafe(32)
        with self._lock:
            self._tokens[value] = Token(tenant_id, app.client_id, audience, time.monotonic() + TOKEN_SECONDS)
        self._local.who = (tenant_id, app.client_id)
        return Response(
            200,
            {
                "token_type": "Bearer",
                "expires_in": TOKEN_SECONDS,
                "ext_expires_in": TOKEN_SECONDS,
                "access_token": value,
            },
        )

    # --- Graph: users ------------------------------------------------------------------------------
    def _user(self, tenant: EntraTenant, key: str) -> dict[str, Any]:
        key = unquote(key)
        user = tenant.users.get(key) or next(
            (u for u in tenant.users.values() if u["userPrincipalName"].lower() == key.lower()), None
        )
        if user is None:
            raise self._error(
                404,
                "Request_ResourceNotFound",
                f"Resource '{key}' does not exist or one of its "
                "queried reference-property objects are not present.",
            )
        return user

    @staticmethod
    def _user_view(user: Mapping[str, Any]) -> dict[str, Any]:
        return {"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#users/$entity", **user}

    def _get_user(self, request: Request, token: Token, key: str) -> Response:
        return Response(200, self._user_view(self._user(self._require(token, USER_READ), key)))

    def _patch_user(self, request: Request, token: Token, key: str) -> Response:
        tenant = self._require(token, USER_ENABLE_DISABLE)
        user = self._user(tenant, key)
        try:
            body = json.loads(request.body or b"{}")
        except ValueError:
            raise self._error(400, "BadRequest", "Unable to read JSON request payload.") from None
        unknown = set(body) - {"accountEnabled"}
        if unknown or not isinstance(body.get("accountEnabled"), bool):
            raise self._error(
                400,
                "Request_BadRequest",
                "Invalid property values for this app's permission: "
                f"{', '.join(sorted(unknown)) or 'accountEnabled must be a boolean'}.",
            )
        user["accountEnabled"] = body["accountEnabled"]
        return Response(204)

    def _revoke(self, request: Request, token: Token, key: str) -> Response:
        user = self._user(self._require(token, USER_REVOKE), key)
        user["signInSessionsValidFromDateTime"] = _now()[:19] + "Z"
        return Response(
            200, {"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#Edm.Boolean", "value": True}
        )

    def _list_methods(self, request: Request, token: Token, key: str) -> Response:
        roles = self.tenants[token.tenant_id].apps[token.client_id].roles
        tenant = self._require(token, AUTH_METHODS_READ if AUTH_METHODS_READ in roles else AUTH_METHODS)
        user = self._user(tenant, key)
        return Response(200, {"value": [dict(m) for m in tenant.methods.get(user["id"], [])]})

    def _delete_method(self, request: Request, token: Token, key: str, kind: str, method_id: str) -> Response:
        tenant = self._require(token, AUTH_METHODS)
        user = self._user(tenant, key)
        if kind not in METHOD_KINDS:
            raise self._error(400, "BadRequest", f"Resource not found for the segment '{kind}'.")
        if kind == "passwordMethods":
            raise self._error(400, "badRequest", "Deleting a password method is not supported.")
        methods = tenant.methods.get(user["id"], [])
        found = next(
            (m for m in methods if m["id"] == method_id and m["@odata.type"] == METHOD_KINDS[kind]), None
        )
        if found is None:
            raise self._error(404, "itemNotFound", "The requested authentication method was not found.")
        methods.remove(found)
        return Response(204)

    # --- Graph: security incidents -------------------------------------------------------------------
    def _incident(self, tenant: EntraTenant, incident_id: str) -> dict[str, Any]:
        incident = tenant.incidents.get(unquote(incident_id))
        if incident is None:
            raise self._error(404, "ResourceNotFound", f"Incident {incident_id} was not found.")
        return incident

    def _list_incidents(self, request: Request, token: Token) -> Response:
        tenant = (
            self._require(token, INCIDENTS_READ)
            if INCIDENTS_READ in self.tenants[token.tenant_id].apps[token.client_id].roles
            else self._require(token, INCIDENTS_WRITE)
        )
        return Response(200, {"value": [dict(i) for i in tenant.incidents.values()]})

    def _get_incident(self, request: Request, token: Token, incident_id: str) -> Response:
        roles = self.tenants[token.tenant_id].apps[token.client_id].roles
        tenant = self._require(token, INCIDENTS_READ if INCIDENTS_READ in roles else INCIDENTS_WRITE)
        return Response(200, dict(self._incident(tenant, incident_id)))

    def _patch_incident(self, request: Request, token: Token, incident_id: str) -> Response:
        tenant = self._require(token, INCIDENTS_WRITE)
        incident = self._incident(tenant, incident_id)
        body = json.loads(request.body or b"{}")
        status = body.get("status")
        if status is not None and status not in INCIDENT_STATUSES:
            raise self._error(400, "BadRequest", f"The value '{status}' is not valid for status.")
        for name in ("status", "classification", "determination", "assignedTo"):
            if name in body:
                incident[name] = body[name]
        incident["lastUpdateDateTime"] = _now()
        return Response(200, dict(incident))

    def _comment_incident(self, request: Request, token: Token, incident_id: str) -> Response:
        tenant = self._require(token, INCIDENTS_WRITE)
        incident = self._incident(tenant, incident_id)
        body = json.loads(request.body or b"{}")
        if not isinstance(body.get("comment"), str) or not body["comment"].strip():
            raise self._error(400, "BadRequest", "The comment is required.")
        incident["comments"].append(
            {
                "comment": body["comment"],
                "createdByDisplayName": tenant.apps[token.client_id].client_id,
                "createdDateTime": _now(),
            }
        )
        return Response(
            200,
            {
                "@odata.context": "#Collection(microsoft.graph.security.alertComment)",
                "value": list(incident["comments"]),
            },
        )

    # --- Defender for Endpoint -------------------------------------------------------------------------
    def _machine(self, tenant: EntraTenant, machine_id: str) -> dict[str, Any]:
        self._settle(tenant)
        machine = tenant.machines.get(unquote(machine_id))
        if machine is None:
            raise self._error(404, "ResourceNotFound", f"Machine {machine_id} was not found", defender=True)
        return machine

    @staticmethod
    def _machine_view(machine: Mapping[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in machine.items() if k != "isolated"}

    def _list_machines(self, request: Request, token: Token) -> Response:
        tenant = self._require(token, MACHINE_READ)
        self._settle(tenant)
        machines = list(tenant.machines.values())
        # $filter: startswith(computerDnsName,'x') or computerDnsName eq 'x' (case-insensitive)
        clause = (request.query.get("$filter") or [""])[0].strip()
        if match := re.fullmatch(r"startswith\(computerDnsName,\s*'([^']*)'\)", clause):
            machines = [m for m in machines if m["computerDnsName"].lower().startswith(match[1].lower())]
        elif match := re.fullmatch(r"computerDnsName eq '([^']*)'", clause):
            machines = [m for m in machines if m["computerDnsName"].lower() == match[1].lower()]
        return Response(
            200,
            {
                "@odata.context": "https://api.securitycenter.microsoft.com/api/$metadata#Machines",
                "value": [self._machine_view(m) for m in machines],
            },
        )

    def _get_machine(self, request: Request, token: Token, machine_id: str) -> Response:
        return Response(
            200, self._machine_view(self._machine(self._require(token, MACHINE_READ), machine_id))
        )

    def _isolate(self, request: Request, token: Token, machine_id: str) -> Response:
        return self._machine_action(request, token, machine_id, "Isolate")

    def _unisolate(self, request: Request, token: Token, machine_id: str) -> Response:
        return self._machine_action(request, token, machine_id, "Unisolate")

    def _machine_action(self, request: Request, token: Token, machine_id: str, kind: str) -> Response:
        tenant = self._require(token, MACHINE_ISOLATE)
        machine = self._machine(tenant, machine_id)
        try:
            body = json.loads(request.body or b"{}")
        except ValueError:
            raise self._error(400, "InvalidRequestBody", "Request body is incorrect", defender=True) from None
        if not isinstance(body.get("Comment"), str) or not body["Comment"]:
            raise self._error(400, "InvalidRequestBody", "Comment is required", defender=True)
        isolation = body.get("IsolationType", "Full") if kind == "Isolate" else None
        if isolation not in (None, "Full", "Selective"):
            raise self._error(
                400, "InvalidRequestBody", f"Invalid IsolationType '{isolation}'", defender=True
            )
        pending = [
            a
            for a in tenant.actions.values()
            if a["machineId"] == machine["id"]
            and a["type"] in ("Isolate", "Unisolate")
            and a["status"] in ("Pending", "InProgress")
        ]
        if pending:
            raise self._error(
                400, "ActiveRequestAlreadyExists", "Action is already in progress", defender=True
            )
        action = {
            "id": str(uuid.uuid4()),
            "type": kind,
            "scope": isolation,
            "requestor": tenant.apps[token.client_id].client_id,
            "requestorComment": body["Comment"],
            "status": "Pending",
            "machineId": machine["id"],
            "computerDnsName": machine["computerDnsName"],
            "creationDateTimeUtc": _now(),
            "lastUpdateDateTimeUtc": _now(),
            "_created": time.monotonic(),
        }
        tenant.actions[action["id"]] = action
        return Response(201, self._action_view(action))

    def _settle(self, tenant: EntraTenant) -> None:
        """Eventual completion: Pending for the first half of ``action_seconds``, then InProgress,
        then Succeeded (the machine's isolation changes then)."""
        now = time.monotonic()
        for action in tenant.actions.values():
            if action["status"] in ("Succeeded", "Failed", "Cancelled"):
                continue
            age = now - action["_created"]
            status = (
                "Succeeded"
                if age >= self.action_seconds
                else "InProgress"
                if age >= self.action_seconds / 2
                else "Pending"
            )
            if status != action["status"]:
                action["status"] = status
                action["lastUpdateDateTimeUtc"] = _now()
                if status == "Succeeded":
                    tenant.machines[action["machineId"]]["isolated"] = action["type"] == "Isolate"

    @staticmethod
    def _action_view(action: Mapping[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in action.items() if not k.startswith("_")}

    def _list_actions(self, request: Request, token: Token) -> Response:
        tenant = self._require(token, MACHINE_READ)
        self._settle(tenant)
        actions = list(tenant.actions.values())
        for clause in (request.query.get("$filter") or [""])[0].split(" and "):
            parts = clause.strip().split(" eq ")
            if len(parts) == 2 and parts[0] in ("machineId", "type", "status"):
                actions = [a for a in actions if a[parts[0]] == parts[1].strip("'")]
        return Response(200, {"value": [self._action_view(a) for a in actions]})

    def _get_action(self, request: Request, token: Token, action_id: str) -> Response:
        tenant = self._require(token, MACHINE_READ)
        self._settle(tenant)
        action = tenant.actions.get(action_id)
        if action is None:
            raise self._error(
                404, "ResourceNotFound", f"Machine action {action_id} was not found", defender=True
            )
        return Response(200, self._action_view(action))

    # --- a view for tests ------------------------------------------------------------------------------
    def records(self) -> dict[str, Any]:
        """What ``GET /_records`` answers (the stack's tests read it; not part of the vendor's contract):
        the request log (method, path, query, status, the token's tenant and client id: no headers,
        bodies or tokens) and every tenant's machine actions and machines' isolation."""
        with self._lock:
            for tenant in self.tenants.values():
                self._settle(tenant)
            return {
                "requests": [
                    {
                        "method": r.method,
                        "path": r.path,
                        "query": r.query,
                        "status": r.status,
                        "at": r.at,
                        "tenant_id": r.tenant_id,
                        "client_id": r.client_id,
                    }
                    for r in self._log
                    if r.path != "/_records"
                ],
                "machine_actions": {
                    tid: [self._action_view(a) for a in t.actions.values()] for tid, t in self.tenants.items()
                },
                "isolated": {
                    tid: {m["id"]: bool(m["isolated"]) for m in t.machines.values()}
                    for tid, t in self.tenants.items()
                },
            }

    def machine_isolated(self, tenant_id: str, machine_id: str) -> bool:
        with self._lock:
            tenant = self.tenants[tenant_id]
            self._settle(tenant)
            return bool(tenant.machines[machine_id]["isolated"])


# --- TLS material ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TlsFiles:
    ca_file: Path
    cert_file: Path
    key_file: Path


def ensure_certificates(folder: Path, *, days: int = 30) -> TlsFiles:
    """A CA and a server certificate for ``IP:127.0.0.1`` in ``folder`` (made once; the key 0600).

    Clients trust the CA file (a connection's ``verify`` extra); nothing here is committed.
    """
    files = TlsFiles(folder / "ca.pem", folder / "server.pem", folder / "server-key.pem")
    if files.ca_file.exists() and files.cert_file.exists() and files.key_file.exists():
        return files
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, "orchestrator devstack Microsoft stand-in CA")]
    )
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(HOST))]), critical=False
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    files.key_file.write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    files.key_file.chmod(0o600)
    files.cert_file.write_bytes(cert.public_bytes(pem))
    files.ca_file.write_bytes(ca.public_bytes(pem))
    return files


# --- the stand-in as a service of the local stack ------------------------------------------------------
SERVICE = "microsoft-standin"
PORT_OFFSET = 45  # profile.api_port + 45 (RT +10, log servers +13.., ERP +20, Redis +30, MFA +40)
CONFIG_LOCAL_NAME = "microsoft-standin.json"
# What each capability's app registration may do (application permissions), least privilege.
CAPABILITY_ROLES: dict[str, tuple[str, ...]] = {
    "entra-user-inspect": (USER_READ, AUTH_METHODS_READ, INCIDENTS_READ),
    "entra-user-disable": (USER_READ, USER_ENABLE_DISABLE, USER_REVOKE, AUTH_METHODS, INCIDENTS_WRITE),
    "entra-user-enable": (USER_READ, USER_ENABLE_DISABLE, INCIDENTS_WRITE),
    "incident-writeback": (INCIDENTS_WRITE,),  # comments and status only (include/workflows/incidents.py)
}
DEFENDER_CAPABILITY_ROLES: dict[str, tuple[str, ...]] = {
    "device-inspect": (MACHINE_READ,),
    "device-isolate": (MACHINE_READ, MACHINE_ISOLATE),
    "device-release": (MACHINE_READ, MACHINE_ISOLATE),  # Machine.Isolate covers unisolate too
}
# The demo directory of every customer tenant (UPNs in the tenant's first Entra domain).
DEMO_USERS: tuple[tuple[str, str, list[str]], ...] = (
    ("jdoe", "Jane Doe", ["microsoftAuthenticatorMethods", "phoneMethods"]),
    ("mallory", "Mallory Example", ["microsoftAuthenticatorMethods"]),
    ("svc-backup", "Backup service", []),
)


def port(profile: Any) -> int:
    return int(profile.api_port) + PORT_OFFSET


def base_url(profile: Any) -> str:
    return f"https://{HOST}:{port(profile)}"


def tls_dir(profile: Any) -> Path:
    return Path(profile.root) / "run" / "microsoft-tls"


def _client_id(profile: Any, tenant: str, app: str) -> str:
    return profile.local_secret(f"microsoft-{tenant}-{app}-client-id", lambda: str(uuid.uuid4()))


def _client_secret(profile: Any, tenant: str, app: str) -> str:
    return profile.local_secret(
        f"microsoft-{tenant}-{app}-client-secret", lambda: "Q~" + secrets.token_urlsafe(30)
    )


def entra_tenants() -> dict[str, Any]:
    """tenants.yaml's customers that have an Entra tenant: name -> Tenant."""
    from include.policies.tenants import load_tenants, tenant_ids

    policy = load_tenants()
    return {name: policy.tenant(name) for name in tenant_ids() if policy.tenant(name).entra_tenant_id}


def standin_config(profile: Any) -> dict[str, Any]:
    """The stand-in's tenants: per customer its apps (one per capability, and Defender's), demo users,
    one incident and two machines."""
    config: dict[str, Any] = {}
    for name, tenant in entra_tenants().items():
        domain = tenant.entra_domains[0] if tenant.entra_domains else f"{name}.example"
        apps = [
            {
                "client_id": _client_id(profile, name, app),
                "client_secret": _client_secret(profile, name, app),
                "roles": list(roles),
            }
            for app, roles in [*CAPABILITY_ROLES.items(), *DEFENDER_CAPABILITY_ROLES.items()]
        ]
        config[tenant.entra_tenant_id] = {
            "apps": apps,
            "users": [
                {"userPrincipalName": f"{uid}@{domain}", "displayName": display, "methods": methods}
                for uid, display, methods in DEMO_USERS
            ],
            "incidents": [{"id": "1001", "displayName": f"Suspicious sign-in ({name})"}],
            "machines": [
                {"id": hashlib_id(name, "ws-001"), "computerDnsName": f"ws-001.{domain}"},
                {
                    "id": hashlib_id(name, "srv-db-01"),
                    "computerDnsName": f"srv-db-01.{domain}",
                    "osPlatform": "WindowsServer2022",
                },
            ],
        }
    return config


def hashlib_id(tenant: str, machine: str) -> str:
    """A Defender machine id (40 hex digits) that is stable per tenant and machine name."""
    import hashlib

    return hashlib.sha1(f"{tenant}/{machine}".encode(), usedforsecurity=False).hexdigest()


def connection(
    profile: Any, tenant: str, app: str, *, defender: bool = False, extra: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The Airflow ``msgraph`` connection of ``tenant``'s app ``app`` (a capability or ``defender``)."""
    entra = entra_tenants()[tenant].entra_tenant_id
    url = base_url(profile)
    return {
        "conn_type": "msgraph",
        "login": _client_id(profile, tenant, app),
        "password": _client_secret(profile, tenant, app),
        "extra": {
            "tenant_id": entra,
            "authority": url,
            "base_url": f"{url}/api" if defender else f"{url}/v1.0",
            "scopes": DEFENDER_SCOPE if defender else GRAPH_SCOPE,
            "allowed_hosts": HOST,
            "disable_instance_discovery": True,
            "verify": str(tls_dir(profile) / "ca.pem"),
            # Graph: per app and tenant (one app per tenant and capability here).
            "rate_limit_per_second": 20,
            "rate_limit_burst": 20,
            "retry_max_attempts": 6,
            **(extra or {}),
        },
    }


def write_config(profile: Any) -> Path:
    """The stand-in's configuration (client secrets included) as a 0600 file of the profile."""
    return write_config_file(profile, CONFIG_LOCAL_NAME, standin_config(profile))


def standin_argv(profile: Any) -> list[str]:
    return service_argv(
        "devstack.standins.microsoft",
        port(profile),
        write_config(profile),
        "--tls-dir",
        str(tls_dir(profile)),
        "--budget-per-window",
        "200",
        "--budget-window",
        "10",
        "--action-seconds",
        "4",
    )


def main(argv: list[str] | None = None) -> None:
    """Serve on 127.0.0.1 until SIGTERM or SIGINT: the local stack's Entra/Graph/Defender.

    The tenants' configuration (client secrets included) is read from a file (0600, the profile's
    secrets folder), never from the command line, where ``ps`` would show it.
    """

    def options(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--tls-dir", type=Path, required=True)
        parser.add_argument("--budget-per-window", type=int, default=None)
        parser.add_argument("--budget-window", type=float, default=10.0)
        parser.add_argument("--action-seconds", type=float, default=4.0)

    def build(args: argparse.Namespace, service: ServiceArgs) -> MicrosoftStandIn:
        tls = ensure_certificates(args.tls_dir)
        return MicrosoftStandIn(
            args.config,
            cert_file=tls.cert_file,
            key_file=tls.key_file,
            budget_per_window=args.budget_per_window,
            budget_window=args.budget_window,
            action_seconds=args.action_seconds,
            **service,
        )

    serve_main("Entra ID / Microsoft Graph / Defender stand-in (local stack)", build, argv, options=options)


if __name__ == "__main__":
    main()
