"""The ladder trigger as the triggerer rebuilds it: its classpath imports, its kwargs round-trip.

The ladder's timing (reminder, escalation, timeout, restart) is tested in
tests/unit/approvals/test_approval_policy.py with a fake clock; here, what the triggerer needs to
resume a deferred gate after a restart or on another host.
"""

from __future__ import annotations

import importlib
from datetime import UTC, datetime, timedelta

from include.triggers.approval import ApprovalLadderTrigger

T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
EXTRA = {
    "facts": {"domain": "soc", "action": "host-isolate", "step": 1},
    "approver_emails": ["soc-lead@secops.example"],
    "target": {"dag_id": "d", "run_id": "r", "task_id": "t", "map_index": -1},
    "ticket": {"system": "request_tracker", "tenant": "acme", "ticket_id": "42"},
    "tenant": "acme",
}


def _trigger() -> ApprovalLadderTrigger:
    return ApprovalLadderTrigger(
        ti_id="0190d8a1-0000-7000-8000-000000000000",
        options=["Approve", "Reject"],
        params={},
        defaults=["Reject"],
        timeout_datetime=T0 + timedelta(minutes=15),
        poke_interval=5.0,
        **EXTRA,
    )


def test_the_classpath_is_the_product_package_and_imports() -> None:
    classpath, _ = _trigger().serialize()

    assert classpath == "include.triggers.approval.ApprovalLadderTrigger"
    module, name = classpath.rsplit(".", 1)
    assert getattr(importlib.import_module(module), name) is ApprovalLadderTrigger


def test_the_kwargs_rebuild_the_same_trigger() -> None:
    classpath, kwargs = _trigger().serialize()
    rebuilt = ApprovalLadderTrigger(**kwargs)

    assert {key: kwargs[key] for key in EXTRA} == EXTRA
    assert rebuilt.serialize() == (classpath, kwargs)
    assert (rebuilt.timeout_datetime, rebuilt.defaults) == (T0 + timedelta(minutes=15), ["Reject"])


def test_the_request_card_is_posted_once_by_the_trigger_not_by_the_gate() -> None:
    """The gate records the request step and defers; the trigger posts the card and records it, so
    a restarted trigger (the same ladder, now with ``channels``) posts nothing again."""
    import asyncio
    from unittest import mock

    from include.approvals.messages import RequestFacts
    from include.triggers import approval as module

    facts = mock.Mock(spec=RequestFacts, requested_at=T0)
    ladder = [{"step": "requested", "at": T0.isoformat(), "to": ["soc-lead@secops.example"]}]
    posted = {"teams": {"conn_id": "teams_soc", "status": 202}}
    with (
        mock.patch.object(module, "anotify_channels", mock.AsyncMock(return_value=posted)) as notify,
        mock.patch.object(module.XCom, "set") as stored,
    ):
        trigger = _trigger()
        asyncio.run(trigger._announce(facts, ladder))
        asyncio.run(trigger._announce(facts, ladder))  # a restart: already announced

    notify.assert_awaited_once_with(
        "requested", facts, target=EXTRA["target"], tenant="acme", log=trigger.log, now=T0
    )
    assert ladder[0]["channels"] == posted
    stored.assert_called_once_with(
        "approval_ladder", ladder, dag_id="d", run_id="r", task_id="t", map_index=-1
    )


def test_a_ladder_without_the_request_step_posts_nothing() -> None:
    import asyncio
    from unittest import mock

    from include.triggers import approval as module

    with mock.patch.object(module, "anotify_channels", mock.AsyncMock()) as notify:
        asyncio.run(_trigger()._announce(mock.Mock(requested_at=T0), []))
    notify.assert_not_awaited()
