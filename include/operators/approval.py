"""The approval gate: Airflow's human-in-the-loop approval, with the platform's rules on top.

Built on :class:`~airflow.providers.standard.operators.hitl.ApprovalOperator` (Approve / Reject,
reject skips the downstream steps), shown in the UI's required actions and answerable through
the UI or ``PATCH .../hitlDetails``. What it adds, all from ``include/policies/approvals.yaml``:

- who may answer: the approver groups of the action (roles, checked by the auth manager when the
  answer arrives), never the user who triggered the run nor whoever answered an earlier step
  (four-eyes; see :mod:`include.approvals.respondents`);
- the escalation ladder: request email to the approvers, reminder after ``remind_after``,
  escalation email to the backup group and a ticket comment after ``escalate_after`` (both sent
  by the trigger, see :mod:`include.triggers.approval`), and at ``timeout`` the fail-safe answer
  Reject (the privileged step is skipped, never approved by default), each step recorded in the
  XCom ``approval_ladder`` as it happens and in the final ``approval`` record;
- a request that says what will happen, for which run and correlation id;
- the answer (who, when, option, comment) pushed to XCom ``approval`` for downstream steps;
- approval drills: a run with the DAG param ``approval_drill`` climbs the ladder at the policy's
  ``drill_ladder`` pace (seconds; only ever shorter), marked DRILL in its mails and ticket
  comment and ``"drill": true`` in its request, timeout and answer audit records and its
  ``approval`` record. The timeout still rejects, so a drill approves nothing.

Why it defers to a trigger instead of Airflow 3.3's ``awaiting_input`` park: the park has no
hook for reminders and escalation (the scheduler only applies the default at the timeout), and
an answer is applied the same way in both states (the API server resumes a deferred HITL task
directly), so the answer is no slower. The deferred task holds no worker and no pool slot; it
defers once and is resumed once, with the answer or the timeout.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.configuration import conf
from airflow.providers.standard.exceptions import HITLTriggerEventError
from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import Param
from airflow.sdk.exceptions import AirflowFailException
from airflow.sdk.execution_time.hitl import upsert_hitl_detail
from airflow.sdk.timezone import utcnow

from include.approvals import messages
from include.approvals.channels import notify as notify_channels
from include.approvals.messages import RequestFacts
from include.approvals.notify import send_email
from include.approvals.respondents import assigned_respondents, escalation_respondents, escalation_time
from include.approvals.second_factor import OTP_FIELD
from include.approvals.verify import ARTIFACT_PATTERN, binding, params_artifact
from include.audit.emit import emit as audit_emit
from include.audit.emit import task_event
from include.audit.records import APPROVAL_ANSWERED, APPROVAL_ESCALATED, APPROVAL_REQUESTED
from include.connectors.context import RunContext
from include.policies.approvals import ApprovalRule, ApprovalStep, Ladder, load_approvals
from include.policies.loader import domain_tags, load_domain_policy
from include.triggers.approval import LADDER_XCOM_KEY, ApprovalLadderTrigger

XCOM_KEY = "approval"
# The DAG param that makes a run an approval drill (added by include.workflows.approval_gate).
DRILL_PARAM = "approval_drill"
# Kwargs the gate sets from policy; a DAG cannot pass them.
POLICY_OWNED = ("options", "defaults", "assigned_users", "response_timeout", "notifiers")


def domain_of_dag(dag: Any) -> str | None:
    """The DAG's one domain (its ``domain:<name>`` tag), or ``None``."""
    names = domain_tags(dag)
    return names[0] if len(names) == 1 else None


class ApprovalGateOperator(ApprovalOperator):
    """One approval step of a privileged action.

    :param approval_action: the privileged capability this gate approves (e.g. ``host-isolate``);
        the policy check requires a gate for it upstream of every step using it.
    :param subject: one line: what is asked (templated).
    :param body: what will happen: the plan, the account, the host (templated, Markdown).
    :param step: which step of the action's approval chain (1-based).
    :param earlier_steps: task ids of the steps before; their respondents may not answer this one.
    :param tenant: the tenant, for the ticket comment (templated).
    :param ticket_id: the ticket that gets a comment on escalation (templated; optional).
    :param ticket_system: the ticketing system of ``ticket_id`` (``request_tracker`` or ``jira``).
    :param ladder: tighter ladder steps than the policy's (``remind_after``, ``escalate_after``,
        ``timeout`` as timedelta); never looser.
    :param artifact: what exactly is approved (e.g. a plan's SHA-256; templated): shown, recorded
        and bound to the request (:func:`include.approvals.verify.binding_line`), so the step after
        checks it applies that and nothing else.
    :param artifact_params: instead of ``artifact``: the run params that name what is approved (the
        host, the account, the employee record); the artifact is their digest
        (:func:`include.approvals.verify.params_artifact`), which the privileged step recomputes.
    :param destructive: templated; "True" when the change destroys something: the policy's
        ``destroy_steps`` apply instead of ``steps``.
    :param privileged: templated; "True" when what is granted is privileged (e.g. an HR role with
        admin groups): the policy's ``privileged_steps`` apply (``destroy_steps`` win if both). A
        step beyond the steps that apply is "not required" and passes.
    :param poke_interval: seconds between the trigger's checks for an answer.
    """

    template_fields: Sequence[str] = (
        "subject",
        "body",
        "tenant",
        "ticket_id",
        "artifact",
        "destructive",
        "privileged",
    )
    ui_color = "#ffe8cc"

    def __init__(
        self,
        *,
        approval_action: str,
        subject: str,
        body: str,
        step: int = 1,
        earlier_steps: Sequence[str] = (),
        tenant: str | None = None,
        ticket_id: str | None = None,
        ticket_system: str = "request_tracker",
        artifact: str | None = None,
        artifact_params: Sequence[str] = (),
        destructive: str | bool = False,
        privileged: str | bool = False,
        ladder: Mapping[str, timedelta] | None = None,
        poke_interval: float = 5.0,
        **kwargs: Any,
    ) -> None:
        owned = sorted(set(POLICY_OWNED) & kwargs.keys())
        if owned:
            raise ValueError(
                f"approval gate {kwargs.get('task_id')}: {', '.join(owned)} come from the approval policy"
            )
        # Injected from the DAG (default_args, DAG params): the gate has its own.
        kwargs.pop("retries", None)
        kwargs.pop("params", None)
        super().__init__(
            subject=subject,
            body=body,
            defaults=[self.REJECT],
            params={
                "comment": Param(
                    "",
                    type="string",
                    maxLength=2000,
                    title="Comment",
                    description="Recorded with your answer.",
                ),
                # The second factor (include/approvals/second_factor.py): the approval door takes it
                # out of the answer and has the MFA server check it before Airflow sees the answer.
                OTP_FIELD: Param(
                    "",
                    type="string",
                    maxLength=6,
                    title="One-time code",
                    description="The 6-digit code your authenticator app shows now (checked, never stored).",
                ),
            },
            retries=0,  # a human decision is asked once; a failed gate fails closed
            **kwargs,
        )
        domain = domain_of_dag(self.dag) if self.has_dag() else None
        if domain is None:
            raise ValueError(
                f"approval gate {self.task_id}: use it inside a domain workflow (one domain:<name> DAG tag)"
            )
        self.domain = domain
        self.approval_action = approval_action
        self.rule: ApprovalRule = load_approvals().rule(domain, approval_action)
        if not 1 <= step <= self.rule.max_steps:
            raise ValueError(
                f"approval gate {self.task_id}: step {step} of {approval_action!r}, which has "
                f"{self.rule.max_steps} step(s)"
            )
        self.step = step
        self.earlier_steps = list(earlier_steps)
        self.ladder: Ladder = self.rule.ladder.tightened(**dict(ladder or {}))
        self.response_timeout = self.ladder.timeout
        self.tenant = tenant
        self.ticket_id = ticket_id
        self.ticket_system = ticket_system
        self.poke_interval = poke_interval
        if artifact is not None and artifact_params:
            raise ValueError(f"approval gate {self.task_id}: give artifact or artifact_params, not both")
        self.artifact = artifact
        self.artifact_params = tuple(artifact_params)
        self.destructive = destructive
        self.privileged = privileged
        # Set by the answer (_decide), sent by announce_outcome after the gate's success is reported.
        self._outcome_notice: dict[str, Any] | None = None
        self.on_success_callback = [*self.on_success_callback, announce_outcome]

    # ---------------------------------------------------------------------------------------
    # The request

    def execute(self, context: Any) -> Any:
        ti = context["ti"]
        if self.artifact_params:
            self.artifact = params_artifact(context["params"], self.artifact_params)
        if self.artifact is not None and not ARTIFACT_PATTERN.match(str(self.artifact)):
            raise AirflowFailException(
                f"approval gate {self.task_id}: the artifact to approve is not a single line of 1-512 "
                "characters without backticks; nothing was asked"
            )
        if self.step > len(self._steps):
            record = {**self._base_record(), "outcome": "not_required", "approved": True}
            self.log.info(
                "approval %s step %d not required: this change needs %d step(s)",
                self.approval_action,
                self.step,
                len(self._steps),
            )
            ti.xcom_push(key=XCOM_KEY, value=record)
            return record
        drill = bool(context["params"].get(DRILL_PARAM))
        ladder = self.ladder_for(drill=drill)
        triggered_by = getattr(context["dag_run"], "triggering_user_name", None)
        earlier = [self._respondent_of(ti, task_id) for task_id in self.earlier_steps]
        excluded = sorted({name for name in (triggered_by, *earlier) if name})
        requested_at = utcnow()
        # The escalation groups may answer too, from request time + escalate_after (this request's
        # ladder: a drill's is shorter), never before (include/approvals/respondents.py).
        self.assigned_users = assigned_respondents(self._step.any_of, excluded) + escalation_respondents(
            self.rule.escalate_to, requested_at + ladder.escalate_after
        )
        facts = self._facts(context, requested_at, excluded, triggered_by, ladder, drill=drill)
        facts = replace(
            facts,
            binding=binding(
                action=self.approval_action,
                step=self.step,
                steps=len(self._steps),
                artifact=self.artifact,
                destructive=self._is_destructive,
                privileged=self._is_privileged,
                drill=drill,
            ),
        )
        upsert_hitl_detail(
            ti_id=ti.id,
            options=self.options,
            subject=messages.request_subject(facts),
            body=messages.request_body(facts),
            defaults=self.defaults,
            multiple=False,
            params=self.serialized_params,
            assigned_users=self.assigned_users,
        )
        self.log.info(
            "approval requested%s: %s step %d/%d, answer by any of %s, not %s; auto-reject at %s",
            " (DRILL: reminder, escalation, auto-reject at drill pace)" if drill else "",
            self.approval_action,
            self.step,
            len(self._steps),
            ", ".join(self._step.any_of),
            ", ".join(excluded) or "-",
            facts.deadline.isoformat(),
        )
        sent = send_email(
            list(self._step.emails),
            *messages.request_email(facts),
            headers=messages.mail_headers(facts),
            log=self.log,
        )
        # The domain's Teams channel gets the request from the ladder's trigger, as soon as it runs
        # (include/triggers/approval.py): posting it here would delay the deferral, and so the
        # request's visibility, by a connection lookup and a webhook round trip.
        ti.xcom_push(
            key=LADDER_XCOM_KEY, value=[{"step": "requested", "at": requested_at.isoformat(), **sent}]
        )
        audit_emit(
            task_event(
                context,
                APPROVAL_REQUESTED,
                tenant=self.tenant,
                actor="airflow",
                subject=messages.request_subject(facts),
                details={
                    **self._audit_base(),
                    "any_of": list(self._step.any_of),
                    "excluded": excluded,
                    "requested_at": requested_at.isoformat(),
                    "deadline": facts.deadline.isoformat(),
                    "to": list(sent.get("to", [])),
                    **({"drill": True} if drill else {}),
                },
            )
        )
        ticket = (
            {"system": self.ticket_system, "tenant": self.tenant, "ticket_id": self.ticket_id}
            if self.ticket_id and self.tenant
            else None
        )
        self.defer(
            trigger=ApprovalLadderTrigger(
                ti_id=ti.id,
                options=self.options,
                params={},  # the answer's params are checked by the gate, leniently (see _comment)
                defaults=self.defaults,
                multiple=False,
                timeout_datetime=facts.deadline,
                poke_interval=self.poke_interval,
                facts=facts.as_dict(),
                approver_emails=list(self._step.emails),
                target={
                    "dag_id": ti.dag_id,
                    "run_id": ti.run_id,
                    "task_id": ti.task_id,
                    "map_index": ti.map_index,
                },
                ticket=ticket,
                tenant=self.tenant or None,
            ),
            method_name="execute_complete",
            kwargs={"facts": facts.as_dict()},
        )

    def ladder_for(self, *, drill: bool) -> Ladder:
        """This request's ladder: the gate's own, or in a drill the policy's drill pace (only shorter)."""
        return load_approvals().drill(self.ladder) if drill else self.ladder

    @property
    def _is_destructive(self) -> bool:
        return str(self.destructive).strip().lower() in ("true", "1", "yes")

    @property
    def _is_privileged(self) -> bool:
        return str(self.privileged).strip().lower() in ("true", "1", "yes")

    @property
    def _steps(self) -> tuple[ApprovalStep, ...]:
        return self.rule.steps_for(destructive=self._is_destructive, privileged=self._is_privileged)

    @property
    def _step(self) -> ApprovalStep:
        return self._steps[self.step - 1]

    def _base_record(self) -> dict[str, Any]:
        return {
            "action": self.approval_action,
            "domain": self.domain,
            "step": self.step,
            "steps": len(self._steps),
            "destructive": self._is_destructive,
            "privileged": self._is_privileged,
            "artifact": self.artifact,
        }

    def _audit_base(self) -> dict[str, Any]:
        base: dict[str, Any] = {
            "action": self.approval_action,
            "step": self.step,
            "steps": len(self._steps),
            "destructive": self._is_destructive,
            "privileged": self._is_privileged,
        }
        if self.ticket_id:
            base["ticket_id"] = str(self.ticket_id)
        if self.artifact:
            base["artifact"] = self.artifact
        return base

    def _audit_escalation(self, context: Any, step: str, entry: Mapping[str, Any], *, drill: bool) -> None:
        audit_emit(
            task_event(
                context,
                APPROVAL_ESCALATED,
                tenant=self.tenant,
                actor="airflow",
                details={
                    **self._audit_base(),
                    "gate_step": self.step,
                    "step": step,
                    "to": list(entry.get("to", [])),
                    **({"drill": True} if drill else {}),
                },
            )
        )

    def _respondent_of(self, ti: Any, task_id: str) -> str | None:
        record = ti.xcom_pull(task_ids=task_id, key=XCOM_KEY) or {}
        return (record.get("responded_by") or {}).get("name")

    def _facts(
        self,
        context: Any,
        requested_at: datetime,
        excluded: list[str],
        triggered_by: str | None,
        ladder: Ladder,
        *,
        drill: bool = False,
    ) -> RequestFacts:
        run = RunContext.from_airflow_context(context, self.tenant or "platform")
        ti = context["ti"]
        base_url = (conf.get("api", "base_url", fallback="") or "").rstrip("/")
        return RequestFacts(
            domain=self.domain,
            action=self.approval_action,
            subject=self.subject,
            body=self.body or "",
            step=self.step,
            steps=len(self._steps),
            approver_roles=list(self._step.any_of),
            excluded=excluded,
            triggered_by=triggered_by,
            correlation_id=run.correlation_id,
            run_url=f"{base_url}/dags/{ti.dag_id}/runs/{ti.run_id}",
            answer_url=f"{base_url}/dags/{ti.dag_id}/runs/{ti.run_id}/tasks/{ti.task_id}/required_actions",
            requested_at=requested_at,
            remind_at=requested_at + ladder.remind_after,
            escalate_at=requested_at + ladder.escalate_after,
            deadline=requested_at + ladder.timeout,
            escalate_to=list(ladder.escalate_to),
            drill=drill,
        )

    # ---------------------------------------------------------------------------------------
    # The answer

    def execute_complete(
        self, context: Any, event: dict[str, Any], facts: dict[str, Any] | None = None
    ) -> Any:
        if facts is None:  # resumed without the gate's own state: not a request this gate made
            raise HITLTriggerEventError(f"approval gate {self.task_id} resumed without its request state")
        if "error" in event:
            self.process_trigger_event_error(event)  # raises: the gate fails closed
        return self._decide(context, RequestFacts.from_dict(facts), event)

    def _decide(self, context: Any, facts: RequestFacts, event: Mapping[str, Any]) -> Any:
        ti = context["ti"]
        chosen = list(event.get("chosen_options") or [])
        responder = event.get("responded_by_user")
        timed_out = responder is None
        # Fail-safe: only an explicit Approve from a person approves; anything else rejects.
        approved = not timed_out and chosen == [self.APPROVE]
        responded_at = event.get("responded_at")
        ladder = list(
            ti.xcom_pull(task_ids=self.task_id, key=LADDER_XCOM_KEY, map_indexes=ti.map_index) or []
        )
        skipped = [] if approved else self._downstream_to_skip(context)
        # Ladder steps the trigger could not send in time (include/triggers/approval.py): told here.
        missed = messages.missed_steps(ladder) if timed_out else []
        if timed_out:
            to = [
                *self._step.emails,
                *self.ladder.escalate_to,
                *load_domain_policy().domain(self.domain).alert_emails,
            ]
            sent = send_email(
                to,
                *messages.timeout_email(facts, skipped, missed),
                headers=messages.mail_headers(facts),
                log=self.log,
            )
            ladder.append({"step": "timeout", "at": utcnow().isoformat(), **sent})
        # The outcome to the domain's Teams channel and the page (if it escalated) resolved: not
        # here, on the way from the answer to the privileged step, but by announce_outcome once the
        # gate's success is reported (see there).
        self._outcome_notice = {
            "stage": "timed_out" if timed_out else "answered",
            "facts": facts,
            "target": _gate(ti),
            "tenant": self.tenant or None,
            "now": utcnow(),
            "outcome": {"approved": approved, "responded_by": (responder or {}).get("name")},
            "escalated": any(entry.get("step") == "escalation" for entry in ladder),
        }
        record = {
            **self._base_record(),
            "outcome": "approved" if approved else ("timed_out" if timed_out else "rejected"),
            "approved": approved,
            "chosen_options": chosen,
            "responded_by": dict(responder) if responder else None,
            "responded_at": responded_at.isoformat() if isinstance(responded_at, datetime) else responded_at,
            "comment": self._comment(event.get("params_input")),
            "correlation_id": facts.correlation_id,
            "triggered_by": facts.triggered_by,
            "requested_at": facts.requested_at.isoformat(),
            "ladder": ladder,
            "skipped": skipped,
            "drill": facts.drill,
        }
        ti.xcom_push(key=XCOM_KEY, value=record)
        if timed_out:
            self._audit_escalation(context, "timeout", ladder[-1], drill=facts.drill)
        audit_emit(
            task_event(
                context,
                APPROVAL_ANSWERED,
                tenant=self.tenant,
                actor=(responder or {}).get("name") or "timeout",
                subject=facts.subject,
                details={
                    **self._audit_base(),
                    "outcome": record["outcome"],
                    "option": chosen[0] if len(chosen) == 1 else None,
                    "comment": record["comment"],
                    "responded_at": record["responded_at"],
                    "responder_id": (responder or {}).get("id"),
                    **self._escalation_answer(facts, responded_at, timed_out),
                    **({"missed_steps": [step for step, _ in missed]} if missed else {}),
                    "skipped": skipped,
                    **({"drill": True} if facts.drill else {}),
                },
            )
        )
        self.log.info(
            "approval %s: %s by %s at %s; comment: %r",
            self.approval_action,
            record["outcome"],
            (responder or {}).get("name", "fail-safe timeout"),
            record["responded_at"],
            record["comment"],
        )
        if approved:
            return record
        self.log.info("not approved: skipping %s", ", ".join(skipped) or "nothing")
        self.skip(ti=ti, tasks=[context["task"].dag.get_task(t) for t in skipped])
        return record

    def _escalation_answer(self, facts: RequestFacts, responded_at: Any, timed_out: bool) -> dict[str, Any]:
        """For a request with escalation groups: whether the answer came after escalation (then
        the escalation groups could answer too; the verifier names the group that did)."""
        if not self.rule.escalate_to or timed_out:
            return {}
        at = datetime.fromisoformat(responded_at) if isinstance(responded_at, str) else responded_at
        if isinstance(at, datetime) and at.tzinfo is None:
            at = at.replace(tzinfo=UTC)  # Airflow's times are UTC
        opened = escalation_time(facts.escalate_at)
        after = isinstance(at, datetime) and at >= opened
        return {
            "after_escalation": after,
            "escalation_groups": list(self.rule.escalate_to),
            "escalated_at": opened.isoformat(),
        }

    def _downstream_to_skip(self, context: Any) -> list[str]:
        task = context["task"]
        if self.ignore_downstream_trigger_rules:
            relatives = task.get_flat_relatives(upstream=False)
        else:
            relatives = task.get_direct_relatives(upstream=False)
        return sorted(t.task_id for t in relatives if not t.is_teardown)

    def _comment(self, params_input: Any) -> str:
        # Airflow stores params_input unvalidated; the decision stands either way (the user was
        # allowed to answer), so a malformed comment is recorded as text rather than failing the gate.
        if not isinstance(params_input, Mapping):
            return ""
        unknown = sorted(set(params_input) - {"comment"})
        if unknown:
            self.log.warning("ignoring unknown answer fields %s", unknown)
        comment = params_input.get("comment", "")
        return comment if isinstance(comment, str) else str(comment)


def announce_outcome(context: Any) -> None:
    """The answer's (or timeout's) card to the domain's Teams channel, and the page's resolve if the
    request was escalated (:func:`include.approvals.channels.notify`): the gate's
    ``on_success_callback``.

    Off the critical path: the task runner reports the gate's success first and runs the callbacks
    after, so the scheduler may start the privileged step while the webhooks are still being called
    (the answer's way to the next task carries no connection lookup and no HTTP round trip). Never
    raises; a post that still fails after the connection's retries is a ``notification.failed``
    audit record. The task process ends when this returns (within ``[core] task_success_overtime``,
    20 s, or Airflow stops it: keep the channels' retry budgets below that).
    """
    task = context.get("task")
    notice = getattr(task, "_outcome_notice", None)
    if not notice:
        return  # a step that was not required, or a gate that asked nothing
    task._outcome_notice = None
    log = getattr(task, "log", None) or logging.getLogger(__name__)
    try:
        notify_channels(log=log, **notice)
    except Exception:  # notify never raises; an outcome card must never touch the gate's state
        log.exception("approval outcome not announced to the domain's channels")


def _gate(ti: Any) -> dict[str, Any]:
    """The gate's address: its XCom, and the PagerDuty dedup key of its request."""
    return {"dag_id": ti.dag_id, "run_id": ti.run_id, "task_id": ti.task_id, "map_index": ti.map_index}
