"""The invoicing side of the local stack: the ERP stand-in as a service and the PSA export bucket.

- **Business Central**: :mod:`devstack.standins.erp` runs as service ``erp-standin`` on
  127.0.0.1 (:attr:`Profile.erp_port`), started and stopped by the stack by its PID like moto. Its
  Entra tenant, client id and company id are generated once per profile (files in the profile's
  secrets folder) so the connection ``business_central_default`` stays valid across restarts; the
  client secret is generated there too and reaches the service as a file path, never on a command
  line. Its customers are the invoiceable tenants of ``include/policies/invoicing.yaml`` under
  their ERP numbers. State (invoices) is in memory until the service stops, like moto's.
- **PSA exports**: bucket ``orchestrator-psa-exports-<profile>`` in moto (the platform account),
  named by connection ``psa_exports``; seeded with one sample export for the walk-through
  (:data:`SAMPLE_EXPORT_KEY`), which the tests do not use.
"""

from __future__ import annotations

import csv
import io
import json
import secrets
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devstack.config import HOST, REGION, VENV_BIN, Profile

ERP_SERVICE = "erp-standin"
ERP_ENVIRONMENT = "production"
LOCAL_CURRENCY = "EUR"
REVENUE_ACCOUNT = "8400"  # G/L "Revenue, managed services" of the stand-in's chart of accounts
# Every VAT rate the billable-lines suite allows -> the stand-in's VAT product posting groups.
TAX_CODES = {
    "0": "ZERO",
    "0.07": "REDUCED",
    "0.19": "STANDARD",
    "0.2": "UK20",
    "0.077": "CH77",
    "0.081": "CH81",
}
SAMPLE_EXPORT_KEY = "exports/acme/CT-2026-001/M1.csv"
SAMPLE_PERIOD = ("2026-10-01", "2026-10-31")
_SAMPLE_LINES = [
    ("L-1", "SOC-MONITORING", "2026-10-05", "SOC 24x7 monitoring, October 2026", "1", "4500.00", "0.19"),
    ("L-2", "IR-RETAINER", "2026-10-12", "Incident response, retainer hours", "6.5", "180.00", "0.19"),
    ("L-3", "IR-RETAINER", "2026-10-13", "Forensic analysis of host ws-0042", "3", "210.00", "0.19"),
    ("L-4", "AWARENESS", "2026-10-20", "Security handbook, printed copies", "12", "24.90", "0.07"),
]


@dataclass(frozen=True)
class ErpIdentity:
    aad_tenant_id: str
    client_id: str
    company_id: str
    client_secret_file: Path

    @property
    def client_secret(self) -> str:
        return self.client_secret_file.read_text(encoding="utf-8").strip()


def erp_identity(profile: Profile) -> ErpIdentity:
    """The stand-in's Entra tenant, application and company, and the file holding the client secret."""

    def new_id() -> str:
        return str(uuid.uuid4())

    # Business Central client secrets look like this (a 3-character id prefix, "~", random text).
    profile.local_secret("erp-client-secret", lambda: "Xq8Q~" + secrets.token_urlsafe(30))
    return ErpIdentity(
        aad_tenant_id=profile.local_secret("erp-aad-tenant-id", new_id),
        client_id=profile.local_secret("erp-client-id", new_id),
        company_id=profile.local_secret("erp-company-id", new_id),
        client_secret_file=profile.root / "secrets" / "erp-client-secret",
    )


def erp_base_url(profile: Profile) -> str:
    return f"http://{HOST}:{profile.erp_port}"


def erp_token_url(profile: Profile) -> str:
    return f"{erp_base_url(profile)}/{erp_identity(profile).aad_tenant_id}/oauth2/v2.0/token"


def erp_customers() -> dict[str, str]:
    """Customer number -> name: the invoiceable tenants under their display names (tenants.yaml)."""
    from include.policies.invoicing import load_invoicing
    from include.policies.tenants import load_tenants

    tenants = load_tenants()
    return {
        number: tenants.tenant(tenant).display_name for tenant, number in load_invoicing().customers.items()
    }


def erp_connection(profile: Profile) -> dict[str, Any]:
    """The Airflow connection ``business_central_default`` (seeded into Secrets Manager, never logged)."""
    identity = erp_identity(profile)
    return {
        "conn_type": "http",
        "host": HOST,
        "port": profile.erp_port,
        "schema": "http",
        "login": identity.client_id,
        "password": identity.client_secret,
        "extra": {
            "company_id": identity.company_id,
            "aad_tenant_id": identity.aad_tenant_id,
            "environment": ERP_ENVIRONMENT,
            "token_url": erp_token_url(profile),
            "tax_codes": TAX_CODES,
            "line_object_number": REVENUE_ACCOUNT,
            "local_currency": LOCAL_CURRENCY,
            # Business Central online: 6,000 requests per 5 minutes per user; stay under it together.
            "rate_limit_per_second": 18,
            "rate_limit_burst": 18,
        },
    }


def erp_standin_argv(profile: Profile) -> list[str]:
    identity = erp_identity(profile)
    return [
        str(VENV_BIN / "python"),
        "-m",
        "devstack.standins.erp",
        "--port",
        str(profile.erp_port),
        "--aad-tenant-id",
        identity.aad_tenant_id,
        "--client-id",
        identity.client_id,
        "--company-id",
        identity.company_id,
        "--client-secret-file",
        str(identity.client_secret_file),
        "--customers",
        json.dumps(erp_customers()),
    ]


def psa_bucket(profile: Profile) -> str:
    return f"orchestrator-psa-exports-{profile.name}"


def psa_connection(profile: Profile) -> dict[str, Any]:
    """The Airflow connection ``psa_exports``: where the PSA puts its milestone exports."""
    return {
        "conn_type": "generic",
        "extra": {"bucket": psa_bucket(profile), "aws_conn_id": "aws_default", "region_name": REGION},
    }


def sample_export() -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(
        [
            "line_id",
            "customer_id",
            "project",
            "date",
            "description",
            "quantity",
            "unit_price",
            "currency",
            "vat_rate",
        ]
    )
    for line_id, project, day, description, quantity, price, rate in _SAMPLE_LINES:
        writer.writerow([line_id, "acme", project, day, description, quantity, price, LOCAL_CURRENCY, rate])
    return out.getvalue().encode("utf-8")


def seed_psa_exports(profile: Profile) -> str:
    """Create the PSA export bucket (versioned, as an export bucket should be) and the sample export."""
    from botocore.exceptions import ClientError

    from devstack.aws_seed import account_client
    from include.policies.tenants import platform_account_id

    s3 = account_client("s3", platform_account_id(), profile.moto_url, REGION)
    bucket = psa_bucket(profile)
    try:
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") != "BucketAlreadyOwnedByYou":
            raise
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    try:
        s3.put_object(Bucket=bucket, Key=SAMPLE_EXPORT_KEY, Body=sample_export(), IfNoneMatch="*")
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") != "PreconditionFailed":
            raise
    return bucket
