"""bench/scale_tenants.py and bench/scale_kpi.py without services: the generated tenants file, the
loader's override, the budget verdicts and the KPI history's shape."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import scale_kpi, scale_tenants
from include.policies import tenants as tenants_module
from include.policies.loader import PolicyError
from include.policies.tenants import TENANTS_FILE, TENANTS_FILE_ENV, load_tenants_file, tenants_file


@pytest.mark.parametrize("count", [3, 4, 300])
def test_generated_tenants_file_is_valid_with_the_committed_tenants_first(tmp_path: Path, count: int) -> None:
    policy = load_tenants_file(scale_tenants.generate_tenants(count, tmp_path))
    committed = load_tenants_file(TENANTS_FILE)
    assert len(policy.tenants) == count
    assert {n: policy.tenants[n] for n in committed.tenants} == committed.tenants
    generated = [n for n in policy.customers if n.startswith(scale_tenants.GENERATED_PREFIX)]
    assert len(generated) == count - len(committed.tenants)
    # the loader's own rule: every tenant an account of its own, never the platform's
    accounts = [t.aws_account_id for t in policy.tenants.values()]
    assert len(set(accounts)) == len(accounts)
    assert policy.platform_account_id not in accounts


def test_fewer_tenants_than_committed_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="2 tenants: the committed file already has 3"):
        scale_tenants.generate_tenants(2, tmp_path)


def test_policy_folder_keeps_every_policy_file_and_the_generated_tenants(tmp_path: Path) -> None:
    tenants = scale_tenants.generate_tenants(5, tmp_path)
    domains = scale_tenants.policy_folder(tenants, tmp_path)
    assert domains == tmp_path / "domains.yaml"
    assert {p.name for p in TENANTS_FILE.parent.glob("*.yaml")} == {p.name for p in tmp_path.glob("*.yaml")}
    assert len(load_tenants_file(tmp_path / "tenants.yaml").tenants) == 5


def test_the_loader_reads_the_override_only_when_set(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(TENANTS_FILE_ENV, raising=False)
    assert tenants_file() == TENANTS_FILE
    monkeypatch.setenv(TENANTS_FILE_ENV, "  ")
    assert tenants_file() == TENANTS_FILE
    generated = scale_tenants.generate_tenants(7, tmp_path)
    monkeypatch.setenv(TENANTS_FILE_ENV, str(generated))
    tenants_module.load_tenants.cache_clear()
    try:
        assert len(tenants_module.load_tenants().tenants) == 7
        monkeypatch.setenv(TENANTS_FILE_ENV, str(tmp_path / "missing.yaml"))
        tenants_module.load_tenants.cache_clear()
        with pytest.raises(PolicyError, match=r"missing\.yaml"):
            tenants_module.load_tenants()
    finally:
        monkeypatch.delenv(TENANTS_FILE_ENV)
        tenants_module.load_tenants.cache_clear()
    assert tenants_module.load_tenants().source == TENANTS_FILE


def test_budget_verdicts_per_figure_of_the_size() -> None:
    figures = {
        "tenants_300_parse_max_file_s": 2.5,
        "tenants_300_policy_check_s": 12.0,
        "tenants_3_parse_max_file_s": 9.0,  # another size: not judged
    }
    assert scale_tenants.budget_verdicts(figures, 300) == {"parse_max_file_s": False, "policy_check_s": True}


def test_kpi_history_catalogue() -> None:
    # 300,000 task instances take about 85,000 runs with this mix (3.5 tasks per run)
    assert scale_kpi.mean_tasks_per_run() == pytest.approx(3.505, abs=0.001)
    assert scale_kpi.runs_for(300_000) == 85_588
    assert scale_kpi.runs_for(1) == 1
    sql, params = scale_kpi._catalogue_sql(scale_kpi.DAGS)
    assert sql.count("(") == len(scale_kpi.DAGS)
    assert params["d0"] == "support_ticket_triage"
    assert params["dom0"] == "support"
    assert params[f"dom{len(scale_kpi.DAGS) - 1}"] == ""  # the untagged DAG
    domains = {d.tags[0] for d in scale_kpi.DAGS if d.tags}
    assert domains == {
        "domain:support",
        "domain:soc",
        "domain:hr",
        "domain:invoicing",
        "domain:implementation",
    }


def test_cpu_seconds_of_a_proc_stat_line_with_spaces_in_the_command() -> None:
    ticks = __import__("os").sysconf("SC_CLK_TCK")
    fields = ["S", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", str(3 * ticks), str(ticks), "0"]
    line = "4242 (postgres: airflow kpi (x) idle) " + " ".join(fields)
    assert scale_kpi._cpu_seconds(line) == 4.0
