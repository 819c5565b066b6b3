"""One loader for every policy file, and the domain policy (``include/policies/domains.yaml``).

A policy file is data reviewed by pull request: ``include/policies/<name>.yaml``, its JSON schema
``include/policies/schema/<name>.schema.json``, and a :class:`PolicyFile` that reads it (YAML, safe
loader), validates it against the schema and its own rules (every problem, each naming the file and
the key path) and builds the frozen dataclasses the code uses. Each policy module declares one
``PolicyFile`` and a ``@cache``d ``load_<name>()``; DAGs, the pool/role sync and ``policy-check``
all go through it, so a value means the same thing everywhere.

A schema may give a friendlier message for a leaf value with ``"errorMessage"`` (the ajv-errors
keyword, ignored by validators): ``"{instance!r} is not a quoted 12-digit AWS account id"``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from functools import cache
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

import yaml
from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import ValidationError

POLICY_DIR = Path(__file__).resolve().parent
SCHEMA_DIR = POLICY_DIR / "schema"
DOMAINS_FILE = POLICY_DIR / "domains.yaml"


class PolicyError(ValueError):
    """The policy file is missing, unreadable or invalid; the message names file, key path and problem."""


# libyaml's loader when PyYAML was built with it (the wheels are): the same safe subset. Every task
# process parses its DAG file, which reads the policy files: measured on the four of them, 61 ms
# with the pure-Python loader, 5 ms with libyaml (11 % of task CPU in a py-spy profile before).
_SAFE_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_yaml(text: str) -> Any:
    """``yaml.safe_load`` with the fastest safe loader available.

    :param text: the YAML document.
    """
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


def _key_path(parts: Any) -> str:
    return ".".join(str(p) for p in parts) or "<root>"


@cache
def schema_validator(schema_path: Path, *, check_formats: bool = False) -> Draft202012Validator:
    """The validator of a JSON schema file (draft 2020-12), built once per schema and process (the
    DAG processor loads several policy files per parse loop; the intake validates every event).

    :param schema_path: the schema file.
    :param check_formats: also check ``format`` (``date-time``, ``email``, ...): the intake's event
        schemas do; the policy schemas use patterns instead.
    """
    checker = FormatChecker() if check_formats else None
    return Draft202012Validator(json.loads(schema_path.read_text(encoding="utf-8")), format_checker=checker)


def _schema_message(error: ValidationError) -> str:
    custom = error.schema.get("errorMessage") if isinstance(error.schema, dict) else None
    return custom.format(instance=error.instance) if custom else error.message


def schema_problems(document: Any, source: Path, schema_path: Path) -> list[str]:
    """Every schema problem of a policy document, ``<file>: <key path>: <problem>``, sorted by key path.

    :param document: the parsed YAML document.
    :param source: the file the document was read from, named in every message.
    :param schema_path: the JSON schema (draft 2020-12) to validate against.
    """
    errors = sorted(
        schema_validator(schema_path).iter_errors(document), key=lambda e: [str(p) for p in e.absolute_path]
    )
    messages = [f"{source}: {_key_path(e.absolute_path)}: {_schema_message(e)}" for e in errors]
    return list(dict.fromkeys(messages))  # one leaf can fail two keywords with one custom message


T = TypeVar("T")


@dataclass(frozen=True)
class PolicyFile(Generic[T]):
    """One kind of policy file: ``<name>.yaml``, validated by ``schema/<name>.schema.json``, then built.

    :param name: the file's base name: ``capabilities`` for ``capabilities.yaml``.
    :param what: what the file holds, for the error's first line (``invalid <what>:``).
    :param build: ``build(document, source, **context)``, called on a valid document only; returns
        the policy object.
    :param rules: ``rules(document, **context)``, the rules a JSON schema cannot express, run once
        the schema holds; returns ``"<key path>: <problem>"`` messages.
    """

    name: str
    what: str
    build: Callable[..., T]
    rules: Callable[..., list[str]] | None = None

    @property
    def path(self) -> Path:
        """The deployed file, ``include/policies/<name>.yaml``."""
        return POLICY_DIR / f"{self.name}.yaml"

    @property
    def schema(self) -> Path:
        """The file's JSON schema, ``include/policies/schema/<name>.schema.json``."""
        return SCHEMA_DIR / f"{self.name}.schema.json"

    def problems(self, document: Any, source: Path, **context: Any) -> list[str]:
        """Every problem of ``document``, each ``<file>: <key path>: <problem>``; empty if it is valid.

        :param document: the parsed YAML document.
        :param source: the file the document was read from.
        :param context: what the rules check against (e.g. the declared domains), passed to ``rules``.
        """
        messages = schema_problems(document, source, self.schema)
        if messages or self.rules is None:
            return messages
        return [f"{source}: {problem}" for problem in self.rules(document, **context)]

    def load(self, path: Path | None = None, **context: Any) -> T:
        """Read, validate and build one policy file.

        :param path: the file to load; the deployed one (:attr:`path`) by default.
        :param context: what the rules check against and the build needs, passed to both.
        :raises PolicyError: the file cannot be read or parsed, or is invalid: the message lists
            every problem, one per line.
        """
        source = self.path if path is None else path
        document = _read_yaml(source)
        problems = self.problems(document, source, **context)
        if problems:
            raise PolicyError(f"invalid {self.what}:\n  " + "\n  ".join(problems))
        return self.build(document, source, **context)


# --------------------------------------------------------------------------------------------
# The domain policy

_DURATION = re.compile(r"^([1-9][0-9]*)([smhd])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}

WorkflowKind = Literal["fast_path", "infrastructure_change"]
WORKFLOW_KINDS: tuple[WorkflowKind, ...] = ("fast_path", "infrastructure_change")


def parse_duration(text: str) -> timedelta:
    """Turn ``"15m"`` into ``timedelta(minutes=15)``; anything else raises ``ValueError``.

    :param text: a positive number followed by ``s``, ``m``, ``h`` or ``d``.
    """
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a duration like 90s, 15m, 4h or 2d")
    return timedelta(seconds=int(match.group(1)) * _UNIT_SECONDS[match.group(2)])


def format_duration(value: timedelta) -> str:
    """``timedelta(days=2, minutes=30)`` as ``"2d30m"``: the policy's own notation, for messages.

    :param value: a duration (whole seconds; a fraction is dropped).
    """
    seconds = int(value.total_seconds())
    if seconds <= 0:
        return f"{seconds}s"
    parts = []
    for unit in ("d", "h", "m", "s"):
        count, seconds = divmod(seconds, _UNIT_SECONDS[unit])
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


@dataclass(frozen=True)
class ApprovalPolicy:
    approvers_role: str
    timeout: timedelta
    remind_after: timedelta
    escalate_after: timedelta
    escalate_to: tuple[str, ...]
    on_timeout: Literal["reject"]


@dataclass(frozen=True)
class RunLimits:
    """How long one task and one run of a workflow kind may take (``timeouts.<kind>``).

    :param execution_timeout: every task's default and maximum; an approval gate gets its
        approval wait on top.
    :param dagrun_timeout: every run's, approvals included.
    """

    execution_timeout: timedelta
    dagrun_timeout: timedelta


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
    timeouts: dict[WorkflowKind, RunLimits]
    approval: ApprovalPolicy
    alert_emails: tuple[str, ...]
    operator_role: str
    approver_role: str
    # The Celery queue of the domain's tasks in the distributed setup (ignored by LocalExecutor).
    queue: str = DEFAULT_QUEUE
    # SLA misses after the domain's first within this window go into one digest mail.
    alert_digest_window: timedelta = timedelta(minutes=10)
    # Airflow connection ids of the domain's Teams webhook and PagerDuty service (alerts.*); None: none.
    teams_channel: str | None = None
    pagerduty: str | None = None

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
        """A declared domain.

        :param name: the domain's name (``soc``, ...).
        :raises PolicyError: the domain is not declared, naming every declared one.
        """
        try:
            return self.domains[name]
        except KeyError:
            declared = ", ".join(sorted(self.domains))
            raise PolicyError(
                f"unknown domain {name!r}: declared domains in {self.source} are {declared}"
            ) from None

    def domain_for_pool(self, pool: str) -> DomainPolicy | None:
        """The domain whose pool is ``pool``, if any.

        :param pool: an Airflow pool name.
        """
        return next((d for d in self.domains.values() if d.pool == pool), None)


def _timeout_rules(name: str, domain: dict[str, Any]) -> list[str]:
    """A run outlasts the domain's approval wait plus one task, and a task fits in a run.

    The chains of approvals.yaml (several steps in a row) are checked against these by
    ``policy-check`` (run-timeouts), which reads both files.
    """
    messages = []
    approval_timeout = domain["approval"]["timeout"]
    for kind, limits in domain["timeouts"].items():
        where = f"domains.{name}.timeouts.{kind}"
        task, run = limits["execution_timeout"], limits["dagrun_timeout"]
        if parse_duration(run) < parse_duration(approval_timeout) + parse_duration(task):
            messages.append(
                f"{where}.dagrun_timeout: {run} is shorter than the domain's approval timeout "
                f"({approval_timeout}) plus one task's execution_timeout ({task}): a run would be "
                "killed while an approver may still answer"
            )
    return messages


def _domain_rules(document: dict[str, Any]) -> list[str]:
    # Rules a JSON schema cannot express: the escalation ladder must climb in order, runs outlast it.
    messages = []
    for name, domain in document["domains"].items():
        approval = domain["approval"]
        remind, escalate, timeout = (
            parse_duration(approval[k]) for k in ("remind_after", "escalate_after", "timeout")
        )
        if not remind < escalate < timeout:
            messages.append(
                f"domains.{name}.approval: escalation ladder out of order: "
                f"remind_after ({approval['remind_after']}) < escalate_after "
                f"({approval['escalate_after']}) < timeout ({approval['timeout']}) must hold"
            )
        messages += _timeout_rules(name, domain)
        if domain["roles"]["approver"] != approval["approvers_role"]:
            messages.append(
                f"domains.{name}.approval.approvers_role: {approval['approvers_role']!r} "
                f"is not the domain's approver role {domain['roles']['approver']!r}"
            )
    defaults = document["defaults"]
    if parse_duration(defaults["retry_delay"]) > parse_duration(defaults["max_retry_delay"]):
        messages.append("defaults.retry_delay: longer than defaults.max_retry_delay")
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
            timeouts={
                kind: RunLimits(
                    execution_timeout=parse_duration(limits["execution_timeout"]),
                    dagrun_timeout=parse_duration(limits["dagrun_timeout"]),
                )
                for kind, limits in raw["timeouts"].items()
            },
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
            alert_digest_window=parse_duration(
                raw["alerts"].get("digest_window", defaults.get("sla_digest_window", "10m"))
            ),
            teams_channel=raw["alerts"].get("teams_channel"),
            pagerduty=raw["alerts"].get("pagerduty"),
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


DOMAINS = PolicyFile("domains", "domain policy", build=_build, rules=_domain_rules)


def load_policy_file(path: Path) -> Policy:
    """Load and validate one domain policy file.

    :param path: the file to load.
    :raises PolicyError: the file is unreadable or invalid; the message lists every problem.
    """
    return DOMAINS.load(path)


@cache
def load_domain_policy() -> Policy:
    """The deployed domain policy (``domains.yaml``), loaded once per process."""
    return DOMAINS.load(DOMAINS_FILE)


# A DAG names its domain with one tag; the cluster policy, the audit trail and the capability
# checks all read it here.
DOMAIN_TAG_PREFIX = "domain:"


def domain_tags(dag: Any) -> list[str]:
    """The domain names a DAG is tagged with (``domain:<name>``), sorted.

    :param dag: the DAG (anything with ``tags``).
    """
    return sorted(
        tag.removeprefix(DOMAIN_TAG_PREFIX) for tag in dag.tags if tag.startswith(DOMAIN_TAG_PREFIX)
    )


# The factory tags a DAG with its workflow kind (``kind:fast_path``): which SLA and timeouts apply.
KIND_TAG_PREFIX = "kind:"
DEFAULT_KIND: WorkflowKind = "fast_path"


def workflow_kind(dag: Any) -> WorkflowKind:
    """The DAG's workflow kind: its one ``kind:<kind>`` tag, else the factory's default ``fast_path``.

    :param dag: the DAG (anything with ``dag_id`` and ``tags``).
    :raises PolicyError: several kind tags, or an undeclared kind.
    """
    kinds = sorted(tag.removeprefix(KIND_TAG_PREFIX) for tag in dag.tags if tag.startswith(KIND_TAG_PREFIX))
    if not kinds:
        return DEFAULT_KIND
    if len(kinds) > 1 or kinds[0] not in WORKFLOW_KINDS:
        tags = ", ".join(KIND_TAG_PREFIX + kind for kind in kinds)
        raise PolicyError(
            f"DAG {dag.dag_id} is tagged {tags}: it needs at most one kind tag, one of "
            f"{', '.join(WORKFLOW_KINDS)}"
        )
    return kinds[0]  # one of WORKFLOW_KINDS, checked above


def domain_tag_problem(dag: Any, policy: Policy) -> str | None:
    """Why a DAG's domain tags are wrong (none, several, an undeclared domain), or ``None``.

    :param dag: the DAG (anything with ``dag_id`` and ``tags``).
    :param policy: the domain policy declaring the domains.
    """
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
