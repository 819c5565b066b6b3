"""Network containment of an EC2 instance: swap its security groups for the VPC's quarantine group.

:class:`Ec2Hook` is the SOC containment workflow's hook: ``host-inspect`` for the plan,
``host-isolate`` for the change, each a capability role in the tenant's own account
(:class:`~include.connectors.aws.AwsCapabilityHook`). Three calls, each safe to repeat (SCALE-3):

- :meth:`Ec2Hook.plan_isolation` (read-only): the instance, its VPC, its current groups and the VPC's
  quarantine group (tagged ``orchestrator:role = quarantine``, provisioned with the tenant). What
  the approver sees. An unknown instance or a VPC without a quarantine group is a clear error
  before anything changes.
- :meth:`Ec2Hook.isolate`: first records the previous groups in tags on the instance
  (``orchestrator:previous-groups``, ``orchestrator:isolated-by`` = the correlation id), then
  replaces every group with the quarantine group. Tags first: if the swap fails, nothing is lost;
  if it is repeated, an instance already in quarantine keeps the previous groups it had recorded
  (never overwritten with the quarantine group itself).
- :meth:`Ec2Hook.release`: puts the recorded groups back and removes the tags (the release workflow).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Final

from botocore.exceptions import ClientError

from include.connectors.aws import AwsCapabilityHook, error_code

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
    """What isolating an instance changes: its groups now, the quarantine group, what a release restores."""

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


class Ec2Hook(AwsCapabilityHook):
    """EC2 host containment in a tenant's account, as a capability role (see the module docstring).

    :param aws_conn_id: the Airflow AWS connection (base credentials, endpoints); default ``aws_default``.
    :param capability: ``host-inspect`` (read-only) or ``host-isolate``.
    :param tenant: the tenant whose account holds the instance.
    :param run_context: the run making the calls; default: the running task's.
    """

    system: ClassVar[str] = "ec2"
    service: ClassVar[str] = "ec2"
    hook_name = "EC2 containment"

    def plan_isolation(self, instance_id: str) -> IsolationPlan:
        """What isolating ``instance_id`` would change (read-only).

        :param instance_id: the EC2 instance id (``i-`` and 8 or 17 hex digits).
        :raises ContainmentError: a malformed or unknown instance, an instance outside a VPC, a VPC
            without exactly one quarantine group.
        """
        instance = self._instance(check_instance_id(instance_id))
        vpc_id = instance.get("VpcId")
        if not vpc_id:
            raise ContainmentError(
                f"instance {instance_id} is not in a VPC: security groups cannot isolate it"
            )
        quarantine = self._quarantine_group(vpc_id)
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

    def isolate(self, instance_id: str) -> dict[str, Any]:
        """Put ``instance_id`` into quarantine (see the module docstring); returns what was done.

        Re-planned here, not taken from the approval: the instance may have changed since, and the
        previous groups must be the ones it has now. The isolation tags carry the run's correlation id.

        :param instance_id: the EC2 instance id.
        :return: the plan (:meth:`IsolationPlan.as_xcom`), ``changed`` and ``correlation_id``.
        :raises ContainmentError: as :meth:`plan_isolation`; nothing was changed.
        """
        correlation_id = self.run_context.correlation_id
        plan = self.plan_isolation(instance_id)
        if plan.already_isolated:
            return {**plan.as_xcom(), "changed": False, "correlation_id": correlation_id}
        tags = [
            {"Key": PREVIOUS_GROUPS_TAG, "Value": ",".join(plan.previous_groups)},
            {"Key": ISOLATED_BY_TAG, "Value": correlation_id},
            {"Key": CORRELATION_TAG, "Value": correlation_id},
        ]
        self.call("create_tags", lambda: self.client.create_tags(Resources=[instance_id], Tags=tags))
        self.call(
            "modify_instance_attribute",
            lambda: self.client.modify_instance_attribute(
                InstanceId=instance_id, Groups=[plan.quarantine_group]
            ),
        )
        return {**plan.as_xcom(), "changed": True, "correlation_id": correlation_id}

    def release(self, instance_id: str) -> dict[str, Any]:
        """Restore the groups recorded at isolation and remove the isolation tags; a no-op if not isolated.

        :param instance_id: the EC2 instance id.
        :return: ``instance_id``, ``changed`` and the instance's ``groups`` afterwards.
        :raises ContainmentError: a malformed or unknown instance, or isolation tags without groups.
        """
        instance = self._instance(check_instance_id(instance_id))
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
        self.call(
            "modify_instance_attribute",
            lambda: self.client.modify_instance_attribute(InstanceId=instance_id, Groups=groups),
        )
        self.call(
            "delete_tags",
            lambda: self.client.delete_tags(
                Resources=[instance_id], Tags=[{"Key": PREVIOUS_GROUPS_TAG}, {"Key": ISOLATED_BY_TAG}]
            ),
        )
        return {"instance_id": instance_id, "changed": True, "groups": sorted(groups)}

    def _instance(self, instance_id: str) -> dict[str, Any]:
        try:
            answer = self.call(
                "describe_instances", lambda: self.client.describe_instances(InstanceIds=[instance_id])
            )
        except ClientError as error:
            if error_code(error) in _NOT_FOUND:
                raise ContainmentError(f"instance {instance_id} not found in this tenant's account") from None
            raise
        instances = [i for r in answer["Reservations"] for i in r.get("Instances", [])]
        if not instances:
            raise ContainmentError(f"instance {instance_id} not found in this tenant's account")
        instance: dict[str, Any] = instances[0]
        return instance

    def _quarantine_group(self, vpc_id: str) -> str:
        filters = [
            {"Name": "vpc-id", "Values": [vpc_id]},
            {"Name": f"tag:{QUARANTINE_TAG}", "Values": [QUARANTINE_VALUE]},
        ]
        groups = self.call(
            "describe_security_groups", lambda: self.client.describe_security_groups(Filters=filters)
        )["SecurityGroups"]
        if len(groups) != 1:
            found = "no" if not groups else f"{len(groups)}"
            raise ContainmentError(
                f"VPC {vpc_id} has {found} security group tagged {QUARANTINE_TAG}={QUARANTINE_VALUE} "
                "(exactly one expected; it is provisioned with the tenant)"
            )
        group_id: str = groups[0]["GroupId"]
        return group_id


def _tags(instance: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in instance.get("Tags", [])}
