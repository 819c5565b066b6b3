"""Seed moto with what each tenant's AWS account holds: the capability roles and the capability secrets.

One moto account per tenant (``tenants.yaml``), exactly as in production, so isolation is real in
the devstack too: a session in acme's account cannot see globex's secrets even by ARN (moto does not
enforce resource-scoped IAM, but accounts are separate stores).

How moto picks the account of a request (measured with moto 5.2.5, see ``moto/core/responses.py``
``get_current_account``): 1. the ``MOTO_ACCOUNT_ID`` environment variable of the moto process
(overrides everything; never set it here); 2. the ``x-moto-account-id`` request header; 3. the
account owning the access key id: credentials from STS AssumeRole belong to the role's account
(taken from the role ARN; moto does not require the role to exist); 4. otherwise the default account
123456789012 (the ``testing`` key of the devstack = the platform account). The seed uses 2.
"""

from __future__ import annotations

import json
import secrets
from functools import partial
from typing import Any

import boto3
from botocore.exceptions import ClientError

from devstack.config import MOTO_ACCESS_KEY, MOTO_SECRET_KEY
from include.policies.capabilities import (
    Capability,
    iam_policy_document,
    load_capabilities,
    trust_policy_document,
)
from include.policies.tenants import all_tenant_ids, platform_account_id, tenant_account_id

MOTO_ACCOUNT_HEADER = "x-moto-account-id"
INLINE_POLICY_NAME = "least-privilege"
SECRET_LEAF = "credentials"  # noqa: S105 - a secret *name*, not a value


def _route_to_account(account_id: str, request: Any, **_: Any) -> None:
    request.headers[MOTO_ACCOUNT_HEADER] = account_id


def account_client(service: str, account_id: str, endpoint_url: str, region: str) -> Any:
    """A moto client acting in ``account_id`` (devstack only: real AWS ignores the header)."""
    client = boto3.client(
        service,
        endpoint_url=endpoint_url,
        region_name=region,
        aws_access_key_id=MOTO_ACCESS_KEY,
        aws_secret_access_key=MOTO_SECRET_KEY,
    )
    client.meta.events.register("before-sign", partial(_route_to_account, account_id))
    return client


def capability_secret_name(capability: Capability, tenant: str) -> str:
    """``orchestrator/<tenant>/<capability>/credentials``: inside the prefix the role may read."""
    return f"{capability.secret_prefix(tenant)}{SECRET_LEAF}"


def _ensure_role(iam: Any, capability: Capability, tenant: str, region: str) -> str:
    name = capability.role_name
    trust = json.dumps(trust_policy_document(capability, tenant, platform_account_id()))
    try:
        arn = iam.create_role(
            RoleName=name,
            AssumeRolePolicyDocument=trust,
            Description=capability.description,
            Tags=[
                {"Key": "tenant", "Value": tenant},
                {"Key": "capability", "Value": capability.name},
                {"Key": "privileged", "Value": str(capability.privileged).lower()},
            ],
        )["Role"]["Arn"]
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "EntityAlreadyExists":
            raise
        iam.update_assume_role_policy(RoleName=name, PolicyDocument=trust)
        arn = iam.get_role(RoleName=name)["Role"]["Arn"]
    # put_role_policy replaces the document: a re-seed after a policy change converges (SCALE-3).
    document = iam_policy_document(capability, tenant, tenant_account_id(tenant), region)
    iam.put_role_policy(RoleName=name, PolicyName=INLINE_POLICY_NAME, PolicyDocument=json.dumps(document))
    return arn


def _ensure_secret(client: Any, name: str) -> None:
    try:
        client.create_secret(Name=name, SecretString=json.dumps({"token": secrets.token_urlsafe(24)}))
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "ResourceExistsException":
            raise


def _reads_secrets(capability: Capability) -> bool:
    return "secretsmanager:GetSecretValue" in capability.actions


def seed_capability_roles(endpoint_url: str, region: str) -> list[str]:
    """Create (idempotently) every capability role and capability secret in every tenant's account.

    Returns the role ARNs and secret names created or confirmed, one per line of a seed report.
    """
    seeded = []
    for tenant in all_tenant_ids():
        account_id = tenant_account_id(tenant)
        iam = account_client("iam", account_id, endpoint_url, region)
        secrets_manager = account_client("secretsmanager", account_id, endpoint_url, region)
        for capability in load_capabilities().capabilities.values():
            seeded.append(_ensure_role(iam, capability, tenant, region))
            if _reads_secrets(capability):
                name = capability_secret_name(capability, tenant)
                _ensure_secret(secrets_manager, name)
                seeded.append(name)
        seeded += seed_perimeter_blocklists(tenant, endpoint_url, region)
    return seeded


def seed_perimeter_blocklists(tenant: str, endpoint_url: str, region: str) -> list[str]:
    """The tenant's WAF block lists (``perimeter-block``): an empty REGIONAL IPv4 and IPv6 IP set,
    each with its id in the SSM parameter the perimeter roles read it from.

    In production they are provisioned with the tenant (Terraform) and referenced by a block rule of
    the tenant's web ACLs; here created idempotently (an existing list keeps its entries). Returns
    their ARNs.
    """
    from include.connectors.perimeter import BLOCKLIST_NAME, BLOCKLIST_PARAMETER, SCOPE

    account_id = tenant_account_id(tenant)
    wafv2 = account_client("wafv2", account_id, endpoint_url, region)
    ssm = account_client("ssm", account_id, endpoint_url, region)
    existing = {s["Name"]: s for s in wafv2.list_ip_sets(Scope=SCOPE, Limit=100)["IPSets"]}
    arns = []
    for version in (4, 6):
        name = BLOCKLIST_NAME.format(tenant=tenant, version=version)
        if name not in existing:
            existing[name] = wafv2.create_ip_set(
                Name=name,
                Scope=SCOPE,
                IPAddressVersion=f"IPV{version}",
                Addresses=[],
                Description=f"Perimeter blocks of {tenant} (orchestrator, soc_block_indicator)",
                Tags=[{"Key": "tenant", "Value": tenant}, {"Key": "capability", "Value": "perimeter-block"}],
            )["Summary"]
        summary = existing[name]
        ssm.put_parameter(
            Name=BLOCKLIST_PARAMETER.format(tenant=tenant, version=version),
            Value=summary["Id"],
            Type="String",
            Overwrite=True,
            Description=f"Id of WAF IP set {name} ({SCOPE})",
        )
        arns.append(summary["ARN"])
    return arns


def seed_identity_center(endpoint_url: str, region: str) -> list[str]:
    """The Identity Center groups of ``hr_roles.yaml`` in the staff account's identity store.

    In production Terraform creates them with their permission sets (onboarding never creates a
    group); the devstack creates them here, idempotently. Returns the group names.
    """
    from devstack.config import STAFF_IDENTITY_STORE_ID
    from include.policies.hr_roles import load_hr_roles
    from include.policies.tenants import STAFF_TENANT

    client = account_client("identitystore", tenant_account_id(STAFF_TENANT), endpoint_url, region)
    existing = {
        group["DisplayName"]
        for page in client.get_paginator("list_groups").paginate(IdentityStoreId=STAFF_IDENTITY_STORE_ID)
        for group in page["Groups"]
    }
    groups = load_hr_roles().groups["identity_center"]
    for name, group in sorted(groups.items()):
        if name not in existing:
            client.create_group(
                IdentityStoreId=STAFF_IDENTITY_STORE_ID, DisplayName=name, Description=group.description
            )
    return sorted(groups)


def seed_intake_queues(endpoint_url: str, region: str) -> dict[str, str]:
    """The intake queues of ``intake.yaml`` (each source's queue and its dead-letter queue, with the
    RedrivePolicy) in the platform account; idempotent. Returns queue name -> URL."""
    from include.intake.policy import load_intake
    from include.intake.queues import ensure_queues

    client = account_client("sqs", platform_account_id(), endpoint_url, region)
    return ensure_queues(load_intake(), client)
