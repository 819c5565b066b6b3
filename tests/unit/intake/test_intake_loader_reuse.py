"""The intake reads its policy and its event schemas through the policies' loader
(include/policies/loader.py): one YAML reader, one schema validator cache, one error format; and
``policy-check`` (intake-routes) still reports an invalid intake.yaml."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import pytest
import yaml

from include.intake import events, policy
from include.intake.policy import ENVELOPE_SCHEMA, INTAKE_FILE, load_intake_file
from include.policies import loader
from include.policies.checks import CheckContext, check_intake_routes


def test_the_intake_policy_is_a_policy_file_of_the_loader() -> None:
    assert isinstance(policy.INTAKE, loader.PolicyFile)
    assert policy.INTAKE.path == INTAKE_FILE
    assert policy.INTAKE.schema == loader.SCHEMA_DIR / "intake.schema.json"


def test_event_schemas_use_the_loaders_cached_validator_with_formats_checked() -> None:
    validator = events._validator(ENVELOPE_SCHEMA)
    assert validator is loader.schema_validator(ENVELOPE_SCHEMA, check_formats=True)
    assert validator is events._validator(ENVELOPE_SCHEMA)  # built once per process
    envelope = {
        "source": "siem-alerts",
        "id": "a-1",
        "kind": "siem.alert",
        "occurred_at": "yesterday",
        "data": {},
    }
    assert [e.validator for e in validator.iter_errors(envelope)] == ["format"]
    # A policy schema is validated without format checks (patterns say what a policy value may be).
    assert not list(loader.schema_validator(ENVELOPE_SCHEMA).iter_errors(envelope))


def test_an_unreadable_or_invalid_intake_file_is_a_policy_error_naming_file_and_place(tmp_path: Path) -> None:
    broken = tmp_path / "intake.yaml"
    broken.write_text("sources: [unclosed\n", encoding="utf-8")
    with pytest.raises(loader.PolicyError, match=rf"{broken}: line \d+ column \d+: not valid YAML"):
        load_intake_file(broken)
    with pytest.raises(loader.PolicyError, match=rf"{tmp_path / 'missing.yaml'}: cannot read policy file"):
        load_intake_file(tmp_path / "missing.yaml")


def test_policy_check_still_reports_an_invalid_intake_file(tmp_path: Path) -> None:
    document = copy.deepcopy(yaml.safe_load(INTAKE_FILE.read_text(encoding="utf-8")))
    document["polling"]["max_messages"] = "many"
    shutil.copy(loader.DOMAINS_FILE, tmp_path / "domains.yaml")
    (tmp_path / "intake.yaml").write_text(yaml.safe_dump(document), encoding="utf-8")
    context = CheckContext(dags_folder=tmp_path, policy_file=tmp_path / "domains.yaml")
    violations = check_intake_routes(context)
    assert [v.rule for v in violations] == ["intake-routes"]
    assert "polling.max_messages" in violations[0].message
