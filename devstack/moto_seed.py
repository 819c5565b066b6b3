"""Seed the moto server with what a fresh deployment would find in AWS Secrets Manager.

- ``airflow/connections/<conn_id>``: the platform's connections (read by Airflow's
  SecretsManagerBackend; nothing is stored in the Airflow DB or in environment variables);
- ``orchestrator/<tenant>/<domain>/service-check``: one credential per demo tenant and domain, so
  credentials are scoped per tenant and per department from day one.
"""

from __future__ import annotations

import json
import secrets

import boto3
from botocore.exceptions import ClientError

from devstack import postgres, redis
from devstack.config import (
    HOST,
    MOTO_ACCESS_KEY,
    MOTO_SECRET_KEY,
    REGION,
    REPO_ROOT,
    STAFF_IDENTITY_STORE_ID,
    VERIFIER_LOCAL_NAME,
    VERIFIER_USER,
    Profile,
)
from devstack.directory_seed import login_connection
from devstack.invoicing import erp_connection, psa_connection
from devstack.openldap import ldap_connection
from devstack.privacyidea import mfa_connection
from devstack.request_tracker import rt_connection
from devstack.standins import webhooks
from include.policies.loader import load_domain_policy
from include.policies.tenants import STAFF_TENANT, secret_name, tenant_ids


def secrets_client(profile: Profile) -> object:
    return boto3.client(
        "secretsmanager",
        endpoint_url=profile.moto_url,
        region_name=REGION,
        aws_access_key_id=MOTO_ACCESS_KEY,
        aws_secret_access_key=MOTO_SECRET_KEY,
    )


def platform_connections(profile: Profile) -> dict[str, dict[str, object]]:
    return {
        "aws_default": {
            "conn_type": "aws",
            "login": MOTO_ACCESS_KEY,
            "password": MOTO_SECRET_KEY,
            "extra": {
                "endpoint_url": profile.moto_url,
                "region_name": REGION,
                # IAM Identity Center of the HR workflows: the store per (internal) tenant.
                "identity_store_id": {STAFF_TENANT: STAFF_IDENTITY_STORE_ID},
            },
        },
        # The shared store of the connectors' rate-limit buckets: a database of the local cluster,
        # in the distributed setup a database of its Redis.
        "ratelimit_store": redis.ratelimit_connection(profile)
        if profile.distributed
        else {
            "conn_type": "postgres",
            "host": HOST,
            "port": profile.pg_port,
            "login": postgres.RATELIMIT_ROLE,
            "password": postgres.password(profile, postgres.RATELIMIT_ROLE),
            "schema": "ratelimit",
        },
        # The audit trail's own database (include/audit); the export bucket is Object Locked. As
        # audit_writer: INSERT and SELECT on the audit tables, nothing else (devstack/postgres.py).
        "audit_store": {
            "conn_type": "postgres",
            "host": HOST,
            "port": profile.pg_port,
            "login": postgres.AUDIT_WRITER,
            "password": postgres.password(profile, postgres.AUDIT_WRITER),
            "schema": "audit",
            "extra": {
                "export_bucket": f"orchestrator-audit-{profile.name}",
                "region_name": REGION,
                "aws_conn_id": "aws_default",
                "retention_days": 1,  # moto: short, so a demo bucket is not locked for years
            },
        },
        # Where the checkpoint signing key is, not the key: that is a secret of the audit-seal
        # capability in the secops account (seed_audit_signing_key), out of the tasks' reach.
        "audit_signing": {
            "conn_type": "generic",
            "extra": {"signer": "secret", "tenant": AUDIT_SEAL_TENANT, "secret_id": AUDIT_SIGNING_SECRET},
        },
        "rt_default": rt_connection(profile),
        # The company directory (OpenLDAP) of the HR workflows; the admin password is per profile.
        "ldap_default": ldap_connection(profile),
        # privacyIDEA, which checks approval answers' one-time codes (include/connectors/mfa.py):
        # the password is its validate API key.
        "mfa_default": mfa_connection(profile),
        # The login's read-only view of the same directory (include/auth/directory.py).
        "ldap_login": login_connection(profile),
        # No Terraform binary reaches these machines: the stand-in CLI devstack/bin/terraform
        # (docs/standins.md, "Terraform"). Production sets binary to terraform (or tofu) and shared paths.
        "terraform_default": {
            "conn_type": "generic",
            "extra": {
                "binary": str(REPO_ROOT / "devstack" / "bin" / "terraform"),
                "work_root": str(profile.root / "terraform" / "work"),
                "state_root": str(profile.root / "terraform" / "state"),
                "max_plan_age_seconds": 3600,
                # The stand-in models a subset of Terraform: it runs a model of the real module.
                "sources": {
                    "terraform/modules/tenant-provisioning": str(
                        REPO_ROOT / "tests" / "support" / "terraform" / "tenant_provisioning_model"
                    ),
                },
            },
        },
        # The ERP of the invoicing workflows (the Business Central stand-in of the local stack) and
        # the bucket the PSA puts its milestone exports in (devstack/invoicing.py).
        "business_central_default": erp_connection(profile),
        "psa_exports": psa_connection(profile),
        # Airflow's REST API as the approval verifier's read-only service user: privileged steps
        # read the answers to their approval requests there (include/approvals/verify.py).
        "airflow_api": {
            "conn_type": "http",
            "host": profile.api_url,
            "login": VERIFIER_USER,
            "password": profile.local_secret(VERIFIER_LOCAL_NAME),
        },
        # The approval channels (devstack/standins/webhooks.py): each domain's Teams webhook and the
        # SOC's PagerDuty service, named in domains.yaml (alerts.teams_channel, alerts.pagerduty).
        **webhooks.connections(profile),
        "smtp_alerts": {
            "conn_type": "smtp",
            "host": HOST,
            "port": profile.smtp_port,
            "extra": {"disable_ssl": True, "disable_tls": True, "from_email": "orchestrator@secops.example"},
        },
    }


AUDIT_SEAL_TENANT = "secops"
AUDIT_SIGNING_SECRET = "orchestrator/secops/audit-seal/signing-key"  # noqa: S105 - a name
AUDIT_SIGNING_LOCAL_NAME = "audit-signing-key-ed25519"


def seed_audit_signing_key(profile: Profile) -> str:
    """The Ed25519 checkpoint key, in the secops account under the audit-seal capability's path.

    Not in the platform account the tasks' secrets backend reads (``airflow/connections/*``): only
    a session of the ``orchestrator-audit-seal`` role in that account reads it. Kept per profile,
    so a restarted moto hands out the key the log was sealed with. Returns the secret's name.
    """
    from devstack.aws_seed import account_client
    from include.audit.signing import new_private_key_pem
    from include.policies.tenants import tenant_account_id

    pem = profile.local_secret(AUDIT_SIGNING_LOCAL_NAME, lambda: new_private_key_pem().decode())
    client = account_client("secretsmanager", tenant_account_id(AUDIT_SEAL_TENANT), profile.moto_url, REGION)
    _put(client, AUDIT_SIGNING_SECRET, pem)
    return AUDIT_SIGNING_SECRET


def seed_microsoft_connections(profile: Profile) -> list[str]:
    """Each customer's Entra app connections, one per capability, in the customer's own account under
    the capability's path (``orchestrator/<tenant>/<capability>/msgraph``, ``.../defender``): only that
    capability's role in that account reads it (include/connectors/microsoft.py). Returns the names."""
    from devstack.aws_seed import account_client
    from devstack.standins import microsoft
    from include.policies.tenants import tenant_account_id

    names = []
    for tenant in microsoft.entra_tenants():
        client = account_client("secretsmanager", tenant_account_id(tenant), profile.moto_url, REGION)
        for capability in microsoft.CAPABILITY_ROLES:
            name = f"orchestrator/{tenant}/{capability}/msgraph"
            _put(client, name, json.dumps(microsoft.connection(profile, tenant, capability)))
            names.append(name)
        for capability in microsoft.DEFENDER_CAPABILITY_ROLES:
            name = f"orchestrator/{tenant}/{capability}/defender"
            _put(client, name, json.dumps(microsoft.connection(profile, tenant, capability, defender=True)))
            names.append(name)
    return names


def seed_jira_connections(profile: Profile) -> list[str]:
    """Each Jira tenant's connection to its own site (the Jira stand-in), in the tenant's own account
    under both ticket capabilities' paths (``orchestrator/<tenant>/ticket-create/jira``,
    ``.../ticket-update/jira``): only those roles in that account read it
    (include/connectors/ticketing/mirror.py). Returns the names."""
    from devstack.aws_seed import account_client
    from devstack.standins import jira
    from include.connectors.ticketing.mirror import CAPABILITIES, CREDENTIAL_LEAF
    from include.policies.tenants import tenant_account_id, tenant_ticketing

    names = []
    for tenant in tenant_ids():
        if tenant_ticketing(tenant).system != "jira":
            continue
        client = account_client("secretsmanager", tenant_account_id(tenant), profile.moto_url, REGION)
        for capability in CAPABILITIES:
            name = f"orchestrator/{tenant}/{capability}/{CREDENTIAL_LEAF}"
            _put(client, name, json.dumps(jira.connection(profile, tenant)))
            names.append(name)
    return names


def _put(client: object, name: str, value: str) -> None:
    try:
        client.create_secret(Name=name, SecretString=value)  # type: ignore[attr-defined]
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "ResourceExistsException":
            raise


def seed(profile: Profile) -> list[str]:
    """Create the secrets if missing (idempotent); return their names."""
    client = secrets_client(profile)
    names = []
    for conn_id, connection in platform_connections(profile).items():
        name = f"airflow/connections/{conn_id}"
        _put(client, name, json.dumps(connection))
        names.append(name)
    names.append(seed_audit_signing_key(profile))
    names.extend(seed_microsoft_connections(profile))
    names.extend(seed_jira_connections(profile))
    for tenant in tenant_ids():
        for domain in load_domain_policy().domains:
            name = secret_name(tenant, domain)
            _put(client, name, json.dumps({"token": secrets.token_urlsafe(24)}))
            names.append(name)
    return names
