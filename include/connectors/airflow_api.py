"""Airflow's own public REST API, as a service user: what the approval verifier reads answers with.

Connection ``airflow_api`` (type ``http``): host = the API server's base URL (``http://host:port``,
or host/port/schema given apart, default scheme ``http``), login/password = a user with read
access to HITL details and users (``approval-verifier``, role ``approval_verifier``, created by
``policy-sync``). The hook logs in with them once (``POST /auth/token``) and sends the JWT it gets
as a bearer token; neither the password nor the token reaches a log, an error or an XCom.

Why the public API and not the Task SDK: the Execution API lets a task read only its *own* HITL
detail, and tasks have no metadata database access in Airflow 3 (see
:mod:`include.approvals.verify`).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property
from typing import Any
from urllib.parse import quote

import requests

from include.connectors.base import HttpConnectorHook
from include.connectors.errors import TransientError

API_CONN_ID = "airflow_api"
TOKEN_PATH = "auth/token"  # noqa: S105 (a path, not a secret)


def _part(value: str) -> str:
    """One path segment, every reserved character quoted (``/`` in a run id included)."""
    return quote(value, safe="")


class AirflowApiHook(HttpConnectorHook):
    """Reads Airflow's record of approval requests (HITL details) and of the users who answer them.

    It is the verifier's :class:`~include.approvals.verify.ApprovalRecords`. 429, 5xx and connection
    errors are retried by the connector base (a restarting API server), other errors fail at once.

    :param conn_id: the API connection; default ``airflow_api``.
    :param tenant: for the rate limit; the platform's by default (the verifier reads for every tenant).
    """

    system = "airflow_api"
    default_conn_name = API_CONN_ID
    conn_type = "http"
    hook_name = "Airflow REST API"
    # The base's URL (HttpConnectorHook.base_url); a bare host is the local API server's, plain HTTP.
    default_scheme = "http"

    def __init__(self, conn_id: str | None = None, *, tenant: str = "platform", **kwargs: Any) -> None:
        super().__init__(conn_id, tenant=tenant, **kwargs)

    @cached_property
    def timeout(self) -> float:
        return float(self.extras.get("timeout_seconds", 15))

    def auth_headers(self) -> dict[str, str]:
        return {}  # the bearer token comes from the login in before_send()

    def before_send(self) -> None:
        """Log in once per hook, before its first request; the token then rides on the session."""
        if "Authorization" in self.session.headers:
            return
        login = self.connection.login
        try:
            response = self.session.post(
                f"{self.base_url}/{TOKEN_PATH}",
                json={"username": login, "password": self.connection.password},
                timeout=self.timeout,
            )
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise TransientError(
                f"{type(exc).__name__} calling POST {TOKEN_PATH}", system=self.system, operation="login"
            ) from None
        if response.status_code not in (200, 201):
            # Not the service's text: a failed login answer may echo what was sent.
            message = f"login as {login!r} at {self.base_url} failed (HTTP {response.status_code})"
            self.raise_for(response, message, "login")
        self.session.headers["Authorization"] = f"Bearer {response.json()['access_token']}"

    def _get(self, path: str, operation: str) -> Any:
        """The JSON at ``path``, or ``None`` for a 404."""
        response = self.request("GET", path, operation=operation, expect=(200, 404))
        return None if response.status_code == 404 else response.json()

    def hitl_detail(self, dag_id: str, run_id: str, task_id: str) -> Mapping[str, Any] | None:
        """The HITL detail (request and answer) of a task's latest try, or ``None`` if it has none.

        :param dag_id: the DAG.
        :param run_id: the run.
        :param task_id: the gate task (not mapped: map index ``-1``).
        """
        dag, run, task = (_part(part) for part in (dag_id, run_id, task_id))
        path = f"api/v2/dags/{dag}/dagRuns/{run}/taskInstances/{task}/-1/hitlDetails"
        return self._get(path, "hitl_detail")

    def roles_of(self, username: str) -> set[str]:
        """The roles of a user (FAB auth manager); none for an unknown user.

        :param username: the user's name as the auth manager knows it.
        """
        user = self._get(f"auth/fab/v1/users/{_part(username)}", "user_roles")
        return {str(role["name"]) for role in (user or {}).get("roles") or ()}
