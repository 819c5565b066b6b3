"""NewTicketTrigger: its serialisation, and a run against a mocked Request Tracker hook."""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Iterator
from typing import Any
from unittest import mock

import pytest

from include.connectors.ticketing.request_tracker import RequestTrackerHook
from include.triggers.request_tracker import NewTicketTrigger


def test_serialize_names_an_importable_class_and_its_arguments() -> None:
    trigger = NewTicketTrigger(queue="support", conn_id="rt_other", poll_interval=0.5)

    classpath, kwargs = trigger.serialize()

    assert classpath == "include.triggers.request_tracker.NewTicketTrigger"
    assert kwargs == {"queue": "support", "conn_id": "rt_other", "poll_interval": 0.5}
    module, _, name = classpath.rpartition(".")
    again = getattr(importlib.import_module(module), name)(**kwargs)
    assert again.serialize() == (classpath, kwargs)


def test_the_hook_polls_as_the_platform() -> None:
    hook = NewTicketTrigger(queue="support").hook
    assert type(hook) is RequestTrackerHook
    assert (hook.conn_id, hook.tenant, hook.bulk) == ("rt_default", "platform", False)


@pytest.fixture
def hook() -> Iterator[mock.MagicMock]:
    with mock.patch.object(NewTicketTrigger, "hook", new_callable=mock.PropertyMock) as prop:
        yield prop.return_value


def first_events(trigger: NewTicketTrigger, count: int) -> list[dict[str, Any]]:
    async def collect() -> list[dict[str, Any]]:
        events = []
        async for event in trigger.run():
            events.append(event.payload)
            if len(events) == count:
                break
        return events

    return asyncio.run(asyncio.wait_for(collect(), timeout=10))


def test_each_new_ticket_is_one_event_and_the_cursor_moves_past_it(hook: mock.MagicMock) -> None:
    hook.new_tickets.side_effect = [
        [
            {"id": 7, "Subject": "VPN down", "Requestor": [{"id": "ada@acme.example"}]},
            {"id": "9", "Subject": "x" * 300, "Requestor": []},
        ],
        [],
        [{"id": 12, "Subject": "Printer", "Requestor": ["not-a-mapping"]}],
    ]

    events = first_events(NewTicketTrigger(queue="support", poll_interval=0), 3)

    assert events == [
        {"ticket_id": "7", "queue": "support", "subject": "VPN down", "requestor": "ada@acme.example"},
        {"ticket_id": "9", "queue": "support", "subject": "x" * 200, "requestor": None},
        {"ticket_id": "12", "queue": "support", "subject": "Printer", "requestor": None},
    ]
    assert hook.new_tickets.call_args_list == [
        mock.call("support", after_id=0),
        mock.call("support", after_id=9),
        mock.call("support", after_id=9),
    ]


def test_a_failed_poll_is_logged_and_polled_again(hook: mock.MagicMock) -> None:
    hook.new_tickets.side_effect = [ConnectionError("rt down"), [{"id": 3, "Subject": "s"}]]
    trigger = NewTicketTrigger(queue="support", poll_interval=0)

    with mock.patch.object(NewTicketTrigger, "log") as log:
        events = first_events(trigger, 1)

    assert [event["ticket_id"] for event in events] == ["3"]
    log.warning.assert_called_once_with("polling queue %s failed: %s", "support", "ConnectionError")
    assert hook.new_tickets.call_args_list == [
        mock.call("support", after_id=0),
        mock.call("support", after_id=0),
    ]
