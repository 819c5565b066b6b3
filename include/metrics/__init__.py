"""Every run measured (PERF-3): per-task figures from the metadata DB, StatsD export, the KPI report.

- :mod:`include.metrics.measure`: one row per task instance of the runs queued in a window
  (duration, queue wait, approval wait, retries, end state, domain, tenant, correlation id);
- :mod:`include.metrics.kpi`: the per-domain / per-tenant KPIs over those rows;
- :mod:`include.metrics.report`: the KPI report as one offline HTML page with plots;
- :mod:`include.metrics.statsd`: DogStatsD packets with domain and tenant tags (listener export).
"""
