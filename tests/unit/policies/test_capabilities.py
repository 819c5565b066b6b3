"""Capability policy: least-privilege documents per capability and tenant, and exact errors for broken files.

moto does not enforce resource-scoped IAM, so least privilege is proven here, statically, on the
rendered policy documents (the integration tests prove the account isolation against moto).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from include.policies.capabilities import (
    CAPABILITIES_FILE,
    READ_ONLY_VERBS,
    iam_policy_document,
    load_capabilities,
    load_capabilities_file,
    trust_policy_document,
)
from include.policies.loader import PolicyError
from include.policies.tenants import platform_account_id, tenant_account_id, tenant_ids
from tests.support.documents import delete_at as _delete
from tests.support.documents import set_at as _set

REGION = "eu-west-1"
RAW = yaml.safe_load(CAPABILITIES_FILE.read_text(encoding="utf-8"))
CAPABILITIES = sorted(RAW["capabilities"])
PRIVILEGED = {
    "terraform-apply",
    "identity-admin",
    "identity-disable",
    "host-isolate",
    "perimeter-block",
    "invoice-post",
    "entra-user-disable",
    "entra-user-enable",
    "device-isolate",
    "device-release",
}
INLINE_POLICY_LIMIT = 10_240  # characters, AWS's limit for a role's inline policies


def exactly(message: str) -> str:
    return f"^{re.escape(message)}$"


def declared_actions(capability: str) -> set[str]:
    """The actions as written in the YAML file: independent of the loader under test."""
    return {a for s in RAW["capabilities"][capability]["statements"] for a in s["actions"]}


def rendered(capability: str, tenant: str) -> dict[str, Any]:
    return iam_policy_document(capability, tenant, tenant_account_id(tenant), REGION)


def document_actions(document: dict[str, Any]) -> set[str]:
    return {a for s in document["Statement"] for a in s["Action"]}


def document_resources(document: dict[str, Any]) -> list[str]:
    resources: list[str] = []
    for statement in document["Statement"]:
        value = statement["Resource"]
        resources += [value] if isinstance(value, str) else value
    return resources


# --- the real policy ------------------------------------------------------------------------


def test_real_policy_declares_the_capabilities():
    policy = load_capabilities()

    assert set(policy.capabilities) == {
        "ticket-create",
        "ticket-update",
        "terraform-plan",
        "terraform-apply",
        "audit-seal",
        "compliance-export-readonly",
        "identity-admin",
        "identity-disable",
        "identity-inspect",
        "host-inspect",
        "host-isolate",
        "perimeter-inspect",
        "perimeter-block",
        "invoice-post",
        "entra-user-inspect",
        "entra-user-disable",
        "entra-user-enable",
        "device-inspect",
        "device-isolate",
        "device-release",
        "incident-writeback",
    }
    assert {n for n, c in policy.capabilities.items() if c.privileged} == PRIVILEGED
    assert policy.capability("ticket-create").role_name == "orchestrator-ticket-create"
    assert policy.capability("ticket-create").secret_prefix("acme") == "orchestrator/acme/ticket-create/"


@pytest.mark.parametrize("capability", CAPABILITIES)
@pytest.mark.parametrize("tenant", tenant_ids())
def test_document_grants_exactly_the_declared_actions(capability: str, tenant: str):
    document = rendered(capability, tenant)

    assert document["Version"] == "2012-10-17"
    assert 1 <= len(document["Statement"]) <= 8
    assert all(s["Effect"] == "Allow" for s in document["Statement"])
    assert document_actions(document) == declared_actions(capability)
    assert document_actions(document) == load_capabilities().capability(capability).actions
    assert not [a for a in document_actions(document) if "*" in a or "?" in a]
    assert len(json.dumps(document, separators=(",", ":"))) < INLINE_POLICY_LIMIT


@pytest.mark.parametrize("capability", CAPABILITIES)
@pytest.mark.parametrize("tenant", tenant_ids())
def test_document_is_scoped_to_its_tenant(capability: str, tenant: str):
    document = rendered(capability, tenant)
    text = json.dumps(document)

    for other in set(tenant_ids()) - {tenant}:
        assert other not in text
        assert tenant_account_id(other) not in text
    assert platform_account_id() not in text
    for statement in document["Statement"]:
        resources = (
            statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        )
        for resource in resources:
            if resource == "*":
                continue
            if resource.startswith("arn:aws:identitystore:::"):
                # identitystore users/groups/memberships have no account in their ARN: the
                # statement must name the tenant's store too (every identitystore action needs it).
                store = f"arn:aws:identitystore::{tenant_account_id(tenant)}:identitystore/"
                assert any(r.startswith(store) for r in resources), statement
                continue
            assert (
                tenant_account_id(tenant) in resource
                or f"-{tenant}-" in resource
                or f"/{tenant}/" in resource
            )


def test_accountless_resource_needs_the_account_scoped_store_in_its_statement():
    from include.policies.capabilities import _check_statement

    alone = {
        "sid": "X",
        "actions": ["identitystore:CreateUser"],
        "resources": ["arn:aws:identitystore:::user/*"],
    }
    assert "is not scoped to the tenant" in _check_statement(alone, "capabilities.x")[0]
    other_service = {
        **alone,
        "resources": ["arn:aws:iam::{account_id}:user/*", "arn:aws:identitystore:::user/*"],
    }
    assert _check_statement(other_service, "capabilities.x")
    scoped = {
        **alone,
        "resources": [
            "arn:aws:identitystore::{account_id}:identitystore/*",
            "arn:aws:identitystore:::user/*",
        ],
    }
    assert _check_statement(scoped, "capabilities.x") == []
    not_a_kind = {
        **alone,
        "resources": ["arn:aws:identitystore::{account_id}:identitystore/*", "arn:aws:identitystore:::*"],
    }
    assert _check_statement(not_a_kind, "capabilities.x")


@pytest.mark.parametrize("capability", CAPABILITIES)
def test_wildcard_resource_only_where_the_policy_gives_a_reason(capability: str):
    document = rendered(capability, "acme")

    for raw, statement in zip(
        RAW["capabilities"][capability]["statements"], document["Statement"], strict=True
    ):
        assert statement["Sid"] == raw["sid"]
        if statement["Resource"] == "*":
            assert len(raw["wildcard_reason"]) >= 20
            assert all(a.split(":")[1].startswith("Describe") for a in statement["Action"])
        else:
            assert "*" not in statement["Resource"]
            assert "wildcard_reason" not in raw


def test_read_only_capabilities_only_get_list_describe():
    read_only = [c for c in load_capabilities().capabilities.values() if c.read_only]

    assert {c.name for c in read_only} == {
        "compliance-export-readonly",
        "device-inspect",
        "entra-user-inspect",
        "host-inspect",
        "identity-inspect",
        "perimeter-inspect",
        "terraform-plan",
    }
    for capability in read_only:
        verbs = {a.split(":")[1] for a in document_actions(rendered(capability.name, "acme"))}
        assert verbs, capability.name
        assert all(v.startswith(READ_ONLY_VERBS) for v in verbs), capability.name


def test_compliance_export_is_read_only():
    actions = document_actions(rendered("compliance-export-readonly", "globex"))

    assert actions == {
        "securityhub:GetFindings",
        "config:DescribeComplianceByConfigRule",
        "config:GetComplianceDetailsByConfigRule",
        "s3:GetObject",
        "s3:ListBucket",
    }


def test_terraform_plan_reads_state_and_apply_writes_it():
    plan = rendered("terraform-plan", "acme")
    apply = rendered("terraform-apply", "acme")
    state_objects = "arn:aws:s3:::orchestrator-acme-tfstate/*"

    plan_state = {a for s in plan["Statement"] if state_objects in s["Resource"] for a in s["Action"]}
    apply_state = {a for s in apply["Statement"] if state_objects in s["Resource"] for a in s["Action"]}
    assert plan_state == {"s3:GetObject"}
    assert apply_state == {"s3:GetObject", "s3:PutObject", "s3:DeleteObject"}
    assert not {a for a in document_actions(plan) if a.split(":")[1].startswith(("Create", "Delete", "Put"))}
    assert "iam:PassRole" not in document_actions(apply)
    assert document_resources(apply).count("arn:aws:iam::111111111111:role/tenant/*") == 1


def test_ticket_create_reads_only_its_own_secret_prefix():
    document = rendered("ticket-create", "acme")

    assert document == {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "ReadTicketingCredential",
                "Effect": "Allow",
                "Action": ["secretsmanager:DescribeSecret", "secretsmanager:GetSecretValue"],
                "Resource": [
                    "arn:aws:secretsmanager:eu-west-1:111111111111:secret:orchestrator/acme/ticket-create/*"
                ],
            }
        ],
    }


def test_trust_policy_trusts_only_the_platform_account_with_session_tags():
    document = trust_policy_document("host-isolate", "globex", "123456789012")

    assert document["Statement"] == [
        {
            "Sid": "PlatformAssumesWithTags",
            "Effect": "Allow",
            "Principal": {"AWS": "arn:aws:iam::123456789012:root"},
            "Action": ["sts:AssumeRole", "sts:TagSession"],
            "Condition": {
                "StringEquals": {
                    "aws:RequestTag/tenant": "globex",
                    "aws:RequestTag/capability": "host-isolate",
                }
            },
        }
    ]


@pytest.mark.parametrize(
    ("tenant", "account_id", "region", "problem"),
    [
        pytest.param("*", "111111111111", REGION, "'*' is not a valid tenant id", id="wildcard-tenant"),
        pytest.param("acme/*", "111111111111", REGION, "'acme/*' is not a valid tenant id", id="path-tenant"),
        pytest.param("acme", "1111", REGION, "'1111' is not a valid AWS account id", id="short-account"),
        pytest.param("acme", "*", REGION, "'*' is not a valid AWS account id", id="wildcard-account"),
        pytest.param("acme", "111111111111", "*", "'*' is not a valid AWS region", id="wildcard-region"),
    ],
)
def test_render_refuses_values_that_would_widen_the_policy(tenant, account_id, region, problem):
    with pytest.raises(ValueError, match=exactly(problem)):
        iam_policy_document("ticket-create", tenant, account_id, region)


def test_unknown_capability_lists_declared_ones():
    with pytest.raises(
        PolicyError,
        match=exactly(
            f"unknown capability 'ticket-delete': declared capabilities in {CAPABILITIES_FILE} are "
            + ", ".join(CAPABILITIES)
        ),
    ):
        iam_policy_document("ticket-delete", "acme", "111111111111", REGION)


# --- broken capability files: every problem names file, key path and problem -----------------


def _rename(old: str, new: str) -> Callable[[dict[str, Any]], None]:
    def edit(document: dict[str, Any]) -> None:
        document["capabilities"][new] = document["capabilities"].pop(old)

    return edit


TC = "capabilities/ticket-create/statements/0"
TP = "capabilities/terraform-plan/statements"
ACTION_PATTERN = "^[a-z0-9-]+:[A-Z][A-Za-z0-9]+$"


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        pytest.param(
            _set(f"{TC}/actions", ["*"]),
            f"capabilities.ticket-create.statements.0.actions.0: '*' does not match '{ACTION_PATTERN}'",
            id="wildcard-action",
        ),
        pytest.param(
            _set(f"{TC}/actions", ["secretsmanager:*"]),
            "capabilities.ticket-create.statements.0.actions.0: 'secretsmanager:*' does not match "
            f"'{ACTION_PATTERN}'",
            id="service-wildcard-action",
        ),
        pytest.param(
            _set(f"{TC}/actions", ["secretsmanager:Get*"]),
            "capabilities.ticket-create.statements.0.actions.0: 'secretsmanager:Get*' does not match "
            f"'{ACTION_PATTERN}'",
            id="prefix-wildcard-action",
        ),
        pytest.param(
            _set(f"{TC}/resources", ["*"]),
            "capabilities.ticket-create.statements.0.resources: '*' needs a wildcard_reason saying why the "
            "actions cannot be scoped",
            id="wildcard-resource-without-reason",
        ),
        pytest.param(
            _set(f"{TC}/wildcard_reason", "because it is simpler for everyone"),
            "capabilities.ticket-create.statements.0.wildcard_reason: given, but the statement's resources "
            "are not '*'",
            id="reason-without-wildcard",
        ),
        pytest.param(
            _set(f"{TP}/4/resources", ["*", "arn:aws:ec2:{region}:{account_id}:vpc/*"]),
            "capabilities.terraform-plan.statements.4.resources: '*' must be the statement's only resource",
            id="wildcard-mixed-with-arns",
        ),
        pytest.param(
            _set(f"{TC}/resources/0", "arn:aws:s3:::shared-bucket/*"),
            "capabilities.ticket-create.statements.0.resources.0: 'arn:aws:s3:::shared-bucket/*' is not "
            "scoped to the tenant: it must name {tenant} or {account_id}",
            id="resource-not-tenant-scoped",
        ),
        pytest.param(
            _set(f"{TC}/resources/0", "arn:aws:secretsmanager:{region}:{acount_id}:secret:x/{tenant}/*"),
            "capabilities.ticket-create.statements.0.resources.0: {acount_id} is not a known placeholder "
            "(use {account_id}, {region}, {tenant})",
            id="unknown-placeholder",
        ),
        pytest.param(
            _set(f"{TC}/resources/0", "arn:aws:s3:::orchestrator-{tenant-evidence/*"),
            "capabilities.ticket-create.statements.0.resources.0: "
            "'arn:aws:s3:::orchestrator-{tenant-evidence/*': expected '}' before end of string",
            id="unbalanced-brace",
        ),
        pytest.param(
            _set(f"{TC}/resources/0", "orchestrator/{tenant}/ticket-create/*"),
            "capabilities.ticket-create.statements.0.resources.0: "
            "'orchestrator/{tenant}/ticket-create/*' does not match '^(\\\\*|arn:aws:[a-z0-9-]+:[^\\\\s]*)$'",
            id="resource-not-an-arn",
        ),
        pytest.param(
            _set("capabilities/ticket-create/domains", ["support", "marketing"]),
            "capabilities.ticket-create.domains.1: unknown domain 'marketing' "
            "(declared: hr, implementation, invoicing, platform, soc, support)",
            id="unknown-domain",
        ),
        pytest.param(
            _set(
                "capabilities/compliance-export-readonly/statements/2/actions",
                ["s3:GetObject", "s3:PutObject"],
            ),
            "capabilities.compliance-export-readonly.statements.2.actions.1: "
            "'s3:PutObject' is not a Get, List or Describe action, but the capability is read_only",
            id="read-only-with-write-action",
        ),
        pytest.param(
            _set(f"{TP}/1/sid", "ReadTerraformState"),
            "capabilities.terraform-plan.statements.1.sid: 'ReadTerraformState' is used twice",
            id="duplicate-sid",
        ),
        pytest.param(
            _delete("capabilities/ticket-create/privileged"),
            "capabilities.ticket-create: 'privileged' is a required property",
            id="missing-privileged",
        ),
        pytest.param(
            _set("capabilities/host-isolate/privileged", "yes"),
            "capabilities.host-isolate.privileged: 'yes' is not of type 'boolean'",
            id="privileged-not-boolean",
        ),
        pytest.param(
            _set(f"{TC}/actions", []),
            "capabilities.ticket-create.statements.0.actions: [] should be non-empty",
            id="no-actions",
        ),
        pytest.param(
            _set(f"{TC}/effect", "Deny"),
            "capabilities.ticket-create.statements.0: Additional properties are not allowed "
            "('effect' was unexpected)",
            id="unknown-statement-key",
        ),
        pytest.param(
            _rename("ticket-create", "Ticket_Create"),
            "capabilities: 'Ticket_Create' does not match '^[a-z][a-z0-9-]{1,49}[a-z0-9]$'",
            id="bad-capability-name",
        ),
        pytest.param(
            _set("version", 2),
            "version: 1 was expected",
            id="unknown-version",
        ),
    ],
)
def test_invalid_capability_policy_names_file_key_and_problem(edit, problem, write_policy):
    document = yaml.safe_load(CAPABILITIES_FILE.read_text(encoding="utf-8"))
    edit(document)
    path = write_policy(document, "capabilities.yaml")

    with pytest.raises(PolicyError, match=exactly(f"invalid capability policy:\n  {path}: {problem}")):
        load_capabilities_file(path)


def test_every_problem_is_reported_at_once(write_policy):
    document = yaml.safe_load(CAPABILITIES_FILE.read_text(encoding="utf-8"))
    _set(f"{TC}/resources", ["*"])(document)
    _set("capabilities/identity-admin/domains", ["payroll"])(document)
    path = write_policy(document, "capabilities.yaml")

    with pytest.raises(PolicyError) as raised:
        load_capabilities_file(path)

    assert str(raised.value).splitlines() == [
        "invalid capability policy:",
        f"  {path}: capabilities.ticket-create.statements.0.resources: "
        "'*' needs a wildcard_reason saying why the actions cannot be scoped",
        f"  {path}: capabilities.identity-admin.domains.0: unknown domain 'payroll' "
        "(declared: hr, implementation, invoicing, platform, soc, support)",
    ]


def test_not_yaml_and_missing_file(write_policy, tmp_path: Path):
    path = write_policy("capabilities: [unclosed\n", "capabilities.yaml")
    with pytest.raises(PolicyError, match=r": line 2 column 1: not valid YAML: "):
        load_capabilities_file(path)

    missing = tmp_path / "nowhere.yaml"
    with pytest.raises(
        PolicyError, match=exactly(f"{missing}: cannot read policy file: No such file or directory")
    ):
        load_capabilities_file(missing)
