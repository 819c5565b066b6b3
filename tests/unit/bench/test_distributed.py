"""bench.distributed: its two stacks stay off every other profile's ports, and its report says
what failed instead of losing the other sides' figures."""

from __future__ import annotations

import re
from dataclasses import asdict
from typing import Any

import pytest

from bench import distributed
from bench.suite import BENCH_PROFILE
from devstack.config import PROFILES, Profile

# Every bench stack's periodic re-parse is off for a burst (bench/distributed.py: _stack).
NO_REPARSE = {"AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "3600"}


def _ports(profile: Profile) -> set[int]:
    fixed = {v for k, v in asdict(profile).items() if k.endswith("_port") and v}
    # RT +10, log servers +13/+14/+16/+17, scheduler health +15, ERP +20, Redis +30, MFA +40
    derived = {profile.api_port + n for n in (10, 13, 14, 15, 16, 17, 20, 30, 40)}
    return fixed | derived


def test_the_two_stacks_are_an_embedded_and_a_celery_one_on_ports_of_their_own() -> None:
    assert not distributed.EMBEDDED_PROFILE.distributed
    assert distributed.CELERY_PROFILE.distributed
    test_profiles = [
        Profile(
            name=f"t{o}",
            api_port=18080 + o,
            pg_port=25442 + o,
            moto_port=15050 + o,
            smtp_port=12525 + o,
            ldap_port=13389 + o,
        )
        for o in (0, 100, 200, 300)
    ]
    others = [PROFILES["run"], BENCH_PROFILE, *test_profiles]
    for mine in (distributed.EMBEDDED_PROFILE, distributed.CELERY_PROFILE):
        for other in [*others, *(p for p in (distributed.EMBEDDED_PROFILE, distributed.CELERY_PROFILE))]:
            if other is mine:
                continue
            assert not _ports(mine) & _ports(other), (mine.name, other.name)


def _side(rpm: float, cpu_per_run: float) -> dict[str, Any]:
    return {
        "runs_per_minute": rpm,
        "wall_seconds": 60.0,
        "run_seconds_p50": 10.0,
        "run_seconds_p95": 20.0,
        "states": {"success": 60},
        "cpu": {"tasks": 30.0, "other": 5.0, "machine": 40.0},
        "cpu_seconds_per_run": 0.67,
        "stack_cpu_seconds_per_run": cpu_per_run,
        "loadavg_before": [1.0, 1.0, 1.0],
    }


def test_the_report_has_a_line_per_side_and_names_a_failed_one() -> None:
    result: dict[str, Any] = {"runs_per_burst": 60, "api_workers": None, "wall_seconds": 500.0}
    for side, figures in (("embedded", _side(90.0, 0.9)), ("celery_1", _side(81.0, 1.0))):
        result.update({f"{side}_{k}": v for k, v in figures.items()})
    result["celery_2_error"] = "ReadTimeout: read timed out"
    result.update(
        ratio_celery_1_to_embedded=0.9,
        ratio_celery_2_to_1=None,
        ratio_celery_2_to_embedded=None,
        cpu_ratio_celery_1_to_embedded=0.9,
        cpu_ratio_celery_2_to_embedded=None,
    )
    lines = distributed.report(result).splitlines()
    assert lines[0].startswith("embedded  60 runs in 60.0s = 90.0 runs/min")
    assert "CPU per run: stack 1.0 s" in lines[1]
    assert lines[2] == "celery_2  FAILED: ReadTimeout: read timed out"
    assert "celery 1 worker / embedded: 0.9x (goal >= 0.9)" in lines[3]


def test_only_the_api_server_gets_the_larger_connection_overflow(monkeypatch: Any, tmp_path: Any) -> None:
    """The API server stall this bench found (devstack/airflow_env.py API_SERVER_MAX_OVERFLOW): the
    overflow must exceed AnyIO's 40 worker threads, and only the API server's process gets it."""
    from devstack import airflow_env, processes, stack

    assert airflow_env.API_SERVER_MAX_OVERFLOW > 40
    started: dict[str, dict[str, str]] = {}
    monkeypatch.setattr(processes, "running_pid", lambda name, pids_dir: None)
    monkeypatch.setattr(processes, "start", lambda name, argv, **kw: started.__setitem__(name, kw["env"]))
    monkeypatch.setattr(stack.Stack, "env", property(lambda self: {"AIRFLOW__CORE__PARALLELISM": "32"}))
    s = stack.Stack(distributed.EMBEDDED_PROFILE)
    s.start_component("api-server")
    s.start_component("scheduler")
    key = "AIRFLOW__DATABASE__SQL_ALCHEMY_MAX_OVERFLOW"
    assert started["api-server"][key] == str(airflow_env.API_SERVER_MAX_OVERFLOW)
    assert started["api-server"]["AIRFLOW__CORE__PARALLELISM"] == "32"
    assert key not in started["scheduler"]
    assert key not in airflow_env.airflow_env(distributed.EMBEDDED_PROFILE)


def test_the_api_sweep_restarts_only_the_api_server_and_only_where_the_setting_changes(
    monkeypatch: Any,
) -> None:
    """ABBA on one stack: [api] workers 1, 2, 2, 1 gives two restarts (before the first 2 and the
    second 1), each burst measured under its own key, a failed burst kept apart, the stack stopped."""
    events: list[Any] = []

    class FakeStack:
        api_workers: int | None = None

        def stop(self, quiet: bool = False) -> None:
            events.append("stop")

    stack = FakeStack()

    def started(s: Any) -> tuple[str, float]:
        events.append(("start", s.api_workers))
        return "api", 1.0

    def restart(s: Any, api: Any, workers: int) -> float:
        s.api_workers = workers
        events.append(("restart", workers))
        return 2.0

    def measured(s: Any, api: Any, runs_per_domain: int, side: str) -> dict[str, Any]:
        events.append(("burst", side, s.api_workers))
        if side == "api2_2":
            raise TimeoutError("trigger timed out")
        return {f"{side}_runs_per_minute": 10.0}

    def new_stack(profile: Profile, workers: int | None) -> FakeStack:
        assert profile is distributed.CELERY_PROFILE
        stack.api_workers = workers
        return stack

    monkeypatch.setattr(distributed, "_stack", new_stack)
    monkeypatch.setattr(distributed, "_started", started)
    monkeypatch.setattr(distributed, "_restart_api_server", restart)
    monkeypatch.setattr(distributed, "measured_burst", measured)

    def warm(api: Any, runs: int) -> dict[str, Any]:
        events.append(("warm", runs))
        if len([e for e in events if e[0] == "warm"]) == 2:
            raise TimeoutError("the new API server did not answer")
        return {"wall_seconds": 3.0}

    monkeypatch.setattr(distributed, "mixed_burst", warm)

    out = distributed.api_sweep("celery", 5)
    assert events == [
        ("start", 1),
        ("burst", "api1_0", 1),
        ("restart", 2),
        ("warm", 1),
        ("burst", "api2_1", 2),
        ("burst", "api2_2", 2),
        ("restart", 1),
        ("warm", 1),
        ("burst", "api1_3", 1),
        "stop",
    ]
    assert out["api1_0_runs_per_minute"] == out["api1_3_runs_per_minute"] == 10.0
    assert out["api2_2_error"] == "TimeoutError: trigger timed out"
    assert out["api2_1_restart_seconds"] == out["api1_3_restart_seconds"] == 2.0
    # A warm-up that times out is noted; the measured burst after it still ran (above).
    assert out["api2_1_warm_up_seconds"] == 3.0
    assert out["api1_3_warm_up_error"] == "TimeoutError: the new API server did not answer"
    assert out["runs_per_burst"] == 5 * 6


def test_the_scheduler_idle_sleep_reaches_the_stack_and_a_bad_one_is_refused_before_any_start(
    monkeypatch: Any,
) -> None:
    """``--scheduler-idle-sleep`` (the lever on the scheduler's CPU under Celery, docs/deployment.md):
    set, every component of the stack gets it and nothing else changes; unset, the stack's own
    setting stays; zero, negative or NaN is refused before a stack starts."""
    from devstack import stack

    key = "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME"
    own = {key: "0.25", "AIRFLOW__CORE__PARALLELISM": "32"}
    monkeypatch.setattr(stack.Stack, "env", property(lambda self: dict(own)))
    starts: list[str] = []
    monkeypatch.setattr(stack.Stack, "start", lambda self, fresh=False: starts.append(self.profile.name))

    assert distributed._stack(distributed.CELERY_PROFILE, None, 1.0).env == {**own, **NO_REPARSE, key: "1.0"}
    assert distributed._stack(distributed.CELERY_PROFILE, None).env == {**own, **NO_REPARSE}
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="scheduler_idle_sleep must be > 0 seconds"):
            distributed.run(1, scheduler_idle_sleep=bad)
    assert starts == []


def test_the_git_bundle_is_the_deployed_one_over_a_commit_of_the_dags_and_the_only_bundle(
    monkeypatch: Any, tmp_path: Any
) -> None:
    """``--dag-bundle git``: the stack reads the workflows from a GitOpsDagBundle (as Helm deploys
    it) over a bare repository holding the DAG folder as checked out, instead of its local
    bundle; anything but local or git is refused before a stack starts."""
    import json
    import subprocess

    from devstack import stack

    dags = tmp_path / "dags"
    (dags / "soc" / "__pycache__").mkdir(parents=True)
    (dags / "soc" / "check.py").write_text("# a workflow\n")
    (dags / "soc" / "__pycache__" / "check.cpython-311.pyc").write_bytes(b"\0")
    (dags / ".airflowignore").write_text("x\n")
    bundle = distributed.git_bundle(tmp_path / "bundle", dags)
    assert bundle["classpath"] == "include.bundles.git.GitOpsDagBundle"
    assert bundle["kwargs"]["subdir"] == "dags"
    assert bundle["kwargs"]["tracking_ref"] == "main"
    files = subprocess.run(
        ["git", "ls-tree", "-r", "--name-only", "main"],
        cwd=bundle["kwargs"]["repo_url"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    assert sorted(files) == ["dags/.airflowignore", "dags/soc/check.py"]
    # Again: a fresh repository, not a second commit on the old one.
    (dags / "soc" / "check.py").write_text("# changed\n")
    bundle = distributed.git_bundle(tmp_path / "bundle", dags)
    log = subprocess.run(
        ["git", "log", "--oneline", "main"], cwd=bundle["kwargs"]["repo_url"], check=True, capture_output=True
    )
    assert len(log.stdout.splitlines()) == 1

    key = "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST"
    own = {key: json.dumps([{"name": "dags-folder"}]), "AIRFLOW__CORE__PARALLELISM": "32"}
    monkeypatch.setattr(stack.Stack, "env", property(lambda self: dict(own)))
    monkeypatch.setattr(distributed, "git_bundle", lambda root: {"name": "workflows", "root": str(root)})
    git_stack = distributed._stack(distributed.CELERY_PROFILE, None, dag_bundle="git")
    assert json.loads(git_stack.env[key]) == [
        {"name": "workflows", "root": str(distributed.CELERY_PROFILE.root / "bench-workflows")}
    ]
    assert distributed._stack(distributed.CELERY_PROFILE, None).env == {**own, **NO_REPARSE}
    starts: list[str] = []
    monkeypatch.setattr(stack.Stack, "start", lambda self, fresh=False: starts.append(self.profile.name))
    with pytest.raises(ValueError, match="dag_bundle must be one of local, git, not 'gitsync'"):
        distributed.run(1, dag_bundle="gitsync")
    assert starts == []


def test_other_airflow_settings_reach_both_stacks_and_bad_ones_are_refused_before_any_start(
    monkeypatch: Any,
) -> None:
    """``--setting section.key=value``: the stack gets ``AIRFLOW__SECTION__KEY`` on top of its own
    settings and the run records it; a name that is not ``section.key``, an empty or multi-line
    value, or a setting that has its own option is refused, naming it, before a stack starts."""
    from devstack import stack

    own = {"AIRFLOW__CELERY__TASK_TRACK_STARTED": "True", "AIRFLOW__CORE__PARALLELISM": "32"}
    monkeypatch.setattr(stack.Stack, "env", property(lambda self: dict(own)))
    starts: list[str] = []
    monkeypatch.setattr(stack.Stack, "start", lambda self, fresh=False: starts.append(self.profile.name))

    env = distributed._stack(
        distributed.CELERY_PROFILE,
        None,
        settings={"celery.task_track_started": "False", "core.dag_concurrency": "4"},
    ).env
    assert env == {
        **own,
        **NO_REPARSE,
        "AIRFLOW__CELERY__TASK_TRACK_STARTED": "False",
        "AIRFLOW__CORE__DAG_CONCURRENCY": "4",
    }
    assert distributed._stack(distributed.CELERY_PROFILE, None).env == {**own, **NO_REPARSE}
    # the bench's own no-re-parse setting gives way to a --setting of it
    reparse = {"dag_processor.min_file_process_interval": "30"}
    env = distributed._stack(distributed.CELERY_PROFILE, None, settings=reparse).env
    assert env["AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL"] == "30"
    for bad, says in (
        ({"task_track_started": "False"}, "'task_track_started': expected section.key"),
        ({"Celery.X": "1"}, "'Celery.X': expected section.key"),
        ({"celery.task_track_started": ""}, "the value must be one non-empty line"),
        ({"celery.task_track_started": "a\nb"}, "the value must be one non-empty line"),
        ({"api.workers": "2"}, "use --api-workers"),
        ({"dag_processor.dag_bundle_config_list": "[]"}, "use --dag-bundle"),
    ):
        with pytest.raises(ValueError, match=re.escape(says)):
            distributed.run(1, settings=bad)
    assert starts == []
