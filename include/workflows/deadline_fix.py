"""Clearing a task of a DAG run with a pending SLA deadline fails in Airflow 3.3.2: the fix we run.

Why. Clearing task instances (the UI's "Clear", ``POST /api/v2/dags/{dag_id}/clearTaskInstances``,
``airflow tasks clear``) sets the run's ``queued_at`` to now and moves each of its unmissed
``DAGRUN_QUEUED_AT`` deadlines to the new ``queued_at`` + interval (apache/airflow#61372), in
``airflow.models.taskinstance._recalculate_dagrun_queued_at_deadlines``. Since 3.3.0
``deadline_alert.interval`` is a JSON column holding the serialized interval (migration 0117, from
apache/airflow#64751), e.g. ``{"__classname__": "datetime.timedelta", "__version__": 2,
"__data__": 3600.0}``, but that function still does ``timedelta(seconds=deadline_alert.interval)``:
``TypeError: unsupported type for timedelta seconds component: dict``, HTTP 500, nothing cleared.
Every workflow here carries such a deadline (its domain SLA, ``include/workflows/factory.py``), so
no task of a running run could be cleared, nor of a failed run whose SLA had not passed yet (a run
that succeeded has its deadline pruned, so clearing it worked). Upstream: issue
apache/airflow#70368, fix apache/airflow#70370 (open when this was written; not in 3.3.2).

What. The same function, with the interval decoded by Airflow's own decoder
(``airflow.serialization.decoders.decode_deadline_alert``, as DAG run creation decodes it; it takes
the serialized ``timedelta`` and the bare number of seconds of rows written before 3.3). Two kinds
of deadline keep their time (as every deadline did on a clear before apache/airflow#61372), logged:

- a variable-backed interval (``VariableInterval``): resolving it reads the Variable through a
  session of its own, which, in a caller holding the thread's scoped session, commits that caller's
  half-done clear (the trap pointed out in the review of apache/airflow#70370);
- an alert that does not decode: a clear must not fail because of its alert.

The guard. ``install()`` (called from ``config/airflow_local_settings.py``, which every Airflow
component imports at start-up) replaces the function only if Airflow's version is in
``PATCHED_AIRFLOW_VERSIONS`` *and* the function's source still contains ``FAULTY_EXPRESSION``
verbatim (an upstream fix replaces that expression). Otherwise it logs a warning and changes
nothing, so an upgrade never keeps a stale copy of 3.3.2's code. The replacement happens right
after Airflow imports ``airflow.models.taskinstance`` (a one-shot import hook): processes that never
import it (task runners, most CLI commands) pay nothing, and none of Airflow's modules is imported
earlier than Airflow itself would. Each component that got it logs "Patched
airflow.models.taskinstance._recalculate_dagrun_queued_at_deadlines" once.

Removal. When Airflow is upgraded, ``tests/unit/test_deadline_fix.py`` fails (the installed
version is no longer the patched one; and ``test_airflow_3_3_2_fails_the_clear`` fails once the bug
is gone). If the new release contains the fix of #70368, delete this module, its unit test and the
``install_deadline_fix`` lines in ``config/airflow_local_settings.py``; keep
``tests/e2e/test_clear_running_run.py``, which checks the behaviour, not the patch. If it does not,
check that the function is unchanged apart from the bug and add the version to
``PATCHED_AIRFLOW_VERSIONS``.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import inspect
import logging
import sys
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from importlib.machinery import ModuleSpec

    from airflow.models.dagrun import DagRun
    from airflow.models.deadline_alert import DeadlineAlert as DeadlineAlertModel
    from sqlalchemy.orm import Session

log = logging.getLogger(__name__)

PATCHED_AIRFLOW_VERSIONS = frozenset({"3.3.2"})
TARGET_MODULE = "airflow.models.taskinstance"
TARGET_FUNCTION = "_recalculate_dagrun_queued_at_deadlines"
FAULTY_EXPRESSION = "timedelta(seconds=deadline_alert.interval)"
WHAT_NOW = (
    "Remove include/workflows/deadline_fix.py if apache/airflow#70368 is fixed in this release, "
    "else re-check it and extend PATCHED_AIRFLOW_VERSIONS"
)


def _patched_versions() -> str:
    return ", ".join(sorted(PATCHED_AIRFLOW_VERSIONS))


def recalculate_dagrun_queued_at_deadlines(dagrun: DagRun, new_queued_at: datetime, session: Session) -> None:
    """Airflow 3.3.2's ``_recalculate_dagrun_queued_at_deadlines``, with the interval decoded.

    Like the original, it only changes the ORM objects: the caller commits (or rolls back) them
    with the rest of the clear.
    """
    from airflow.models.deadline import Deadline, ReferenceModels
    from airflow.models.deadline_alert import DeadlineAlert as DeadlineAlertModel
    from sqlalchemy import false, select

    rows = session.execute(
        select(Deadline, DeadlineAlertModel)
        .join(DeadlineAlertModel, Deadline.deadline_alert_id == DeadlineAlertModel.id)
        .where(
            Deadline.dagrun_id == dagrun.id,
            Deadline.missed == false(),
            DeadlineAlertModel.reference[ReferenceModels.REFERENCE_TYPE_FIELD].as_string()
            == ReferenceModels.DagRunQueuedAtDeadline.__name__,
        )
    ).all()
    for deadline, deadline_alert in rows:
        interval = fixed_interval(deadline_alert)
        if interval is None:
            continue
        new_deadline_time = new_queued_at + interval
        log.debug(
            "Recalculating deadline %s for DagRun %s.%s: old=%s, new=%s",
            deadline.id,
            dagrun.dag_id,
            dagrun.run_id,
            deadline.deadline_time,
            new_deadline_time,
        )
        deadline.deadline_time = new_deadline_time


def fixed_interval(deadline_alert: DeadlineAlertModel) -> timedelta | None:
    """The alert's interval as Airflow decodes it, or None if its deadline must keep its time."""
    from airflow.serialization.decoders import decode_deadline_alert
    from airflow.serialization.definitions.deadline import DeadlineAlertFields

    try:
        decoded = decode_deadline_alert(
            {
                DeadlineAlertFields.NAME: deadline_alert.name,
                DeadlineAlertFields.REFERENCE: deadline_alert.reference,
                DeadlineAlertFields.INTERVAL: deadline_alert.interval,
                DeadlineAlertFields.CALLBACK: deadline_alert.callback_def,
            }
        )
    except Exception:
        # Decoding reads no database, so nothing of the caller's transaction is at stake here.
        log.warning(
            "Deadline alert %s does not decode; its deadlines keep their time on this clear",
            deadline_alert.id,
            exc_info=True,
        )
        return None
    if isinstance(decoded.interval, timedelta):
        return decoded.interval
    log.warning(
        "Deadline alert %s has a variable-backed interval (%r); its deadlines keep their time on this "
        "clear (include/workflows/deadline_fix.py)",
        deadline_alert.id,
        decoded.interval,
    )
    return None


def refusal(function: Callable[..., Any] | None, airflow_version: str) -> str | None:
    """Why ``function`` must not be replaced, or None if it is the faulty one this module fixes."""
    if airflow_version not in PATCHED_AIRFLOW_VERSIONS:
        return f"Airflow {airflow_version} is not a patched version ({_patched_versions()})"
    if function is None:
        return f"{TARGET_MODULE} has no {TARGET_FUNCTION}"
    try:
        source = inspect.getsource(function)
    except (OSError, TypeError):
        return f"the source of {TARGET_FUNCTION} cannot be read to check it"
    if FAULTY_EXPRESSION not in source:
        return f"{TARGET_FUNCTION} no longer contains {FAULTY_EXPRESSION!r} (fixed upstream?)"
    return None


def patch(module: ModuleType) -> bool:
    """Replace the faulty function in Airflow's ``module``; False (and a warning) if the guard refuses."""
    import airflow

    current = getattr(module, TARGET_FUNCTION, None)
    if current is recalculate_dagrun_queued_at_deadlines:
        return True
    problem = refusal(current, airflow.__version__)
    if problem:
        log.warning("Not patching %s.%s: %s. %s", TARGET_MODULE, TARGET_FUNCTION, problem, WHAT_NOW)
        return False
    setattr(module, TARGET_FUNCTION, recalculate_dagrun_queued_at_deadlines)
    log.debug("Patched %s.%s (apache/airflow#70368)", TARGET_MODULE, TARGET_FUNCTION)
    return True


class _PatchingLoader(importlib.abc.Loader):
    """Runs Airflow's own loader, then patches the module before anyone can call it."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self._loader = loader

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        # Hand the module its real loader back, so nothing of this hook outlives the import.
        module.__loader__ = self._loader
        if module.__spec__ is not None:
            module.__spec__.loader = self._loader
        self._loader.exec_module(module)
        patch(module)


class _PatchAfterImport(importlib.abc.MetaPathFinder):
    """A one-shot import hook: wraps the loader of ``TARGET_MODULE``, then leaves ``sys.meta_path``."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname != TARGET_MODULE:
            return None
        if self in sys.meta_path:
            sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            spec.loader = _PatchingLoader(spec.loader)
        return spec


def install() -> None:
    """Patch Airflow now if its module is loaded, else right after Airflow loads it (see module doc)."""
    import airflow

    if airflow.__version__ not in PATCHED_AIRFLOW_VERSIONS:
        log.warning(
            "include/workflows/deadline_fix.py is for Airflow %s, not %s: not installed. %s",
            _patched_versions(),
            airflow.__version__,
            WHAT_NOW,
        )
        return
    module = sys.modules.get(TARGET_MODULE)
    if module is not None:
        patch(module)
    elif not any(isinstance(finder, _PatchAfterImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _PatchAfterImport())
