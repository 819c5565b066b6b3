"""The audit trail of a real run: written by the platform, traced back from the ticket, sealed,
exported under Object Lock and verified.

One SOC containment from a ticket (e2e_audit_story: open ticket, approval gate with the ticket,
privileged step, evidence comment), triggered by an operator and approved by a SOC lead through
the REST API. Nothing in the DAG writes audit records: the listener plugin, the gate, its trigger
and the ticket operators do. Then the sealing workflow (platform_audit_seal) runs as it would on
its schedule, and `audit verify` and `audit trace` are run as an auditor would.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from bench.audit_overhead import measure, report
from devstack.api_client import AirflowApi, ApiError
from devstack.config import MOTO_ACCESS_KEY, MOTO_SECRET_KEY, REGION
from devstack.moto_seed import AUDIT_SIGNING_LOCAL_NAME, AUDIT_SIGNING_SECRET, secrets_client
from devstack.stack import Stack
from include.audit.export import read_public_keys
from include.audit.signing import Ed25519Signer
from include.audit.store import AuditStore
from include.cli.__main__ import main as cli_main
from tests.e2e.conftest import sign_up

DAG = "e2e_audit_story"
SEAL = "platform_audit_seal"
GATE = "approve_host_isolate"
USERS = {"ava_audit_op": ["soc_operator", "soc_lead"], "ali_audit_lead": ["soc_lead"]}
TASKS = ("open_ticket", GATE, "isolate_host", "evidence")


@pytest.fixture(scope="module")
def story(stack: Stack, api: AirflowApi) -> dict[str, Any]:
    """The finished run: its id, ticket id and every audit record of it."""
    api.wait_for_dags({DAG, SEAL})
    users = sign_up(stack, USERS)
    run_id = users["ava_audit_op"].trigger(DAG, {"host": "ws-0099", "tenant": "globex"})
    users["ali_audit_lead"].wait_for_request(DAG, run_id, GATE)
    with pytest.raises(ApiError) as refused:  # four-eyes: she triggered it
        users["ava_audit_op"].answer(DAG, run_id, GATE, "Approve", comment="my own")
    assert refused.value.status_code == 403
    users["ali_audit_lead"].answer(DAG, run_id, GATE, "Approve", comment="contain it, ticket has the IOC")
    assert api.wait_for_run(DAG, run_id, timeout=180)["state"] == "success"
    ticket_id = str(api.xcom(DAG, run_id, "open_ticket")["id"])
    with AuditStore(stack.audit_dsn) as audit:
        everything = audit.records()
    records = [r for r in everything if r["run_id"] == run_id]
    refusals = [r for r in everything if r["kind"] == "policy.violation" and r["actor"] == "ava_audit_op"]
    return {"run_id": run_id, "ticket_id": ticket_id, "records": records, "refusals": refusals}


def _of(records: list[dict[str, Any]], kind: str, task_id: str | None = None) -> list[dict[str, Any]]:
    return [r for r in records if r["kind"] == kind and (task_id is None or r["task_id"] == task_id)]


def _rt(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r["details"].get("system") == "request_tracker"]


def test_platform_writes_the_whole_story_of_a_run(story: dict[str, Any]) -> None:
    records, ticket_id = story["records"], story["ticket_id"]
    assert {r["correlation_id"] for r in records} == {records[0]["correlation_id"]}
    assert {r["domain"] for r in records} == {"soc"}

    (triggered,) = _of(records, "run.triggered")
    assert triggered["actor"] == "ava_audit_op"
    assert triggered["details"]["how"] == "rest_api"
    assert triggered["details"]["bundle_name"] == "e2e-dags"
    assert triggered["tenant"] == "globex"

    (requested,) = _of(records, "approval.requested", GATE)
    assert requested["details"]["any_of"] == ["soc_lead", "soc_oncall"]
    assert requested["details"]["excluded"] == ["ava_audit_op"]
    assert requested["details"]["ticket_id"] == ticket_id
    (answered,) = _of(records, "approval.answered", GATE)
    assert answered["actor"] == "ali_audit_lead"
    assert answered["details"]["outcome"] == "approved"
    assert answered["details"]["option"] == "Approve"
    assert answered["details"]["comment"] == "contain it, ticket has the IOC"

    (created,) = _rt(_of(records, "side_effect", "open_ticket"))
    assert created["details"]["operation"] == "create_ticket"
    assert created["details"]["ticket_id"] == ticket_id
    assert created["details"]["created"] is True
    assert created["tenant"] == "globex"
    (evidence,) = _rt(_of(records, "side_effect", "evidence"))
    assert evidence["details"]["operation"] == "comment"
    assert evidence["details"]["ticket_id"] == ticket_id
    # globex keeps its own Jira (tenants.yaml): each RT step's mirror is on the trail too, after it
    mirrored = [r for r in _of(records, "side_effect") if r["details"]["system"] == "jira"]
    assert [(r["task_id"], r["details"]["operation"]) for r in mirrored] == [
        ("open_ticket", "mirror_create_ticket"),
        ("evidence", "mirror_comment"),
    ]
    assert {(r["details"]["project"], r["details"]["ticket_id"], r["tenant"]) for r in mirrored} == {
        ("GLOBEX", ticket_id, "globex")
    }
    assert created["seq"] < mirrored[0]["seq"]
    assert evidence["seq"] < mirrored[1]["seq"]

    finished = {r["task_id"]: r["details"]["state"] for r in _of(records, "task.finished")}
    assert finished == dict.fromkeys(TASKS, "success")
    (run_finished,) = _of(records, "run.finished")
    assert run_finished["details"]["state"] == "success"
    assert run_finished["details"]["tasks"] == dict.fromkeys(TASKS, "success")
    # The refused self-approval is on the trail as a policy violation, naming the rule.
    (refusal,) = story["refusals"]
    assert refusal["details"]["rule"] == "four-eyes"
    assert "not:ava_audit_op" in refusal["details"]["assigned"]
    # In causal order on the chain.
    seqs = [r["seq"] for r in (triggered, created, requested, answered, evidence, run_finished)]
    assert seqs == sorted(seqs)


def test_trace_from_the_ticket_tells_run_approvals_and_changes(
    stack: Stack, story: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli_main(["audit", "trace", story["ticket_id"], "--dsn", stack.audit_dsn, "--tenant", "globex"])
    text = capsys.readouterr().out
    assert code == 0, text
    assert "ticket id" in text
    assert story["run_id"] in text
    assert "ali_audit_lead" in text
    assert "approved" in text
    assert "create_ticket" in text
    assert "comment" in text
    assert "own hashes OK" in text

    code = cli_main(["audit", "trace", story["ticket_id"], "--dsn", stack.audit_dsn, "--json"])
    document = json.loads(capsys.readouterr().out)
    assert code == 0
    assert document["correlation_ids"] == [story["records"][0]["correlation_id"]]
    traced = {r["seq"] for r in document["records"]}
    assert {r["seq"] for r in story["records"]} <= traced

    # Per tenant: the ticket belongs to globex; acme's view of it is empty.
    assert cli_main(["audit", "trace", story["ticket_id"], "--dsn", stack.audit_dsn, "--tenant", "acme"]) == 1


def test_sealing_exports_under_object_lock_and_the_chain_verifies(
    stack: Stack, api: AirflowApi, story: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_id = api.trigger(SEAL, {})
    assert api.wait_for_run(SEAL, run_id, timeout=180)["state"] == "success"
    result = api.xcom(SEAL, run_id, "seal_export_verify")
    assert result["ok"] is True
    last_story_seq = max(r["seq"] for r in story["records"])
    with AuditStore(stack.audit_dsn) as audit:
        checkpoints = audit.checkpoints()
    assert checkpoints
    assert checkpoints[-1]["last_seq"] >= last_story_seq

    s3: Any = boto3.client(
        "s3",
        endpoint_url=stack.profile.moto_url,
        region_name=REGION,
        aws_access_key_id=MOTO_ACCESS_KEY,
        aws_secret_access_key=MOTO_SECRET_KEY,
    )
    bucket = f"orchestrator-audit-{stack.profile.name}"
    everything = s3.list_object_versions(Bucket=bucket, Prefix="audit/")["Versions"]
    versions = [v for v in everything if v["Key"].endswith(".jsonl")]  # segments, not public keys
    covered = max(int(v["Key"].rsplit("-", 1)[1].removesuffix(".jsonl")) for v in versions)
    assert covered >= last_story_seq
    first = {"Bucket": bucket, "Key": versions[0]["Key"], "VersionId": versions[0]["VersionId"]}
    assert s3.head_object(**first)["ObjectLockMode"] == "COMPLIANCE"  # (moto: GetObjectRetention 500s)
    with pytest.raises(ClientError) as refused:
        s3.delete_object(**first)
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403

    # The key the seal signed with is the audit-seal secret's, and its public half is in the bucket.
    signer = Ed25519Signer(private_key_pem=stack.profile.local_secret(AUDIT_SIGNING_LOCAL_NAME).encode())
    assert result["key_id"] == signer.key_id
    assert {c["algorithm"] for c in checkpoints[-1:]} == {"ed25519"}
    assert signer.key_id in read_public_keys(s3, bucket)
    public_key = tmp_path / "audit-public.pem"
    public_key.write_bytes(s3.get_object(Bucket=bucket, Key=result["public_key"])["Body"].read())

    assert cli_main(["audit", "verify", "--dsn", stack.audit_dsn, "--public-key", str(public_key)]) == 0
    verdict = capsys.readouterr().out
    assert verdict.startswith("audit log intact:"), verdict
    assert "NOT checked" not in verdict
    # Without a public key it refuses to call the log intact.
    assert cli_main(["audit", "verify", "--dsn", stack.audit_dsn]) == 2
    assert "refusing to call the log intact without a public key" in capsys.readouterr().err


def test_the_signing_key_is_out_of_the_tasks_connection_lookups(stack: Stack) -> None:
    """The connection every task can read says where the key is, never the key; the key's secret is
    in another account than the one the tasks' secrets backend reads."""
    client: Any = secrets_client(stack.profile)
    connection = json.loads(
        client.get_secret_value(SecretId="airflow/connections/audit_signing")["SecretString"]
    )
    assert "password" not in connection
    assert connection["extra"]["secret_id"] == AUDIT_SIGNING_SECRET
    with pytest.raises(ClientError) as missing:
        client.get_secret_value(SecretId=AUDIT_SIGNING_SECRET)  # the platform account: not there
    assert missing.value.response["Error"]["Code"] == "ResourceNotFoundException"
    names = [entry["Name"] for entry in client.list_secrets()["SecretList"]]
    assert not [name for name in names if "audit-seal" in name]


def test_audit_overhead_per_task(stack: Stack, api: AirflowApi, story: dict[str, Any]) -> None:
    result = measure(stack.audit_dsn, api, samples=200, tasks=120)
    report(result, stack.profile.root / "results" / "audit_overhead.json")
    assert result.tasks_measured >= len(TASKS)
    assert 0 < result.warm_p50_ms <= result.cold_p95_ms
    assert result.in_runs_p50_ms >= 0  # recorded after the end state was reported, never before


def test_kms_signer_on_the_stacks_moto_through_the_audit_seal_role(stack: Stack) -> None:
    """Production's signer: an ECC_NIST_P256 key in the secops account, used by a session of
    orchestrator-audit-seal there (moto 5.2.5 implements KMS Sign for this key spec)."""
    from devstack.aws_seed import account_client
    from include.audit.memory import MemoryAuditLog
    from include.audit.signing import CheckpointKeys, KmsSigner, load_public_key
    from include.audit.verify import verify
    from include.connectors.aws import role_arn
    from include.policies.tenants import tenant_account_id

    url = stack.profile.moto_url
    admin = account_client("kms", tenant_account_id("secops"), url, REGION)
    key = admin.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]
    sts: Any = boto3.client(
        "sts",
        endpoint_url=url,
        region_name=REGION,
        aws_access_key_id=MOTO_ACCESS_KEY,
        aws_secret_access_key=MOTO_SECRET_KEY,
    )
    credentials = sts.assume_role(RoleArn=role_arn("audit-seal", "secops"), RoleSessionName="e2e-audit-seal")[
        "Credentials"
    ]
    kms: Any = boto3.client(
        "kms",
        endpoint_url=url,
        region_name=REGION,
        aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"],
    )
    signer = KmsSigner(client=kms, kms_key_id=key["Arn"])
    log = MemoryAuditLog()
    log.append({"kind": "run.triggered", "actor": "e2e"})
    checkpoint = log.seal(signer)
    assert checkpoint is not None
    assert checkpoint.algorithm == "ecdsa-p256-sha256"
    keys = CheckpointKeys.of(load_public_key(signer.public_key_pem()))
    assert verify(log.record_dicts(), log.checkpoint_dicts(), keys).ok
    # The platform account (what the base keys and the tasks' backend act in) has no such key.
    platform_kms: Any = boto3.client(
        "kms",
        endpoint_url=url,
        region_name=REGION,
        aws_access_key_id=MOTO_ACCESS_KEY,
        aws_secret_access_key=MOTO_SECRET_KEY,
    )
    with pytest.raises(ClientError) as missing:
        platform_kms.sign(
            KeyId=key["KeyId"], Message=b"m", MessageType="RAW", SigningAlgorithm="ECDSA_SHA_256"
        )
    assert missing.value.response["Error"]["Code"] == "NotFoundException"
