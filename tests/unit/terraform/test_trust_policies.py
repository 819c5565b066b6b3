"""The capability roles' trust policies, rendered from the module's HCL and evaluated statically.

No Terraform binary reaches these machines: the trust statements are read from
terraform/modules/capability-roles/main.tf (python-hcl2), their placeholders filled in the way
Terraform would (``var.tenant``, ``each.key``, ``local.trusted_principals`` from the map that
terraform/render_capabilities.py renders), and the resulting IAM document is evaluated for
``sts:AssumeRole`` + ``sts:TagSession`` by a small evaluator of the condition operators the module
uses (``StringEquals``, ``ForAllValues:StringEquals``). Whatever the evaluator does not know fails
the test rather than allowing.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import importlib.util
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import hcl2
import pytest
import yaml

from include.connectors.aws import assume_role_request
from include.connectors.context import RunContext
from include.policies.capabilities import CapabilityPolicy, load_capabilities, load_capabilities_file
from include.policies.loader import DEFAULT_QUEUE, Policy, load_domain_policy
from include.policies.tenants import load_tenants

TERRAFORM = Path(__file__).resolve().parents[3] / "terraform"
MODULE = TERRAFORM / "modules" / "capability-roles"
OPTIONS = hcl2.SerializationOptions(strip_string_quotes=True, explicit_blocks=False, with_comments=False)
PLATFORM = load_tenants().platform_account_id
TENANT = "acme"
PRINCIPAL_TEMPLATE = "arn:${local.partition}:iam::${var.platform_account_id}:role/${role}"


def render_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("render_capabilities", TERRAFORM / "render_capabilities.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


RENDER = render_module()


@functools.cache
def _parsed(text: str) -> dict[str, Any]:
    return hcl2.loads(text, serialization_options=OPTIONS)


def module_main() -> dict[str, Any]:
    """main.tf as python-hcl2 reads it: parsed once per text (the parse took ~0.13 s and the tests
    ask ~150 times, 19 of this module's 20 s), the file read each time; a fresh copy per caller."""
    return copy.deepcopy(_parsed((MODULE / "main.tf").read_text(encoding="utf-8")))


def trust_block() -> dict[str, Any]:
    (trust,) = [
        entry["aws_iam_policy_document"]["trust"]
        for entry in module_main()["data"]
        if "trust" in entry.get("aws_iam_policy_document", {})
    ]
    return trust


def worker_arn(role: str) -> str:
    return f"arn:aws:iam::{PLATFORM}:role/{role}"


def domain_worker(domain: str, domains: Policy | None = None) -> str:
    """The IAM role ARN a worker of ``domain`` runs with."""
    return worker_arn(RENDER.domain_worker_roles(domains or load_domain_policy())[domain])


def trust_document(
    capability: str, trusted_roles: dict[str, list[str]], external_id: str | None = None
) -> Any:
    """The module's trust policy for ``capability`` in tenant acme's account, as Terraform would render it."""
    (locals_,) = module_main()["locals"]
    values = {
        "${var.tenant}": [TENANT],
        "${each.key}": [capability],
        "${local.session_tag_keys}": locals_["session_tag_keys"],
        "${local.trusted_principals[each.key]}": [worker_arn(r) for r in trusted_roles.get(capability, [])],
    }

    def fill(value: Any) -> list[str]:
        if isinstance(value, str):
            return values[value]
        return [item for part in value for item in values.get(part, [part])]

    statements = []
    for block in trust_block()["statement"]:
        conditions = list(block["condition"])
        for dynamic in block.get("dynamic", []):
            assert dynamic["condition"]["for_each"] == "${var.external_id == null ? [] : [var.external_id]}"
            if external_id is not None:
                (content,) = dynamic["condition"]["content"]
                conditions.append({**content, "values": [external_id]})
        (principals,) = block["principals"]
        assert principals["type"] == "AWS"
        statement_conditions: dict[str, dict[str, list[str]]] = {}
        for condition in conditions:
            statement_conditions.setdefault(condition["test"], {})[condition["variable"]] = fill(
                condition["values"]
            )
        statements.append(
            {
                "Sid": block["sid"],
                "Effect": block["effect"],
                "Action": block["actions"],
                "Principal": {"AWS": fill(principals["identifiers"])},
                "Condition": statement_conditions,
            }
        )
    return {"Version": "2012-10-17", "Statement": statements}


def _condition_holds(test: str, key: str, wanted: list[str], context: dict[str, Any]) -> bool:
    if test == "StringEquals":
        return key in context and context[key] in wanted
    if test == "ForAllValues:StringEquals":
        return all(value in wanted for value in context.get(key, []))
    raise AssertionError(f"the evaluator does not know condition operator {test}")


def allows(document: Any, action: str, principal: str, tags: dict[str, str], external_id: str | None) -> bool:
    """Whether an Allow statement of ``document`` admits ``action`` by ``principal`` with these tags."""
    context: dict[str, Any] = {f"aws:RequestTag/{key}": value for key, value in tags.items()}
    context["aws:TagKeys"] = sorted(tags)
    if external_id is not None:
        context["sts:ExternalId"] = external_id
    for statement in document["Statement"]:
        assert statement["Effect"] == "Allow"  # a Deny would need precedence, which the module has none of
        if action in statement["Action"] and principal in statement["Principal"]["AWS"]:
            conditions = statement["Condition"]
            if all(
                _condition_holds(test, key, wanted, context)
                for test, entries in conditions.items()
                for key, wanted in entries.items()
            ):
                return True
    return False


def may_assume(document: Any, principal: str, tags: dict[str, str], external_id: str | None = None) -> bool:
    """AssumeRole with session tags needs both sts:AssumeRole and sts:TagSession to be allowed."""
    return allows(document, "sts:AssumeRole", principal, tags, external_id) and allows(
        document, "sts:TagSession", principal, tags, external_id
    )


def sent_tags(capability: str, tenant: str = TENANT) -> dict[str, str]:
    """The session tags the orchestrator sends (include/connectors/aws.py)."""
    run = RunContext(dag_id="d", run_id="r", task_id="t", tenant=tenant, correlation_id="c-1")
    return {tag["Key"]: tag["Value"] for tag in assume_role_request(capability, tenant, run)["Tags"]}


@pytest.fixture(scope="module")
def trusted() -> dict[str, list[str]]:
    return RENDER.trusted_worker_roles(load_capabilities(), load_domain_policy())


# --- the done-when line ---------------------------------------------------------------------------


def test_a_support_worker_cannot_assume_host_isolate(trusted: dict[str, list[str]]) -> None:
    document = trust_document("host-isolate", trusted)
    support = domain_worker("support")
    assert not may_assume(document, support, sent_tags("host-isolate"))
    assert may_assume(document, domain_worker("soc"), sent_tags("host-isolate"))
    assert document["Statement"][0]["Principal"]["AWS"] == [worker_arn("orchestrator-worker-soc")]


def test_each_capability_is_assumable_exactly_by_the_workers_of_its_domains(
    trusted: dict[str, list[str]],
) -> None:
    domains = load_domain_policy()
    granted_identities: dict[str, set[str]] = {}
    for name, capability in load_capabilities().capabilities.items():
        document = trust_document(name, trusted)
        granted_identities[name] = {domain_worker(d) for d in capability.domains}
        for domain in domains.domains:
            worker = domain_worker(domain)
            assert may_assume(document, worker, sent_tags(name)) == (worker in granted_identities[name]), (
                name,
                domain,
            )
    assert granted_identities["host-isolate"] == {worker_arn("orchestrator-worker-soc")}
    assert len(granted_identities) >= 11  # every declared capability was evaluated


def test_domains_with_a_queue_of_their_own_reach_only_the_capabilities_granted_to_them(
    trusted: dict[str, list[str]],
) -> None:
    """A worker identity is per queue: on its own queue a domain's identity is its alone."""
    domains = load_domain_policy()
    own_queue = [d.name for d in domains.domains.values() if d.queue != DEFAULT_QUEUE]
    assert "soc" in own_queue  # every domain given a queue of its own is checked the same way
    for name, capability in load_capabilities().capabilities.items():
        document = trust_document(name, trusted)
        for domain in own_queue:
            assert may_assume(document, domain_worker(domain), sent_tags(name)) == (
                domain in capability.domains
            )


@pytest.mark.parametrize(
    ("tags", "principal_role"),
    [
        pytest.param(
            {"tenant": "globex", "capability": "host-isolate", "correlation_id": "c"},
            "soc",
            id="other-tenant",
        ),
        pytest.param(
            {"tenant": TENANT, "capability": "host-inspect", "correlation_id": "c"}, "soc", id="other-cap"
        ),
        pytest.param({"capability": "host-isolate", "correlation_id": "c"}, "soc", id="no-tenant-tag"),
        pytest.param({"tenant": TENANT, "correlation_id": "c"}, "soc", id="no-capability-tag"),
        pytest.param(
            {"tenant": TENANT, "capability": "host-isolate", "correlation_id": "c", "domain": "soc"},
            "soc",
            id="extra-tag-key",
        ),
        pytest.param(
            {"tenant": TENANT, "capability": "host-isolate", "correlation_id": "c"}, "default", id="default"
        ),
    ],
)
def test_session_tags_are_constrained(
    tags: dict[str, str], principal_role: str, trusted: dict[str, list[str]]
) -> None:
    document = trust_document("host-isolate", trusted)
    assert not may_assume(document, worker_arn(f"orchestrator-worker-{principal_role}"), tags)


def test_the_tags_the_orchestrator_sends_are_exactly_the_allowed_keys(trusted: dict[str, list[str]]) -> None:
    (locals_,) = module_main()["locals"]
    assert sorted(sent_tags("ticket-create")) == locals_["session_tag_keys"]
    document = trust_document("ticket-create", trusted)
    assert may_assume(document, domain_worker("support"), sent_tags("ticket-create"))
    assert not may_assume(document, domain_worker("support"), sent_tags("ticket-create", tenant="globex"))


def test_external_id_when_set_is_required(trusted: dict[str, list[str]]) -> None:
    document = trust_document("ticket-create", trusted, external_id="ext-1")
    soc = domain_worker("soc")
    assert may_assume(document, soc, sent_tags("ticket-create"), external_id="ext-1")
    assert not may_assume(document, soc, sent_tags("ticket-create"))
    assert not may_assume(document, soc, sent_tags("ticket-create"), external_id="ext-2")


def test_no_platform_role_and_no_account_root_is_trusted(trusted: dict[str, list[str]]) -> None:
    for name in load_capabilities().capabilities:
        principals = {p for s in trust_document(name, trusted)["Statement"] for p in s["Principal"]["AWS"]}
        assert principals, name
        assert all(
            re.fullmatch(rf"arn:aws:iam::{PLATFORM}:role/orchestrator-worker-[a-z][a-z0-9-]*", p)
            for p in principals
        )


# --- the module's HCL ----------------------------------------------------------------------------


def test_trust_principals_are_the_rendered_worker_roles_in_the_platform_account() -> None:
    (locals_,) = module_main()["locals"]
    principals = locals_["trusted_principals"]
    assert "lookup(var.trusted_worker_roles, name, [])" in principals
    assert PRINCIPAL_TEMPLATE in principals
    for block in trust_block()["statement"]:
        assert block["principals"] == [
            {"type": "AWS", "identifiers": "${local.trusted_principals[each.key]}"}
        ]
    (role,) = [
        entry["aws_iam_role"]["capability"] for entry in module_main()["resource"] if "aws_iam_role" in entry
    ]
    (lifecycle,) = role["lifecycle"]
    conditions = [p["condition"] for p in lifecycle["precondition"]]
    assert conditions == [
        "${length(local.trusted_principals[each.key]) > 0}",
        "${var.platform_account_id != local.account_id}",
    ]


def test_module_variables_refuse_anything_but_worker_roles_and_an_account_id() -> None:
    variables = {
        name: body
        for entry in hcl2.loads((MODULE / "variables.tf").read_text(), serialization_options=OPTIONS)[
            "variable"
        ]
        for name, body in entry.items()
    }
    assert "platform_role_arn" not in variables
    (role_check,) = variables["trusted_worker_roles"]["validation"]
    (pattern,) = re.findall(r'regex\("([^"]+)", role\)', role_check["condition"])
    for bad in ("orchestrator-platform", "admin", "orchestrator-worker-", "orchestrator-worker-Soc"):
        assert not re.fullmatch(pattern, bad), bad
    assert re.fullmatch(pattern, "orchestrator-worker-soc")
    (account_check,) = variables["platform_account_id"]["validation"]
    assert account_check["condition"] == '${can(regex("^[0-9]{12}$", var.platform_account_id))}'


# --- rendering any capability and any queue layout -------------------------------------------------


def _with_capability(tmp_path: Path, name: str, domains: list[str]) -> CapabilityPolicy:
    source = Path(load_capabilities().source)
    document = yaml.safe_load(source.read_text(encoding="utf-8"))
    document["capabilities"][name] = {
        "description": "Sign audit checkpoints with the platform's signing key.",
        "domains": domains,
        "privileged": False,
        "statements": [
            {
                "sid": "SignCheckpoints",
                "actions": ["kms:Sign"],
                "resources": ["arn:aws:kms:{region}:{account_id}:alias/orchestrator-{tenant}-audit-seal"],
            }
        ],
    }
    path = tmp_path / "capabilities.yaml"
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    return load_capabilities_file(path, domains=list(load_domain_policy().domains))


def test_a_new_capability_is_rendered_with_the_identities_of_its_domains(tmp_path: Path) -> None:
    domains = load_domain_policy()
    policy = _with_capability(tmp_path, "audit-seal-test", ["platform"])
    trusted = RENDER.trusted_worker_roles(policy, domains)
    # The platform domain has a queue (and a worker set) of its own: only its worker can reach it.
    assert trusted["audit-seal-test"] == ["orchestrator-worker-platform"]
    document = trust_document("audit-seal-test", trusted)
    tags = {"tenant": TENANT, "capability": "audit-seal-test", "correlation_id": "c-1"}
    assert may_assume(document, domain_worker("platform", domains), tags)
    assert not may_assume(document, domain_worker("support", domains), tags)
    assert not may_assume(document, domain_worker("soc", domains), tags)

    # A domain without a queue of its own shares the default set's identity.
    shared = dataclasses.replace(
        domains,
        domains={
            **domains.domains,
            "platform": dataclasses.replace(domains.domains["platform"], queue=DEFAULT_QUEUE),
        },
    )
    assert RENDER.trusted_worker_roles(policy, shared)["audit-seal-test"] == ["orchestrator-worker-default"]


def test_only_the_platform_worker_may_reach_the_checkpoint_signer() -> None:
    trusted = RENDER.trusted_worker_roles(load_capabilities(), load_domain_policy())
    assert trusted["audit-seal"] == ["orchestrator-worker-platform"]


def test_render_writes_both_maps_for_every_capability() -> None:
    import json

    rendered = json.loads(RENDER.render(load_capabilities(), load_domain_policy()))
    assert sorted(rendered) == ["capabilities", "trusted_worker_roles"]
    assert sorted(rendered["trusted_worker_roles"]) == sorted(rendered["capabilities"])
    assert rendered["trusted_worker_roles"]["host-isolate"] == ["orchestrator-worker-soc"]
    assert rendered["trusted_worker_roles"]["ticket-create"] == [
        "orchestrator-worker-default",
        "orchestrator-worker-soc",
    ]


def test_example_trusts_the_rendered_roles_in_the_platform_account() -> None:
    variables = {
        name: body
        for entry in hcl2.loads(
            (TERRAFORM / "examples" / "capability-roles" / "variables.tf").read_text(),
            serialization_options=OPTIONS,
        )["variable"]
        for name, body in entry.items()
    }
    assert variables["platform_account_id"]["default"] == PLATFORM
    trusted = RENDER.trusted_worker_roles(load_capabilities(), load_domain_policy())
    example = variables["trusted_worker_roles"]["default"]
    assert example == {name: trusted[name] for name in variables["capabilities"]["default"]}
