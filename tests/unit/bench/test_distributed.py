"""bench.distributed: its two stacks stay off every other profile's ports, and its report says
what failed instead of losing the other sides' figures."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from bench import distributed
from bench.suite import BENCH_PROFILE
from devstack.config import PROFILES, Profile


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
