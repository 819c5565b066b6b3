"""Canary secrets never leak: not into task logs, component logs (process stdout/stderr), XCom,
rendered fields, mails, ticket entries, audit records, result files, in clear or base64/URL-encoded.

The canaries are the real values in the secrets backend: every tenant credential in Secrets
Manager and the ticketing token of the ``rt_default`` connection. Workflows that read and use
them run first; then every place a value could surface is searched. (Whole-value encodings only:
a secret base64-encoded as part of a longer string has no fixed encoded form to search for.)
"""

from __future__ import annotations

import base64
import json
import sqlite3
from contextlib import closing
from typing import Any
from urllib.parse import quote, quote_plus

import pytest

from devstack.api_client import AirflowApi
from devstack.moto_seed import AUDIT_SIGNING_LOCAL_NAME, secrets_client
from devstack.request_tracker import RequestTracker
from devstack.stack import Stack
from include.audit.store import AuditStore

RUNS = {
    "e2e_ticket_lifecycle": {"tenant": "acme"},
    "support_service_check": {"tenant": "acme"},
    "soc_service_check": {"tenant": "globex"},
    "platform_audit_seal": {},  # reads the audit signing key
}


def _canaries(stack: Stack) -> set[str]:
    client: Any = secrets_client(stack.profile)
    values: set[str] = set()
    for page in client.get_paginator("list_secrets").paginate():
        for entry in page["SecretList"]:
            if entry["Name"].startswith("orchestrator/"):
                secret = json.loads(client.get_secret_value(SecretId=entry["ARN"])["SecretString"])
                values.update(v for v in secret.values() if isinstance(v, str) and len(v) >= 12)
    token = RequestTracker(stack.profile).token
    values.update({token, token.rsplit("-", 1)[-1]})
    # The audit-seal signing key (PEM): the whole of it and its base64 body line.
    pem = stack.profile.local_secret(AUDIT_SIGNING_LOCAL_NAME)
    values.add(pem)
    values.update(line for line in pem.splitlines() if line and not line.startswith("-----"))
    values.add(stack.profile.local_secret("ldap-admin-password"))  # the ldap_default connection
    values.add(stack.profile.local_secret("erp-client-secret"))  # business_central_default
    return values


def _forms(canaries: set[str]) -> dict[str, str]:
    """Each canary in clear and in the encodings a leak would most likely take; form -> label."""
    forms = {}
    for value in canaries:
        raw = value.encode()
        forms[value] = "clear"
        forms[base64.b64encode(raw).decode().rstrip("=")] = "base64"
        forms[base64.urlsafe_b64encode(raw).decode().rstrip("=")] = "base64url"
        for encoded in (quote(value, safe=""), quote_plus(value)):
            if encoded != value:
                forms[encoded] = "url-encoded"
    return forms


@pytest.fixture(scope="module")
def finished_runs(api: AirflowApi) -> dict[str, str]:
    api.wait_for_dags(set(RUNS))
    run_ids = {dag_id: api.trigger(dag_id, conf) for dag_id, conf in RUNS.items()}
    for dag_id, run_id in run_ids.items():
        assert api.wait_for_run(dag_id, run_id, timeout=240)["state"] == "success"
    return run_ids


def test_canaries_absent_from_xcom_rendered_fields_and_logs(
    api: AirflowApi, stack: Stack, finished_runs: dict[str, str]
) -> None:
    canaries = _forms(_canaries(stack))
    assert len(canaries) >= 12
    exposed: list[str] = []
    for dag_id, run_id in finished_runs.items():
        for ti in api.task_instances(dag_id, run_id):
            detail = api.get(f"dags/{dag_id}/dagRuns/{run_id}/taskInstances/{ti['task_id']}")
            places = {
                "rendered fields": json.dumps(detail.get("rendered_fields")),
                "xcom": json.dumps(api.xcom(dag_id, run_id, ti["task_id"])),
            }
            exposed += [
                f"{where} of {dag_id}.{ti['task_id']} ({form})"
                for where, text in places.items()
                for c, form in canaries.items()
                if c in text
            ]
    # The audit trail: every record ever written in this session, as stored.
    with AuditStore(stack.audit_dsn) as audit:
        records = json.dumps(audit.records())
    assert '"kind": "run.triggered"' in records
    exposed += [f"audit records ({form})" for c, form in canaries.items() if c in records]
    # Ticket comments and descriptions as Request Tracker stored them (its database, read-only).
    rt_db = RequestTracker(stack.profile).database
    with closing(sqlite3.connect(f"file:{rt_db}?mode=ro", uri=True)) as conn:
        rows = conn.execute("SELECT Content FROM Attachments WHERE Content IS NOT NULL").fetchall()
    tickets = "\n".join(r[0].decode(errors="replace") if isinstance(r[0], bytes) else str(r[0]) for r in rows)
    assert "Triaged." in tickets  # the lifecycle run's comment: the scan reads real entries
    exposed += [f"ticket entries ({form})" for c, form in canaries.items() if c in tickets]
    # Task logs, process stdout/stderr of every component, mails (.eml), results and indexes.
    suffixes = {".log", ".jsonl", ".json", ".eml", ""}
    files = [p for p in stack.profile.root.rglob("*") if p.is_file() and p.suffix in suffixes]
    files = [p for p in files if "secrets" not in p.parts and p.name != "token" and "pgdata" not in p.parts]
    assert any("dag_id=e2e_ticket_lifecycle" in str(p) for p in files)
    for path in files:
        text = path.read_text(errors="replace")
        exposed += [f"{path} ({form})" for c, form in canaries.items() if c in text]
    assert exposed == []
