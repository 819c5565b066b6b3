"""Retention policy (include/policies/retention.yaml): loading, the minimums policy-check enforces,
the cross-file checks, and the task-log pruning that applies it to the local log folder."""

from __future__ import annotations

import os
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from include.policies.checks import CheckContext, check_retention_policy, run_checks
from include.policies.loader import POLICY_DIR, PolicyError
from include.policies.retention import (
    KINDS,
    LEGAL_MINIMUMS,
    Retention,
    load_retention,
    load_retention_file,
    period_days,
    prune_task_logs,
    retain_until,
    retention_for,
)

NOW = datetime(2026, 12, 7, 2, 0, tzinfo=UTC)


@pytest.fixture
def policy_dir(tmp_path: Path) -> Path:
    """A copy of the deployed policy files, to break one at a time."""
    folder = tmp_path / "policies"
    shutil.copytree(POLICY_DIR, folder, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    return folder


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert text.count(old) == 1, f"{old!r} not once in {path}"
    path.write_text(text.replace(old, new), encoding="utf-8")


def violations(policy_dir: Path) -> list[str]:
    ctx = CheckContext(dags_folder=policy_dir, policy_file=policy_dir / "domains.yaml")
    return [str(v) for v in run_checks(ctx, [check_retention_policy])]


@pytest.mark.parametrize(("text", "days"), [("30d", 30), ("6y", 2192), ("7y", 2557), ("10y", 3653)])
def test_years_are_365_25_days_rounded_up(text: str, days: int) -> None:
    assert period_days(text) == days


def test_the_deployed_policy_by_tenant_class() -> None:
    assert retention_for("audit", "acme") == Retention("audit", "standard", 2557, "7y")
    assert retention_for("invoice", "acme").days == 3653
    assert retention_for("task_log", "acme").days == 30
    # globex is regulated: longer letters and logs, the same audit log.
    assert retention_for("business_letter", "globex") == Retention(
        "business_letter", "regulated", 3653, "10y"
    )
    assert retention_for("task_log", "globex").days == 90
    assert retention_for("audit", "globex").days == 2557
    # The platform's own records and tenants not named: the default class.
    assert retention_for("task_log", None).tenant_class == "standard"
    assert load_retention().longest("task_log").days == 90
    with pytest.raises(PolicyError, match="unknown record kind 'tickets'"):
        retention_for("tickets", "acme")  # type: ignore[arg-type]


def test_every_kind_has_a_documented_minimum_and_the_policy_meets_it() -> None:
    policy = load_retention()
    for kind in KINDS:
        for name in policy.classes:
            assert period_days(policy.classes[name][kind]) >= LEGAL_MINIMUMS[kind].days, (name, kind)
    docs = (POLICY_DIR.parents[1] / "docs" / "policies.md").read_text(encoding="utf-8")
    for kind in KINDS:
        assert f"`{kind}`" in docs, f"docs/policies.md does not document retention kind {kind}"


def test_retain_until_is_the_write_time_plus_the_tenants_retention() -> None:
    assert retain_until("evidence_pack", "globex", NOW) == NOW + timedelta(days=3653)
    assert retain_until("evidence_pack", "acme", NOW) == NOW + timedelta(days=2557)


def test_policy_check_is_green_on_the_deployed_files(policy_dir: Path) -> None:
    assert violations(policy_dir) == []


def test_a_retention_below_the_legal_minimum_is_refused_naming_file_key_and_value(policy_dir: Path) -> None:
    edit(
        policy_dir / "retention.yaml",
        "    invoice: 10y\n    business_letter: 6y",
        "    invoice: 8y\n    business_letter: 6y",
    )
    [message] = violations(policy_dir)
    assert message.startswith("retention-minimum: ")
    assert (
        "retention.yaml: classes.standard.invoice: 8y (2922 days) is shorter than the minimum 10y (3653 days)"
        in (message)
    )
    assert "AO section 147" in message


def test_the_loader_refuses_it_too(policy_dir: Path) -> None:
    edit(policy_dir / "retention.yaml", "    task_log: 30d", "    task_log: 2d")
    with pytest.raises(
        PolicyError, match=r"classes\.standard\.task_log: 2d \(2 days\) is shorter than the minimum 7d"
    ):
        load_retention_file(policy_dir / "retention.yaml")


def test_task_logs_kept_forever_are_refused(policy_dir: Path) -> None:
    edit(policy_dir / "retention.yaml", "    task_log: 90d", "    task_log: 5y")
    [message] = violations(policy_dir)
    assert "classes.regulated.task_log: 5y (1827 days) is longer than the maximum 365d" in message


def test_one_audit_retention_for_every_class(policy_dir: Path) -> None:
    edit(policy_dir / "retention.yaml", "    audit: 7y              #", "    audit: 10y             #")
    [message] = violations(policy_dir)
    assert "classes: audit differs between classes (10y, 7y)" in message


def test_an_unknown_tenant_or_class_is_refused(policy_dir: Path) -> None:
    edit(
        policy_dir / "retention.yaml",
        "  globex: regulated",
        "  globex: regulated\n  initech: standard\n  acme: gold",
    )
    found = violations(policy_dir)
    assert any("tenants.initech: unknown tenant" in v for v in found)
    assert any("tenants.acme: 'gold' is not a class" in v for v in found)


def test_the_invoice_archive_must_cover_the_invoice_retention(policy_dir: Path) -> None:
    edit(policy_dir / "invoicing.yaml", "  retention_days: 3653", "  retention_days: 2557")
    [message] = violations(policy_dir)
    assert "invoicing.yaml: archive.retention_days: 2557 is shorter than the invoice retention 10y" in message


# --- pruning the task logs --------------------------------------------------------------------
def write(path: Path, age: timedelta) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("log line\n", encoding="utf-8")
    stamp = (NOW - age).timestamp()
    os.utime(path, (stamp, stamp))
    return path


def test_prune_deletes_only_task_logs_older_than_the_retention(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    old = write(logs / "dag_id=a/run_id=r1/task_id=t/attempt=1.log", timedelta(days=31))
    fresh = write(logs / "dag_id=a/run_id=r2/task_id=t/attempt=1.log", timedelta(days=29))
    processor = write(logs / "dag_processor/2026-01-01/x.py.log", timedelta(days=400))
    outside = write(tmp_path / "elsewhere/dag_id=b/run_id=r/task_id=t/attempt=1.log", timedelta(days=400))
    (logs / "dag_id=linked").symlink_to(outside.parents[2].parent / "dag_id=b")
    keep = Retention("task_log", "standard", 30, "30d")

    dry = prune_task_logs(logs, keep, NOW, dry_run=True)
    assert (dry.files, dry.directories) == (1, 0)
    assert old.exists()

    report = prune_task_logs(logs, keep, NOW)
    assert (report.files, report.keep_days) == (1, 30)
    assert not old.exists()
    assert not (logs / "dag_id=a/run_id=r1").exists()
    assert report.directories == 2  # run_id=r1/task_id=t and run_id=r1
    assert fresh.exists()
    assert processor.exists()
    assert outside.exists()


def test_prune_refuses_a_folder_that_is_not_one_of_its_own(tmp_path: Path) -> None:
    keep = Retention("task_log", "standard", 30, "30d")
    with pytest.raises(ValueError, match="not a directory of its own"):
        prune_task_logs(Path("/"), keep, NOW)
    with pytest.raises(ValueError, match="not a directory of its own"):
        prune_task_logs(tmp_path / "missing", keep, NOW)


def test_the_audit_export_must_cover_the_audit_retention(
    policy_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from include.audit import export

    monkeypatch.setattr(export, "DEFAULT_RETENTION_DAYS", 365)
    [message] = violations(policy_dir)
    assert message == (
        "retention-minimum: include/audit/export.py: DEFAULT_RETENTION_DAYS: 365 is shorter than the audit "
        "retention 7y (2557 days) in retention.yaml"
    )
