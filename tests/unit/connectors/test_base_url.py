"""HttpConnectorHook.base_url: one way from an Airflow connection to a service's URL, used by every
HTTP hook (Teams and PagerDuty had their own copies before)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from airflow.sdk import Connection

from include.connectors.base import HttpConnectorHook
from include.connectors.errors import PermanentError
from include.connectors.pagerduty import PagerDutyEventsHook
from include.connectors.teams import TeamsWebhookHook


class PlainHook(HttpConnectorHook):
    system = "plain"

    def auth_headers(self) -> dict[str, str]:
        return {}


def _url(
    hook_class: type[HttpConnectorHook],
    monkeypatch: pytest.MonkeyPatch,
    *,
    host: str | None,
    schema: str | None = None,
    port: int | None = None,
    **extra: Any,
) -> str:
    connection = Connection(
        conn_id="svc",
        conn_type="http",
        host=host,
        schema=schema,
        port=port,
        password="/secret/path",
        extra=json.dumps(extra),
    )
    monkeypatch.setattr(hook_class, "get_connection", classmethod(lambda cls, conn_id: connection))
    return str(hook_class("svc", tenant="acme").base_url)


@pytest.mark.parametrize("hook_class", [PlainHook, TeamsWebhookHook, PagerDutyEventsHook])
@pytest.mark.parametrize(
    ("connection", "url"),
    [
        pytest.param({"host": "api.example"}, "https://api.example", id="bare-host-https-by-default"),
        pytest.param(
            {"host": "127.0.0.1", "schema": "http", "port": 8123},
            "http://127.0.0.1:8123",
            id="schema-and-port",
        ),
        pytest.param(
            {"host": "http://127.0.0.1:8123/", "schema": "https", "port": 9},
            "http://127.0.0.1:8123",
            id="origin",
        ),
        pytest.param(
            {"host": " https://prod-01.westeurope.logic.azure.com:443 "},
            "https://prod-01.westeurope.logic.azure.com:443",
            id="workflows-origin-stripped",
        ),
        pytest.param(
            {"host": "api.example", "base_path": "/rest/api/2/"},
            "https://api.example/rest/api/2",
            id="base-path",
        ),
        pytest.param(
            {"host": "https://api.example", "base_path": "/v1"},
            "https://api.example/v1",
            id="origin-base-path",
        ),
    ],
)
def test_every_http_hook_builds_its_url_the_same_way(
    monkeypatch: pytest.MonkeyPatch, hook_class: type[HttpConnectorHook], connection: dict[str, Any], url: str
) -> None:
    assert _url(hook_class, monkeypatch, **connection) == url


def test_teams_and_pagerduty_have_no_copy_of_their_own() -> None:
    for hook_class in (TeamsWebhookHook, PagerDutyEventsHook):
        assert "base_url" not in vars(hook_class)


def test_pagerduty_defaults_to_the_public_events_api(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _url(PagerDutyEventsHook, monkeypatch, host=None) == "https://events.pagerduty.com"
    assert _url(PagerDutyEventsHook, monkeypatch, host="") == "https://events.pagerduty.com"
    assert _url(PagerDutyEventsHook, monkeypatch, host="events.eu.pagerduty.com") == (
        "https://events.eu.pagerduty.com"
    )


@pytest.mark.parametrize("hook_class", [PlainHook, TeamsWebhookHook])
@pytest.mark.parametrize("host", [None, "", "  ", "/"])
def test_no_host_is_a_permanent_error_naming_the_connection(
    monkeypatch: pytest.MonkeyPatch, hook_class: type[HttpConnectorHook], host: str | None
) -> None:
    with pytest.raises(
        PermanentError, match=r"connection 'svc': host \(the \w+ service's address\) is empty"
    ) as err:
        _url(hook_class, monkeypatch, host=host)
    assert err.value.operation == "configure"
    assert "/secret/path" not in str(err.value)
