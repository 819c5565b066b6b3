"""A support burst: 200 runs triggered at once all finish, nothing is lost, no component dies."""

from __future__ import annotations

from bench.burst import burst, report
from include.devstack.api_client import AirflowApi
from include.devstack.stack import Stack

RUNS = 200


def test_burst_of_200_runs_all_succeed(api: AirflowApi, stack: Stack) -> None:
    result = burst(api, "support_service_check", RUNS, {"tenant": "acme"}, timeout=1200)
    report(result, stack.profile.root / "results" / "burst.json")
    assert result.states == {"success": RUNS}
    assert stack.dead_components() == []
    health = api.get("monitor/health")
    assert {k: v["status"] for k, v in health.items() if isinstance(v, dict)} == {
        "metadatabase": "healthy",
        "scheduler": "healthy",
        "triggerer": "healthy",
        "dag_processor": "healthy",
    }
