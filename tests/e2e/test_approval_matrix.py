"""The approval guarantee against every interface: roles x write paths x privileged step classes.

Equivalence classes, not the full product. One waiting run per class of privileged step:

- ``soc``: AWS containment (``soc_disable_account``: IAM keys and console password in moto);
- ``hr``: identity (``hr_offboarding``: OpenLDAP, IAM Identity Center, tenant IAM keys; two steps);
- ``impl``: Terraform apply (``implementation_provision_tenant``: the tenant's state file);
- ``inv``: ERP writes (``invoicing_milestone_invoice``: Business Central invoices).

Six roles per class (its domain's operator who triggered, another operator of the domain, an
approver of the domain, an approver of another domain, the auditor, admin) try, on the waiting
run: the gate's and the privileged step's state by hand, the run's state, the gate's XCom
(create, update), answering the request, a second trigger with crafted conf, and clearing the gate
(with downstream) and the privileged step (without). Every role tries every path on every class;
the door (auth manager) or FAB refuses all but the clears of those allowed to clear, which change
nothing that matters (a cleared gate asks again). The paths cannot mask each other on one run:
each refused one leaves the run as it was (checked), and the clears come last.

Checked in the target systems, not only in task states, until an allowed approver answers; then
the answer acts (soc, hr, inv) or rejects (impl: the provisioning test owns acme's state). Every
attempt is an audit record naming the user. A privileged step cleared after its approval runs
again on the strength of the recorded answer; cleared after a rejection, it is skipped again. A
drill answered Approve acts nowhere.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from devstack.api_client import AirflowApi
from devstack.aws_seed import account_client
from devstack.config import REGION
from devstack.stack import Stack
from include.audit.store import AuditStore
from include.connectors.ldap import DirectoryHook
from include.policies.tenants import platform_account_id, tenant_account_id
from tests.e2e.conftest import PLATFORM_ADMIN, ic_groups, sign_up
from tests.e2e.test_hr_offboarding import form as offboarding_form
from tests.e2e.test_hr_offboarding import leaver
from tests.e2e.test_invoicing_milestone import LINES, BusinessCentral, milestone, put_export

ROLES = ("trigger_op", "other_op", "approver", "other_approver", "auditor", "admin")


@dataclass(frozen=True)
class Case:
    """One class of privileged step: its workflow, gate(s), privileged step and the roles around it."""

    name: str
    dag: str
    gates: tuple[str, ...]
    privileged: str
    operator_role: str
    approver_roles: tuple[str, ...]  # one per gate step
    other_approver_role: str

    def user(self, role: str) -> str:
        return f"mx_{self.name}_{role}"


CASES = {
    "soc": Case(
        "soc",
        "soc_disable_account",
        ("approve_identity_disable",),
        "disable_account",
        "soc_operator",
        ("soc_oncall",),
        "finance_controller",
    ),
    "hr": Case(
        "hr",
        "hr_offboarding",
        ("approve_identity_disable.step_1_hr_lead", "approve_identity_disable.step_2_security_officer"),
        "disable_identity",
        "hr_operator",
        ("hr_lead", "security_officer"),
        "cloud_lead",
    ),
    "impl": Case(
        "impl",
        "implementation_provision_tenant",
        ("approve_tenant_baseline.step_1",),
        "apply_tenant_baseline",
        "implementation_operator",
        ("cloud_lead",),
        "soc_lead",
    ),
    "inv": Case(
        "inv",
        "invoicing_milestone_invoice",
        ("approve_invoice_post",),
        "create_invoice",
        "invoicing_operator",
        ("finance_controller",),
        "hr_lead",
    ),
}
# Crafted conf for a second trigger: refused by the trigger form's schema before any run exists.
CRAFTED = {"correlation_id": "x; DROP TABLE", "approval_drill": "yes"}


def _users(case: Case) -> dict[str, list[str]]:
    return {
        case.user("trigger_op"): [case.operator_role],
        case.user("other_op"): [case.operator_role],
        **{
            case.user("approver") + ("" if i == 0 else f"_{i}"): [r]
            for i, r in enumerate(case.approver_roles)
        },
        case.user("other_approver"): [case.other_approver_role],
        case.user("auditor"): ["auditor"],
    }


@pytest.fixture(scope="module")
def people(stack: Stack, api: AirflowApi) -> dict[str, AirflowApi]:
    api.wait_for_dags({case.dag for case in CASES.values()})
    clients: dict[str, AirflowApi] = {}
    for case in CASES.values():
        clients.update(sign_up(stack, _users(case)))
    return clients


@pytest.fixture(scope="module")
def audit(stack: Stack) -> Iterator[AuditStore]:
    with AuditStore(stack.audit_dsn) as store:
        yield store


def client_of(case: Case, role: str, people: dict[str, AirflowApi], api: AirflowApi) -> AirflowApi:
    return api if role == "admin" else people[case.user(role)]


# --- the target systems, read as their own clients read them --------------------------------------


class Targets:
    """Each class's target, and what 'unchanged' means there."""

    def __init__(self, stack: Stack, directory: DirectoryHook) -> None:
        self.stack = stack
        self.directory = directory
        self.globex_iam = account_client("iam", tenant_account_id("globex"), stack.profile.moto_url, REGION)
        self.erp = BusinessCentral(stack)
        self.s3 = account_client("s3", platform_account_id(), stack.profile.moto_url, REGION)
        self.leaver: dict[str, Any] = {}
        self.soc_key = ""

    def prepare(self) -> dict[str, dict[str, Any]]:
        """Create each class's object; return the trigger conf of each."""
        self.globex_iam.create_user(UserName="mx-mallory.e2e", Path="/staff/")
        self.soc_key = self.globex_iam.create_access_key(UserName="mx-mallory.e2e")["AccessKey"][
            "AccessKeyId"
        ]
        self.leaver = leaver(self.stack, self.directory, "mx.leaver", "E40900")
        key = put_export(self.stack, self.s3, "exports/acme/CT-E2E-910/M1.csv", LINES)
        return {
            "soc": {
                "account": "mx-mallory.e2e",
                "tenant": "globex",
                "severity": "high",
                "alert_id": "SIEM-9910",
            },
            "hr": offboarding_form("mx.leaver", "E40900"),
            "impl": {"tenant": "acme", "requested_by": "pm@secops.example"},
            "inv": milestone("CT-E2E-910", key),
        }

    def state(self) -> dict[str, Any]:
        keys = self.globex_iam.list_access_keys(UserName="mx-mallory.e2e")["AccessKeyMetadata"]
        person = self.directory.get_user("mx.leaver") or {}
        tenant_keys = self.leaver["iam"].list_access_keys(UserName="mx.leaver")["AccessKeyMetadata"]
        tfstate = self.stack.profile.root / "terraform" / "state" / "acme" / "tenant-baseline.tfstate"
        return {
            "soc": [(k["AccessKeyId"], k["Status"]) for k in keys],
            "hr": (
                bool(person.get("disabled")),
                ic_groups(self.stack, self.leaver["user_id"]),
                [k["Status"] for k in tenant_keys],
            ),
            "impl": tfstate.exists(),
            "inv": [i["status"] for i in self.erp.invoices("ACME/CT-E2E-910/M1")],
        }


UNCHANGED = {
    "soc": None,  # filled with the key id at run time
    "hr": (False, ["all-staff", "soc-analysts"], ["Active"]),
    "impl": False,
    "inv": [],
}


# --- the paths -------------------------------------------------------------------------------------

Path = Callable[[AirflowApi, Case, str], Any]


def _tis(case: Case, run_id: str) -> str:
    return f"dags/{case.dag}/dagRuns/{run_id}/taskInstances"


def gate_success(client: AirflowApi, case: Case, run_id: str) -> Any:
    return client.request(
        "PATCH", f"{_tis(case, run_id)}/{case.gates[0]}", json={"new_state": "success"}, expect=(403,)
    )


def privileged_success(client: AirflowApi, case: Case, run_id: str) -> Any:
    path = f"{_tis(case, run_id)}/{case.privileged}"
    return client.request("PATCH", path, json={"new_state": "success"}, expect=(403,))


def run_success(client: AirflowApi, case: Case, run_id: str) -> Any:
    return client.request(
        "PATCH", f"dags/{case.dag}/dagRuns/{run_id}", json={"state": "success"}, expect=(403,)
    )


def xcom_create(client: AirflowApi, case: Case, run_id: str) -> Any:
    body = {"key": "approval", "value": {"outcome": "approved", "approved": True}}
    return client.request(
        "POST", f"{_tis(case, run_id)}/{case.gates[0]}/xcomEntries", json=body, expect=(403,)
    )


def xcom_update(client: AirflowApi, case: Case, run_id: str) -> Any:
    path = f"{_tis(case, run_id)}/{case.gates[0]}/xcomEntries/approval"
    return client.request("PATCH", path, json={"value": {"outcome": "approved"}}, expect=(403,))


def answer(client: AirflowApi, case: Case, run_id: str) -> Any:
    return client.answer(case.dag, run_id, case.gates[0], "Approve", comment="bypass?", expect=(403,))


def crafted_trigger(conf: dict[str, Any]) -> Path:
    def trigger(client: AirflowApi, case: Case, run_id: str) -> Any:
        body = {"logical_date": None, "conf": {**conf, **CRAFTED}}
        may_trigger = client.username in (case.user("trigger_op"), case.user("other_op"), PLATFORM_ADMIN)
        return client.request(
            "POST", f"dags/{case.dag}/dagRuns", json=body, expect=(400,) if may_trigger else (403,)
        )

    return trigger


def clear(task: str, *, downstream: bool, allowed: bool) -> Path:
    def call(client: AirflowApi, case: Case, run_id: str) -> Any:
        body = {
            "dry_run": False,
            "dag_run_id": run_id,
            "task_ids": [task if task != "gate" else case.gates[0]],
            "include_downstream": downstream,
            "only_failed": False,
        }
        path = f"dags/{case.dag}/clearTaskInstances"
        return client.request("POST", path, json=body, expect=(200,) if allowed else (403,))

    return call


def wait_waiting(api: AirflowApi, case: Case, run_id: str, gate: str) -> None:
    """The gate waits for an answer again (after a clear it re-runs and re-defers)."""
    api.wait_for_request(case.dag, run_id, gate, timeout=120)


def wait_state(
    api: AirflowApi, case: Case, run_id: str, task: str, states: set[str], timeout: float = 180
) -> str:
    deadline = time.monotonic() + timeout
    while True:
        state = api.task_states(case.dag, run_id).get(task)
        if state in states:
            return str(state)
        if time.monotonic() > deadline:
            raise TimeoutError(f"{case.dag}/{run_id}/{task} is {state}, not one of {sorted(states)}")
        time.sleep(0.5)


def records_since(audit: AuditStore, seq: int) -> list[dict[str, Any]]:
    return audit.records(first=seq + 1)


# --- the matrix --------------------------------------------------------------------------------------

Attempt = tuple[str, str, str]  # (class, role, path)


def _refused_paths(name: str, case: Case, conf: dict[str, Any]) -> dict[str, Path]:
    return {
        "gate-success": gate_success,
        "privileged-success": privileged_success,
        "run-success": run_success,
        "xcom-create": xcom_create,
        "xcom-update": xcom_update,
        "answer": answer,
        "crafted-trigger": crafted_trigger(conf),
    }


def _try_refused(
    name: str, case: Case, run_id: str, conf: dict[str, Any], people: dict[str, AirflowApi], api: AirflowApi
) -> list[Attempt]:
    """Every role tries every path that must be refused on one waiting run; then the refused clears."""
    attempts: list[Attempt] = []
    for role in ROLES:
        client = client_of(case, role, people, api)
        for path_name, path in _refused_paths(name, case, conf).items():
            if role == "approver" and path_name == "answer":
                continue  # the allowed answer comes last
            path(client, case, run_id)
            attempts.append((name, role, path_name))
    for role in ("approver", "other_approver", "auditor"):
        client = client_of(case, role, people, api)
        clear("gate", downstream=True, allowed=False)(client, case, run_id)
        clear(case.privileged, downstream=False, allowed=False)(client, case, run_id)
        attempts += [(name, role, "clear-gate-downstream"), (name, role, "clear-privileged")]
    return attempts


def _check_recorded(recorded: list[dict[str, Any]], attempts: list[Attempt]) -> None:
    """Each attempt is exactly one audit record naming the user, about that DAG."""
    kinds = ("policy.violation", "api.refused", "manual.change")
    for name, case in CASES.items():
        for role in ROLES:
            user = PLATFORM_ADMIN if role == "admin" else case.user(role)
            tried = sorted(a[2] for a in attempts if a[0] == name and a[1] == role)
            named = [
                r for r in recorded if r["actor"] == user and r["dag_id"] == case.dag and r["kind"] in kinds
            ]
            assert len(named) == len(tried), (name, role, tried, [(r["kind"], r["details"]) for r in named])


def _answer_allowed(runs: dict[str, str], people: dict[str, AirflowApi]) -> None:
    """The allowed approvers answer: soc, hr and inv Approve; impl Reject (acme stays unprovisioned)."""
    for name, case in CASES.items():
        for index, gate in enumerate(case.gates):
            user = case.user("approver") + ("" if index == 0 else f"_{index}")
            people[user].wait_for_request(case.dag, runs[name], gate)
            people[user].answer(case.dag, runs[name], gate, "Reject" if name == "impl" else "Approve", "ok")


def test_every_role_every_path_every_class_changes_nothing_until_an_allowed_approver_answers(
    stack: Stack,
    api: AirflowApi,
    people: dict[str, AirflowApi],
    directory: DirectoryHook,
    audit: AuditStore,
) -> None:
    targets = Targets(stack, directory)
    confs = targets.prepare()
    unchanged = {**UNCHANGED, "soc": [(targets.soc_key, "Active")]}
    runs = {
        name: people[case.user("trigger_op")].trigger(case.dag, confs[name]) for name, case in CASES.items()
    }
    for name, case in CASES.items():
        wait_waiting(api, case, runs[name], case.gates[0])
    before = {name: api.task_states(case.dag, runs[name]) for name, case in CASES.items()}
    assert targets.state() == unchanged

    seq, _ = audit.head()
    attempts: list[Attempt] = []
    for name, case in CASES.items():
        attempts += _try_refused(name, case, runs[name], confs[name], people, api)
        assert api.run(case.dag, runs[name])["state"] == "running"
        assert api.task_states(case.dag, runs[name]) == before[name], name
    assert targets.state() == unchanged

    # Those who may clear do (the privileged step alone, then the gate with everything after it):
    # the privileged step still waits, the gate asks again. One clearing role per class.
    clearers = {"soc": "trigger_op", "hr": "other_op", "impl": "admin", "inv": "trigger_op"}
    for name, case in CASES.items():
        client = client_of(case, clearers[name], people, api)
        clear(case.privileged, downstream=False, allowed=True)(client, case, runs[name])
        clear("gate", downstream=True, allowed=True)(client, case, runs[name])
        attempts += [
            (name, clearers[name], "clear-privileged"),
            (name, clearers[name], "clear-gate-downstream"),
        ]
    for name, case in CASES.items():
        wait_waiting(api, case, runs[name], case.gates[0])
        assert api.task_states(case.dag, runs[name])[case.privileged] is None
    assert targets.state() == unchanged
    _check_recorded(records_since(audit, seq), attempts)

    _answer_allowed(runs, people)
    for name, case in CASES.items():
        assert api.wait_for_run(case.dag, runs[name], timeout=240)["state"] == "success", name
    after = targets.state()
    assert after["soc"] == [(targets.soc_key, "Inactive")]
    assert after["hr"] == (True, [], ["Inactive"])
    assert after["impl"] is False
    assert after["inv"] == ["Open"]  # posted (Business Central's status of a posted, unpaid invoice)

    # Cleared after its approval, a privileged step runs again on the recorded answer (nothing new
    # to do); cleared after a rejection, Airflow skips it again (the gate recorded what it skipped:
    # NotPreviouslySkippedDep), and had it run, its own check would refuse (unit tests).
    soc, impl = CASES["soc"], CASES["impl"]
    seq, _ = audit.head()
    clear(soc.privileged, downstream=False, allowed=True)(people[soc.user("other_op")], soc, runs["soc"])
    assert wait_state(api, soc, runs["soc"], soc.privileged, {"success", "failed"}) == "success"
    assert api.xcom(soc.dag, runs["soc"], soc.privileged)["changed"] is False
    clear(impl.privileged, downstream=False, allowed=True)(
        people[impl.user("trigger_op")], impl, runs["impl"]
    )
    assert wait_state(api, impl, runs["impl"], impl.privileged, {"success", "failed", "skipped"}) == "skipped"
    assert api.wait_for_run(impl.dag, runs["impl"], timeout=120)["state"] == "success"
    assert targets.state()["impl"] is False
    since = records_since(audit, seq)
    verified = [r for r in since if r["kind"] == "approval.verified"]
    assert [(r["run_id"], r["details"]["approvers"][0]["name"]) for r in verified] == [
        (runs["soc"], soc.user("approver"))
    ]
    (change,) = [r for r in since if r["kind"] == "manual.change" and r["run_id"] == runs["impl"]]
    assert change["actor"] == impl.user("trigger_op")


def test_a_drill_answered_approve_acts_nowhere(
    stack: Stack, api: AirflowApi, people: dict[str, AirflowApi], directory: DirectoryHook
) -> None:
    iam = account_client("iam", tenant_account_id("globex"), stack.profile.moto_url, REGION)
    iam.create_user(UserName="mx-drill.e2e", Path="/staff/")
    key = iam.create_access_key(UserName="mx-drill.e2e")["AccessKey"]["AccessKeyId"]
    case = CASES["soc"]
    conf = {"account": "mx-drill.e2e", "tenant": "globex", "alert_id": "SIEM-9911", "approval_drill": True}
    run_id = api.trigger(case.dag, conf)  # admin starts this drill: every role tries it in the matrix
    people[case.user("approver")].wait_for_request(case.dag, run_id, case.gates[0])
    people[case.user("approver")].answer(case.dag, run_id, case.gates[0], "Approve", "drill")
    assert api.wait_for_run(case.dag, run_id, timeout=180)["state"] == "success"
    assert api.task_states(case.dag, run_id)[case.privileged] == "skipped"
    keys = iam.list_access_keys(UserName="mx-drill.e2e")["AccessKeyMetadata"]
    assert [(k["AccessKeyId"], k["Status"]) for k in keys] == [(key, "Active")]
