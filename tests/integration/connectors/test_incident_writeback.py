"""Incident write-back (include/workflows/incidents.py) against the Entra/Graph stand-in over HTTPS,
credentials read from moto as the ``incident-writeback`` role in each tenant's own account: the task
of the real ``soc_disable_entra_user`` DAG, run with the context of a finished run.

- the same alert's run five times: one comment, the incident ``inProgress``; then a rejected run of
  it five times: one comment more ("not contained: rejected by ..."), the status left as it was;
- a run of acme with globex's incident id: "not found" in acme, asked with acme's credentials only
  (the stand-in's log shows no globex token or call), and a ``notification.failed`` record; a hook
  for globex in a run of acme is refused before any call;
- a malformed incident id is refused before any call;
- the write-back app can do nothing but incidents (403 on a user).

Own profile ``incident-itest``: stand-in on 127.0.0.1:26785 (api_port 26740 + 45).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException

from devstack.aws_seed import account_client, seed_capability_roles
from devstack.config import Profile
from devstack.standins import microsoft as ms
from include.connectors.context import RunContext
from include.connectors.errors import PermanentError
from include.connectors.microsoft import GraphHook
from include.policies.tenants import tenant_account_id
from include.workflows.incidents import IncidentWritebackOperator
from tests.support.moto import moto_with_aws_connection

REGION = "eu-west-1"
AWS_CONN = "aws_incident_itest"
PROFILE = Profile(name="incident-itest", api_port=26740, pg_port=0, moto_port=0, smtp_port=0)
CAPABILITY = "incident-writeback"
DAG_FILE = Path(__file__).resolve().parents[3] / "dags" / "soc" / "disable_entra_user.py"
GATE = "approve_entra_user_disable"
ORDER = ("inspect_user", "open_ticket", GATE, "disable_user", "evidence")


def _entra(tenant: str) -> str:
    return str(ms.entra_tenants()[tenant].entra_tenant_id)


@pytest.fixture(scope="module")
def env() -> Iterator[dict[str, Any]]:
    tls = ms.ensure_certificates(ms.tls_dir(PROFILE))
    config = copy.deepcopy(ms.standin_config(PROFILE))
    config[_entra("globex")]["incidents"].append({"id": "2001", "displayName": "globex only"})
    standin = ms.MicrosoftStandIn(
        config, cert_file=tls.cert_file, key_file=tls.key_file, port=ms.port(PROFILE)
    )
    with moto_with_aws_connection(AWS_CONN, REGION) as url, standin:
        seed_capability_roles(url, REGION)
        for tenant in ("acme", "globex"):
            conn = ms.connection(PROFILE, tenant, CAPABILITY)
            for key in ("rate_limit_per_second", "rate_limit_burst"):
                conn["extra"].pop(key)
            account_client("secretsmanager", tenant_account_id(tenant), url, REGION).create_secret(
                Name=f"orchestrator/{tenant}/{CAPABILITY}/msgraph", SecretString=json.dumps(conn)
            )
        yield {"standin": standin}


@pytest.fixture(scope="module")
def task() -> IncidentWritebackOperator:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAG_FILE), safe_mode=False)
    (dag,) = bag.dags.values()
    writeback = dag.get_task("incident_writeback")
    assert isinstance(writeback, IncidentWritebackOperator)
    writeback.aws_conn_id = AWS_CONN
    return writeback


@pytest.fixture
def events(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    import include.audit.emit as emit_module

    found: list[dict[str, Any]] = []
    monkeypatch.setattr(emit_module, "emit", lambda fields, **kw: found.append(dict(fields)))
    return found


class _TI:
    """What the task reads of its run: XComs and task states (the Execution API in a real run)."""

    def __init__(self, run_id: str, xcoms: dict[tuple[str, str], Any], states: dict[str, str]) -> None:
        self.dag_id, self.run_id, self.task_id, self.try_number = (
            "soc_disable_entra_user",
            run_id,
            "incident_writeback",
            1,
        )
        self.xcoms, self.states = xcoms, states

    def xcom_pull(self, task_ids: str, key: str = "return_value", **kwargs: Any) -> Any:
        return self.xcoms.get((task_ids, key))

    def get_task_states(self, dag_id: str, run_ids: list[str], **kwargs: Any) -> dict[str, Any]:
        return {self.run_id: dict(self.states)}


def _run(
    task: IncidentWritebackOperator, tenant: str, incident: str, run_id: str, *, approved: bool
) -> dict[str, Any]:
    task.tenant, task.incident_id, task.basis = tenant, incident, "DEF-9001"
    answer = {
        "outcome": "approved" if approved else "rejected",
        "approved": approved,
        "responded_by": {"name": "ezra_soc_oncall" if approved else "lena_soc_lead"},
        "comment": "" if approved else "user is travelling",
    }
    states = dict.fromkeys(ORDER, "success")
    if not approved:
        states |= {"disable_user": "skipped", "evidence": "skipped"}
    xcoms = {(GATE, "approval"): answer, ("open_ticket", "return_value"): {"id": "77"}}
    if approved:
        xcoms[("disable_user", "return_value")] = {"mfa_methods_deleted": ["phoneMethods/1"]}
    ti = _TI(run_id, xcoms, states)
    # the DAG's own ``done`` template is rendered: it reads the change's XCom, absent when rejected
    params = {"user": f"mallory@{tenant}.example"}
    context = {
        "ti": ti,
        "task": task,
        "params": params,
        "dag_run": SimpleNamespace(conf={}),
        "run_id": run_id,
    }
    return task.execute(context)


def _incident(standin: ms.MicrosoftStandIn, tenant: str, incident: str) -> dict[str, Any]:
    return dict(standin.tenant(_entra(tenant)).incidents[incident])


def test_five_runs_one_comment_per_outcome_and_the_status(
    env: dict[str, Any], task: IncidentWritebackOperator, events: list[dict[str, Any]]
) -> None:
    standin = env["standin"]
    done = [_run(task, "acme", "1001", f"manual__done{n}", approved=True) for n in range(5)]
    assert [r["commented"] for r in done] == [True, False, False, False, False]
    assert [r["status_changed"] for r in done] == [True, False, False, False, False]
    incident = _incident(standin, "acme", "1001")
    assert incident["status"] == "inProgress"
    (comment,) = [c["comment"] for c in incident["comments"]]
    assert comment.startswith(
        "Orchestrator soc_disable_entra_user: contained. Entra user mallory@acme.example: "
        "sign-in blocked, sessions revoked, MFA methods deleted. "
    )
    assert "Approved by ezra_soc_oncall. Ticket 77. Correlation id corr-" in comment
    assert comment.endswith("\n[orchestrator:soc_disable_entra_user:DEF-9001:done]")

    rejected = [_run(task, "acme", "1001", f"manual__no{n}", approved=False) for n in range(5)]
    assert [r["commented"] for r in rejected] == [True, False, False, False, False]
    assert {r["status"] for r in rejected} == {None}
    incident = _incident(standin, "acme", "1001")
    assert len(incident["comments"]) == 2
    assert incident["comments"][1]["comment"].startswith(
        "Orchestrator soc_disable_entra_user: not contained: "
        'rejected by lena_soc_lead ("user is travelling").'
    )
    assert incident["status"] == "inProgress"  # a reject does not move the incident
    assert _incident(standin, "globex", "1001")["comments"] == []  # the other tenant's incident 1001
    effects = [e for e in events if e["kind"] == "side_effect"]
    assert len(effects) == 10
    assert {e["details"]["capability"] for e in effects} == {CAPABILITY}
    assert [e["details"]["created"] for e in effects].count(True) == 2


def test_another_tenants_incident_is_not_found_with_this_tenants_credentials(
    env: dict[str, Any], task: IncidentWritebackOperator, events: list[dict[str, Any]]
) -> None:
    standin = env["standin"]
    before = len(standin.requests)
    with pytest.raises(
        AirflowFailException, match="incident '2001' not found in the Defender/Sentinel of tenant 'acme'"
    ):
        _run(task, "acme", "2001", "manual__cross", approved=True)
    calls = standin.requests[before:]
    assert calls
    assert {r.tenant_id for r in calls} <= {_entra("acme"), None}
    assert _entra("globex") not in {r.tenant_id for r in calls}
    assert all("/" + _entra("globex") + "/" not in r.path for r in calls)
    assert _incident(standin, "globex", "2001")["comments"] == []
    (failed,) = [e for e in events if e["kind"] == "notification.failed"]
    assert failed["details"]["incident_id"] == "2001"
    assert failed["tenant"] == "acme"

    # a hook of globex in a run of acme: refused before any AWS or Microsoft call
    before = len(standin.requests)
    run = RunContext("soc_disable_entra_user", "manual__cross", "incident_writeback", "acme", "corr-x")
    hook = GraphHook(capability=CAPABILITY, tenant="globex", run_context=run, aws_conn_id=AWS_CONN)
    with pytest.raises(ValueError, match="requested by a run of tenant 'acme'"):
        hook.get_incident("2001")
    assert standin.requests[before:] == []


def test_a_malformed_incident_id_is_refused_before_any_call(
    env: dict[str, Any], task: IncidentWritebackOperator, events: list[dict[str, Any]]
) -> None:
    standin = env["standin"]
    before = len(standin.requests)
    for bad in ("1001/comments", "1001\n", "x" * 30):
        with pytest.raises(AirflowFailException, match="is not a Defender/Sentinel incident id"):
            _run(task, "acme", bad, "manual__bad", approved=True)
    assert standin.requests[before:] == []
    assert [e["kind"] for e in events] == ["notification.failed"] * 3


def test_the_writeback_app_reaches_incidents_only(env: dict[str, Any]) -> None:
    run = RunContext("soc_disable_entra_user", "manual__perm", "incident_writeback", "globex", "corr-p")
    hook = GraphHook(capability=CAPABILITY, tenant="globex", run_context=run, aws_conn_id=AWS_CONN)
    assert hook.get_incident("2001")["displayName"] == "globex only"
    with pytest.raises(PermanentError, match="403"):
        hook.request("GET", "users/{k}", operation="get-user", path_parameters={"k": "jdoe@globex.example"})


def test_one_read_serves_the_comment_and_the_status(env: dict[str, Any]) -> None:
    """GraphHook.write_back_incident: the incident is read once for the comment's search and the
    status check, then one POST and one PATCH; again, one read and nothing else."""
    standin = env["standin"]
    incidents = standin.tenant(_entra("globex")).incidents
    incidents["2002"] = {**incidents["2001"], "id": "2002", "status": "active", "comments": []}
    run = RunContext("soc_disable_entra_user", "manual__once", "incident_writeback", "globex", "corr-1")
    hook = GraphHook(capability=CAPABILITY, tenant="globex", run_context=run, aws_conn_id=AWS_CONN)
    marker = "[orchestrator:soc_disable_entra_user:DEF-2002:done]"

    def incident_calls(since: int) -> list[tuple[str, str]]:
        return [
            (r.method, r.path.rsplit("/security/incidents/", 1)[1])
            for r in standin.requests[since:]
            if "/security/incidents/" in r.path
        ]

    before = len(standin.requests)
    assert hook.write_back_incident("2002", f"Contained.\n{marker}", marker=marker, status="inProgress") == (
        True,
        True,
    )
    assert incident_calls(before) == [("GET", "2002"), ("POST", "2002/comments"), ("PATCH", "2002")]
    before = len(standin.requests)
    assert hook.write_back_incident("2002", f"Contained.\n{marker}", marker=marker, status="inProgress") == (
        False,
        False,
    )
    assert incident_calls(before) == [("GET", "2002")]
    incident = _incident(standin, "globex", "2002")
    assert incident["status"] == "inProgress"
    assert [c["comment"] for c in incident["comments"]] == [f"Contained.\n{marker}"]
