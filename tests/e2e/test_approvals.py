"""Approval gates on the real stack: answers through the REST API as real FAB users, the escalation
ladder read back from the SMTP server, the fail-safe timeout, four-eyes across two approvals.

Users (roles from include/policies/approvals.yaml and domains.yaml):
  lea    soc_operator + soc_lead     triggers SOC runs; may not approve her own (four-eyes)
  sam    soc_lead                    may approve SOC host isolation
  omar   soc_oncall                  may approve SOC host isolation
  hank   hr_lead                     another domain: may not answer SOC requests
  hana   hr_operator                 triggers HR runs
  henry  hr_lead + security_officer  may answer either HR step, but not both
  sofia  security_officer            second HR step
"""

from __future__ import annotations

import pytest

from bench.approval_resume import measure, report
from devstack.api_client import AirflowApi, ApiError
from devstack.stack import Stack
from devstack.standins.smtp import StoredMessage, read_messages
from include.approvals.respondents import AFTER_PREFIX, parse_escalation
from include.connectors.context import RunContext
from include.connectors.idempotency import idempotency_key
from include.connectors.ticketing.request_tracker import API as RT_API
from include.connectors.ticketing.request_tracker import RequestTrackerHook
from include.policies.approvals import load_approvals
from include.policies.loader import load_domain_policy
from tests.e2e.conftest import sign_up

SOC = "e2e_soc_containment"
SOC_UNANSWERED = "e2e_soc_containment_unanswered"
HR = "e2e_hr_offboarding"
GATE = "approve_host_isolate"
HR_STEP_1 = "approve_identity_disable.step_1_hr_lead"
HR_STEP_2 = "approve_identity_disable.step_2_security_officer"
APPROVALS_MEASURED = 24
# SOC leads taking turns at the benchmark's answers: each answer needs a fresh one-time code, and
# one token gives three at once, then one per 30 s (devstack/totp.py).
RESUME_APPROVERS = [f"sam_{i}" for i in range(1, 9)]
USERS = {
    "lea": ["soc_operator", "soc_lead"],
    "sam": ["soc_lead"],
    "omar": ["soc_oncall"],
    "hank": ["hr_lead"],
    "hana": ["hr_operator"],
    "henry": ["hr_lead", "security_officer"],
    "sofia": ["security_officer"],
    **{name: ["soc_lead"] for name in RESUME_APPROVERS},
}


@pytest.fixture(scope="module")
def users(stack: Stack, api: AirflowApi) -> dict[str, AirflowApi]:
    api.wait_for_dags({SOC, SOC_UNANSWERED, HR})
    return sign_up(stack, USERS)


UNANSWERED_CORRELATION_ID = "corr-e2e-unanswered"


@pytest.fixture(scope="module", autouse=True)
def unanswered(users: dict[str, AirflowApi]) -> str:
    """The run whose approval nobody answers (its test DAG's ladder: 8 s, 16 s, 24 s), triggered as
    the module starts (an early drill, tests/e2e/conftest.py); its test, last in the module, checks
    the finished run."""
    conf = {"host": "srv-db-01", "tenant": "acme", "correlation_id": UNANSWERED_CORRELATION_ID}
    return users["lea"].trigger(SOC_UNANSWERED, conf)


def mails_for(stack: Stack, correlation_id: str) -> list[StoredMessage]:
    return [
        m
        for m in read_messages(stack.profile.maildir)
        if m.message()["X-Orchestrator-Correlation-Id"] == correlation_id
    ]


def respondents(request: dict) -> set[str]:
    return {u["id"] for u in request["assigned_users"]}


def test_allowed_approver_approves_and_the_privileged_step_runs(
    stack: Stack, api: AirflowApi, users: dict[str, AirflowApi]
) -> None:
    run_id = users["lea"].trigger(
        SOC, {"host": "ws-0042", "tenant": "acme", "correlation_id": "corr-e2e-approve"}
    )
    request = users["sam"].wait_for_request(SOC, run_id, GATE)

    assert request["subject"] == "[soc] Approve host-isolate: Isolate ws-0042"
    assert "Isolate host **ws-0042** of tenant **acme**" in request["body"]
    assert "`corr-e2e-approve`" in request["body"]
    assert "**Triggered by:** lea" in request["body"]
    # The SOC ladder's escalation group may answer from the escalation on (approvals.yaml escalate_to).
    escalation = {r for r in respondents(request) if r.startswith(AFTER_PREFIX)}
    assert respondents(request) - escalation == {"role:soc_lead", "role:soc_oncall", "not:lea"}
    assert [parse_escalation(e)[1] for e in escalation] == ["security_officer"]  # type: ignore[index]
    assert request["response_received"] is False

    answer = users["sam"].answer(SOC, run_id, GATE, "Approve", "EDR alert confirmed")
    assert answer["responded_by"]["name"] == "sam"

    assert api.wait_for_run(SOC, run_id, timeout=120)["state"] == "success"
    assert api.task_states(SOC, run_id) == {GATE: "success", "isolate_host": "success"}
    assert api.xcom(SOC, run_id, "isolate_host") == {
        "capability": "host-isolate",
        "target": "ws-0042",
        "approved_by": ["sam"],
        "comments": ["EDR alert confirmed"],
    }
    record = api.xcom(SOC, run_id, GATE, key="approval")
    assert record["outcome"] == "approved"
    assert record["responded_by"]["name"] == "sam"
    assert record["triggered_by"] == "lea"
    assert [step["step"] for step in record["ladder"]] == ["requested"]
    assert record["skipped"] == []

    (mail,) = mails_for(stack, "corr-e2e-approve")
    assert mail.subject == "[Approval needed][soc] host-isolate: Isolate ws-0042"
    assert sorted(mail.rcpt_tos) == ["soc-lead@secops.example", "soc-oncall@secops.example"]
    assert "/required_actions" in mail.body()


@pytest.mark.parametrize(
    ("payload", "status"),
    [
        pytest.param({"chosen_options": ["Approve please"]}, 400, id="unknown-option"),
        pytest.param({"chosen_options": ["Approve", "Reject"]}, 400, id="two-options"),
        pytest.param({"chosen_options": []}, 422, id="empty"),
        pytest.param({"params_input": {"comment": "x"}}, 422, id="no-option"),
        # No one-time code can travel in these: the approval door refuses them first (403).
        pytest.param("Approve", 403, id="not-an-object"),
        pytest.param({"chosen_options": ["Approve"], "params_input": "yes"}, 403, id="params-not-an-object"),
    ],
)
def test_bad_answers_get_a_clear_error_and_change_nothing(
    api: AirflowApi, users: dict[str, AirflowApi], waiting_run: str, payload: object, status: int
) -> None:
    path = api.hitl_path(SOC, waiting_run, GATE)
    sam = users["sam"]
    if isinstance(payload, dict) and isinstance(payload.get("params_input", {}), dict):
        assert sam.authenticator is not None
        payload = {
            **payload,
            "params_input": {**payload.get("params_input", {}), "otp": sam.authenticator.next_code()},
        }
    with pytest.raises(ApiError) as refused:
        sam.request("PATCH", path, json=payload)
    assert refused.value.status_code == status
    assert refused.value.body  # the error says what is wrong
    assert api.get(path)["response_received"] is False
    assert api.task_states(SOC, waiting_run)[GATE] == "deferred"


@pytest.fixture(scope="module")
def waiting_run(users: dict[str, AirflowApi]) -> str:
    run_id = users["lea"].trigger(SOC, {"host": "ws-0099", "tenant": "globex"})
    users["sam"].wait_for_request(SOC, run_id, GATE)
    return run_id


@pytest.mark.parametrize(
    ("who", "reason"),
    [
        pytest.param("lea", "is not a respondent", id="triggering-user"),
        pytest.param("hank", "", id="other-domain"),
        pytest.param("admin", "is not a respondent", id="admin-is-no-approver"),
    ],
)
def test_refused_answers_leave_the_request_open(
    api: AirflowApi, users: dict[str, AirflowApi], waiting_run: str, who: str, reason: str
) -> None:
    client = api if who == "admin" else users[who]
    with pytest.raises(ApiError) as refused:
        client.answer(SOC, waiting_run, GATE, "Approve")
    assert refused.value.status_code == 403
    assert reason in refused.value.body
    assert api.get(api.hitl_path(SOC, waiting_run, GATE))["response_received"] is False
    assert api.task_states(SOC, waiting_run) == {GATE: "deferred", "isolate_host": None}


def test_reject_skips_the_privileged_step_and_a_second_answer_conflicts(
    api: AirflowApi, users: dict[str, AirflowApi], waiting_run: str
) -> None:
    # Runs after the refusal tests above (same module, same waiting run).
    users["omar"].answer(SOC, waiting_run, GATE, "Reject", "wrong host")
    with pytest.raises(ApiError) as again:
        users["sam"].answer(SOC, waiting_run, GATE, "Approve")
    assert again.value.status_code == 409
    assert api.wait_for_run(SOC, waiting_run, timeout=120)["state"] == "success"
    assert api.task_states(SOC, waiting_run) == {GATE: "success", "isolate_host": "skipped"}
    record = api.xcom(SOC, waiting_run, GATE, key="approval")
    assert (record["outcome"], record["responded_by"]["name"], record["comment"]) == (
        "rejected",
        "omar",
        "wrong host",
    )


def test_two_approvals_need_two_different_people(api: AirflowApi, users: dict[str, AirflowApi]) -> None:
    run_id = users["hana"].trigger(HR, {"employee": "jdoe"})
    first = users["henry"].wait_for_request(HR, run_id, HR_STEP_1)
    assert respondents(first) == {"role:hr_lead", "not:hana"}
    users["henry"].answer(HR, run_id, HR_STEP_1, "Approve", "leaver confirmed by HR")

    second = users["sofia"].wait_for_request(HR, run_id, HR_STEP_2)
    assert respondents(second) == {"role:security_officer", "not:hana", "not:henry"}
    with pytest.raises(ApiError) as refused:
        users["henry"].answer(HR, run_id, HR_STEP_2, "Approve")
    assert refused.value.status_code == 403
    users["sofia"].answer(HR, run_id, HR_STEP_2, "Approve")

    assert api.wait_for_run(HR, run_id, timeout=120)["state"] == "success"
    result = api.xcom(HR, run_id, "disable_identity")
    assert result["approved_by"] == ["henry", "sofia"]


def rt_history(rt: RequestTrackerHook, ticket_id: str) -> list[dict]:
    path = f"{RT_API}/ticket/{ticket_id}/history?fields=Type,Data&per_page=100"
    return rt.request("GET", path, operation="history", expect=(200,)).json()["items"]


def test_approval_resume_latency_benchmark(
    stack: Stack, api: AirflowApi, users: dict[str, AirflowApi]
) -> None:
    """>= 20 approvals answered the moment each gate waits; all resume, none is lost to the race."""
    result = measure(
        admin=api,
        requester=users["lea"],
        approvers=[users[name] for name in RESUME_APPROVERS],
        dag_id=SOC,
        gate=GATE,
        next_task="isolate_host",
        approvals=APPROVALS_MEASURED,
        conf={"host": "ws-bench", "tenant": "acme"},
    )
    report(result, stack.profile.root / "results" / "approval_resume.json")
    assert result.states == {"success": APPROVALS_MEASURED}
    assert all(seconds > 0 for seconds in result.server_seconds)


def test_nobody_answers_reminder_escalation_then_fail_safe_reject(
    stack: Stack, api: AirflowApi, unanswered: str, rt: RequestTrackerHook
) -> None:
    correlation_id, run_id = UNANSWERED_CORRELATION_ID, unanswered
    assert api.wait_for_run(SOC_UNANSWERED, run_id, timeout=180)["state"] == "success"
    assert api.task_states(SOC_UNANSWERED, run_id) == {
        "open_ticket": "success",
        GATE: "success",
        "isolate_host": "skipped",  # nothing executed
    }
    record = api.xcom(SOC_UNANSWERED, run_id, GATE, key="approval")
    assert (record["outcome"], record["approved"], record["responded_by"]) == ("timed_out", False, None)
    assert record["chosen_options"] == ["Reject"]
    assert [s["step"] for s in record["ladder"]] == ["requested", "reminder", "escalation", "timeout"]
    assert record["skipped"] == ["isolate_host"]
    assert all("error" not in s for s in record["ladder"])

    approvers = ["soc-lead@secops.example", "soc-oncall@secops.example"]
    ladder = load_approvals().rule("soc", "host-isolate").ladder
    alerts = list(load_domain_policy().domain("soc").alert_emails)
    mails = mails_for(stack, correlation_id)
    assert [(m.subject.split("]")[0] + "]", sorted(m.rcpt_tos)) for m in mails] == [
        ("[Approval needed]", approvers),
        ("[Reminder]", approvers),
        ("[Escalation]", sorted(ladder.escalate_to)),
        ("[Approval timed out]", sorted({*approvers, *ladder.escalate_to, *alerts})),
    ]
    assert "Skipped, not executed: isolate_host" in mails[-1].body()

    ticket_id = api.xcom(SOC_UNANSWERED, run_id, "open_ticket")["id"]
    escalation = next(s for s in record["ladder"] if s["step"] == "escalation")
    assert escalation["ticket"]["ticket_id"] == ticket_id
    run = RunContext(SOC_UNANSWERED, run_id, GATE, "acme", correlation_id)
    key = idempotency_key(run, "approval-escalation")
    comments = [item for item in rt_history(rt, ticket_id) if item.get("Type") == "Comment"]
    assert [key in (item.get("Data") or "") for item in comments].count(True) == 1, comments
