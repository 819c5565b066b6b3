"""The one way to declare a workflow: :func:`domain_workflow`.

Every DAG in ``dags/`` is built through it, so the domain policy (pool, priority, retries,
concurrency, SLA alert, timeouts, access control, docs, typed params) is applied by the platform
and not re-typed, or forgotten, by each DAG author.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from airflow.configuration import conf
from airflow.sdk import DAG, Param, dag
from airflow.sdk.definitions.callback import AsyncCallback
from airflow.sdk.definitions.deadline import DeadlineAlert, DeadlineReference

from include.connectors.context import CORRELATION_CONF_KEY, CORRELATION_PATTERN
from include.connectors.smtp import ALERT_FROM, ALERT_SMTP_CONN_ID
from include.policies.loader import KIND_TAG_PREFIX, DomainPolicy, WorkflowKind, load_domain_policy
from include.workflows.alerts import SlaMissNotifier
from include.workflows.holds import HoldEndDeadline

WORKFLOW_START = datetime(2026, 1, 1)

# Permissions a domain's operator role gets on that domain's DAGs (FAB auth manager resources).
OPERATOR_PERMISSIONS = {
    "DAGs": {"can_read", "can_edit"},
    "DAG Runs": {"can_read", "can_create"},
}
APPROVER_PERMISSIONS = {"DAGs": {"can_read", "can_edit"}, "DAG Runs": {"can_read"}}


class WorkflowDefinitionError(ValueError):
    """A workflow declaration breaks a platform rule; the message names the DAG and the rule."""


def _check_params(dag_id: str, params: Mapping[str, Any] | None) -> dict[str, Param]:
    """Every param must be a typed :class:`Param` so the UI trigger form and the REST API validate it."""
    checked: dict[str, Param] = {}
    for name, value in (params or {}).items():
        if not isinstance(value, Param):
            raise WorkflowDefinitionError(
                f"DAG {dag_id}: param {name!r} must be an airflow.sdk.Param with a JSON-schema type, "
                f"got {type(value).__name__}"
            )
        if "type" not in value.schema:
            raise WorkflowDefinitionError(f"DAG {dag_id}: param {name!r} has no type in its schema")
        checked[name] = value
    if CORRELATION_CONF_KEY in checked:
        raise WorkflowDefinitionError(
            f"DAG {dag_id}: param {CORRELATION_CONF_KEY!r} is the platform's (every workflow has it)"
        )
    checked[CORRELATION_CONF_KEY] = correlation_param()
    return checked


def _check_hold(dag_id: str, hold_until: str | None, params: Mapping[str, Any] | None) -> str | None:
    """``hold_until`` must name a required string param (the hold's end) of the workflow."""
    if hold_until is None:
        return None
    param = (params or {}).get(hold_until)
    if not isinstance(param, Param) or param.schema.get("type") != "string" or param.has_value:
        raise WorkflowDefinitionError(
            f"DAG {dag_id}: hold_until={hold_until!r} must name a required string param (the hold's end)"
        )
    return hold_until


def correlation_param() -> Param:
    """Every workflow's optional ``correlation_id``: a bad one is refused (HTTP 400) before the run exists."""
    return Param(
        None,
        type=["null", "string"],
        pattern=CORRELATION_PATTERN,
        title="Correlation id",
        description="Optional: the ticket's or event's id that links ticket, workflow and cloud change; "
        "empty: derived from the run",
    )


def sla_deadline(domain: DomainPolicy, kind: WorkflowKind, hold_until: str | None = None) -> DeadlineAlert:
    """A Deadline Alert that emails the domain's alert list when a run outlives its SLA.

    :param domain: the workflow's domain policy.
    :param kind: which of the domain's SLAs applies.
    :param hold_until: for a workflow that holds a change until a time given in this param, the SLA
        counts from that time (:class:`include.workflows.holds.HoldEndDeadline`), else from the
        run's queue time.
    """
    sla = domain.sla[kind]
    reference: Any = DeadlineReference.DAGRUN_QUEUED_AT
    if hold_until is not None:
        longest = domain.timeouts[kind].dagrun_timeout.total_seconds()
        reference = HoldEndDeadline(param=hold_until, longest_seconds=longest)
    return DeadlineAlert(
        reference=reference,
        interval=sla,
        callback=AsyncCallback(
            SlaMissNotifier,
            kwargs={
                "to": list(domain.alert_emails),
                "from_email": ALERT_FROM,
                "smtp_conn_id": ALERT_SMTP_CONN_ID,
                "domain": domain.name,
                "kind": kind,
                "sla_seconds": sla.total_seconds(),
                "digest_window_seconds": domain.alert_digest_window.total_seconds(),
                "base_url": conf.get("api", "base_url", fallback="http://localhost:8080"),
            },
        ),
        name=f"{domain.name}-{kind}-sla",
    )


def access_control(domain: DomainPolicy) -> dict[str, dict[str, set[str]]]:
    """Per-DAG permissions: the domain's operators run it; its approver groups may answer its approvals.

    Answering a HITL request needs edit on the DAG in FAB (plus the global "HITL Detail"
    permission, which ``policy-sync`` gives approver roles).
    """
    from include.policies.approvals import load_approvals

    grants = {domain.operator_role: OPERATOR_PERMISSIONS, domain.approver_role: APPROVER_PERMISSIONS}
    for group in load_approvals().groups_of_domain(domain.name):
        grants[group.name] = APPROVER_PERMISSIONS
    return grants


def workflow_dag_kwargs(
    *,
    dag_id: str,
    domain: str,
    doc_md: str | None,
    kind: WorkflowKind = "fast_path",
    params: Mapping[str, Any] | None = None,
    tags: tuple[str, ...] = (),
    hold_until: str | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """The keyword arguments for ``DAG``/``@dag`` with the domain policy applied."""
    if not doc_md or not doc_md.strip():
        raise WorkflowDefinitionError(f"DAG {dag_id}: doc_md is required (say what the workflow does)")
    policy = load_domain_policy()
    domain_policy = policy.domain(domain)
    limits = domain_policy.timeouts[kind]
    forbidden = {
        "default_args",
        "access_control",
        "max_active_runs",
        "max_active_tasks",
        "deadline",
        "dagrun_timeout",
    } & overrides.keys()
    if forbidden:
        raise WorkflowDefinitionError(
            f"DAG {dag_id}: {', '.join(sorted(forbidden))} come from the domain policy and cannot be set here"
        )
    return {
        "dag_id": dag_id,
        "doc_md": doc_md,
        "schedule": overrides.pop("schedule", None),
        "start_date": overrides.pop("start_date", WORKFLOW_START),
        "catchup": False,
        "tags": sorted({domain_policy.tag, domain, f"{KIND_TAG_PREFIX}{kind}", *tags}),
        "params": _check_params(dag_id, params),
        "max_active_runs": domain_policy.max_active_runs,
        "max_active_tasks": domain_policy.max_active_tasks,
        "deadline": sla_deadline(domain_policy, kind, _check_hold(dag_id, hold_until, params)),
        # The hard end of a run (the SLA above only alerts); longer than any approval chain of the
        # domain (policy-check, run-timeouts).
        "dagrun_timeout": limits.dagrun_timeout,
        "access_control": access_control(domain_policy),
        "default_args": {
            "owner": domain_policy.owner,
            "pool": domain_policy.pool,
            "queue": domain_policy.queue,
            "priority_weight": domain_policy.priority_weight,
            # Absolute weights: a domain's priority must not grow with the size of a DAG, or a long
            # bulk support DAG would outrank a short SOC containment DAG.
            "weight_rule": "absolute",
            "retries": policy.defaults.retries,
            "retry_delay": policy.defaults.retry_delay,
            "retry_exponential_backoff": 2.0,
            "max_retry_delay": policy.defaults.max_retry_delay,
            # The default and the maximum: a task may set a shorter one (include/policies/timeouts.py).
            "execution_timeout": limits.execution_timeout,
        },
        **overrides,
    }


def domain_workflow(
    *,
    domain: str,
    doc_md: str | None,
    dag_id: str | None = None,
    kind: WorkflowKind = "fast_path",
    params: Mapping[str, Any] | None = None,
    tags: tuple[str, ...] = (),
    hold_until: str | None = None,
    **overrides: Any,
) -> Callable[[Callable[..., Any]], Callable[..., DAG]]:
    """Decorate a function that builds the tasks, like ``@dag``, with the domain policy applied.

    :param domain: a domain declared in ``include/policies/domains.yaml``.
    :param doc_md: what the workflow does, shown in the UI; required.
    :param dag_id: defaults to ``<domain>_<function name>``.
    :param kind: which SLA and timeouts of the domain apply: ``fast_path`` or ``infrastructure_change``.
    :param params: typed :class:`airflow.sdk.Param` objects for the trigger form.
    :param hold_until: for a workflow that holds a change until a time the trigger form gives (a
        required param with a date-time), that param's name: the SLA counts from that time.
    """

    def decorator(func: Callable[..., Any]) -> Callable[..., DAG]:
        kwargs = workflow_dag_kwargs(
            dag_id=dag_id or f"{domain}_{func.__name__}",
            domain=domain,
            doc_md=doc_md,
            kind=kind,
            params=params,
            tags=tags,
            hold_until=hold_until,
            **overrides,
        )
        return dag(**kwargs)(func)  # noqa: AIR002 - schedule is in kwargs (default None)

    return decorator
