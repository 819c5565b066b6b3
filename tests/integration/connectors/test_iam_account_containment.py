"""IamHook: disabling a compromised IAM user in the tenant's account (moto), as the capability roles.

A staff user with two active keys and a console password in globex's account: inspection (read
only) shows them; disabling deactivates the keys and removes the password, keeps the user and the
keys; repeats change nothing; acme's role cannot see the user; a service account (not /staff/),
an unknown user and a malformed name are refused before any change.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from devstack.aws_seed import account_client, seed_capability_roles
from include.connectors.context import RunContext
from include.connectors.iam import AccountContainmentError, AccountNotFound, IamHook
from include.policies.tenants import tenant_account_id
from tests.support.moto import moto_with_aws_connection

REGION = "eu-west-1"
CONN_ID = "aws_iam_containment_itest"


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    with moto_with_aws_connection(CONN_ID, REGION) as url:
        seed_capability_roles(url, REGION)
        yield url


def _iam_as(capability: str, tenant: str) -> IamHook:
    run = RunContext("soc_disable_account", "manual__1", "disable_account", tenant, f"corr-{tenant}")
    return IamHook(CONN_ID, capability=capability, tenant=tenant, run_context=run)


@pytest.fixture
def user(moto_url: str, request: pytest.FixtureRequest) -> dict[str, Any]:
    iam = account_client("iam", tenant_account_id("globex"), moto_url, REGION)
    name = f"jdoe-{request.node.name[-12:].strip('[]_')}"[:64]
    iam.create_user(UserName=name, Path="/staff/")
    keys = sorted(iam.create_access_key(UserName=name)["AccessKey"]["AccessKeyId"] for _ in range(2))
    iam.create_login_profile(UserName=name, Password="Initial-Pw-1!")
    return {"iam": iam, "name": name, "keys": keys}


def test_disable_deactivates_keys_and_console_keeps_the_user_and_repeats_are_no_ops(
    user: dict[str, Any],
) -> None:
    before = _iam_as("identity-inspect", "globex").inspect_user(user["name"])
    assert before.active_keys == tuple(user["keys"])
    assert before.console_access is True
    assert "deactivate access keys" in before.markdown()

    result = _iam_as("identity-disable", "globex").disable_user(user["name"])
    assert result["changed"] is True
    assert result["deactivated_keys"] == user["keys"]
    assert result["console_password_removed"] is True
    keys = user["iam"].list_access_keys(UserName=user["name"])["AccessKeyMetadata"]
    assert sorted((k["AccessKeyId"], k["Status"]) for k in keys) == [(k, "Inactive") for k in user["keys"]]
    assert user["iam"].get_user(UserName=user["name"])["User"]["UserName"] == user["name"]  # kept
    with pytest.raises(user["iam"].exceptions.NoSuchEntityException):
        user["iam"].get_login_profile(UserName=user["name"])

    for _ in range(4):
        again = _iam_as("identity-disable", "globex").disable_user_if_present(user["name"])
        assert again is not None
        assert again["changed"] is False
        assert again["deactivated_keys"] == []


def test_another_tenant_cannot_see_the_user(user: dict[str, Any]) -> None:
    with pytest.raises(AccountNotFound, match="not found in this tenant's account"):
        _iam_as("identity-disable", "acme").disable_user(user["name"])
    assert _iam_as("identity-disable", "acme").disable_user_if_present(user["name"]) is None
    keys = user["iam"].list_access_keys(UserName=user["name"])["AccessKeyMetadata"]
    assert {k["Status"] for k in keys} == {"Active"}


def test_service_accounts_unknown_and_malformed_names_are_refused(moto_url: str) -> None:
    iam = account_client("iam", tenant_account_id("globex"), moto_url, REGION)
    iam.create_user(UserName="ci-deployer", Path="/service/")
    iam.create_access_key(UserName="ci-deployer")
    disabler = _iam_as("identity-disable", "globex")
    with pytest.raises(AccountContainmentError, match="not a staff account"):
        disabler.disable_user_if_present("ci-deployer")  # present, but not staff: refused
    assert iam.list_access_keys(UserName="ci-deployer")["AccessKeyMetadata"][0]["Status"] == "Active"
    with pytest.raises(AccountContainmentError, match="IAM user nobody not found"):
        disabler.disable_user("nobody")
    with pytest.raises(AccountContainmentError, match="is not an IAM user name"):
        disabler.disable_user("bad name with spaces")
