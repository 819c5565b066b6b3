"""The EC2 containment steps with a mocked hook: the exact hook call, the XCom, the audit record, the
refusals. The hook itself runs against moto in tests/integration/connectors/test_ec2_isolation.py, the
whole workflow in tests/e2e/test_soc_contain_host.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from unittest import mock

import pytest
from airflow.sdk.exceptions import AirflowFailException

from include.approvals.verify import RequiresApproval, params_artifact
from include.connectors.ec2 import ContainmentError, Ec2Hook, IsolationPlan
from include.operators.ec2 import InspectHostOperator, IsolateHostOperator
from tests.support.operators import patched_hook

HOST = "i-0123456789abcdef0"
ROLE = "arn:aws:iam::222222222222:role/orchestrator-host-isolate"
PLAN = IsolationPlan(
    instance_id=HOST,
    vpc_id="vpc-1",
    current_groups=("sg-ssh", "sg-web"),
    quarantine_group="sg-quarantine",
    previous_groups=("sg-ssh", "sg-web"),
    already_isolated=False,
)
ISOLATED = {**PLAN.as_xcom(), "changed": True, "correlation_id": "ALERT-7"}
CONTEXT: dict[str, Any] = {"ti": mock.MagicMock(task_id="isolate_host")}


@pytest.fixture
def inspect_hook() -> Iterator[mock.MagicMock]:
    with patched_hook(InspectHostOperator) as hook:
        yield hook


@pytest.fixture
def isolate_hook() -> Iterator[mock.MagicMock]:
    with patched_hook(IsolateHostOperator, role_arn=ROLE) as hook:
        yield hook


@pytest.fixture
def audit() -> Iterator[mock.MagicMock]:
    with mock.patch("include.operators.ec2.audit_side_effect") as side_effect:
        yield side_effect


def test_inspect_returns_the_plan_and_its_markdown(inspect_hook: mock.MagicMock) -> None:
    inspect_hook.plan_isolation.return_value = PLAN
    operator = InspectHostOperator(task_id="inspect_host", tenant="globex", host=HOST)

    result = operator.execute(CONTEXT)

    inspect_hook.plan_isolation.assert_called_once_with(HOST)
    assert result == {**PLAN.as_xcom(), "markdown": PLAN.markdown()}


def test_isolate_acts_through_the_hook_and_audits_the_change(
    isolate_hook: mock.MagicMock, audit: mock.MagicMock
) -> None:
    isolate_hook.isolate.return_value = ISOLATED
    operator = IsolateHostOperator(task_id="isolate_host", tenant="globex", host=HOST)

    result = operator.act(CONTEXT)

    isolate_hook.isolate.assert_called_once_with(HOST)
    assert result == ISOLATED
    audit.assert_called_once_with(
        CONTEXT,
        system="aws",
        operation="isolate-host",
        object_id=HOST,
        tenant="globex",
        created=True,
        capability="host-isolate",
        role_arn=ROLE,
        previous_groups=["sg-ssh", "sg-web"],
        quarantine_group="sg-quarantine",
        vpc_id="vpc-1",
    )


@pytest.mark.parametrize(
    ("operator_class", "hook_fixture", "method"),
    [
        pytest.param(InspectHostOperator, "inspect_hook", "plan_isolation", id="inspect"),
        pytest.param(IsolateHostOperator, "isolate_hook", "isolate", id="isolate"),
    ],
)
def test_a_containment_error_fails_the_task_at_once(
    request: pytest.FixtureRequest,
    audit: mock.MagicMock,
    operator_class: type,
    hook_fixture: str,
    method: str,
) -> None:
    hook = request.getfixturevalue(hook_fixture)
    getattr(hook, method).side_effect = ContainmentError(
        f"instance {HOST} not found in this tenant's account"
    )
    operator = operator_class(task_id="step", tenant="globex", host=HOST)
    run = operator.execute if operator_class is InspectHostOperator else operator.act

    with pytest.raises(
        AirflowFailException, match=f"^step: instance {HOST} not found in this tenant's account$"
    ):
        run(CONTEXT)
    audit.assert_not_called()


@pytest.mark.parametrize(
    ("operator_class", "capability"),
    [
        pytest.param(InspectHostOperator, "host-inspect", id="inspect"),
        pytest.param(IsolateHostOperator, "host-isolate", id="isolate"),
    ],
)
def test_the_hook_is_the_steps_capability_in_the_tenant(operator_class: type, capability: str) -> None:
    operator = operator_class(task_id="step", tenant="globex", host=HOST, aws_conn_id="aws_soc")

    hook = operator.hook

    assert isinstance(hook, Ec2Hook)
    assert (hook.conn_id, hook.capability, hook.tenant) == ("aws_soc", capability, "globex")
    assert operator.hook is hook  # built once per task
    assert "client" not in vars(hook)  # nothing assumed yet


def test_isolation_is_privileged_and_bound_to_the_host_and_tenant() -> None:
    operator = IsolateHostOperator(task_id="isolate_host", tenant="globex", host=HOST)

    assert isinstance(operator, RequiresApproval)
    assert not issubclass(InspectHostOperator, RequiresApproval)
    assert operator.expected_artifact({}) == params_artifact(
        {"host": HOST, "tenant": "globex"}, ["host", "tenant"]
    )
