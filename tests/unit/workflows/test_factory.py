"""domain_workflow applies the domain policy and rejects declarations that would bypass it."""

from __future__ import annotations

import re
import warnings
from datetime import timedelta

import pytest
from airflow.exceptions import AirflowProviderDeprecationWarning
from airflow.sdk import DeadlineReference, Param, task

from include.policies.loader import DOMAINS_FILE, PolicyError, load_domain_policy
from include.workflows.factory import (
    APPROVER_PERMISSIONS,
    OPERATOR_PERMISSIONS,
    WorkflowDefinitionError,
    domain_workflow,
    workflow_dag_kwargs,
)

DOC = "Test workflow: proves the domain policy is applied."


def exactly(message: str) -> str:
    return f"^{re.escape(message)}$"


@pytest.fixture(scope="module")
def soc_dag():
    @domain_workflow(
        domain="soc",
        doc_md=DOC,
        params={"host": Param("web-01", type="string", description="Host to isolate")},
        tags=("containment",),
    )
    def isolate_host():
        @task
        def isolate():
            return "isolated"

        @task
        def confirm(result):
            return result

        confirm(isolate())

    return isolate_host()


def test_dag_gets_domain_settings(soc_dag):
    soc = load_domain_policy().domain("soc")

    assert soc_dag.dag_id == "soc_isolate_host"
    assert soc_dag.doc_md == DOC
    assert soc_dag.max_active_runs == soc.max_active_runs
    assert soc_dag.max_active_tasks == soc.max_active_tasks
    assert soc_dag.catchup is False
    assert soc_dag.tags == {"containment", "domain:soc", "kind:fast_path", "soc"}
    assert soc_dag.access_control == {
        "soc_operator": OPERATOR_PERMISSIONS,
        "soc_approver": APPROVER_PERMISSIONS,
        # the approver groups of approvals.yaml that approve in soc
        "soc_lead": APPROVER_PERMISSIONS,
        "soc_oncall": APPROVER_PERMISSIONS,
        "security_officer": APPROVER_PERMISSIONS,
    }


def test_every_task_gets_domain_task_settings(soc_dag):
    policy = load_domain_policy()
    soc = policy.domain("soc")

    assert [task.task_id for task in soc_dag.tasks] == ["isolate", "confirm"]
    for task_ in soc_dag.tasks:
        assert task_.pool == "soc"
        assert task_.owner == soc.owner
        assert task_.priority_weight == soc.priority_weight
        assert task_.weight_rule == "absolute"
        assert task_.retries == policy.defaults.retries
        assert task_.retry_delay == policy.defaults.retry_delay
        assert task_.retry_exponential_backoff
        assert task_.max_retry_delay == policy.defaults.max_retry_delay
        assert task_.execution_timeout == soc.timeouts["fast_path"].execution_timeout == timedelta(minutes=10)


def test_every_run_is_bounded_by_the_domain_policy(soc_dag):
    assert soc_dag.dagrun_timeout == load_domain_policy().domain("soc").timeouts["fast_path"].dagrun_timeout
    assert soc_dag.dagrun_timeout == timedelta(hours=2)


def test_a_task_keeps_a_shorter_timeout_of_its_own():
    @domain_workflow(domain="soc", dag_id="soc_quick", doc_md=DOC)
    def quick():
        @task(execution_timeout=timedelta(seconds=30))
        def ping():
            return 1

        @task
        def pong():
            return 2

        ping() >> pong()

    dag = quick()
    assert {t.task_id: t.execution_timeout for t in dag.tasks} == {
        "ping": timedelta(seconds=30),
        "pong": timedelta(minutes=10),
    }


def test_an_approval_gate_gets_its_wait_plus_the_work_without_airflows_deprecation():
    from include.workflows.approval import approval_gate

    @domain_workflow(domain="hr", dag_id="hr_gated", doc_md=DOC, kind="infrastructure_change")
    def gated():
        approval_gate("identity-disable", subject="s", body="b")

    with warnings.catch_warnings():
        # HITLOperator turns a default execution_timeout into its response timeout, with a warning.
        warnings.simplefilter("error", AirflowProviderDeprecationWarning)
        dag = gated()

    # Two steps of up to 2d each; each step at its wait + the hr infrastructure_change task timeout.
    assert {t.task_id: (t.response_timeout, t.execution_timeout) for t in dag.tasks} == {
        "approve_identity_disable.step_1_hr_lead": (timedelta(days=2), timedelta(days=2, hours=2)),
        "approve_identity_disable.step_2_security_officer": (timedelta(days=2), timedelta(days=2, hours=2)),
    }
    assert dag.dagrun_timeout == timedelta(days=5)


def test_an_approval_gate_timeout_is_not_set_by_hand():
    from include.workflows.approval import approval_gate

    @domain_workflow(domain="soc", dag_id="soc_gate_by_hand", doc_md=DOC)
    def by_hand():
        approval_gate("host-isolate", subject="s", body="b", execution_timeout=timedelta(days=9))

    with pytest.raises(
        ValueError,
        match=exactly("approval_gate('host-isolate'): execution_timeout comes from the approval policy"),
    ):
        by_hand()


def test_deadline_alerts_the_domain_when_the_sla_is_missed(soc_dag):
    soc = load_domain_policy().domain("soc")

    [deadline] = soc_dag.deadline
    assert deadline.interval == soc.sla["fast_path"] == timedelta(minutes=5)
    assert deadline.reference == DeadlineReference.DAGRUN_QUEUED_AT
    assert deadline.name == "soc-fast_path-sla"
    assert deadline.callback.path == "include.workflows.alerts.SlaMissNotifier"
    kwargs = deadline.callback.kwargs
    assert kwargs["to"] == ["soc-alerts@secops.example"] == list(soc.alert_emails)
    assert kwargs["smtp_conn_id"] == "smtp_alerts"
    assert (kwargs["domain"], kwargs["kind"], kwargs["sla_seconds"]) == ("soc", "fast_path", 300.0)


def test_the_sla_alert_mails_through_the_shared_tls_client():
    from include.connectors.smtp import SharedTlsSmtpClient
    from include.workflows.alerts import SlaMissNotifier

    notifier = SlaMissNotifier(
        domain="soc", kind="fast_path", sla_seconds=300, base_url="http://x", to="a@b", smtp_conn_id="x"
    )
    assert type(notifier.hook) is SharedTlsSmtpClient


def test_params_are_typed(soc_dag):
    host = soc_dag.params.get_param("host")
    assert host.schema == {"type": "string"}
    assert host.description == "Host to isolate"
    assert host.value == "web-01"


def test_infrastructure_change_uses_its_own_sla():
    kwargs = workflow_dag_kwargs(
        dag_id="implementation_provision_tenant",
        domain="implementation",
        doc_md=DOC,
        kind="infrastructure_change",
    )

    assert kwargs["deadline"].interval == timedelta(hours=4)
    assert kwargs["deadline"].name == "implementation-infrastructure_change-sla"
    assert kwargs["dagrun_timeout"] == timedelta(days=3)
    assert kwargs["default_args"]["execution_timeout"] == timedelta(hours=1)
    assert "kind:infrastructure_change" in kwargs["tags"]


def test_schedule_and_start_date_may_be_set():
    kwargs = workflow_dag_kwargs(dag_id="hr_sync", domain="hr", doc_md=DOC, schedule="@daily")

    assert kwargs["schedule"] == "@daily"
    assert kwargs["default_args"]["pool"] == "hr"


@pytest.mark.parametrize("doc_md", [None, "", "  \n "], ids=["none", "empty", "blank"])
def test_doc_md_is_required(doc_md):
    with pytest.raises(
        WorkflowDefinitionError,
        match=exactly("DAG hr_onboard: doc_md is required (say what the workflow does)"),
    ):
        workflow_dag_kwargs(dag_id="hr_onboard", domain="hr", doc_md=doc_md)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        pytest.param(
            {"employee": "jdoe"},
            "DAG hr_onboard: param 'employee' must be an airflow.sdk.Param with a JSON-schema type, got str",
            id="plain-value",
        ),
        pytest.param(
            {"employee": Param("jdoe")},
            "DAG hr_onboard: param 'employee' has no type in its schema",
            id="param-without-type",
        ),
    ],
)
def test_untyped_param_rejected(params, message):
    with pytest.raises(WorkflowDefinitionError, match=exactly(message)):
        workflow_dag_kwargs(dag_id="hr_onboard", domain="hr", doc_md=DOC, params=params)


def test_unknown_domain_rejected_listing_declared_domains():
    with pytest.raises(
        PolicyError,
        match=exactly(
            f"unknown domain 'marketing': declared domains in {DOMAINS_FILE} are "
            "hr, implementation, invoicing, platform, soc, support"
        ),
    ):
        workflow_dag_kwargs(dag_id="marketing_campaign", domain="marketing", doc_md=DOC)


@pytest.mark.parametrize(
    ("overrides", "names"),
    [
        pytest.param({"default_args": {"pool": "default_pool"}}, "default_args", id="default_args"),
        pytest.param({"access_control": {}}, "access_control", id="access_control"),
        pytest.param({"max_active_runs": 500}, "max_active_runs", id="max_active_runs"),
        pytest.param({"max_active_tasks": 500}, "max_active_tasks", id="max_active_tasks"),
        pytest.param({"deadline": None}, "deadline", id="deadline"),
        pytest.param({"dagrun_timeout": timedelta(days=30)}, "dagrun_timeout", id="dagrun_timeout"),
        pytest.param({"deadline": None, "max_active_runs": 1}, "deadline, max_active_runs", id="several"),
    ],
)
def test_policy_settings_cannot_be_overridden(overrides, names):
    with pytest.raises(
        WorkflowDefinitionError,
        match=exactly(f"DAG support_bulk_update: {names} come from the domain policy and cannot be set here"),
    ):
        workflow_dag_kwargs(dag_id="support_bulk_update", domain="support", doc_md=DOC, **overrides)


def test_decorator_validates_at_definition_time():
    with pytest.raises(
        WorkflowDefinitionError,
        match=exactly("DAG soc_undocumented: doc_md is required (say what the workflow does)"),
    ):

        @domain_workflow(domain="soc", doc_md=None)
        def undocumented():
            pass
