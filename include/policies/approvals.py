"""Load and validate the approval policy (``include/policies/approvals.yaml``).

An :class:`ApprovalRule` answers, for one domain and one privileged action: which approver groups
answer each step (four-eyes: every step by a different person, never the one who triggered the
run) and the escalation ladder (the domain's, possibly tightened by the action). The approval gate
(``include/approvals``) reads it at DAG parse time, so a gate for an action nobody may approve is
an import error that ``policy-check`` names, not a request that waits forever.

``drill_ladder`` is the pace of an approval drill (:meth:`ApprovalPolicy.drill`): a run triggered
with ``approval_drill`` climbs its gates' ladders in seconds, through :meth:`Ladder.tightened`, so a
drill can only make a ladder shorter.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import timedelta
from functools import cache
from pathlib import Path
from typing import Any

from include.policies.capabilities import CapabilityPolicy, load_capabilities
from include.policies.loader import (
    POLICY_DIR,
    Policy,
    PolicyError,
    PolicyFile,
    load_domain_policy,
    parse_duration,
)

APPROVALS_FILE = POLICY_DIR / "approvals.yaml"
LADDER_KEYS = ("remind_after", "escalate_after", "timeout")


@dataclass(frozen=True)
class Ladder:
    """Reminder after ``remind_after``, escalation after ``escalate_after``, reject at ``timeout``."""

    remind_after: timedelta
    escalate_after: timedelta
    timeout: timedelta
    escalate_to: tuple[str, ...]

    def problems(self) -> list[str]:
        if self.remind_after < self.escalate_after < self.timeout:
            return []
        return [
            f"escalation ladder out of order: remind_after ({self.remind_after}) < escalate_after "
            f"({self.escalate_after}) < timeout ({self.timeout}) must hold"
        ]

    def tightened(self, **shorter: timedelta | None) -> Ladder:
        """This ladder with some steps earlier; raises ``ValueError`` if any would come later."""
        changes: dict[str, Any] = {key: value for key, value in shorter.items() if value is not None}
        unknown = set(changes) - set(LADDER_KEYS)
        if unknown:
            raise ValueError(f"unknown ladder step(s) {sorted(unknown)}; use {', '.join(LADDER_KEYS)}")
        for key, value in changes.items():
            if value > getattr(self, key):
                raise ValueError(
                    f"{key} {value} is longer than the policy's {getattr(self, key)}: "
                    "a workflow may tighten its approval ladder, never loosen it"
                )
        ladder = replace(self, **changes)
        if problems := ladder.problems():
            raise ValueError(problems[0])
        return ladder


@dataclass(frozen=True)
class ApproverGroup:
    name: str
    description: str
    domains: tuple[str, ...]
    email: str


@dataclass(frozen=True)
class ApprovalStep:
    any_of: tuple[str, ...]
    emails: tuple[str, ...]


# The step lists of an action: always, for a destructive change, for a privileged grant.
STEP_KEYS = ("steps", "destroy_steps", "privileged_steps")


@dataclass(frozen=True)
class ApprovalRule:
    domain: str
    action: str
    steps: tuple[ApprovalStep, ...]
    ladder: Ladder
    # The stricter steps for a destructive change (defaults to ``steps``).
    destroy_steps: tuple[ApprovalStep, ...] = ()
    # The stricter steps when what is granted is privileged (e.g. an HR role with admin groups).
    privileged_steps: tuple[ApprovalStep, ...] = ()
    # Approver groups that may answer too once the ladder escalates (``escalate_after``), never
    # before; their e-mail is in ``ladder.escalate_to``.
    escalate_to: tuple[str, ...] = ()

    def steps_for(self, *, destructive: bool, privileged: bool = False) -> tuple[ApprovalStep, ...]:
        if destructive and self.destroy_steps:
            return self.destroy_steps
        if privileged and self.privileged_steps:
            return self.privileged_steps
        return self.steps

    @property
    def conditional(self) -> bool:
        """Whether the steps depend on the change (destructive, privileged), known only at run time."""
        return bool(self.destroy_steps or self.privileged_steps)

    @property
    def max_steps(self) -> int:
        return max(len(self.steps), len(self.destroy_steps), len(self.privileged_steps))


@dataclass(frozen=True)
class ApprovalPolicy:
    source: Path
    groups: dict[str, ApproverGroup]
    rules: dict[tuple[str, str], ApprovalRule]
    # ``drill_ladder``: remind_after, escalate_after, timeout of an approval drill.
    drill_ladder: Mapping[str, timedelta]

    def rule(self, domain: str, action: str) -> ApprovalRule:
        """The approval rule of ``action`` in ``domain``.

        :param domain: the domain of the workflow.
        :param action: the privileged action (a capability name).
        :raises PolicyError: no rule, naming the actions that have one in the domain.
        """
        try:
            return self.rules[(domain, action)]
        except KeyError:
            declared = ", ".join(sorted(a for d, a in self.rules if d == domain)) or "none"
            raise PolicyError(
                f"no approval rule for action {action!r} in domain {domain!r} in {self.source} "
                f"(actions with rules in {domain}: {declared})"
            ) from None

    def groups_of_domain(self, domain: str) -> list[ApproverGroup]:
        return [group for group in self.groups.values() if domain in group.domains]

    def drill(self, ladder: Ladder) -> Ladder:
        """``ladder`` at drill pace: each step at the drill's time or its own, whichever is earlier.

        Applied through :meth:`Ladder.tightened`: a drill only ever shortens a ladder (a step a
        workflow tightened below the drill keeps its own time) and ``escalate_to`` stays the policy's.
        """
        return ladder.tightened(
            **{key: min(getattr(ladder, key), self.drill_ladder[key]) for key in LADDER_KEYS}
        )


def _check_groups(document: dict[str, Any], domains: Policy) -> list[str]:
    problems = []
    reserved = {r for d in domains.domains.values() for r in (d.operator_role, d.approver_role)}
    for name, group in document["groups"].items():
        where = f"groups.{name}"
        if name in reserved or name in {"auditor", "admin"}:
            problems.append(f"{where}: the name is already a domain or platform role; pick another")
        for index, domain in enumerate(group["domains"]):
            if domain not in domains.domains:
                declared = ", ".join(sorted(domains.domains))
                problems.append(f"{where}.domains.{index}: unknown domain {domain!r} (declared: {declared})")
    return problems


def _check_escalation(where: str, domain: str, raw: dict[str, Any], document: dict[str, Any]) -> list[str]:
    """Escalation groups exist, approve in the domain, and do not loosen four-eyes.

    Four-eyes across steps means each step is answered by a *different group*'s member; an
    escalation group that could answer two steps (or a step whose own group it is) would let one
    group approve twice, so escalation is for single-step actions, with groups no step names.
    """
    problems = []
    named = {role for key in STEP_KEYS for step in raw.get(key, []) for role in step["any_of"]}
    longest = max(len(raw.get(key, [])) for key in STEP_KEYS)
    if raw.get("escalate_to") and longest > 1:
        problems.append(
            f"{where}.escalate_to: escalation groups only on a one-step action: with {longest} steps "
            "one escalation group could approve two of them (four-eyes)"
        )
    for position, role in enumerate(raw.get("escalate_to", [])):
        at = f"{where}.escalate_to.{position}"
        group = document["groups"].get(role)
        if group is None:
            problems.append(f"{at}: {role!r} is not a declared group")
        elif domain not in group["domains"]:
            problems.append(f"{at}: group {role!r} does not approve in {domain!r}")
        if role in named:
            problems.append(
                f"{at}: {role!r} already answers a step of this action; an escalation group must be "
                "another group (four-eyes)"
            )
    return problems


def _check_action(
    domain: str, action: str, raw: dict[str, Any], document: dict[str, Any], capabilities: CapabilityPolicy
) -> list[str]:
    where = f"actions.{domain}.{action}"
    capability = capabilities.capabilities.get(action)
    if capability is None:
        return [f"{where}: {action!r} is not a declared capability (capabilities.yaml)"]
    problems = _check_escalation(where, domain, raw, document)
    if domain not in capability.domains:
        problems.append(f"{where}: capability {action!r} is not granted to domain {domain!r}")
    for key in STEP_KEYS:
        for index, step in enumerate(raw.get(key, [])):
            for position, role in enumerate(step["any_of"]):
                group = document["groups"].get(role)
                at = f"{where}.{key}.{index}.any_of.{position}"
                if group is None:
                    problems.append(f"{at}: {role!r} is not a declared group")
                elif domain not in group["domains"]:
                    problems.append(f"{at}: group {role!r} does not approve in {domain!r}")
    return problems


def _drill_steps(raw: dict[str, str]) -> dict[str, timedelta]:
    return {key: parse_duration(raw[key]) for key in LADDER_KEYS}


def _ladder(
    domains: Policy, domain: str, raw: dict[str, Any], group_emails: Mapping[str, str] | None = None
) -> Ladder:
    """The domain's ladder, tightened by the action; the escalation mail also goes to the action's
    escalation groups (their ``email``), after the domain's addresses, once each."""
    approval = domains.domains[domain].approval
    emails = group_emails or {}
    extra = [emails[role] for role in raw.get("escalate_to", []) if role in emails]
    escalate_to = tuple(dict.fromkeys([*approval.escalate_to, *extra]))
    base = Ladder(approval.remind_after, approval.escalate_after, approval.timeout, escalate_to)
    return base.tightened(**{key: parse_duration(raw[key]) for key in LADDER_KEYS if key in raw})


def _rules(document: dict[str, Any], *, domains: Policy, capabilities: CapabilityPolicy) -> list[str]:
    drill = Ladder(**_drill_steps(document["drill_ladder"]), escalate_to=())
    messages = [f"drill_ladder: {problem}" for problem in drill.problems()]
    messages += _check_groups(document, domains)
    for domain, actions in document["actions"].items():
        if domain not in domains.domains:
            messages.append(f"actions.{domain}: unknown domain {domain!r}")
            continue
        for action, raw in actions.items():
            messages += _check_action(domain, action, raw, document, capabilities)
            try:
                _ladder(domains, domain, raw)
            except ValueError as exc:
                messages.append(f"actions.{domain}.{action}: {exc}")
    # Completeness: a privileged capability granted to a domain must say who approves it there.
    for capability in capabilities.capabilities.values():
        for domain in capability.domains if capability.privileged else ():
            if capability.name not in document["actions"].get(domain, {}):
                messages.append(
                    f"actions.{domain}: privileged capability {capability.name!r} is granted to "
                    f"{domain!r} but has no approval rule there"
                )
    return messages


def _build(document: dict[str, Any], source: Path, *, domains: Policy, **_: object) -> ApprovalPolicy:
    groups = {
        name: ApproverGroup(name, raw["description"], tuple(raw["domains"]), raw["email"])
        for name, raw in document["groups"].items()
    }
    rules = {}
    for domain, actions in document["actions"].items():
        for action, raw in actions.items():
            steps, destroy_steps, privileged_steps = (
                tuple(
                    ApprovalStep(tuple(step["any_of"]), tuple(groups[r].email for r in step["any_of"]))
                    for step in raw.get(key, [])
                )
                for key in STEP_KEYS
            )
            emails = {name: group.email for name, group in groups.items()}
            rules[(domain, action)] = ApprovalRule(
                domain,
                action,
                steps,
                _ladder(domains, domain, raw, emails),
                destroy_steps,
                privileged_steps,
                escalate_to=tuple(raw.get("escalate_to", [])),
            )
    return ApprovalPolicy(
        source=source, groups=groups, rules=rules, drill_ladder=_drill_steps(document["drill_ladder"])
    )


APPROVALS = PolicyFile("approvals", "approval policy", build=_build, rules=_rules)


def load_approvals_file(
    path: Path, domains: Policy | None = None, capabilities: CapabilityPolicy | None = None
) -> ApprovalPolicy:
    """Load and validate one approval policy file.

    :param path: the file to load.
    :param domains: the domain policy the rules refer to; the deployed one by default.
    :param capabilities: the capability policy the actions refer to; the deployed one by default.
    :raises PolicyError: the file is unreadable or invalid; the message lists every problem.
    """
    return APPROVALS.load(
        path, domains=domains or load_domain_policy(), capabilities=capabilities or load_capabilities()
    )


@cache
def load_approvals() -> ApprovalPolicy:
    """The deployed approval policy (``approvals.yaml``), loaded once per process."""
    return load_approvals_file(APPROVALS_FILE)
