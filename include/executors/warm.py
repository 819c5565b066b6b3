"""Heavy third-party modules, imported once by the scheduler before the LocalExecutor forks.

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

Only pinned third-party code is warmed, never ``include`` or ``plugins``: a merged change to the
platform's own code must reach the next task without a scheduler restart, and a package upgrade is a
deployment, which restarts every component anyway. Set ``ORCH_WARM_IMPORTS=0`` to skip both.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import logging
import os
import sys
import time
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
