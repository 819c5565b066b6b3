"""The scale parts' rows in the benchmark table (bench/suite.py, issue 24)."""

from __future__ import annotations

from bench.suite import OFF_STACK_PARTS, PARTS, figures


def _results() -> dict:
    return {
        "settings": {"audit_sizes": [100_000, 1_000_000]},
        "scale_audit": {
            "empty_append_8_writers_p50_ms": 7.6,
            "100k_verify_full_s": 1.2,
            "100k_verify_records_per_s": 83_000,
            "100k_verify_peak_rss_mb": 95,
            "100k_verify_incremental_s": 0.07,
            "100k_trace_p50_ms": 1.4,
            "100k_trace_index_only": 1,
            "100k_append_8_writers_p50_ms": 8.1,
            "1M_verify_full_s": 12.5,
            "1M_trace_index_only": 0,
        },
        "scale_kpi": {"kpi_task_instances": 300_028, "kpi_report_p50_s": 2.4, "kpi_report_max_s": 2.9},
        "scale_tenants": {
            "tenants_3_parse_total_s": 0.43,
            "tenants_300_parse_total_s": 0.41,
            "tenants_300_seed_s": 87.0,
            "tenants_budgets_met": 0,
            "tenants_budgets_missed": "seed_s",
        },
    }


def test_scale_parts_run_after_the_stack_parts() -> None:
    assert PARTS[-len(OFF_STACK_PARTS) :] == OFF_STACK_PARTS


def test_every_size_and_part_has_its_rows_with_the_measured_values() -> None:
    rows = {name: (value, goal) for name, value, goal in figures(_results())}
    assert rows["audit 100k: full verify s, records/s, peak RSS MB"][0] == "1.2 s, 83000/s, 95 MB"
    assert rows["audit 100k: trace p50 (ms), index only"][0] == "1.4, yes"
    # A size whose figure is missing says so rather than borrowing another size's.
    assert rows["audit 1M: full verify s, records/s, peak RSS MB"][0] == "12.5 s, n/a/s, n/a MB"
    assert rows["audit 1M: trace p50 (ms), index only"][0] == "n/a, NO"
    kpi = next(
        value for name, (value, _) in rows.items() if name.startswith("KPI report over 30 days, 300028")
    )
    assert kpi.startswith("2.4 / 2.9")
    assert rows["tenants 3/300: parse dags/ total (s)"][0] == "0.43 / 0.41"
    assert rows["tenants 3/300: devstack seeding (s)"][0] == "n/a / 87.0"
    assert rows["tenants: budgets met at the largest size"][0] == "NO (missed: seed_s)"


def test_a_failed_part_has_no_rows() -> None:
    results = _results()
    results["scale_audit"] = {"error": "RuntimeError: boom"}
    names = [name for name, _, _ in figures(results)]
    assert not any(name.startswith("audit ") for name in names)
    assert any(name.startswith("KPI report") for name in names)
