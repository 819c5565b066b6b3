"""The checks every unanswered approval drill shares, read back from the target systems.

A drill nobody answers (an early drill, tests/e2e/conftest.py) ends as a successful run whose
privileged step was skipped; its gate's record says ``timed_out`` and ``drill``; the escalation
went to the ladder's ``escalate_to`` by mail (read from the SMTP sink) and as a comment on the
run's ticket (read from Request Tracker), both marked ``[DRILL]``. Each module adds what its target
system must still show (EC2 groups, IAM keys, no Terraform state).
"""

from __future__ import annotations

from typing import Any

from devstack.api_client import AirflowApi
from devstack.stack import Stack
from include.connectors.ticketing.request_tracker import RequestTrackerHook
from include.policies.approvals import load_approvals
from tests.e2e.test_approvals import mails_for


def check_unanswered_drill(
    stack: Stack,
    api: AirflowApi,
    rt: RequestTrackerHook,
    *,
    dag_id: str,
    run_id: str,
    gate: str,
    privileged: str,
    domain: str,
    action: str,
    timeout: float = 240,
) -> dict[str, Any]:
    """Wait for the drill ``run_id`` of ``dag_id`` and check its ladder ran to the fail-safe reject
    with the escalation mailed and commented on the run's ticket (``open_ticket``), and that
    ``privileged`` never ran; return the gate's approval record."""
    assert api.wait_for_run(dag_id, run_id, timeout=timeout)["state"] == "success"
    assert api.task_states(dag_id, run_id)[privileged] == "skipped"
    record: dict[str, Any] = api.xcom(dag_id, run_id, gate, key="approval")
    assert (record["outcome"], record["drill"]) == ("timed_out", True)
    (mail,) = [m for m in mails_for(stack, record["correlation_id"]) if "[Escalation]" in m.subject]
    assert mail.subject.startswith(f"[DRILL][Escalation][{domain}]")
    assert sorted(mail.rcpt_tos) == sorted(load_approvals().rule(domain, action).ladder.escalate_to)
    comment = next(step for step in record["ladder"] if step["step"] == "escalation")["ticket"]
    assert str(comment["ticket_id"]) == str(api.xcom(dag_id, run_id, "open_ticket")["id"])
    assert rt._text_of(comment["entry_id"]).startswith(f"[DRILL] Approval for {action}")
    return record
