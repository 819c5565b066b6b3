"""
### Bench baseline: support triage in bare Airflow

The same shape as `support_triage` (an asset watcher on new Request Tracker tickets, one task
that reads the ticket and writes fields, priority, status and one comment back) with none of the
platform's parts in the task: no `domain_workflow`, no audit records, no connector (plain
`requests` with the REST 2 token, no rate limiter, no idempotency search), a fixed verdict.
It watches the `implementation` queue so it never races `support_triage` for a ticket.
The event source is the same `NewTicketTrigger` (the watcher is not what the ratio measures).
Bench-only: loaded from `bench/dags/` by `python -m bench.suite`, never deployed.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG, Asset, AssetWatcher, task

from include.triggers.request_tracker import NewTicketTrigger

BARE_QUEUE = "implementation"
NEW_TICKETS = Asset(
    name="bench_bare_new_tickets",
    uri="rt://implementation/bench-new-tickets",
    watchers=[
        AssetWatcher(name="bench_bare_new", trigger=NewTicketTrigger(queue=BARE_QUEUE, poll_interval=1.0))
    ],
)

with DAG(
    dag_id="bench_bare_triage",
    schedule=[NEW_TICKETS],
    start_date=datetime(2024, 1, 1),
    catchup=False,
    doc_md=__doc__,
    # The support domain's settings (include/policies/domains.yaml), written out as any author in
    # that domain would have to: the same pool, active-run cap and scheduling settings as the
    # platform's DAG, so the ratio measures the platform and not a different quota. Nothing else
    # of the domain policy. tests/unit/test_bench_baselines.py holds them to the policy.
    tags=["bench", "domain:support"],
    max_active_runs=64,
    max_active_tasks=16,
    dagrun_timeout=timedelta(hours=6),  # support's fast_path run timeout
    default_args={
        "pool": "support",
        "execution_timeout": timedelta(minutes=30),  # and its task timeout
        "owner": "support-engineering",
        "priority_weight": 1,
        "weight_rule": "absolute",
    },
):

    @task
    def triage_tickets(**context) -> list[str]:
        import requests
        from airflow.sdk import Connection

        conn = Connection.get("rt_default")
        base = f"http://{conn.host}:{conn.port}/REST/2.0"
        session = requests.Session()
        session.headers["Authorization"] = f"token {conn.password}"
        ids = []
        for events in (context.get("triggering_asset_events") or {}).values():
            for event in events:
                ticket_id = str(((event.extra or {}).get("payload") or {}).get("ticket_id") or "")
                if ticket_id.isdigit() and ticket_id not in ids:
                    ids.append(ticket_id)
        for ticket_id in ids:
            session.get(f"{base}/ticket/{ticket_id}", timeout=30).raise_for_status()
            session.get(f"{base}/ticket/{ticket_id}/history?per_page=5", timeout=30).raise_for_status()
            update = {
                "CustomFields": {"Category": "general", "Severity": "low"},
                "Priority": 10,
                "Status": "open",
            }
            session.put(f"{base}/ticket/{ticket_id}", json=update, timeout=30).raise_for_status()
            comment = {"Content": "Triage: general/low/p10", "ContentType": "text/plain"}
            session.post(f"{base}/ticket/{ticket_id}/comment", json=comment, timeout=30).raise_for_status()
        return ids

    triage_tickets()
