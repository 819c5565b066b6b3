"""The domain policy loader: the real file loads; every broken copy names file, key path and problem."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from include.policies.loader import DOMAINS_FILE, PolicyError, load_policy_file, parse_duration


def exactly(message: str) -> str:
    return f"^{re.escape(message)}$"


def test_real_policy_loads():
    policy = load_policy_file(DOMAINS_FILE)

    assert sorted(policy.domains) == ["hr", "implementation", "invoicing", "platform", "soc", "support"]
    soc = policy.domain("soc")
    assert soc.pool == "soc"
    assert soc.tag == "domain:soc"
    assert soc.approval.timeout == timedelta(minutes=15)
    assert soc.approval.remind_after < soc.approval.escalate_after < soc.approval.timeout
    assert soc.approval.approvers_role == soc.approver_role
    assert policy.defaults.retries >= 1
    assert policy.domain_for_pool("hr") is policy.domain("hr")
    assert policy.domain_for_pool("default_pool") is None


def test_unknown_domain_lists_declared_domains():
    policy = load_policy_file(DOMAINS_FILE)

    with pytest.raises(
        PolicyError,
        match=exactly(
            f"unknown domain 'marketing': declared domains in {DOMAINS_FILE} are "
            "hr, implementation, invoicing, platform, soc, support"
        ),
    ):
        policy.domain("marketing")


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    *parents, key = path.split(".")

    def edit(document: dict[str, Any]) -> None:
        node = document
        for part in parents:
            node = node[part]
        node[key] = value

    return edit


def _delete(path: str) -> Callable[[dict[str, Any]], None]:
    *parents, key = path.split(".")

    def edit(document: dict[str, Any]) -> None:
        node = document
        for part in parents:
            node = node[part]
        del node[key]

    return edit


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        pytest.param(
            _set("domains.support.pool_slots", -1),
            "domains.support.pool_slots: -1 is less than the minimum of 1",
            id="negative-pool-slots",
        ),
        pytest.param(
            _set("domains.hr.colour", "blue"),
            "domains.hr: Additional properties are not allowed ('colour' was unexpected)",
            id="unknown-key",
        ),
        pytest.param(
            _set("domains.soc.approval.timeout", "15 minutes"),
            "domains.soc.approval.timeout: '15 minutes' does not match '^[1-9][0-9]*[smhd]$'",
            id="bad-duration",
        ),
        pytest.param(
            _delete("domains.invoicing.alerts"),
            "domains.invoicing: 'alerts' is a required property",
            id="missing-alerts",
        ),
        pytest.param(
            _set("domains.soc.approval.remind_after", "10m"),
            "domains.soc.approval: escalation ladder out of order: remind_after (10m) < "
            "escalate_after (10m) < timeout (15m) must hold",
            id="ladder-out-of-order",
        ),
        pytest.param(
            _set("domains.hr.approval.approvers_role", "soc_approver"),
            "domains.hr.approval.approvers_role: 'soc_approver' is not the domain's approver role "
            "'hr_approver'",
            id="approvers-role-not-domain-approver",
        ),
        pytest.param(
            _set("defaults.retry_delay", "1h"),
            "defaults.retry_delay: longer than defaults.max_retry_delay",
            id="retry-delay-over-max",
        ),
    ],
)
def test_invalid_policy_names_file_key_and_problem(policy_document, write_policy, edit, problem):
    edit(policy_document)
    path = write_policy(policy_document)

    with pytest.raises(PolicyError, match=exactly(f"invalid domain policy:\n  {path}: {problem}")):
        load_policy_file(path)


def test_every_problem_is_reported(policy_document, write_policy):
    policy_document["domains"]["support"]["pool_slots"] = 0
    del policy_document["domains"]["hr"]["owner"]
    path = write_policy(policy_document)

    with pytest.raises(
        PolicyError,
        match=exactly(
            "invalid domain policy:\n"
            f"  {path}: domains.hr: 'owner' is a required property\n"
            f"  {path}: domains.support.pool_slots: 0 is less than the minimum of 1"
        ),
    ):
        load_policy_file(path)


def test_invalid_yaml_names_line_and_column(write_policy):
    path = write_policy("version: 1\ndefaults:\n  retries: 3\n   retry_delay: 30s\n")

    with pytest.raises(
        PolicyError,
        match=exactly(
            f"{path}: line 4 column 15: not valid YAML: mapping values are not allowed in this context"
        ),
    ):
        load_policy_file(path)


def test_missing_file(tmp_path: Path):
    path = tmp_path / "absent.yaml"

    with pytest.raises(
        PolicyError, match=exactly(f"{path}: cannot read policy file: No such file or directory")
    ):
        load_policy_file(path)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("90s", timedelta(seconds=90), id="seconds"),
        pytest.param("15m", timedelta(minutes=15), id="minutes"),
        pytest.param("4h", timedelta(hours=4), id="hours"),
        pytest.param("2d", timedelta(days=2), id="days"),
    ],
)
def test_parse_duration(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["15 minutes", "0m", "1.5h", "10", "m", "", "-5m", "5M"])
def test_parse_duration_rejects(text):
    with pytest.raises(ValueError, match=exactly(f"{text!r} is not a duration like 90s, 15m, 4h or 2d")):
        parse_duration(text)
