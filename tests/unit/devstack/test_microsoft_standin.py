"""The Entra/Graph/Defender stand-in over HTTPS with plain requests: tokens bound to tenant, app and
audience, permissions, the vendor error shapes, the per-app budget (429 + Retry-After), eventual
completion of machine actions, and a request log without secrets."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from devstack.standins.microsoft import (
    DEFENDER_SCOPE,
    GRAPH_SCOPE,
    MACHINE_ISOLATE,
    MACHINE_READ,
    USER_READ,
    MicrosoftStandIn,
    ensure_certificates,
)

TENANT_A = "11111111-1111-4111-8111-111111111111"
TENANT_B = "22222222-2222-4222-8222-222222222222"
SECRET_A = "secret-a-value-1234567890"
SECRET_B = "secret-b-value-0987654321"
CONFIG: dict[str, Any] = {
    TENANT_A: {
        "apps": [
            {
                "client_id": "app-a",
                "client_secret": SECRET_A,
                "roles": [USER_READ, MACHINE_READ, MACHINE_ISOLATE],
            },
            {"client_id": "app-a-ro", "client_secret": SECRET_A, "roles": []},
        ],
        "users": [{"userPrincipalName": "jdoe@a.example", "id": "aaaaaaaa-0000-4000-8000-000000000001"}],
        "machines": [{"id": "m1", "computerDnsName": "ws1.a.example"}],
    },
    TENANT_B: {
        "apps": [{"client_id": "app-b", "client_secret": SECRET_B, "roles": [USER_READ]}],
        "users": [{"userPrincipalName": "eve@b.example", "id": "bbbbbbbb-0000-4000-8000-000000000001"}],
    },
}


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return ensure_certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def standin(tls: Any) -> Iterator[MicrosoftStandIn]:
    with MicrosoftStandIn(
        CONFIG, cert_file=tls.cert_file, key_file=tls.key_file, action_seconds=0.4
    ) as server:
        yield server


def _token(
    server: MicrosoftStandIn, ca: Path, tenant: str, client: str, secret: str, scope: str
) -> requests.Response:
    return requests.post(
        f"{server.base_url}/{tenant}/oauth2/v2.0/token",
        data={
            "grant_type": "client_credentials",
            "client_id": client,
            "client_secret": secret,
            "scope": scope,
        },
        verify=str(ca),
        timeout=10,
    )


def _bearer(
    server: MicrosoftStandIn, ca: Path, tenant: str = TENANT_A, client: str = "app-a", **kw: Any
) -> dict[str, str]:
    secret = kw.get("secret", SECRET_A if tenant == TENANT_A else SECRET_B)
    response = _token(server, ca, tenant, client, secret, kw.get("scope", GRAPH_SCOPE))
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def test_https_only_with_the_generated_ca(standin: MicrosoftStandIn, tls: Any) -> None:
    assert standin.base_url.startswith("https://127.0.0.1:")
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"{standin.base_url}/v1.0/users/x", timeout=5)  # the system trust store does not know it
    assert (tls.key_file.stat().st_mode & 0o777) == 0o600


def test_token_errors_in_entra_shape(standin: MicrosoftStandIn, tls: Any) -> None:
    wrong = _token(standin, tls.ca_file, TENANT_A, "app-a", "nope", GRAPH_SCOPE)
    assert wrong.status_code == 401
    assert wrong.json()["error"] == "invalid_client"
    assert wrong.json()["error_description"].startswith("AADSTS7000215")
    # app-a does not exist in tenant B
    other = _token(standin, tls.ca_file, TENANT_B, "app-a", SECRET_A, GRAPH_SCOPE)
    assert other.status_code == 400
    assert other.json()["error"] == "unauthorized_client"
    assert SECRET_A not in repr(standin.requests)


def test_a_token_sees_only_its_tenant(standin: MicrosoftStandIn, tls: Any) -> None:
    a = _bearer(standin, tls.ca_file)
    ok = requests.get(
        f"{standin.base_url}/v1.0/users/jdoe@a.example", headers=a, verify=str(tls.ca_file), timeout=5
    )
    assert ok.status_code == 200
    assert ok.json()["accountEnabled"] is True
    cross = requests.get(
        f"{standin.base_url}/v1.0/users/bbbbbbbb-0000-4000-8000-000000000001",
        headers=a,
        verify=str(tls.ca_file),
        timeout=5,
    )
    assert cross.status_code == 404
    assert cross.json()["error"]["code"] == "Request_ResourceNotFound"
    assert standin.requests[-1].tenant_id == TENANT_A


def test_audience_and_permissions(standin: MicrosoftStandIn, tls: Any) -> None:
    graph = _bearer(standin, tls.ca_file)
    wrong_audience = requests.get(
        f"{standin.base_url}/api/machines", headers=graph, verify=str(tls.ca_file), timeout=5
    )
    assert wrong_audience.status_code == 401
    read_only = _bearer(standin, tls.ca_file, client="app-a-ro")
    denied = requests.patch(
        f"{standin.base_url}/v1.0/users/jdoe@a.example",
        json={"accountEnabled": False},
        headers=read_only,
        verify=str(tls.ca_file),
        timeout=5,
    )
    assert denied.status_code == 403
    assert denied.json()["error"]["code"] == "Authorization_RequestDenied"


def test_budget_answers_429_with_retry_after(standin: MicrosoftStandIn, tls: Any) -> None:
    standin.budget_per_window, standin.budget_window = 2, 5.0
    headers = _bearer(standin, tls.ca_file)
    url = f"{standin.base_url}/v1.0/users/jdoe@a.example"
    statuses = [requests.get(url, headers=headers, verify=str(tls.ca_file), timeout=5) for _ in range(3)]
    assert [r.status_code for r in statuses] == [200, 200, 429]
    assert 1 <= int(statuses[2].headers["Retry-After"]) <= 5
    assert statuses[2].json()["error"]["code"] == "TooManyRequests"
    # another tenant's app has its own budget
    b = _bearer(standin, tls.ca_file, tenant=TENANT_B, client="app-b")
    assert requests.get(
        f"{standin.base_url}/v1.0/users/eve@b.example", headers=b, verify=str(tls.ca_file), timeout=5
    ).ok


def test_machine_actions_complete_eventually(standin: MicrosoftStandIn, tls: Any) -> None:
    headers = _bearer(standin, tls.ca_file, scope=DEFENDER_SCOPE)
    verify = str(tls.ca_file)
    isolate = requests.post(
        f"{standin.base_url}/api/machines/m1/isolate",
        json={"Comment": "alert 1", "IsolationType": "Selective"},
        headers=headers,
        verify=verify,
        timeout=5,
    )
    assert isolate.status_code == 201
    action = isolate.json()
    assert (action["type"], action["status"], action["scope"]) == ("Isolate", "Pending", "Selective")
    again = requests.post(
        f"{standin.base_url}/api/machines/m1/isolate",
        json={"Comment": "x"},
        headers=headers,
        verify=verify,
        timeout=5,
    )
    assert again.status_code == 400
    assert again.json()["error"]["code"] == "ActiveRequestAlreadyExists"
    assert not standin.machine_isolated(TENANT_A, "m1")
    time.sleep(0.5)
    done = requests.get(
        f"{standin.base_url}/api/machineactions/{action['id']}", headers=headers, verify=verify, timeout=5
    )
    assert done.json()["status"] == "Succeeded"
    assert standin.machine_isolated(TENANT_A, "m1")
    listed = requests.get(
        f"{standin.base_url}/api/machineactions",
        params={"$filter": "machineId eq 'm1'"},
        headers=headers,
        verify=verify,
        timeout=5,
    )
    assert [a["id"] for a in listed.json()["value"]] == [action["id"]]
