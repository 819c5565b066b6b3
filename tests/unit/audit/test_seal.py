"""The sealing step's signer: configured by a connection that holds no key, reached only through the
``audit-seal`` capability. Proved statically (moto does not enforce resource-scoped IAM): the rendered
policy documents, and no other capability can read that secret path or sign with KMS.
"""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest

from include.audit.seal import SEAL_CAPABILITY, SignerSettings, trusted_keys
from include.audit.signing import Ed25519Signer, key_fingerprint
from include.policies.capabilities import iam_policy_document, load_capabilities
from include.policies.tenants import tenant_account_id

SECRET = "orchestrator/secops/audit-seal/signing-key"


def _conn(extra: dict[str, Any], password: str | None = None) -> Any:
    return SimpleNamespace(password=password, extra_dejson=extra)


def test_a_connection_holding_a_key_is_refused() -> None:
    with pytest.raises(
        ValueError, match="connection audit_signing: has a password; the checkpoint signing key"
    ) as refused:
        SignerSettings.from_connection(_conn({"signer": "secret"}, password="6b" * 32))
    assert "6b6b" not in str(refused.value)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        pytest.param(
            {"signer": "hmac", "tenant": "secops"}, "extra 'signer' must be one of secret, kms", id="hmac"
        ),
        pytest.param({"signer": "secret"}, "extra 'tenant'", id="no-tenant"),
        pytest.param(
            {"signer": "secret", "tenant": "secops", "secret_id": "airflow/connections/audit_signing"},
            "extra 'secret_id' must name a secret under orchestrator/secops/audit-seal/",
            id="secret-outside-the-capability-path",
        ),
        pytest.param({"signer": "kms", "tenant": "secops"}, "extra 'kms_key_id' is missing", id="kms-no-key"),
        pytest.param(
            {"signer": "kms", "tenant": "secops", "kms_key_id": "k", "previous_public_keys": ["nope"]},
            r"previous_public_keys\[0\]: not a PEM public key",
            id="bad-previous-key",
        ),
    ],
)
def test_bad_signer_settings_are_named(extra: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SignerSettings.from_connection(_conn(extra))


def test_settings_and_trusted_keys() -> None:
    old = Ed25519Signer.generate()
    settings = SignerSettings.from_connection(
        _conn(
            {
                "signer": "secret",
                "tenant": "secops",
                "secret_id": SECRET,
                "previous_public_keys": [old.public_key_pem().decode()],
            }
        )
    )
    assert (settings.kind, settings.tenant, settings.secret_id) == ("secret", "secops", SECRET)
    current = Ed25519Signer.generate()
    assert set(trusted_keys(current, settings.previous_public_keys).public) == {current.key_id, old.key_id}
    assert key_fingerprint(settings.previous_public_keys[0]) == old.key_id


def test_only_the_audit_seal_capability_reaches_the_signing_key() -> None:
    """Every capability rendered for the secops account: only audit-seal names the key's secret path
    or any KMS signing action; audit-seal grants nothing else, and only to the platform domain."""
    account = tenant_account_id("secops")
    secret_arn = f"arn:aws:secretsmanager:eu-west-1:{account}:secret:{SECRET}-AbCdEf"
    reaching = set()
    for name, capability in load_capabilities().capabilities.items():
        document = iam_policy_document(capability, "secops", account, "eu-west-1")
        for statement in document["Statement"]:
            resources = (
                statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
            )
            reads_secret = "secretsmanager:GetSecretValue" in statement["Action"] and any(
                resource == "*" or secret_arn.startswith(resource.rstrip("*")) for resource in resources
            )
            if reads_secret or any(action.startswith("kms:") for action in statement["Action"]):
                reaching.add(name)
    assert reaching == {SEAL_CAPABILITY}
    seal = load_capabilities().capability(SEAL_CAPABILITY)
    assert seal.domains == ("platform",)
    assert seal.actions == {"secretsmanager:GetSecretValue", "kms:Sign", "kms:GetPublicKey"}
    document = iam_policy_document(seal, "secops", account, "eu-west-1")
    assert json.dumps(document["Statement"][0]["Resource"]) == json.dumps(
        [f"arn:aws:secretsmanager:eu-west-1:{account}:secret:orchestrator/secops/audit-seal/*"]
    )


def test_full_verify_is_due_on_a_manual_run_and_the_days_first_pass() -> None:
    from datetime import UTC, datetime
    from types import SimpleNamespace

    from include.audit.seal import full_verify_due

    def context(run_type: str, hour: int, minute: int) -> dict[str, object]:
        return {
            "dag_run": SimpleNamespace(run_type=run_type),
            "data_interval_end": datetime(2026, 12, 6, hour, minute, tzinfo=UTC),
        }

    assert full_verify_due(context("manual", 13, 40))
    assert full_verify_due(context("scheduled", 0, 0))
    assert full_verify_due(context("scheduled", 0, 14))
    assert not full_verify_due(context("scheduled", 0, 15))
    assert not full_verify_due(context("scheduled", 23, 59))
    assert not full_verify_due(context("asset_triggered", 12, 0))
    assert not full_verify_due({})
