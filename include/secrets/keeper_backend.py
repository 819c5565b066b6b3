"""Airflow secrets backend on Keeper Secrets Manager (SEC-2): the company already keeps its secrets in Keeper.

Mapping (one Keeper *shared folder per department*, all shared with the deployment's KSM application)::

    Airflow connection <conn_id>  ->  record titled "airflow/connections/<conn_id>"
    Airflow variable <key>        ->  record titled "airflow/variables/<key>"

in the folder of the department, and the value is the record's ``password`` field: a connection
URI (``postgresql://<user>:<password>@<host>/<db>``) or Airflow connection JSON for connections, the
plain value for variables. The password field is the one Keeper treats as secret (hidden, privacy
screen, rotation).

The department is Airflow's ``team_name`` when Airflow passes one (multi-team: team = department),
otherwise ``default_department``. Only records whose folder is that department's folder count: a
record with the same title in another department's folder, or outside any folder, is never returned,
so departments' secrets stay separate even though one KSM application can see several folders.

Configuration (``[secrets] backend_kwargs``)::

    {"folders": {"support": "<folder uid>", "hr": "<folder uid>"}, "default_department": "support",
     "config_env": "KSM_CONFIG"}

``config_env`` names the environment variable holding the base64 KSM client config (``ksm profile
export``), or ``config_file`` points at a KSM JSON config file; neither the config nor any value
ever appears in airflow.cfg. The client is created on the first lookup, never in ``__init__``: Airflow
builds secrets backends while it starts, and a start must not depend on reaching Keeper. Records are
fetched with one ``get_secrets()`` call and kept ``cache_ttl_seconds`` (Keeper throttles, and every
connection lookup would otherwise download the whole folder again). Every value returned is registered
with Airflow's secrets masker before it leaves this module.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from typing import Any
from urllib.parse import unquote, urlsplit

from airflow.sdk.log import mask_secret
from airflow.secrets import BaseSecretsBackend
from keeper_secrets_manager_core import SecretsManager
from keeper_secrets_manager_core.storage import FileKeyValueStorage, InMemoryKeyValueStorage

log = logging.getLogger(__name__)


class KeeperBackendError(RuntimeError):
    """The backend is misconfigured or Keeper's answer is ambiguous; the message says which."""


def _connection_password(value: str) -> str | None:
    """The password inside a connection URI or JSON, decoded: logs may show it apart from the URI."""
    text = value.strip()
    if text.startswith("{"):
        try:
            password = json.loads(text).get("password")
        except (ValueError, AttributeError):
            return None
        return password if isinstance(password, str) else None
    password = urlsplit(text).password
    return unquote(password) if password else None


class KeeperSecretsBackend(BaseSecretsBackend):
    """Connections and variables from Keeper records by title, per department folder (module docstring)."""

    def __init__(
        self,
        folders: dict[str, str],
        default_department: str | None = None,
        config_env: str = "KSM_CONFIG",
        config_file: str | None = None,
        connections_prefix: str = "airflow/connections",
        variables_prefix: str = "airflow/variables",
        cache_ttl_seconds: float = 30.0,
    ) -> None:
        super().__init__()
        if default_department is not None and default_department not in folders:
            raise KeeperBackendError(
                f"default_department {default_department!r} has no folder; folders: {sorted(folders)}"
            )
        self.folders = dict(folders)
        self.default_department = default_department
        self.config_env = config_env
        self.config_file = config_file
        self.connections_prefix = connections_prefix.rstrip("/")
        self.variables_prefix = variables_prefix.rstrip("/")
        self.cache_ttl_seconds = cache_ttl_seconds
        self._client: SecretsManager | None = None
        self._records: list[Any] = []
        self._fetched_at: float | None = None
        self._lock = threading.Lock()

    def _storage(self) -> Any:
        if self.config_file:
            return FileKeyValueStorage(config_file_location=self.config_file)
        config = os.environ.get(self.config_env)
        if not config:
            raise KeeperBackendError(
                f"no Keeper config: set {self.config_env} to the base64 KSM config or give config_file"
            )
        return InMemoryKeyValueStorage(config)

    @property
    def client(self) -> SecretsManager:
        """The KSM client, created on first use (binding needs no network; fetching does)."""
        if self._client is None:
            self._client = SecretsManager(config=self._storage())
        return self._client

    def _all_records(self) -> list[Any]:
        with self._lock:
            now = time.monotonic()
            if self._fetched_at is None or now - self._fetched_at >= self.cache_ttl_seconds:
                self._records = list(self.client.get_secrets())
                self._fetched_at = now
            return self._records

    def _folder(self, team_name: str | None) -> tuple[str | None, str | None]:
        department = team_name or self.default_department
        return department, self.folders.get(department) if department else None

    def _lookup(self, prefix: str, name: str, team_name: str | None) -> str | None:
        department, folder = self._folder(team_name)
        if folder is None:
            log.warning(
                "Keeper: no folder configured for department %r; lookup of %r skipped", department, name
            )
            return None
        title = f"{prefix}/{name}"
        matches = [r for r in self._all_records() if r.folder_uid == folder and r.title == title]
        if len(matches) > 1:
            raise KeeperBackendError(
                f"{len(matches)} Keeper records titled {title!r} in the folder of department "
                f"{department!r}; a title must be unique per folder"
            )
        if not matches:
            return None
        value = matches[0].password
        if not value:
            log.warning("Keeper record %r has no password field; treated as missing", title)
            return None
        # No name: with a name, the masker only hides values whose *name* looks sensitive.
        mask_secret(value)
        return value

    def get_conn_value(self, conn_id: str, team_name: str | None = None) -> str | None:
        """The connection URI or JSON of ``conn_id``; its password is masked on its own as well."""
        value = self._lookup(self.connections_prefix, conn_id, team_name)
        if value is not None and (password := _connection_password(value)):
            mask_secret(password)
        return value

    def get_variable(self, key: str, team_name: str | None = None) -> str | None:
        return self._lookup(self.variables_prefix, key, team_name)
