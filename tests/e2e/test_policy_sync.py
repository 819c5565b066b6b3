"""Pools follow the domain policy; the sync is idempotent and repairs drift."""

from __future__ import annotations

import subprocess
import sys

from devstack.api_client import AirflowApi
from devstack.stack import Stack
from include.policies.loader import load_domain_policy


def _sync(stack: Stack) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-m", "include.cli", "policy-sync"],
        env=stack.env,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    return result.stdout.splitlines()


def test_pools_match_policy(api: AirflowApi) -> None:
    pools = {p["name"]: p for p in api.get("pools")["pools"]}
    for name, domain in load_domain_policy().domains.items():
        assert pools[name]["slots"] == domain.pool_slots
        assert pools[name]["include_deferred"] is False


def test_sync_twice_changes_nothing_and_repairs_drift(api: AirflowApi, stack: Stack) -> None:
    count = len(load_domain_policy().domains)
    assert _sync(stack)[0] == f"pools: 0 created, 0 updated, {count} unchanged"
    api.request("PATCH", "pools/hr", json={"pool": "hr", "slots": 99, "include_deferred": False})
    assert api.get("pools/hr")["slots"] == 99
    lines = _sync(stack)
    assert lines[:2] == [f"pools: 0 created, 1 updated, {count - 1} unchanged", "  ~ hr"]
    assert api.get("pools/hr")["slots"] == load_domain_policy().domain("hr").pool_slots
    assert _sync(stack)[0] == f"pools: 0 created, 0 updated, {count} unchanged"
