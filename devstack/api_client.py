"""A small client for Airflow's REST API (v2) as a person or a script would use it.

Used by the end-to-end tests and the benchmarks; authenticates against the FAB auth manager's
``/auth/token`` endpoint and renews the token when it expires.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import requests

if TYPE_CHECKING:
    from devstack.totp import Authenticator

TERMINAL_RUN_STATES = frozenset({"success", "failed"})


class ApiError(RuntimeError):
    def __init__(self, method: str, path: str, response: requests.Response) -> None:
        super().__init__(f"{method} {path} -> {response.status_code}: {response.text[:500]}")
        self.status_code = response.status_code
        self.body = response.text


class AirflowApi:
    def __init__(
        self,
        base_url: str,
        username: str,
        password: str,
        timeout: float = 30,
        *,
        authenticator: Authenticator | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.username = username
        self._password = password
        self.timeout = timeout
        # The user's enrolled TOTP token: every approval answer carries its next code.
        self.authenticator = authenticator
        self.session = requests.Session()
        # Bursts trigger from 16 threads (bench/burst.py); urllib3's default pool keeps 10.
        self.session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=32))
        self._token: str | None = None

    def _login(self) -> None:
        response = self.session.post(
            f"{self.base_url}/auth/token",
            json={"username": self.username, "password": self._password},
            timeout=self.timeout,
        )
        if response.status_code not in (200, 201):
            raise ApiError("POST", "/auth/token", response)
        self._token = response.json()["access_token"]

    def request(
        self, method: str, path: str, *, expect: tuple[int, ...] = (200,), api: str = "api/v2", **kwargs: Any
    ) -> Any:
        """Call ``<base_url>/<api>/<path>``; raise :class:`ApiError` unless the status is in ``expect``."""
        if self._token is None:
            self._login()
        url = f"{self.base_url}/{api}/{path.lstrip('/')}"

        def send() -> requests.Response:
            headers = {"Authorization": f"Bearer {self._token}"}
            return self.session.request(method, url, headers=headers, timeout=self.timeout, **kwargs)

        response = send()
        if response.status_code == 401:  # the token expired: log in again, once
            self._login()
            response = send()
        if response.status_code not in expect:
            raise ApiError(method, path, response)
        return response.json() if response.content else None

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params)

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None, run_id: str | None = None) -> str:
        body: dict[str, Any] = {"logical_date": None, "conf": conf or {}}
        if run_id:
            body["dag_run_id"] = run_id
        return self.request("POST", f"dags/{dag_id}/dagRuns", json=body)["dag_run_id"]

    def run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return self.get(f"dags/{dag_id}/dagRuns/{run_id}")

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        return self.get(f"dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        """task id -> state of every task instance of a run."""
        return {ti["task_id"]: ti["state"] for ti in self.task_instances(dag_id, run_id)}

    def xcom(
        self, dag_id: str, run_id: str, task_id: str, key: str = "return_value", map_index: int = -1
    ) -> Any:
        path = f"dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}"
        entry = self.get(path, map_index=map_index) if map_index >= 0 else self.get(path)
        return entry["value"]

    def create_user(self, username: str, password: str, roles: list[str]) -> None:
        """Create a FAB user with ``roles`` (needs an admin client)."""
        body = {
            "username": username,
            "email": f"{username}@secops.example",
            "first_name": username,
            "last_name": "Test",
            "roles": [{"name": role} for role in roles],
            "password": password,
        }
        self.request("POST", "users", api="auth/fab/v1", json=body, expect=(200, 201))

    def hitl_path(self, dag_id: str, run_id: str, task_id: str) -> str:
        return f"dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/-1/hitlDetails"

    def answer(
        self,
        dag_id: str,
        run_id: str,
        task_id: str,
        option: str,
        comment: str | None = None,
        *,
        otp: str | None = None,
        expect: tuple[int, ...] = (200,),
    ) -> Any:
        """Answer an approval request as this client's user, with a one-time code: ``otp`` if
        given (``""``: none), else the next code of the client's authenticator."""
        params: dict[str, Any] = {} if comment is None else {"comment": comment}
        if otp is None and self.authenticator is not None:
            otp = self.authenticator.next_code()
        if otp:
            params["otp"] = otp
        body: dict[str, Any] = {"chosen_options": [option]}
        if params:
            body["params_input"] = params
        return self.request("PATCH", self.hitl_path(dag_id, run_id, task_id), json=body, expect=expect)

    def wait_for_request(
        self, dag_id: str, run_id: str, task_id: str, *, timeout: float = 120, poll: float = 0.2
    ) -> dict[str, Any]:
        """Wait until ``task_id`` waits for an answer (deferred, request written); return the request."""
        deadline = time.monotonic() + timeout
        path = f"dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}"
        while True:
            state = self.get(path)["state"]
            if state in ("deferred", "awaiting_input"):
                return self.get(self.hitl_path(dag_id, run_id, task_id))
            if state in ("success", "failed", "skipped", "upstream_failed") or time.monotonic() > deadline:
                raise TimeoutError(f"{dag_id}/{run_id}/{task_id} is {state}, not waiting for an answer")
            time.sleep(poll)

    def wait_for_run(
        self, dag_id: str, run_id: str, *, timeout: float = 120, poll: float = 0.5
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            run = self.run(dag_id, run_id)
            if run["state"] in TERMINAL_RUN_STATES:
                return run
            if time.monotonic() > deadline:
                raise TimeoutError(f"run {dag_id}/{run_id} still {run['state']} after {timeout:.0f}s")
            time.sleep(poll)

    def wait_for_dags(self, dag_ids: set[str], *, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                seen = {d["dag_id"] for d in self.get("dags", limit=1000)["dags"]}
            except requests.exceptions.Timeout:
                # A poll, not a verdict: on a loaded machine a just-started API server can stall
                # for tens of seconds (task start-up, first parses); the deadline decides.
                seen = set()
            if dag_ids <= seen:
                return
            if time.monotonic() > deadline:
                errors = self.get("importErrors")["import_errors"]
                raise TimeoutError(
                    f"DAGs not parsed after {timeout:.0f}s: {sorted(dag_ids - seen)}; import errors: {errors}"
                )
            time.sleep(1)
