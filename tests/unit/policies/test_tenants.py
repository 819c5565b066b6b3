"""Tenants: the deployed file, the helpers other modules use, and exact errors for broken files."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from include.policies.loader import PolicyError
from include.policies.tenants import (
    STAFF_TENANT,
    TENANTS_FILE,
    all_tenant_ids,
    internal_tenant_ids,
    load_tenants,
    load_tenants_file,
    platform_account_id,
    secret_name,
    tenant_account_id,
    tenant_accounts,
    tenant_ids,
)
from tests.support.documents import delete_at as _delete
from tests.support.documents import set_at as _set

TENANT_PATTERN = "^[a-z][a-z0-9-]{0,30}[a-z0-9]$"


def exactly(message: str) -> str:
    return f"^{re.escape(message)}$"


# --- the deployed file ------------------------------------------------------------------------


def test_deployed_tenants_and_helpers():
    assert tenant_ids() == ["acme", "globex"]
    assert internal_tenant_ids() == ["secops"]
    assert all_tenant_ids() == ["acme", "globex", "secops"]
    assert STAFF_TENANT in internal_tenant_ids()
    assert tenant_accounts() == {"acme": "111111111111", "globex": "222222222222", "secops": "333333333333"}
    assert tenant_account_id("secops") == "333333333333"
    assert platform_account_id() == "123456789012"
    assert secret_name("acme", "support") == "orchestrator/acme/support/service-check"
    assert secret_name("globex", "soc", "edr") == "orchestrator/globex/soc/edr"
    acme = load_tenants().tenant("acme")
    assert (acme.name, acme.display_name, acme.aws_account_id, acme.internal) == (
        "acme",
        "ACME Corp",
        "111111111111",
        False,
    )
    # who receives the evidence packs (platform_evidence_packs); internal accounts have none
    assert acme.security_contact == "security@acme.example"
    assert load_tenants().tenant("secops").security_contact is None
    assert load_tenants().source == TENANTS_FILE


@pytest.mark.parametrize("tenant", ["initech", "", None, ["acme"]])
def test_unknown_tenant_has_no_account(tenant: Any):
    with pytest.raises(
        PolicyError,
        match=exactly(
            f"unknown tenant {tenant!r}: declared tenants in {TENANTS_FILE} are acme, globex, secops"
        ),
    ):
        tenant_account_id(tenant)


# --- broken files: every problem names file, key path and problem -----------------------------


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        pytest.param(
            _set("tenants/acme/aws_account_id", 111111111111),
            "tenants.acme.aws_account_id: 111111111111 is not a quoted 12-digit AWS account id",
            id="unquoted-account",
        ),
        pytest.param(
            _set("platform/aws_account_id", "12345"),
            "platform.aws_account_id: '12345' is not a quoted 12-digit AWS account id",
            id="short-platform-account",
        ),
        pytest.param(
            _set("tenants/globex/aws_account_id", "111111111111"),
            "tenants.globex.aws_account_id: 111111111111 is also the account of tenant 'acme'; "
            "every tenant needs an AWS account of its own",
            id="shared-account",
        ),
        pytest.param(
            _set("internal/secops/aws_account_id", "123456789012"),
            "internal.secops.aws_account_id: 123456789012 is the platform account; "
            "a tenant's account must be separate from the orchestrator's",
            id="platform-account",
        ),
        pytest.param(
            _set("internal/acme", {"display_name": "ACME again", "aws_account_id": "444444444444"}),
            "internal.acme: also declared under tenants",
            id="internal-and-customer",
        ),
        pytest.param(
            _set("tenants/acme/region", "eu-west-1"),
            "tenants.acme: Additional properties are not allowed ('region' was unexpected)",
            id="unknown-key",
        ),
        pytest.param(
            _set("tenants/acme/security_contact", "security@acme.example, attacker@evil.example"),
            "tenants.acme.security_contact: 'security@acme.example, attacker@evil.example' "
            "is not one email address",
            id="security-contact-two-addresses",
        ),
        pytest.param(
            _delete("tenants/globex/display_name"),
            "tenants.globex: 'display_name' is a required property",
            id="missing-display-name",
        ),
        pytest.param(
            _set("tenants/Initech", {"display_name": "Initech", "aws_account_id": "444444444444"}),
            f"tenants: 'Initech' does not match '{TENANT_PATTERN}'",
            id="bad-tenant-id",
        ),
        pytest.param(_delete("platform"), "<root>: 'platform' is a required property", id="no-platform"),
        pytest.param(_set("tenants", {}), "tenants: {} should be non-empty", id="no-customer"),
    ],
)
def test_invalid_tenants_name_file_key_and_problem(edit, problem, write_policy):
    document = yaml.safe_load(TENANTS_FILE.read_text(encoding="utf-8"))
    edit(document)
    path = write_policy(document, "tenants.yaml")

    with pytest.raises(PolicyError, match=exactly(f"invalid tenant policy:\n  {path}: {problem}")):
        load_tenants_file(path)


def test_internal_accounts_are_optional(write_policy):
    document = yaml.safe_load(TENANTS_FILE.read_text(encoding="utf-8"))
    del document["internal"]

    tenants = load_tenants_file(write_policy(document, "tenants.yaml"))

    assert (tenants.customers, tenants.internal) == (["acme", "globex"], [])


def test_every_problem_is_reported_at_once(write_policy):
    document = yaml.safe_load(TENANTS_FILE.read_text(encoding="utf-8"))
    document["tenants"]["acme"]["aws_account_id"] = "0111"
    document["tenants"]["globex"]["colour"] = "blue"
    path = write_policy(document, "tenants.yaml")

    with pytest.raises(PolicyError) as raised:
        load_tenants_file(path)

    assert str(raised.value).splitlines() == [
        "invalid tenant policy:",
        f"  {path}: tenants.acme.aws_account_id: '0111' is not a quoted 12-digit AWS account id",
        f"  {path}: tenants.globex: Additional properties are not allowed ('colour' was unexpected)",
    ]
