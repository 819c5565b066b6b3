"""Ticketing connectors: one interface (:class:`TicketingHook`), one adapter per system."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from include.connectors.ticketing.interface import TicketingHook

TicketingSystem = Literal["request_tracker", "jira"]
SYSTEMS: tuple[TicketingSystem, ...] = ("request_tracker", "jira")


def ticketing_hook(system: str, conn_id: str | None, tenant: str, *, bulk: bool = False) -> TicketingHook:
    """The hook of ``system``; each adapter is imported when asked for, so a DAG parse loads no client.

    :param system: ``request_tracker`` or ``jira``.
    :param conn_id: the Airflow connection; ``None`` for the adapter's default (``rt_default``,
        ``jira_default``).
    :param tenant: the tenant the calls are made for (its own rate-limit bucket, its ticket field).
    :param bulk: the calls also draw from the connection's bulk rate limit (``bulk_rate_limit_*``).
    :raises ValueError: for an unknown system.
    """
    if system == "request_tracker":
        from include.connectors.ticketing.request_tracker import RequestTrackerHook

        return RequestTrackerHook(conn_id, tenant=tenant, bulk=bulk)
    if system == "jira":
        from include.connectors.ticketing.jira import JiraServiceManagementHook

        return JiraServiceManagementHook(conn_id, tenant=tenant, bulk=bulk)
    raise ValueError(f"unknown ticketing system {system!r}: use 'request_tracker' or 'jira'")
