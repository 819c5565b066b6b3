"""PerimeterHook offline: the input checks, and the exact WAF and SSM calls against stateful fakes.

The fakes keep an IP set (with its lock token) and the SSM parameters, so the tests see what a
repeat, an extension, a lock conflict and a removal leave behind. Against moto (real LockToken, the
role in the tenant's account, a second tenant untouched): tests/integration/connectors/
test_perimeter_blocklist.py; the workflow: tests/e2e/test_soc_block_indicator.py.
"""

from __future__ import annotations

import ipaddress
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest import mock

import pytest
from botocore.exceptions import ClientError

from include.connectors.context import RunContext
from include.connectors.perimeter import (
    LOCK_ATTEMPTS,
    PerimeterError,
    PerimeterHook,
    blocklist_name,
    check_expiry,
    check_indicator,
    expiry_parameter,
    parse_expiry,
)

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
T1 = NOW + timedelta(minutes=30)
T2 = NOW + timedelta(hours=2)
IP = "45.155.205.7"
NET = "45.155.205.7/32"
NAME = "orchestrator-globex-blocklist-ipv4"
ARN = f"arn:aws:wafv2:eu-west-1:222222222222:regional/ipset/{NAME}/id-4"
PARAMETER = "/orchestrator/globex/perimeter-block/45.155.205.7_32"


def _error(code: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code}}, "Op")


class FakeWaf:
    """One REGIONAL IP set with a lock token that changes on every update."""

    def __init__(self, addresses: list[str] | None = None, conflicts: int = 0, name: str = NAME) -> None:
        self.name = name
        self.addresses = list(addresses or [])
        self.token = 0
        self.conflicts = conflicts  # updates that fail as if someone else wrote first

    def get_ip_set(self, *, Name: str, Id: str, **_: Any) -> dict[str, Any]:
        if (Name, Id) != (self.name, "id-4"):
            raise _error("WAFNonexistentItemException")
        ip_set = {"Name": self.name, "Id": "id-4", "ARN": ARN, "Addresses": list(self.addresses)}
        return {"IPSet": ip_set, "LockToken": f"tok-{self.token}"}

    def update_ip_set(self, *, Addresses: list[str], LockToken: str, **_: Any) -> dict[str, Any]:
        if self.conflicts:
            self.conflicts -= 1
            self.token += 1
            raise _error("WAFOptimisticLockException")
        if LockToken != f"tok-{self.token}":
            raise _error("WAFOptimisticLockException")
        self.addresses = list(Addresses)
        self.token += 1
        return {"NextLockToken": f"tok-{self.token}"}


class FakeSsm:
    """The parameters, with versions; the block lists' ids as the tenant's provisioning writes them."""

    def __init__(self) -> None:
        self.values: dict[str, tuple[str, int]] = {
            "/orchestrator/globex/perimeter/blocklist-ipv4": ("id-4", 1),
            "/orchestrator/globex/perimeter/blocklist-ipv6": ("id-4", 1),
        }

    def get_parameter(self, *, Name: str) -> dict[str, Any]:
        if Name not in self.values:
            raise _error("ParameterNotFound")
        value, version = self.values[Name]
        return {"Parameter": {"Name": Name, "Value": value, "Version": version}}

    def put_parameter(self, *, Name: str, Value: str, Overwrite: bool, **_: Any) -> dict[str, Any]:
        version = self.values.get(Name, ("", 0))[1] + 1
        self.values[Name] = (Value, version)
        return {"Version": version}

    def delete_parameter(self, *, Name: str) -> dict[str, Any]:
        if self.values.pop(Name, None) is None:
            raise _error("ParameterNotFound")
        return {}

    def record(self, expires_at: datetime, run_id: str = "manual__other") -> None:
        self.put_parameter(
            Name=PARAMETER,
            Value=json.dumps({"expires_at": expires_at.isoformat(), "run_id": run_id, "correlation_id": "c"}),
            Overwrite=True,
        )


def _hook(waf: FakeWaf, ssm: FakeSsm) -> PerimeterHook:
    run = RunContext("soc_block_indicator", "manual__1", "block_indicator", "globex", "ALERT-9")
    hook = PerimeterHook("aws_soc", capability="perimeter-block", tenant="globex", run_context=run)
    hook.__dict__["extras"] = {"retry_max_attempts": 1, "retry_base_delay": 0.001}
    hook.__dict__["client"] = mock.Mock(wraps=waf)
    hook.__dict__["ssm"] = mock.Mock(wraps=ssm)
    return hook


def _records(ssm: FakeSsm) -> dict[str, tuple[str, int]]:
    return {name: value for name, value in ssm.values.items() if "/perimeter-block/" in name}


def _recorded(ssm: FakeSsm) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(ssm.values[PARAMETER][0])
    return value


# --- the input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("indicator", "network"),
    [
        (IP, NET),
        (" 45.155.205.0/24 ", "45.155.205.0/24"),
        ("45.155.0.0/16", "45.155.0.0/16"),
        ("2a00:1450:4001::/48", "2a00:1450:4001::/48"),
        ("2A00:1450:4001:0:0:0:0:1", "2a00:1450:4001::1/128"),
    ],
)
def test_a_public_address_or_cidr_is_its_normalised_network(indicator: str, network: str) -> None:
    assert str(check_indicator(indicator)) == network


@pytest.mark.parametrize(
    ("indicator", "message"),
    [
        ("evil.example.com", "is a domain: a WAF IP set blocks client addresses only"),
        ("45.155.205.300", "is not an IPv4/IPv6 address or CIDR"),
        ("45.155.205.7/33", "is not an IPv4/IPv6 address or CIDR"),
        ("", "empty"),
        ("45.155.205.7/24", "has host bits set; did you mean 45.155.205.0/24?"),
        ("45.154.0.0/15", "too wide: /15 covers 131072 addresses; an IPv4 block may be at most /16"),
        ("0.0.0.0/0", "too wide"),
        ("2a00:1450::/47", "an IPv6 block may be at most /48"),
        ("10.1.2.3", "not a public"),
        ("192.168.0.0/16", "not a public"),
        ("127.0.0.1", "not a public"),
        ("169.254.169.254", "not a public"),
        ("198.51.100.7", "not a public"),  # documentation (TEST-NET-2)
        ("100.64.0.1", "not a public"),  # carrier-grade NAT
        ("224.0.0.1", "not a public"),
        ("fd00::/48", "not a public"),
        ("2001:db8::/48", "not a public"),
    ],
)
def test_bad_indicators_are_refused_naming_the_value(indicator: str, message: str) -> None:
    with pytest.raises(PerimeterError, match=r"^indicator ") as refused:
        check_indicator(indicator)
    assert message in str(refused.value)
    assert repr(indicator.strip()) in str(refused.value) or indicator == ""


def test_the_expiry_must_be_future_and_within_the_maximum() -> None:
    maximum = timedelta(hours=3)
    assert check_expiry("2026-12-06T12:30:00Z", now=NOW, maximum=maximum) == T1
    assert check_expiry("2026-12-06T14:00:00+01:00", now=NOW, maximum=maximum) == NOW + timedelta(hours=1)
    with pytest.raises(PerimeterError, match=r"^expires_at 2026-12-06T11:59:00\+00:00 is in the past"):
        check_expiry("2026-12-06T11:59:00Z", now=NOW, maximum=maximum)
    with pytest.raises(PerimeterError, match=r"^expires_at .* is in the past"):
        check_expiry(NOW, now=NOW, maximum=maximum)
    with pytest.raises(PerimeterError, match=r"beyond the policy maximum of 3:00:00 from now"):
        check_expiry(NOW + maximum + timedelta(seconds=1), now=NOW, maximum=maximum)
    with pytest.raises(PerimeterError, match="has no time zone"):
        parse_expiry("2026-12-06T12:30:00")
    with pytest.raises(PerimeterError, match="is not an ISO 8601 date-time"):
        parse_expiry("tomorrow")


def test_names_per_tenant_and_family() -> None:
    assert blocklist_name("globex", check_indicator(IP)) == NAME
    assert (
        blocklist_name("acme", check_indicator("2a00:1450:4001::/48")) == "orchestrator-acme-blocklist-ipv6"
    )
    assert expiry_parameter("globex", check_indicator(IP)) == PARAMETER
    assert (
        expiry_parameter("acme", check_indicator("2a00:1450:4001::/48"))
        == "/orchestrator/acme/perimeter-block/2a00-1450-4001--_48"
    )


# --- the calls ---------------------------------------------------------------------------------


def test_plan_is_read_only() -> None:
    waf, ssm = FakeWaf(["1.1.1.1/32"]), FakeSsm()
    hook = _hook(waf, ssm)

    plan = hook.plan_block(IP)

    assert (plan.indicator, plan.ip_set, plan.ip_set_arn, plan.entries, plan.blocked, plan.expiry) == (
        NET,
        NAME,
        ARN,
        1,
        False,
        None,
    )
    hook.client.update_ip_set.assert_not_called()
    hook.ssm.put_parameter.assert_not_called()
    assert "Block **45.155.205.7/32**" in plan.markdown(T1)


def test_block_records_the_expiry_then_adds_one_entry_with_the_lock_token() -> None:
    waf, ssm = FakeWaf(["1.1.1.1/32"]), FakeSsm()
    hook = _hook(waf, ssm)
    order = mock.Mock()
    order.attach_mock(hook.ssm.put_parameter, "put_parameter")
    order.attach_mock(hook.client.update_ip_set, "update_ip_set")

    result = hook.block(IP, T1)

    assert [c[0] for c in order.mock_calls] == ["put_parameter", "update_ip_set"]
    hook.client.get_ip_set.assert_called_with(Name=NAME, Scope="REGIONAL", Id="id-4")
    hook.client.update_ip_set.assert_called_once_with(
        Name=NAME,
        Scope="REGIONAL",
        Id="id-4",
        Addresses=["1.1.1.1/32", NET],
        Description="Blocked by the orchestrator",
        LockToken="tok-0",
    )
    assert _recorded(ssm) == {
        "indicator": NET,
        "expires_at": T1.isoformat(),
        "run_id": "manual__1",
        "correlation_id": "ALERT-9",
    }
    assert result == {
        "indicator": NET,
        "ip_set": NAME,
        "ip_set_arn": ARN,
        "added": True,
        "expires_at": T1.isoformat(),
        "requested_expires_at": T1.isoformat(),
        "previous_expires_at": None,
        "extended": False,
        "correlation_id": "ALERT-9",
    }


def test_a_repeat_adds_nothing_and_rewrites_nothing() -> None:
    waf, ssm = FakeWaf(), FakeSsm()
    _hook(waf, ssm).block(IP, T1)
    hook = _hook(waf, ssm)

    result = hook.block(IP, T1)

    assert waf.addresses == [NET]
    assert (result["added"], result["extended"], result["expires_at"]) == (False, False, T1.isoformat())
    hook.client.update_ip_set.assert_not_called()
    hook.ssm.put_parameter.assert_not_called()
    assert ssm.values[PARAMETER][1] == 1


def test_a_later_expiry_extends_and_an_earlier_one_never_shortens() -> None:
    waf, ssm = FakeWaf(), FakeSsm()
    _hook(waf, ssm).block(IP, T1)

    extended = _hook(waf, ssm).block(IP, T2)
    shorter = _hook(waf, ssm).block(IP, T1)

    assert (extended["added"], extended["extended"], extended["expires_at"]) == (False, True, T2.isoformat())
    assert extended["previous_expires_at"] == T1.isoformat()
    assert (shorter["extended"], shorter["expires_at"], shorter["requested_expires_at"]) == (
        False,
        T2.isoformat(),
        T1.isoformat(),
    )
    assert waf.addresses == [NET]
    assert _recorded(ssm)["expires_at"] == T2.isoformat()


def test_an_entry_written_in_another_form_is_the_same_network() -> None:
    waf = FakeWaf(["2a00:1450:4001:0000:0000:0000:0000:0000/48"], name="orchestrator-globex-blocklist-ipv6")
    ssm = FakeSsm()
    hook = _hook(waf, ssm)

    assert hook.block("2a00:1450:4001::/48", T1)["added"] is False
    assert hook.unblock("2a00:1450:4001::/48", now=T1)["removed"] is True
    assert waf.addresses == []


def test_a_lock_conflict_is_re_read_and_retried_then_given_up() -> None:
    waf, ssm = FakeWaf(conflicts=2), FakeSsm()
    hook = _hook(waf, ssm)

    assert hook.block(IP, T1)["added"] is True
    assert [c.kwargs["LockToken"] for c in hook.client.update_ip_set.call_args_list] == [
        "tok-0",
        "tok-1",
        "tok-2",
    ]
    assert waf.addresses == [NET]

    stuck = _hook(FakeWaf(conflicts=LOCK_ATTEMPTS), FakeSsm())
    with pytest.raises(PerimeterError, match=f"changed by someone else {LOCK_ATTEMPTS} times in a row"):
        stuck.block(IP, T1)


def test_other_waf_errors_are_not_swallowed() -> None:
    waf, ssm = FakeWaf(), FakeSsm()
    hook = _hook(waf, ssm)
    hook.client.update_ip_set.side_effect = _error("WAFLimitsExceededException")

    with pytest.raises(ClientError, match="WAFLimitsExceededException"):
        hook.block(IP, T1)


def test_the_block_list_is_found_by_the_id_its_provisioning_recorded() -> None:
    waf, ssm = FakeWaf(), FakeSsm()
    hook = _hook(waf, ssm)

    hook.plan_block(IP)

    hook.ssm.get_parameter.assert_any_call(Name="/orchestrator/globex/perimeter/blocklist-ipv4")
    hook.client.get_ip_set.assert_called_once_with(Name=NAME, Scope="REGIONAL", Id="id-4")


@pytest.mark.parametrize("lost", ["id-parameter", "ip-set"])
def test_a_tenant_without_its_block_list_is_a_clear_error(lost: str) -> None:
    waf, ssm = FakeWaf(), FakeSsm()
    if lost == "id-parameter":
        del ssm.values["/orchestrator/globex/perimeter/blocklist-ipv4"]
    else:
        waf.name = "deleted"
    hook = _hook(waf, ssm)

    expected = (
        f"tenant globex has no WAF IP set {NAME} (REGIONAL) recorded in its account "
        "(SSM parameter /orchestrator/globex/perimeter/blocklist-ipv4)"
    )
    with pytest.raises(PerimeterError, match=f"^{re.escape(expected)}"):
        hook.block(IP, T1)
    assert _records(ssm) == {}  # refused before the expiry record


def test_unblock_before_the_recorded_expiry_changes_nothing() -> None:
    waf, ssm = FakeWaf(), FakeSsm()
    _hook(waf, ssm).block(IP, T2)
    hook = _hook(waf, ssm)

    result = hook.unblock(IP, now=T1)

    assert (result["removed"], result["outcome"], result["expires_at"]) == (False, "extended", T2.isoformat())
    hook.client.update_ip_set.assert_not_called()
    assert waf.addresses == [NET]
    assert PARAMETER in ssm.values


def test_unblock_after_the_expiry_removes_the_entry_and_its_record_once() -> None:
    waf, ssm = FakeWaf(["1.1.1.1/32"]), FakeSsm()
    _hook(waf, ssm).block(IP, T1)
    first, second = _hook(waf, ssm), _hook(waf, ssm)

    removed = first.unblock(IP, now=T1)
    again = second.unblock(IP, now=T1)

    assert (removed["removed"], removed["outcome"], removed["expires_at"]) == (
        True,
        "removed",
        T1.isoformat(),
    )
    first.client.update_ip_set.assert_called_once_with(
        Name=NAME,
        Scope="REGIONAL",
        Id="id-4",
        Addresses=["1.1.1.1/32"],
        Description="Blocked by the orchestrator",
        LockToken="tok-1",
    )
    first.ssm.delete_parameter.assert_called_once_with(Name=PARAMETER)
    assert (again["removed"], again["outcome"]) == (False, "already-removed")
    second.client.update_ip_set.assert_not_called()
    assert waf.addresses == ["1.1.1.1/32"]
    assert _records(ssm) == {}


def test_an_extension_recorded_during_the_removal_puts_the_entry_back() -> None:
    waf, ssm = FakeWaf(), FakeSsm()
    _hook(waf, ssm).block(IP, T1)
    hook = _hook(waf, ssm)
    real_update = waf.update_ip_set

    def update_while_extended(**kwargs: Any) -> dict[str, Any]:
        answer = real_update(**kwargs)
        if NET not in kwargs["Addresses"]:
            ssm.record(T2, run_id="manual__2")  # a re-run extends between our read and our update
        return answer

    hook.client.update_ip_set.side_effect = update_while_extended

    result = hook.unblock(IP, now=T1)

    assert (result["removed"], result["outcome"], result["expires_at"]) == (False, "extended", T2.isoformat())
    assert waf.addresses == [NET]
    assert _recorded(ssm)["run_id"] == "manual__2"
    hook.ssm.delete_parameter.assert_not_called()


def test_a_corrupt_expiry_record_is_a_clear_error() -> None:
    waf, ssm = FakeWaf(), FakeSsm()
    ssm.put_parameter(Name=PARAMETER, Value="not json", Overwrite=True)

    with pytest.raises(PerimeterError, match=f"the expiry record {PARAMETER} of tenant globex"):
        _hook(waf, ssm).expiry(IP)


def test_the_ssm_client_is_the_same_capability_in_the_same_tenant() -> None:
    run = RunContext("soc_block_indicator", "manual__1", "wait_for_expiry", "globex", "ALERT-9")
    hook = PerimeterHook("aws_soc", capability="perimeter-inspect", tenant="globex", run_context=run)
    with mock.patch("include.connectors.perimeter.capability_client") as capability_client:
        assert hook.ssm is capability_client.return_value
    capability_client.assert_called_once_with(
        "perimeter-inspect", "globex", "ssm", run_context=run, aws_conn_id="aws_soc", config=mock.ANY
    )
    assert isinstance(check_indicator(IP), ipaddress.IPv4Network)
