"""Code forced past CI gets no capability role at run time (the run-time half of `capability-calls`).

A SOC DAG of the e2e bundle (not checked by `policy-check`, as a DAG pushed without review would
not be) asks for the privileged `host-isolate` role in a `@task` with no gate, and for a capability
of another domain. Both tasks fail at once with the reason, and each is one `policy.violation`
record; STS never saw a request (no role was assumed).
"""

from __future__ import annotations

from devstack.api_client import AirflowApi
from devstack.stack import Stack
from include.audit.store import AuditStore

DAG = "e2e_forced_capability"


def test_a_task_reaching_for_a_capability_directly_gets_no_role(stack: Stack, api: AirflowApi) -> None:
    api.wait_for_dags({DAG})
    with AuditStore(stack.audit_dsn) as audit:
        seq, _ = audit.head()
        run_id = api.trigger(DAG, {"tenant": "globex"})
        assert api.wait_for_run(DAG, run_id, timeout=120)["state"] == "failed"
        states = api.task_states(DAG, run_id)
        assert states == {"isolate_without_a_gate": "failed", "plan_of_another_domain": "failed"}
        tries = {ti["task_id"]: ti["try_number"] for ti in api.task_instances(DAG, run_id)}
        assert tries == {"isolate_without_a_gate": 1, "plan_of_another_domain": 1}  # no retry
        violations = {
            r["task_id"]: (r["details"]["rule"], r["details"]["message"])
            for r in audit.records(first=seq + 1)
            if r["kind"] == "policy.violation" and r["run_id"] == run_id
        }
    assert violations == {
        "isolate_without_a_gate": (
            "approval-before-privileged",
            "isolate_without_a_gate: privileged capability 'host-isolate' without a verified approval in "
            "this task: only a step built on RequiresApproval may use it, after its gate was approved",
        ),
        "plan_of_another_domain": (
            "capability-domain",
            "plan_of_another_domain: capability 'terraform-plan' is granted to implementation, not to this "
            "DAG's domain soc",
        ),
    }
