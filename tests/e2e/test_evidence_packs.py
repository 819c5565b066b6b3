"""Evidence pack delivery on the real stack: only auditors may ask for a pack; an on-demand pack of
one tenant lands in the evidence bucket under Object Lock, verifies offline, holds nothing of
another tenant, and its security contact gets the notice.

Records of both tenants are appended to the audit store (as the audit writer, the way every
component appends), sealed by ``platform_audit_seal``, then an auditor triggers
``platform_evidence_packs`` for acme over exactly that window through the REST API.
"""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from devstack import chromium
from devstack.api_client import AirflowApi, ApiError
from devstack.config import MOTO_ACCESS_KEY, MOTO_SECRET_KEY, REGION
from devstack.stack import Stack
from devstack.standins.smtp import read_messages
from include.audit.export import read_public_keys
from include.audit.store import AuditStore
from tests.e2e.conftest import sign_up

DAG = "platform_evidence_packs"
SEAL = "platform_audit_seal"
TASK = "build_store_tell"
USERS = {
    "ada_evidence_auditor": ["auditor"],
    "pat_evidence_platform": ["platform_operator", "platform_approver"],
    "sam_evidence_soc": ["soc_operator"],
}
ATTACK = "<script>document.title='pwned'</script>"
SEVEN_YEARS = timedelta(days=2557)


@pytest.fixture(scope="module")
def users(stack: Stack, api: AirflowApi) -> dict[str, AirflowApi]:
    api.wait_for_dags({DAG, SEAL})
    return sign_up(stack, USERS, backup_tokens=0)


@pytest.fixture(scope="module")
def s3(stack: Stack) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=stack.profile.moto_url,
        region_name=REGION,
        aws_access_key_id=MOTO_ACCESS_KEY,
        aws_secret_access_key=MOTO_SECRET_KEY,
    )


def _runs_of(api: AirflowApi) -> list[dict[str, Any]]:
    return api.get(f"dags/{DAG}/dagRuns")["dag_runs"]


def test_only_auditors_may_trigger(api: AirflowApi, users: dict[str, AirflowApi]) -> None:
    before = len(_runs_of(api))
    for name in ("pat_evidence_platform", "sam_evidence_soc"):
        with pytest.raises(ApiError) as refused:
            users[name].trigger(DAG, {"tenant": "acme"})
        assert refused.value.status_code == 403, name
    # the platform's own staff can see the workflow, but not start it
    assert users["pat_evidence_platform"].get(f"dags/{DAG}")["dag_id"] == DAG
    assert len(_runs_of(api)) == before


def _event(kind: str, tenant: str, run: str, **details: Any) -> dict[str, Any]:
    return {
        "kind": kind,
        "actor": "e2e_evidence",
        "domain": "soc",
        "tenant": tenant,
        "correlation_id": f"EVID-{run}",
        "dag_id": "soc_contain_host",
        "run_id": run,
        "task_id": "approve_host_isolate",
        "subject": run,
        "details": details,
    }


@pytest.fixture(scope="module")
def pack(stack: Stack, api: AirflowApi, users: dict[str, AirflowApi], s3: Any) -> dict[str, Any]:
    """The on-demand pack of acme over a sealed window holding records of acme and globex."""
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=1)
    with AuditStore(stack.audit_dsn) as audit:
        acme = [
            audit.append(_event("run.triggered", "acme", "e2e-evidence-1", how="ui")),
            audit.append(
                _event(
                    "approval.answered",
                    "acme",
                    "e2e-evidence-1",
                    action="isolate host",
                    outcome="approved",
                    comment=ATTACK,
                )
            ),
            audit.append(
                _event("run.finished", "acme", "e2e-evidence-1", state="success", duration_seconds=42.0)
            ),
        ]
        globex = audit.append(_event("run.triggered", "globex", "e2e-evidence-2", how="ui"))
    # The window ends before the seal: a pack is built only of a period sealed to its end (any
    # record of it, whoever's, after the last checkpoint refuses the build), and the seal's own
    # records come after its checkpoint.
    end = datetime.now(UTC)
    seal = api.trigger(SEAL, {})
    assert api.wait_for_run(SEAL, seal, timeout=180)["state"] == "success"
    conf = {
        "tenant": "acme",
        "period_start": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "period_end": end.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
    }
    run_id = users["ada_evidence_auditor"].trigger(DAG, conf)
    assert api.wait_for_run(DAG, run_id, timeout=180)["state"] == "success", api.task_states(DAG, run_id)
    result = api.xcom(DAG, run_id, TASK, map_index=0)
    with pytest.raises(ApiError):  # exactly one pack: no second mapped task
        api.xcom(DAG, run_id, TASK, map_index=1)
    return {"result": result, "acme": [r.seq for r in acme], "globex": globex.seq, "run_id": run_id}


def test_on_demand_pack_is_locked_and_cannot_be_deleted(s3: Any, pack: dict[str, Any]) -> None:
    result = pack["result"]
    assert result["tenant"] == "acme"
    listed = s3.list_object_versions(Bucket=result["bucket"], Prefix="evidence/")["Versions"]
    assert listed
    assert {v["Key"].split("/")[1] for v in listed} == {"acme"}, "only acme's packs in this session"
    mine = [v for v in listed if v["Key"].startswith(result["prefix"])]
    assert {v["Key"].removeprefix(result["prefix"]) for v in mine} >= {
        "manifest.json",
        "records.jsonl",
        "report.html",
    }
    for version in mine:
        head = s3.head_object(Bucket=result["bucket"], Key=version["Key"], VersionId=version["VersionId"])
        assert head["ObjectLockMode"] == "COMPLIANCE"
        assert head["ObjectLockRetainUntilDate"] > datetime.now(UTC) + SEVEN_YEARS - timedelta(days=1)
    first = {"Bucket": result["bucket"], "Key": mine[0]["Key"], "VersionId": mine[0]["VersionId"]}
    with pytest.raises(ClientError) as refused:
        s3.delete_object(**first)
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_pack_verifies_offline_and_holds_only_acme(
    stack: Stack, s3: Any, pack: dict[str, Any], tmp_path: Path
) -> None:
    from include.evidence.verify import verify_pack

    result = pack["result"]
    folder = tmp_path / "pack"
    for item in s3.list_objects_v2(Bucket=result["bucket"], Prefix=result["prefix"])["Contents"]:
        target = folder / item["Key"].removeprefix(result["prefix"])
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(s3.get_object(Bucket=result["bucket"], Key=item["Key"])["Body"].read())
    keys = read_public_keys(s3, f"orchestrator-audit-{stack.profile.name}")
    report = verify_pack(folder, keys)
    assert report.ok, str(report)
    records = [json.loads(line) for line in (folder / "records.jsonl").read_text().splitlines()]
    assert {r["tenant"] for r in records} == {"acme"}
    seqs = {r["seq"] for r in records}
    assert set(pack["acme"]) <= seqs
    assert pack["globex"] not in seqs
    html = (folder / "report.html").read_text()
    assert "ACME Corp" in html
    assert "Globex" not in html
    assert "&lt;script&gt;document.title=" in html
    assert ATTACK not in html
    if chromium.BINARY.exists():  # the real pack's page, for a look (the unit test asserts the render)
        shot = stack.profile.root / "results" / "evidence-report.png"
        shot.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                str(chromium.BINARY),
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                f"--user-data-dir={tmp_path / 'c'}",
                f"--screenshot={shot}",
                "--window-size=1100,1400",
                (folder / "report.html").as_uri(),
            ],
            capture_output=True,
            timeout=120,
            check=True,
        )
        assert shot.stat().st_size > 10_000


def test_security_contact_is_told_where_the_pack_is(stack: Stack, pack: dict[str, Any]) -> None:
    result = pack["result"]
    assert result["notice"] == {"via": "mail", "to": "security@acme.example"}
    mails = [m for m in read_messages(stack.profile.maildir) if "security@acme.example" in m.rcpt_tos]
    bodies = [m.body() for m in mails if result["manifest_sha256"] in m.body()]
    assert len(bodies) == 1
    assert f"s3://{result['bucket']}/{result['prefix']}" in bodies[0]
    assert not [m for m in read_messages(stack.profile.maildir) if "ciso@globex.example" in m.rcpt_tos]
