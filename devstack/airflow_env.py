"""Airflow's configuration for the local stack, as environment variables (no airflow.cfg to drift)."""

from __future__ import annotations

import json
import os
from typing import Any

from cryptography.fernet import Fernet

from devstack.config import HOST, MOTO_ACCESS_KEY, MOTO_SECRET_KEY, REGION, REPO_ROOT, VENV_BIN, Profile

# FAB plus role-based answers to approval requests (include/auth/fab.py).
AUTH_MANAGER = "include.auth.fab.ApprovalAwareFabAuthManager"
SECRETS_BACKEND = "airflow.providers.amazon.aws.secrets.secrets_manager.SecretsManagerBackend"
ADMIN_USER = "admin"


def local_bundle() -> dict[str, Any]:
    return {
        "name": "dags-folder",
        "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
        "kwargs": {"path": str(REPO_ROOT / "dags")},
    }


def airflow_env(profile: Profile, *, extra_bundles: list[dict[str, Any]] | None = None) -> dict[str, str]:
    """The full environment for every Airflow process of ``profile``."""
    backend_kwargs = {
        "connections_prefix": "airflow/connections",
        "variables_prefix": "airflow/variables",
        "config_prefix": None,
        "endpoint_url": profile.moto_url,
        "region_name": REGION,
        "aws_access_key_id": MOTO_ACCESS_KEY,
        "aws_secret_access_key": MOTO_SECRET_KEY,
    }
    settings = {
        "AIRFLOW_HOME": str(profile.airflow_home),
        # The repo root for `include`, config/ for airflow_local_settings (cluster policies).
        "PYTHONPATH": f"{REPO_ROOT}{os.pathsep}{REPO_ROOT / 'config'}",
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        # Every file under dags/ is a DAG file (the policy check enforces it), so skip the
        # "must mention airflow and dag" heuristic that would hide factory-built DAGs.
        "AIRFLOW__CORE__DAG_DISCOVERY_SAFE_MODE": "False",
        # LocalExecutor minus a 3.3.2 race that fails tasks resumed right after deferring.
        "AIRFLOW__CORE__EXECUTOR": "include.executors.local.ResumeSafeLocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "32",
        # GitOps: a merged workflow is live; pausing is an explicit operator action.
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__AUTH_MANAGER": AUTH_MANAGER,
        "AIRFLOW__CORE__FERNET_KEY": profile.local_secret(
            "fernet-key", lambda: Fernet.generate_key().decode()
        ),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{profile.api_url}/execution/",
        # Parse budget: a DAG file that takes longer than this is broken, not slow.
        "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "10",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": profile.db_url,
        "AIRFLOW__DATABASE__SQL_ALCHEMY_POOL_SIZE": "10",
        "AIRFLOW__API__HOST": HOST,
        "AIRFLOW__API__PORT": str(profile.api_port),
        "AIRFLOW__API__BASE_URL": profile.api_url,
        # Log servers per profile (defaults 8793/8794 would clash between two profiles).
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(profile.api_port + 13),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(profile.api_port + 14),
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API__SECRET_KEY": profile.local_secret("api-secret-key"),
        "AIRFLOW__API_AUTH__JWT_SECRET": profile.local_secret("jwt-secret"),
        "AIRFLOW__FAB__UPDATE_FAB_PERMS": "True",
        # Log in with the company directory (AUTH_LDAP, include/auth/security.py); no secrets in it.
        "AIRFLOW__FAB__CONFIG_FILE": str(REPO_ROOT / "config" / "webserver_config.py"),
        "AIRFLOW__SECRETS__BACKEND": SECRETS_BACKEND,
        "AIRFLOW__SECRETS__BACKEND_KWARGS": json.dumps(backend_kwargs),
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "15",
        # A changed DAG file is parsed at once whatever this says (file_parsing_sort_mode is
        # modified_time); this only paces re-parsing unchanged files. At Airflow's 30 s the DAG
        # processor used 0.19 cores of 2 when idle and 0.25 under load (issue 8); at 120 s, 0.10
        # idle and 0.08 under load.
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "120",
        # Airflow skips writing a parsed DAG if it wrote it less than this ago (default 30 s),
        # and nothing parses the file again before the interval above: a merge that reached a
        # DAG within 30 s of its previous write stayed invisible until that re-parse (CI's GitOps
        # test timed out at 120 s; reproduced here: written 00:31:26, skipped 00:31:43). Unchanged
        # DAGs are never written (same hash), so the write rate stays low; the cost is the
        # scheduler checking a cached DAG's hash once a second instead of every 30 s.
        "AIRFLOW__CORE__MIN_SERIALIZED_DAG_UPDATE_INTERVAL": "1",
        "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_STORAGE_PATH": str(profile.root / "dag_bundles"),
        "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": json.dumps(
            [local_bundle(), *(extra_bundles or [])]
        ),
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "True",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": str(profile.api_port + 15),
        "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.25",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        "AIRFLOW__METRICS__STATSD_ON": "False",
        "NO_PROXY": "*",
    }
    if profile.distributed:
        settings.update(celery_settings(profile))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__") and k != "AIRFLOW_HOME"}
    env.update(settings)
    return env


def celery_settings(profile: Profile) -> dict[str, str]:
    """The distributed setup (issue 9): Airflow's CeleryExecutor, Redis as broker, results in the
    metadata database (the provider's default: ``db+`` + ``sql_alchemy_conn``).

    ``broker_url`` holds the Redis password; Airflow lists it as a sensitive config value, so the
    config API and UI hide it, and it is never logged by this project.
    """
    from devstack import redis

    return {
        # CeleryExecutor minus the 3.3.2 resume race (include/executors/stale_events.py).
        "AIRFLOW__CORE__EXECUTOR": "include.executors.celery.ResumeSafeCeleryExecutor",
        "AIRFLOW__CELERY__BROKER_URL": redis.url(profile, redis.BROKER_DB),
        # Airflow's Celery defaults, plus the LocalExecutor's warm-up in each worker before its
        # pool forks (issue 26): without it every Celery task process imported boto3, Great
        # Expectations and the workflow helpers again (include/executors/celery_worker.py).
        "AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS": "include.executors.celery_worker.CELERY_CONFIG",
        # Task slots per worker: 2 workers x 16 on one host = the embedded setup's parallelism (32).
        # At 8, one worker had 8 tasks running on a host that was not busy (1.6 of 2 cores; the
        # embedded setup filled up to 30 slots): 0.46x the embedded runs/min (issue 26).
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": "16",
        # One message at a time per process: a long task never holds a short one hostage on a
        # busy worker while the other one idles.
        "AIRFLOW__CELERY__WORKER_PREFETCH_MULTIPLIER": "1",
        # A worker that dies (kill -9, lost node) stops heartbeating its tasks: after this many
        # seconds the scheduler fails the try and the retry goes to a live worker. The default
        # (300 s) is for long batch tasks; ours heartbeat every few seconds.
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "30",
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
    }


# The API server's database connections beyond [database] sql_alchemy_pool_size (10). Airflow
# 3.3.2's action log (`log_action`, api_fastapi/logging/decorators.py) is an async dependency that
# commits with the synchronous session on the event loop: once the sync endpoints in the thread
# pool hold every pooled connection (pool 10 + overflow 10), and release them only when the loop
# runs their teardown, the loop waits [database] sql_alchemy_pool_timeout (30 s) for one and the
# whole API server stops, REST and execution API alike (issue 26: a 60-run burst on two Celery
# workers stopped it for 60 s in 4 of 5 runs; py-spy showed the loop in pool checkout under
# log_action and 20 sessions idle in transaction). With more overflow than the thread pool has
# threads (AnyIO's 40) plus the requests waiting for their teardown, the loop gets a connection at
# once; the extra connections are closed when given back. The cluster allows 300.
API_SERVER_MAX_OVERFLOW = 100


def api_server_env(profile: Profile) -> dict[str, str]:
    """What the API server's process gets on top of :func:`airflow_env` (see above)."""
    return {"AIRFLOW__DATABASE__SQL_ALCHEMY_MAX_OVERFLOW": str(API_SERVER_MAX_OVERFLOW)}


def celery_worker_env(profile: Profile, index: int) -> dict[str, str]:
    """What differs per worker on one machine: its log server port (workers 1, 2: api+13, api+16)."""
    port = profile.api_port + (13 if index == 0 else 15 + index)
    return {"AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(port)}
