"""The stand-ins as services of the local stack: the command the stack runs (``standin_argv``) starts
the stand-in on its port, 127.0.0.1 only (Microsoft's over TLS only), with the configuration of its
0600 file (a call with its credentials works, a wrong one is refused), prints its banner, and ends
on SIGTERM with the port freed. And :func:`serve_main`, the ``main()`` they share."""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from devstack.standins import erp, jira, microsoft, webhooks
from devstack.standins.base import HOST, SERVICE_MAX_RECORDED, ServiceArgs, serve_main, write_config_file

REPO = Path(__file__).resolve().parents[3]
TIMEOUT = 10


@dataclass(frozen=True)
class FakeProfile:
    """What the stand-ins' service helpers use of a profile, with its folder under tmp_path."""

    root: Path
    api_port: int

    def local_secret(self, name: str, generate: Any = None) -> str:
        path = self.root / "secrets" / name
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            path.write_text(generate() if generate else "s")
            path.chmod(0o600)
        return path.read_text().strip()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def _refused(port: int, host: str = HOST) -> bool:
    try:
        socket.create_connection((host, port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


@pytest.fixture
def run_service() -> Iterator[Callable[[list[str]], str]]:
    """Start a command (the stack's argv) and return its banner; SIGTERM ends it (exit 0) at the end."""
    started: list[subprocess.Popen[str]] = []

    def run(argv: list[str]) -> str:
        process = subprocess.Popen(
            argv,
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        started.append(process)
        assert process.stdout is not None
        return process.stdout.readline().strip()

    yield run
    try:
        for process in started:
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=TIMEOUT) == 0
    finally:
        for process in started:
            process.kill()
            process.wait()


def _profile(tmp_path: Path, port_offset: int) -> FakeProfile:
    return FakeProfile(tmp_path, _free_port() - port_offset)


def _listens_on_loopback_only(port: int) -> None:
    assert not _refused(port)
    assert _refused(port, host="127.0.0.2")  # bound to 127.0.0.1 itself, not to every address


def test_jira_serves_its_sites_from_the_config_file(tmp_path: Path, run_service: Any) -> None:
    profile = _profile(tmp_path, jira.PORT_OFFSET)
    port = jira.port(profile)
    argv = jira.standin_argv(profile)
    assert argv[argv.index("--port") + 1] == str(port)
    config_file = Path(argv[argv.index("--config-file") + 1])
    assert config_file.stat().st_mode & 0o777 == 0o600
    email, account = next(iter(json.loads(config_file.read_text())["accounts"].items()))
    assert account["api_token"] not in " ".join(argv)

    assert run_service(argv) == f"JiraStandIn on http://{HOST}:{port}"

    _listens_on_loopback_only(port)
    search = f"{jira.base_url(profile)}/rest/api/3/search/jql"
    query = {"jql": f'project = {account["projects"][0]} AND labels = "none-yet"'}
    found = requests.get(search, params=query, auth=(email, account["api_token"]), timeout=TIMEOUT)
    assert found.status_code == 200, found.text
    assert found.json()["issues"] == []
    wrong = requests.get(search, params=query, auth=(email, "not-the-token"), timeout=TIMEOUT)
    assert wrong.status_code == 401


def test_microsoft_serves_https_only_with_its_tenants(tmp_path: Path, run_service: Any) -> None:
    profile = _profile(tmp_path, microsoft.PORT_OFFSET)
    port = microsoft.port(profile)
    argv = microsoft.standin_argv(profile)
    config = json.loads(Path(argv[argv.index("--config-file") + 1]).read_text())
    tenant_id, tenant = next(iter(config.items()))
    app = tenant["apps"][0]
    assert app["client_secret"] not in " ".join(argv)

    assert run_service(argv) == f"MicrosoftStandIn on https://{HOST}:{port}"

    _listens_on_loopback_only(port)
    ca = str(microsoft.tls_dir(profile) / "ca.pem")
    token_url = f"{microsoft.base_url(profile)}/{tenant_id}/oauth2/v2.0/token"
    form = {
        "grant_type": "client_credentials",
        "client_id": app["client_id"],
        "client_secret": app["client_secret"],
        "scope": microsoft.GRAPH_SCOPE,
    }
    token = requests.post(token_url, data=form, verify=ca, timeout=TIMEOUT)
    assert token.status_code == 200, token.text
    assert token.json()["token_type"] == "Bearer"
    wrong = requests.post(token_url, data={**form, "client_secret": "wrong"}, verify=ca, timeout=TIMEOUT)
    assert wrong.status_code == 401
    with pytest.raises(requests.ConnectionError):
        requests.post(token_url.replace("https://", "http://"), data=form, timeout=TIMEOUT)


def test_webhooks_take_the_routing_keys_of_the_config_file(tmp_path: Path, run_service: Any) -> None:
    profile = _profile(tmp_path, webhooks.PORT_OFFSET)
    port = webhooks.port(profile)

    assert run_service(webhooks.standin_argv(profile)) == f"WebhookStandIn on http://{HOST}:{port}"

    _listens_on_loopback_only(port)
    event = {
        "routing_key": webhooks.routing_key(profile, "soc"),
        "event_action": "trigger",
        "payload": {"summary": "host contained", "source": "orchestrator", "severity": "info"},
    }
    url = f"{webhooks.base_url(profile)}/v2/enqueue"
    assert requests.post(url, json=event, timeout=TIMEOUT).status_code == 202
    unknown = requests.post(url, json={**event, "routing_key": "0" * 32}, timeout=TIMEOUT)
    assert unknown.status_code == 400


def test_erp_reads_its_client_secret_from_the_file(tmp_path: Path, run_service: Any) -> None:
    port = _free_port()
    secret_file = tmp_path / "client-secret"
    secret_file.write_text("erp-secret-value\n")
    tenant, client = "33333333-3333-4333-8333-333333333333", "44444444-4444-4444-8444-444444444444"
    argv = [
        sys.executable,
        "-m",
        "devstack.standins.erp",
        "--port",
        str(port),
        "--aad-tenant-id",
        tenant,
        "--client-id",
        client,
        "--company-id",
        "55555555-5555-4555-8555-555555555555",
        "--client-secret-file",
        str(secret_file),
    ]

    assert run_service(argv).startswith(f"Business Central stand-in on http://{HOST}:{port}/v2.0/{tenant}/")

    _listens_on_loopback_only(port)
    form = {
        "grant_type": "client_credentials",
        "client_id": client,
        "client_secret": "erp-secret-value",
        "scope": erp.API_SCOPE,
    }
    url = f"http://{HOST}:{port}/{tenant}/oauth2/v2.0/token"
    assert requests.post(url, data=form, timeout=TIMEOUT).status_code == 200
    wrong = requests.post(url, data={**form, "client_secret": "erp-secret"}, timeout=TIMEOUT)
    assert wrong.status_code == 401


# --- serve_main, the main() the stand-ins share ---------------------------------------------------
class Built:
    """What a build returned: records that it was served (instead of serving until a signal)."""

    served = False

    def serve_until_stopped(self) -> None:
        self.served = True


def test_serve_main_builds_from_the_config_file_and_serves(tmp_path: Path) -> None:
    path = write_config_file(FakeProfile(tmp_path, 0), "s.json", {"projects": {"ACME": "acme"}})
    assert path.stat().st_mode & 0o777 == 0o600
    seen: list[tuple[argparse.Namespace, ServiceArgs]] = []
    built = Built()

    def build(args: argparse.Namespace, service: ServiceArgs) -> Any:
        seen.append((args, service))
        return built

    def options(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--budget", type=int, default=None)

    serve_main("s", build, ["--port", "4711", "--config-file", str(path), "--budget", "3"], options=options)

    [(args, service)] = seen
    assert service == {"port": 4711, "max_recorded": SERVICE_MAX_RECORDED}
    assert (args.config, args.budget) == ({"projects": {"ACME": "acme"}}, 3)
    assert built.served


def test_serve_main_refuses_a_missing_argument_before_building(capsys: Any) -> None:
    def build(args: argparse.Namespace, service: ServiceArgs) -> Any:
        raise AssertionError("built without its arguments")

    with pytest.raises(SystemExit) as exited:
        serve_main("s", build, ["--port", "4711"])
    assert exited.value.code == 2
    assert "--config-file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        serve_main("s", build, ["--config-file", "x.json"], config_file=False)
    assert "--port" in capsys.readouterr().err
