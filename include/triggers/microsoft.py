"""Wait for a Defender for Endpoint machine action (isolate, release) without holding a worker.

An isolation is asynchronous: ``POST /api/machines/{id}/isolate`` answers a machine action in
``Pending``; the device applies it when it next checks in (``InProgress``, then ``Succeeded``, or
``Failed``/``Cancelled``/``TimeOut``). The isolating task defers to :class:`MachineActionTrigger`,
which polls the action in the triggerer and fires once it is final, or when ``timeout_seconds`` have
passed.

The trigger reads the action with the tenant's **read-only** Defender app only (the
``device-inspect`` capability, named literally so ``policy-check`` sees it): outside a task there is
no approval to verify, so it never takes a privileged capability's credential.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent
from asgiref.sync import sync_to_async

FINAL_STATUSES = frozenset({"Succeeded", "Failed", "Cancelled", "TimeOut"})


class MachineActionTrigger(BaseTrigger):
    """Fire ``{"status", "action_id", "action"}`` when the machine action is final, or ``{"status":
    "timeout", ...}`` after ``timeout_seconds``.

    :param tenant: the customer tenant whose Defender holds the action.
    :param action_id: the machine action's id.
    :param run_context: the deferring task's run (``RunContext`` fields: dag_id, run_id, task_id,
        tenant, correlation_id): the AssumeRole's session name and tags.
    :param poll_interval: seconds between polls.
    :param timeout_seconds: how long to wait in all.
    :param aws_conn_id: the platform's base AWS connection (to assume the capability's role).
    """

    def __init__(
        self,
        *,
        tenant: str,
        action_id: str,
        run_context: dict[str, str],
        poll_interval: float = 5.0,
        timeout_seconds: float = 1800.0,
        started_at: float | None = None,
        aws_conn_id: str = "aws_default",
    ) -> None:
        """:param started_at: when the wait began (epoch seconds), kept across triggerer restarts."""
        super().__init__()
        if run_context.get("tenant") != tenant:
            raise ValueError(f"run of tenant {run_context.get('tenant')!r} cannot wait on tenant {tenant!r}")
        self.tenant = tenant
        self.action_id = action_id
        self.run_context = dict(run_context)
        self.poll_interval = poll_interval
        self.timeout_seconds = timeout_seconds
        self.started_at = time.time() if started_at is None else started_at
        self.aws_conn_id = aws_conn_id

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "tenant": self.tenant,
                "action_id": self.action_id,
                "run_context": self.run_context,
                "poll_interval": self.poll_interval,
                "timeout_seconds": self.timeout_seconds,
                "started_at": self.started_at,
                "aws_conn_id": self.aws_conn_id,
            },
        )

    def _hook(self) -> Any:
        from include.connectors.context import RunContext
        from include.connectors.microsoft import DefenderHook

        return DefenderHook(
            capability="device-inspect",  # read-only: the triggerer has no approval to verify
            tenant=self.tenant,
            run_context=RunContext(**self.run_context),
            aws_conn_id=self.aws_conn_id,
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        hook = await sync_to_async(self._hook)()  # imports the Microsoft stack: off the event loop
        last: dict[str, Any] = {}
        while True:
            try:
                last = await sync_to_async(hook.get_action)(self.action_id)
            except Exception as error:  # a blip must not end the wait: log, poll again
                self.log.warning("machine action %s: poll failed: %s", self.action_id, type(error).__name__)
            status = str(last.get("status", ""))
            if status in FINAL_STATUSES:
                yield TriggerEvent({"status": status, "action_id": self.action_id, "action": last})
                return
            if time.time() - self.started_at >= self.timeout_seconds:
                yield TriggerEvent({"status": "timeout", "action_id": self.action_id, "action": last})
                return
            await asyncio.sleep(self.poll_interval)
