"""Load and validate the capability policy (``include/policies/capabilities.yaml``) and render IAM documents.

SEC-1 asks for least privilege per workflow step. A step does not get "the tenant's AWS credentials";
it gets one *capability* (``ticket-create``, ``terraform-apply``, ...), which is an IAM role
``orchestrator-<capability>`` in the tenant's own account whose inline policy is rendered from this
file. Keeping the grants as data (not code) means a pull request shows exactly which permission
changes, and the rules below are checked in CI before any role is touched.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from include.policies.loader import POLICY_DIR, PolicyError, PolicyFile, load_domain_policy

CAPABILITIES_FILE = POLICY_DIR / "capabilities.yaml"

ROLE_PREFIX = "orchestrator-"
SECRET_NAMESPACE = "orchestrator"  # noqa: S105 - a name prefix, not a value
PLACEHOLDERS = ("account_id", "region", "tenant")
READ_ONLY_VERBS = ("Get", "List", "Describe")
WILDCARD = "*"

_TENANT = re.compile(r"^[a-z][a-z0-9-]{1,31}$")
_ACCOUNT_ID = re.compile(r"^[0-9]{12}$")
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-[0-9]$")


@dataclass(frozen=True)
class Statement:
    sid: str
    actions: tuple[str, ...]
    resources: tuple[str, ...]
    wildcard_reason: str | None = None


@dataclass(frozen=True)
class Capability:
    name: str
    description: str
    domains: tuple[str, ...]
    privileged: bool
    read_only: bool
    statements: tuple[Statement, ...]

    @property
    def actions(self) -> frozenset[str]:
        """Every action the capability grants, over all statements."""
        return frozenset(action for statement in self.statements for action in statement.actions)

    @property
    def role_name(self) -> str:
        return role_name(self.name)

    def secret_prefix(self, tenant: str) -> str:
        """Where this capability's secrets live in the tenant's account: ``orchestrator/<tenant>/<name>/``."""
        return f"{SECRET_NAMESPACE}/{tenant}/{self.name}/"


@dataclass(frozen=True)
class CapabilityPolicy:
    source: Path
    capabilities: dict[str, Capability]

    def capability(self, name: str) -> Capability:
        """A declared capability.

        :param name: the capability's name (``ticket-create``, ...).
        :raises PolicyError: the capability is not declared, naming every declared one.
        """
        try:
            return self.capabilities[name]
        except KeyError:
            declared = ", ".join(sorted(self.capabilities))
            raise PolicyError(
                f"unknown capability {name!r}: declared capabilities in {self.source} are {declared}"
            ) from None


def role_name(capability: str) -> str:
    """IAM role name of a capability; the same in every tenant account.

    :param capability: the capability's name.
    """
    return f"{ROLE_PREFIX}{capability}"


def _placeholders(template: str) -> list[str]:
    return [field for _, field, _, _ in string.Formatter().parse(template) if field is not None]


# Resource types whose ARNs have no account field (AWS Service Authorization Reference): IAM
# Identity Center's users, groups and memberships are ``arn:aws:identitystore:::user/<id>``. Every
# identitystore action also needs the store, ``arn:aws:identitystore::<account>:identitystore/<id>``,
# so such a resource is allowed only next to an account-scoped resource of the same service in the
# same statement: the store ARN is what keeps the statement inside the tenant's account.
ACCOUNTLESS_RESOURCES = {"identitystore": ("user/", "group/", "membership/")}


def _service(resource: str) -> str:
    return resource.split(":")[2] if resource.count(":") >= 5 else ""


def _accountless_allowed(resource: str, scoped_services: set[str]) -> bool:
    service = _service(resource)
    kinds = ACCOUNTLESS_RESOURCES.get(service, ())
    tail = resource.split(":", 5)[5] if resource.count(":") >= 5 else ""
    return (
        service in scoped_services
        and resource.startswith(f"arn:aws:{service}:::")
        and any(tail.startswith(kind) for kind in kinds)
    )


def _check_resource(resource: str, where: str, scoped_services: frozenset[str] = frozenset()) -> list[str]:
    if resource == WILDCARD:
        return []
    try:
        fields = _placeholders(resource)
    except ValueError as exc:
        return [f"{where}: {resource!r}: {exc}"]
    unknown = [f for f in fields if f not in PLACEHOLDERS]
    if unknown:
        known = ", ".join("{" + p + "}" for p in PLACEHOLDERS)
        return [f"{where}: {{{unknown[0]}}} is not a known placeholder (use {known})"]
    if "tenant" not in fields and "account_id" not in fields:
        if _accountless_allowed(resource, set(scoped_services)):
            return []
        return [
            f"{where}: {resource!r} is not scoped to the tenant: it must name {{tenant}} or {{account_id}}"
        ]
    return []


def _check_statement(statement: dict[str, Any], where: str) -> list[str]:
    resources = statement["resources"]
    reason = statement.get("wildcard_reason")
    if WILDCARD in resources and resources != [WILDCARD]:
        return [f"{where}.resources: '*' must be the statement's only resource"]
    if resources == [WILDCARD] and reason is None:
        return [f"{where}.resources: '*' needs a wildcard_reason saying why the actions cannot be scoped"]
    if resources != [WILDCARD] and reason is not None:
        return [f"{where}.wildcard_reason: given, but the statement's resources are not '*'"]
    scoped = frozenset(_service(r) for r in resources if "{account_id}" in r or "{tenant}" in r)
    problems = []
    for index, resource in enumerate(resources):
        problems += _check_resource(resource, f"{where}.resources.{index}", scoped)
    return problems


def _check_capability(name: str, raw: dict[str, Any], domains: set[str]) -> list[str]:
    where = f"capabilities.{name}"
    problems = []
    for index, domain in enumerate(raw["domains"]):
        if domain not in domains:
            declared = ", ".join(sorted(domains))
            problems.append(f"{where}.domains.{index}: unknown domain {domain!r} (declared: {declared})")
    seen: set[str] = set()
    for index, statement in enumerate(raw["statements"]):
        if statement["sid"] in seen:
            problems.append(f"{where}.statements.{index}.sid: {statement['sid']!r} is used twice")
        seen.add(statement["sid"])
        problems += _check_statement(statement, f"{where}.statements.{index}")
    if raw.get("read_only", False):
        for index, statement in enumerate(raw["statements"]):
            for position, action in enumerate(statement["actions"]):
                if not action.split(":", 1)[1].startswith(READ_ONLY_VERBS):
                    problems.append(
                        f"{where}.statements.{index}.actions.{position}: {action!r} is not a Get, List or "
                        "Describe action, but the capability is read_only"
                    )
    return problems


def _rules(document: dict[str, Any], *, domains: Iterable[str]) -> list[str]:
    known = set(domains)
    messages = []
    for name, raw in document["capabilities"].items():
        messages += _check_capability(name, raw, known)
    return messages


def _build(document: dict[str, Any], source: Path, **_: object) -> CapabilityPolicy:
    capabilities = {
        name: Capability(
            name=name,
            description=raw["description"],
            domains=tuple(raw["domains"]),
            privileged=raw["privileged"],
            read_only=raw.get("read_only", False),
            statements=tuple(
                Statement(
                    sid=s["sid"],
                    actions=tuple(s["actions"]),
                    resources=tuple(s["resources"]),
                    wildcard_reason=s.get("wildcard_reason"),
                )
                for s in raw["statements"]
            ),
        )
        for name, raw in document["capabilities"].items()
    }
    return CapabilityPolicy(source=source, capabilities=capabilities)


CAPABILITIES = PolicyFile("capabilities", "capability policy", build=_build, rules=_rules)


def load_capabilities_file(path: Path, domains: Iterable[str] | None = None) -> CapabilityPolicy:
    """Load and validate one capability file.

    :param path: the file to load.
    :param domains: the domains a capability may be granted to; by default the domains declared in
        the deployed ``domains.yaml``.
    :raises PolicyError: the file is unreadable or invalid; the message lists every problem.
    """
    known = list(domains) if domains is not None else list(load_domain_policy().domains)
    return CAPABILITIES.load(path, domains=known)


@cache
def load_capabilities() -> CapabilityPolicy:
    """The deployed capability policy (``capabilities.yaml``), loaded once per process."""
    return load_capabilities_file(CAPABILITIES_FILE)


def get_capability(name: str) -> Capability:
    """A declared capability of the deployed policy.

    :param name: the capability's name (``ticket-create``, ...).
    :raises PolicyError: the capability is not declared.
    """
    return load_capabilities().capability(name)


def _require(pattern: re.Pattern[str], value: str, what: str) -> str:
    # The values end up inside ARNs: a tenant named "*" must never widen a policy.
    if not isinstance(value, str) or not pattern.match(value):
        raise ValueError(f"{value!r} is not a valid {what}")
    return value


def _as_capability(capability: str | Capability) -> Capability:
    return capability if isinstance(capability, Capability) else get_capability(capability)


def iam_policy_document(
    capability: str | Capability, tenant: str, account_id: str, region: str
) -> dict[str, Any]:
    """The least-privilege identity policy of ``orchestrator-<capability>`` in ``tenant``'s account.

    :param capability: the capability, or its name.
    :param tenant: the tenant id, checked before it goes into an ARN.
    :param account_id: the tenant's AWS account id.
    :param region: the AWS region of the resources.
    :raises ValueError: a tenant id, account id or region of the wrong form.
    """
    cap = _as_capability(capability)
    values = {
        "tenant": _require(_TENANT, tenant, "tenant id"),
        "account_id": _require(_ACCOUNT_ID, account_id, "AWS account id"),
        "region": _require(_REGION, region, "AWS region"),
    }
    statements = []
    for statement in cap.statements:
        resources = [resource.format(**values) for resource in statement.resources]
        statements.append(
            {
                "Sid": statement.sid,
                "Effect": "Allow",
                "Action": sorted(statement.actions),
                "Resource": WILDCARD if resources == [WILDCARD] else resources,
            }
        )
    return {"Version": "2012-10-17", "Statement": statements}


def trust_policy_document(
    capability: str | Capability, tenant: str, platform_account_id: str
) -> dict[str, Any]:
    """Who may assume the role: only the platform account, tagging the session with tenant and capability.

    The tag conditions make a session carry the right tenant/capability tags in real AWS (moto does
    not evaluate conditions; tests check this document statically).

    :param capability: the capability, or its name.
    :param tenant: the tenant id the session must be tagged with.
    :param platform_account_id: the orchestrator's AWS account, the only trusted principal.
    :raises ValueError: a tenant id or account id of the wrong form.
    """
    cap = _as_capability(capability)
    principal = f"arn:aws:iam::{_require(_ACCOUNT_ID, platform_account_id, 'AWS account id')}:root"
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "PlatformAssumesWithTags",
                "Effect": "Allow",
                "Principal": {"AWS": principal},
                "Action": ["sts:AssumeRole", "sts:TagSession"],
                "Condition": {
                    "StringEquals": {
                        "aws:RequestTag/tenant": _require(_TENANT, tenant, "tenant id"),
                        "aws:RequestTag/capability": cap.name,
                    }
                },
            }
        ],
    }
