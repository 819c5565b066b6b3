"""Deploy files against the tenancy: no platform identity lives in a tenant's AWS account.

Every 12-digit account id in the deploy files (docker/, terraform/, .github/, docs/deployment.md)
is checked against include/policies/tenants.yaml:

- a platform identity (the ECR registry, the Airflow log bucket, the components' IRSA roles, the
  worker roles: every IAM role that is not a capability role) must be in the platform account;
- a capability role (``orchestrator-<capability>``) must be in a tenant's (or an internal)
  account, never in the platform's;
- any other account id must be one tenants.yaml declares.

The Helm values also carry the worker identity of each Celery queue (the roles the capability
roles trust, terraform/render_capabilities.py) and the database roles by Secret name.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from include.policies.capabilities import load_capabilities, role_name
from include.policies.loader import DEFAULT_QUEUE, load_domain_policy
from include.policies.tenants import TenantPolicy, load_tenants

ROOT = Path(__file__).resolve().parents[3]
HELM_VALUES = ROOT / "docker" / "helm" / "values.yaml"
DEPLOY_FOLDERS = ("docker", "terraform", ".github")
DEPLOY_DOCS = ("docs/deployment.md",)
TEXT_SUFFIXES = {".yaml", ".yml", ".tf", ".json", ".md", ".env", ".sh", ".py", ".txt", ""}
ACCOUNT = re.compile(r"(?<![0-9A-Za-z])\d{12}(?![0-9A-Za-z])")
ROLE_ARN = re.compile(r"arn:aws[a-z-]*:iam::(?P<account>\d{12}):role/(?:[\w+=,.@-]+/)*(?P<name>[\w+=,.@-]+)")
PLATFORM_RESOURCES = (
    ("ECR registry", re.compile(r"(?P<account>\d{12})\.dkr\.ecr\.")),
    ("log bucket", re.compile(r"orchestrator-airflow-logs-(?P<account>\d{12})")),
)
IRSA = "eks.amazonaws.com/role-arn"
DB_SECRETS = {
    "metadata": "orchestrator-db-metadata",
    "ratelimit": "orchestrator-db-ratelimit",
    "audit_writer": "orchestrator-db-audit-writer",
    "audit_reader": "orchestrator-db-audit-reader",
}


def deploy_files() -> list[Path]:
    files = [ROOT / name for name in DEPLOY_DOCS]
    for folder in DEPLOY_FOLDERS:
        files += [
            path
            for path in sorted((ROOT / folder).rglob("*"))
            if path.is_file() and path.suffix in TEXT_SUFFIXES and ".terraform" not in path.parts
        ]
    return files


def _owner(account: str, tenants: TenantPolicy) -> str | None:
    return next(
        (name for name, tenant in sorted(tenants.tenants.items()) if tenant.aws_account_id == account), None
    )


def _platform_problem(what: str, account: str, tenants: TenantPolicy) -> str | None:
    if account == tenants.platform_account_id:
        return None
    owner = _owner(account, tenants)
    where = f"the account of tenant {owner!r}" if owner else "not the platform account"
    return f"{what} is in account {account}, {where} (platform account: {tenants.platform_account_id})"


def _role_problem(match: re.Match[str], tenants: TenantPolicy, capability_roles: set[str]) -> str | None:
    account, name = match["account"], match["name"]
    if name not in capability_roles:
        return _platform_problem(f"platform identity role {name}", account, tenants)
    if _owner(account, tenants) is None:
        return f"capability role {name} is in account {account}, not a tenant's account"
    return None


def _line_problems(line: str, tenants: TenantPolicy, capability_roles: set[str]) -> list[str]:
    problems = []
    classified: set[int] = set()
    for match in ROLE_ARN.finditer(line):
        classified.add(match.start("account"))
        problems.append(_role_problem(match, tenants, capability_roles))
    for what, pattern in PLATFORM_RESOURCES:
        for match in pattern.finditer(line):
            classified.add(match.start("account"))
            problems.append(_platform_problem(what, match["account"], tenants))
    declared = {tenants.platform_account_id} | {t.aws_account_id for t in tenants.tenants.values()}
    problems += [
        f"account {match.group()} is not declared in tenants.yaml"
        for match in ACCOUNT.finditer(line)
        if match.start() not in classified and match.group() not in declared
    ]
    return [problem for problem in problems if problem]


def account_problems(text: str, source: str, tenants: TenantPolicy, capabilities: list[str]) -> list[str]:
    """One message per account id in ``text`` that breaks the tenancy rules (see the module docstring)."""
    capability_roles = {role_name(name) for name in capabilities}
    return [
        f"{source}:{number}: {problem}"
        for number, line in enumerate(text.splitlines(), start=1)
        for problem in _line_problems(line, tenants, capability_roles)
    ]


@pytest.fixture(scope="module")
def tenants() -> TenantPolicy:
    return load_tenants()


@pytest.fixture(scope="module")
def capabilities() -> list[str]:
    return sorted(load_capabilities().capabilities)


@pytest.fixture(scope="module")
def helm() -> dict[str, Any]:
    return yaml.safe_load(HELM_VALUES.read_text(encoding="utf-8"))


def render_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "render_capabilities", ROOT / "terraform" / "render_capabilities.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- accounts ------------------------------------------------------------------------------------


def test_no_deploy_file_names_a_tenant_account_for_a_platform_identity(
    tenants: TenantPolicy, capabilities: list[str]
) -> None:
    problems: list[str] = []
    seen = 0
    for path in deploy_files():
        text = path.read_text(encoding="utf-8")
        seen += len(ACCOUNT.findall(text))
        problems += account_problems(text, str(path.relative_to(ROOT)), tenants, capabilities)
    assert problems == []
    assert seen >= 15  # the scan does reach the values file and the Terraform examples


def test_the_scan_covers_the_helm_values_and_the_terraform_examples() -> None:
    files = {str(path.relative_to(ROOT)) for path in deploy_files()}
    assert {
        "docker/helm/values.yaml",
        "terraform/examples/capability-roles/variables.tf",
        "terraform/examples/audit-bucket/main.tf",
        ".github/workflows/ci.yml",
        "docs/deployment.md",
    } <= files


ACME = "111111111111"
PLATFORM = "123456789012"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        pytest.param(
            f"eks.amazonaws.com/role-arn: arn:aws:iam::{ACME}:role/orchestrator-worker",
            f"values.yaml:1: platform identity role orchestrator-worker is in account {ACME}, the account of "
            f"tenant 'acme' (platform account: {PLATFORM})",
            id="irsa-role-in-a-tenant-account",
        ),
        pytest.param(
            f"repository: {ACME}.dkr.ecr.eu-west-1.amazonaws.com/orchestrator-airflow",
            f"values.yaml:1: ECR registry is in account {ACME}, the account of tenant 'acme' "
            f"(platform account: {PLATFORM})",
            id="ecr-in-a-tenant-account",
        ),
        pytest.param(
            "remote_base_log_folder: s3://orchestrator-airflow-logs-333333333333/logs",
            "values.yaml:1: log bucket is in account 333333333333, the account of tenant 'secops' "
            f"(platform account: {PLATFORM})",
            id="log-bucket-in-an-internal-account",
        ),
        pytest.param(
            "role = arn:aws:iam::444444444444:role/orchestrator-worker-soc",
            "values.yaml:1: platform identity role orchestrator-worker-soc is in account 444444444444, "
            f"not the platform account (platform account: {PLATFORM})",
            id="worker-role-in-an-unknown-account",
        ),
        pytest.param(
            f'reader_arns = ["arn:aws:iam::{PLATFORM}:role/orchestrator-host-isolate"]',
            f"values.yaml:1: capability role orchestrator-host-isolate is in account {PLATFORM}, "
            "not a tenant's account",
            id="capability-role-in-the-platform-account",
        ),
        pytest.param(
            "account_id = 999999999999",
            "values.yaml:1: account 999999999999 is not declared in tenants.yaml",
            id="undeclared-account",
        ),
    ],
)
def test_account_check_names_each_misplaced_identity(
    line: str, expected: str, tenants: TenantPolicy, capabilities: list[str]
) -> None:
    assert account_problems(line, "values.yaml", tenants, capabilities) == [expected]


@pytest.mark.parametrize(
    "line",
    [
        pytest.param(
            f"arn:aws:iam::{PLATFORM}:role/orchestrator-worker-default", id="worker-role-on-platform"
        ),
        pytest.param(f"arn:aws:iam::{ACME}:role/orchestrator-ticket-create", id="capability-role-in-tenant"),
        pytest.param(
            f"the platform account {PLATFORM}, tenant acme's {ACME}", id="declared-accounts-in-prose"
        ),
        pytest.param(
            "sha256 0566a24f5332098b15716ebc394be503f4094acba5ba529bf5eb0698ed5e2a90", id="hex-digest"
        ),
    ],
)
def test_account_check_accepts_identities_in_their_accounts(
    line: str, tenants: TenantPolicy, capabilities: list[str]
) -> None:
    assert account_problems(line, "values.yaml", tenants, capabilities) == []


def test_the_platform_account_is_none_of_the_tenants(tenants: TenantPolicy) -> None:
    assert tenants.platform_account_id == PLATFORM
    assert PLATFORM not in {t.aws_account_id for t in tenants.tenants.values()}
    assert tenants.tenant("acme").aws_account_id == ACME


# --- worker identities in the Helm values ---------------------------------------------------------


def _irsa_role(service_account: dict[str, Any]) -> str:
    match = ROLE_ARN.fullmatch(service_account["annotations"][IRSA])
    assert match, service_account
    assert match["account"] == PLATFORM
    return match["name"]


def _set_queues(worker_set: dict[str, Any]) -> list[str]:
    command = " ".join(worker_set["args"])
    (queues,) = re.findall(r"--queues (\S+)", command)
    return queues.split(",")


def test_every_celery_queue_has_a_worker_set_with_its_own_identity(helm: dict[str, Any]) -> None:
    """A capability role trusts the identity of a queue; only the worker set of that queue carries it."""
    render = render_module()
    celery = helm["workers"]["celery"]
    identities = {DEFAULT_QUEUE: _irsa_role(celery["serviceAccount"])}
    for worker_set in celery["sets"]:
        (queue,) = _set_queues(worker_set)  # one queue per set: one identity per queue
        identities[queue] = _irsa_role(worker_set["serviceAccount"])
    queues = {domain.queue for domain in load_domain_policy().domains.values()} | {DEFAULT_QUEUE}
    assert identities == {queue: render.worker_role_name(queue) for queue in sorted(queues)}
    assert identities["soc"] == "orchestrator-worker-soc"


def test_components_have_their_own_platform_roles(helm: dict[str, Any]) -> None:
    roles = {
        c: _irsa_role(helm[c]["serviceAccount"])
        for c in ("scheduler", "apiServer", "triggerer", "dagProcessor")
    }
    assert roles == {
        "scheduler": "orchestrator-scheduler",
        "apiServer": "orchestrator-api-server",
        "triggerer": "orchestrator-triggerer",
        "dagProcessor": "orchestrator-dag-processor",
    }
    trusted = {
        role
        for roles in render_module().trusted_worker_roles(load_capabilities(), load_domain_policy()).values()
        for role in roles
    }
    assert trusted.isdisjoint(roles.values())  # no component but a worker may assume a capability


# --- database roles by Secret name ----------------------------------------------------------------


def _secret_env(section: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item["valueFrom"]["secretKeyRef"]["name"] for item in section.get("env", [])}


def test_each_component_gets_only_the_database_roles_it_uses(helm: dict[str, Any]) -> None:
    assert helm["data"]["metadataSecretName"] == DB_SECRETS["metadata"]
    assert helm["data"]["resultBackendSecretName"] == DB_SECRETS["metadata"]
    writer = {"AIRFLOW_CONN_AUDIT_STORE": DB_SECRETS["audit_writer"]}
    ratelimit = {"AIRFLOW_CONN_RATELIMIT_STORE": DB_SECRETS["ratelimit"]}
    assert {
        c: _secret_env(helm[c]) for c in ("scheduler", "apiServer", "triggerer", "dagProcessor", "workers")
    } == {
        "scheduler": writer,
        "apiServer": {**writer, "AUDIT_STORE_DSN": DB_SECRETS["audit_reader"]},
        "triggerer": {**writer, **ratelimit},
        "dagProcessor": writer,
        "workers": {**writer, **ratelimit},
    }
    for section in ("scheduler", "apiServer", "triggerer", "dagProcessor", "workers"):
        for item in helm[section]["env"]:
            assert item["valueFrom"]["secretKeyRef"]["key"] == "connection"
    text = HELM_VALUES.read_text(encoding="utf-8")
    assert "orchestrator-metadata-db" not in text
    assert "orch_admin" not in text
    assert "audit_owner`, NOLOGIN" in text  # named only to say no component gets it
