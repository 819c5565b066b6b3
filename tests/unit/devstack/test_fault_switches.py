"""The fault switches the failed-change e2e tests turn on in the stack's stand-ins, each against the
real stand-in on 127.0.0.1: the Business Central stand-in refuses (a 4xx in its error shape, nothing
carried out) and the devstack's moto server denies Identity Center calls; both switch off again.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
import requests
from botocore.exceptions import ClientError
from moto.moto_server.werkzeug_app import DomainDispatcherApplication
from moto.server import ThreadedMotoServer

from devstack.standins import moto_server
from devstack.standins.erp import API_SCOPE, BusinessCentralStandIn

STORE = "d-1234567890"


# --- Business Central ------------------------------------------------------------------------------
@pytest.fixture
def erp() -> Iterator[tuple[BusinessCentralStandIn, requests.Session, str]]:
    with BusinessCentralStandIn() as standin:
        token = requests.post(
            standin.token_url,
            data={
                "grant_type": "client_credentials",
                "client_id": standin.client_id,
                "client_secret": standin.client_secret,
                "scope": API_SCOPE,
            },
            timeout=10,
        )
        token.raise_for_status()
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
        yield standin, session, f"{standin.base_url}{standin.api_path}/companies({standin.company_id})"


def _create(session: requests.Session, api: str) -> requests.Response:
    return session.post(
        f"{api}/salesInvoices",
        json={"customerNumber": "10000", "externalDocumentNumber": "acme/CT-1/M1"},
        timeout=10,
    )


def test_the_erp_refuses_while_switched_on_and_carries_nothing_out(
    erp: tuple[BusinessCentralStandIn, requests.Session, str],
) -> None:
    standin, session, api = erp
    fault = {"mode": "refuse", "times": 5, "method": "POST", "path_contains": "/salesInvoices", "status": 403}
    assert (
        requests.post(
            f"{standin.base_url}/_faults", json={**fault, "message": "Customer blocked."}, timeout=10
        ).status_code
        == 204
    )

    refused = _create(session, api)
    assert refused.status_code == 403
    error = refused.json()["error"]
    assert error["code"] == "Application_DialogException"
    assert error["message"].startswith("Customer blocked.  CorrelationId:  ")
    assert standin.invoices == {}  # not carried out
    assert session.get(f"{api}/salesInvoices", timeout=10).status_code == 200  # a GET is not matched

    assert requests.delete(f"{standin.base_url}/_faults", timeout=10).status_code == 204
    assert _create(session, api).status_code == 201
    assert len(standin.invoices) == 1


def test_an_erp_fault_runs_out_after_its_times(
    erp: tuple[BusinessCentralStandIn, requests.Session, str],
) -> None:
    standin, session, api = erp
    requests.post(
        f"{standin.base_url}/_faults", json={"mode": "refuse", "times": 1}, timeout=10
    ).raise_for_status()
    assert _create(session, api).status_code == 400
    assert _create(session, api).status_code == 201


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param({"mode": "explode"}, id="unknown-mode"),
        pytest.param({"mode": "refuse", "status": 500}, id="refusal-not-4xx"),
        pytest.param({"mode": "refuse", "status": 429}, id="refusal-is-throttling"),
        pytest.param({"mode": "refuse", "times": 0}, id="no-times"),
        pytest.param({"mode": "refuse", "method": 1}, id="bad-match"),
        pytest.param({"times": 1}, id="no-mode"),
    ],
)
def test_a_bad_erp_fault_is_refused(
    erp: tuple[BusinessCentralStandIn, requests.Session, str], spec: Any
) -> None:
    standin, _, _ = erp
    answer = requests.post(f"{standin.base_url}/_faults", json=spec, timeout=10)
    assert answer.status_code == 400
    assert answer.json()["message"].startswith("bad fault")
    assert standin._faults == []


# --- the devstack's moto server ---------------------------------------------------------------------
@pytest.fixture
def moto(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Any]]:
    """A moto server in this process with the devstack's switch (undone afterwards)."""
    monkeypatch.setattr(DomainDispatcherApplication, "__call__", DomainDispatcherApplication.__call__)
    moto_server.install_fault_switch()
    moto_server.install_fault_switch()  # once is enough: a second install changes nothing
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    client = boto3.client(
        "identitystore",
        endpoint_url=url,
        region_name="eu-west-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    try:
        yield url, client
    finally:
        moto_server.FAULTS.clear()
        server.stop()


def _code(call: Any) -> str:
    try:
        call()
    except ClientError as error:
        return str(error.response["Error"]["Code"])
    return ""


def test_identity_center_calls_are_denied_while_switched_on(moto: tuple[str, Any]) -> None:
    url, client = moto

    def update() -> Any:
        return client.update_user(
            IdentityStoreId=STORE,
            UserId="u-1",
            Operations=[{"AttributePath": "userType", "AttributeValue": "X"}],
        )

    def listing() -> Any:
        return client.list_users(IdentityStoreId=STORE)

    before = _code(listing)
    assert before != "AccessDeniedException"
    fault = {"service": "identitystore", "mode": "denied", "operations": ["UpdateUser"]}
    assert requests.post(f"{url}/_faults", json=fault, timeout=10).status_code == 204
    assert requests.get(f"{url}/_faults", timeout=10).json()["identitystore"]["operations"] == ["UpdateUser"]

    assert _code(update) == "AccessDeniedException"
    assert _code(listing) == before  # another operation: not matched

    requests.post(f"{url}/_faults", json={"service": "identitystore", "mode": "denied"}, timeout=10)
    assert _code(listing) == "AccessDeniedException"  # every operation

    assert requests.delete(f"{url}/_faults", timeout=10).status_code == 204
    assert _code(listing) == before
    assert requests.get(f"{url}/_faults", timeout=10).json() == {}


def test_a_moto_fault_runs_out_after_its_times(moto: tuple[str, Any]) -> None:
    url, client = moto
    spec = {"service": "identitystore", "mode": "denied", "times": 1}
    requests.post(f"{url}/_faults", json=spec, timeout=10).raise_for_status()
    assert _code(lambda: client.list_users(IdentityStoreId=STORE)) == "AccessDeniedException"
    assert _code(lambda: client.list_users(IdentityStoreId=STORE)) != "AccessDeniedException"


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param({"service": "iam", "mode": "denied"}, id="other-service"),
        pytest.param({"service": "identitystore", "mode": "slow"}, id="unknown-mode"),
        pytest.param({"service": "identitystore", "mode": "denied", "times": 0}, id="no-times"),
        pytest.param(
            {"service": "identitystore", "mode": "denied", "operations": "UpdateUser"}, id="not-a-list"
        ),
    ],
)
def test_a_bad_moto_fault_is_refused(moto: tuple[str, Any], spec: Any) -> None:
    url, _ = moto
    answer = requests.post(f"{url}/_faults", json=spec, timeout=10)
    assert answer.status_code == 400
    assert answer.json()["message"].startswith("bad fault")
    assert requests.get(f"{url}/_faults", timeout=10).json() == {}
