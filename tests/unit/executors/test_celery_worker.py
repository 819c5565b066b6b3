"""The Celery workers get the LocalExecutor's warm-up, and the guard sits in their task path
(include/executors/celery_worker.py; issue 26)."""

from __future__ import annotations

import gc
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from celery.signals import worker_init

from devstack.airflow_env import airflow_env
from devstack.config import Profile
from include.executors import celery_worker, warm

CONFIG_PATH = "include.executors.celery_worker.CELERY_CONFIG"


@pytest.fixture(autouse=True)
def _unfreeze_gc() -> Iterator[None]:
    """The warm-up freezes the GC of the process it runs in: not this test session's."""
    yield
    gc.unfreeze()


def _profile(executor: str) -> Profile:
    return Profile(
        name="unit-celery-worker", api_port=1, pg_port=2, moto_port=3, smtp_port=4, executor=executor
    )


def test_the_distributed_setup_builds_its_celery_app_from_the_warming_config() -> None:
    assert airflow_env(_profile("celery"))["AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS"] == CONFIG_PATH
    assert "AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS" not in airflow_env(_profile("local"))


def test_the_config_is_airflows_default_as_a_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    """A copy, equal: the provider's team-aware path merges it over its defaults only if it is not
    DEFAULT_CELERY_CONFIG itself; nothing of Airflow's Celery settings is changed."""
    from airflow.configuration import conf
    from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG

    monkeypatch.setenv("AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS", CONFIG_PATH)
    assert conf.getimport("celery", "celery_config_options") is celery_worker.CELERY_CONFIG
    assert celery_worker.CELERY_CONFIG == DEFAULT_CELERY_CONFIG
    assert celery_worker.CELERY_CONFIG is not DEFAULT_CELERY_CONFIG


def test_worker_init_warms_like_the_local_executor_then_guards(monkeypatch: pytest.MonkeyPatch) -> None:
    """Celery sends worker_init in the worker's main process before its pool forks: the same steps
    in the same order as ResumeSafeLocalExecutor.start before it forks its workers."""
    order: list[str] = []

    def step(name: str, result: Any = None) -> Any:
        def called(*args: Any) -> Any:
            order.append(" ".join([name, *(a.name for a in args)]))
            return result

        return called

    monkeypatch.setattr(celery_worker, "warm_imports", step("warm", {"boto3": 0.1}))
    monkeypatch.setattr(celery_worker, "warm_secrets_backends", step("backends", []))
    monkeypatch.setattr(celery_worker, "cheap_aws_caller_lookup", step("aws caller", True))
    monkeypatch.setattr(celery_worker, "warm_platform_modules", step("platform", ["m"]))
    monkeypatch.setattr(celery_worker, "guard_task_launches", step("guard", True))
    monkeypatch.setenv("AIRFLOW__CORE__DAGS_FOLDER", "/somewhere/dags")
    worker_init.send(sender=object())
    assert order == ["warm", "backends", "aws caller", "platform dags", "guard"]

    order.clear()  # nothing of the platform warmed (ORCH_WARM_IMPORTS=0, no DAGs): nothing to guard
    monkeypatch.setattr(celery_worker, "warm_platform_modules", step("platform", []))
    assert celery_worker.warm_worker()["guarded"] is False
    assert "guard" not in order


def test_what_the_warm_up_imported_is_frozen_before_the_pool_forks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Airflow froze the GC before worker_init (and unfreezes it when the worker is ready): the
    warm-up's objects must be in the permanent generation too, or every task process collects them."""
    kept: list[object] = []
    monkeypatch.setattr(
        celery_worker, "warm_imports", lambda: kept.extend(object() for _ in range(1000)) or {}
    )
    monkeypatch.setattr(celery_worker, "warm_secrets_backends", lambda: [])
    monkeypatch.setattr(celery_worker, "cheap_aws_caller_lookup", lambda: True)
    monkeypatch.setattr(celery_worker, "warm_platform_modules", lambda dags: [])
    gc.unfreeze()
    try:
        before = gc.get_freeze_count()
        worker_init.send(sender=object())
        assert gc.get_freeze_count() >= before + 1  # the list holding them, at least
        assert celery_worker.warm_worker()["gc_frozen"] >= before + 1
    finally:
        gc.unfreeze()


def test_a_failing_warm_up_does_not_keep_the_worker_from_starting(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> dict[str, float]:
        raise RuntimeError("no disk")

    monkeypatch.setattr(celery_worker, "warm_imports", broken)
    with caplog.at_level(logging.ERROR, logger=celery_worker.__name__):
        worker_init.send(sender=object())  # does not raise
    assert "Celery worker warm-up failed" in caplog.text


def test_the_celery_task_goes_through_the_guard(monkeypatch: pytest.MonkeyPatch) -> None:
    """The provider's ``execute_workload`` (what a pool process runs for each Airflow task) calls
    ``BaseExecutor.run_workload``, which the guard wraps: the check comes before every workload (a
    canary for a provider upgrade that changes the call)."""
    from airflow.executors.base_executor import BaseExecutor
    from airflow.executors.workloads import TestConnection
    from airflow.providers.celery.executors.celery_executor_utils import execute_workload

    ran: list[str] = []
    monkeypatch.setattr(
        BaseExecutor, "run_workload", staticmethod(lambda w, **kw: ran.append(w.connection_id))
    )
    monkeypatch.setattr(warm, "drop_stale_platform_modules", lambda: ran.append("check"))
    assert warm.guard_task_launches() is True
    workload = TestConnection(connection_test_id=uuid.uuid4(), connection_id="probe", timeout=5, token="t")
    result: Any = execute_workload.apply(args=[workload.model_dump_json()])
    assert result.successful(), result.traceback
    assert ran == ["check", "probe"]
