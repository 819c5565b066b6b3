"""LocalExecutor that does not let a stale defer-exit success fail a resumed task, and whose task
processes start with the heavy third-party modules and the workflow helpers already imported.

Configured as ``[core] executor = include.executors.local.ResumeSafeLocalExecutor``; see
:mod:`include.executors.stale_events` for the race it closes and :mod:`include.executors.warm`
for the imports.
"""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from airflow.configuration import conf
from airflow.executors.local_executor import LocalExecutor

from include.executors.stale_events import DropStaleDeferExits
from include.executors.warm import (
    cheap_aws_caller_lookup,
    guard_task_launches,
    warm_imports,
    warm_platform_modules,
    warm_secrets_backends,
)


class ResumeSafeLocalExecutor(DropStaleDeferExits, LocalExecutor):
    def start(self) -> None:
        # Before the workers are forked, so they and every task process they fork inherit them.
        # With "spawn" nothing is inherited: importing here would only slow the scheduler's start.
        if multiprocessing.get_start_method() == "fork":
            warm_imports()
            warm_secrets_backends()
            cheap_aws_caller_lookup()
            if warm_platform_modules(Path(conf.get("core", "dags_folder"))):
                guard_task_launches()
        super().start()
