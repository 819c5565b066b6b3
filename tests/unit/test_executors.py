"""The stale-event guard sits in front of both executors' event buffers (include/executors/)."""

from __future__ import annotations

import sys
from typing import Any

import pytest

from include.executors import local, stale_events, warm
from include.executors.celery import ResumeSafeCeleryExecutor
from include.executors.local import ResumeSafeLocalExecutor
from include.executors.stale_events import DropStaleDeferExits


@pytest.mark.parametrize("executor", [ResumeSafeLocalExecutor, ResumeSafeCeleryExecutor])
def test_the_guard_comes_before_the_executor_in_the_mro(executor: type) -> None:
    assert executor.get_event_buffer is DropStaleDeferExits.get_event_buffer


def test_only_the_stale_keys_are_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    class Base:
        def get_event_buffer(self, dag_ids: Any = None) -> dict[str, tuple[str, None]]:
            return {"stale": ("success", None), "fresh": ("success", None), "failed": ("failed", None)}

    class Guarded(DropStaleDeferExits, Base):
        pass

    seen: list[dict[str, Any]] = []

    def stale(events: dict[str, Any]) -> set[str]:
        seen.append(dict(events))
        return {"stale"}

    monkeypatch.setattr(stale_events, "stale_defer_exit_keys", stale)
    assert Guarded().get_event_buffer() == {"fresh": ("success", None), "failed": ("failed", None)}
    assert len(seen) == 1
    assert set(seen[0]) == {"stale", "fresh", "failed"}


def test_warm_imports_imports_each_module_and_skips_one_that_fails(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv(warm.WARM_IMPORTS_ENV, raising=False)
    monkeypatch.delitem(sys.modules, "colorsys", raising=False)
    seconds = warm.warm_imports(("colorsys", "include_no_such_module_for_the_test", "json"))
    assert list(seconds) == ["colorsys", "json"]
    assert "colorsys" in sys.modules
    assert "warm import of include_no_such_module_for_the_test failed: ModuleNotFoundError" in caplog.text


def test_warm_imports_can_be_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(warm.WARM_IMPORTS_ENV, "0")
    monkeypatch.delitem(sys.modules, "colorsys", raising=False)
    assert warm.warm_imports(("colorsys",)) == {}
    assert "colorsys" not in sys.modules


def test_warmed_modules_are_third_party_only() -> None:
    """The platform's own code must reach the next task after a merge, without a scheduler restart."""
    assert not [m for m in warm.WARM_MODULES if m.split(".")[0] in ("include", "plugins", "dags")]


def test_the_local_executor_warms_before_it_forks_its_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    order: list[str] = []
    monkeypatch.setattr(local, "warm_imports", lambda: order.append("warm"))
    monkeypatch.setattr(local, "warm_secrets_backends", lambda: order.append("backends"))
    monkeypatch.setattr(local, "cheap_aws_caller_lookup", lambda: order.append("aws caller"))
    monkeypatch.setattr(local.LocalExecutor, "start", lambda self: order.append("fork workers"))
    monkeypatch.setattr(local.multiprocessing, "get_start_method", lambda: "fork")
    ResumeSafeLocalExecutor.start(object.__new__(ResumeSafeLocalExecutor))
    assert order == ["warm", "backends", "aws caller", "fork workers"]

    order.clear()
    monkeypatch.setattr(local.multiprocessing, "get_start_method", lambda: "spawn")
    ResumeSafeLocalExecutor.start(object.__new__(ResumeSafeLocalExecutor))
    assert order == ["fork workers"]


def test_the_task_processes_secrets_backend_is_built_with_its_client(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a forked task process then finds in ensure_secrets_loaded's per-process cache: the
    Secrets Manager backend with its boto3 client built (no request made: nothing listens here)."""
    from airflow.sdk import configuration
    from airflow.sdk.execution_time.secrets import DEFAULT_SECRETS_SEARCH_PATH_WORKERS

    monkeypatch.delenv(warm.WARM_IMPORTS_ENV, raising=False)
    monkeypatch.setattr(configuration, "_secrets_backend_cache", {})
    backend_kwargs = '{"endpoint_url": "http://127.0.0.1:9", "region_name": "eu-west-1", "aws_access_key_id": "k", "aws_secret_access_key": "s"}'  # noqa: E501
    for section in ("SECRETS", "WORKERS"):
        monkeypatch.setenv(
            f"AIRFLOW__{section}__BACKEND",
            "airflow.providers.amazon.aws.secrets.secrets_manager.SecretsManagerBackend",
        )
        monkeypatch.setenv(f"AIRFLOW__{section}__BACKEND_KWARGS", backend_kwargs)

    assert warm.warm_secrets_backends() == ["SecretsManagerBackend"]

    (cached,) = configuration._secrets_backend_cache.values()
    assert cached is configuration.ensure_secrets_loaded(default_backends=DEFAULT_SECRETS_SEARCH_PATH_WORKERS)
    assert "client" in vars(cached[0])  # built, not rebuilt by the task
    assert cached[0].client.meta.endpoint_url == "http://127.0.0.1:9"


def test_the_aws_caller_lookup_gives_the_same_answer_without_reading_source(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from airflow.providers.amazon.aws.hooks.base_aws import AwsGenericHook

    originals = {
        n: AwsGenericHook.__dict__[n] for n in ("_find_operator_class_name", "_find_executor_class_name")
    }
    for name, method in originals.items():
        monkeypatch.setattr(AwsGenericHook, name, method)

    class SomeOperator:
        def execute(self) -> list[str | None]:
            return [
                AwsGenericHook._find_operator_class_name("execute"),
                AwsGenericHook._find_operator_class_name("poke"),
            ]

    before = SomeOperator().execute()
    monkeypatch.delenv(warm.WARM_IMPORTS_ENV, raising=False)
    assert warm.cheap_aws_caller_lookup() is True
    after = SomeOperator().execute()
    assert before == after == ["SomeOperator", None]
    assert AwsGenericHook._find_executor_class_name() == originals["_find_executor_class_name"].__func__()


def test_the_aws_caller_lookup_costs_no_source_reading(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.providers.amazon.aws.hooks.base_aws import AwsGenericHook

    for name in ("_find_operator_class_name", "_find_executor_class_name"):
        monkeypatch.setattr(AwsGenericHook, name, AwsGenericHook.__dict__[name])
    monkeypatch.delenv(warm.WARM_IMPORTS_ENV, raising=False)
    assert warm.cheap_aws_caller_lookup() is True
    monkeypatch.setattr("inspect.stack", lambda *a, **k: pytest.fail("inspect.stack() called"))
    monkeypatch.setattr("inspect.findsource", lambda *a, **k: pytest.fail("source read"))
    hook = AwsGenericHook(aws_conn_id=None)

    class SomeOperator:
        def execute(self) -> str:
            return hook._get_caller()

    # pytest.fail raises a BaseException, which _get_caller's "Unknown" on error does not catch.
    assert hook._get_caller() == "Unknown"
    assert SomeOperator().execute() == "SomeOperator"
