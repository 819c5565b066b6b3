"""Which tasks of a DAG nobody sets by hand: approval gates and privileged steps.

A task is a *gate* when its operator class is an
:class:`~include.operators.approval.ApprovalGateOperator`, and *privileged* when its class
attribute ``capability`` names a capability with ``privileged: true`` in
``include/policies/capabilities.yaml`` (an undeclared one counts as privileged). The API server
reads DAGs serialized, so a task is known by its operator's module and class name
(``_task_module``, ``task_type``): classes are imported only from the platform's own packages
(:data:`OPERATOR_PACKAGES`), never from another module named in the database, and a class there
that does not import is *unclassified* and guarded like a privileged one (fails closed).

:func:`shape_of` reduces a serialized DAG to what :mod:`include.approvals.door` needs: the guarded
tasks, the edges (to follow ``include_upstream`` / ``include_downstream`` as Airflow does) and the
task groups.
"""

from __future__ import annotations

import importlib
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Final, Literal, NamedTuple

log = logging.getLogger(__name__)

OPERATOR_PACKAGES: Final = ("include.",)
"""The only modules operator classes are imported from to classify a task."""
RULE_GATE: Final = "approval-gate"
RULE_PRIVILEGED: Final = "privileged-step"
RULE_UNCLASSIFIED: Final = "unclassified-step"

_MODULE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")


class TaskKind(NamedTuple):
    """Why a task is guarded: ``gate``, ``privileged`` (with its capability) or ``unclassified``."""

    kind: Literal["gate", "privileged", "unclassified"]
    operator: str
    capability: str | None = None

    @property
    def rule(self) -> str:
        return {"gate": RULE_GATE, "privileged": RULE_PRIVILEGED}.get(self.kind, RULE_UNCLASSIFIED)

    @property
    def label(self) -> str:
        """What the task is, in a few words."""
        if self.kind == "gate":
            return "an approval gate"
        if self.kind == "privileged":
            return f"a privileged step, capability {self.capability}"
        return f"a step of {self.operator}, which the API server could not classify"

    def reason(self, task_id: str) -> str:
        """Why nobody sets this task's state by hand, as a clause naming the task."""
        if self.kind == "gate":
            return (
                f"{task_id} is an approval gate: its state is set only by an approver's answer "
                "(Required actions), never by hand"
            )
        if self.kind == "privileged":
            return (
                f"{task_id} is a privileged step (capability {self.capability}): it runs only after "
                "its approval, and its state is never set by hand"
            )
        return (
            f"{task_id} runs {self.operator}, which the API server could not import to check whether "
            "it needs an approval, so its state is not set by hand"
        )


@cache
def classify_operator(module: str | None, class_name: str | None) -> TaskKind | None:
    """The kind of a serialized task from its operator's module and class name (``None``: plain).

    Only :data:`OPERATOR_PACKAGES` are imported; a class there that does not import is
    ``unclassified`` (fails closed).
    """
    if not module or not class_name or not module.startswith(OPERATOR_PACKAGES):
        return None
    operator = f"{module}.{class_name}"
    try:
        if not _MODULE_NAME.fullmatch(module):
            raise ImportError(f"not a module name: {module!r}")
        operator_class = getattr(importlib.import_module(module), class_name)
        if not isinstance(operator_class, type):
            raise TypeError(f"{operator} is not a class")
    except Exception as error:
        log.error("approval door: cannot import %s to classify it (%s)", operator, type(error).__name__)
        return TaskKind("unclassified", operator)
    return _class_kind(operator_class, operator)


def _class_kind(operator_class: type, operator: str) -> TaskKind | None:
    from include.operators.approval import ApprovalGateOperator

    if issubclass(operator_class, ApprovalGateOperator):
        return TaskKind("gate", operator)
    capability = getattr(operator_class, "capability", None)
    if not isinstance(capability, str) or not capability:
        return None
    from include.policies.capabilities import get_capability
    from include.policies.loader import PolicyError

    try:
        privileged = get_capability(capability).privileged
    except PolicyError:
        privileged = True  # a capability the policy does not declare: fail closed
    return TaskKind("privileged", operator, capability) if privileged else None


@dataclass(frozen=True)
class DagShape:
    """What the door needs of one DAG (or of several versions of it, merged): its guarded tasks,
    its edges and its task groups."""

    dag_id: str
    domain: str | None = None
    kinds: Mapping[str, TaskKind] = field(default_factory=dict)
    upstream: Mapping[str, frozenset[str]] = field(default_factory=dict)
    downstream: Mapping[str, frozenset[str]] = field(default_factory=dict)
    teardowns: frozenset[str] = frozenset()
    groups: Mapping[str, frozenset[str]] = field(default_factory=dict)

    @property
    def gates(self) -> list[str]:
        return sorted(task for task, kind in self.kinds.items() if kind.kind == "gate")

    def reach(self, task_ids: Iterable[str], *, upstream: bool, downstream: bool) -> set[str]:
        """The tasks a state change of ``task_ids`` sets, as Airflow's ``set_state`` finds them
        (every upstream task; every downstream one except teardowns)."""
        reached = set(task_ids)
        if downstream:
            reached |= _closure(reached, self.downstream) - self.teardowns
        if upstream:
            reached |= _closure(set(task_ids), self.upstream)
        return reached

    def merged(self, other: DagShape) -> DagShape:
        """Both versions at once: a task guarded in either is guarded, every edge of either counts."""
        kinds = {**other.kinds, **self.kinds}
        for task, kind in other.kinds.items():
            if kind.kind == "gate":
                kinds[task] = kind
        return DagShape(
            dag_id=self.dag_id,
            domain=self.domain or other.domain,
            kinds=kinds,
            upstream=_union(self.upstream, other.upstream),
            downstream=_union(self.downstream, other.downstream),
            teardowns=self.teardowns | other.teardowns,
            groups=_union(self.groups, other.groups),
        )


def _closure(start: set[str], edges: Mapping[str, frozenset[str]]) -> set[str]:
    seen: set[str] = set()
    pending = [relative for task in start for relative in edges.get(task, ())]
    while pending:
        task = pending.pop()
        if task not in seen:
            seen.add(task)
            pending.extend(edges.get(task, ()))
    return seen


def _union(
    first: Mapping[str, frozenset[str]], second: Mapping[str, frozenset[str]]
) -> dict[str, frozenset[str]]:
    return {key: first.get(key, frozenset()) | second.get(key, frozenset()) for key in {*first, *second}}


def shape_of(dag: Any) -> DagShape:
    """The :class:`DagShape` of a serialized DAG (``SerializedDAG`` as the API server reads it)."""
    kinds = {}
    for task in dag.tasks:
        kind = classify_operator(getattr(task, "_task_module", None), getattr(task, "task_type", None))
        if kind is not None:
            kinds[task.task_id] = kind
    domains = sorted(tag.removeprefix("domain:") for tag in dag.tags or () if tag.startswith("domain:"))
    return DagShape(
        dag_id=dag.dag_id,
        domain=domains[0] if len(domains) == 1 else None,
        kinds=kinds,
        upstream={task.task_id: frozenset(task.upstream_task_ids) for task in dag.tasks},
        downstream={task.task_id: frozenset(task.downstream_task_ids) for task in dag.tasks},
        teardowns=frozenset(task.task_id for task in dag.tasks if getattr(task, "is_teardown", False)),
        groups={
            group_id: frozenset(task.task_id for task in group.iter_tasks())
            for group_id, group in dag.task_group_dict.items()
        },
    )
