"""SOC containment end to end: an alert, a real EC2 instance (moto, the tenant's account), a SOC
lead's approval through the REST API, the quarantine swap, evidence in Request Tracker.

Checked in the target systems, not in our records: the instance's groups and tags in EC2, the
tickets and their entries in Request Tracker. Five runs of the same alert leave one ticket, one
evidence comment and one isolation; a rejection changes nothing; an approval drill nobody answers
escalates (mail and ticket comment) and times out, changing nothing; bad input is refused by the
trigger form's schema or fails before any ticket exists.
"""

from __future__ import annotations

from typing import Any

import pytest

from devstack.api_client import AirflowApi, ApiError
from devstack.aws_seed import account_client
from devstack.config import REGION
from devstack.stack import Stack
from include.connectors.ec2 import PREVIOUS_GROUPS_TAG, QUARANTINE_TAG, QUARANTINE_VALUE
from include.connectors.ticketing.request_tracker import RequestTrackerHook
from include.policies.tenants import tenant_account_id
from tests.e2e.conftest import sign_up
from tests.e2e.drills import check_unanswered_drill

DAG = "soc_contain_host"
GATE = "approve_host_isolate"
USERS = {"cora_soc_op": ["soc_operator"], "cole_soc_lead": ["soc_lead"]}


@pytest.fixture(scope="module")
def users(stack: Stack, api: AirflowApi) -> dict[str, AirflowApi]:
    api.wait_for_dags({DAG})
    return sign_up(stack, USERS)


@pytest.fixture(scope="module", autouse=True)
def drill(stack: Stack, users: dict[str, AirflowApi]) -> dict[str, Any]:
    """The approval drill nobody answers, triggered as the module starts (an early drill,
    tests/e2e/conftest.py); its test, last in the module, checks the finished run."""
    host = _host(stack)
    run_id = users["cora_soc_op"].trigger(DAG, {**_alert(host, "EDR-7005"), "approval_drill": True})
    return {"host": host, "run_id": run_id}


def _host(stack: Stack, tenant: str = "globex") -> dict[str, Any]:
    ec2 = account_client("ec2", tenant_account_id(tenant), stack.profile.moto_url, REGION)
    vpc = ec2.create_vpc(CidrBlock="10.40.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.40.1.0/24")["Subnet"]["SubnetId"]
    web = ec2.create_security_group(GroupName=f"web-{vpc}", Description="web", VpcId=vpc)["GroupId"]
    quarantine = ec2.create_security_group(
        GroupName=f"quarantine-{vpc}",
        Description="quarantine",
        VpcId=vpc,
        TagSpecifications=[
            {"ResourceType": "security-group", "Tags": [{"Key": QUARANTINE_TAG, "Value": QUARANTINE_VALUE}]}
        ],
    )["GroupId"]
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    instance = ec2.run_instances(
        ImageId=image, MinCount=1, MaxCount=1, SubnetId=subnet, SecurityGroupIds=[web]
    )["Instances"][0]["InstanceId"]
    return {"ec2": ec2, "id": instance, "web": web, "quarantine": quarantine}


def _groups_and_tags(host: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
    instance = host["ec2"].describe_instances(InstanceIds=[host["id"]])["Reservations"][0]["Instances"][0]
    return sorted(g["GroupId"] for g in instance["SecurityGroups"]), {
        t["Key"]: t["Value"] for t in instance.get("Tags", [])
    }


def _alert(host: dict[str, Any], alert_id: str, tenant: str = "globex") -> dict[str, Any]:
    return {
        "host": host["id"],
        "tenant": tenant,
        "severity": "critical",
        "alert_id": alert_id,
        "summary": "EDR: credential dumping on the host",
    }


def _tickets(rt: RequestTrackerHook, alert_id: str) -> list[Any]:
    """Tickets whose subject names the alert, as Request Tracker finds them."""
    return rt._search(f"Subject LIKE '{alert_id}'", "test_search")


def test_same_alert_five_times_one_ticket_one_comment_one_isolation(
    stack: Stack, api: AirflowApi, users: dict[str, AirflowApi], rt: RequestTrackerHook
) -> None:
    host = _host(stack)
    alert = _alert(host, "EDR-7001")
    run_ids = []
    for _ in range(5):
        run_id = users["cora_soc_op"].trigger(DAG, alert)
        request = users["cole_soc_lead"].wait_for_request(DAG, run_id, GATE)
        assert host["quarantine"] in request["body"]
        users["cole_soc_lead"].answer(DAG, run_id, GATE, "Approve", comment="contain")
        assert api.wait_for_run(DAG, run_id, timeout=180)["state"] == "success"
        run_ids.append(run_id)

    groups, tags = _groups_and_tags(host)
    assert groups == [host["quarantine"]]
    assert tags[PREVIOUS_GROUPS_TAG] == host["web"]  # the first run's record, kept by the repeats
    results = [api.xcom(DAG, r, "isolate_host") for r in run_ids]
    assert [r["changed"] for r in results] == [True, False, False, False, False]
    ticket_ids = {str(api.xcom(DAG, r, "open_ticket")["id"]) for r in run_ids}
    assert len(ticket_ids) == 1
    assert len(_tickets(rt, "EDR-7001")) == 1
    evidence = {api.xcom(DAG, r, "evidence")["entry_id"] for r in run_ids}
    assert len(evidence) == 1


def test_rejection_changes_nothing(stack: Stack, api: AirflowApi, users: dict[str, AirflowApi]) -> None:
    host = _host(stack)
    run_id = users["cora_soc_op"].trigger(DAG, _alert(host, "EDR-7002"))
    users["cole_soc_lead"].wait_for_request(DAG, run_id, GATE)
    users["cole_soc_lead"].answer(DAG, run_id, GATE, "Reject", comment="false positive")
    api.wait_for_run(DAG, run_id, timeout=180)
    states = api.task_states(DAG, run_id)
    assert states["isolate_host"] == "skipped"
    assert states["evidence"] == "skipped"
    assert _groups_and_tags(host)[0] == [host["web"]]


@pytest.mark.parametrize(
    "bad",
    [
        {"host": "ws-0042"},  # not an instance id
        {"tenant": "initech"},  # unknown tenant
        {"alert_id": ""},  # malformed alert
        {"severity": 5},  # wrong type
    ],
)
def test_malformed_alert_is_refused_by_the_trigger(
    stack: Stack, users: dict[str, AirflowApi], bad: dict[str, Any]
) -> None:
    alert = {**_alert({"id": "i-0123456789abcdef0"}, "EDR-7003"), **bad}
    with pytest.raises(ApiError) as refused:
        users["cora_soc_op"].trigger(DAG, alert)
    assert refused.value.status_code == 400


def test_unknown_host_fails_before_any_ticket(
    api: AirflowApi, users: dict[str, AirflowApi], rt: RequestTrackerHook
) -> None:
    run_id = users["cora_soc_op"].trigger(DAG, _alert({"id": "i-0123456789abcdef0"}, "EDR-7004"))
    assert api.wait_for_run(DAG, run_id, timeout=240)["state"] == "failed"
    states = api.task_states(DAG, run_id)
    assert states["inspect_host"] == "failed"
    assert states["open_ticket"] == "upstream_failed"
    assert states["change_failed"] == "skipped"  # no ticket to tell, nothing was approved
    assert _tickets(rt, "EDR-7004") == []


def test_drill_nobody_answers_escalates_then_rejects_and_changes_nothing(
    stack: Stack, api: AirflowApi, drill: dict[str, Any], rt: RequestTrackerHook
) -> None:
    host, run_id = drill["host"], drill["run_id"]
    check_unanswered_drill(
        stack,
        api,
        rt,
        dag_id=DAG,
        run_id=run_id,
        gate=GATE,
        privileged="isolate_host",
        domain="soc",
        action="host-isolate",
    )
    assert _groups_and_tags(host)[0] == [host["web"]]  # EC2: groups unchanged
