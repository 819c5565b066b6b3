"""BusinessCentralHook.base_url: the connector base's URL (origin from host/schema/port, the
``base_path`` extra), and the online API's path of the Entra tenant and environment by default."""

from __future__ import annotations

import json
from typing import Any

import pytest
from airflow.sdk import Connection

from include.connectors.erp.business_central import BusinessCentralHook
from include.connectors.errors import PermanentError

AAD = "4c1d2a8e-0d2f-4b8e-9a51-3f2c7b9e1d60"


def _url(monkeypatch: pytest.MonkeyPatch, *, host: str | None, **fields: Any) -> str:
    extra = fields.pop("extra", {})
    connection = Connection(
        conn_id="bc", conn_type="http", host=host, password="cs-secret-1", extra=json.dumps(extra), **fields
    )
    monkeypatch.setattr(BusinessCentralHook, "get_connection", classmethod(lambda cls, conn_id: connection))
    return str(BusinessCentralHook("bc", tenant="acme").base_url)


@pytest.mark.parametrize(
    ("connection", "url"),
    [
        pytest.param(
            {"host": "api.businesscentral.dynamics.com", "extra": {"aad_tenant_id": AAD}},
            f"https://api.businesscentral.dynamics.com/v2.0/{AAD}/production/api/v2.0",
            id="online-default",
        ),
        pytest.param(
            {
                "host": "127.0.0.1",
                "schema": "http",
                "port": 8130,
                "extra": {"aad_tenant_id": AAD, "environment": "sandbox"},
            },
            f"http://127.0.0.1:8130/v2.0/{AAD}/sandbox/api/v2.0",
            id="standin-schema-port-environment",
        ),
        pytest.param(
            {"host": "https://bc.example:7048/", "extra": {"base_path": "/BC/api/v2.0/"}},
            "https://bc.example:7048/BC/api/v2.0",
            id="on-premises-origin-and-base-path",
        ),
    ],
)
def test_base_url(monkeypatch: pytest.MonkeyPatch, connection: dict[str, Any], url: str) -> None:
    assert _url(monkeypatch, **connection) == url


@pytest.mark.parametrize(
    ("connection", "message"),
    [
        pytest.param({"host": "", "extra": {"aad_tenant_id": AAD}}, r"host \(.*\) is empty", id="no-host"),
        pytest.param({"host": "bc.example"}, "needs the extra 'aad_tenant_id'", id="no-aad-tenant"),
        pytest.param(
            {"host": "bc.example", "extra": {"base_path": "BC/api"}},
            "the extra 'base_path' must start with '/'",
            id="relative-base-path",
        ),
    ],
)
def test_a_bad_connection_is_refused_naming_it(
    monkeypatch: pytest.MonkeyPatch, connection: dict[str, Any], message: str
) -> None:
    with pytest.raises(PermanentError, match=message) as raised:
        _url(monkeypatch, **connection)
    assert "connection 'bc'" in str(raised.value)
    assert "cs-secret-1" not in str(raised.value)
