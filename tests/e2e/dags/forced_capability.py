"""
### Capabilities reached for directly (end-to-end test DAG)

What a DAG file forced past `policy-check` (a push to the tracked branch without review) could try:
a `@task` in a SOC workflow that asks for the privileged `host-isolate` role itself, with no gate,
and one that asks for `terraform-plan`, a capability of the implementation domain. The cluster
policies see no privileged operator here, so it imports; at run time `include.connectors.aws`
hands out neither role (`ApprovalVerificationError`, no retry) and writes a `policy.violation`.
"""

from airflow.sdk import Param, get_current_context, task

from include.workflows import domain_workflow


def _client(capability: str, service: str) -> object:
    from include.connectors.aws import capability_client
    from include.connectors.context import RunContext

    context = get_current_context()
    tenant = context["params"]["tenant"]
    run = RunContext.from_airflow_context(context, tenant)
    return capability_client(capability, tenant, service, run_context=run)


@domain_workflow(
    domain="soc",
    dag_id="e2e_forced_capability",
    doc_md=__doc__,
    params={"tenant": Param("globex", type="string", enum=["acme", "globex"])},
)
def forced_capability():
    @task(retries=0)
    def isolate_without_a_gate() -> None:
        _client("host-isolate", "ec2").describe_instances()  # type: ignore[attr-defined]

    @task(retries=0)
    def plan_of_another_domain() -> None:
        _client("terraform-plan", "ec2").describe_vpcs()  # type: ignore[attr-defined]

    isolate_without_a_gate()
    plan_of_another_domain()


forced_capability()
