"""The connector base every external system uses: one Airflow hook per system on top of it.

What it gives a hook: lazy I/O (nothing happens in ``__init__``), credentials from the Airflow
connection (so from the secrets backend), the shared per-connector and per-tenant rate limit,
retries of transient failures only (429, 5xx, timeouts, connection errors) with ``Retry-After``
honoured, immediate failure with the service's own message on other 4xx, and a retry count that
operators report.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar, NoReturn, Self, TypeVar

from airflow.sdk.bases.hook import BaseHook

from include.connectors.errors import PermanentError, TransientError
from include.connectors.ratelimit import (
    RATELIMIT_STORE_CONN_ID,
    RateLimitSettings,
    SharedRateLimiter,
    StoreError,
    bucket_key,
    creation_lock,
    store_dsn,
)
from include.connectors.retry import RetryPolicy, call_with_retries, parse_retry_after

if TYPE_CHECKING:
    # Imported where a request is made: every DAG file's parse imports this module (the SLA
    # alert's mail hook), and only HTTP hooks need requests (about 27 ms to import).
    import requests

T = TypeVar("T")
USER_AGENT = "secops-orchestrator/0.1 (+airflow)"
TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})


def service_message(response: requests.Response) -> str:
    """The service's own error text (JSON ``message``/``errorMessages`` or the body), shortened."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:500] or response.reason
    if isinstance(body, Mapping):
        for key in ("message", "errorMessage", "error", "detail"):
            if body.get(key):
                return str(body[key])[:500]
        if body.get("errorMessages"):
            return "; ".join(map(str, body["errorMessages"]))[:500]
    return str(body)[:500]


class ConnectorHook(BaseHook):
    """Base hook of every external system: connection, tenant, rate limit and retries.

    Subclasses set ``system`` and make every call to the service through :meth:`call` (or, for an
    HTTP API, :meth:`HttpConnectorHook.request`), so each call is rate-limited and retried the same
    way whatever the client library (requests, boto3, ldap3, a CLI).

    :param conn_id: the Airflow connection of the service (credentials come from the secrets
        backend, never from code); default ``default_conn_name``.
    :param tenant: the tenant the calls are made for: its own rate-limit bucket.
    :param bulk: bulk work also draws from the connector's bulk bucket.
    :param share: a named share of the limit (``triage``), when the connection sets one
        (``<share>_rate_limit_per_second`` / ``_burst``, optionally ``<share>_tenant_rate_limit_*``):
        the calls take the connector's bucket, the share's own, and the share's bucket of the tenant
        instead of the tenant's, so a flood of this work is capped at the share and never spends the
        tenant bucket other work of the same tenant draws from. Without those extras: the plain buckets.
    """

    system: ClassVar[str] = "connector"
    conn_name_attr = "conn_id"
    default_conn_name = "connector_default"
    conn_type = "generic"
    hook_name = "Connector"

    def __init__(
        self,
        conn_id: str | None = None,
        *,
        tenant: str,
        bulk: bool = False,
        share: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.conn_id = conn_id or self.default_conn_name
        self.tenant = tenant
        # Bulk work also draws from the connector's bulk bucket (RateLimitSettings.bulk).
        self.bulk = bulk
        self.share = share
        self.retry_count = 0

    def for_tenant(self, tenant: str) -> Self:
        """The same connector for another tenant: its own tenant bucket, this hook's connection,
        client and store (no second secrets-backend lookup; each costs a round trip)."""
        other = type(self)(self.conn_id, tenant=tenant, bulk=self.bulk)
        other.share = self.share
        for name in ("connection", "extras", "rate_limit_store"):
            if name in self.__dict__:  # what this hook already built
                other.__dict__[name] = self.__dict__[name]
        return other

    # --- lazily built from the connection ----------------------------------------------------
    @cached_property
    def connection(self) -> Any:
        return self.get_connection(self.conn_id)

    @cached_property
    def extras(self) -> dict[str, Any]:
        return dict(self.connection.extra_dejson)

    @cached_property
    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy.from_extras(self.extras)

    @cached_property
    def timeout(self) -> float:
        return float(self.extras.get("timeout_seconds", 30))

    @cached_property
    def limiter(self) -> SharedRateLimiter | None:
        settings = RateLimitSettings.from_extras(self.extras)
        share = RateLimitSettings.from_extras(self.extras, share=self.share) if self.share else None
        buckets = []
        if settings.connector is not None:
            buckets.append((bucket_key(self.conn_id), settings.connector))
        if self.share and share is not None and share.connector is not None:
            buckets.append((bucket_key(self.conn_id, self.share), share.connector))
            tenant_limit = share.tenant or settings.tenant
            if tenant_limit is not None:
                buckets.append((bucket_key(self.conn_id, self.share, self.tenant), tenant_limit))
        elif settings.tenant is not None:
            buckets.append((bucket_key(self.conn_id, self.tenant), settings.tenant))
        if self.bulk and settings.bulk is not None:
            buckets.append((bucket_key(self.conn_id, "bulk"), settings.bulk))
        if not buckets:
            return None
        return SharedRateLimiter(
            buckets,
            dsn=self.rate_limit_store,
            max_wait_seconds=settings.max_wait_seconds,
            system=self.system,
        )

    @cached_property
    def creation_store(self) -> str | None:
        """Where :meth:`create_once` locks a shared key: the rate-limit store, or None (logged) when
        this installation has none (no ``rate_limit_store_dsn`` extra, no ``ratelimit_store``
        connection; every deployment of the platform has one)."""
        from airflow.sdk.exceptions import AirflowNotFoundException

        try:
            return self.rate_limit_store
        except AirflowNotFoundException:
            self.log.warning(
                "%s: no shared store (connection %r): creates are not locked across runs",
                self.system,
                RATELIMIT_STORE_CONN_ID,
            )
            return None

    @cached_property
    def rate_limit_store(self) -> str:
        """The shared rate-limit store's URL (a secret when it holds a password: never log it)."""
        return str(self.extras.get("rate_limit_store_dsn") or store_dsn())

    # --- the one way to call the service -----------------------------------------------------
    def call(self, operation: str, function: Callable[[], T], *, retry: bool = True) -> T:
        """One logical call of the service: rate-limited, retried on transient failures only.

        ``function`` makes the call and raises :class:`TransientError` for what may be retried (the
        subclass maps its client's errors) and :class:`PermanentError` for the rest.
        ``retry=False`` makes one attempt only: for creates, which :meth:`create_once` retries
        itself with a fresh search before every attempt.

        :param operation: the name of the call in errors, logs and rate-limit accounting.
        :param function: the call itself, without arguments.
        :param retry: retry transient failures (with ``Retry-After`` honoured).
        """

        def attempt() -> T:
            if self.limiter is not None:
                self.limiter.acquire(operation)
            return function()

        if not retry:
            return attempt()
        return call_with_retries(
            attempt,
            self.retry_policy,
            system=self.system,
            operation=operation,
            on_retry=self._log_retry,
        )

    def create_once(
        self,
        find: Callable[[], T | None],
        create: Callable[[], T],
        *,
        operation: str,
        key: str | None = None,
    ) -> T:
        """Search-before-create, repeated before every retry of the create.

        A create whose response was lost (timeout, reset, 5xx after the service committed) must not
        be sent again blindly: the next attempt first looks for the object by its idempotency key.
        ``create`` must call :meth:`call` (or :meth:`HttpConnectorHook.request`) with ``retry=False``.

        :param find: the search by idempotency key; None when there is nothing yet.
        :param create: the create (one attempt).
        :param operation: the name of the call in errors, logs and rate-limit accounting.
        :param key: the idempotency key when runs other than this one may share it (one ticket per
            alert): each attempt's search and create then hold a lock on the key in the shared store
            (:func:`~include.connectors.ratelimit.creation_lock`), so two runs cannot both find
            nothing and both create. None: only this run uses the key; no lock.
        """

        store = None if key is None else self.creation_store

        def attempt() -> T:
            if key is None or store is None:
                existing = find()
                return existing if existing is not None else create()
            name = f"{self.system}:{self.tenant}:{key}"
            try:
                hold = 2 * self.timeout + 30
                with creation_lock(store, name, wait_seconds=self.timeout, hold_seconds=hold):
                    existing = find()
                    return existing if existing is not None else create()
            except StoreError as exc:
                error = TransientError if exc.transient else PermanentError
                raise error(str(exc), system=self.system, operation=operation) from None

        return call_with_retries(
            attempt, self.retry_policy, system=self.system, operation=operation, on_retry=self._log_retry
        )

    def _log_retry(self, attempt: int, wait: float, error: BaseException) -> None:
        self.retry_count += 1
        self.log.warning(
            "%s %s: attempt %d failed (%s); retry %d in %.2fs",
            self.system,
            getattr(error, "operation", "?"),
            attempt,
            error,
            self.retry_count,
            wait,
        )


class HttpConnectorHook(ConnectorHook):
    """Base hook for an HTTP API. Subclasses set ``system`` and implement :meth:`auth_headers`."""

    system: ClassVar[str] = "http"
    default_conn_name = "http_default"
    conn_type = "http"
    # The service's public origin, for a connection that leaves ``host`` empty (PagerDuty's Events API).
    default_host: ClassVar[str | None] = None
    # The scheme of a ``host`` given without one, when the connection has no ``schema``.
    default_scheme: ClassVar[str] = "https"

    def for_tenant(self, tenant: str) -> Self:
        other = super().for_tenant(tenant)
        if "session" in self.__dict__:
            other.__dict__["session"] = self.__dict__["session"]
        return other

    @cached_property
    def base_url(self) -> str:
        """The service's URL, from the connection (one implementation for every HTTP hook).

        ``host`` is either an origin with its scheme (``https://events.pagerduty.com``, port and all,
        as Airflow's UI takes a URL) or a bare host name, then ``schema`` (default
        :attr:`default_scheme`) and ``port`` complete it; an empty ``host`` takes
        :attr:`default_host`. The ``base_path`` extra is appended; no trailing slash.

        :raises PermanentError: no host and no default, naming the connection.
        """
        conn = self.connection
        host = str(conn.host or self.default_host or "").strip().rstrip("/")
        if not host:
            raise PermanentError(
                f"connection {self.conn_id!r}: host (the {self.system} service's address) is empty",
                system=self.system,
                operation="configure",
            )
        if "://" not in host:
            port = f":{conn.port}" if conn.port else ""
            host = f"{conn.schema or self.default_scheme}://{host}{port}"
        return f"{host}{self.extras.get('base_path', '')}".rstrip("/")

    @cached_property
    def session(self) -> requests.Session:
        import requests

        session = requests.Session()
        session.headers.update({"User-Agent": USER_AGENT, "Accept": "application/json"})
        session.headers.update(self.auth_headers())
        return session

    def auth_headers(self) -> dict[str, str]:
        raise NotImplementedError

    # --- the one way to call the service -----------------------------------------------------
    def request(
        self,
        method: str,
        path: str,
        *,
        operation: str,
        expect: tuple[int, ...] = (200, 201),
        retry: bool = True,
        **kwargs: Any,
    ) -> requests.Response:
        """One logical call: rate-limited, retried on transient failures, errors classified.

        ``retry=False`` makes one attempt only: for creates, which :meth:`create_once` retries
        itself with a fresh search before every attempt.
        """

        return self.call(
            operation,
            lambda: self._send(method, path, operation=operation, expect=expect, **kwargs),
            retry=retry,
        )

    def _send(
        self, method: str, path: str, *, operation: str, expect: tuple[int, ...], **kwargs: Any
    ) -> requests.Response:
        import requests

        self.before_send()
        url = f"{self.base_url}/{path.lstrip('/')}"
        label = self.path_label(path)
        try:
            response = self.session.request(method, url, timeout=self.timeout, **kwargs)
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise TransientError(
                f"{type(exc).__name__} calling {method} {label}", system=self.system, operation=operation
            ) from None
        if response.status_code in expect:
            return response
        message = f"{method} {label} -> HTTP {response.status_code}: {self.error_text(response)}"
        self.raise_for(response, message, operation)

    # --- what an adapter may override ---------------------------------------------------------
    def before_send(self) -> None:
        """Called before each request (e.g. renew a bearer token)."""

    def path_label(self, path: str) -> str:
        """How a request's path appears in errors and logs."""
        return path

    def error_text(self, response: requests.Response) -> str:
        """The service's own message from an error response."""
        return service_message(response)

    def raise_for(self, response: requests.Response, message: str, operation: str) -> NoReturn:
        """Raise the error class the status calls for: transient (retried) or permanent."""
        if response.status_code in TRANSIENT_STATUSES:
            raise TransientError(
                message,
                system=self.system,
                operation=operation,
                status=response.status_code,
                retry_after=parse_retry_after(response.headers.get("Retry-After")),
            )
        raise PermanentError(message, system=self.system, operation=operation, status=response.status_code)
