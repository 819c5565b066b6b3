"""The webhook stand-in's fault switch scoped to one run (devstack/standins/webhooks.py, ``match``):
an end-to-end test fails one run's pages while other runs page beside it
(tests/e2e/test_approval_channels.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from devstack.standins.webhooks import WebhookStandIn

ROUTING_KEY = "R0UT1NGKEY" + "y" * 22


@pytest.fixture
def standin() -> Iterator[WebhookStandIn]:
    with WebhookStandIn(pagerduty={ROUTING_KEY: "soc"}) as server:
        yield server


def _page(standin: WebhookStandIn, dedup_key: str) -> int:
    event = {
        "routing_key": ROUTING_KEY,
        "event_action": "trigger",
        "dedup_key": dedup_key,
        "payload": {"summary": "s", "source": "x", "severity": "critical"},
    }
    return requests.post(f"{standin.base_url}/v2/enqueue", json=event, timeout=5).status_code


def _switch(standin: WebhookStandIn, **spec: object) -> int:
    return requests.post(f"{standin.base_url}/_faults", json=spec, timeout=5).status_code


def test_a_matched_fault_fails_only_the_matching_requests(standin: WebhookStandIn) -> None:
    assert _switch(standin, target="pagerduty", mode="5xx", times=3, match="run-a") == 204
    assert [_page(standin, key) for key in ("run-b", "run-a", "run-c", "run-a")] == [202, 503, 202, 503]
    assert _switch(standin, target="pagerduty", mode="5xx", times=0, match="run-a") == 204
    assert _page(standin, "run-a") == 202
    # a fault without match still applies to every request of the target
    assert _switch(standin, target="pagerduty", mode="5xx", times=1) == 204
    assert _page(standin, "run-b") == 503
    assert _page(standin, "run-b") == 202


@pytest.mark.parametrize("match", ["", 7, ["run-a"]])
def test_a_bad_match_is_refused(standin: WebhookStandIn, match: object) -> None:
    assert _switch(standin, target="pagerduty", mode="5xx", times=1, match=match) == 400
    assert _page(standin, "run-a") == 202
