"""PerimeterHook against moto WAFv2 and SSM, in the tenant's own account, as the perimeter roles.

The seed creates each tenant's empty IPv4/IPv6 block lists. Block, repeat, extend and remove run on
sessions assumed into ``orchestrator-perimeter-block`` in globex's account; the read-only role plans
and reads the expiry. Checked in moto directly (the IP set's addresses, the SSM parameter), and acme's
block lists stay untouched. moto checks the LockToken like WAF: a stale token is refused.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError

from devstack.aws_seed import account_client, seed_capability_roles
from include.connectors.context import RunContext
from include.connectors.perimeter import BLOCKLIST_NAME, SCOPE, PerimeterError, PerimeterHook
from include.policies.tenants import tenant_account_id
from tests.support.moto import moto_with_aws_connection

REGION = "eu-west-1"
CONN_ID = "aws_perimeter_itest"
NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    with moto_with_aws_connection(CONN_ID, REGION) as url:
        seed_capability_roles(url, REGION)
        yield url


def _hook(tenant: str, capability: str = "perimeter-block", run_id: str = "manual__1") -> PerimeterHook:
    run = RunContext("soc_block_indicator", run_id, "block_indicator", tenant, f"ALERT-{tenant}")
    return PerimeterHook(CONN_ID, capability=capability, tenant=tenant, run_context=run)


def _ip_set(moto_url: str, tenant: str, version: int = 4) -> tuple[Any, dict[str, Any], str]:
    wafv2 = account_client("wafv2", tenant_account_id(tenant), moto_url, REGION)
    name = BLOCKLIST_NAME.format(tenant=tenant, version=version)
    (summary,) = [s for s in wafv2.list_ip_sets(Scope=SCOPE)["IPSets"] if s["Name"] == name]
    answer = wafv2.get_ip_set(Name=name, Scope=SCOPE, Id=summary["Id"])
    return wafv2, answer["IPSet"], answer["LockToken"]


def _addresses(moto_url: str, tenant: str, version: int = 4) -> list[str]:
    return sorted(_ip_set(moto_url, tenant, version)[1]["Addresses"])


def _parameter(moto_url: str, tenant: str, name: str) -> dict[str, Any] | None:
    ssm = account_client("ssm", tenant_account_id(tenant), moto_url, REGION)
    try:
        value: dict[str, Any] = json.loads(ssm.get_parameter(Name=name)["Parameter"]["Value"])
    except ClientError:
        return None
    return value


def test_seed_creates_both_block_lists_per_tenant_once(moto_url: str) -> None:
    again = seed_capability_roles(moto_url, REGION)
    for tenant in ("acme", "globex"):
        wafv2 = account_client("wafv2", tenant_account_id(tenant), moto_url, REGION)
        names = sorted(s["Name"] for s in wafv2.list_ip_sets(Scope=SCOPE)["IPSets"])
        assert names == [f"orchestrator-{tenant}-blocklist-ipv4", f"orchestrator-{tenant}-blocklist-ipv6"]
    assert len(again) == len(set(again))


def test_block_repeat_extend_and_remove_in_the_tenants_account(moto_url: str) -> None:
    t1, t2 = NOW + timedelta(minutes=10), NOW + timedelta(minutes=40)
    parameter = "/orchestrator/globex/perimeter-block/45.155.205.0_24"

    plan = _hook("globex", "perimeter-inspect").plan_block("45.155.205.0/24")
    assert (plan.blocked, plan.expiry, plan.ip_set) == (False, None, "orchestrator-globex-blocklist-ipv4")

    first = _hook("globex").block("45.155.205.0/24", t1)
    repeats = [_hook("globex").block("45.155.205.0/24", t1) for _ in range(4)]
    extended = _hook("globex", run_id="manual__2").block("45.155.205.0/24", t2)

    assert first["added"] is True
    assert [r["added"] for r in repeats] == [False] * 4
    assert (extended["added"], extended["extended"], extended["expires_at"]) == (False, True, t2.isoformat())
    assert _addresses(moto_url, "globex") == ["45.155.205.0/24"]
    record = _parameter(moto_url, "globex", parameter)
    assert record is not None
    assert (record["expires_at"], record["run_id"]) == (t2.isoformat(), "manual__2")
    expiry = _hook("globex", "perimeter-inspect").expiry("45.155.205.0/24")
    assert expiry is not None
    assert expiry.expires_at == t2

    early = _hook("globex").unblock("45.155.205.0/24", now=t1)
    assert (early["removed"], early["outcome"]) == (False, "extended")
    assert _addresses(moto_url, "globex") == ["45.155.205.0/24"]

    removed = _hook("globex").unblock("45.155.205.0/24", now=t2)
    again = _hook("globex").unblock("45.155.205.0/24", now=t2)
    assert (removed["removed"], removed["outcome"]) == (True, "removed")
    assert (again["removed"], again["outcome"]) == (False, "already-removed")
    assert _addresses(moto_url, "globex") == []
    assert _parameter(moto_url, "globex", parameter) is None
    assert _addresses(moto_url, "acme") == []  # the other tenant's list untouched throughout


def test_ipv6_goes_to_the_ipv6_list(moto_url: str) -> None:
    _hook("globex").block("2a00:1450:4001::/48", NOW + timedelta(minutes=5))

    assert _addresses(moto_url, "globex", 6) == ["2a00:1450:4001::/48"]
    assert _hook("globex").unblock("2a00:1450:4001::/48", now=NOW + timedelta(minutes=5))["removed"]
    assert _addresses(moto_url, "globex", 6) == []


def test_an_entry_added_by_someone_else_meanwhile_is_kept(moto_url: str) -> None:
    """The hook writes with the lock token it read; a stale token is refused by WAF and re-read."""
    wafv2, ip_set, token = _ip_set(moto_url, "globex")
    hook = _hook("globex")
    real_update = hook.client.update_ip_set
    raced: list[Any] = []

    def someone_else_first(**kwargs: Any) -> Any:
        if not raced:
            raced.append(
                wafv2.update_ip_set(
                    Name=ip_set["Name"],
                    Scope=SCOPE,
                    Id=ip_set["Id"],
                    Addresses=["5.61.0.0/16"],
                    LockToken=token,
                )
            )
        return real_update(**kwargs)

    hook.client.update_ip_set = someone_else_first
    assert hook.block("45.155.206.9", NOW + timedelta(minutes=5))["added"] is True

    assert _addresses(moto_url, "globex") == ["45.155.206.9/32", "5.61.0.0/16"]


def test_a_tenant_without_block_lists_is_refused_before_any_change(moto_url: str) -> None:
    wafv2, ip_set, token = _ip_set(moto_url, "acme", 6)
    wafv2.delete_ip_set(Name=ip_set["Name"], Scope=SCOPE, Id=ip_set["Id"], LockToken=token)
    try:
        with pytest.raises(
            PerimeterError,
            match=r"^tenant acme has no WAF IP set orchestrator-acme-blocklist-ipv6 \(REGIONAL\)",
        ):
            _hook("acme").block("2a00:1450:4001::/48", NOW + timedelta(minutes=5))
        assert _parameter(moto_url, "acme", "/orchestrator/acme/perimeter-block/2a00-1450-4001--_48") is None
    finally:
        seed_capability_roles(moto_url, REGION)
    assert _addresses(moto_url, "acme", 6) == []  # re-provisioned, with its new id recorded


def test_the_read_only_role_reads_and_the_other_tenants_role_cannot_reach_it(moto_url: str) -> None:
    """acme's block role lands in acme's account: globex's entry is not even visible to it."""
    _hook("globex").block("45.155.207.0/24", NOW + timedelta(minutes=5))
    try:
        assert _hook("globex", "perimeter-inspect").plan_block("45.155.207.0/24").blocked is True
        assert _hook("acme", "perimeter-inspect").plan_block("45.155.207.0/24").blocked is False
        assert _hook("acme").unblock("45.155.207.0/24", now=NOW + timedelta(hours=1))["removed"] is False
        assert "45.155.207.0/24" in _addresses(moto_url, "globex")
    finally:
        _hook("globex").unblock("45.155.207.0/24", now=NOW + timedelta(hours=1))
