"""Policy as code: ``python -m include.cli policy-check`` (CI and pre-merge).

Loads the domain policy and the DAG folder once (a :class:`DagBag`, no database, no network) and
runs every rule in :data:`RULES`. A rule is one small function ``rule(context) -> list[Violation]``
whose messages name the offending file, DAG and task, so a failing pull request says what to fix.
Adding a rule is one function plus one entry in :data:`RULES`.
"""

from __future__ import annotations

import argparse
import ast
import atexit
import contextlib
import json
import os
import shutil
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from functools import cached_property, partial
from pathlib import Path
from typing import Any

from include.policies.capability_calls import DagFile, domains_text, scan, task_line
from include.policies.loader import (
    DOMAINS_FILE,
    DomainPolicy,
    Policy,
    PolicyError,
    domain_tag_problem,
    domain_tags,
    load_policy_file,
    workflow_kind,
)
from include.policies.param_patterns import param_pattern_problems
from include.policies.secret_scan import files_to_scan, find_literal_secrets

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DAGS_FOLDER = REPO_ROOT / "dags"
DEFAULT_INCLUDE_FOLDER = REPO_ROOT / "include"
DEFAULT_PLUGINS_FOLDER = REPO_ROOT / "plugins"
DEFAULT_PARSE_BUDGET_SECONDS = 2.0

# Domain priorities are absolute: with Airflow's default "downstream" rule a long bulk DAG would
# outrank a short containment DAG of a higher-priority domain.
EXPECTED_WEIGHT_RULE = "absolute"


@dataclass(frozen=True)
class Violation:
    """One broken rule. ``location`` is ``file``, ``file:line`` or ``file::dag_id[::task_id]``."""

    rule: str
    location: str
    message: str

    def __str__(self) -> str:
        return f"{self.rule}: {self.location}: {self.message}"


@dataclass(frozen=True)
class DagFolderScan:
    """What one DagBag load of the DAG folder found."""

    dags: list[Any]
    import_errors: dict[Path, str]
    parse_seconds: dict[Path, float]


@dataclass
class CheckContext:
    """Inputs of every rule; the policy and the DagBag are loaded at most once, when first needed."""

    dags_folder: Path
    policy_file: Path = DOMAINS_FILE
    parse_budget_seconds: float = DEFAULT_PARSE_BUDGET_SECONDS
    secret_scan_roots: tuple[Path, ...] = ()
    # The platform code (include/, plugins/) whose capability calls ``capability-calls`` checks.
    code_scan_roots: tuple[Path, ...] = ()
    allowed_literals: list[str] = field(default_factory=list)

    @cached_property
    def _policy_load(self) -> tuple[Policy | None, list[str]]:
        try:
            return load_policy_file(self.policy_file), []
        except PolicyError as exc:
            return None, _problem_lines(exc)

    @property
    def policy(self) -> Policy | None:
        """The policy, or ``None`` when it is invalid (``policy-valid`` reports why)."""
        return self._policy_load[0]

    @property
    def policy_problems(self) -> list[str]:
        return self._policy_load[1]

    @cached_property
    def dag_scan(self) -> DagFolderScan:
        return load_dag_folder(self.dags_folder)

    def dags_with_domain(self) -> Iterator[tuple[Any, DomainPolicy]]:
        """Each DAG with exactly one declared domain tag; the others are ``known-domain``'s business."""
        if self.policy is None:
            return
        for dag in self.dag_scan.dags:
            names = domain_tags(dag)
            if len(names) == 1 and names[0] in self.policy.domains:
                yield dag, self.policy.domains[names[0]]


Rule = Callable[[CheckContext], list[Violation]]


# --------------------------------------------------------------------------------------------
# Loading


def prepare_airflow_environment() -> None:
    """Let Airflow import offline: a throw-away AIRFLOW_HOME, no example DAGs, the repo importable."""
    if "AIRFLOW_HOME" not in os.environ:
        home = tempfile.mkdtemp(prefix="policy-check-airflow-")
        atexit.register(shutil.rmtree, home, ignore_errors=True)
        os.environ["AIRFLOW_HOME"] = home
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))


def load_dag_folder(folder: Path) -> DagFolderScan:
    """Parse every DAG file in ``folder`` in this process, keeping stdout clean for ``--format json``."""
    prepare_airflow_environment()
    folder = folder.resolve()
    with contextlib.redirect_stdout(sys.stderr):
        # Pre-import the shared workflow code, as the DAG processor does (parsing_pre_import_modules),
        # so the first DAG file is not charged for importing Airflow and the providers.
        with contextlib.suppress(Exception):
            import include.workflows  # noqa: F401

        from airflow.dag_processing.dagbag import DagBag

        bag = DagBag(str(folder), safe_mode=False)
    return DagFolderScan(
        dags=sorted(bag.dags.values(), key=lambda dag: dag.dag_id),
        import_errors={Path(path): trace for path, trace in bag.import_errors.items()},
        parse_seconds={folder / stat.file: stat.duration.total_seconds() for stat in bag.dagbag_stats},
    )


def display_path(path: str | Path) -> str:
    """A path relative to the working directory when inside it, so messages stay short."""
    path = Path(path)
    with contextlib.suppress(ValueError):
        return str(path.resolve().relative_to(Path.cwd()))
    return str(path)


def dag_location(dag: Any, task_id: str | None = None) -> str:
    location = f"{display_path(dag.fileloc)}::{dag.dag_id}"
    return f"{location}::{task_id}" if task_id else location


# --------------------------------------------------------------------------------------------
# Rules


def _problem_lines(error: PolicyError) -> list[str]:
    lines = [line.strip() for line in str(error).splitlines()]
    # A multi-line PolicyError is a header plus one indented line per problem.
    return lines[1:] or lines


def _load_next_to(
    context: CheckContext, name: str, load: Callable[[Path], Any], *, required: bool = False
) -> tuple[Any, list[Violation]]:
    """The policy file ``name`` next to the domain policy, loaded; ``(None, [])`` if absent and optional."""
    path = context.policy_file.with_name(name)
    if not required and not path.exists():
        return None, []
    try:
        return load(path), []
    except PolicyError as exc:
        return None, [Violation("policy-valid", display_path(path), line) for line in _problem_lines(exc)]


def check_policy_valid(context: CheckContext) -> list[Violation]:
    """The policy files validate: the domain policy, then every policy file next to it; one per problem.

    A file checked against another (approvals against capabilities, invoicing and triage against
    the tenants) is checked once that one is valid, against the copy next to it when there is one.
    """
    from include.policies.approvals import load_approvals_file
    from include.policies.capabilities import load_capabilities_file
    from include.policies.hr_roles import load_hr_roles_file
    from include.policies.invoicing import load_invoicing_file
    from include.policies.tenants import load_tenants_file
    from include.triage.rules import load_rules_file

    location = display_path(context.policy_file)
    violations = [Violation("policy-valid", location, problem) for problem in context.policy_problems]
    if (domains := context.policy) is not None:
        capabilities, found = _load_next_to(
            context, "capabilities.yaml", partial(load_capabilities_file, domains=list(domains.domains))
        )
        violations += found
        if not found:
            approvals = partial(load_approvals_file, domains=domains, capabilities=capabilities)
            violations += _load_next_to(context, "approvals.yaml", approvals, required=True)[1]
    tenants, found = _load_next_to(context, "tenants.yaml", load_tenants_file)
    violations += found
    customers = None if tenants is None else tenants.customers
    files: list[tuple[str, Callable[[Path], Any]]] = [("hr_roles.yaml", load_hr_roles_file)]
    if not found:
        files += [
            ("support_triage.yaml", partial(load_rules_file, known_tenants=customers)),
            ("invoicing.yaml", partial(load_invoicing_file, tenants=customers)),
        ]
    for name, load in files:
        violations += _load_next_to(context, name, load)[1]
    return violations


def check_dag_imports(context: CheckContext) -> list[Violation]:
    """Every DAG file imports without error."""
    violations = []
    for path, trace in sorted(context.dag_scan.import_errors.items()):
        last_line = next((line for line in reversed(trace.splitlines()) if line.strip()), "unknown error")
        location = display_path(path)
        violations.append(
            Violation("dag-imports", location, f"DAG file {location} does not import: {last_line}")
        )
    return violations


def check_known_domain(context: CheckContext) -> list[Violation]:
    """Every DAG has exactly one ``domain:<name>`` tag naming a declared domain."""
    if context.policy is None:
        return []
    violations = []
    for dag in context.dag_scan.dags:
        problem = domain_tag_problem(dag, context.policy)
        if problem:
            violations.append(Violation("known-domain", dag_location(dag), problem))
    return violations


def check_domain_pool(context: CheckContext) -> list[Violation]:
    """Every task runs in its DAG's domain pool, so per-domain concurrency quotas hold."""
    violations = []
    for dag, domain in context.dags_with_domain():
        for task in dag.tasks:
            if task.pool != domain.pool:
                message = (
                    f"DAG {dag.dag_id} task {task.task_id} runs in pool {task.pool!r}, "
                    f"not its domain pool {domain.pool!r}"
                )
                violations.append(Violation("domain-pool", dag_location(dag, task.task_id), message))
    return violations


def _setting(value: Any) -> Any:
    """Enum settings (``WeightRule.ABSOLUTE``) compared and shown by their plain value."""
    return getattr(value, "value", value)


def _expected_dag_settings(domain: DomainPolicy) -> dict[str, Any]:
    return {"max_active_runs": domain.max_active_runs, "max_active_tasks": domain.max_active_tasks}


def _expected_task_settings(domain: DomainPolicy) -> dict[str, Any]:
    return {
        "owner": domain.owner,
        "priority_weight": domain.priority_weight,
        "weight_rule": EXPECTED_WEIGHT_RULE,
    }


def _settings_violations(subject: str, location: str, obj: Any, expected: dict[str, Any]) -> list[Violation]:
    violations = []
    for name, wanted in expected.items():
        actual = _setting(getattr(obj, name, None))
        if actual != wanted:
            message = f"{subject} has {name} {actual!r}, not its domain {name} {wanted!r}"
            violations.append(Violation("domain-settings", location, message))
    return violations


def check_domain_settings(context: CheckContext) -> list[Violation]:
    """DAG and task settings match the domain policy (DAGs built without, or overriding, the factory)."""
    violations = []
    for dag, domain in context.dags_with_domain():
        violations += _settings_violations(
            f"DAG {dag.dag_id}", dag_location(dag), dag, _expected_dag_settings(domain)
        )
        for task in dag.tasks:
            subject = f"DAG {dag.dag_id} task {task.task_id}"
            location = dag_location(dag, task.task_id)
            violations += _settings_violations(subject, location, task, _expected_task_settings(domain))
    return violations


def check_no_literal_secrets(context: CheckContext) -> list[Violation]:
    """No credential is written into a DAG or platform file; opted-out lines are counted."""
    violations = []
    for path in files_to_scan(context.secret_scan_roots):
        for finding in find_literal_secrets(path):
            location = f"{display_path(path)}:{finding.line}"
            if finding.allowed:
                context.allowed_literals.append(location)
            else:
                message = f"{display_path(path)} line {finding.line}: {finding.description}"
                violations.append(Violation("no-literal-secrets", location, message))
    return violations


def check_parse_budget(context: CheckContext) -> list[Violation]:
    """Every DAG file parses within the budget (the DAG processor re-parses each file constantly)."""
    budget = context.parse_budget_seconds
    violations = []
    for path, seconds in sorted(context.dag_scan.parse_seconds.items()):
        if seconds > budget:
            location = display_path(path)
            message = f"DAG file {location} took {seconds:.2f} s to parse, over the {budget:.2f} s budget"
            violations.append(Violation("parse-budget", location, message))
    return violations


def check_dag_serializes(context: CheckContext) -> list[Violation]:
    """Every DAG serializes: the DAG processor stores nothing else, and shows a failure as an import
    error (e.g. an operator with a template field shadowing a BaseOperator attribute such as ``queue``).
    """
    from airflow.serialization.serialized_objects import DagSerialization

    violations = []
    for dag in context.dag_scan.dags:
        try:
            DagSerialization.to_dict(dag)
        except Exception as exc:  # the serializer raises many kinds; each is this rule's finding
            reason = " ".join(str(exc).split())[:300]
            violations.append(
                Violation(
                    "dag-serializes", dag_location(dag), f"DAG {dag.dag_id} cannot be serialized: {reason}"
                )
            )
    return violations


# How a task declares what it does and what it approves (duck-typed, so any operator can):
# ``capability = "host-isolate"`` on a step; ``approval_action = "host-isolate"`` on its gate.
CAPABILITY_ATTRIBUTE = "capability"
APPROVAL_ATTRIBUTE = "approval_action"


def _approvals_upstream(task: Any) -> set[str]:
    return {
        action
        for upstream in task.get_flat_relatives(upstream=True)
        if (action := getattr(upstream, APPROVAL_ATTRIBUTE, None))
    }


def _declared_capability(task: Any) -> str | None:
    """The task's capability; a mapped task (``.partial().expand()``) declares it on its operator class."""
    capability = getattr(task, CAPABILITY_ATTRIBUTE, None)
    if capability is None:
        capability = getattr(getattr(task, "operator_class", None), CAPABILITY_ATTRIBUTE, None)
    return capability if isinstance(capability, str) else None


def _capability_problem(dag: Any, task: Any, declared: dict[str, Any]) -> str | None:
    capability = _declared_capability(task)
    if not capability:
        return None
    subject = f"DAG {dag.dag_id} task {task.task_id}"
    if capability not in declared:
        names = ", ".join(declared)
        return f"{subject} uses capability {capability!r}, which is not declared (declared: {names})"
    if not declared[capability].privileged:
        return None
    if capability not in _approvals_upstream(task):
        return f"{subject} uses privileged capability {capability!r} without an approval gate for it upstream"
    # A rejected or timed-out gate skips what follows it; any trigger rule other than all_success
    # (all_done, none_failed, ...) would let the privileged step run anyway.
    rule = getattr(task, "trigger_rule", "all_success")
    trigger_rule = str(getattr(rule, "value", rule))
    if trigger_rule != "all_success":
        return (
            f"{subject} uses privileged capability {capability!r} with trigger_rule {trigger_rule}: "
            "it must be all_success, or a rejected approval would not stop it"
        )
    return None


def check_approval_before_privileged(context: CheckContext) -> list[Violation]:
    """Every step using a privileged capability runs only after an approval gate for that action."""
    from include.policies.capabilities import load_capabilities

    declared = dict(sorted(load_capabilities().capabilities.items()))
    violations = []
    for dag in context.dag_scan.dags:
        for task in dag.tasks:
            problem = _capability_problem(dag, task, declared)
            if problem:
                location = dag_location(dag, task.task_id)
                violations.append(Violation("approval-before-privileged", location, problem))
    return violations


def _source_tree(path: str) -> ast.Module | None:
    try:
        return ast.parse(Path(path).read_text(encoding="utf-8"), filename=path)
    except (OSError, SyntaxError, ValueError):
        return None


def check_capability_domain(context: CheckContext) -> list[Violation]:
    """Every task's capability is granted to its DAG's domain (``domains:`` in capabilities.yaml)."""
    from include.policies.capabilities import load_capabilities

    declared = load_capabilities().capabilities
    trees: dict[str, ast.Module | None] = {}
    violations = []
    for dag, domain in context.dags_with_domain():
        for task in dag.tasks:
            capability = declared.get(_declared_capability(task) or "")
            if capability is None or domain.name in capability.domains:
                continue  # an undeclared capability is approval-before-privileged's finding
            if dag.fileloc not in trees:
                trees[dag.fileloc] = _source_tree(dag.fileloc)
            tree = trees[dag.fileloc]
            line = task_line(tree, task.task_id) if tree else None
            message = (
                f"{display_path(dag.fileloc)} line {line or 'unknown'}: DAG {dag.dag_id} task {task.task_id} "
                f"uses capability {capability.name!r} of domains {domains_text(capability.domains)}, "
                f"not granted to domain {domain.name!r}"
            )
            violations.append(Violation("capability-domain", dag_location(dag, task.task_id), message))
    return violations


def _dag_files(context: CheckContext) -> dict[Path, DagFile]:
    """Every module under the DAG folder, with its DAGs and their domain: the tag (``domain:<name>``)
    of the DAGs it defines, else its ``dags/<domain>/`` folder (a helper module, a file that fails)."""
    folder = context.dags_folder.resolve()
    declared = set(context.policy.domains) if context.policy else set()
    dags_by_file: dict[Path, list[Any]] = {}
    for dag in context.dag_scan.dags:
        dags_by_file.setdefault(Path(dag.fileloc).resolve(), []).append(dag)
    files = {}
    for path in sorted(folder.rglob("*.py")):
        parts = path.relative_to(folder).parts
        if any(part.startswith(".") or part == "__pycache__" for part in parts):
            continue
        dags = dags_by_file.get(path, [])
        domains = {tags[0] for dag in dags if len(tags := domain_tags(dag)) == 1 and tags[0] in declared}
        if not domains and len(parts) > 1 and parts[0] in declared:
            domains = {parts[0]}
        files[path] = DagFile(dag_ids=tuple(dag.dag_id for dag in dags), domains=tuple(sorted(domains)))
    return files


def check_capability_calls(context: CheckContext) -> list[Violation]:
    """The capability functions are called only where the policy can see it: from DAG files with a
    literal, non-privileged capability of the DAG's domain; from platform code with a privileged one
    only inside a class inheriting ``RequiresApproval`` (see :mod:`include.policies.capability_calls`).
    """
    from include.policies.capabilities import load_capabilities

    findings = scan(
        load_capabilities().capabilities,
        dag_files=_dag_files(context),
        code_roots=context.code_scan_roots,
        display=display_path,
    )
    return [
        Violation("capability-calls", f"{display_path(finding.path)}:{finding.line}", finding.message)
        for finding in findings
    ]


def check_run_timeouts(context: CheckContext) -> list[Violation]:
    """Every task has an ``execution_timeout`` and every DAG a ``dagrun_timeout`` within its domain's
    (``timeouts.<kind>``), and no run can end while an approver may still answer: neither a DAG's
    longest path nor a domain's longest approval chain (approvals.yaml) outlasts the run
    (:mod:`include.policies.timeouts`)."""
    from include.policies.approvals import load_approvals_file
    from include.policies.timeouts import approval_chain_problems, dag_timeout_problem, task_timeout_problem

    if context.policy is None:
        return []
    violations = []
    approvals, invalid = _load_next_to(
        context, "approvals.yaml", partial(load_approvals_file, domains=context.policy)
    )
    if approvals is not None and not invalid:  # an invalid one is policy-valid's finding
        location = display_path(context.policy_file)
        for key, message in approval_chain_problems(context.policy, approvals):
            violations.append(Violation("run-timeouts", location, f"{key}: {message}"))
    for dag, domain in context.dags_with_domain():
        try:
            workflow_kind(dag)
        except PolicyError as error:
            violations.append(Violation("run-timeouts", dag_location(dag), str(error)))
            continue
        if problem := dag_timeout_problem(dag, domain):
            violations.append(Violation("run-timeouts", dag_location(dag), problem))
        for task in dag.tasks:
            if problem := task_timeout_problem(dag, task, domain):
                violations.append(Violation("run-timeouts", dag_location(dag, task.task_id), problem))
    return violations


def check_param_patterns(context: CheckContext) -> list[Violation]:
    """Every DAG param's ``pattern`` compiles and, when anchored at the end, refuses a final line
    break (:data:`include.policies.param_patterns.PARAM_PATTERN_END`); the cluster policy runs the
    same function at parse time."""
    violations = []
    for dag in context.dag_scan.dags:
        for name, problem in param_pattern_problems(dag):
            violations.append(Violation("param-patterns", f"{dag_location(dag)} param {name}", problem))
    return violations


def check_access_policy(context: CheckContext) -> list[Violation]:
    """``access.yaml`` (next to the domain policy) holds: every role a directory group grants
    exists, every domain operator/approver role and approvals.yaml group is granted by some group,
    only the admin groups grant Admin, group names are valid cn (:mod:`include.policies.access`)."""
    from include.policies.access import load_access_file
    from include.policies.approvals import load_approvals_file

    if context.policy is None or not context.policy_file.with_name("access.yaml").exists():
        return []
    approvals, invalid = _load_next_to(
        context, "approvals.yaml", partial(load_approvals_file, domains=context.policy)
    )
    if approvals is None or invalid:  # an invalid approvals.yaml is policy-valid's finding
        return []
    access = partial(load_access_file, domains=context.policy, approvals=approvals)
    found = _load_next_to(context, "access.yaml", access)[1]
    return [Violation("access-policy", v.location, v.message) for v in found]


def _route_problems(route: Any, dag: Any) -> list[str]:
    declared = set((dag.params or {}).keys())
    problems = [
        f"param {name!r} is not a param of {dag.dag_id} (its params: {', '.join(sorted(declared))})"
        for name in route.params
        if name not in declared
    ]
    for name in sorted(set(declared) - set(route.params)):
        param = dag.params.get_param(name)
        nullable = "null" in (param.schema.get("type") or [])
        if not param.has_value and not nullable:
            problems.append(f"{dag.dag_id} requires param {name!r}, which the route does not map")
    return problems


def check_intake_routes(context: CheckContext) -> list[Violation]:
    """``intake.yaml`` (next to the domain policy) is valid, and, in a folder holding the intake DAGs
    (``dags/intake/``), each route fits its workflow: the workflow is a DAG of the folder, every
    mapped param is one of its params and every param it requires (no default) is mapped
    (:mod:`include.intake.policy`)."""
    from include.intake.policy import load_intake_file

    intake, invalid = _load_next_to(context, "intake.yaml", load_intake_file)
    if intake is None:
        return [Violation("intake-routes", v.location, v.message) for v in invalid]
    dags = {dag.dag_id: dag for dag in context.dag_scan.dags}
    if not any(source.dag_id in dags for source in intake.sources.values()):
        return []  # a folder without the intake DAGs (a subset checked on its own) deploys no routes
    location = display_path(intake.source_file)
    violations = []
    for source in intake.sources.values():
        for kind, routes in source.events.items():
            for index, route in enumerate(routes):
                where = f"sources.{source.name}.events.{kind}[{index}]"
                dag = dags.get(route.workflow)
                if dag is None:
                    folder = display_path(context.dags_folder)
                    message = f"{where}: workflow {route.workflow!r} is not a DAG in {folder}"
                    violations.append(Violation("intake-routes", location, message))
                    continue
                violations += [
                    Violation("intake-routes", location, f"{where}: {problem}")
                    for problem in _route_problems(route, dag)
                ]
    return violations


def check_retention_policy(context: CheckContext) -> list[Violation]:
    """``retention.yaml`` (next to the domain policy) is valid, names only declared tenants, keeps no
    kind shorter than its minimum nor longer than its maximum (``LEGAL_MINIMUMS`` and ``MAXIMUMS`` in
    :mod:`include.policies.retention`), and ``invoicing.yaml``'s archive retention covers every
    tenant's invoice retention."""
    from include.policies.invoicing import load_invoicing_file
    from include.policies.retention import cross_file_problems, load_retention_file
    from include.policies.tenants import load_tenants_file

    tenants, invalid = _load_next_to(context, "tenants.yaml", load_tenants_file)
    names = None if tenants is None or invalid else sorted(tenants.tenants)
    retention, found = _load_next_to(context, "retention.yaml", partial(load_retention_file, tenants=names))
    violations = [Violation("retention-minimum", v.location, v.message) for v in found]
    if retention is None or names is None:
        return violations
    invoicing, invalid = _load_next_to(context, "invoicing.yaml", partial(load_invoicing_file, tenants=names))
    archive_days = None if invoicing is None or invalid else invoicing.archive_retention_days
    for name, problem in cross_file_problems(retention, invoice_archive_days=archive_days, tenants=names):
        where = context.policy_file.with_name(name) if "/" not in name else REPO_ROOT / name
        violations.append(Violation("retention-minimum", display_path(where), problem))
    return violations


RULES: list[Rule] = [
    check_policy_valid,
    check_retention_policy,
    check_access_policy,
    check_intake_routes,
    check_dag_imports,
    check_dag_serializes,
    check_known_domain,
    check_domain_pool,
    check_domain_settings,
    check_run_timeouts,
    check_param_patterns,
    check_no_literal_secrets,
    check_parse_budget,
    check_approval_before_privileged,
    check_capability_domain,
    check_capability_calls,
]


def run_checks(context: CheckContext, rules: list[Rule] | None = None) -> list[Violation]:
    return [violation for rule in (RULES if rules is None else rules) for violation in rule(context)]


# --------------------------------------------------------------------------------------------
# Command line


def summary(context: CheckContext, violations: list[Violation]) -> dict[str, Any]:
    """Everything ``--format json`` prints; the text format prints a one-line digest of it."""
    parse_seconds = context.dag_scan.parse_seconds
    return {
        "ok": not violations,
        "violations": [asdict(violation) for violation in violations],
        "dags": len(context.dag_scan.dags),
        "files": len(parse_seconds),
        "parse_budget_seconds": context.parse_budget_seconds,
        "parse_seconds": {display_path(path): round(secs, 4) for path, secs in sorted(parse_seconds.items())},
        "allowed_literals": list(context.allowed_literals),
    }


def format_text(report: dict[str, Any]) -> list[str]:
    if report["violations"]:
        counts = Counter(violation["rule"] for violation in report["violations"])
        lines = [str(Violation(**violation)) for violation in report["violations"]]
        per_rule = ", ".join(f"{rule} {count}" for rule, count in sorted(counts.items()))
        return [*lines, f"policy-check FAILED: {len(lines)} violation(s) ({per_rule})"]
    times = report["parse_seconds"]
    slowest = max(times, key=times.get, default=None)
    slowest_text = f"slowest parse {times[slowest]:.2f} s ({slowest})" if slowest else "no files parsed"
    return [
        f"policy-check OK: {report['dags']} DAG(s) in {report['files']} file(s), {slowest_text}, "
        f"budget {report['parse_budget_seconds']:.2f} s, "
        f"{len(report['allowed_literals'])} literal(s) allowed by opt-out"
    ]


def code_scan_roots(include_folder: str, plugins_folder: str | None) -> tuple[Path, ...]:
    """The platform code to check: the include folder and the plugins folder, by default the one
    beside it (so ``--include-folder ''`` checks the DAG folder alone)."""
    if plugins_folder is None:
        plugins_folder = str(Path(include_folder).parent / "plugins") if include_folder else ""
    return tuple(Path(folder) for folder in (include_folder, plugins_folder) if folder)


def handle(args: argparse.Namespace) -> int:
    prepare_airflow_environment()
    context = CheckContext(
        dags_folder=Path(args.dags_folder),
        policy_file=Path(args.policy),
        parse_budget_seconds=args.parse_budget_seconds,
        secret_scan_roots=(
            Path(args.dags_folder),
            *([Path(args.include_folder)] if args.include_folder else []),
        ),
        code_scan_roots=code_scan_roots(args.include_folder, args.plugins_folder),
    )
    violations = run_checks(context)
    report = summary(context, violations)
    if args.format == "json":
        print(json.dumps(report, indent=2))
    else:
        print("\n".join(format_text(report)))
    return 1 if violations else 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "policy-check",
        help="check the DAGs and the domain policy against the platform rules",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--dags-folder", default=str(DEFAULT_DAGS_FOLDER), help="DAG folder to check")
    parser.add_argument("--policy", default=str(DOMAINS_FILE), help="domain policy file")
    parser.add_argument(
        "--include-folder",
        default=str(DEFAULT_INCLUDE_FOLDER),
        help="shared code also scanned for literal secrets and capability calls ('' to skip)",
    )
    parser.add_argument(
        "--plugins-folder",
        default=None,
        help="Airflow plugins scanned for capability calls (default: plugins/ beside --include-folder; "
        "'' to skip)",
    )
    parser.add_argument(
        "--parse-budget-seconds",
        type=float,
        default=DEFAULT_PARSE_BUDGET_SECONDS,
        help="maximum parse time per DAG file (Airflow's own import timeout is 30 s)",
    )
    parser.add_argument("--format", choices=("text", "json"), default="text")
    parser.set_defaults(handler=handle)
