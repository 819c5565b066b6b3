"""The policy loader: every policy file has a strict schema and loads through one PolicyFile; the domain
policy loads; every broken copy names file, key path and problem."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import yaml
from jsonschema import Draft202012Validator

from include.policies.approvals import APPROVALS, load_approvals
from include.policies.capabilities import CAPABILITIES, load_capabilities
from include.policies.hr_roles import HR_ROLES, load_hr_roles
from include.policies.invoicing import INVOICING, load_invoicing
from include.policies.loader import (
    DOMAINS,
    DOMAINS_FILE,
    POLICY_DIR,
    SCHEMA_DIR,
    PolicyError,
    PolicyFile,
    RunLimits,
    format_duration,
    load_domain_policy,
    load_policy_file,
    load_yaml,
    parse_duration,
    schema_problems,
    workflow_kind,
)
from include.policies.tenants import TENANTS, load_tenants
from include.triage.rules import TRIAGE_RULES, load_rules, load_rules_file
from tests.support.documents import delete_at as _delete
from tests.support.documents import set_at as _set


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
    assert soc.timeouts == {
        "fast_path": RunLimits(execution_timeout=timedelta(minutes=10), dagrun_timeout=timedelta(hours=2)),
        "infrastructure_change": RunLimits(
            execution_timeout=timedelta(minutes=30), dagrun_timeout=timedelta(hours=4)
        ),
    }
    for domain in policy.domains.values():  # a run outlasts the domain's approval wait and one task
        for limits in domain.timeouts.values():
            assert limits.dagrun_timeout >= domain.approval.timeout + limits.execution_timeout


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


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        pytest.param(
            _set("domains/support/pool_slots", -1),
            "domains.support.pool_slots: -1 is less than the minimum of 1",
            id="negative-pool-slots",
        ),
        pytest.param(
            _set("domains/hr/colour", "blue"),
            "domains.hr: Additional properties are not allowed ('colour' was unexpected)",
            id="unknown-key",
        ),
        pytest.param(
            _set("domains/soc/approval/timeout", "15 minutes"),
            "domains.soc.approval.timeout: '15 minutes' does not match '^[1-9][0-9]*[smhd]$'",
            id="bad-duration",
        ),
        pytest.param(
            _delete("domains/invoicing/alerts"),
            "domains.invoicing: 'alerts' is a required property",
            id="missing-alerts",
        ),
        pytest.param(
            _set("domains/soc/approval/remind_after", "10m"),
            "domains.soc.approval: escalation ladder out of order: remind_after (10m) < "
            "escalate_after (10m) < timeout (15m) must hold",
            id="ladder-out-of-order",
        ),
        pytest.param(
            _set("domains/hr/approval/approvers_role", "soc_approver"),
            "domains.hr.approval.approvers_role: 'soc_approver' is not the domain's approver role "
            "'hr_approver'",
            id="approvers-role-not-domain-approver",
        ),
        pytest.param(
            _set("defaults/retry_delay", "1h"),
            "defaults.retry_delay: longer than defaults.max_retry_delay",
            id="retry-delay-over-max",
        ),
        pytest.param(
            _delete("domains/soc/timeouts"),
            "domains.soc: 'timeouts' is a required property",
            id="missing-timeouts",
        ),
        pytest.param(
            _delete("domains/hr/timeouts/infrastructure_change"),
            "domains.hr.timeouts: 'infrastructure_change' is a required property",
            id="missing-kind-timeouts",
        ),
        pytest.param(
            _delete("domains/hr/timeouts/fast_path/execution_timeout"),
            "domains.hr.timeouts.fast_path: 'execution_timeout' is a required property",
            id="missing-execution-timeout",
        ),
        pytest.param(
            _set("domains/soc/timeouts/fast_path/dagrun_timeout", "forever"),
            "domains.soc.timeouts.fast_path.dagrun_timeout: 'forever' does not match '^[1-9][0-9]*[smhd]$'",
            id="unbounded-run",
        ),
        pytest.param(
            _set("domains/support/timeouts/batch", {"execution_timeout": "1m", "dagrun_timeout": "1h"}),
            "domains.support.timeouts: Additional properties are not allowed ('batch' was unexpected)",
            id="unknown-kind",
        ),
        pytest.param(
            _set("domains/soc/timeouts/fast_path/dagrun_timeout", "20m"),
            "domains.soc.timeouts.fast_path.dagrun_timeout: 20m is shorter than the domain's approval "
            "timeout (15m) plus one task's execution_timeout (10m): a run would be killed while an "
            "approver may still answer",
            id="run-shorter-than-approval",
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


# --- the one loader of every policy file ------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [
        pytest.param(timedelta(seconds=90), "1m30s", id="minutes-seconds"),
        pytest.param(timedelta(days=2, minutes=30), "2d30m", id="days-minutes"),
        pytest.param(timedelta(hours=4), "4h", id="hours"),
        pytest.param(timedelta(0), "0s", id="zero"),
    ],
)
def test_format_duration_is_the_policy_notation(value, text):
    assert format_duration(value) == text
    if value:
        assert sum(map(parse_duration, re.findall(r"\d+[smhd]", text)), timedelta()) == value


@pytest.mark.parametrize(
    ("tags", "kind"),
    [
        pytest.param({"domain:soc"}, "fast_path", id="untagged-is-fast-path"),
        pytest.param({"domain:soc", "kind:fast_path"}, "fast_path", id="fast-path"),
        pytest.param({"kind:infrastructure_change"}, "infrastructure_change", id="infrastructure-change"),
    ],
)
def test_workflow_kind_is_the_kind_tag(tags, kind):
    assert workflow_kind(mock.Mock(dag_id="soc_x", tags=tags)) == kind


@pytest.mark.parametrize(
    ("tags", "named"),
    [
        pytest.param({"kind:batch"}, "kind:batch", id="unknown"),
        pytest.param(
            {"kind:fast_path", "kind:infrastructure_change"},
            "kind:fast_path, kind:infrastructure_change",
            id="two",
        ),
    ],
)
def test_workflow_kind_refuses_unknown_or_several(tags, named):
    with pytest.raises(
        PolicyError,
        match=exactly(
            f"DAG soc_x is tagged {named}: it needs at most one kind tag, one of fast_path, "
            "infrastructure_change"
        ),
    ):
        workflow_kind(mock.Mock(dag_id="soc_x", tags=tags))


POLICY_FILES = sorted(path.stem for path in POLICY_DIR.glob("*.yaml"))


def test_every_policy_file_is_known():
    assert POLICY_FILES == [
        "access",
        "approvals",
        "capabilities",
        "domains",
        "hr_roles",
        "intake",
        "invoicing",
        "retention",
        "support_triage",
        "tenants",
    ]


@pytest.mark.parametrize("name", POLICY_FILES)
def test_every_policy_file_has_a_strict_schema_it_satisfies(name: str):
    schema_path = SCHEMA_DIR / f"{name}.schema.json"
    schema = json.loads(schema_path.read_text(encoding="utf-8"))

    Draft202012Validator.check_schema(schema)
    assert schema["$id"] == f"include/policies/schema/{name}.schema.json"
    assert schema_problems(load_yaml((POLICY_DIR / f"{name}.yaml").read_text()), Path("x"), schema_path) == []
    loose = [where for where, node in _subschemas(schema, "") if _is_loose_object(node)]
    assert loose == [], f"object schemas without additionalProperties: {loose}"


def _subschemas(node: Any, where: str) -> list[tuple[str, dict[str, Any]]]:
    if isinstance(node, list):
        return [found for index, item in enumerate(node) for found in _subschemas(item, f"{where}/{index}")]
    if not isinstance(node, dict):
        return []
    found = [(where or "/", node)]
    for key, value in node.items():
        found += _subschemas(value, f"{where}/{key}")
    return found


def _is_loose_object(node: dict[str, Any]) -> bool:
    # An object schema listing its properties must say what else may appear (false, or a schema).
    return "properties" in node and "additionalProperties" not in node


@pytest.mark.parametrize(
    ("load", "policy_file"),
    [
        pytest.param(load_domain_policy, DOMAINS, id="domains"),
        pytest.param(load_capabilities, CAPABILITIES, id="capabilities"),
        pytest.param(load_approvals, APPROVALS, id="approvals"),
        pytest.param(load_hr_roles, HR_ROLES, id="hr_roles"),
        pytest.param(load_invoicing, INVOICING, id="invoicing"),
        pytest.param(load_tenants, TENANTS, id="tenants"),
        pytest.param(load_rules, TRIAGE_RULES, id="support_triage"),
    ],
)
def test_each_deployed_policy_is_loaded_once_through_its_policy_file(load, policy_file):
    assert load() is load()
    assert policy_file.path == POLICY_DIR / f"{policy_file.name}.yaml"
    assert policy_file.schema == SCHEMA_DIR / f"{policy_file.name}.schema.json"
    assert policy_file.path.exists()
    assert policy_file.schema.exists()


def _tenants_document() -> dict[str, Any]:
    return yaml.safe_load((POLICY_DIR / "tenants.yaml").read_text(encoding="utf-8"))


def test_policy_file_checks_rules_with_the_context_then_builds(write_policy):
    rules = mock.Mock(return_value=[])
    build = mock.Mock(return_value="built")
    policy_file = PolicyFile("tenants", "tenant test policy", build=build, rules=rules)
    path = write_policy(_tenants_document(), "tenants.yaml")

    assert policy_file.load(path, known=["acme"]) == "built"

    rules.assert_called_once_with(_tenants_document(), known=["acme"])
    build.assert_called_once_with(_tenants_document(), path, known=["acme"])


def test_policy_file_prefixes_rule_problems_with_the_file(write_policy):
    build = mock.Mock()
    rules = mock.Mock(return_value=["tenants.acme: first", "platform: second"])
    policy_file = PolicyFile("tenants", "tenant test policy", build=build, rules=rules)
    path = write_policy(_tenants_document(), "tenants.yaml")

    with pytest.raises(
        PolicyError,
        match=exactly(
            f"invalid tenant test policy:\n  {path}: tenants.acme: first\n  {path}: platform: second"
        ),
    ):
        policy_file.load(path)
    build.assert_not_called()


def test_policy_file_runs_no_rule_on_a_document_the_schema_rejects(write_policy):
    rules, build = mock.Mock(return_value=["never shown"]), mock.Mock()
    policy_file = PolicyFile("tenants", "tenant test policy", build=build, rules=rules)
    document = _tenants_document()
    document["tenants"]["acme"]["aws_account_id"] = 111
    document["tenants"]["globex"]["aws_account_id"] = 12.5
    path = write_policy(document, "tenants.yaml")

    with pytest.raises(PolicyError) as raised:
        policy_file.load(path)

    # The schema's errorMessage, once per value even where two keywords fail (type and pattern).
    assert str(raised.value).splitlines() == [
        "invalid tenant test policy:",
        f"  {path}: tenants.acme.aws_account_id: 111 is not a quoted 12-digit AWS account id",
        f"  {path}: tenants.globex.aws_account_id: 12.5 is not a quoted 12-digit AWS account id",
    ]
    rules.assert_not_called()
    build.assert_not_called()


def test_policy_file_loads_the_deployed_file_by_default():
    build = mock.Mock(return_value="built")
    policy_file = PolicyFile("tenants", "tenant test policy", build=build)

    assert policy_file.load() == "built"
    build.assert_called_once_with(_tenants_document(), POLICY_DIR / "tenants.yaml")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        pytest.param("", "<root>: None is not of type 'object'", id="empty-file"),
        pytest.param("- acme\n", "<root>: ['acme'] is not of type 'object'", id="a-list"),
    ],
)
def test_a_document_of_the_wrong_shape_is_a_policy_error(write_policy, text: str, problem: str):
    path = write_policy(text, "support_triage.yaml")

    with pytest.raises(PolicyError, match=exactly(f"invalid triage rules:\n  {path}: {problem}")):
        load_rules_file(path, known_tenants=["acme"])
