"""The Celery workers' configuration: Airflow's defaults plus the LocalExecutor's warm-up.

Configured as ``[celery] celery_config_options = include.executors.celery_worker.CELERY_CONFIG``
(the Celery provider's documented hook for a custom Celery configuration). Importing this module,
which every process that builds Airflow's Celery app does, connects one receiver to Celery's
``worker_init`` signal; only ``celery worker`` sends it.

How a Celery worker runs an Airflow 3.3 task: the worker's main process forks its prefork pool
processes (billiard) when the pool starts; a pool process runs ``execute_workload``, which calls
``BaseExecutor.run_workload`` -> ``supervise_task``, and the supervisor forks the task process.
``worker_init`` is sent in the main process before the pool is started, so what is imported there
is inherited by every pool process and by every task process a pool process forks: the same
warm-up, at the same place in the process tree, as the LocalExecutor's (its scheduler before it
forks its workers; :mod:`include.executors.local`). With the ``solo`` or ``threads`` pool the main
process forks the supervisors itself and inherits it directly.

The guard (:func:`include.executors.warm.guard_task_launches`) wraps ``BaseExecutor.run_workload``,
which ``execute_workload`` calls for each task: each pool process checks ``include/`` before each
task and drops the warmed platform modules once a merged change touched them, as a LocalExecutor
worker does. ``ORCH_WARM_IMPORTS=0`` in the worker's environment skips all of it.
"""

from __future__ import annotations

import gc
import logging
import time
from pathlib import Path
from typing import Any

from airflow.configuration import conf
from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG
from celery.signals import worker_init

from include.executors.warm import (
    cheap_aws_caller_lookup,
    guard_task_launches,
    warm_imports,
    warm_platform_modules,
    warm_secrets_backends,
)

log = logging.getLogger(__name__)

# A copy: the provider's team-aware path merges this dict over its own defaults, and skips it if
# it *is* DEFAULT_CELERY_CONFIG (celery_executor_utils.create_celery_app).
CELERY_CONFIG: dict[str, Any] = dict(DEFAULT_CELERY_CONFIG)


def warm_worker() -> dict[str, Any]:
    """The LocalExecutor's warm-up in this process; what was done, for the log and the tests."""
    began = time.monotonic()
    done: dict[str, Any] = {"imports": warm_imports()}
    done["secrets_backends"] = warm_secrets_backends()
    done["aws_caller_lookup"] = cheap_aws_caller_lookup()
    done["platform_modules"] = len(warm_platform_modules(Path(conf.get("core", "dags_folder"))))
    done["guarded"] = bool(done["platform_modules"]) and guard_task_launches()
    # Airflow's Celery integration freezes the GC when the worker imports its modules
    # (celery_executor_utils.on_celery_import_modules) and unfreezes it once the pool has started
    # (on_celery_worker_ready), so that the pool processes, and the task processes they fork,
    # inherit those objects in the permanent generation: a collection in a task process neither
    # walks them nor copies their pages. worker_init comes after that freeze, so what the warm-up
    # imported (pandas, Great Expectations, boto3, ...) was left out; freeze it too (the
    # LocalExecutor freezes everything when it forks its workers, after our warm-up). Measured in
    # forked children of a warmed process (docs/deployment.md, "With the Git bundle"): 0.2 s of
    # CPU per child frozen, 0.8 s not (a full collection of the warm-up's objects in each).
    gc.freeze()
    done["gc_frozen"] = gc.get_freeze_count()
    done["seconds"] = round(time.monotonic() - began, 2)
    return done


@worker_init.connect
def _on_worker_init(sender: Any = None, **_: Any) -> None:
    try:
        done = warm_worker()
    except Exception:  # never keep a worker from starting: its tasks import what they need
        log.exception("Celery worker warm-up failed; tasks import their modules themselves")
        return
    log.info(
        "Celery worker warmed before its pool forks in %ss: %d modules, %d platform modules "
        "(guarded: %s), secrets backends %s",
        done["seconds"],
        len(done["imports"]),
        done["platform_modules"],
        done["guarded"],
        done["secrets_backends"],
    )
