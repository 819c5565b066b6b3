"""Heavy third-party modules, imported once by the scheduler before the LocalExecutor forks (and
by each Celery worker before its pool forks: :mod:`include.executors.celery_worker`).

With the ``fork`` start method the LocalExecutor forks its worker processes at start, and each
worker forks one process per task (the Task SDK supervisor). A module already imported in the
scheduler is therefore already imported in every task process; one that is not is imported again
by each task that needs it. Measured with py-spy over a burst of ``support_service_check`` runs
(issue 8): building the Secrets Manager backend's boto3 client for each task's first connection
was 29 % of all task-process CPU, importing Airflow's ``@task`` decorator module 4 %. Great
Expectations takes 4.1 s to import alone (8.6 s in a busy scheduler's start); each HR
``validate_record`` task paid it, and with three HR runs at once that task took p50 27 s.

The workers' secrets backends are built here too, client included (no request is made, so no
connection is open when the workers fork): Airflow keeps them per process
(``airflow.sdk.configuration.ensure_secrets_loaded``), and each task process finds them built.

The workflow helpers the DAG files import (``include.workflows``, ``include.policies``, ...) and
the configured DAG bundles' classes (the Git bundle's: the Git provider, GitPython,
``include.bundles.git``; each task process builds its bundle) are imported too, with a guard: a
worker drops the ``include`` ones again as soon as a file under ``include/`` changed
(see :func:`warm_platform_modules`), so a change to the platform's own code reaches the next task
without a scheduler restart. A package upgrade is a deployment, which restarts every component
anyway. Set ``ORCH_WARM_IMPORTS=0`` to skip all of it.
"""

from __future__ import annotations

import ast
import functools
import importlib
import inspect
import logging
import os
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final

log = logging.getLogger(__name__)

WARM_IMPORTS_ENV: Final = "ORCH_WARM_IMPORTS"
WARM_MODULES: Final = (
    # What every task file imports for ``@task`` (Airflow's standard provider).
    "airflow.sdk.definitions.decorators",
    "airflow.providers.standard.operators.python",
    # boto3 for the tasks' own AWS clients (the secrets backend's is built below).
    "airflow.providers.amazon.aws.hooks.base_aws",
    "boto3",
    # The connectors: HTTP, retries, the shared rate limiter and its PostgreSQL store.
    "requests",
    "tenacity",
    "pyrate_limiter",
    "psycopg",
    "psycopg_pool",
    # Data validation of the HR and invoicing workflows (include/validation/).
    "pandas",
    "great_expectations",
)


def _enabled() -> bool:
    return os.environ.get(WARM_IMPORTS_ENV, "1") != "0"


def warm_imports(modules: tuple[str, ...] = WARM_MODULES) -> dict[str, float]:
    """Import ``modules``; return seconds per module. A module that fails to import is logged and
    skipped: the task that needs it will fail with the real error, in its own log."""
    if not _enabled():
        log.info("warm imports skipped (%s=0)", WARM_IMPORTS_ENV)
        return {}
    seconds: dict[str, float] = {}
    failed: list[tuple[str, str]] = []
    # Great Expectations logs ~200 INFO lines while importing; keep them out of the scheduler log.
    previous = logging.root.manager.disable
    logging.disable(logging.INFO)
    try:
        for name in modules:
            began = time.monotonic()
            try:
                importlib.import_module(name)
            except Exception as error:  # never keep the scheduler from starting
                failed.append((name, type(error).__name__))
                continue
            seconds[name] = round(time.monotonic() - began, 3)
    finally:
        logging.disable(previous)
    for name, error_type in failed:
        log.warning("warm import of %s failed: %s", name, error_type)
    log.info("warm imports before forking the executor's workers: %s", seconds)
    return seconds


def warm_secrets_backends() -> list[str]:
    """Build the task processes' secrets backends (and a backend's ``client``) in this process;
    return the names of those whose client was built."""
    if not _enabled():
        return []
    try:
        from airflow.sdk.configuration import ensure_secrets_loaded
        from airflow.sdk.execution_time.secrets import DEFAULT_SECRETS_SEARCH_PATH_WORKERS

        backends: list[Any] = ensure_secrets_loaded(default_backends=DEFAULT_SECRETS_SEARCH_PATH_WORKERS)
        built = []
        for backend in backends:
            # The AWS, GCP, Azure and Vault backends build their client lazily in a cached_property.
            if isinstance(getattr(type(backend), "client", None), functools.cached_property):
                _ = backend.client
                built.append(type(backend).__name__)
    except Exception as error:  # never keep the scheduler from starting; tasks build their own
        log.warning("secrets backends not built before forking: %s", type(error).__name__)
        return []
    log.info("secrets backends built before forking the executor's workers: %s", built)
    return built


# --- the Amazon provider's caller lookup ------------------------------------------------------
# AwsGenericHook puts the calling operator's class in the user agent of every client it builds,
# found with inspect.stack(), which reads the source of every frame on the stack (findsource ->
# getmodule over all of sys.modules). Measured: 0.07 s of CPU at the top of a script, 1.25 s
# thirty frames deeper, 2.2 s sixty deeper, with pandas and Great Expectations loaded; a task's
# execute is dozens of frames deep. The same answer from the frames alone, reading no source.
def _find_operator_class_name(target_function_name: str) -> str | None:
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == target_function_name:
            return type(frame.f_locals["self"]).__name__  # KeyError as before: "Unknown"
        frame = frame.f_back  # type: ignore[assignment]
    return None


def _find_executor_class_name() -> str | None:
    frame = sys._getframe(1)
    while frame is not None:
        classes = [name for name, obj in frame.f_globals.items() if inspect.isclass(obj)]
        if "BaseExecutor" in classes:
            return classes[-1]
        frame = frame.f_back  # type: ignore[assignment]
    return None


def cheap_aws_caller_lookup() -> bool:
    """Give ``AwsGenericHook`` the frame walk above; False if the provider no longer has the
    methods it replaces (then nothing is changed)."""
    if not _enabled():
        return False
    try:
        from airflow.providers.amazon.aws.hooks.base_aws import AwsGenericHook
    except ImportError:
        return False
    names = ("_find_operator_class_name", "_find_executor_class_name")
    if not all(isinstance(AwsGenericHook.__dict__.get(n), staticmethod) for n in names):
        log.warning("AwsGenericHook's caller lookup changed; left as it is")
        return False
    AwsGenericHook._find_operator_class_name = staticmethod(_find_operator_class_name)  # type: ignore[method-assign]
    AwsGenericHook._find_executor_class_name = staticmethod(_find_executor_class_name)  # type: ignore[method-assign]
    return True


# --- the platform's own modules, with a guard against running stale code -----------------------
# Each task process parses its DAG file, and a DAG file imports the workflow helpers
# (include.workflows, include.policies, include.approvals, ...): 0.15 s of CPU per task, measured
# in a warm process, most of the platform DAGs' remaining cost per task against the bare-Airflow
# ones. Imported here, before the workers fork, every task finds them imported. In production
# include/ ships in the image (a change to it is a deployment, which restarts the scheduler); in
# the local stack include/ is the working tree, so a worker checks before each task whether a
# warmed module's file or a data file under include/ changed since the scheduler started, and if
# so drops every warmed module: from then on its tasks import include/ afresh, as they would with
# no warming, until the scheduler restarts. Modules already imported at the scheduler's start (by
# the plugins: include.audit, include.metrics; by the cluster policy: include.policies.loader) were
# inherited before this change too and are not dropped: Airflow loads those once per process.
_WARMED: list[str] = []
_SNAPSHOT: dict[str, int] = {}
_DATA_SUFFIXES: Final = (".yaml", ".yml", ".json")
INCLUDE_ROOT: Final = Path(__file__).resolve().parents[1]


def _watched_files(modules: list[str]) -> list[str]:
    """The warmed modules' files and the data files under include/ (a module may read one when it
    is imported); found once, at warm-up: the per-task check only stats them (0.2 ms)."""
    files = {getattr(sys.modules.get(name), "__file__", None) for name in modules}
    files |= {str(p) for p in INCLUDE_ROOT.rglob("*") if p.suffix in _DATA_SUFFIXES}
    return sorted(f for f in files if f)


def _snapshot(files: Iterable[str]) -> dict[str, int]:
    stamps: dict[str, int] = {}
    for path in files:
        try:
            stamps[path] = os.stat(path).st_mtime_ns
        except OSError:
            stamps[path] = -1  # deleted: differs from any later stamp
    return stamps


def platform_imports(dags_folder: Path) -> list[str]:
    """The ``include.*`` modules the DAG files under ``dags_folder`` import (read, not run)."""
    names: set[str] = set()
    for path in sorted(dags_folder.rglob("*.py")):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        except (OSError, SyntaxError, ValueError):
            continue  # the DAG processor reports a broken file; nothing to warm from it
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
            elif isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
    return sorted(n for n in names if n == "include" or n.startswith("include."))


def warm_platform_modules(dags_folder: Path) -> list[str]:
    """Import what the DAG files import from ``include``; return the modules newly imported (the
    ones :func:`drop_stale_platform_modules` may drop)."""
    if not _enabled():
        return []
    before = set(sys.modules)
    failed = []
    for name in platform_imports(dags_folder):
        try:
            importlib.import_module(name)
        except Exception as error:  # the task that needs it fails with the real error
            failed.append((name, type(error).__name__))
    # Here, so that a bundle class of ours (include.bundles.git) is guarded like the others.
    failed.extend(_warm_dag_bundle_classes())
    for name, error_type in failed:
        log.warning("warm import of %s failed: %s", name, error_type)
    warmed = sorted(m for m in set(sys.modules) - before if m == "include" or m.startswith("include."))
    _WARMED[:] = warmed
    _SNAPSHOT.clear()
    _SNAPSHOT.update(_snapshot(_watched_files(warmed)))
    log.info("platform modules imported before forking the executor's workers: %d", len(warmed))
    return warmed


def _warm_dag_bundle_classes() -> list[tuple[str, str]]:
    """Import the configured DAG bundles' classes, as each task's ``DagBundlesManager`` does
    (Airflow's own parse of ``[dag_processor] dag_bundle_config_list``, ``import_string`` of each
    classpath); return what failed. Without this every task process of a Git bundle imported the
    Git provider, GitPython and ``include.bundles.git`` itself (docs/deployment.md, "With the Git
    bundle, as deployed"); the local bundle's class is part of Airflow and already imported."""
    try:
        from airflow.dag_processing.bundles.manager import DagBundlesManager

        DagBundlesManager()
    except Exception as error:  # the task fails with the real error, in its own log
        return [("dag bundle classes", type(error).__name__)]
    return []


def drop_stale_platform_modules() -> list[str]:
    """If platform code changed since :func:`warm_platform_modules`, forget every warmed module
    (this process and the ones it forks import them afresh); return the dropped modules."""
    if not _WARMED or _snapshot(_SNAPSHOT) == _SNAPSHOT:
        return []
    dropped = list(_WARMED)
    for name in dropped:
        sys.modules.pop(name, None)
    _WARMED.clear()
    log.warning(
        "include/ changed since the warm-up (scheduler or Celery worker start): %d warmed modules "
        "dropped; tasks import them afresh until that process restarts",
        len(dropped),
    )
    return dropped


def guard_task_launches() -> bool:
    """Make the executor's workers call :func:`drop_stale_platform_modules` before each workload.

    The LocalExecutor's worker loop and the Celery provider's ``execute_workload`` (in each pool
    process of a Celery worker) call ``BaseExecutor.run_workload`` (a staticmethod) for each task;
    it is wrapped in this process, before the workers fork. False if it is not there."""
    from airflow.executors.base_executor import BaseExecutor

    original = BaseExecutor.__dict__.get("run_workload")
    if not isinstance(original, staticmethod):
        log.warning("BaseExecutor.run_workload changed; warmed platform modules are not guarded")
        return False
    if getattr(original.__func__, "_drops_stale_modules", False):
        return True
    run_workload = original.__func__

    @functools.wraps(run_workload)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        try:
            drop_stale_platform_modules()
        except Exception:  # never keep a task from starting; it may import stale code, say so
            log.exception("could not check include/ for changes before a task")
        return run_workload(*args, **kwargs)

    guarded._drops_stale_modules = True  # type: ignore[attr-defined]
    BaseExecutor.run_workload = staticmethod(guarded)  # type: ignore[method-assign]
    return True
