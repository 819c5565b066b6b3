"""Microsoft Graph (Entra ID users, security incidents) and Defender for Endpoint, per customer tenant.

Every customer is its own Entra tenant with its own app registration. Its credentials are an Airflow
``msgraph`` connection (``login`` = client id, ``password`` = client secret, extras ``tenant_id``,
``authority``, ``base_url``, ``scopes``, ``verify``, ``allowed_hosts``, and the connectors' rate-limit
and retry extras) stored as a secret in the tenant's own AWS account, under the capability's path:
``orchestrator/<tenant>/<capability>/msgraph`` (Graph) or ``.../defender`` (Defender). The hook reads it
as the capability's role in that account (:func:`include.connectors.aws.tenant_connection`), so:

- the connection is resolved from the run's tenant, never from a connection id a caller names: a
  run of tenant A asking for tenant B is refused by :func:`~include.connectors.aws.assume_role_request`
  before any AWS or Microsoft call, and a ``credential`` naming anything but a leaf of the tenant's
  own path (another tenant's secret, a path) is refused before that;
- the connection's Entra ``tenant_id`` must be the tenant's ``entra_tenant_id`` of ``tenants.yaml``:
  a secret seeded with another customer's app is refused before the token request;
- a privileged capability (``entra-user-disable``) needs the verified approval before its role, and so
  its credential, can be had at all.

Calls go through the provider's
:class:`~airflow.providers.microsoft.azure.hooks.msgraph.KiotaRequestAdapterHook`
(azure-identity client credentials, the kiota HTTP adapter) and through
:meth:`~include.connectors.base.ConnectorHook.call`: the shared rate limit (``rate_limit_*`` and
``tenant_rate_limit_*`` extras: per app and per tenant) and the retry policy, which waits out a 429's
``Retry-After``. kiota's own retry handler is switched off per request (it would resend a throttled
call without a permit from the shared limiter), and responses are read raw (status, headers, body),
so a 429 keeps its ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import threading
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar, TypeVar
from urllib.parse import urlparse

from include.connectors.aws import TenantBound, tenant_connection
from include.connectors.base import ConnectorHook
from include.connectors.context import RunContext
from include.connectors.errors import PermanentError, TransientError
from include.connectors.retry import parse_retry_after
from include.policies.capabilities import get_capability

T = TypeVar("T")
GRAPH_SCOPE = "https://graph.microsoft.com/.default"
DEFENDER_SCOPE = "https://api.securitycenter.microsoft.com/.default"
_LEAF = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
# Authentication methods a user can lose: every kind but the password (which Graph cannot delete).
METHOD_SEGMENTS = {
    "#microsoft.graph.microsoftAuthenticatorAuthenticationMethod": "microsoftAuthenticatorMethods",
    "#microsoft.graph.phoneAuthenticationMethod": "phoneMethods",
    "#microsoft.graph.softwareOathAuthenticationMethod": "softwareOathMethods",
    "#microsoft.graph.fido2AuthenticationMethod": "fido2Methods",
    "#microsoft.graph.emailAuthenticationMethod": "emailMethods",
}

# azure-core logs every request's headers at INFO (the Authorization header redacted): noise in the
# task log for every call. Warnings and errors still show.
for _name in ("azure.core.pipeline.policies.http_logging_policy", "azure.identity"):
    logging.getLogger(_name).setLevel(logging.WARNING)

# One event loop per process for the provider's async adapter: its httpx client and token cache are
# bound to the loop they were first used on (and cached per connection, process-wide).
_LOOP: asyncio.AbstractEventLoop | None = None
_LOOP_PID = 0
_LOOP_LOCK = threading.Lock()


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    global _LOOP, _LOOP_PID
    with _LOOP_LOCK:
        if _LOOP is None or _LOOP.is_closed() or os.getpid() != _LOOP_PID:
            if _LOOP_PID and os.getpid() != _LOOP_PID:
                # A forked child: the parent's adapters are bound to the parent's loop and sockets.
                from airflow.providers.microsoft.azure.hooks.msgraph import KiotaRequestAdapterHook

                KiotaRequestAdapterHook.cached_request_adapters.clear()
            _LOOP, _LOOP_PID = asyncio.new_event_loop(), os.getpid()
        return _LOOP.run_until_complete(coroutine)


class TenantCredentialError(ValueError):
    """A credential that is not the run's tenant's own: refused before any call."""


class MicrosoftInputError(ValueError):
    """Bad input refused before any side effect (unknown user, a user of another tenant)."""


@dataclass(frozen=True)
class RawResponse:
    status: int
    headers: Mapping[str, str]
    body: Any


def _raw_handler() -> Any:
    from kiota_abstractions.response_handler import ResponseHandler

    class _Raw(ResponseHandler):
        async def handle_response_async(self, response: Any, error_map: Any = None) -> RawResponse:
            try:
                body = response.json() if response.content else None
            except ValueError:
                body = response.text
            return RawResponse(response.status_code, dict(response.headers), body)

    return _Raw()


def _adapter_hook(cache_key: str, connection: Any, scope: str) -> Any:
    """The provider's hook on a connection object we hand it (not looked up by id)."""
    from airflow.providers.microsoft.azure.hooks.msgraph import KiotaRequestAdapterHook

    class _TenantAdapterHook(KiotaRequestAdapterHook):
        async def get_async_conn(self) -> Any:
            # The provider looks the connection up by id (BaseHook.aget_connection): ours is not in
            # the secrets backend but read as the capability's role, so it is handed over here.
            cached = self.cached_request_adapters.get(self.conn_id, (None, None))[1]
            if cached is not None and self._is_http_client_closed(cached):
                cached = None
            if cached is None:
                built = self._build_request_adapter(connection, connection.extra_dejson)
                self.cached_request_adapters[self.conn_id] = built
                cached = built[1]
            self.api_version = self.cached_request_adapters[self.conn_id][0]
            self.allowed_netloc = urlparse(cached.base_url).netloc.lower()
            return cached

        def request_information(self, *args: Any, **kwargs: Any) -> Any:
            from kiota_http.middleware.options import ResponseHandlerOption, RetryHandlerOption

            info = super().request_information(*args, **kwargs)
            info.request_options[ResponseHandlerOption.get_key()] = ResponseHandlerOption(
                response_handler=_raw_handler()
            )
            # One attempt per call: retries are ours, each with a permit of the shared limiter.
            info.request_options[RetryHandlerOption.get_key()] = RetryHandlerOption(
                delay=0, max_retries=0, should_retry=False
            )
            return info

    return _TenantAdapterHook(conn_id=cache_key, scopes=[scope], timeout=30)


def graph_message(body: Any) -> str:
    """The vendor's message of an error body (Graph/Defender ``error.message``, Entra
    ``error_description``)."""
    if isinstance(body, Mapping):
        error = body.get("error")
        if isinstance(error, Mapping):
            return f"{error.get('code', '')}: {error.get('message', '')}".strip(": ")[:500]
        if body.get("error_description"):
            return str(body["error_description"]).split(" Trace ID:")[0][:500]
        if error:
            return str(error)[:500]
    return str(body)[:500] if body else ""


class MicrosoftTenantHook(TenantBound, ConnectorHook):
    """Base of :class:`GraphHook` and :class:`DefenderHook`: the tenant's own app, read as a capability.

    :param capability: the declared capability whose secret path holds the credential (and whose role,
        in the tenant's account, reads it); keyword-only, so the ``capability-calls`` policy finds it.
    :param tenant: the customer tenant (tenants.yaml); the run must be this tenant's.
    :param run_context: the run making the calls; default: the running task's.
    :param credential: the secret's leaf under ``orchestrator/<tenant>/<capability>/``; default the
        hook's (``msgraph`` / ``defender``). Anything else (a path, another tenant's name) is refused.
    :param aws_conn_id: the platform's base AWS connection (to assume the capability role).
    """

    system: ClassVar[str] = "microsoft"
    credential_leaf: ClassVar[str] = ""
    scope: ClassVar[str] = ""
    conn_type = "msgraph"
    hook_name = "Microsoft (per tenant)"

    def __init__(
        self,
        *,
        capability: str,
        tenant: str,
        run_context: RunContext | None = None,
        credential: str | None = None,
        aws_conn_id: str = "aws_default",
        **kwargs: Any,
    ) -> None:
        leaf = credential or self.credential_leaf
        if not _LEAF.match(leaf) or leaf != self.credential_leaf:
            raise TenantCredentialError(
                f"{self.system}: credential {leaf[:80]!r} refused: a {type(self).__name__} of tenant "
                f"{tenant!r} uses only its own {self.credential_leaf!r} secret under "
                f"orchestrator/{tenant}/{capability}/"
            )
        super().__init__(f"{self.credential_leaf}:{tenant}", tenant=tenant, **kwargs)
        get_capability(capability)  # an undeclared capability is a PolicyError
        self.capability = capability
        self.aws_conn_id = aws_conn_id
        self.given_run_context = run_context

    @property
    def secret_id(self) -> str:
        return f"{get_capability(self.capability).secret_prefix(self.tenant)}{self.credential_leaf}"

    @cached_property
    def connection(self) -> Any:
        """The tenant's app connection, read as the capability's role in the tenant's own account
        (:func:`~include.connectors.aws.tenant_connection`), and refused unless it names the tenant's
        own Entra tenant."""
        from include.policies.tenants import entra_tenant_id

        expected = entra_tenant_id(self.tenant)  # no Entra tenant configured: refused before AWS
        connection = tenant_connection(
            self.capability,
            self.tenant,
            self.secret_id,
            conn_id=self.conn_id,
            run_context=self.run_context,
            aws_conn_id=self.aws_conn_id,
            error=lambda message: TenantCredentialError(f"{self.system}: {message}"),
            system=self.credential_leaf,
            default_conn_type="msgraph",
        )
        named = connection.extra_dejson.get("tenant_id")
        if named != expected:
            raise TenantCredentialError(
                f"{self.system}: the {self.credential_leaf} credential of tenant {self.tenant!r} names Entra "
                f"tenant {named!r}, not the tenant's {expected!r} (tenants.yaml): refused"
            )
        return connection

    @cached_property
    def adapter(self) -> Any:
        conn = self.connection
        # The provider caches adapters per conn_id, process-wide: the key names tenant, capability and
        # a digest of the credential, so a rotated secret gets a new adapter and no two tenants share one.
        digest = hashlib.sha256(f"{conn.login}:{conn.password}:{conn.extra}".encode()).hexdigest()[:12]
        return _adapter_hook(f"{self.system}:{self.tenant}:{self.capability}:{digest}", conn, self.scope)

    def ready(self) -> None:
        """Build the adapter and fetch the token before the first permit is taken: the token comes from
        another service (Entra) and must not delay a call the shared limiter has already timed."""
        if self.__dict__.get("_ready"):
            return
        from azure.core.exceptions import ClientAuthenticationError

        hook = self.adapter

        async def token() -> None:
            adapter = await hook.get_async_conn()
            provider = adapter._authentication_provider.access_token_provider
            await provider._credentials.get_token(self.scope)

        try:
            _run(token())
        except ClientAuthenticationError as exc:
            text = str(exc.message or exc).split(" Trace ID:")[0][:400]
            raise PermanentError(
                f"token for tenant {self.tenant!r} refused: {text}", system=self.system, operation="token"
            ) from None
        self.__dict__["_ready"] = True

    # --- the one way to call ---------------------------------------------------------------------------
    def request(
        self,
        method: str,
        url: str,
        *,
        operation: str,
        path_parameters: Mapping[str, str] | None = None,
        query: Mapping[str, str] | None = None,
        data: Mapping[str, Any] | None = None,
        expect: tuple[int, ...] = (200, 201, 204),
        retry: bool = True,
    ) -> RawResponse:
        """One logical call: rate-limited, a 429/5xx retried after its ``Retry-After``, other errors
        permanent."""
        self.ready()
        return self.call(
            operation,
            lambda: self._send(method, url, operation, dict(path_parameters or {}), query, data, expect),
            retry=retry,
        )

    def _send(
        self,
        method: str,
        url: str,
        operation: str,
        path_parameters: dict[str, str],
        query: Mapping[str, str] | None,
        data: Mapping[str, Any] | None,
        expect: tuple[int, ...],
    ) -> RawResponse:
        import httpx
        from azure.core.exceptions import ClientAuthenticationError, ServiceRequestError

        hook = self.adapter
        try:
            response: RawResponse = _run(
                hook.run(
                    url=url,
                    method=method,
                    path_parameters=path_parameters,
                    query_parameters=dict(query) if query else None,
                    data=dict(data) if data is not None else None,
                )
            )
        except (httpx.TransportError, ServiceRequestError) as exc:
            raise TransientError(
                f"{type(exc).__name__} calling {method} {url}", system=self.system, operation=operation
            ) from None
        except ClientAuthenticationError as exc:
            # azure-identity's message carries the Entra error (AADSTS...), never the secret.
            text = str(exc.message or exc).split(" Trace ID:")[0][:400]
            raise PermanentError(
                f"token for tenant {self.tenant!r} refused: {text}", system=self.system, operation=operation
            ) from None
        if response.status in expect:
            return response
        message = f"{method} {url} -> HTTP {response.status}: {graph_message(response.body)}"
        if response.status in (429, 500, 502, 503, 504):
            raise TransientError(
                message,
                system=self.system,
                operation=operation,
                status=response.status,
                retry_after=parse_retry_after(
                    response.headers.get("retry-after") or response.headers.get("Retry-After")
                ),
            )
        raise PermanentError(message, system=self.system, operation=operation, status=response.status)


@dataclass(frozen=True)
class EntraUser:
    id: str
    user_principal_name: str
    display_name: str
    account_enabled: bool
    sessions_valid_from: str

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> EntraUser:
        return cls(
            id=str(body["id"]),
            user_principal_name=str(body.get("userPrincipalName", "")),
            display_name=str(body.get("displayName", "")),
            account_enabled=bool(body.get("accountEnabled")),
            sessions_valid_from=str(body.get("signInSessionsValidFromDateTime", "")),
        )

    def as_xcom(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "user_principal_name": self.user_principal_name,
            "display_name": self.display_name,
            "account_enabled": self.account_enabled,
            "sessions_valid_from": self.sessions_valid_from,
        }


USER_KEY = re.compile(
    r"^(?:[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}|[A-Za-z0-9._%+'-]{1,64}@[A-Za-z0-9.-]{1,190})$"
)


# A Microsoft Graph security incident id (Defender XDR, Sentinel incidents included): a number.
INCIDENT_ID_PATTERN = r"^[0-9]{1,19}$"
_INCIDENT_ID = re.compile(INCIDENT_ID_PATTERN)
# What an update may set (Graph's incidentStatus, less ``unknownFutureValue``).
INCIDENT_STATUSES = ("active", "inProgress", "resolved", "redirected")


def check_incident_status(status: str) -> str:
    """``status`` if an update may set it (:data:`INCIDENT_STATUSES`), else :class:`MicrosoftInputError`."""
    if status not in INCIDENT_STATUSES:
        raise MicrosoftInputError(f"incident status {status!r}: one of {', '.join(INCIDENT_STATUSES)}")
    return status


def check_incident_id(value: object) -> str:
    """``value`` if it is a Graph security incident id (1-19 digits), else :class:`MicrosoftInputError`."""
    text = str(value)
    if not _INCIDENT_ID.fullmatch(text):
        raise MicrosoftInputError(
            f"incident id {text[:80]!r} is not a Defender/Sentinel incident id (1-19 digits)"
        )
    return text


class GraphHook(MicrosoftTenantHook):
    """Microsoft Graph v1.0 of one customer tenant: users, sign-in sessions, authentication methods,
    security incidents."""

    system: ClassVar[str] = "msgraph"
    credential_leaf: ClassVar[str] = "msgraph"
    scope: ClassVar[str] = GRAPH_SCOPE

    # --- users ------------------------------------------------------------------------------------------
    def get_user(self, key: str) -> EntraUser:
        """The user by object id or user principal name.

        A malformed key, or a UPN outside the tenant's ``entra_domains`` (tenants.yaml), is a
        :class:`MicrosoftInputError` before any call; an unknown user one after the read-only lookup.
        """
        from include.policies.tenants import load_tenants

        domains = load_tenants().tenant(self.tenant).entra_domains
        if not USER_KEY.match(key):
            raise MicrosoftInputError(f"user {key[:80]!r} is neither an object id nor a user principal name")
        if "@" in key and domains and key.rsplit("@", 1)[1].lower() not in {d.lower() for d in domains}:
            raise MicrosoftInputError(
                f"user {key!r} is not in tenant {self.tenant!r} (its domains: {', '.join(domains)})"
            )
        try:
            response = self.request("GET", "users/{key}", operation="get-user", path_parameters={"key": key})
        except PermanentError as error:
            if error.status == 404:
                raise MicrosoftInputError(
                    f"user {key!r} not found in the Entra tenant of {self.tenant!r}"
                ) from None
            raise
        return EntraUser.of(response.body)

    def set_account_enabled(self, user: EntraUser, enabled: bool) -> bool:
        """Sign-in allowed or blocked; returns whether anything changed (a re-run changes nothing)."""
        current = self.get_user(user.id)
        if current.account_enabled == enabled:
            return False
        self.request(
            "PATCH",
            "users/{id}",
            operation="enable-user" if enabled else "disable-user",
            path_parameters={"id": user.id},
            data={"accountEnabled": enabled},
        )
        return True

    def revoke_sessions(self, user: EntraUser) -> str:
        """Invalidate the user's refresh tokens and session cookies; returns the new valid-from time."""
        self.request(
            "POST",
            "users/{id}/revokeSignInSessions",
            operation="revoke-sessions",
            path_parameters={"id": user.id},
        )
        return self.get_user(user.id).sessions_valid_from

    def authentication_methods(self, user: EntraUser) -> list[dict[str, Any]]:
        response = self.request(
            "GET",
            "users/{id}/authentication/methods",
            operation="list-auth-methods",
            path_parameters={"id": user.id},
        )
        return [dict(m) for m in (response.body or {}).get("value", [])]

    def delete_mfa_methods(self, user: EntraUser) -> list[str]:
        """Delete every authentication method but the password (the MFA reset); returns what went."""
        deleted = []
        for method in self.authentication_methods(user):
            segment = METHOD_SEGMENTS.get(str(method.get("@odata.type")))
            if segment is None:
                continue
            try:
                self.request(
                    "DELETE",
                    "users/{id}/authentication/" + segment + "/{mid}",
                    operation="delete-auth-method",
                    path_parameters={"id": user.id, "mid": str(method["id"])},
                )
            except PermanentError as error:
                if error.status != 404:  # gone meanwhile: the end state is reached
                    raise
            deleted.append(f"{segment}/{method['id']}")
        return deleted

    # --- security incidents -----------------------------------------------------------------------------
    def get_incident(self, incident_id: str) -> dict[str, Any]:
        """The incident (with its ``comments``) in this tenant's Defender/Sentinel; a malformed id is a
        :class:`MicrosoftInputError` before any call, an id the tenant does not have (another tenant's)
        one after the lookup, which used this tenant's credentials only."""
        check_incident_id(incident_id)
        try:
            response = self.request(
                "GET",
                "security/incidents/{id}",
                operation="get-incident",
                path_parameters={"id": incident_id},
            )
        except PermanentError as error:
            if error.status == 404:
                raise MicrosoftInputError(
                    f"incident {incident_id!r} not found in the Defender/Sentinel of tenant {self.tenant!r}"
                ) from None
            raise
        return dict(response.body)

    def write_back_incident(
        self, incident_id: str, comment: str, *, marker: str, status: str | None = None
    ) -> tuple[bool, bool]:
        """Add ``comment`` unless a comment of the incident already holds ``marker``, then set the
        incident's ``status`` (when given) unless it has it already, with one read of the incident for
        both: the status is checked on the incident as the comment's search last read it.

        Graph comments have no idempotency key: the marker is the key, and ``comment`` must contain
        it. The search and the post hold the shared creation lock of the marker, so two runs of the
        same alert cannot both find nothing and both post; a post whose answer was lost is searched
        for before a retry. A bad status or marker is refused before any call. Returns (comment
        added, status changed)."""
        if status:
            check_incident_status(status)
        added, incident = self._comment_marked(incident_id, comment, marker)
        changed = self._set_status(incident_id, status, incident) if status else False
        return added, changed

    def _comment_marked(self, incident_id: str, comment: str, marker: str) -> tuple[bool, dict[str, Any]]:
        """The comment's search-before-post; returns (added, the incident as its last search read it)."""
        if not marker or marker not in comment:
            raise ValueError(f"incident comment: the marker {marker[:80]!r} must be part of the comment")
        read: dict[str, Any] = {}

        def find() -> bool | None:
            # Read again on every attempt, under the lock: a read made before it could miss the
            # comment another run posted while this one waited for the lock.
            read.update(incident=self.get_incident(incident_id))
            comments = read["incident"].get("comments") or []
            return False if any(marker in str(c.get("comment", "")) for c in comments) else None

        def post() -> bool:
            self.request(
                "POST",
                "security/incidents/{id}/comments",
                operation="comment-incident",
                path_parameters={"id": incident_id},
                data={"@odata.type": "microsoft.graph.security.alertComment", "comment": comment},
                retry=False,
            )
            return True

        added = self.create_once(
            find, post, operation="comment-incident", key=f"incident:{incident_id}:{marker}"
        )
        return added, read["incident"]

    def _set_status(self, incident_id: str, status: str, incident: Mapping[str, Any]) -> bool:
        """PATCH the status unless ``incident`` (as read) has it already; returns whether it changed."""
        if incident.get("status") == status:
            return False
        self.request(
            "PATCH",
            "security/incidents/{id}",
            operation="update-incident",
            path_parameters={"id": incident_id},
            data={"status": status},
        )
        return True


MACHINE_ID = re.compile(r"^[0-9a-f]{40}$")
# A machine's name: its host name or its DNS name (computerDnsName), labels of letters, digits, hyphens.
MACHINE_NAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9][A-Za-z0-9-]{0,62}(?:\.[A-Za-z0-9][A-Za-z0-9-]{0,62})*$")


class DefenderHook(MicrosoftTenantHook):
    """Microsoft Defender for Endpoint of one customer tenant: machines and machine actions."""

    system: ClassVar[str] = "defender"
    credential_leaf: ClassVar[str] = "defender"
    scope: ClassVar[str] = DEFENDER_SCOPE

    def get_machine(self, machine_id: str) -> dict[str, Any]:
        """The machine by its Defender id (40 hex digits); malformed or unknown is a
        :class:`MicrosoftInputError`."""
        if not MACHINE_ID.match(machine_id):
            raise MicrosoftInputError(
                f"machine id {machine_id[:80]!r} is not a Defender machine id (40 hex digits)"
            )
        try:
            return dict(
                self.request(
                    "GET", "machines/{id}", operation="get-machine", path_parameters={"id": machine_id}
                ).body
            )
        except PermanentError as error:
            if error.status == 404:
                raise MicrosoftInputError(
                    f"machine {machine_id!r} not found in Defender of {self.tenant!r}"
                ) from None
            raise

    def find_machine(self, key: str) -> dict[str, Any]:
        """The machine by its Defender id (40 hex digits) or by its name, resolved read-only.

        A name is the machine's DNS name (``computerDnsName``) or its host name (the first label). A
        malformed name, or a DNS name in another tenant's Entra domain (tenants.yaml ``entra_domains``),
        is a :class:`MicrosoftInputError` before any call; no machine of that name, or more than one
        (stale records of a re-imaged device share a name: give the id), one after the lookup.
        """
        from include.policies.tenants import load_tenants, tenant_ids

        key = key.strip()
        if MACHINE_ID.match(key.lower()):
            return self.get_machine(key.lower())
        if not MACHINE_NAME.match(key):
            raise MicrosoftInputError(
                f"machine {key[:80]!r} is neither a Defender machine id (40 hex digits) nor a machine name"
            )
        name = key.lower()
        policy = load_tenants()
        for other in tenant_ids():
            if other != self.tenant and any(
                name.endswith("." + domain.lower()) for domain in policy.tenant(other).entra_domains
            ):
                raise MicrosoftInputError(
                    f"machine {key!r} is in a domain of tenant {other!r}, not of {self.tenant!r}: refused"
                )
        host = name.split(".", 1)[0]
        response = self.request(
            "GET",
            "machines",
            operation="find-machine",
            query={"$filter": f"startswith(computerDnsName,'{host}')"},
        )
        machines = [dict(m) for m in (response.body or {}).get("value", [])]
        dns = lambda m: str(m.get("computerDnsName", "")).lower()  # noqa: E731
        found = (
            [m for m in machines if dns(m) == name]
            if "." in name
            else [m for m in machines if dns(m).split(".", 1)[0] == name]
        )
        if not found:
            raise MicrosoftInputError(f"no machine named {key!r} in Defender of {self.tenant!r}")
        if len(found) > 1:
            listed = ", ".join(f"{m.get('computerDnsName')} ({m.get('id')})" for m in found[:5])
            raise MicrosoftInputError(
                f"machine name {key!r} is ambiguous in Defender of {self.tenant!r}: {listed}; "
                "give the machine id"
            )
        return found[0]

    def machine_actions(self, machine_id: str) -> list[dict[str, Any]]:
        response = self.request(
            "GET",
            "machineactions",
            operation="list-machine-actions",
            query={"$filter": f"machineId eq '{machine_id}'"},
        )
        return [dict(a) for a in (response.body or {}).get("value", [])]

    def get_action(self, action_id: str) -> dict[str, Any]:
        return dict(
            self.request(
                "GET",
                "machineactions/{id}",
                operation="get-machine-action",
                path_parameters={"id": action_id},
            ).body
        )

    def isolate(self, machine_id: str, comment: str, isolation_type: str = "Full") -> dict[str, Any]:
        """Start an isolation (``Full``/``Selective``); returns the machine action (``Pending``)."""
        if isolation_type not in ("Full", "Selective"):
            raise MicrosoftInputError(f"isolation type {isolation_type!r}: Full or Selective")
        return self._action(machine_id, "isolate", {"Comment": comment, "IsolationType": isolation_type})

    def unisolate(self, machine_id: str, comment: str) -> dict[str, Any]:
        return self._action(machine_id, "unisolate", {"Comment": comment})

    def latest_isolation_action(self, machine_id: str) -> dict[str, Any] | None:
        """The machine's newest Isolate/Unisolate action that did not fail or get cancelled."""
        actions = [
            a
            for a in self.machine_actions(machine_id)
            if a.get("type") in ("Isolate", "Unisolate")
            and a.get("status") not in ("Failed", "Cancelled", "TimeOut")
        ]
        return max(actions, key=lambda a: str(a.get("creationDateTimeUtc", "")), default=None)

    def isolate_once(
        self, machine_id: str, comment: str, isolation_type: str = "Full"
    ) -> tuple[dict[str, Any], bool]:
        """Isolate unless the newest isolation action already is one (pending or done): a re-run, or a
        run racing this one, gets that action. Returns (action, created)."""
        if isolation_type not in ("Full", "Selective"):
            raise MicrosoftInputError(f"isolation type {isolation_type!r}: Full or Selective")
        self.get_machine(machine_id)
        return self._isolation_once(
            machine_id, "Isolate", lambda: self.isolate(machine_id, comment, isolation_type)
        )

    def release_once(self, machine_id: str, comment: str) -> tuple[dict[str, Any], bool]:
        """Release unless the machine is not isolated (no isolation, or the newest action is a
        release). Returns (the action, or ``{}`` when there is nothing to release; created)."""
        self.get_machine(machine_id)
        return self._isolation_once(machine_id, "Unisolate", lambda: self.unisolate(machine_id, comment))

    def _isolation_once(
        self, machine_id: str, kind: str, start: Callable[[], dict[str, Any]]
    ) -> tuple[dict[str, Any], bool]:
        """Search before start, under the shared creation lock of the machine (two runs cannot both
        find nothing and both start). Defender refuses a second action while one is pending (400
        ``ActiveRequestAlreadyExists``): when the pending one is of the same kind (a console user's,
        or a run without the shared store), that one is the answer, not an error."""
        created = False

        def find() -> dict[str, Any] | None:
            latest = self.latest_isolation_action(machine_id)
            if latest is None:
                return {} if kind == "Unisolate" else None  # never isolated: nothing to release
            return latest if latest["type"] == kind else None

        def begin() -> dict[str, Any]:
            nonlocal created
            try:
                action = start()
            except PermanentError as error:
                if error.status != 400:
                    raise
                existing = find()
                if not existing:
                    raise
                return existing
            created = True
            return action

        action = self.create_once(
            find, begin, operation=f"{kind.lower()}-machine", key=f"machine:{machine_id}:isolation"
        )
        return action, created

    def _action(self, machine_id: str, verb: str, body: Mapping[str, Any]) -> dict[str, Any]:
        response = self.request(
            "POST",
            "machines/{id}/" + verb,
            operation=f"{verb}-machine",
            path_parameters={"id": machine_id},
            data=body,
            retry=False,
        )
        return dict(response.body)
