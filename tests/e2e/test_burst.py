"""A support burst: 200 runs triggered at once all finish, nothing is lost, no component dies.

The burst is also the SLA test: the support fast-path SLA is 2 minutes from queued, so the runs
that wait longest miss it. Each of those gets exactly one SLA-miss mail, the others none.
"""

from __future__ import annotations

import re
import time
from collections import Counter

import pytest

from bench.burst import BurstResult, burst, report
from include.connectors.context import default_correlation_id
from include.devstack.api_client import AirflowApi
from include.devstack.smtp_sink import read_messages
from include.devstack.stack import Stack
from include.policies.loader import load_domain_policy

RUNS = 200
DAG_ID = "support_service_check"
# Deadline callbacks fire a couple of seconds after the deadline; runs this close to it may go
# either way and are not judged.
SLA_MARGIN_SECONDS = 15


@pytest.fixture(scope="module")
def burst_result(api: AirflowApi, stack: Stack) -> BurstResult:
    result = burst(api, DAG_ID, RUNS, {"tenant": "acme"}, timeout=1500)
    report(result, stack.profile.root / "results" / "burst.json")
    time.sleep(SLA_MARGIN_SECONDS)  # let the last deadline callbacks deliver
    return result


def test_burst_of_200_runs_all_succeed(api: AirflowApi, stack: Stack, burst_result: BurstResult) -> None:
    assert burst_result.states == {"success": RUNS}
    assert stack.dead_components() == []
    health = api.get("monitor/health")
    assert {k: v["status"] for k, v in health.items() if isinstance(v, dict)} == {
        "metadatabase": "healthy",
        "scheduler": "healthy",
        "triggerer": "healthy",
        "dag_processor": "healthy",
    }


def test_sla_miss_mail_once_per_late_run_and_never_for_punctual_ones(
    stack: Stack, burst_result: BurstResult
) -> None:
    domain = load_domain_policy().domain("support")
    sla = domain.sla["fast_path"].total_seconds()
    subject = re.compile(
        rf"^\[SLA miss\]\[support\] {DAG_ID} run (\S+) "
        rf"exceeded its fast path SLA of {domain.sla['fast_path']}$"
    )
    mails = Counter()
    for message in read_messages(stack.profile.maildir):
        match = subject.match(message.subject)
        if match and match.group(1) in burst_result.run_seconds:
            run_id = match.group(1)
            assert message.rcpt_tos == list(domain.alert_emails)
            body = message.body()
            # which run, which domain, how late, the correlation id, a link to the run
            assert re.search(r"<th align='left'>Late by</th><td>(\d+m )?\d+s</td>", body), body
            assert f"<td>{default_correlation_id(DAG_ID, run_id)}</td>" in body
            assert f"/dags/{DAG_ID}/runs/{run_id}" in body
            assert message.message()["Message-ID"].startswith("<sla-miss-")
            mails[run_id] += 1
    finished = {r: s for r, s in burst_result.run_seconds.items() if s is not None}
    late = {r for r, s in finished.items() if s > sla + SLA_MARGIN_SECONDS}
    punctual = {r for r, s in finished.items() if s < sla - SLA_MARGIN_SECONDS}
    assert late, "the burst should overrun the support SLA for some runs"
    assert {r: mails[r] for r in late} == dict.fromkeys(late, 1)
    assert {r: mails[r] for r in punctual if mails[r]} == {}
