"""A real check of the services a domain depends on, used by each domain's example DAG.

The checks touch the real local services (Secrets Manager on the moto server, the SMTP relay) and
never put a secret value in a log, an XCom or an exception: only its name, version and length.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Param, task

from include.policies.tenants import secret_name, tenant_ids
from include.workflows.factory import domain_workflow

AWS_CONN_ID = "aws_default"


def service_check_workflow(*, domain: str, doc_md: str) -> Any:
    """Build ``<domain>_service_check``: secrets reachable for the tenant, SMTP relay answers."""

    @domain_workflow(
        domain=domain,
        dag_id=f"{domain}_service_check",
        doc_md=doc_md,
        params={
            "tenant": Param(
                "acme", type="string", enum=tenant_ids(), description="Tenant whose credentials to check"
            ),
        },
        tags=("service-check",),
    )
    def service_check() -> None:
        @task
        def check_tenant_secret(tenant: str) -> dict[str, Any]:
            from airflow.providers.amazon.aws.hooks.secrets_manager import SecretsManagerHook

            from include.connectors.aws import STANDARD_RETRIES

            name = secret_name(tenant, domain)
            # Not a connector hook: botocore's standard mode is its one retrier (include/connectors/aws.py).
            client = SecretsManagerHook(aws_conn_id=AWS_CONN_ID, config=STANDARD_RETRIES).get_conn()
            response = client.get_secret_value(SecretId=name)
            value = response.get("SecretString") or ""
            if not value:
                raise ValueError(f"secret {name} exists but is empty")
            return {"secret": name, "version_id": response["VersionId"], "length": len(value)}

        @task
        def check_smtp_relay() -> dict[str, Any]:
            from include.connectors.smtp import SmtpRelayHook

            relay, code = SmtpRelayHook().noop()
            return {"smtp": relay, "noop": code}

        @task
        def report(secret: dict[str, Any], smtp: dict[str, Any]) -> str:
            return (
                f"{domain}: secret {secret['secret']} v{secret['version_id'][:8]} ok; smtp {smtp['smtp']} ok"
            )

        secret: Any = check_tenant_secret(tenant="{{ params.tenant }}")
        smtp: Any = check_smtp_relay()
        report(secret, smtp)

    return service_check()
