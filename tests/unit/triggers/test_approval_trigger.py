"""The ladder trigger as the triggerer rebuilds it: its classpath imports, its kwargs round-trip.

The ladder's timing (reminder, escalation, timeout, restart) is tested in
tests/unit/approvals/test_approval_policy.py with a fake clock; here, what the triggerer needs to
resume a deferred gate after a restart or on another host.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

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


# --- what a fresh triggerer pays for the first approval -------------------------------------------

REPO = Path(__file__).resolve().parents[3]
# Never at the trigger module's top level: Airflow's TriggerRunner imports it on its event loop.
HEAVY_AT_IMPORT = (
    "boto3",
    "botocore",
    "great_expectations",
    "pandas",
    "psycopg",
    "aiosmtplib",
    "include.connectors.base",
    "include.connectors.smtp",
    "include.audit.emit",
    "include.approvals.notify",
)
PROBE = """
import asyncio, json, sys
import include.triggers.approval as module
at_import = sorted(sys.modules)
asyncio.run(module.side_effects())
print(json.dumps({"at_import": at_import, "after_first_run": sorted(sys.modules)}))
"""


def _loaded(modules: list[str], names: tuple[str, ...]) -> set[str]:
    return {name for name in names for module in modules if module == name or module.startswith(name + ".")}


def test_the_trigger_module_imports_light_and_its_side_effects_load_off_the_loop() -> None:
    """A fresh interpreter, as a fresh triggerer: nothing heavy comes with the module itself; the
    side effects' modules come with :func:`side_effects` (a worker thread, in ``run``)."""
    probe = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    modules = json.loads(probe.stdout.strip().splitlines()[-1])

    assert _loaded(modules["at_import"], HEAVY_AT_IMPORT) == set()
    # The probe sees them once they are loaded: the first assertion can fail.
    assert {"psycopg", "aiosmtplib", "include.audit.emit", "include.approvals.notify"} <= _loaded(
        modules["after_first_run"], HEAVY_AT_IMPORT
    )


def test_the_side_effects_are_imported_once_and_then_kept_off_the_default_executor(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every ladder step and record asks for the side effects' modules: after the first import
    they come without a hop to the loop's default executor (which other triggers' blocking work
    can fill); the first import still goes there, never onto the loop."""
    from include.triggers import approval as module

    monkeypatch.setattr(module, "_side_effects", None)
    hops: list[tuple[str, ...]] = []
    real_to_thread = asyncio.to_thread

    async def counting_to_thread(function: Any, *args: Any) -> Any:
        hops.append(args[0])
        return await real_to_thread(function, *args)

    monkeypatch.setattr(module.asyncio, "to_thread", counting_to_thread)

    async def three_steps() -> list[tuple[Any, ...]]:
        return [await module.side_effects() for _ in range(3)]

    first, second, third = asyncio.run(three_steps())
    assert hops == [module.SIDE_EFFECT_MODULES]
    assert first is second is third
    assert [m.__name__ for m in first] == list(module.SIDE_EFFECT_MODULES)


# --- a slow notification holds no answer poll ----------------------------------------------------

NOTIFICATION_BLOCKS = 5.0
ANSWER_AFTER = 0.5
POKE = 0.1
DEADLINE = 0.3
REMINDER_HANGS = 1.5
GRACE = 0.2


def _facts(now: datetime) -> dict[str, Any]:
    from include.approvals.messages import RequestFacts

    return RequestFacts(
        domain="soc",
        action="host-isolate",
        subject="Isolate ws-0042",
        body="Isolate host ws-0042.",
        step=1,
        steps=1,
        approver_roles=["soc_lead"],
        excluded=["lea"],
        triggered_by="lea",
        correlation_id="corr-slow-teams",
        run_url="http://127.0.0.1:8080/dags/d/runs/r",
        answer_url="http://127.0.0.1:8080/dags/d/runs/r/tasks/t/required_actions",
        requested_at=now,
        remind_at=now + timedelta(minutes=5),
        escalate_at=now + timedelta(minutes=10),
        deadline=now + timedelta(minutes=15),
        escalate_to=["soc-lead@secops.example"],
    ).as_dict()


def _gate(run_id: str, now: datetime) -> ApprovalLadderTrigger:
    return ApprovalLadderTrigger(
        ti_id="0190d8a1-0000-7000-8000-000000000000",
        options=["Approve", "Reject"],
        params={},
        defaults=["Reject"],
        timeout_datetime=now + timedelta(minutes=15),
        poke_interval=POKE,
        facts=_facts(now),
        approver_emails=["soc-lead@secops.example"],
        target={"dag_id": "d", "run_id": run_id, "task_id": "t", "map_index": -1},
        tenant="acme",
    )


def test_a_teams_post_blocking_5s_delays_neither_its_gate_nor_another_gates_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Gate ``slow`` posts its request card to a webhook that hangs 5 s; both gates are answered
    0.5 s in. Each gets its answer from Airflow's own HITL poll (asgiref's shared thread) on time:
    the post runs on the ladder's own threads, beside the poll, not on the poll's thread before it."""
    from airflow.providers.standard.triggers import hitl

    from include.approvals import channels
    from include.triggers import approval as module

    asyncio.run(module.side_effects())  # imported already (its cost is the test above's)
    began = time.monotonic()
    posted: list[str] = []

    def hanging_post(stage: str, facts: Any, **kwargs: Any) -> dict[str, Any]:
        posted.append(stage)
        time.sleep(NOTIFICATION_BLOCKS)  # a webhook that does not answer (the connector's timeout)
        return {"teams": {"conn_id": "teams_soc", "error": "ReadTimeout"}}

    def hitl_detail(ti_id: Any) -> SimpleNamespace:
        answered = time.monotonic() - began >= ANSWER_AFTER
        return SimpleNamespace(
            response_received=answered,
            chosen_options=["Approve"] if answered else None,
            params_input={},
            responded_by_user=SimpleNamespace(id="7", name="sam") if answered else None,
            responded_at=datetime.now(UTC),
        )

    def recorded(*, key: str, dag_id: str, run_id: str, task_id: str, map_index: int) -> list[dict]:
        return [{"step": "requested", "at": began}] if run_id == "slow" else []

    monkeypatch.setattr(channels, "notify", hanging_post)
    monkeypatch.setattr(hitl, "get_hitl_detail_content_detail", hitl_detail)
    monkeypatch.setattr(module.XCom, "get_one", staticmethod(recorded))
    monkeypatch.setattr(module.XCom, "set", staticmethod(lambda *args, **kwargs: None))

    async def answered_after(trigger: ApprovalLadderTrigger) -> tuple[Any, float]:
        events = [event async for event in trigger.run()]
        return events, time.monotonic() - began

    async def both() -> list[tuple[Any, float]]:
        now = datetime.now(UTC)
        return list(
            await asyncio.gather(answered_after(_gate("slow", now)), answered_after(_gate("other", now)))
        )

    (slow_events, slow_after), (other_events, other_after) = asyncio.run(both())

    assert posted == ["requested"]  # the slow post did happen, and hangs
    assert [event.payload["chosen_options"] for event in slow_events + other_events] == [["Approve"]] * 2
    # The answer at 0.5 s, a poll every 0.1 s, at most ANSWER_GRACE_SECONDS for the card in flight;
    # before, both waited for the 5 s post.
    assert other_after < ANSWER_AFTER + 1.0, other_after
    assert slow_after < ANSWER_AFTER + module.ANSWER_GRACE_SECONDS + 1.0, slow_after


def test_a_hanging_reminder_neither_delays_the_fail_safe_reject_nor_reorders_the_ladder(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Reminder and escalation are both due; the reminder's sends hang, the escalation's do not.
    The timeout's default is applied at the deadline, the event waits only the grace for the
    hanging steps, and they are recorded later in step order, not in the order their sends finished."""
    from include.triggers import approval as module

    began = time.monotonic()
    now = datetime.now(UTC)
    trigger = _gate("r", now)
    trigger.timeout_datetime = now + timedelta(seconds=DEADLINE)
    trigger.facts = {
        **trigger.facts,
        "remind_at": (now - timedelta(seconds=2)).isoformat(),
        "escalate_at": (now - timedelta(seconds=1)).isoformat(),
    }
    saved: list[list[str]] = []
    timed_out_at: list[float] = []

    async def climb(step: str, facts: Any, at: datetime) -> dict[str, Any]:
        await asyncio.sleep(REMINDER_HANGS if step == "reminder" else 0.05)  # the reminder's mail hangs
        return {"step": step, "at": at.isoformat(), "to": []}

    async def recorded() -> list[dict[str, Any]]:
        return []

    async def save(ladder: list[dict[str, Any]]) -> None:
        saved.append([entry["step"] for entry in ladder])

    async def no_answer() -> None:
        return None

    async def timeout() -> str:
        timed_out_at.append(time.monotonic() - began)
        return "timed out"

    async def audit(*args: Any) -> None:
        return None

    monkeypatch.setattr(trigger, "_climb", climb)
    monkeypatch.setattr(trigger, "_recorded", recorded)
    monkeypatch.setattr(trigger, "_save", save)
    monkeypatch.setattr(trigger, "_handle_response", no_answer)
    monkeypatch.setattr(trigger, "_handle_timeout", timeout)
    monkeypatch.setattr(trigger, "_audit", audit)
    monkeypatch.setattr(module, "TIMEOUT_GRACE_SECONDS", GRACE)

    async def collect() -> tuple[list[Any], float, list[list[str]]]:
        events = [event async for event in trigger.run()]
        finished, saved_then = time.monotonic() - began, list(saved)
        await asyncio.sleep(REMINDER_HANGS)  # the steps go on after the gate resumed
        return events, finished, saved_then

    events, finished, saved_at_event = asyncio.run(collect())

    assert events == ["timed out"]
    assert timed_out_at[0] < DEADLINE + POKE + 0.3, timed_out_at  # at the deadline, not after the sends
    assert finished < timed_out_at[0] + GRACE + 0.3, finished  # then at most the grace
    assert saved_at_event == []  # neither step was recorded yet: the escalation waits for the reminder
    # The escalation's sends finished first; it is recorded after the reminder all the same.
    assert saved[-1] == ["reminder", "escalation"], saved
