"""Network containment of an EC2 instance: swap its security groups for the VPC's quarantine group.

Used by the SOC containment workflow under the ``host-isolate`` capability role, in the tenant's own
account. Three calls, each safe to repeat (SCALE-3):

- :func:`plan_isolation` (read-only): the instance, its VPC, its current groups and the VPC's
  quarantine group (tagged ``orchestrator:role = quarantine``, provisioned with the tenant). What
  the approver sees. An unknown instance or a VPC without a quarantine group is a clear error
  before anything changes.
- :func:`isolate`: first records the previous groups in tags on the instance
  (``orchestrator:previous-groups``, ``orchestrator:isolated-by`` = the correlation id), then
  replaces every group with the quarantine group. Tags first: if the swap fails, nothing is lost;
  if it is repeated, an instance already in quarantine keeps the previous groups it had recorded
  (never overwritten with the quarantine group itself).
- :func:`release`: puts the recorded groups back and removes the tags (the release workflow).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any, Final

QUARANTINE_TAG: Final = "orchestrator:role"
QUARANTINE_VALUE: Final = "quarantine"
PREVIOUS_GROUPS_TAG: Final = "orchestrator:previous-groups"
ISOLATED_BY_TAG: Final = "orchestrator:isolated-by"
CORRELATION_TAG: Final = "CorrelationId"
INSTANCE_ID: Final = re.compile(r"i-[0-9a-f]{8}(?:[0-9a-f]{9})?")
_NOT_FOUND: Final = ("InvalidInstanceID.NotFound", "InvalidInstanceID.Malformed")


class ContainmentError(RuntimeError):
    """A containment step cannot be done as asked; the message says what and where."""


@dataclass(frozen=True)
class IsolationPlan:
    instance_id: str
    vpc_id: str
    current_groups: tuple[str, ...]
    quarantine_group: str
    previous_groups: tuple[str, ...]  # what a release restores
    already_isolated: bool

    def as_xcom(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def markdown(self) -> str:
        if self.already_isolated:
            return (
                f"Instance **{self.instance_id}** is already in quarantine group `{self.quarantine_group}`; "
                f"recorded previous groups: {', '.join(f'`{g}`' for g in self.previous_groups) or '-'}."
            )
        groups = ", ".join(f"`{g}`" for g in self.current_groups) or "-"
        return (
            f"Replace the security groups of **{self.instance_id}** (VPC `{self.vpc_id}`): {groups} "
            f"-> quarantine group `{self.quarantine_group}` only. The previous groups are recorded "
            f"on the instance (tag `{PREVIOUS_GROUPS_TAG}`) for the release."
        )


def check_instance_id(instance_id: str) -> str:
    """:raises ContainmentError: not an EC2 instance id (``i-`` and 8 or 17 hex digits)."""
    if not isinstance(instance_id, str) or not INSTANCE_ID.fullmatch(instance_id):
        raise ContainmentError(
            f"host {instance_id!r} is not an EC2 instance id (expected i- followed by 8 or 17 hex digits)"
        )
    return instance_id


def _instance(ec2: Any, instance_id: str) -> dict[str, Any]:
    from botocore.exceptions import ClientError

    try:
        reservations = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") in (
            "InvalidInstanceID.NotFound",
            "InvalidInstanceID.Malformed",
        ):
            raise ContainmentError(f"instance {instance_id} not found in this tenant's account") from None
        raise
    instances = [i for r in reservations for i in r.get("Instances", [])]
    if not instances:
        raise ContainmentError(f"instance {instance_id} not found in this tenant's account")
    instance: dict[str, Any] = instances[0]
    return instance


def _tags(instance: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in instance.get("Tags", [])}


def _quarantine_group(ec2: Any, vpc_id: str) -> str:
    groups = ec2.describe_security_groups(
        Filters=[
            {"Name": "vpc-id", "Values": [vpc_id]},
            {"Name": f"tag:{QUARANTINE_TAG}", "Values": [QUARANTINE_VALUE]},
        ]
    )["SecurityGroups"]
    if len(groups) != 1:
        found = "no" if not groups else f"{len(groups)}"
        raise ContainmentError(
            f"VPC {vpc_id} has {found} security group tagged {QUARANTINE_TAG}={QUARANTINE_VALUE} "
            "(exactly one expected; it is provisioned with the tenant)"
        )
    group_id: str = groups[0]["GroupId"]
    return group_id


def plan_isolation(ec2: Any, instance_id: str) -> IsolationPlan:
    """What isolating ``instance_id`` would change (read-only)."""
    instance = _instance(ec2, check_instance_id(instance_id))
    vpc_id = instance.get("VpcId")
    if not vpc_id:
        raise ContainmentError(f"instance {instance_id} is not in a VPC: security groups cannot isolate it")
    quarantine = _quarantine_group(ec2, vpc_id)
    current = tuple(sorted(g["GroupId"] for g in instance.get("SecurityGroups", [])))
    recorded = _tags(instance).get(PREVIOUS_GROUPS_TAG)
    already = current == (quarantine,)
    if already and recorded is not None:
        previous = tuple(g for g in recorded.split(",") if g)
    else:
        previous = tuple(g for g in current if g != quarantine)
    return IsolationPlan(
        instance_id=instance_id,
        vpc_id=vpc_id,
        current_groups=current,
        quarantine_group=quarantine,
        previous_groups=previous,
        already_isolated=already,
    )


def isolate(ec2: Any, instance_id: str, *, correlation_id: str) -> dict[str, Any]:
    """Put ``instance_id`` into quarantine (see the module doc); returns what was done.

    Re-planned here, not taken from the approval: the instance may have changed since, and the
    previous groups must be the ones it has now.
    """
    plan = plan_isolation(ec2, instance_id)
    if plan.already_isolated:
        return {**plan.as_xcom(), "changed": False}
    ec2.create_tags(
        Resources=[instance_id],
        Tags=[
            {"Key": PREVIOUS_GROUPS_TAG, "Value": ",".join(plan.previous_groups)},
            {"Key": ISOLATED_BY_TAG, "Value": correlation_id},
            {"Key": CORRELATION_TAG, "Value": correlation_id},
        ],
    )
    ec2.modify_instance_attribute(InstanceId=instance_id, Groups=[plan.quarantine_group])
    return {**plan.as_xcom(), "changed": True}


def release(ec2: Any, instance_id: str) -> dict[str, Any]:
    """Restore the groups recorded at isolation and remove the isolation tags; a no-op if not isolated."""
    instance = _instance(ec2, check_instance_id(instance_id))
    recorded = _tags(instance).get(PREVIOUS_GROUPS_TAG)
    if recorded is None:
        return {
            "instance_id": instance_id,
            "changed": False,
            "groups": sorted(g["GroupId"] for g in instance.get("SecurityGroups", [])),
        }
    groups = [g for g in recorded.split(",") if g]
    if not groups:
        raise ContainmentError(f"instance {instance_id} has no recorded previous groups to restore")
    ec2.modify_instance_attribute(InstanceId=instance_id, Groups=groups)
    ec2.delete_tags(Resources=[instance_id], Tags=[{"Key": PREVIOUS_GROUPS_TAG}, {"Key": ISOLATED_BY_TAG}])
    return {"instance_id": instance_id, "changed": True, "groups": sorted(groups)}
