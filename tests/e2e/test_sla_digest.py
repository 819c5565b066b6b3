"""SLA digest end to end: real Deadline Alerts in the triggerer record their misses in the stack's
shared store; the first miss of the window is mailed at once, the rest in one digest that
``platform_sla_digest`` sends (here on request: the policy's window is 10 minutes).

Runs of the paused ``e2e_sla_held`` support workflow stay queued past the support fast-path SLA
(2 minutes) on any machine. Another test of the session (the burst) may have opened the support
window already, so the test does not assume which mail names which run: each held run must be
named exactly once over all SLA mails, in at most two of them (the window's first and the digest).
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Iterator

import pytest

from devstack.api_client import AirflowApi
from devstack.stack import Stack
from devstack.standins.smtp import read_messages
from include.policies.loader import load_domain_policy

HELD_DAG_ID = "e2e_sla_held"
DIGEST_DAG_ID = "platform_sla_digest"
RUNS = 3
# Deadline callbacks fire a few seconds after the deadline.
MARGIN_SECONDS = 20
MISS = re.compile(rf"^\[SLA miss\]\[support\] {HELD_DAG_ID} run (\S+) exceeded")


@pytest.fixture(scope="module")
def held(api: AirflowApi) -> Iterator[list[str]]:
    api.wait_for_dags({HELD_DAG_ID, DIGEST_DAG_ID})
    api.request("PATCH", f"dags/{HELD_DAG_ID}", json={"is_paused": True})
    runs = [api.trigger(HELD_DAG_ID, {}) for _ in range(RUNS)]
    try:
        yield runs
    finally:
        for run_id in runs:
            api.request("DELETE", f"dags/{HELD_DAG_ID}/dagRuns/{run_id}", expect=(204, 404))
        api.request("PATCH", f"dags/{HELD_DAG_ID}", json={"is_paused": False})


def test_late_runs_are_mailed_once_each_first_at_once_the_rest_in_one_digest(
    api: AirflowApi, stack: Stack, held: list[str]
) -> None:
    support = load_domain_policy().domain("support")
    time.sleep(support.sla["fast_path"].total_seconds() + MARGIN_SECONDS)

    run_id = api.trigger(DIGEST_DAG_ID, {"send_open_windows": True})
    assert api.wait_for_run(DIGEST_DAG_ID, run_id, timeout=120)["state"] == "success"

    named: Counter[str] = Counter()
    mails_naming_ours = 0
    for message in read_messages(stack.profile.maildir):
        if not message.subject.startswith(("[SLA miss][support]", "[SLA digest][support]")):
            continue
        assert message.rcpt_tos == list(support.alert_emails)
        if match := MISS.match(message.subject):
            runs = [match.group(1)]
        else:
            header = message.message()["X-Orchestrator-Runs"] or ""
            runs = [r.split("/", 1)[1] for r in header.split(", ") if r.startswith(f"{HELD_DAG_ID}/")]
        ours = [r for r in runs if r in held]
        mails_naming_ours += bool(ours)
        named.update(ours)
    assert named == Counter(dict.fromkeys(held, 1))
    assert mails_naming_ours <= 2
