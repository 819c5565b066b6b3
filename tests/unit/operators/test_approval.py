"""The approval gate's construction: what a DAG may and may not set (no I/O, checked at parse time).

The request, the drill pace and the answer are tested in tests/unit/approvals/ (test_drill.py,
test_verify.py) and end to end in tests/e2e/test_approvals.py and test_approval_matrix.py.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from airflow.sdk import DAG

from include.operators.approval import ApprovalGateOperator
from include.policies.approvals import load_approvals
from include.workflows import domain_workflow

DOC = "Test workflow for the approval gate."


def _gate(**kwargs: Any) -> ApprovalGateOperator:
    made: list[ApprovalGateOperator] = []

    @domain_workflow(domain="soc", doc_md=DOC)
    def gate_test() -> None:
        made.append(
            ApprovalGateOperator(
                task_id="approve", approval_action="host-isolate", subject="Isolate", body="web-01", **kwargs
            )
        )

    gate_test()
    return made[0]


def test_the_policy_sets_the_answers_and_the_ladder() -> None:
    gate = _gate(ticket_id="{{ params.ticket }}", artifact_params=("host",))
    rule = load_approvals().rule("soc", "host-isolate")

    assert (gate.domain, gate.approval_action, gate.step) == ("soc", "host-isolate", 1)
    assert gate.options == ["Approve", "Reject"]
    assert gate.defaults == ["Reject"]  # the fail-safe answer at timeout
    assert gate.retries == 0
    assert gate.response_timeout == rule.ladder.timeout
    assert list(gate.params) == ["comment", "otp"]
    assert gate.artifact_params == ("host",)
    assert gate.ticket_system == "request_tracker"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param(
            {"options": ["Yes"]}, "approval gate approve: options come from the approval policy", id="options"
        ),
        pytest.param(
            {"assigned_users": [], "notifiers": []},
            "approval gate approve: assigned_users, notifiers come from the approval policy",
            id="respondents",
        ),
        pytest.param(
            {"step": 9}, r"approval gate approve: step 9 of 'host-isolate', which has \d step\(s\)", id="step"
        ),
        pytest.param(
            {"artifact": "sha256:ab", "artifact_params": ("host",)},
            "approval gate approve: give artifact or artifact_params, not both",
            id="two-artifacts",
        ),
    ],
)
def test_what_a_dag_may_not_set_is_refused_naming_the_gate(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _gate(**kwargs)


def test_a_dag_ladder_may_tighten_the_policy_never_loosen_it() -> None:
    rule = load_approvals().rule("soc", "host-isolate")
    tighter = _gate(ladder={"timeout": rule.ladder.timeout - timedelta(minutes=1)})
    assert tighter.response_timeout == rule.ladder.timeout - timedelta(minutes=1)
    with pytest.raises(ValueError, match="timeout"):
        _gate(ladder={"timeout": rule.ladder.timeout + timedelta(minutes=1)})


def test_a_gate_outside_a_domain_workflow_is_refused() -> None:
    with DAG("no_domain", schedule=None), pytest.raises(ValueError, match="use it inside a domain workflow"):
        ApprovalGateOperator(task_id="approve", approval_action="host-isolate", subject="s", body="b")
