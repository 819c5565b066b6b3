"""AWS sessions per capability and tenant (SEC-1, SCALE-2): a step gets exactly one role, never the base keys.

:class:`AwsCapabilityHook` is the base hook of every AWS system (EC2, IAM, Identity Center): a
:class:`~include.connectors.base.ConnectorHook` holding the capability, the tenant and the run, whose
client is built on first use through :func:`capability_client` and whose calls go through
:meth:`~include.connectors.base.ConnectorHook.call` (rate-limited, transient errors retried).

``capability_session("ticket-create", "acme", run_context=ctx)`` assumes
``arn:aws:iam::<acme's account>:role/orchestrator-ticket-create`` for 15 minutes. The role lives in
the tenant's own account (``tenants.yaml``) and grants only what ``capabilities.yaml`` lists, so a
step of tenant A cannot reach tenant B's secrets even by ARN, and a ticketing step cannot apply
Terraform. The session name and tags carry dag/task/run, tenant, capability and the correlation id,
so CloudTrail in the tenant's account shows which workflow step made each call.

Retries: one budget per call, never one retrier inside another. botocore's standard retry mode
(not the legacy default) is on every client built here, with a number of attempts that depends on
who retries:

- inside :meth:`AwsCapabilityHook.call`, the hook's loop (the connection's ``retry_*`` budget,
  :mod:`include.connectors.retry`) is the only retrier and botocore makes one HTTP attempt per call
  (:data:`NO_BOTOCORE_RETRIES`), the AssumeRole that refreshes the step's credentials included. The
  loop, not botocore, because every attempt must take a permit from the shared rate limit (the
  account's API quota is shared by all workers; botocore's retries would bypass it), and each retry is
  logged and counted like every other connector's. Otherwise a throttled call would be sent up to
  botocore's attempts x the hook's attempts times (legacy mode: 5 x 6 = 30).
- outside a hook's loop (:func:`capability_session`, the Terraform CLI's AssumeRole,
  ``capability_client`` without ``config``, the Airflow provider hooks given
  :data:`STANDARD_RETRIES`), botocore's standard mode is the only retrier, with the connectors'
  default budget of attempts (:class:`include.connectors.retry.RetryPolicy`).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property, partial
from typing import Any, ClassVar, NoReturn, TypeVar

import boto3
import botocore.session
from botocore.config import Config
from botocore.credentials import DeferredRefreshableCredentials
from botocore.exceptions import ClientError, HTTPClientError, SSLError
from botocore.exceptions import ConnectionError as BotoConnectionError

from include.connectors.base import ConnectorHook
from include.connectors.context import RunContext
from include.connectors.errors import TransientError
from include.connectors.retry import RetryPolicy
from include.policies.capabilities import get_capability, role_name
from include.policies.tenants import tenant_account_id

T = TypeVar("T")
SESSION_DURATION_SECONDS = 900
SESSION_NAME_MAX = 64
TAG_VALUE_MAX = 256
_HASH_CHARS = 8
_SESSION_NAME_UNSAFE = re.compile(r"[^\w+=,.@-]", re.ASCII)
_TAG_VALUE_UNSAFE = re.compile(r"[^A-Za-z0-9 _.:/=+@-]")


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:_HASH_CHARS]


def role_arn(capability: str, tenant: str) -> str:
    """The capability's role in the tenant's account."""
    return f"arn:aws:iam::{tenant_account_id(tenant)}:role/{role_name(capability)}"


def role_session_name(run_context: RunContext) -> str:
    """``<dag_id>.<task_id>.<sha256(run_id)[:8]>``, restricted to STS's ``[\\w+=,.@-]`` and 64 characters.

    Deterministic, so every retry of a task shows up under the same name in CloudTrail. A
    dag/task part too long to fit is cut and suffixed with a hash of the full part to stay unique.
    """
    run_hash = _short_hash(run_context.run_id)
    raw_head = f"{run_context.dag_id}.{run_context.task_id}"
    head = _SESSION_NAME_UNSAFE.sub("-", raw_head)
    room = SESSION_NAME_MAX - len(run_hash) - 1
    if len(head) > room:
        head = f"{head[: room - _HASH_CHARS - 1]}-{_short_hash(raw_head)}"
    return f"{head}.{run_hash}"


def _tag_value(value: str) -> str:
    # STS rejects the whole call for one bad character; a correlation id comes from trigger conf.
    return _TAG_VALUE_UNSAFE.sub("-", value)[:TAG_VALUE_MAX]


def _running_task() -> Any:
    """The Airflow context of the task running in this process, or ``None`` outside a task."""
    try:
        from airflow.sdk import get_current_context

        return get_current_context()
    except Exception:  # no task context: a CLI, a test, the stack's seeding
        return None


def authorize_capability(capability: str, tenant: str, run_context: RunContext) -> None:
    """Inside a task: the capability is granted to the DAG's domain, and a privileged one was approved.

    The run-time half of the policy check (``capability-calls``, ``capability-domain``): a task that
    reaches for a capability directly, from a DAG of another domain or without a verified approval
    (:class:`include.approvals.verify.RequiresApproval`), gets no role and a ``policy.violation``
    record. Outside a task (no Airflow context) nothing is checked: such a process holds the base
    credentials anyway, and is not the orchestrator acting.
    """
    context = _running_task()
    if context is None:
        return
    from include.approvals.verify import ApprovalVerificationError, require_verified
    from include.policies.loader import domain_tags

    declared = get_capability(capability)
    task = context["task"]
    domains = domain_tags(task.dag)
    problem = None
    if len(domains) != 1 or domains[0] not in declared.domains:
        problem = (
            "capability-domain",
            f"{task.task_id}: capability {capability!r} is granted to {', '.join(declared.domains)}, "
            f"not to this DAG's domain {', '.join(domains) or '(none)'}",
        )
    elif declared.privileged:
        try:
            require_verified(str(context["ti"].id), capability)
        except ApprovalVerificationError as error:
            problem = ("approval-before-privileged", f"{task.task_id}: {error}")
    if problem is None:
        return
    from include.audit.emit import emit, task_event
    from include.audit.records import POLICY_VIOLATION

    rule, message = problem
    emit(
        task_event(
            context,
            POLICY_VIOLATION,
            tenant=tenant,
            actor="airflow",
            details={"rule": rule, "capability": capability, "message": message},
        )
    )
    raise ApprovalVerificationError(message)


def assume_role_request(capability: str, tenant: str, run_context: RunContext) -> dict[str, Any]:
    """The exact AssumeRole parameters for a step, after :func:`authorize_capability`."""
    get_capability(capability)  # an undeclared capability is a PolicyError, not a guessed role name
    authorize_capability(capability, tenant, run_context)
    if tenant != run_context.tenant:
        raise ValueError(
            f"capability session for tenant {tenant!r} requested by a run of tenant {run_context.tenant!r}"
        )
    return {
        "RoleArn": role_arn(capability, tenant),
        "RoleSessionName": role_session_name(run_context),
        "DurationSeconds": SESSION_DURATION_SECONDS,
        "Tags": [
            {"Key": "tenant", "Value": _tag_value(tenant)},
            {"Key": "capability", "Value": _tag_value(capability)},
            {"Key": "correlation_id", "Value": _tag_value(run_context.correlation_id)},
        ],
    }


@dataclass(frozen=True)
class BaseAws:
    """The platform's base credentials and endpoints, read from an Airflow connection."""

    session: boto3.session.Session
    region_name: str | None
    endpoint_url_for: Callable[[str], str | None]


def base_aws(aws_conn_id: str) -> BaseAws:
    """Base session from the Airflow connection; reads the connection, but makes no AWS call."""
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook  # heavy: import on use only

    hook = AwsBaseHook(aws_conn_id=aws_conn_id, client_type="sts")
    session = hook.get_session()
    config = hook.conn_config
    return BaseAws(
        session=session,
        region_name=config.region_name or session.region_name,
        endpoint_url_for=config.get_service_endpoint_url,
    )


class _StepCredentials(DeferredRefreshableCredentials):
    """botocore refreshes 15 minutes before expiry by default: with 900 s sessions that is every call.

    Refresh 5 minutes before expiry (advisory, keeps the old credentials if STS fails) and at
    2 minutes (mandatory) instead, so one AssumeRole serves a step for about 10 minutes.
    """

    _advisory_refresh_timeout = 5 * 60
    _mandatory_refresh_timeout = 2 * 60


def botocore_retries(max_attempts: int) -> Config:
    """botocore's standard retry mode with ``max_attempts`` HTTP attempts in all, the first included.

    :param max_attempts: at least 1 (1: botocore does not retry).
    """
    if max_attempts < 1:
        raise ValueError(f"max_attempts must be at least 1, not {max_attempts}")
    return Config(retries={"mode": "standard", "total_max_attempts": max_attempts})


# One HTTP attempt per botocore call: inside AwsCapabilityHook.call the hook's loop is the only retrier.
NO_BOTOCORE_RETRIES = botocore_retries(1)
# A client outside a hook's loop: botocore's standard mode is the only retrier, within the connectors'
# default budget (the Airflow provider's S3 and Secrets Manager hooks take it as ``config=``).
STANDARD_RETRIES = botocore_retries(RetryPolicy().max_attempts)


def _assume(base: BaseAws, request: dict[str, Any], config: Config = STANDARD_RETRIES) -> dict[str, str]:
    sts = base.session.client(
        "sts", region_name=base.region_name, endpoint_url=base.endpoint_url_for("sts"), config=config
    )
    credentials = sts.assume_role(**request)["Credentials"]
    return {
        "access_key": credentials["AccessKeyId"],
        "secret_key": credentials["SecretAccessKey"],
        "token": credentials["SessionToken"],
        "expiry_time": credentials["Expiration"].isoformat(),
    }


def _session(request: dict[str, Any], base: BaseAws, sts_config: Config) -> boto3.session.Session:
    """A session whose credentials come from AssumeRole on first use and are renewed before they expire.

    Deferred: building it makes no AWS call; a long step (terraform apply) outlives the 15 minutes of
    one AssumeRole because botocore refreshes the credentials with the same request. The refresh
    happens inside the first call that needs it, so its STS client retries like that call's client.
    """
    credentials = _StepCredentials(
        refresh_using=partial(_assume, base, request, sts_config), method="sts-assume-role"
    )
    botocore_session = botocore.session.get_session()
    # botocore has no public setter; this is how Airflow's AwsBaseHook installs assume-role credentials.
    botocore_session._credentials = credentials
    return boto3.session.Session(botocore_session=botocore_session, region_name=base.region_name)


def capability_session(
    capability: str, tenant: str, *, run_context: RunContext, aws_conn_id: str = "aws_default"
) -> boto3.session.Session:
    """A boto3 session as ``orchestrator-<capability>`` in ``tenant``'s account (see the module docstring).

    The request is checked (declared capability, the run's own tenant) before the connection is read.
    Clients made from the session talk to AWS's default endpoints; against a local AWS (moto) use
    :func:`capability_client`, which applies the connection's ``endpoint_url``.
    """
    request = assume_role_request(capability, tenant, run_context)
    return _session(request, base_aws(aws_conn_id), STANDARD_RETRIES)


def capability_client(
    capability: str,
    tenant: str,
    service: str,
    *,
    run_context: RunContext,
    aws_conn_id: str = "aws_default",
    config: Config | None = None,
) -> Any:
    """A client of ``service`` on a capability session, at the endpoint the Airflow connection names.

    :param config: botocore client configuration, over :data:`STANDARD_RETRIES`; it applies to the
        AssumeRole of the credentials too (:class:`AwsCapabilityHook` passes
        :data:`NO_BOTOCORE_RETRIES`: it retries itself).
    """
    request = assume_role_request(capability, tenant, run_context)
    base = base_aws(aws_conn_id)
    config = STANDARD_RETRIES if config is None else STANDARD_RETRIES.merge(config)
    session = _session(request, base, config)
    return session.client(
        service, region_name=base.region_name, endpoint_url=base.endpoint_url_for(service), config=config
    )


def tenant_connection(
    capability: str,
    tenant: str,
    secret_id: str,
    *,
    conn_id: str,
    run_context: RunContext,
    error: Callable[[str], Exception],
    system: str,
    aws_conn_id: str = "aws_default",
    default_conn_type: str = "http",
) -> Any:
    """An Airflow connection kept as JSON in the tenant's own Secrets Manager, read as a capability role.

    How a hook gets a credential of the customer's own system (its Jira site, its Entra app): the
    secret ``secret_id`` (under the capability's ``orchestrator/<tenant>/<capability>/`` path) is
    read with :func:`capability_client`, so only the run's own tenant, through a role that grants that
    path, can have it. A connection an Airflow secrets backend would have served is masked by the Task
    SDK; this one is not read through a backend, so it is masked here the same way
    (``airflow.sdk.execution_time.context._mask_connection_secrets`` and
    ``Connection.extra_dejson``): the password, and every extra whose name Airflow deems sensitive
    (``client_secret``, ``api_token``, ``private_key``, ...).

    :param capability: the declared capability whose role reads the secret.
    :param tenant: the run's tenant; the secret must be under its path.
    :param secret_id: the secret's name, ``orchestrator/<tenant>/<capability>/<leaf>``.
    :param conn_id: the connection id the returned connection carries (the hook's rate-limit buckets).
    :param run_context: the run making the call (checked: the run's tenant must be ``tenant``).
    :param error: makes the caller's exception from a message: a missing or unreadable credential.
    :param system: names the credential in those messages (``jira``, ``msgraph``).
    :param aws_conn_id: the platform's base AWS connection (to assume the capability role).
    :param default_conn_type: the connection type when the JSON names none.
    :raises ValueError: ``secret_id`` is not under the tenant's path of ``capability``, before any call.
    """
    from airflow.sdk import Connection
    from airflow.sdk.log import mask_secret

    prefix = get_capability(capability).secret_prefix(tenant)
    if not secret_id.startswith(prefix) or "/" in secret_id[len(prefix) :] or len(secret_id) == len(prefix):
        raise ValueError(
            f"{system}: secret {secret_id[:120]!r} is not a leaf of {prefix} (the {capability!r} "
            f"credentials of tenant {tenant!r}): refused"
        )
    client = capability_client(
        capability, tenant, "secretsmanager", run_context=run_context, aws_conn_id=aws_conn_id
    )
    unreadable = f"the {system} credential of tenant {tenant!r} ({secret_id}) is not a JSON connection"
    try:
        value, extra, port = _json_connection(client.get_secret_value(SecretId=secret_id)["SecretString"])
    except client.exceptions.ResourceNotFoundException:
        raise error(f"no {system} credential for tenant {tenant!r} ({secret_id} in its account)") from None
    except ValueError as problem:
        raise error(f"{unreadable}{problem}") from None
    if value.get("password"):
        mask_secret(str(value["password"]))
    if extra:
        mask_secret(extra)  # a dict: the values of the sensitive-named keys only, as Airflow does
    return Connection(
        conn_id=conn_id,
        conn_type=value.get("conn_type") or default_conn_type,
        host=value.get("host"),
        schema=value.get("schema"),
        port=port,
        login=value.get("login"),
        password=value.get("password"),
        extra=json.dumps(extra),
    )


def _json_connection(text: str) -> tuple[dict[str, Any], dict[str, Any], int | None]:
    """An Airflow connection as JSON: (its fields, its extra, its port), or ``ValueError`` saying what
    is wrong (``""``: not JSON at all) without quoting the text, which may be the secret itself."""
    try:
        value = json.loads(text)
    except ValueError:
        raise ValueError("") from None
    if not isinstance(value, dict):
        raise ValueError(": not a JSON object")
    extra = value.get("extra") or {}
    if isinstance(extra, str):  # Airflow's JSON connections take the extra as an object or as its text
        try:
            extra = json.loads(extra)
        except ValueError:
            raise ValueError(": its extra is not JSON") from None
    if not isinstance(extra, dict):
        raise ValueError(": its extra is not a JSON object")
    port = value.get("port")
    try:
        return value, extra, int(port) if port not in (None, "") else None
    except (TypeError, ValueError):
        raise ValueError(f": port {str(port)[:20]!r} is not a number") from None


class TenantBound:
    """Mixin of a hook bound to its run's tenant: the credentials are that tenant's, read as a capability.

    Such a hook cannot be turned into another tenant's (:meth:`for_tenant` is refused: build a hook per
    tenant), and knows the run making the calls (:attr:`run_context`): the one given as
    ``given_run_context``, else the running task's. Put it before the hook's base class.
    """

    tenant: str
    given_run_context: RunContext | None

    def for_tenant(self, tenant: str) -> NoReturn:
        raise TypeError(
            f"{type(self).__name__} is bound to its run's tenant {self.tenant!r}: build a hook per tenant"
        )

    @cached_property
    def run_context(self) -> RunContext:
        """The run making the calls: the one given, else the running task's."""
        if self.given_run_context is not None:
            return self.given_run_context
        context = _running_task()
        if context is None:
            raise RuntimeError(f"{type(self).__name__} outside a task needs run_context")
        return RunContext.from_airflow_context(context, self.tenant)


# --- the hook ------------------------------------------------------------------------------------
# Error codes AWS services use for "slow down" and "try again": retried, like HTTP 429 and 5xx.
TRANSIENT_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "SlowDown",
        "PriorRequestNotComplete",
        "InternalError",
        "InternalFailure",
        "InternalServerError",
        "InternalServerException",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "Unavailable",
    }
)


def error_code(error: ClientError) -> str:
    """The AWS error code of a ``ClientError`` (``""`` when AWS sent none)."""
    return str(error.response.get("Error", {}).get("Code", ""))


def error_status(error: ClientError) -> int | None:
    """The HTTP status of a ``ClientError``, when known."""
    status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return int(status) if status is not None else None


def is_transient(error: ClientError) -> bool:
    """Throttling, 429 and 5xx: worth another attempt."""
    status = error_status(error)
    return error_code(error) in TRANSIENT_CODES or status == 429 or (status is not None and status >= 500)


class AwsCapabilityHook(TenantBound, ConnectorHook):
    """A boto3 client of one AWS service as a capability role in a tenant's account.

    Nothing happens in ``__init__``: the client (:attr:`client`) is built on first use through
    :func:`capability_client`, which checks the capability (declared, granted to the DAG's domain,
    approved when privileged: :func:`authorize_capability`) before any AssumeRole. Subclasses set
    ``service`` and make every AWS call through :meth:`call`, which retries throttling, 5xx and
    connection errors only, within the connection's retry budget (botocore makes one HTTP attempt
    per call, the AssumeRole included: see the module docstring) and leaves every other
    ``ClientError`` to the subclass.

    :param aws_conn_id: the Airflow AWS connection holding the platform's base credentials and
        endpoints; default ``aws_default``.
    :param capability: the declared capability whose role (``orchestrator-<capability>``) the hook
        assumes; keyword-only, so that the ``capability-calls`` policy finds it.
    :param tenant: the tenant whose account the role is in (its own rate-limit bucket too).
    :param run_context: the run making the calls (session name, tags, correlation id); default:
        the running task's, read on first use.
    """

    system: ClassVar[str] = "aws"
    service: ClassVar[str] = ""
    conn_name_attr = "aws_conn_id"
    default_conn_name = "aws_default"
    conn_type = "aws"
    hook_name = "AWS capability role"

    def __init__(
        self,
        aws_conn_id: str | None = None,
        *,
        capability: str,
        tenant: str,
        run_context: RunContext | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(aws_conn_id, tenant=tenant, **kwargs)
        self.capability = capability
        self.given_run_context = run_context

    @property
    def aws_conn_id(self) -> str:
        return self.conn_id

    @cached_property
    def role_arn(self) -> str:
        """The capability's role in the tenant's account (what the audit trail records)."""
        return role_arn(self.capability, self.tenant)

    @cached_property
    def client(self) -> Any:
        """The ``service`` client on the capability session; AssumeRole happens at its first call."""
        return capability_client(
            self.capability,
            self.tenant,
            self.service,
            run_context=self.run_context,
            aws_conn_id=self.conn_id,
            config=NO_BOTOCORE_RETRIES,
        )

    def call(self, operation: str, function: Callable[[], T], *, retry: bool = True) -> T:
        """One AWS call: rate-limited, retried on throttling, 5xx and connection errors only.

        :param operation: the API call's name, in errors and logs.
        :param function: the call itself (``lambda: self.client.describe_instances(...)``).
        :param retry: retry transient failures.
        """
        return super().call(operation, partial(self._classified, operation, function), retry=retry)

    def _classified(self, operation: str, function: Callable[[], T]) -> T:
        try:
            return function()
        except ClientError as error:
            if not is_transient(error):
                raise
            message = str(error.response.get("Error", {}).get("Message") or error_code(error))
            raise TransientError(
                f"{error_code(error)}: {message}",
                system=self.system,
                operation=operation,
                status=error_status(error),
            ) from error
        except SSLError:
            raise  # a certificate problem does not go away by itself
        except (BotoConnectionError, HTTPClientError) as error:
            # botocore's messages name the endpoint, never the credentials.
            raise TransientError(
                f"{type(error).__name__}: {error}", system=self.system, operation=operation
            ) from None
