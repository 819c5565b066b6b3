"""Keeper secrets backend: title mapping per department folder, lazy client, every value masked.

Keeper's SaaS is unreachable here. The fake is the SDK's own test support, not a stand-in: a real
``SecretsManager`` built from ``keeper_secrets_manager_core.mock.MockConfig`` and given the SDK's
``custom_post_function`` hook, answering with ``keeper_secrets_manager_core.mock.Response`` (records
encrypted exactly as the service encrypts them). So the SDK's decryption, folder keys and record
parsing all run for real; only the HTTPS POST is replaced.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

import pytest
from airflow.sdk._shared.secrets_masker import redact
from keeper_secrets_manager_core import SecretsManager, mock

from include.secrets import keeper_backend
from include.secrets.keeper_backend import KeeperBackendError, KeeperSecretsBackend

SUPPORT = "SupportFolderUid000001"
HR = "HrFolderUid00000000001"
CONFIG_ENV = "KSM_CONFIG_UNIT_TEST"


class FakeKeeper:
    """Keeper's get_secret endpoint: answers every POST with the records of ``response``."""

    def __init__(self) -> None:
        self.response = mock.Response()
        self.posts = 0
        self.support = self.response.add_folder(uid=SUPPORT)
        self.hr = self.response.add_folder(uid=HR)

    def add(self, folder: Any, title: str, password: str | None) -> None:
        record = folder.add_record(title=title, record_type="login")
        record.field("login", "svc-orchestrator")
        if password is not None:
            record.field("password", password)

    def post(self, url: str, transmission_key: Any, *_: Any) -> Any:
        self.posts += 1
        return self.response.instance(transmission_key)


@pytest.fixture
def keeper(monkeypatch: pytest.MonkeyPatch) -> FakeKeeper:
    fake = FakeKeeper()
    monkeypatch.setenv(CONFIG_ENV, mock.MockConfig.make_base64())

    def client(**kwargs: Any) -> SecretsManager:
        sdk_client = SecretsManager(custom_post_function=fake.post, **kwargs)
        fake.response.client = sdk_client  # mock.Response encrypts with the client's app key
        return sdk_client

    monkeypatch.setattr(keeper_backend, "SecretsManager", client)
    return fake


def backend(**overrides: Any) -> KeeperSecretsBackend:
    kwargs: dict[str, Any] = {
        "folders": {"support": SUPPORT, "hr": HR},
        "default_department": "support",
        "config_env": CONFIG_ENV,
        **overrides,
    }
    return KeeperSecretsBackend(**kwargs)


def fresh_secret() -> str:
    return "ksm-" + secrets.token_urlsafe(18)


def test_connection_uri_is_returned_and_masked(keeper: FakeKeeper):
    password = fresh_secret()
    uri = f"postgresql://erp:{password}%2Fx@erp.internal:5432/ledger"
    keeper.add(keeper.support, "airflow/connections/erp_db", uri)
    assert redact(f"dsn={uri}") == f"dsn={uri}"  # nothing masks it before the lookup

    value = backend().get_conn_value("erp_db")

    assert value == uri
    assert redact(f"dsn={uri}") == "dsn=***"
    assert redact(f"password is {password}/x") == "password is ***"  # the decoded password on its own


def test_connection_json_becomes_an_airflow_connection(keeper: FakeKeeper):
    password = fresh_secret()
    keeper.add(
        keeper.support,
        "airflow/connections/ticketing",
        json.dumps({"conn_type": "http", "host": "rt.internal", "login": "bot", "password": password}),
    )

    connection = backend().get_connection("ticketing")

    assert (connection.conn_type, connection.host, connection.login) == ("http", "rt.internal", "bot")
    assert connection.password == password
    assert redact(f"token {password}") == "token ***"


def test_variable_is_returned_and_masked(keeper: FakeKeeper):
    value = fresh_secret()
    keeper.add(keeper.support, "airflow/variables/slack_webhook_token", value)

    assert backend().get_variable("slack_webhook_token") == value
    assert redact(f"posting with {value}") == "posting with ***"


def test_unknown_names_are_none(keeper: FakeKeeper):
    keeper.add(keeper.support, "airflow/variables/present", fresh_secret())
    keeper.add(keeper.support, "airflow/variables/no_password", None)
    store = backend()

    assert store.get_conn_value("missing") is None
    assert store.get_variable("missing") is None
    assert store.get_variable("no_password") is None
    assert store.get_connection("missing") is None


def test_departments_are_separate(keeper: FakeKeeper):
    support_value, hr_value = fresh_secret(), fresh_secret()
    keeper.add(keeper.support, "airflow/variables/api_token", support_value)
    keeper.add(keeper.hr, "airflow/variables/api_token", hr_value)
    keeper.add(keeper.hr, "airflow/variables/hris_token", fresh_secret())
    keeper.response.add_record(title="airflow/variables/loose", record_type="login").field(
        "password", "x" * 20
    )
    store = backend()

    assert store.get_variable("api_token") == support_value
    assert store.get_variable("api_token", team_name="hr") == hr_value
    assert store.get_variable("hris_token") is None  # HR's secret is not visible to support
    assert store.get_variable("api_token", team_name="finance") is None  # no folder: no fallback
    assert store.get_variable("loose") is None  # outside every department folder


def test_client_is_lazy_and_records_are_cached(keeper: FakeKeeper):
    keeper.add(keeper.support, "airflow/variables/a_value", fresh_secret())
    store = backend(cache_ttl_seconds=60)
    assert keeper.posts == 0

    store.get_variable("a_value")
    store.get_variable("a_value")
    store.get_conn_value("other")
    assert keeper.posts == 1

    uncached = backend(cache_ttl_seconds=0)
    uncached.get_variable("a_value")
    uncached.get_variable("a_value")
    assert keeper.posts == 3


def test_no_keeper_access_in_init(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv(CONFIG_ENV, raising=False)

    def unreachable(**_: Any) -> None:
        raise AssertionError("SecretsManager built in __init__")

    monkeypatch.setattr(keeper_backend, "SecretsManager", unreachable)
    store = backend()  # Airflow builds backends at start-up: must not need Keeper or its config

    monkeypatch.setattr(keeper_backend, "SecretsManager", SecretsManager)
    with pytest.raises(
        KeeperBackendError,
        match=f"^no Keeper config: set {CONFIG_ENV} to the base64 KSM config or give config_file$",
    ):
        store.get_variable("anything")


def test_duplicate_titles_in_one_folder_are_an_error(keeper: FakeKeeper):
    keeper.add(keeper.hr, "airflow/connections/hris", "https://a:b@hris-one")
    keeper.add(keeper.hr, "airflow/connections/hris", "https://a:b@hris-two")

    with pytest.raises(
        KeeperBackendError,
        match=(
            r"^2 Keeper records titled 'airflow/connections/hris' in the folder of department 'hr'; "
            r"a title must be unique per folder$"
        ),
    ):
        backend().get_conn_value("hris", team_name="hr")


def test_default_department_needs_a_folder():
    with pytest.raises(
        KeeperBackendError, match=r"^default_department 'finance' has no folder; folders: \['hr'\]$"
    ):
        KeeperSecretsBackend(folders={"hr": HR}, default_department="finance")
