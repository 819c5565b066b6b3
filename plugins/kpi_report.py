"""The KPI report inside the Airflow UI: a FastAPI app on the API server, linked in the nav.

``GET /kpi-report/?since=24h&until=&domain=&tenant=`` renders the same page as
``python -m include.cli kpi report`` for the logged-in user's DAGs (:mod:`include.metrics.web`),
and the external view shows it under *Browse -> KPI report* (UI route ``/plugin/kpi-report``).

The app is built on the first request: every Airflow component loads the plugins folder (the
listeners run in workers and the scheduler), and none but the API server needs FastAPI or
matplotlib.
"""

from __future__ import annotations

from typing import Any

from airflow.plugins_manager import AirflowPlugin

URL_PREFIX = "/kpi-report"
UI_ROUTE = "kpi-report"


class LazyKpiApp:
    """An ASGI app that builds :func:`include.metrics.web.create_app` on its first request."""

    def __init__(self) -> None:
        self._app: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self._app is None:
            from include.metrics.web import create_app

            self._app = create_app()
        await self._app(scope, receive, send)


class KpiReportPlugin(AirflowPlugin):
    name = "orchestrator_kpi_report"
    fastapi_apps = [{"app": LazyKpiApp(), "url_prefix": URL_PREFIX, "name": "KPI report"}]
    external_views = [
        {
            "name": "KPI report",
            "href": f"{URL_PREFIX.lstrip('/')}/",
            "url_route": UI_ROUTE,
            "destination": "nav",
            "category": "browse",
        }
    ]
