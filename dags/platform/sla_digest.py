"""
### SLA digest: send the SLA alerts whose window has closed

A domain's first missed SLA is mailed at once; later misses within the domain's digest window
(`domains.yaml`, `defaults.sla_digest_window` or `alerts.digest_window`) wait in the shared store
and go out as one digest per domain when the window closes. Every SLA callback sends what is due;
this workflow does the same every 5 minutes, so a digest goes out even when nobody misses again.
Trigger it with **Send open windows now** to send the digests still collecting (e.g. before a
maintenance). Several copies at once are harmless: each digest is claimed by one sender.
See docs/workflows.md (SLA alerts).
"""

from datetime import timedelta

from airflow.sdk import Param, task

from include.workflows.factory import domain_workflow


@domain_workflow(
    domain="platform",
    doc_md=__doc__,
    schedule=timedelta(minutes=5),
    params={
        "send_open_windows": Param(
            False,
            type="boolean",
            title="Send open windows now",
            description="Also send the digests whose window has not closed yet",
        )
    },
)
def sla_digest() -> None:
    @task
    def send_due_digests(params: dict | None = None) -> dict:
        from include.workflows.sla_digest import flush_due

        early = bool((params or {}).get("send_open_windows"))
        # A day covers any digest window the policy allows in practice.
        return flush_due(horizon=timedelta(days=1) if early else timedelta(0))

    send_due_digests()


sla_digest()
