"""IdentityCenterHook: onboarding/offboarding against an in-process moto server, on capability sessions.

What moto 5.2.5 models (measured): the identitystore API per account and region, any
``IdentityStoreId`` (a store is created on first use, empty), users, groups and memberships,
GetUserId by ``userName``/``emails.value``, GetGroupId by ``displayName``, pagination. What it does
not: ``UpdateUser`` (NotImplementedError, HTTP 500): ``devstack.standins.moto_server`` installs a
minimal one (here in this process's moto, in the devstack in its moto server) that replaces
top-level attributes such as ``userType``, as the real API documents, so offboarding's mark can
be read back; the enterprise extension
(``employeeNumber``) is accepted and dropped; ``UserStatus`` is never reported; IAM is not enforced
(capabilities.yaml is checked statically below).

Tenant isolation is moto's account isolation (see tests/integration/test_aws_capabilities.py):
each tenant's identity store lives in the tenant's account, reached only through that account's
capability role.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

# The Airflow connection is read through Airflow: keep it off any install.
if "AIRFLOW_HOME" not in os.environ:
    os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="orchestrator-itest-airflow-")

from devstack.aws_seed import account_client, seed_capability_roles
from devstack.standins.moto_server import install_update_user
from include.connectors import aws
from include.connectors.context import RunContext
from include.connectors.errors import RetryBudgetExhausted, TransientError
from include.connectors.identity_center import (
    DISABLED_USER_TYPE,
    REQUIRED_ACTIONS,
    IdentityCenterAccessDenied,
    IdentityCenterConflict,
    IdentityCenterHook,
    IdentityCenterNotFound,
    IdentityCenterValidationError,
    session_revocation_plan,
)
from include.policies.capabilities import get_capability
from include.policies.hr_roles import role_mapping
from include.policies.tenants import tenant_account_id
from tests.support.moto import moto_with_aws_connection

REGION = "eu-west-1"
CONN_ID = "aws_identity_itest"
STORE = "d-1234567890"
RUN_ID = "manual__2026-03-02T09:00:00+00:00"


def person(given_name: str, family_name: str, employee_id: str) -> dict[str, Any]:
    """What HR sends about one person (``ensure_user``'s keyword arguments but the groups), with the
    work address ``given.family@secops.example``."""
    return {
        "given_name": given_name,
        "family_name": family_name,
        "email": f"{given_name}.{family_name}@secops.example".lower(),
        "employee_id": employee_id,
    }


ADA = person("Ada", "Lovelace", "E01234")


# --- moto: the server, its missing UpdateUser, the capability roles -----------------------------


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    with moto_with_aws_connection(CONN_ID, REGION) as url:
        install_update_user()  # the devstack's stand-in for moto's missing UpdateUser
        yield url


@pytest.fixture(scope="module")
def seeded(moto_url: str) -> list[str]:
    started = time.perf_counter()
    roles = seed_capability_roles(moto_url, REGION)
    print(f"\n[timing] seed capability roles: {time.perf_counter() - started:.2f} s")
    return roles


def admin(tenant: str, moto_url: str) -> Any:
    """identitystore as the account itself (test set-up and read-back, not a capability session)."""
    return account_client("identitystore", tenant_account_id(tenant), moto_url, REGION)


ALL_GROUPS = sorted(
    {
        g
        for role in ("soc-lead", "cloud-engineer", "finance")
        for g in role_mapping(role).identity_center_groups
    }
)


@pytest.fixture(scope="module")
def groups(moto_url: str, seeded: list[str]) -> dict[str, str]:
    """The groups Terraform would provision with their permission sets, in acme's store."""
    client = admin("acme", moto_url)
    return {
        name: client.create_group(
            IdentityStoreId=STORE, DisplayName=name, Description=f"{name} (provisioned)"
        )["GroupId"]
        for name in ALL_GROUPS
    }


def run_context(tenant: str, task_id: str) -> RunContext:
    return RunContext(
        dag_id="hr_onboarding",
        run_id=RUN_ID,
        task_id=task_id,
        tenant=tenant,
        correlation_id=f"HR-77-{tenant}",
    )


def onboarding(tenant: str = "acme") -> IdentityCenterHook:
    return IdentityCenterHook(
        CONN_ID,
        capability="identity-admin",
        tenant=tenant,
        run_context=run_context(tenant, "create_identity"),
        identity_store_id=STORE,
    )


def offboarding(tenant: str = "acme") -> IdentityCenterHook:
    return IdentityCenterHook(
        CONN_ID,
        capability="identity-disable",
        tenant=tenant,
        run_context=run_context(tenant, "disable_identity"),
        identity_store_id=STORE,
    )


@pytest.fixture
def assume_calls(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Every AssumeRole the connector makes (its parameters): proof of which role did the work."""
    calls: list[dict[str, Any]] = []
    original = aws.base_aws

    def recording(aws_conn_id: str) -> aws.BaseAws:
        base = original(aws_conn_id)
        base.session.events.register(
            "provide-client-params.sts.AssumeRole", lambda params, **_: calls.append(dict(params))
        )
        return base

    monkeypatch.setattr(aws, "base_aws", recording)
    return calls


def users_named(client: Any, user_name: str) -> list[dict[str, Any]]:
    users = client.list_users(IdentityStoreId=STORE)["Users"]
    return [u for u in users if u["UserName"] == user_name]


def memberships(client: Any, user_id: str) -> dict[str, str]:
    """group display name -> membership id."""
    found = client.list_group_memberships_for_member(IdentityStoreId=STORE, MemberId={"UserId": user_id})
    return {
        client.describe_group(IdentityStoreId=STORE, GroupId=m["GroupId"])["DisplayName"]: m["MembershipId"]
        for m in found["GroupMemberships"]
    }


# --- onboarding ----------------------------------------------------------------------------------


def test_onboarding_creates_the_user_and_its_memberships(moto_url, groups, assume_calls):
    mapping = role_mapping("soc-lead")

    started = time.perf_counter()
    result = onboarding().ensure_user("alovelace", groups=mapping.identity_center_groups, **ADA)
    print(
        f"\n[timing] ensure_user (create + {len(mapping.identity_center_groups)} groups): "
        f"{time.perf_counter() - started:.2f} s"
    )

    assert result.created
    assert result.changed
    assert not result.disabled
    assert result.groups == result.groups_added == ("all-staff", "soc-analysts", "soc-leads")
    assert [c["RoleArn"] for c in assume_calls] == [
        "arn:aws:iam::111111111111:role/orchestrator-identity-admin"
    ]
    client = admin("acme", moto_url)
    (user,) = users_named(client, "alovelace")
    assert user["UserId"] == result.user_id
    described = client.describe_user(IdentityStoreId=STORE, UserId=result.user_id)
    assert described["Name"] == {"GivenName": "Ada", "FamilyName": "Lovelace"}
    assert described["DisplayName"] == "Ada Lovelace"
    assert described["Emails"] == [{"Value": "ada.lovelace@secops.example", "Type": "work", "Primary": True}]
    assert described["UserType"] == "Employee"
    assert sorted(memberships(client, result.user_id)) == ["all-staff", "soc-analysts", "soc-leads"]
    assert result.as_xcom() == {
        "identity_store_id": STORE,
        "user_name": "alovelace",
        "user_id": result.user_id,
        "created": True,
        "changed": True,
        "disabled": False,
        "groups": ["all-staff", "soc-analysts", "soc-leads"],
        "groups_added": ["all-staff", "soc-analysts", "soc-leads"],
        "groups_removed": [],
        "user_status": None,
    }


def test_five_repeats_leave_one_user_with_the_same_memberships(moto_url, groups):
    client = admin("acme", moto_url)
    first = onboarding().ensure_user(
        "ghopper",
        groups=role_mapping("cloud-engineer").identity_center_groups,
        **person("Grace", "Hopper", "E01235"),
    )
    before = memberships(client, first.user_id)

    started = time.perf_counter()
    repeats = [
        onboarding().ensure_user(
            "ghopper", groups=["cloud-engineers", "all-staff"], **person("Grace", "Hopper", "E01235")
        )
        for _ in range(5)
    ]
    print(f"\n[timing] 5 repeated ensure_user: {time.perf_counter() - started:.2f} s")

    assert first.created
    assert {(r.user_id, r.created, r.changed, r.groups_added) for r in repeats} == {
        (first.user_id, False, False, ())
    }
    assert len(users_named(client, "ghopper")) == 1
    assert memberships(client, first.user_id) == before  # same membership ids: nothing re-created


def test_onboarding_adds_only_the_missing_membership(moto_url, groups):
    client = admin("acme", moto_url)
    result = onboarding().ensure_user(
        "jdoe", groups=["all-staff", "billing"], **person("Jane", "Doe", "E01236")
    )
    client.delete_group_membership(
        IdentityStoreId=STORE, MembershipId=memberships(client, result.user_id)["billing"]
    )

    again = onboarding().ensure_user(
        "jdoe", groups=["all-staff", "billing"], **person("Jane", "Doe", "E01236")
    )

    assert (again.created, again.changed, again.groups_added) == (False, True, ("billing",))
    assert sorted(memberships(client, result.user_id)) == ["all-staff", "billing"]


# --- offboarding ---------------------------------------------------------------------------------


def test_offboarding_removes_every_membership_and_marks_the_user_disabled(moto_url, groups, assume_calls):
    client = admin("acme", moto_url)
    user = onboarding().ensure_user(
        "mcurie", groups=["all-staff", "soc-analysts"], **person("Marie", "Curie", "E01237")
    )
    client.create_group_membership(
        IdentityStoreId=STORE, GroupId=groups["billing"], MemberId={"UserId": user.user_id}
    )
    assume_calls.clear()

    started = time.perf_counter()
    result = offboarding().disable_user("mcurie")
    print(f"\n[timing] disable_user (3 memberships): {time.perf_counter() - started:.2f} s")

    assert [c["RoleArn"] for c in assume_calls] == [
        "arn:aws:iam::111111111111:role/orchestrator-identity-disable"
    ]
    assert (result.user_id, result.disabled, result.changed) == (user.user_id, True, True)
    assert result.groups_removed == ("all-staff", "billing", "soc-analysts")  # also the one outside the role
    assert memberships(client, user.user_id) == {}
    described = client.describe_user(IdentityStoreId=STORE, UserId=user.user_id)  # still there: never deleted
    assert described["UserType"] == DISABLED_USER_TYPE
    assert described["UserName"] == "mcurie"
    assert len(users_named(client, "mcurie")) == 1

    repeat = offboarding().disable_user("mcurie")

    assert (repeat.changed, repeat.disabled, repeat.groups_removed) == (False, True, ())
    assert memberships(client, user.user_id) == {}

    plan = session_revocation_plan(result)
    assert plan.deny_policy["Statement"][0]["Condition"] == {
        "StringEquals": {"identitystore:userId": [user.user_id]}
    }
    assert plan.deny_policy["Statement"][0]["Effect"] == "Deny"
    assert "Active sessions" in plan.markdown()


def test_a_disabled_identity_is_not_re_enabled_by_onboarding(moto_url, groups):
    onboarding().ensure_user("aturing", groups=["all-staff"], **person("Alan", "Turing", "E01238"))
    offboarding().disable_user("aturing")

    with pytest.raises(IdentityCenterConflict, match="was disabled by offboarding"):
        onboarding().ensure_user("aturing", groups=["all-staff"], **person("Alan", "Turing", "E01238"))
    user_id = offboarding().user_id("aturing")
    assert user_id is not None
    assert memberships(admin("acme", moto_url), user_id) == {}  # nothing was added back


def test_disabling_an_unknown_user_is_a_clear_error(moto_url, seeded):
    with pytest.raises(IdentityCenterNotFound) as raised:
        offboarding().disable_user("nobody")

    assert (
        str(raised.value)
        == "identitystore disable_user: user 'nobody' not found in identity store d-1234567890"
    )


# --- refused before any write ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("user_name", "changes", "problem"),
    [
        pytest.param(
            "Ada Lovelace", {}, "user name 'Ada Lovelace' must match ^[a-z][a-z0-9._-]{1,31}$", id="user-name"
        ),
        pytest.param(
            "ada", {"email": "ada"}, "email 'ada' is not an address like name@example.com", id="email"
        ),
        pytest.param(
            "ada",
            {"given_name": " Ada"},
            "given_name ' Ada' must be a non-empty string without surrounding blanks",
            id="given-name",
        ),
        pytest.param(
            "ada",
            {"employee_id": "E 1"},
            "employee_id 'E 1' must match ^[A-Za-z0-9][A-Za-z0-9-]{0,31}$",
            id="employee-id",
        ),
        pytest.param(
            "ada",
            {"groups": []},
            "groups must name at least one group (the role mapping's groups)",
            id="no-groups",
        ),
        pytest.param(
            "ada",
            {"groups": "all-staff"},
            "groups must be a list of group names, got 'all-staff'",
            id="groups-string",
        ),
        pytest.param(
            "ada",
            {"groups": ["all-staff", "SOC analysts"]},
            "group 'SOC analysts' must match ^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$",
            id="group-name",
        ),
        pytest.param(
            "x",
            {"email": None, "family_name": ""},
            "user name 'x' must match ^[a-z][a-z0-9._-]{1,31}$; family_name '' must be a non-empty string "
            "without surrounding blanks; email None is not an address like name@example.com",
            id="every-problem-at-once",
        ),
    ],
)
def test_bad_input_is_refused_before_any_aws_call(
    moto_url, groups, assume_calls, user_name, changes, problem
):
    request = {**ADA, "groups": ["all-staff"], **changes}
    before = admin("acme", moto_url).list_users(IdentityStoreId=STORE)["Users"]

    with pytest.raises(IdentityCenterValidationError) as raised:
        onboarding().ensure_user(user_name, **request)

    assert str(raised.value) == f"identitystore ensure_user: {problem}"
    assert assume_calls == []  # no credentials were even fetched: nothing reached AWS
    assert admin("acme", moto_url).list_users(IdentityStoreId=STORE)["Users"] == before


def test_a_missing_group_is_refused_before_the_user_is_created(moto_url, groups):
    with pytest.raises(IdentityCenterNotFound) as raised:
        onboarding().ensure_user(
            "nbohr", groups=["all-staff", "red-team", "blue-team"], **person("Niels", "Bohr", "E01239")
        )

    assert str(raised.value) == (
        "identitystore ensure_user: group(s) 'blue-team', 'red-team' not found in identity store "
        "d-1234567890; "
        "groups are provisioned with their permission sets, onboarding does not create them"
    )
    assert users_named(admin("acme", moto_url), "nbohr") == []


def test_a_user_name_or_email_of_someone_else_is_a_conflict(moto_url, groups):
    onboarding().ensure_user("rfranklin", groups=["all-staff"], **person("Rosalind", "Franklin", "E01240"))

    with pytest.raises(IdentityCenterConflict, match="exists with another email address"):
        onboarding().ensure_user("rfranklin", groups=["all-staff"], **person("Rita", "Franklin", "E01241"))
    with pytest.raises(IdentityCenterConflict, match="already belongs to another user"):
        onboarding().ensure_user("rosalind", groups=["all-staff"], **person("Rosalind", "Franklin", "E01240"))
    assert users_named(admin("acme", moto_url), "rosalind") == []


def test_an_operation_on_the_wrong_capability_is_refused(moto_url, seeded, assume_calls):
    with pytest.raises(
        IdentityCenterValidationError, match="needs a session of capability 'identity-disable'"
    ):
        onboarding().disable_user("alovelace")
    with pytest.raises(IdentityCenterValidationError, match="needs a session of capability 'identity-admin'"):
        offboarding().ensure_user("alovelace", groups=["all-staff"], **ADA)
    with pytest.raises(IdentityCenterValidationError, match="'ticket-create' is not an identity capability"):
        IdentityCenterHook(
            CONN_ID, capability="ticket-create", tenant="acme", run_context=run_context("acme", "x")
        )
    assert assume_calls == []


def test_the_store_id_comes_from_the_parameter_or_the_connection_extras(moto_url, groups, monkeypatch):
    connection = json.loads(os.environ[f"AIRFLOW_CONN_{CONN_ID.upper()}"])
    connection["extra"]["identity_store_id"] = {"acme": STORE}
    monkeypatch.setenv("AIRFLOW_CONN_AWS_IDENTITY_EXTRAS_ITEST", json.dumps(connection))

    def center(tenant: str) -> IdentityCenterHook:
        return IdentityCenterHook(
            "aws_identity_extras_itest",
            capability="identity-admin",
            tenant=tenant,
            run_context=run_context(tenant, "t"),
        )

    acme = center("acme")
    assert "connection" not in vars(acme)  # read on first use, not in __init__
    assert acme.identity_store_id == STORE
    assert acme.user_id("alovelace") is not None

    globex = center("globex")
    with pytest.raises(IdentityCenterValidationError, match="no identity store id for tenant 'globex'"):
        globex.user_id("alovelace")
    with pytest.raises(
        IdentityCenterValidationError, match="identity store id 'd-XYZ' is not like d-1234567890"
    ):
        IdentityCenterHook(
            capability="identity-admin",
            tenant="acme",
            run_context=run_context("acme", "t"),
            identity_store_id="d-XYZ",
        )


# --- tenants --------------------------------------------------------------------------------------


def test_another_tenants_session_cannot_see_the_user(moto_url, groups):
    acme_user = onboarding("acme").ensure_user(
        "efermi", groups=["all-staff"], **person("Enrico", "Fermi", "E01242")
    )
    globex = offboarding("globex")

    assert globex.user_id("efermi") is None
    with pytest.raises(
        IdentityCenterNotFound, match="user 'efermi' not found in identity store d-1234567890"
    ):
        globex.disable_user("efermi")
    with pytest.raises(IdentityCenterNotFound, match="group\\(s\\) 'all-staff' not found"):
        onboarding("globex").ensure_user(
            "efermi", groups=["all-staff"], **person("Enrico", "Fermi", "E01242")
        )
    assert users_named(admin("globex", moto_url), "efermi") == []
    assert offboarding("acme").user_id("efermi") == acme_user.user_id  # untouched in acme's store


# --- AWS errors, sorted by what to do about them (stubbed: moto neither denies nor throttles) -------


USER_ARN = "arn:aws:identitystore::111111111111:identitystore/d-1234567890/user/u-1"
FAILED_GET_USER_ID = (
    "identitystore disable_user: identitystore:GetUserId failed in identity store d-1234567890: "
    "not authorized"
)


@pytest.fixture
def stubbed(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[IdentityCenterHook, Stubber]]:
    """A hook whose identitystore client is stubbed, on a connection allowing 2 quick attempts."""
    extra = {"retry_max_attempts": 2, "retry_base_delay": 0.001, "retry_max_delay": 0.002}
    monkeypatch.setenv("AIRFLOW_CONN_AWS_IDENTITY_STUB", json.dumps({"conn_type": "aws", "extra": extra}))
    hook = IdentityCenterHook(
        "aws_identity_stub",
        capability="identity-disable",
        tenant="acme",
        identity_store_id=STORE,
        run_context=run_context("acme", "disable_identity"),
    )
    hook.client = boto3.client(
        "identitystore", region_name=REGION, aws_access_key_id="stub", aws_secret_access_key="stub"
    )
    with Stubber(hook.client) as stub:
        yield hook, stub
        stub.assert_no_pending_responses()


def _fail_get_user_id(stub: Stubber, code: str, status: int) -> None:
    stub.add_client_error(
        "get_user_id", service_error_code=code, service_message="not authorized", http_status_code=status
    )


def test_access_denied_is_permanent_and_names_the_action_and_role(stubbed):
    hook, stub = stubbed
    _fail_get_user_id(stub, "AccessDeniedException", 400)

    with pytest.raises(IdentityCenterAccessDenied) as raised:
        hook.disable_user("ada")

    assert str(raised.value) == (
        "identitystore disable_user: identitystore:GetUserId denied in identity store d-1234567890 "
        "(orchestrator-identity-disable must grant it): not authorized"
    )
    assert hook.retry_count == 0


@pytest.mark.parametrize(
    ("code", "status"),
    [
        pytest.param("ThrottlingException", 400, id="throttled"),
        pytest.param("InternalServerException", 500, id="server-error"),
    ],
)
def test_transient_errors_are_retried_then_give_up_naming_the_action(stubbed, code: str, status: int):
    hook, stub = stubbed
    _fail_get_user_id(stub, code, status)
    _fail_get_user_id(stub, code, status)

    with pytest.raises(RetryBudgetExhausted, match="gave up after 2 attempts") as raised:
        hook.disable_user("ada")

    assert isinstance(raised.value.__cause__, TransientError)
    assert str(raised.value.__cause__) == FAILED_GET_USER_ID
    assert hook.retry_count == 1


def test_a_throttled_call_succeeds_on_its_retry(stubbed):
    hook, stub = stubbed
    _fail_get_user_id(stub, "ThrottlingException", 400)
    stub.add_response(
        "get_user_id",
        {"IdentityStoreId": STORE, "UserId": "u-1", "UserArn": USER_ARN},
        {
            "IdentityStoreId": STORE,
            "AlternateIdentifier": {
                "UniqueAttribute": {"AttributePath": "userName", "AttributeValue": "ada"}
            },
        },
    )

    assert hook.user_id("ada") == "u-1"
    assert hook.retry_count == 1


# --- the capability policy (moto does not enforce IAM: checked statically) ------------------------


@pytest.mark.parametrize("capability", sorted(REQUIRED_ACTIONS))
def test_identity_capabilities_grant_the_identitystore_actions(capability: str):
    assert REQUIRED_ACTIONS[capability] <= get_capability(capability).actions
