"""
### Evidence packs: monthly per tenant, and on demand for auditors

On the first of each month (04:00 UTC, after the night's audit seals) builds every customer
tenant's evidence pack of the previous month: the tenant's audit records, the proofs that none is
missing or altered, and a readable report (HTML and PDF, `include/evidence`); should the month's
last records not be sealed yet (a quiet month end), it runs the platform's audit seal first. Each
pack is stored write-once in the evidence bucket next to the audit export (S3 Object Lock,
COMPLIANCE mode, kept for the `evidence_pack` period of `include/policies/retention.yaml`) and the
tenant's security contact (`include/policies/tenants.yaml`) is mailed where it is and its
manifest's SHA-256.

**On demand** (trigger form): one tenant, a period (first and last day, or two instants) and
optionally an area (domain, for an internal audit) and a ticket of that tenant to post the notice
on instead of the mail. Only the `auditor` role may trigger this workflow (and Admin); platform
staff can read it. A run by hand builds exactly the tenant it names, nothing of any other. See
docs/evidence.md, "Delivery".
"""

from airflow.sdk import Param, dag, task

from include.operators.evidence import EvidencePackOperator
from include.policies.loader import load_domain_policy
from include.policies.sync import AUDITOR_ROLE
from include.policies.tenants import all_tenant_ids
from include.workflows.factory import OPERATOR_PERMISSIONS, workflow_dag_kwargs

DOMAIN = "platform"
# Read only for the platform's own roles; only auditors start a run (docs/evidence.md, "Delivery").
READ_ONLY = {"DAGs": {"can_read"}, "DAG Runs": {"can_read"}}
PERIOD_PATTERN = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}"
    r"(T[0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,6})?)?(Z|[+-][0-9]{2}:[0-9]{2})?)?(?!\n)$"
)

kwargs = workflow_dag_kwargs(
    dag_id="platform_evidence_packs",
    domain=DOMAIN,
    doc_md=__doc__,
    schedule="0 4 1 * *",
    params={
        "tenant": Param(
            None,
            type=["null", "string"],
            enum=[None, *all_tenant_ids()],
            title="Tenant",
            description="Whose evidence pack (required when you trigger it; "
            "the monthly run packs every customer)",
        ),
        "period_start": Param(
            None,
            type=["null", "string"],
            pattern=PERIOD_PATTERN,
            title="From",
            description="First day of the period (YYYY-MM-DD, UTC) or an instant (YYYY-MM-DDTHH:MM:SSZ); "
            "empty: the first day of last month",
        ),
        "period_end": Param(
            None,
            type=["null", "string"],
            pattern=PERIOD_PATTERN,
            title="To",
            description="Last day of the period, included (YYYY-MM-DD, UTC), or an instant, excluded; "
            "empty: the last day of last month",
        ),
        "domain": Param(
            None,
            type=["null", "string"],
            enum=[None, *sorted(load_domain_policy().domains)],
            title="Area (optional)",
            description="Only this domain's records in full (an internal audit); empty: every domain",
        ),
        "ticket_id": Param(
            None,
            type=["null", "string"],
            pattern="^[0-9]{1,12}(?!\\n)$",
            title="Ticket (optional)",
            description="A ticket of this tenant to post the notice on; "
            "empty: mail the tenant's security contact",
        ),
    },
)
policy_grants = kwargs["access_control"]
kwargs["access_control"] = {
    AUDITOR_ROLE: OPERATOR_PERMISSIONS,
    **{role: READ_ONLY for role in policy_grants if role != AUDITOR_ROLE},
}


@dag(**kwargs)  # noqa: AIR002 - schedule is in kwargs
def evidence_packs() -> None:
    @task
    def plan() -> list[dict]:
        """The packs of this run: every customer (monthly), or the one tenant of a run by hand."""
        from airflow.sdk import get_current_context

        from include.operators.evidence import pack_requests
        from include.policies.tenants import tenant_ids

        context = get_current_context()
        dag_run = context["dag_run"]
        manual = str(getattr(dag_run, "run_type", "")) in ("manual", "DagRunType.MANUAL")
        requests = pack_requests(
            context["params"],
            manual=manual,
            run_after=dag_run.run_after,
            customers=tenant_ids(),
            known_tenants=all_tenant_ids(),
        )
        return [r.as_dict() for r in requests]

    EvidencePackOperator.partial(task_id="build_store_tell").expand(request=plan())


evidence_packs()
