"""The KPI report as a FastAPI app, mounted in the API server by ``plugins/kpi_report.py``.

``GET /?since=24h&until=&domain=&tenant=`` renders :func:`include.metrics.report.render_summary`
of the figures PostgreSQL aggregates (:func:`include.metrics.aggregate.kpi_summary`). The caller
must be logged in (the UI's ``_token`` cookie or a bearer token, as for the REST API) and the
report counts only the DAGs the auth manager lets that user read (the DAG ids go into the SQL as
a filter), so a domain's operators see their domain's KPIs and nothing else (SEC-4).

Imported on the first request only (FastAPI, the API server's security module, matplotlib).
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Annotated, Any

from airflow.api_fastapi.app import get_auth_manager
from airflow.api_fastapi.core_api.security import get_user
from fastapi import Depends, FastAPI, HTTPException, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse

from include.metrics.aggregate import kpi_summary
from include.metrics.cli import parse_moment
from include.metrics.kpi import sla_table
from include.metrics.report import ReportScope, render_summary

MOMENT_HELP = "ISO-8601 time or a duration ago (90m, 7d)"


def render_for(user: Any, since: str, until: str | None, domain: str | None, tenant: str | None) -> str:
    """The report HTML for ``user``: only the DAGs it may read."""
    from airflow.utils.session import create_session

    now = datetime.now(UTC)
    try:
        start, end = parse_moment(since, now), parse_moment(until, now) if until else now
    except argparse.ArgumentTypeError as error:
        raise HTTPException(status_code=400, detail=str(error)) from error
    if start >= end:
        raise HTTPException(status_code=400, detail="since must be before until")
    allowed = get_auth_manager().get_authorized_dag_ids(user=user, method="GET")
    scope = ReportScope(since=start, until=end, domain=domain or None, tenant=tenant or None)
    with create_session() as session:
        summary = kpi_summary(
            session.connection(),
            start,
            end,
            sla_table(),
            now=now,
            domain=scope.domain,
            tenant=scope.tenant,
            dag_ids=allowed,
        )
    return render_summary(summary, scope)


def create_app() -> FastAPI:
    app = FastAPI(title="Workflow KPIs", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/", response_class=HTMLResponse)
    async def kpi_page(
        user: Annotated[Any, Depends(get_user)],
        since: Annotated[str, Query(description=MOMENT_HELP)] = "24h",
        until: Annotated[str | None, Query(description=MOMENT_HELP)] = None,
        domain: str | None = None,
        tenant: str | None = None,
    ) -> HTMLResponse:
        html = await run_in_threadpool(render_for, user, since, until, domain, tenant)
        return HTMLResponse(html)

    return app
