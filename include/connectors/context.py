"""Who is asking: the run, task, tenant and correlation id every connector call carries (SEC-3, SCALE-2).

Connectors take a :class:`RunContext` instead of the raw Airflow context so that they are testable
without Airflow and so that the same correlation id ends up in STS session tags, ticket comments and
the audit log: one id links ticket <-> workflow <-> cloud change.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

CORRELATION_CONF_KEY = "correlation_id"
# What a correlation id from a trigger may look like: a ticket's or event's id. It ends up in STS
# session tags, ticket fields and audit records, so nothing that needs escaping there.
CORRELATION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@/+=-]{0,127}(?!\n)$"
_CORRELATION = re.compile(CORRELATION_PATTERN)


def checked_correlation_id(value: object) -> str:
    """A correlation id from conf if it matches :data:`CORRELATION_PATTERN`, else ``ValueError`` naming it."""
    text = str(value)
    if not _CORRELATION.match(text):
        raise ValueError(
            f"correlation_id {text[:40]!r} is refused: 1-128 characters of letters, digits and ._:@/+=-, "
            "starting with a letter or digit"
        )
    return text


def default_correlation_id(dag_id: str, run_id: str) -> str:
    """``corr-<sha256(dag_id + run_id)[:16]>``: stable, so a retried task reports its first try's id."""
    digest = hashlib.sha256(f"{dag_id}{run_id}".encode()).hexdigest()
    return f"corr-{digest[:16]}"


@dataclass(frozen=True)
class RunContext:
    dag_id: str
    run_id: str
    task_id: str
    tenant: str
    correlation_id: str

    @classmethod
    def from_airflow_context(cls, context: Mapping[str, Any], tenant: str) -> RunContext:
        """Read dag/run/task ids from a task's Airflow context; the correlation id from the trigger's conf.

        A run triggered from a ticket carries ``conf["correlation_id"]`` (checked against
        :data:`CORRELATION_PATTERN`; every workflow's trigger form refuses a bad one with HTTP 400
        before the run exists); any other run gets a deterministic id derived from dag_id and run_id.
        """
        ti = context["ti"]
        dag_run = context.get("dag_run")
        dag_id = ti.dag_id
        run_id = context.get("run_id") or ti.run_id
        conf = (getattr(dag_run, "conf", None) or {}) if dag_run is not None else {}
        given = conf.get(CORRELATION_CONF_KEY)
        correlation_id = checked_correlation_id(given) if given else default_correlation_id(dag_id, run_id)
        return cls(
            dag_id=dag_id,
            run_id=run_id,
            task_id=ti.task_id,
            tenant=tenant,
            correlation_id=correlation_id,
        )
