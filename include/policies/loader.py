"""Load and validate the domain policy (``include/policies/domains.yaml``).

One loader for the whole project: DAGs, the pool/role sync and the policy checks all read the
policy through :func:`load_domain_policy`, so a value means the same thing everywhere.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import timedelta
from functools import cache
from pathlib import Path
from typing import Any, Literal

import yaml
from jsonschema import Draft202012Validator

POLICY_DIR = Path(__file__).resolve().parent
DOMAINS_FILE = POLICY_DIR / "domains.yaml"
DOMAINS_SCHEMA = POLICY_DIR / "schema" / "domains.schema.json"

_DURATION = re.compile(r"^([1-9][0-9]*)([smhd])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}

WorkflowKind = Literal["fast_path", "infrastructure_change"]


class PolicyError(ValueError):
    """The policy file is missing, unreadable or invalid; the message names file, key path and problem."""


def parse_duration(text: str) -> timedelta:
    """Turn ``"15m"`` into ``timedelta(minutes=15)``; anything else raises ``ValueError``."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a duration like 90s, 15m, 4h or 2d")
    return timedelta(seconds=int(match.group(1)) * _UNIT_SECONDS[match.group(2)])


@dataclass(frozen=True)
class ApprovalPolicy:
    approvers_role: str
    timeout: timedelta
    remind_after: timedelta
    escalate_after: timedelta
    escalate_to: tuple[str, ...]
    on_timeout: Literal["reject"]


# Airflow's [operators] default_queue; every worker listens on it.
DEFAULT_QUEUE = "default"


@dataclass(frozen=True)
class DomainPolicy:
    name: str
    description: str
    owner: str
    pool_slots: int
    priority_weight: int
    max_active_runs: int
    max_active_tasks: int
    sla: dict[WorkflowKind, timedelta]
    approval: ApprovalPolicy
    alert_emails: tuple[str, ...]
    operator_role: str
    approver_role: str
    # The Celery queue of the domain's tasks in the distributed setup (ignored by LocalExecutor).
    queue: str = DEFAULT_QUEUE

    @property
    def pool(self) -> str:
        """The Airflow pool every task of this domain runs in."""
        return self.name

    @property
    def tag(self) -> str:
        """The DAG tag that marks a DAG as belonging to this domain."""
        return f"domain:{self.name}"


@dataclass(frozen=True)
class Defaults:
    retries: int
    retry_delay: timedelta
    max_retry_delay: timedelta


@dataclass(frozen=True)
class Policy:
    source: Path
    defaults: Defaults
    domains: dict[str, DomainPolicy]

    def domain(self, name: str) -> DomainPolicy:
        try:
            return self.domains[name]
        except KeyError:
            declared = ", ".join(sorted(self.domains))
            raise PolicyError(
                f"unknown domain {name!r}: declared domains in {self.source} are {declared}"
            ) from None

    def domain_for_pool(self, pool: str) -> DomainPolicy | None:
        return next((d for d in self.domains.values() if d.pool == pool), None)


def _key_path(parts: Any) -> str:
    return ".".join(str(p) for p in parts) or "<root>"


# libyaml's loader when PyYAML was built with it (the wheels are): the same safe subset. Every task
# process parses its DAG file, which reads the policy files: measured on the four of them, 61 ms
# with the pure-Python loader, 5 ms with libyaml (11 % of task CPU in a py-spy profile before).
_SAFE_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_yaml(text: str) -> Any:
    """``yaml.safe_load`` with the fastest safe loader available."""
    return yaml.load(text, Loader=_SAFE_LOADER)  # noqa: S506 - a SafeLoader


def _read_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(f"{path}: cannot read policy file: {exc.strerror}") from None
    try:
        return load_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f": line {mark.line + 1} column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise PolicyError(f"{path}{where}: not valid YAML: {problem}") from None


def validate_document(document: Any, source: Path) -> list[str]:
    """Every schema and consistency problem of a policy document, one message each."""
    schema = json.loads(DOMAINS_SCHEMA.read_text(encoding="utf-8"))
    validator = Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(document), key=lambda e: [str(p) for p in e.absolute_path])
    messages = [f"{source}: {_key_path(e.absolute_path)}: {e.message}" for e in errors]
    if messages:
        return messages
    # Rules a JSON schema cannot express: the escalation ladder must climb in order.
    for name, domain in document["domains"].items():
        approval = domain["approval"]
        remind, escalate, timeout = (
            parse_duration(approval[k]) for k in ("remind_after", "escalate_after", "timeout")
        )
        if not remind < escalate < timeout:
            messages.append(
                f"{source}: domains.{name}.approval: escalation ladder out of order: "
                f"remind_after ({approval['remind_after']}) < escalate_after "
                f"({approval['escalate_after']}) < timeout ({approval['timeout']}) must hold"
            )
        if domain["roles"]["approver"] != approval["approvers_role"]:
            messages.append(
                f"{source}: domains.{name}.approval.approvers_role: {approval['approvers_role']!r} "
                f"is not the domain's approver role {domain['roles']['approver']!r}"
            )
    defaults = document["defaults"]
    if parse_duration(defaults["retry_delay"]) > parse_duration(defaults["max_retry_delay"]):
        messages.append(f"{source}: defaults.retry_delay: longer than defaults.max_retry_delay")
    return messages


def _build(document: dict[str, Any], source: Path) -> Policy:
    defaults = document["defaults"]
    domains = {}
    for name, raw in document["domains"].items():
        approval = raw["approval"]
        domains[name] = DomainPolicy(
            name=name,
            description=raw["description"],
            owner=raw["owner"],
            pool_slots=raw["pool_slots"],
            priority_weight=raw["priority_weight"],
            max_active_runs=raw["max_active_runs"],
            max_active_tasks=raw["max_active_tasks"],
            sla={kind: parse_duration(value) for kind, value in raw["sla"].items()},
            approval=ApprovalPolicy(
                approvers_role=approval["approvers_role"],
                timeout=parse_duration(approval["timeout"]),
                remind_after=parse_duration(approval["remind_after"]),
                escalate_after=parse_duration(approval["escalate_after"]),
                escalate_to=tuple(approval["escalate_to"]),
                on_timeout=approval["on_timeout"],
            ),
            alert_emails=tuple(raw["alerts"]["email"]),
            operator_role=raw["roles"]["operator"],
            approver_role=raw["roles"]["approver"],
            queue=raw.get("queue", DEFAULT_QUEUE),
        )
    return Policy(
        source=source,
        defaults=Defaults(
            retries=defaults["retries"],
            retry_delay=parse_duration(defaults["retry_delay"]),
            max_retry_delay=parse_duration(defaults["max_retry_delay"]),
        ),
        domains=domains,
    )


def load_policy_file(path: Path) -> Policy:
    """Load and validate one policy file; raise :class:`PolicyError` listing every problem."""
    document = _read_yaml(path)
    problems = validate_document(document, path)
    if problems:
        raise PolicyError("invalid domain policy:\n  " + "\n  ".join(problems))
    return _build(document, path)


@cache
def load_domain_policy() -> Policy:
    """The deployed domain policy, loaded once per process."""
    return load_policy_file(DOMAINS_FILE)


# A DAG names its domain with one tag; the cluster policy, the audit trail and the capability
# checks all read it here.
DOMAIN_TAG_PREFIX = "domain:"


def domain_tags(dag: Any) -> list[str]:
    """The domain names a DAG is tagged with (``domain:<name>``), sorted."""
    return sorted(
        tag.removeprefix(DOMAIN_TAG_PREFIX) for tag in dag.tags if tag.startswith(DOMAIN_TAG_PREFIX)
    )


def domain_tag_problem(dag: Any, policy: Policy) -> str | None:
    names = domain_tags(dag)
    declared = ", ".join(sorted(policy.domains))
    if not names:
        return f"DAG {dag.dag_id} has no domain tag (expected one of: {declared})"
    if len(names) > 1:
        tags = ", ".join(DOMAIN_TAG_PREFIX + name for name in names)
        return f"DAG {dag.dag_id} has {len(names)} domain tags ({tags}); it must have exactly one"
    if names[0] not in policy.domains:
        return (
            f"DAG {dag.dag_id} is tagged {DOMAIN_TAG_PREFIX}{names[0]} but {names[0]!r} is not a "
            f"declared domain (declared: {declared})"
        )
    return None
