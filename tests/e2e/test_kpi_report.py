"""The KPI report for a window of real runs: the CLI file, the numbers against the metadata DB, the UI page.

The module makes its own runs (service checks need no approval): two domains, two tenants. The
UI page is opened in headless Chromium (Debian ``chromium``) driven over the DevTools protocol,
logged in with the FAB auth manager's JWT as the UI's ``_token`` cookie; the screenshots land in
the test output folder (``<profile>/results``).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import create_engine

from devstack import chromium
from devstack.api_client import AirflowApi
from devstack.config import REPO_ROOT
from devstack.stack import Stack
from include.connectors.context import default_correlation_id
from include.metrics.measure import TaskMeasurement, task_measurements

RUNS = (("support", "acme"), ("support", "globex"), ("soc", "acme"))
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _iso(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


@pytest.fixture(scope="module")
def window(api: AirflowApi) -> dict[str, Any]:
    """Trigger the runs, wait for them; the window spans exactly them."""
    since = datetime.now(UTC) - timedelta(seconds=1)
    triggered = [(d, t, api.trigger(f"{d}_service_check", {"tenant": t})) for d, t in RUNS]
    runs = {
        (f"{d}_service_check", run_id): (d, t, api.wait_for_run(f"{d}_service_check", run_id, timeout=240))
        for d, t, run_id in triggered
    }
    until = datetime.now(UTC) + timedelta(seconds=1)
    # Scheduled platform runs (audit sealing, SLA digests) may be queued in the window too: the report
    # counts every run queued in it, so the expected count is what the API lists for the window.
    queued: list[datetime | None] = []
    while True:  # every page: the API returns at most [api] maximum_page_limit (100) runs per call
        page = api.get(
            "dags/~/dagRuns", start_date_gte=since.isoformat(), order_by="id", limit=100, offset=len(queued)
        )["dag_runs"]
        queued += [_iso(r.get("queued_at")) or _iso(r.get("start_date")) for r in page]
        if len(page) < 100:
            break
    in_window = sum(1 for q in queued if q is not None and since <= q < until)
    assert in_window >= len(RUNS)
    return {"since": since, "until": until, "runs": runs, "in_window": in_window}


@pytest.fixture(scope="module")
def measured(stack: Stack, window: dict[str, Any]) -> list[TaskMeasurement]:
    engine = create_engine(stack.profile.db_url)
    try:
        with engine.connect() as connection:
            return task_measurements(connection, window["since"], window["until"])
    finally:
        engine.dispose()


def test_rows_match_the_metadata_db(api: AirflowApi, window: dict[str, Any], measured) -> None:
    ours = {(m.dag_id, m.run_id, m.task_id): m for m in measured if (m.dag_id, m.run_id) in window["runs"]}
    assert len(ours) == 3 * len(RUNS)
    for (dag_id, run_id), (domain, tenant, run) in window["runs"].items():
        assert run["state"] == "success"
        for ti in api.task_instances(dag_id, run_id):
            row = ours[(dag_id, run_id, ti["task_id"])]
            start, end, queued = _iso(ti["start_date"]), _iso(ti["end_date"]), _iso(ti["queued_when"])
            assert (row.domain, row.tenant, row.state, row.workflow_kind) == (
                domain,
                tenant,
                "success",
                "fast_path",
            )
            assert row.correlation_id == default_correlation_id(dag_id, run_id)
            assert row.retries == ti["try_number"] - 1 == 0
            assert row.duration_s == pytest.approx((end - start).total_seconds(), abs=0.001)
            assert row.queue_wait_s == pytest.approx((start - queued).total_seconds(), abs=0.001)
            assert row.queue_wait_s >= 0
            assert row.approval_wait_s is None
            assert row.approval_outcome is None
            run_duration = (_iso(run["end_date"]) - _iso(run["queued_at"])).total_seconds()
            assert row.run_duration_s == pytest.approx(run_duration, abs=0.001)


@pytest.fixture(scope="module")
def report_file(stack: Stack, window: dict[str, Any]) -> Path:
    out = stack.profile.root / "results" / "kpi-report.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "include.cli",
            "kpi",
            "report",
            "--since",
            window["since"].isoformat(),
            "--until",
            window["until"].isoformat(),
            "--out",
            str(out),
            "--dsn",
            stack.profile.db_url,
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert f"kpi report: {window['in_window']} runs from" in result.stdout
    assert time.monotonic() - started < 60
    return out


def _kpi_row(html: str, table_title: str, key: str) -> list[str]:
    """The cells of one row of a KPI table (the report's own simple markup)."""
    table = html.split(f"<th>{table_title}</th>", 1)[1].split("</table>", 1)[0]
    row = table.split(f"<tr><td>{key}</td>", 1)[1].split("</tr>", 1)[0]
    return [cell.split(">", 1)[1] for cell in row.split("</td>") if cell]


def test_cli_report_counts_the_window(report_file: Path, measured) -> None:
    html = report_file.read_text()
    # Runs, success rate per domain and per tenant: what the metadata DB says.
    assert _kpi_row(html, "Domain", "support")[:2] == ["2", "100.0%"]
    assert _kpi_row(html, "Domain", "soc")[:2] == ["1", "100.0%"]
    assert _kpi_row(html, "Tenant", "acme")[:2] == ["2", "100.0%"]
    assert _kpi_row(html, "Tenant", "globex")[:2] == ["1", "100.0%"]
    assert _kpi_row(html, "Domain", "soc")[4] == "5m 00s"  # the SOC fast-path SLA in domains.yaml
    # Offline: the plots are embedded PNGs, nothing is fetched.
    images = [part.split('"', 1)[0] for part in html.split('src="data:image/png;base64,')[1:]]
    assert len(images) == 2  # latency and success rate; no approval in the window
    assert all(base64.b64decode(image).startswith(PNG_MAGIC) for image in images)
    assert "http://" not in html
    assert "https://" not in html
    assert "Approval wait per gate: no data in this window." in html


def test_ui_page_requires_login_and_serves_the_report(api: AirflowApi, stack: Stack, window) -> None:
    url = f"{stack.profile.api_url}/kpi-report/"
    params = {"since": window["since"].isoformat(), "until": window["until"].isoformat()}
    assert requests.get(url, params=params, timeout=60).status_code == 401
    api._login()
    response = requests.get(
        url, params=params, headers={"Authorization": f"Bearer {api._token}"}, timeout=120
    )
    assert response.status_code == 200, response.text[:500]
    assert _kpi_row(response.text, "Domain", "support")[:2] == ["2", "100.0%"]
    bad = requests.get(
        url, params={"since": "yesterday"}, headers={"Authorization": f"Bearer {api._token}"}, timeout=60
    )
    assert bad.status_code == 400
    plugins = api.get("plugins")["plugins"]
    views = [v for p in plugins for v in p.get("external_views", [])]
    assert {"name": "KPI report", "url_route": "kpi-report", "href": "kpi-report/"}.items() <= next(
        v for v in views if v["name"] == "KPI report"
    ).items()


# --- headless Chromium over the DevTools protocol ---------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class DevTools:
    def __init__(self, ws: Any) -> None:
        self.ws, self.next_id = ws, 0

    def __call__(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv(timeout=60))
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def evaluate(self, expression: str) -> Any:
        return self("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 90) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.5)
        text = self.evaluate("document.body && document.body.innerText")
        raise TimeoutError(f"page never satisfied {expression!r}; text: {str(text)[:500]!r}")


@pytest.fixture(scope="module")
def browser(stack: Stack, api: AirflowApi) -> Iterator[DevTools]:
    from websockets.sync.client import connect

    chromium.ensure_installed()
    port = _free_port()
    # Chromium's helper processes may still be writing the profile when the fixture ends: the
    # folder is removed as far as possible, never failing the test for it.
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile_dir:
        process = subprocess.Popen(
            [
                str(chromium.BINARY),
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                f"--remote-debugging-port={port}",
                "--remote-allow-origins=*",
                f"--user-data-dir={profile_dir}",
                "--window-size=1600,1100",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: the teardown stops every helper
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    targets = requests.get(f"http://127.0.0.1:{port}/json/list", timeout=5).json()
                    page = next(t for t in targets if t["type"] == "page")
                    break
                except (requests.ConnectionError, StopIteration):
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.5)
            with connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=30) as ws:
                tools = DevTools(ws)
                tools("Page.enable")
                tools("Network.enable")
                api._login()
                # What the FAB login form leaves in the browser: the JWT as the _token cookie.
                tools(
                    "Network.setCookie", name="_token", value=api._token, url=stack.profile.api_url, path="/"
                )
                yield tools
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)


def _screenshot(tools: DevTools, path: Path) -> None:
    path.write_bytes(base64.b64decode(tools("Page.captureScreenshot", format="png")["data"]))
    assert path.read_bytes().startswith(PNG_MAGIC)


def test_kpi_page_renders_in_chromium(browser: DevTools, stack: Stack, window) -> None:
    results = stack.profile.root / "results"
    query = f"since={window['since'].isoformat()}&until={window['until'].isoformat()}".replace("+", "%2B")
    browser("Page.navigate", url=f"{stack.profile.api_url}/kpi-report/?{query}")
    browser.wait_for("document.readyState === 'complete' && document.querySelectorAll('img').length === 2")
    headers = browser.evaluate("[...document.querySelectorAll('th')].map(th => th.innerText)")
    assert {
        "Domain",
        "Tenant",
        "Runs",
        "Success rate",
        "Duration p95",
        "SLA misses",
        "Approval wait p50",
    } <= set(headers)
    rendered = browser.evaluate(
        "[...document.querySelectorAll('img')].every(i => i.complete && i.naturalWidth > 300)"
    )
    assert rendered is True
    _screenshot(browser, results / "kpi-report-page.png")


def test_kpi_page_inside_the_airflow_ui(browser: DevTools, stack: Stack) -> None:
    """The nav entry's route shows the report in the UI's frame (default window: the last 24 h)."""
    browser("Page.navigate", url=f"{stack.profile.api_url}/plugin/kpi-report")
    browser.wait_for("!!document.querySelector('iframe')")
    browser.wait_for(
        "(() => { const d = document.querySelector('iframe').contentDocument;"
        " return !!d && d.readyState === 'complete' && d.body.innerText.includes('Per domain'); })()"
    )
    frame_text = browser.evaluate("document.querySelector('iframe').contentDocument.body.innerText")
    assert "Workflow KPIs" in frame_text
    assert "support" in frame_text
    _screenshot(browser, stack.profile.root / "results" / "kpi-report-ui.png")
