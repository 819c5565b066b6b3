"""Ec2Hook against moto EC2, in the tenant's own account, as the host-isolate capability role.

A VPC with two ordinary security groups and a quarantine group (tagged), and an instance in the two
ordinary groups, are created in globex's account. The containment steps run on a session assumed
into ``orchestrator-host-isolate`` there: plan (read-only), isolate (previous groups recorded in
tags first), repeat (no change, previous groups kept), release (groups restored). acme's role
cannot even see globex's instance (one moto account per tenant). Bad input fails before any change.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from devstack.aws_seed import account_client, seed_capability_roles
from include.connectors.context import RunContext
from include.connectors.ec2 import (
    CORRELATION_TAG,
    ISOLATED_BY_TAG,
    PREVIOUS_GROUPS_TAG,
    QUARANTINE_TAG,
    QUARANTINE_VALUE,
    ContainmentError,
    Ec2Hook,
)
from include.policies.tenants import tenant_account_id
from tests.support.moto import moto_with_aws_connection

REGION = "eu-west-1"
CONN_ID = "aws_isolation_itest"


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    with moto_with_aws_connection(CONN_ID, REGION) as url:
        seed_capability_roles(url, REGION)
        yield url


def _ec2_as(tenant: str, moto_url: str, correlation_id: str | None = None) -> Ec2Hook:
    run = RunContext(
        "soc_contain_host", "manual__1", "isolate_host", tenant, correlation_id or f"corr-{tenant}-1"
    )
    return Ec2Hook(CONN_ID, capability="host-isolate", tenant=tenant, run_context=run)


@pytest.fixture
def host(moto_url: str) -> dict[str, Any]:
    """An instance in two ordinary groups of a VPC that has a quarantine group (globex's account)."""
    ec2 = account_client("ec2", tenant_account_id("globex"), moto_url, REGION)
    vpc = ec2.create_vpc(CidrBlock="10.20.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.20.1.0/24")["Subnet"]["SubnetId"]
    web = ec2.create_security_group(GroupName=f"web-{vpc}", Description="web", VpcId=vpc)["GroupId"]
    ssh = ec2.create_security_group(GroupName=f"ssh-{vpc}", Description="ssh", VpcId=vpc)["GroupId"]
    quarantine = ec2.create_security_group(
        GroupName=f"quarantine-{vpc}",
        Description="no traffic except the EDR channel",
        VpcId=vpc,
        TagSpecifications=[
            {"ResourceType": "security-group", "Tags": [{"Key": QUARANTINE_TAG, "Value": QUARANTINE_VALUE}]}
        ],
    )["GroupId"]
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    instance = ec2.run_instances(
        ImageId=image, MinCount=1, MaxCount=1, SubnetId=subnet, SecurityGroupIds=[web, ssh]
    )["Instances"][0]["InstanceId"]
    return {"ec2": ec2, "vpc": vpc, "groups": sorted([web, ssh]), "quarantine": quarantine, "id": instance}


def _state(ec2: Any, instance_id: str) -> tuple[list[str], dict[str, str]]:
    instance = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    groups = sorted(g["GroupId"] for g in instance["SecurityGroups"])
    return groups, {t["Key"]: t["Value"] for t in instance.get("Tags", [])}


def test_isolate_records_previous_groups_then_swaps_and_repeats_change_nothing(
    moto_url: str, host: dict[str, Any]
) -> None:
    ec2 = _ec2_as("globex", moto_url)
    assert "client" not in vars(ec2)  # nothing built, nothing assumed until the first call
    plan = ec2.plan_isolation(host["id"])
    assert plan.current_groups == tuple(host["groups"])
    assert plan.quarantine_group == host["quarantine"]
    assert plan.already_isolated is False
    assert host["quarantine"] in plan.markdown()
    assert _state(host["ec2"], host["id"])[0] == host["groups"]  # planning changed nothing

    first = ec2.isolate(host["id"])
    assert first["changed"] is True
    assert first["correlation_id"] == "corr-globex-1"
    groups, tags = _state(host["ec2"], host["id"])
    assert groups == [host["quarantine"]]
    assert tags[PREVIOUS_GROUPS_TAG] == ",".join(host["groups"])
    assert tags[ISOLATED_BY_TAG] == "corr-globex-1"
    assert tags[CORRELATION_TAG] == "corr-globex-1"

    for attempt in range(4):  # SCALE-3: the same step again (another run, a retry)
        again = _ec2_as("globex", moto_url, f"corr-globex-{attempt + 2}").isolate(host["id"])
        assert again["changed"] is False
        assert again["previous_groups"] == host["groups"]
    assert _state(host["ec2"], host["id"]) == (groups, tags)  # not even the tags moved

    released = ec2.release(host["id"])
    assert released == {"instance_id": host["id"], "changed": True, "groups": host["groups"]}
    groups, tags = _state(host["ec2"], host["id"])
    assert groups == host["groups"]
    assert PREVIOUS_GROUPS_TAG not in tags
    assert ec2.release(host["id"])["changed"] is False


def test_another_tenants_role_cannot_see_the_instance(moto_url: str, host: dict[str, Any]) -> None:
    with pytest.raises(ContainmentError, match=f"instance {host['id']} not found in this tenant's account"):
        _ec2_as("acme", moto_url).plan_isolation(host["id"])
    with pytest.raises(ContainmentError, match="not found"):
        _ec2_as("acme", moto_url).isolate(host["id"])
    assert _state(host["ec2"], host["id"])[0] == host["groups"]


@pytest.mark.parametrize(
    ("instance_id", "message"),
    [
        ("ws-0042", "'ws-0042' is not an EC2 instance id"),
        ("i-123", "'i-123' is not an EC2 instance id"),
        ("i-0123456789abcdef0", "instance i-0123456789abcdef0 not found in this tenant's account"),
    ],
)
def test_bad_host_fails_clearly_before_any_change(moto_url: str, instance_id: str, message: str) -> None:
    with pytest.raises(ContainmentError, match=message):
        _ec2_as("globex", moto_url, "corr-x").isolate(instance_id)


def test_a_vpc_without_quarantine_group_is_refused_and_nothing_changes(moto_url: str) -> None:
    ec2 = account_client("ec2", tenant_account_id("globex"), moto_url, REGION)
    vpc = ec2.create_vpc(CidrBlock="10.30.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.30.1.0/24")["Subnet"]["SubnetId"]
    group = ec2.create_security_group(GroupName="app", Description="app", VpcId=vpc)["GroupId"]
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    instance = ec2.run_instances(
        ImageId=image, MinCount=1, MaxCount=1, SubnetId=subnet, SecurityGroupIds=[group]
    )["Instances"][0]["InstanceId"]
    with pytest.raises(ContainmentError, match=f"VPC {vpc} has no security group tagged"):
        _ec2_as("globex", moto_url, "corr-x").isolate(instance)
    groups, tags = _state(ec2, instance)
    assert groups == [group]
    assert PREVIOUS_GROUPS_TAG not in tags
