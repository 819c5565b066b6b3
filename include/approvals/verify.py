"""The approval guarantee: a privileged step acts only on a verified human answer.

Every privileged operator (a ``capability`` marked ``privileged: true`` in
``include/policies/capabilities.yaml``) inherits :class:`RequiresApproval`. Before its side effect
the step proves, from Airflow's own record of the answer (the HITL detail of this run's gate in the
metadata database, read through Airflow's REST API, never an XCom and never a task state), that:

- the request of every gate step this change needs was answered ``Approve`` by a person (a
  timeout's default has no responder);
- each request was asked of exactly the approver groups the policy names for the step, excluding
  the user who triggered the run (``assigned_users``), and of exactly the action's escalation
  groups (``escalate_to``) from exactly the request's creation time plus the gate's
  ``escalate_after`` (within :data:`ESCALATION_SKEW`: a crafted earlier time is refused);
- an escalation group's member answered at or after that time (the auth manager refuses earlier
  answers; the check is made again here on ``responded_at``);
- each responder is not the triggering user, not the responder of an earlier step, and is a member
  of one of the step's groups (the auth manager checked that when the answer arrived; the check is
  made again here, so someone removed from the group since no longer carries the approval);
- the request was for this action and this artifact (the plan's or export's SHA-256, a digest of
  the run params that name the host, account or employee): the gate writes a binding line at the
  end of the request body (:func:`binding_line`) and the step compares it with what it is about to
  act on;
- the run is not an approval drill (a drill's privileged steps are skipped, whatever the answer).

A missing or mismatched answer fails the step at once (no retry can create an approval) with a
message that names what is wrong, and writes a ``policy.violation`` audit record. A verified
approval is an ``approval.verified`` record naming the approvers, and is registered for this task
instance so that :func:`include.connectors.aws.assume_role_request` hands out a privileged role
only after it (:func:`require_verified`).

Why a REST client (:class:`~include.connectors.airflow_api.AirflowApiHook`) rather than the Task
SDK: the Execution API lets a task read only its *own* HITL detail (``ti:self`` scope), and tasks
have no metadata database access in Airflow 3, so the public API with a read-only service account
(connection ``airflow_api``, role ``approval_verifier`` created by ``policy-sync``) is the one
interface that shows another task's answer together with its task instance.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Protocol

from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from include.approvals.respondents import AFTER_PREFIX, EXCLUDE_PREFIX, ROLE_PREFIX, parse_escalation

APPROVE = "Approve"
DRILL_PARAM = "approval_drill"
APPROVAL_VERIFIED = "approval.verified"
BINDING_PREFIX = "- **Binding:** "
_BINDING = re.compile(r"^- \*\*Binding:\*\* `(?P<json>\{[^`\n]*\})`$")
# What may be bound: a hash, a host or account name; never a backtick or a line break, which would
# let a rendered value forge or break the binding line.
ARTIFACT_PATTERN = re.compile(r"^[^`\r\n]{1,512}$")
# How far an escalation entry's time may lie from the request's creation time (Airflow's
# ``created_at``, set when the gate's request is stored) plus ``escalate_after``: the gate takes its
# time just before storing the request and rounds it up to the second.
ESCALATION_SKEW = timedelta(seconds=10)


class ApprovalVerificationError(AirflowFailException):
    """No verified approval for this step: fails the task at once (a retry cannot create one)."""


# ---------------------------------------------------------------------------------------------
# The binding: what a request was for, written by the gate, read by the step


def binding(
    *,
    action: str,
    step: int,
    steps: int,
    artifact: str | None,
    destructive: bool,
    privileged: bool,
    drill: bool,
) -> dict[str, Any]:
    if artifact is not None and not ARTIFACT_PATTERN.match(artifact):
        raise ValueError(
            f"approval artifact {artifact[:40]!r}: one line of 1-512 characters without backticks"
        )
    return {
        "action": action,
        "artifact": artifact,
        "destructive": destructive,
        "drill": drill,
        "privileged": privileged,
        "step": step,
        "steps": steps,
    }


def binding_line(value: Mapping[str, Any]) -> str:
    """The request body's last line: what exactly is approved, readable and machine-checked."""
    return f"{BINDING_PREFIX}`{json.dumps(dict(value), sort_keys=True, separators=(',', ':'))}`"


def parse_binding(body: str | None) -> dict[str, Any] | None:
    """The binding of a request body: its *last* line only (text rendered above it cannot forge it)."""
    lines = (body or "").rstrip("\n").split("\n")
    match = _BINDING.match(lines[-1]) if lines else None
    if match is None:
        return None
    try:
        value = json.loads(match["json"])
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def params_artifact(params: Mapping[str, Any], names: Sequence[str]) -> str:
    """``params:<names>:sha256:<hex>``: the run params that name what a step acts on, as one digest.

    Computed by the gate when it asks and by the step before it acts, from the run's validated
    params (never from an upstream XCom).
    """
    values = {name: params.get(name) for name in sorted(names)}
    digest = hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()
    return f"params:{','.join(sorted(names))}:sha256:{digest}"


# ---------------------------------------------------------------------------------------------
# Airflow's record of the answers


class ApprovalRecords(Protocol):
    """Reads Airflow's record of approval requests and of the people who answer them."""

    def hitl_detail(self, dag_id: str, run_id: str, task_id: str) -> Mapping[str, Any] | None: ...

    def roles_of(self, username: str) -> set[str]: ...


def airflow_api_records() -> ApprovalRecords:
    """:class:`ApprovalRecords` through Airflow's public REST API, as the ``airflow_api`` connection's
    user (:class:`~include.connectors.airflow_api.AirflowApiHook`); imported when a step verifies,
    so a DAG parse loads no HTTP client."""
    from include.connectors.airflow_api import AirflowApiHook

    return AirflowApiHook()


# A factory, so unit tests (and a deployment with another auth manager) can put another reader in.
records_factory: Callable[[], ApprovalRecords] = airflow_api_records


# ---------------------------------------------------------------------------------------------
# The verification


@dataclass(frozen=True)
class Approver:
    step: int
    name: str
    id: str
    responded_at: str | None
    # The escalation group the answer was accepted for (after escalation), or None.
    escalation_group: str | None = None


@dataclass(frozen=True)
class VerifiedApproval:
    action: str
    artifact: str | None
    destructive: bool
    privileged: bool
    approvers: tuple[Approver, ...] = field(default_factory=tuple)

    def as_details(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "artifact": self.artifact,
            "destructive": self.destructive,
            "privileged": self.privileged,
            "approvers": [
                {
                    "step": a.step,
                    "name": a.name,
                    "id": a.id,
                    "responded_at": a.responded_at,
                    **(
                        {"after_escalation": True, "escalation_group": a.escalation_group}
                        if a.escalation_group
                        else {}
                    ),
                }
                for a in self.approvers
            ],
        }


@dataclass(frozen=True)
class GateRef:
    """One gate step upstream of the step: its task id and step number (from the DAG)."""

    task_id: str
    step: int
    # The gate's own ladder step (a workflow may tighten the policy's); ``None``: the policy's.
    escalate_after: timedelta | None = None


def _refuse(rule: str, message: str) -> ApprovalVerificationError:
    error = ApprovalVerificationError(message)
    error.rule = rule  # type: ignore[attr-defined]
    return error


@dataclass
class _Walk:
    """State of one verification: who may no longer answer, what step 1 bound."""

    excluded: set[str]
    artifact: str | None = None


def _index_gates(action: str, gates: Sequence[GateRef]) -> dict[int, GateRef]:
    if not gates:
        raise _refuse("no-gate", f"no approval gate for {action!r} upstream of this step")
    by_step: dict[int, GateRef] = {}
    for gate in gates:
        if gate.step in by_step:
            raise _refuse("ambiguous-gate", f"two approval gates for {action!r} step {gate.step} upstream")
        by_step[gate.step] = gate
    if 1 not in by_step:
        raise _refuse("no-gate", f"no first approval step for {action!r} upstream of this step")
    return by_step


def _flags(where: str, head: Mapping[str, Any] | None, known: Mapping[str, bool | None]) -> dict[str, bool]:
    """``destructive``/``privileged`` of the request, which must agree with what the step knows."""
    if head is None:
        raise _refuse("no-answer", f"{where}: no approval request recorded in Airflow for this run")
    value = parse_binding(head.get("body"))
    if value is None:
        raise _refuse("binding", f"{where}: the request has no binding line: not made by an approval gate")
    flags = {name: bool(value.get(name)) for name in ("destructive", "privileged")}
    for name, expected in known.items():
        if expected is not None and bool(expected) != flags[name]:
            said = name if flags[name] else f"not {name}"
            real = name if expected else f"not {name}"
            raise _refuse("binding", f"{where}: approved as {said}, but this change is {real}")
    return flags


def _check_request(where: str, detail: Mapping[str, Any], expected: Mapping[str, Any], walk: _Walk) -> None:
    """The request is the gate's, for this action, step and artifact."""
    value = parse_binding(detail.get("body"))
    if value is None or any(value.get(k) != v for k, v in expected.items()):
        raise _refuse(
            "binding",
            f"{where}: the request was for {json.dumps(value, sort_keys=True)}, "
            f"not for {json.dumps(dict(expected), sort_keys=True)}",
        )
    if expected["step"] == 1:
        walk.artifact = value.get("artifact")
    elif value.get("artifact") != walk.artifact:
        raise _refuse("artifact", f"{where}: approved artifact differs from step 1's")


def _time(value: Any) -> datetime | None:
    """An aware UTC time from Airflow's record (ISO text), or None."""
    if isinstance(value, datetime):
        at = value
    else:
        try:
            at = datetime.fromisoformat(str(value))
        except ValueError:
            return None
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def _check_assignment(
    where: str,
    detail: Mapping[str, Any],
    any_of: Sequence[str],
    triggered_by: str | None,
    escalate_to: Sequence[str] = (),
    escalate_after: timedelta | None = None,
) -> dict[str, datetime]:
    """The request was asked of exactly the step's groups, never of named people, not of the trigger,
    and of exactly the escalation groups from exactly the escalation time.

    :returns: escalation group -> the time from which it may answer.
    """
    assigned = {str(u.get("id")) for u in detail.get("assigned_users") or ()}
    asked = {a[len(ROLE_PREFIX) :] for a in assigned if a.startswith(ROLE_PREFIX)}
    if asked != set(any_of):
        raise _refuse(
            "approver-group", f"{where}: asked of {sorted(asked)}, but the policy asks {sorted(any_of)}"
        )
    people = sorted(a for a in assigned if not a.startswith((ROLE_PREFIX, EXCLUDE_PREFIX, AFTER_PREFIX)))
    if people:
        raise _refuse("approver-group", f"{where}: assigned to individual users {people}, not to groups")
    if triggered_by and f"{EXCLUDE_PREFIX}{triggered_by}" not in assigned:
        raise _refuse(
            "four-eyes", f"{where}: the request did not exclude {triggered_by}, who triggered the run"
        )
    return _check_escalation(where, detail, assigned, escalate_to, escalate_after)


def _check_escalation(
    where: str,
    detail: Mapping[str, Any],
    assigned: set[str],
    escalate_to: Sequence[str],
    escalate_after: timedelta | None,
) -> dict[str, datetime]:
    entries = sorted(a for a in assigned if a.startswith(AFTER_PREFIX))
    opens: dict[str, datetime] = {}
    for entry in entries:
        parsed = parse_escalation(entry)
        if parsed is None:
            raise _refuse("escalation", f"{where}: malformed escalation entry {entry[:80]!r}")
        at, group = parsed
        if group in opens:
            raise _refuse("escalation", f"{where}: escalation group {group!r} asked twice")
        opens[group] = at
    if set(opens) != set(escalate_to):
        raise _refuse(
            "escalation",
            f"{where}: escalates to {sorted(opens)}, but the policy escalates to {sorted(escalate_to)}",
        )
    if not opens:
        return opens
    created = _time(detail.get("created_at")) if detail.get("created_at") else None
    if created is None or escalate_after is None:
        raise _refuse("escalation", f"{where}: no request time to check the escalation time against")
    expected = created + escalate_after
    for group, at in sorted(opens.items()):
        if abs(at - expected) > ESCALATION_SKEW:
            said = "earlier" if at < expected else "later"
            raise _refuse(
                "escalation",
                f"{where}: {group!r} may answer from {at.isoformat()}, {said} than the policy's "
                f"escalation at {expected.isoformat()} (request at {created.isoformat()} + {escalate_after})",
            )
    return opens


def _check_answer(
    where: str,
    detail: Mapping[str, Any],
    step: int,
    any_of: Sequence[str],
    walk: _Walk,
    records: ApprovalRecords,
    escalation: Mapping[str, datetime] | None = None,
) -> Approver:
    """An explicit Approve by a person allowed to give it."""
    if not detail.get("response_received"):
        raise _refuse("no-answer", f"{where}: the approval request has not been answered")
    responder = detail.get("responded_by_user") or None
    chosen = list(detail.get("chosen_options") or [])
    if responder is None:
        raise _refuse("no-answer", f"{where}: answered by nobody (the timeout's {chosen}): not approved")
    name = str(responder.get("name") or "")
    if chosen != [APPROVE]:
        raise _refuse("rejected", f"{where}: {name} answered {chosen}, not {[APPROVE]}")
    if name in walk.excluded:
        raise _refuse(
            "four-eyes", f"{where}: answered by {name}, who triggered the run or answered an earlier step"
        )
    roles = records.roles_of(name)
    via = None
    if not roles & set(any_of):
        via = _escalated_answer(where, name, roles, any_of, detail.get("responded_at"), escalation or {})
    walk.excluded.add(name)
    return Approver(
        step=step,
        name=name,
        id=str(responder.get("id") or ""),
        responded_at=detail.get("responded_at"),
        escalation_group=via,
    )


def _escalated_answer(
    where: str,
    name: str,
    roles: set[str],
    any_of: Sequence[str],
    responded_at: Any,
    escalation: Mapping[str, datetime],
) -> str:
    """The escalation group an answer by someone outside ``any_of`` counts for: answered at or
    after that group's time; refuses otherwise."""
    groups = sorted(roles & set(escalation))
    if not groups:
        allowed = sorted({*any_of, *escalation})
        raise _refuse("approver-group", f"{where}: {name} is in none of {allowed} (roles: {sorted(roles)})")
    at = _time(responded_at) if responded_at else None
    if at is None:
        raise _refuse("escalation", f"{where}: answered by {name} of {groups} at no recorded time")
    opened = [group for group in groups if at >= escalation[group]]
    if not opened:
        first = min(escalation[group] for group in groups)
        raise _refuse(
            "escalation",
            f"{where}: {name} answered at {at.isoformat()} as {', '.join(groups)}, before escalation "
            f"at {first.isoformat()}",
        )
    return opened[0]


def check_answers(
    *,
    records: ApprovalRecords,
    dag_id: str,
    run_id: str,
    domain: str,
    action: str,
    gates: Sequence[GateRef],
    triggered_by: str | None,
    artifact: str | None,
    destructive: bool | None = None,
    privileged: bool | None = None,
    drill: bool = False,
) -> VerifiedApproval:
    """The verification itself, on Airflow's records; raises :class:`ApprovalVerificationError`.

    :param gates: the gate steps of ``action`` upstream of the step, any order.
    :param artifact: what the step is about to act on; ``None``: the step checks the approved
        artifact against the real object itself (a plan or export file), which must then be bound.
    :param destructive: what the step knows of the change, if it knows: the approval must have
        been asked with the same flag (a destroying plan cannot ride on a one-step approval).
    :param privileged: the same for a privileged grant.
    """
    from include.policies.approvals import load_approvals

    rule = load_approvals().rule(domain, action)
    by_step = _index_gates(action, gates)
    details = {number: records.hitl_detail(dag_id, run_id, ref.task_id) for number, ref in by_step.items()}
    flags = _flags(by_step[1].task_id, details[1], {"destructive": destructive, "privileged": privileged})
    walk = _Walk(excluded={triggered_by} if triggered_by else set())
    needed = rule.steps_for(**flags)
    approvers = []
    for number, step in enumerate(needed, start=1):
        ref = by_step.get(number)
        if ref is None:
            raise _refuse("no-gate", f"{action!r} needs {len(needed)} approval(s); no gate for step {number}")
        detail = details[number]
        if detail is None:
            raise _refuse("no-answer", f"{ref.task_id}: no approval request recorded in Airflow for this run")
        expected = {"action": action, "step": number, "steps": len(needed), "drill": drill, **flags}
        _check_request(ref.task_id, detail, expected, walk)
        escalation = _check_assignment(
            ref.task_id,
            detail,
            step.any_of,
            triggered_by,
            rule.escalate_to,
            _escalate_after(ref, rule.ladder.escalate_after, drill=drill),
        )
        approvers.append(_check_answer(ref.task_id, detail, number, step.any_of, walk, records, escalation))
    if artifact is not None and walk.artifact != artifact:
        raise _refuse(
            "artifact",
            f"approved {action!r} for artifact {walk.artifact!r}, but this step acts on {artifact!r}",
        )
    if artifact is None and not walk.artifact:
        raise _refuse("artifact", f"the approval of {action!r} names no artifact; this step needs one")
    return VerifiedApproval(action=action, artifact=walk.artifact, approvers=tuple(approvers), **flags)


def _escalate_after(ref: GateRef, policy: timedelta, *, drill: bool) -> timedelta:
    """When the gate escalated, after its request: its own ladder step (never later than the
    policy's), at drill pace in a drill (as the gate's :meth:`ladder_for`)."""
    from include.policies.approvals import load_approvals

    after = policy if ref.escalate_after is None else ref.escalate_after
    if after > policy:
        raise _refuse(
            "escalation", f"{ref.task_id}: escalates after {after}, later than the policy's {policy}"
        )
    return min(after, load_approvals().drill_ladder["escalate_after"]) if drill else after


# Verified approvals of this process, by (task instance id, capability): the capability roles
# are handed out only after one (include.connectors.aws).
_verified: dict[tuple[str, str], VerifiedApproval] = {}


def require_verified(ti_id: str, capability: str) -> VerifiedApproval:
    try:
        return _verified[(ti_id, capability)]
    except KeyError:
        raise ApprovalVerificationError(
            f"privileged capability {capability!r} without a verified approval in this task: "
            "only a step built on RequiresApproval may use it, after its gate was approved"
        ) from None


def gates_upstream(task: Any, action: str) -> list[GateRef]:
    """The approval gate steps of ``action`` upstream of ``task`` in its DAG."""
    return [
        GateRef(
            task_id=t.task_id,
            step=int(getattr(t, "step", 1)),
            escalate_after=getattr(getattr(t, "ladder", None), "escalate_after", None),
        )
        for t in task.get_flat_relatives(upstream=True)
        if getattr(t, "approval_action", None) == action and hasattr(t, "earlier_steps")
    ]


def _domain(task: Any) -> str:
    from include.policies.loader import domain_tags

    domains = domain_tags(task.dag)
    if len(domains) != 1:
        raise _refuse("domain", f"{task.task_id}: the DAG has no single domain tag")
    return domains[0]


def _audit(context: Mapping[str, Any], kind: str, tenant: str | None, details: Mapping[str, Any]) -> None:
    from include.audit.emit import emit, task_event

    emit(task_event(context, kind, tenant=tenant, actor="airflow", details=details))


def verify_approval(
    context: Mapping[str, Any],
    capability: str,
    *,
    artifact: str | None,
    destructive: bool | None = None,
    privileged: bool | None = None,
    tenant: str | None = None,
) -> VerifiedApproval:
    """Verify the approval of ``capability`` for the running task (see the module docstring)."""
    ti = context["ti"]
    task = context["task"]
    dag_run = context.get("dag_run")
    drill = bool((context.get("params") or {}).get(DRILL_PARAM))
    if drill:
        raise AirflowSkipException(
            f"approval drill: {task.task_id} ({capability}) is skipped whatever the answer; nothing changed"
        )
    try:
        approval = check_answers(
            records=records_factory(),
            dag_id=ti.dag_id,
            run_id=ti.run_id,
            domain=_domain(task),
            action=capability,
            gates=gates_upstream(task, capability),
            triggered_by=getattr(dag_run, "triggering_user_name", None),
            artifact=artifact,
            destructive=destructive,
            privileged=privileged,
        )
    except ApprovalVerificationError as error:
        from include.audit.records import POLICY_VIOLATION

        _audit(
            context,
            POLICY_VIOLATION,
            tenant,
            {
                "rule": f"approval-{getattr(error, 'rule', 'verification')}",
                "capability": capability,
                "message": str(error),
            },
        )
        raise ApprovalVerificationError(f"{task.task_id}: refused to act: {error}") from None
    _verified[(str(ti.id), capability)] = approval
    task.log.info(
        "approval of %s verified in Airflow's record: %s; artifact %s",
        capability,
        ", ".join(
            f"step {a.step} by {a.name} at {a.responded_at}"
            + (f" (escalation group {a.escalation_group})" if a.escalation_group else "")
            for a in approval.approvers
        ),
        approval.artifact,
    )
    _audit(context, APPROVAL_VERIFIED, tenant, {"capability": capability, **approval.as_details()})
    return approval


class RequiresApproval:
    """Mixin of every privileged operator: :meth:`execute` verifies the approval, then :meth:`act`.

    Subclasses set ``capability`` (a privileged capability) and implement :meth:`act`; they may set
    ``artifact_fields`` (run param name -> the operator attribute holding what it acts on; the
    digest of those values must be the one the gate bound from the run params, see
    :func:`params_artifact`) or override :meth:`expected_artifact` / :meth:`expected_flags`.
    ``self.approval`` holds the verified approval while :meth:`act` runs. A subclass cannot
    override ``execute`` (the check would be skippable): that is a ``TypeError`` at import.
    """

    capability: str = ""
    artifact_fields: ClassVar[Mapping[str, str]] = {}
    approval: VerifiedApproval | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "execute" in cls.__dict__:
            raise TypeError(f"{cls.__name__}: a privileged step implements act(), not execute()")

    def expected_artifact(self, context: Any) -> str | None:
        """What this step acts on, to compare with the approved artifact; ``None``: checked by :meth:`act`."""
        if self.artifact_fields:
            # The step's own (rendered) values, not the params: what it is really about to act on.
            values = {name: getattr(self, attribute) for name, attribute in self.artifact_fields.items()}
            return params_artifact(values, list(values))
        return None

    def on_refused(self, context: Any, error: BaseException) -> None:
        """Called when the verification refuses, before the task fails (e.g. to tell the ticket)."""

    def expected_flags(self, context: Any) -> dict[str, bool]:
        """``destructive`` / ``privileged`` as the step knows them (empty: taken from the request)."""
        return {}

    def approval_tenant(self) -> str | None:
        return getattr(self, "tenant", None) or None

    def execute(self, context: Any) -> Any:
        try:
            self.approval = verify_approval(
                context,
                self.capability,
                artifact=self.expected_artifact(context),
                tenant=self.approval_tenant(),
                **self.expected_flags(context),
            )
        except ApprovalVerificationError as error:
            self.on_refused(context, error)
            raise
        return self.act(context)

    def act(self, context: Any) -> Any:
        raise NotImplementedError
