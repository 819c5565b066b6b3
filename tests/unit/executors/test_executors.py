"""The stale-event guard sits in front of both executors' event buffers (include/executors/)."""

from __future__ import annotations

import importlib
import logging
import sys
from pathlib import Path
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
    """The platform's own modules are warmed separately, from the DAG files, with a guard."""
    assert not [m for m in warm.WARM_MODULES if m.split(".")[0] in ("include", "plugins", "dags")]


def test_platform_imports_are_read_from_the_dag_files_without_running_them(tmp_path: Path) -> None:
    (tmp_path / "hr").mkdir()
    (tmp_path / "hr" / "a.py").write_text(
        "import json\nfrom include.workflows import domain_workflow\nimport include.policies.tenants\n"
        "from . import sibling\nraise SystemExit('a DAG file is read, never run')\n"
    )
    (tmp_path / "broken.py").write_text("from include.validation import (\n")
    assert warm.platform_imports(tmp_path) == ["include.policies.tenants", "include.workflows"]


def test_warmed_platform_modules_are_dropped_once_include_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A worker must not run code older than the working tree: once a warmed module's file
    changes, every warmed module is forgotten and imported afresh by the next task."""
    monkeypatch.delenv(warm.WARM_IMPORTS_ENV, raising=False)
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "d.py").write_text("from include.policies.hr_roles import x\n")
    for name in [m for m in sys.modules if m == "include.policies.hr_roles"]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(warm, "_WARMED", [])
    monkeypatch.setattr(warm, "_SNAPSHOT", {})
    warmed = warm.warm_platform_modules(dags)
    assert "include.policies.hr_roles" in warmed
    assert "include.policies.hr_roles" in sys.modules
    module_file = sys.modules["include.policies.hr_roles"].__file__
    assert module_file in warm._SNAPSHOT
    assert any(f.endswith("domains.yaml") for f in warm._SNAPSHOT)  # data files are watched too

    assert warm.drop_stale_platform_modules() == []  # nothing changed: kept
    assert "include.policies.hr_roles" in sys.modules

    monkeypatch.setitem(warm._SNAPSHOT, module_file, warm._SNAPSHOT[module_file] - 1)  # "edited"
    with caplog.at_level(logging.WARNING, logger=warm.__name__):
        assert warm.drop_stale_platform_modules() == warmed
    assert "include.policies.hr_roles" not in sys.modules
    assert "include/ changed since the warm-up" in caplog.text
    assert warm.drop_stale_platform_modules() == []  # once
    importlib.import_module("include.policies.hr_roles")  # a task imports it afresh


def test_the_configured_dag_bundle_class_is_warmed_and_guarded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each task process builds its bundle through DagBundlesManager, which imports the bundle's
    class: the Git bundle's (the provider, GitPython, include.bundles.git) is imported before
    the fork instead, and dropped like the other platform modules once include/ changes."""
    import json

    monkeypatch.delenv(warm.WARM_IMPORTS_ENV, raising=False)
    bundle = {
        "name": "workflows",
        "classpath": "include.bundles.git.GitOpsDagBundle",
        "kwargs": {"repo_url": "/nowhere.git", "tracking_ref": "main", "subdir": "dags"},
    }
    monkeypatch.setenv("AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST", json.dumps([bundle]))
    monkeypatch.delitem(sys.modules, "include.bundles.git", raising=False)
    monkeypatch.setattr(warm, "_WARMED", [])
    monkeypatch.setattr(warm, "_SNAPSHOT", {})
    no_dags = tmp_path / "dags"  # as in Helm: the DAG files are in the bundle, not dags_folder
    no_dags.mkdir()
    warmed = warm.warm_platform_modules(no_dags)
    assert "include.bundles.git" in warmed
    assert "include.bundles.git" in sys.modules
    assert sys.modules["include.bundles.git"].__file__ in warm._SNAPSHOT


def test_a_bundle_class_that_does_not_import_keeps_nothing_from_starting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import json

    monkeypatch.delenv(warm.WARM_IMPORTS_ENV, raising=False)
    bundle = {"name": "workflows", "classpath": "include.bundles.no_such_module.Bundle", "kwargs": {}}
    monkeypatch.setenv("AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST", json.dumps([bundle]))
    monkeypatch.setattr(warm, "_WARMED", [])
    monkeypatch.setattr(warm, "_SNAPSHOT", {})
    with caplog.at_level(logging.WARNING, logger=warm.__name__):
        assert warm.warm_platform_modules(tmp_path) == []
    assert "warm import of dag bundle classes failed: ModuleNotFoundError" in caplog.text


def test_the_guard_runs_before_each_workload(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.executors.base_executor import BaseExecutor

    calls: list[str] = []
    monkeypatch.setattr(BaseExecutor, "run_workload", staticmethod(lambda w, **kw: calls.append(f"run {w}")))
    monkeypatch.setattr(warm, "drop_stale_platform_modules", lambda: calls.append("check"))
    assert warm.guard_task_launches() is True
    assert warm.guard_task_launches() is True  # not wrapped twice
    BaseExecutor.run_workload("w1", server="x")
    assert calls == ["check", "run w1"]


def test_a_failing_check_does_not_keep_a_task_from_starting(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.executors.base_executor import BaseExecutor

    monkeypatch.setattr(BaseExecutor, "run_workload", staticmethod(lambda w: f"ran {w}"))

    def broken() -> None:
        raise OSError("stat failed")

    monkeypatch.setattr(warm, "drop_stale_platform_modules", broken)
    warm.guard_task_launches()
    assert BaseExecutor.run_workload("w2") == "ran w2"


def test_the_local_executor_warms_before_it_forks_its_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    order: list[str] = []
    monkeypatch.setattr(local, "warm_imports", lambda: order.append("warm"))
    monkeypatch.setattr(local, "warm_secrets_backends", lambda: order.append("backends"))
    monkeypatch.setattr(local, "cheap_aws_caller_lookup", lambda: order.append("aws caller"))
    monkeypatch.setattr(
        local, "warm_platform_modules", lambda dags: order.append(f"platform {dags.name}") or ["m"]
    )
    monkeypatch.setattr(local, "guard_task_launches", lambda: order.append("guard"))
    monkeypatch.setattr(local.LocalExecutor, "start", lambda self: order.append("fork workers"))
    monkeypatch.setattr(local.multiprocessing, "get_start_method", lambda: "fork")
    monkeypatch.setenv("AIRFLOW__CORE__DAGS_FOLDER", "/somewhere/dags")
    ResumeSafeLocalExecutor.start(object.__new__(ResumeSafeLocalExecutor))
    assert order == ["warm", "backends", "aws caller", "platform dags", "guard", "fork workers"]

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


def test_the_local_executors_worker_loop_goes_through_the_guard(monkeypatch: pytest.MonkeyPatch) -> None:
    """The guard wraps ``BaseExecutor.run_workload``; this is the call the LocalExecutor's worker
    loop makes for each task (a canary for an Airflow upgrade that changes it)."""
    import multiprocessing
    import signal
    from types import SimpleNamespace

    from airflow.executors import local_executor
    from airflow.executors.base_executor import BaseExecutor

    ran: list[str] = []
    monkeypatch.setattr(BaseExecutor, "run_workload", staticmethod(lambda w, **kw: ran.append("task")))
    monkeypatch.setattr(warm, "drop_stale_platform_modules", lambda: ran.append("check"))
    monkeypatch.setattr(local_executor, "setproctitle", lambda *a, **k: None)
    monkeypatch.setattr(signal, "signal", lambda *a, **k: None)  # the loop ignores SIGINT; not pytest
    assert warm.guard_task_launches() is True
    workload = SimpleNamespace(key="k", running_state=None, success_state="success", display_name="w")
    tasks: Any = multiprocessing.SimpleQueue()
    results: Any = multiprocessing.SimpleQueue()
    tasks.put(workload)
    tasks.put(None)
    unread = multiprocessing.Value("i", 1)
    monkeypatch.setattr(local_executor, "get_execution_api_server_url", lambda team_conf: "http://api/")
    local_executor._run_worker("test", tasks, results, unread, SimpleNamespace(team_name=None))
    assert ran == ["check", "task"]
    assert results.get() == ("k", "success", None)
