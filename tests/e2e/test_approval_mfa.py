"""A second factor for every approval answer, end to end (issue 20): a real host isolation waits at
its gate; SOC leads answer through the REST API (what the UI's Required actions form sends) with
codes checked by the real MFA server (privacyIDEA, the directory as its user store).

No code, a malformed, wrong, reused or another lead's code: 403, the EC2 instance in moto keeps its
groups, the request stays open, and each refusal is one ``policy.violation`` record naming the
user and the verdict. The right code: 200, the host is isolated, and the answer is an
``approval.second_factor`` record; the code is in no audit record and not in the HITL detail.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from devstack.api_client import AirflowApi, ApiError
from devstack.stack import Stack
from include.audit.store import AuditStore
from tests.e2e.conftest import sign_up
from tests.e2e.test_soc_contain_host import _alert, _groups_and_tags, _host

DAG = "soc_contain_host"
GATE = "approve_host_isolate"
USERS = {"mia_soc_op": ["soc_operator"], "max_soc_lead": ["soc_lead"], "zoe_soc_lead": ["soc_lead"]}


@pytest.fixture(scope="module")
def users(stack: Stack, api: AirflowApi) -> dict[str, AirflowApi]:
    api.wait_for_dags({DAG})
    return sign_up(stack, USERS, backup_tokens=0)  # one token each: its replays are the point here


def _refused(client: AirflowApi, run_id: str, otp: str) -> dict[str, Any]:
    with pytest.raises(ApiError) as refused:
        client.answer(DAG, run_id, GATE, "Approve", "contain", otp=otp)
    assert refused.value.status_code == 403
    body: dict[str, Any] = json.loads(refused.value.body)
    return body


def test_only_a_fresh_code_of_the_approver_lets_the_answer_through(
    stack: Stack, api: AirflowApi, users: dict[str, AirflowApi]
) -> None:
    host = _host(stack)
    before = _groups_and_tags(host)
    run_id = users["mia_soc_op"].trigger(DAG, _alert(host, "EDR-MFA-1"))
    max_lead, zoe = users["max_soc_lead"], users["zoe_soc_lead"]
    assert max_lead.authenticator is not None
    assert zoe.authenticator is not None
    max_lead.wait_for_request(DAG, run_id, GATE)

    zoes_code = zoe.authenticator.next_code()
    verdicts = {
        "no code": _refused(max_lead, run_id, "")["verdict"],
        "malformed": _refused(max_lead, run_id, "12ab56")["verdict"],
        "wrong": _refused(max_lead, run_id, max_lead.authenticator.code_of_step(-20))["verdict"],
        "another lead's": _refused(max_lead, run_id, zoes_code)["verdict"],
    }
    assert verdicts == {
        "no code": "missing",
        "malformed": "malformed",
        "wrong": "wrong",
        "another lead's": "wrong",
    }
    assert _groups_and_tags(host) == before
    assert api.get(api.hitl_path(DAG, run_id, GATE))["response_received"] is False

    code = max_lead.authenticator.next_code()
    # The right code gets through, and the host is isolated.
    max_lead.answer(DAG, run_id, GATE, "Approve", "confirmed", otp=code)
    assert api.wait_for_run(DAG, run_id, timeout=180)["state"] == "success"
    groups, _ = _groups_and_tags(host)
    assert groups == [host["quarantine"]]

    detail = api.get(api.hitl_path(DAG, run_id, GATE))
    assert detail["params_input"] == {"comment": "confirmed"}  # the code is not kept
    with AuditStore(stack.audit_dsn) as audit:
        _, story = audit.trace(run_id)
    refusals = [r for r in story if r["kind"] == "policy.violation"]
    assert [(r["actor"], r["details"]["rule"], r["details"]["verdict"]) for r in refusals] == [
        ("max_soc_lead", "second-factor", verdict) for verdict in ("missing", "malformed", "wrong", "wrong")
    ]
    (verified,) = [r for r in story if r["kind"] == "approval.second_factor"]
    assert (verified["actor"], verified["task_id"], verified["details"]["method"]) == (
        "max_soc_lead",
        GATE,
        "totp",
    )
    assert verified["details"]["token_serial"] == "TOTP-max_soc_lead"
    trail = json.dumps(story)
    assert code not in trail
    assert zoes_code not in trail


def test_a_reused_code_is_refused_and_changes_nothing(
    stack: Stack, api: AirflowApi, users: dict[str, AirflowApi]
) -> None:
    host = _host(stack)
    before = _groups_and_tags(host)
    run_one = users["mia_soc_op"].trigger(DAG, _alert(host, "EDR-MFA-2"))
    run_two = users["mia_soc_op"].trigger(DAG, _alert(_host(stack), "EDR-MFA-3"))
    zoe = users["zoe_soc_lead"]
    assert zoe.authenticator is not None
    zoe.wait_for_request(DAG, run_one, GATE)
    zoe.wait_for_request(DAG, run_two, GATE)

    code = zoe.authenticator.next_code()
    zoe.answer(DAG, run_two, GATE, "Reject", "false positive", otp=code)
    replay = _refused(zoe, run_one, code)
    assert replay["verdict"] == "replay"
    assert "used already" in replay["detail"]
    assert _groups_and_tags(host) == before
    assert api.get(api.hitl_path(DAG, run_one, GATE))["response_received"] is False
    with AuditStore(stack.audit_dsn) as audit:
        _, story = audit.trace(run_one)
    (refusal,) = [r for r in story if r["kind"] == "policy.violation"]
    assert (refusal["actor"], refusal["details"]["verdict"]) == ("zoe_soc_lead", "replay")
    zoe.answer(DAG, run_one, GATE, "Reject", "false positive")  # the next code closes it
    assert api.wait_for_run(DAG, run_one, timeout=180)["state"] == "success"
    assert _groups_and_tags(host) == before
