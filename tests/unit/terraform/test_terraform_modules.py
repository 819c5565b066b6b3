"""Static checks of ``terraform/``: no Terraform binary reaches the development machines or CI.

The modules are parsed with python-hcl2 and checked for the conventions (terraform-aws-modules
layout, typed and described variables, described outputs, pinned versions) and for the security
properties the modules promise: no Allow statement grants a wildcard action, Object Lock in
COMPLIANCE mode, rotating KMS keys, a permissions boundary on every capability role, tags that
carry the correlation id. checkov (``make checkov``) covers the generic AWS rules on top.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hcl2
import pytest

from include.policies.capabilities import load_capabilities, role_name

TERRAFORM = Path(__file__).resolve().parents[3] / "terraform"
MODULES = ("audit-bucket", "capability-roles", "kms", "tenant-provisioning", "tenant-secrets")
MODULE_FILES = ("main.tf", "variables.tf", "outputs.tf", "versions.tf")
OPTIONS = hcl2.SerializationOptions(strip_string_quotes=True, explicit_blocks=False, with_comments=False)
AWS_PROVIDER = re.compile(r"^~> 5\.\d+$")
JSONENCODE = re.compile(r"^\$\{jsonencode\((?P<body>.*)\)\}$", re.DOTALL)
TOP_LEVEL_INDEX = re.compile(r"^(\w+)\[\d+\]\.")
# Taggable resource types the modules create; sub-resources of buckets, aliases and inline
# policies take no tags.
TAGGABLE = (
    "aws_dynamodb_table",
    "aws_iam_policy",
    "aws_iam_role",
    "aws_kms_key",
    "aws_s3_bucket",
    "aws_secretsmanager_secret",
)
DIRECTORIES = [f"modules/{m}" for m in MODULES] + [f"examples/{m}" for m in MODULES]


def parse_text(text: str) -> dict[str, Any]:
    return hcl2.loads(text, serialization_options=OPTIONS)


def parse(path: Path) -> dict[str, Any]:
    return parse_text(path.read_text(encoding="utf-8"))


def module_dir(name: str) -> Path:
    return TERRAFORM / "modules" / name


def example_dir(name: str) -> Path:
    return TERRAFORM / "examples" / name


def tf_files(directory: Path = TERRAFORM) -> list[Path]:
    return sorted(directory.rglob("*.tf"))


def blocks(document: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    """Blocks of one kind by address: ``type.name`` for resources and data sources, else ``name``."""
    found: dict[str, dict[str, Any]] = {}
    for entry in document.get(kind, []):
        for label, body in entry.items():
            if kind in ("resource", "data"):
                for name, inner in body.items():
                    found[f"{label}.{name}"] = inner
            else:
                found[label] = body
    return found


def directory_blocks(directory: Path, kind: str) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(directory.glob("*.tf")):
        found.update(blocks(parse(path), kind))
    return found


def literal_actions(value: Any) -> list[str]:
    """Literal actions of a statement; an interpolation (``${...}``) is checked where it is built."""
    values = value if isinstance(value, list) else [value]
    return [v for v in values if isinstance(v, str) and not v.startswith("${")]


def policy_statements(node: Any, where: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every IAM statement in parsed HCL: policy-document blocks, jsonencode() bodies, capability maps."""
    if isinstance(node, dict):
        if node.keys() & {"actions", "not_actions", "Action", "NotAction"}:
            yield where, node
        for key, value in node.items():
            yield from policy_statements(value, f"{where}.{key}" if where else key)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from policy_statements(value, f"{where}[{index}]")
    elif isinstance(node, str) and (match := JSONENCODE.match(node)):
        yield from policy_statements(parse_text(f"body = {match['body']}\n")["body"], where)


def wildcard_problems(document: dict[str, Any], source: str) -> list[str]:
    """One message per Allow statement that grants "*", a service-wide "svc:*" or any other wildcard action.

    Deny statements may use wildcards: they only take permissions away (the boundary's "iam:*").
    """
    problems = []
    for where, statement in policy_statements(document):
        address = TOP_LEVEL_INDEX.sub(r"\1.", where)  # data[0].aws_x.name -> data.aws_x.name
        location = f"{source}: {address}"
        if statement.get("effect", statement.get("Effect", "Allow")) == "Deny":
            continue
        if "not_actions" in statement or "NotAction" in statement:
            problems.append(f"{location}: Allow statement with NotAction grants every other action")
        for action in literal_actions(statement.get("actions", statement.get("Action", []))):
            if "*" in action:
                problems.append(f"{location}: Allow statement grants wildcard action {action!r}")
    return problems


def convention_problems(document: dict[str, Any], file_name: str) -> list[str]:
    """Variables typed, described and in variables.tf; outputs described and in outputs.tf."""
    problems = []
    for name, body in blocks(document, "variable").items():
        if file_name != "variables.tf":
            problems.append(f"{file_name}: variable {name} belongs in variables.tf")
        problems += [
            f"{file_name}: variable {name} has no {key}"
            for key in ("type", "description")
            if not body.get(key)
        ]
    for name, body in blocks(document, "output").items():
        if file_name != "outputs.tf":
            problems.append(f"{file_name}: output {name} belongs in outputs.tf")
        if not body.get("description"):
            problems.append(f"{file_name}: output {name} has no description")
    return problems


def rendered_capabilities() -> dict[str, list[dict[str, Any]]]:
    spec = importlib.util.spec_from_file_location("render_capabilities", TERRAFORM / "render_capabilities.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return json.loads(module.render(load_capabilities()))["capabilities"]


def regex_of(condition: str) -> re.Pattern[str]:
    """The pattern of the single ``can(regex("...", action))`` in a validation condition."""
    patterns = re.findall(r'regex\("((?:[^"\\]|\\.)*)", action\)', condition)
    assert len(patterns) == 1, condition
    return re.compile(patterns[0].encode().decode("unicode_escape"))


# --- conventions ---------------------------------------------------------------------------------


def test_every_module_folder_is_covered_by_these_tests() -> None:
    assert sorted(p.name for p in (TERRAFORM / "modules").iterdir() if p.is_dir()) == list(MODULES)


@pytest.mark.parametrize("module", MODULES)
def test_module_has_the_conventional_files_and_an_example(module: str) -> None:
    missing = [name for name in MODULE_FILES if not (module_dir(module) / name).is_file()]
    assert missing == [], f"modules/{module} lacks {missing}"
    example = example_dir(module)
    assert (example / "main.tf").is_file()
    assert (example / "versions.tf").is_file()
    sources = [body["source"] for body in directory_blocks(example, "module").values()]
    assert f"../../modules/{module}" in sources


@pytest.mark.parametrize("directory", DIRECTORIES)
def test_variables_are_typed_and_described_and_outputs_described(directory: str) -> None:
    problems = []
    for path in sorted((TERRAFORM / directory).glob("*.tf")):
        problems += convention_problems(parse(path), path.name)
    assert problems == []
    assert directory_blocks(TERRAFORM / directory, "output"), f"{directory} has no outputs"


def test_convention_check_names_each_missing_type_and_description() -> None:
    document = parse_text(
        """
variable "untyped" {
  description = "No type."
}
variable "undescribed" {
  type = string
}
output "bare" {
  value = 1
}
"""
    )
    assert convention_problems(document, "main.tf") == [
        "main.tf: variable untyped belongs in variables.tf",
        "main.tf: variable untyped has no type",
        "main.tf: variable undescribed belongs in variables.tf",
        "main.tf: variable undescribed has no description",
        "main.tf: output bare belongs in outputs.tf",
        "main.tf: output bare has no description",
    ]


@pytest.mark.parametrize("directory", DIRECTORIES)
def test_versions_pin_terraform_and_the_aws_provider(directory: str) -> None:
    (terraform,) = parse(TERRAFORM / directory / "versions.tf")["terraform"]
    assert terraform["required_version"] == ">= 1.6"
    (providers,) = terraform["required_providers"]
    assert providers["aws"]["source"] == "hashicorp/aws"
    assert AWS_PROVIDER.match(providers["aws"]["version"]), providers["aws"]["version"]


# --- IAM ----------------------------------------------------------------------------------------


def test_no_allow_statement_anywhere_grants_a_wildcard_action() -> None:
    statements = 0
    problems: list[str] = []
    for path in tf_files():
        document = parse(path)
        statements += sum(1 for _ in policy_statements(document))
        problems += wildcard_problems(document, str(path.relative_to(TERRAFORM)))
    assert statements > 20  # the walk does find the statements (policy documents and capability maps)
    assert problems == []


def test_wildcard_check_finds_policy_documents_jsonencode_and_not_action() -> None:
    document = parse_text(
        """
data "aws_iam_policy_document" "bad" {
  statement {
    actions   = ["s3:*"]
    resources = ["*"]
  }
  statement {
    effect    = "Deny"
    actions   = ["iam:*"]
    resources = ["*"]
  }
  statement {
    not_actions = ["iam:PassRole"]
    resources   = ["*"]
  }
}
resource "aws_iam_policy" "bad" {
  policy = jsonencode({
    Version   = "2012-10-17"
    Statement = [
      { Effect = "Allow", Action = "*", Resource = "*" },
      { Effect = "Allow", Action = ["ec2:Describe*"], Resource = "*" },
    ]
  })
}
"""
    )
    assert wildcard_problems(document, "bad.tf") == [
        "bad.tf: data.aws_iam_policy_document.bad.statement[0]: Allow statement grants wildcard action "
        "'s3:*'",
        "bad.tf: data.aws_iam_policy_document.bad.statement[2]: Allow statement with NotAction grants every "
        "other action",
        "bad.tf: resource.aws_iam_policy.bad.policy.Statement[0]: Allow statement grants wildcard action '*'",
        "bad.tf: resource.aws_iam_policy.bad.policy.Statement[1]: Allow statement grants wildcard action "
        "'ec2:Describe*'",
    ]


def capabilities_variable() -> dict[str, Any]:
    return blocks(parse(module_dir("capability-roles") / "variables.tf"), "variable")["capabilities"]


def test_capability_roles_refuse_wildcard_actions_in_their_input() -> None:
    validations = {v["error_message"]: v["condition"] for v in capabilities_variable()["validation"]}
    wildcard = validations[
        "capabilities: an action must be exact (service:Action); "
        '"*" and wildcards such as "s3:*" are refused.'
    ]
    assert '!strcontains(action, "*")' in wildcard
    shape = regex_of(
        validations[
            "capabilities: every statement needs an alphanumeric sid, at least one action and one resource, "
            "and actions of the form service:Action."
        ]
    )
    for action in ("*", "s3:*", "ec2:Describe*", "iam:*Role", "s3:GetObject "):
        assert not shape.match(action), action
    actions = {a for statements in rendered_capabilities().values() for s in statements for a in s["actions"]}
    assert len(actions) > 10
    assert [a for a in sorted(actions) if not shape.match(a)] == []


def test_capability_roles_attach_the_permissions_boundary_to_every_role() -> None:
    main = parse(module_dir("capability-roles") / "main.tf")
    resources = blocks(main, "resource")
    role = resources["aws_iam_role.capability"]
    assert role["for_each"] == "${var.capabilities}"
    assert role["permissions_boundary"] == "${aws_iam_policy.boundary.arn}"
    assert role["name"] == role_name("${each.key}")  # the orchestrator assumes orchestrator-<capability>
    assert role["path"] == "/"
    assert resources["aws_iam_policy.boundary"]["policy"] == "${data.aws_iam_policy_document.boundary.json}"
    assert resources["aws_iam_role_policy.capability"]["role"] == "${aws_iam_role.capability[each.key].id}"


def boundary_statements() -> dict[str, dict[str, Any]]:
    boundary = blocks(parse(module_dir("capability-roles") / "main.tf"), "data")[
        "aws_iam_policy_document.boundary"
    ]
    statements = {s["sid"]: s for s in boundary["statement"]}
    for dynamic in boundary["dynamic"]:
        (content,) = dynamic["statement"]["content"]
        statements[content["sid"]] = content
    return statements


def test_permissions_boundary_denies_what_no_capability_may_ever_do() -> None:
    statements = boundary_statements()
    denied = {a for s in statements.values() if s["effect"] == "Deny" for a in s["actions"]}
    assert {"iam:*", "organizations:*", "account:*"} <= denied
    assert {"cloudtrail:StopLogging", "cloudtrail:DeleteTrail", "kms:ScheduleKeyDeletion"} <= denied
    assert {"kms:DisableKeyRotation", "iam:PassRole", "s3:DeleteObjectVersion"} <= denied
    assert statements["DenyIamOutsideManagedPaths"]["actions"] == ["iam:*"]
    assert "not_resources" in statements["DenyIamOutsideManagedPaths"]
    assert statements["AllowDeclaredActionsOnTenantResources"]["actions"] == "${local.scoped_actions}"
    assert statements["AllowDeclaredUnscopableActions"]["actions"] == "${local.unscopable_actions}"


def test_permissions_boundary_leaves_every_declared_capability_working() -> None:
    """A Deny hitting a declared action, or an Allow missing a declared resource, would break a capability."""
    statements = boundary_statements()
    explicitly_denied = {
        a
        for s in statements.values()
        if s["effect"] == "Deny" and s.get("resources") == ["*"]
        for a in s["actions"]
    }
    locals_ = parse(module_dir("capability-roles") / "main.tf")["locals"][0]
    values = {
        "${local.partition}": "aws",
        "${local.account_id}": "111111111111",
        "${var.tenant}": "acme",
    }

    def fill(pattern: str) -> str:
        for placeholder, value in values.items():
            pattern = pattern.replace(placeholder, value)
        return pattern

    allowed = [fill(p) for p in locals_["tenant_resources"]]
    iam_paths = blocks(parse(module_dir("capability-roles") / "variables.tf"), "variable")[
        "iam_resource_paths"
    ]
    problems = []
    for name, capability_statements in rendered_capabilities().items():
        for statement in capability_statements:
            problems += [
                f"{name}: {a} is denied by the boundary"
                for a in statement["actions"]
                if a in explicitly_denied
            ]
            for template in statement["resources"]:
                resource = template.format(tenant="acme", account_id="111111111111", region="eu-west-1")
                if resource != "*" and not any(fnmatch.fnmatchcase(resource, p) for p in allowed):
                    problems.append(f"{name}: {resource} is outside the boundary's tenant resources")
                iam_actions = [a for a in statement["actions"] if a.startswith("iam:")]
                suffix = resource.split(":", 5)[-1]
                if iam_actions and not any(fnmatch.fnmatchcase(suffix, p) for p in iam_paths["default"]):
                    problems.append(f"{name}: {resource} is outside iam_resource_paths")
    assert problems == []


# Trust policies (who may assume a capability role, with which session tags): test_trust_policies.py.


# --- storage, keys, secrets ----------------------------------------------------------------------


def test_audit_bucket_object_lock_is_compliance_mode_with_the_retention_variable() -> None:
    resources = directory_blocks(module_dir("audit-bucket"), "resource")
    assert resources["aws_s3_bucket.this"]["object_lock_enabled"] is True
    (rule,) = resources["aws_s3_bucket_object_lock_configuration.this"]["rule"]
    assert rule["default_retention"] == [{"mode": "COMPLIANCE", "days": "${var.retention_days}"}]
    (versioning,) = resources["aws_s3_bucket_versioning.this"]["versioning_configuration"]
    assert versioning["status"] == "Enabled"
    (sse,) = resources["aws_s3_bucket_server_side_encryption_configuration.this"]["rule"]
    assert sse["apply_server_side_encryption_by_default"] == [
        {"sse_algorithm": "aws:kms", "kms_master_key_id": "${module.kms.key_arn}"}
    ]
    block = resources["aws_s3_bucket_public_access_block.this"]
    assert [block[k] for k in ("block_public_acls", "block_public_policy", "ignore_public_acls")] == [
        True
    ] * 3
    assert block["restrict_public_buckets"] is True
    assert resources["aws_s3_bucket_logging.this"]["target_bucket"] == "${var.log_bucket_name}"


def test_audit_bucket_policy_denies_plain_http_and_version_deletion() -> None:
    policy = directory_blocks(module_dir("audit-bucket"), "data")["aws_iam_policy_document.bucket"]
    statements = {s["sid"]: s for s in policy["statement"]}
    tls = statements["DenyInsecureTransport"]
    assert tls["effect"] == "Deny"
    assert tls["condition"] == [{"test": "Bool", "variable": "aws:SecureTransport", "values": ["false"]}]
    deletion = statements["DenyObjectVersionDeletion"]
    assert deletion["effect"] == "Deny"
    assert "s3:DeleteObjectVersion" in deletion["actions"]
    assert deletion["principals"] == [{"type": "*", "identifiers": ["*"]}]


def test_every_kms_key_rotates_and_every_module_uses_the_kms_module() -> None:
    keys = {}
    for path in tf_files():
        for address, body in blocks(parse(path), "resource").items():
            if address.startswith("aws_kms_key."):
                keys[f"{path.relative_to(TERRAFORM)}:{address}"] = body
    assert list(keys) == ["modules/kms/main.tf:aws_kms_key.this"]  # one key resource, reused everywhere
    assert [name for name, body in keys.items() if body.get("enable_key_rotation") is not True] == []
    for module in ("audit-bucket", "tenant-provisioning", "tenant-secrets"):
        sources = {body["source"] for body in directory_blocks(module_dir(module), "module").values()}
        assert "../kms" in sources, module


def test_secret_values_never_reach_terraform() -> None:
    for path in tf_files():
        text = path.read_text(encoding="utf-8")
        assert "aws_secretsmanager_secret_version" not in text, path
        assert "secret_string" not in text, path
    secret = directory_blocks(module_dir("tenant-secrets"), "resource")["aws_secretsmanager_secret.this"]
    assert secret["name"] == "${local.prefix}/${each.key}"
    assert secret["kms_key_id"] == "${module.kms.key_arn}"
    (locals_,) = parse(module_dir("tenant-secrets") / "main.tf")["locals"]
    assert locals_["prefix"] == "orchestrator/${var.tenant}"


# --- tags ---------------------------------------------------------------------------------------


def test_tenant_provisioning_tags_every_resource_with_the_correlation_id() -> None:
    variable = directory_blocks(module_dir("tenant-provisioning"), "variable")["correlation_id"]
    assert variable["type"] == "string"
    assert variable["description"].startswith("Correlation id of the orchestrator run")
    main = parse(module_dir("tenant-provisioning") / "main.tf")
    (locals_,) = main["locals"]
    assert locals_["tags"] == "${merge(var.tags, {tenant = var.tenant, correlation_id = var.correlation_id})}"
    untagged = [
        address
        for address, body in blocks(main, "resource").items()
        if address.split(".")[0] in TAGGABLE and body.get("tags") != "${local.tags}"
    ]
    assert untagged == []
    assert {name: body.get("tags") for name, body in blocks(main, "module").items()} == {
        "state_kms": "${local.tags}",
        "secrets": "${local.tags}",
    }


@pytest.mark.parametrize("module", MODULES)
def test_module_resources_merge_the_tags_variable(module: str) -> None:
    problems = []
    for address, body in directory_blocks(module_dir(module), "resource").items():
        if address.split(".")[0] in TAGGABLE and not (
            "var.tags" in str(body.get("tags")) or "local.tags" in str(body.get("tags"))
        ):
            problems.append(f"{address} does not carry the tags variable")
    assert problems == []


@pytest.mark.parametrize("module", MODULES)
def test_example_provider_tags_everything_with_the_correlation_id(module: str) -> None:
    (provider,) = parse(example_dir(module) / "main.tf")["provider"]
    (default_tags,) = provider["aws"]["default_tags"]
    assert default_tags["tags"]["correlation_id"] == "${var.correlation_id}"
