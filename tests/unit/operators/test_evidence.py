"""Evidence pack delivery (include/operators/evidence.py): which packs a run builds, the locked
bucket (moto, in process), the tenant checks, the notice; and who may trigger the DAG."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest import mock

import boto3
import pytest
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from moto import mock_aws

from include.connectors.ticketing.interface import Ticket, TicketEntry
from include.operators import evidence
from include.operators.evidence import (
    EvidencePackOperator,
    EvidenceRequestError,
    PackRequest,
    pack_requests,
    previous_month,
)

RUN_AFTER = datetime(2026, 12, 1, 4, 0, tzinfo=UTC)
CUSTOMERS = ["acme", "globex"]
KNOWN = ["acme", "globex", "secops"]
EXTRAS = {"export_bucket": "audit-unit", "region_name": "eu-west-1", "aws_conn_id": "aws_default"}


def D(year: int, month: int, day: int) -> datetime:
    return datetime(year, month, day, tzinfo=UTC)


def plan(params: dict[str, Any], manual: bool = True) -> list[PackRequest]:
    return pack_requests(params, manual=manual, run_after=RUN_AFTER, customers=CUSTOMERS, known_tenants=KNOWN)


# --- which packs -----------------------------------------------------------------------------


def test_monthly_run_packs_every_customer_for_the_previous_month() -> None:
    # a scheduled run ignores any tenant in its params: it packs the customers, never secops
    requests = plan({"tenant": "acme"}, manual=False)
    assert [(r.tenant, r.start, r.end) for r in requests] == [
        ("acme", D(2026, 11, 1), D(2026, 12, 1)),
        ("globex", D(2026, 11, 1), D(2026, 12, 1)),
    ]


def test_previous_month_over_new_year() -> None:
    assert previous_month(date(2027, 1, 1)) == (D(2026, 12, 1), D(2027, 1, 1))
    assert previous_month(datetime(2026, 3, 31, 23, tzinfo=UTC)) == (D(2026, 2, 1), D(2026, 3, 1))


def test_run_by_hand_is_one_named_tenant_only() -> None:
    [request] = plan({"tenant": "globex", "period_start": "2026-10-01", "period_end": "2026-10-31"})
    assert request == PackRequest("globex", D(2026, 10, 1), D(2026, 11, 1))
    assert request.prefix("0123456789abcdef") == "evidence/globex/2026-10-01_2026-11-01/0123456789abcdef/"
    [default_period] = plan({"tenant": "acme"})
    assert (default_period.start, default_period.end) == (D(2026, 11, 1), D(2026, 12, 1))
    [window] = plan(
        {"tenant": "acme", "period_start": "2026-11-04T14:00:00Z", "period_end": "2026-11-04T18:30"}
    )
    assert (window.start, window.end) == (
        D(2026, 11, 4) + timedelta(hours=14),
        D(2026, 11, 4) + timedelta(hours=18.5),
    )
    assert window.prefix("ab") == "evidence/acme/20261104T140000Z_20261104T183000Z/ab/"
    assert window.describe() == "2026-11-04 14:00:00 UTC up to 2026-11-04 18:30:00 UTC"


@pytest.mark.parametrize(
    ("params", "message"),
    [
        pytest.param({}, "param tenant must be one of acme, globex, secops, got None", id="no-tenant"),
        pytest.param({"tenant": "initech"}, "got 'initech'", id="unknown-tenant"),
        pytest.param({"tenant": ["acme", "globex"]}, "got \\['acme', 'globex'\\]", id="two-tenants"),
        pytest.param(
            {"tenant": "acme", "period_start": "2026-11-05", "period_end": "2026-11-04"},
            "before it starts",
            id="reversed",
        ),
        pytest.param(
            {"tenant": "acme", "period_start": "2024-01-01", "period_end": "2026-11-30"},
            "longer than 366 days",
            id="too-long",
        ),
        pytest.param({"tenant": "acme", "period_end": "2026-12-24"}, "in the future", id="future"),
        pytest.param({"tenant": "acme", "period_start": "soon"}, "neither a day", id="not-a-date"),
        pytest.param({"tenant": "acme", "ticket_id": "42; DROP"}, "not a ticket number", id="ticket"),
    ],
)
def test_run_by_hand_refused(params: dict[str, Any], message: str) -> None:
    with pytest.raises(EvidenceRequestError, match=message):
        plan(params)


def test_request_round_trip_and_malformed() -> None:
    request = PackRequest("acme", D(2026, 11, 1), D(2026, 12, 1), "soc", "42")
    assert PackRequest.from_dict(request.as_dict()) == request
    assert request.prefix("ab") == "evidence/acme/2026-11-01_2026-12-01/soc/ab/"
    with pytest.raises(EvidenceRequestError, match="malformed"):
        PackRequest.from_dict({"tenant": "acme"})


def test_evidence_bucket_and_retention() -> None:
    assert evidence.evidence_bucket(EXTRAS) == "audit-unit-evidence"
    assert evidence.evidence_bucket({**EXTRAS, "evidence_bucket": "ev"}) == "ev"
    with pytest.raises(ValueError, match="audit_store"):
        evidence.evidence_bucket({})
    # retention.yaml: acme is standard (7y = 2557 days), globex regulated (10y)
    assert evidence.retention_days("acme") >= 2557
    assert evidence.retention_days("globex") >= evidence.retention_days("acme")


# --- the locked bucket -------------------------------------------------------------------------


@pytest.fixture
def s3() -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("s3", region_name="eu-west-1")
        yield client


def fake_pack(folder: Path, tenant: str) -> Path:
    folder.mkdir(parents=True)
    (folder / "records.jsonl").write_text('{"seq":1}\n')
    (folder / "report.html").write_text("<!DOCTYPE html><title>r</title>")
    (folder / "manifest.json").write_text(json.dumps({"tenant": tenant, "files": {}}))
    return folder


def test_store_pack_locks_every_object_and_never_overwrites(s3: Any, tmp_path: Path) -> None:
    from include.audit.export import ensure_locked_bucket

    ensure_locked_bucket(s3, "evidence-unit", region="eu-west-1", retention_days=1)
    files = evidence.pack_files(fake_pack(tmp_path / "p", "acme"))
    until = datetime.now(UTC) + timedelta(days=3)
    stored = evidence.store_pack(s3, "evidence-unit", "evidence/acme/x/", files, until)
    assert [(o["key"], o["written"]) for o in stored] == [
        ("evidence/acme/x/manifest.json", True),
        ("evidence/acme/x/records.jsonl", True),
        ("evidence/acme/x/report.html", True),
    ]
    head = s3.head_object(Bucket="evidence-unit", Key="evidence/acme/x/report.html")
    assert head["ObjectLockMode"] == "COMPLIANCE"
    assert head["ObjectLockRetainUntilDate"] > datetime.now(UTC) + timedelta(days=2)
    with pytest.raises(ClientError):
        s3.delete_object(
            Bucket="evidence-unit", Key="evidence/acme/x/report.html", VersionId=head["VersionId"]
        )
    again = evidence.store_pack(s3, "evidence-unit", "evidence/acme/x/", files, until)
    assert not any(o["written"] for o in again)


class Recorded(EvidencePackOperator):
    """The operator with its seams replaced: moto S3, a pack written by ``pack_for``."""

    pack_for = "acme"

    def __init__(self, *, s3: Any, **kwargs: Any) -> None:
        super().__init__(task_id="pack", **kwargs)
        self._s3 = s3
        self.told: list[tuple[PackRequest, str]] = []

    first_record_at = "2026-10-31T23:59:59.000000Z"

    def settings(self) -> tuple[dict[str, Any], Any, Any]:
        store = mock.MagicMock()
        store.records.return_value = [{"seq": 1, "at": self.first_record_at}]
        return dict(EXTRAS), self._s3, store

    def build(self, store: Any, request: PackRequest, keys: Any, out_dir: Path) -> Any:
        assert keys.public, "the published public keys are trusted"
        return SimpleNamespace(path=fake_pack(out_dir, self.pack_for), tenant=self.pack_for)

    def tell(self, context: Any, request: PackRequest, text: str) -> dict[str, Any]:
        self.told.append((request, text))
        return {"via": "mail"}


@pytest.fixture
def published(s3: Any) -> Any:
    from include.audit.export import ensure_locked_bucket, publish_public_key
    from include.audit.signing import public_key_pem

    ensure_locked_bucket(s3, EXTRAS["export_bucket"], region="eu-west-1", retention_days=1)
    publish_public_key(s3, EXTRAS["export_bucket"], public_key_pem(Ed25519PrivateKey.generate().public_key()))
    return s3


@pytest.fixture
def audit() -> Iterator[mock.MagicMock]:
    with mock.patch("include.operators.evidence.audit_side_effect") as recorded:
        yield recorded


def test_execute_stores_and_tells(published: Any, audit: mock.MagicMock) -> None:
    request = PackRequest("acme", D(2026, 11, 1), D(2026, 12, 1))
    operator = Recorded(s3=published, request=request.as_dict())
    result = operator.execute({})
    assert result["bucket"] == "audit-unit-evidence"
    assert result["prefix"] == f"evidence/acme/2026-11-01_2026-12-01/{result['manifest_sha256'][:16]}/"
    keys = [o["Key"] for o in published.list_objects_v2(Bucket="audit-unit-evidence")["Contents"]]
    assert sorted(keys) == sorted(o["key"] for o in result["objects"])
    assert all(k.startswith("evidence/acme/") for k in keys)
    [(told, text)] = operator.told
    assert told == request
    assert result["manifest_sha256"] in text
    assert f"s3://audit-unit-evidence/{result['prefix']}" in text
    assert audit.call_args.kwargs["operation"] == "store-evidence-pack"
    assert audit.call_args.kwargs["tenant"] == "acme"


def test_execute_refuses_a_pack_of_another_tenant(published: Any, audit: mock.MagicMock) -> None:
    operator = Recorded(s3=published, request=PackRequest("acme", D(2026, 11, 1), D(2026, 12, 1)).as_dict())
    operator.pack_for = "globex"
    with pytest.raises(AirflowFailException, match="names tenant globex: not stored"):
        operator.execute({})
    assert "Contents" not in published.list_objects_v2(Bucket="audit-unit-evidence")
    assert operator.told == []


def test_period_before_the_audit_log_is_skipped(s3: Any, audit: mock.MagicMock) -> None:
    operator = Recorded(s3=s3, request=PackRequest("acme", D(2026, 11, 1), D(2026, 12, 1)).as_dict())
    operator.first_record_at = "2026-12-01T00:00:00.000000Z"  # the log starts at the period's end
    with pytest.raises(AirflowSkipException, match="no record before 2026-12-01T00:00:00"):
        operator.execute({})
    assert evidence.log_reaches(mock.MagicMock(**{"records.return_value": []}), D(2026, 12, 1)) is False


def test_execute_without_published_keys_fails(s3: Any, audit: mock.MagicMock) -> None:
    from include.audit.export import ensure_locked_bucket

    ensure_locked_bucket(s3, EXTRAS["export_bucket"], region="eu-west-1", retention_days=1)
    operator = Recorded(s3=s3, request=PackRequest("acme", D(2026, 11, 1), D(2026, 12, 1)).as_dict())
    with pytest.raises(AirflowFailException, match="no checkpoint public key published"):
        operator.execute({})


# --- telling the tenant --------------------------------------------------------------------------


def tell_context() -> dict[str, Any]:
    ti = SimpleNamespace(dag_id="platform_evidence_packs", task_id="build_store_tell", run_id="manual__1")
    return {"ti": ti, "run_id": "manual__1", "dag_run": SimpleNamespace(conf={})}


def test_notice_on_a_ticket_of_another_tenant_is_refused(audit: mock.MagicMock) -> None:
    hook = mock.MagicMock()
    hook.get_ticket.return_value = Ticket("42", "x", "open", "support", fields={"Tenant": "globex"})
    request = PackRequest("acme", D(2026, 11, 1), D(2026, 12, 1), ticket_id="42")
    with (
        mock.patch("include.connectors.ticketing.ticketing_hook", return_value=hook),
        pytest.raises(EvidenceRequestError, match="ticket 42 is not a ticket of tenant acme"),
    ):
        EvidencePackOperator(task_id="t", request={}).tell(tell_context(), request, "notice")
    hook.comment.assert_not_called()


def test_notice_on_the_tenants_ticket(audit: mock.MagicMock) -> None:
    hook = mock.MagicMock()
    hook.get_ticket.return_value = Ticket("42", "x", "open", "support", fields={"Tenant": "acme"})
    hook.comment.return_value = TicketEntry("42", "7", True)
    request = PackRequest("acme", D(2026, 11, 1), D(2026, 12, 1), ticket_id="42")
    with mock.patch("include.connectors.ticketing.ticketing_hook", return_value=hook) as built:
        told = EvidencePackOperator(task_id="t", request={}).tell(tell_context(), request, "notice")
    assert built.call_args.args == ("request_tracker", None, "acme")
    assert told == {"via": "ticket", "ticket_id": "42", "entry_id": "7"}
    assert hook.comment.call_args.args == ("42", "notice")
    assert audit.call_args.kwargs["ticket_id"] == "42"


def test_notice_by_mail_to_the_security_contact(audit: mock.MagicMock) -> None:
    request = PackRequest("globex", D(2026, 11, 1), D(2026, 12, 1))
    with mock.patch("include.connectors.smtp.SmtpRelayHook") as relay:
        told = EvidencePackOperator(task_id="t", request={}).tell(tell_context(), request, "a <b> notice")
    assert told == {"via": "mail", "to": "ciso@globex.example"}
    assert relay.call_args.kwargs == {"tenant": "globex"}
    to, subject, html = relay.return_value.send.call_args.args
    assert to == ["ciso@globex.example"]
    assert subject == "Evidence pack Globex Corporation 2026-11-01"
    assert html == "<pre>a &lt;b&gt; notice</pre>"


def test_notice_text_names_location_and_digest() -> None:
    request = PackRequest("acme", D(2026, 11, 1), D(2026, 12, 1))
    text = evidence.notice(request, "ACME Corp", "s3://b/evidence/acme/x/", "f" * 64)
    assert "ACME Corp for 2026-11-01 to 2026-11-30" in text
    assert "s3://b/evidence/acme/x/" in text
    assert "f" * 64 in text


# --- who may trigger the DAG -----------------------------------------------------------------------


def test_only_auditors_may_trigger_the_dag() -> None:
    import importlib

    module = importlib.import_module("dags.platform.evidence_packs")
    access = module.kwargs["access_control"]
    assert access["auditor"] == {"DAGs": {"can_read", "can_edit"}, "DAG Runs": {"can_read", "can_create"}}
    others = {role: grants for role, grants in access.items() if role != "auditor"}
    assert "platform_operator" in others
    for role, grants in others.items():
        assert grants == {"DAGs": {"can_read"}, "DAG Runs": {"can_read"}}, role


# --- seal before build (a quiet month end) ------------------------------------------------------


def test_only_the_monthly_run_seals_before_building() -> None:
    assert all(r.seal_first for r in plan({}, manual=False))
    [by_hand] = plan({"tenant": "acme", "seal_first": True})  # not a param: a conf key changes nothing
    assert not by_hand.seal_first
    monthly = PackRequest("acme", D(2026, 11, 1), D(2026, 12, 1), seal_first=True)
    assert PackRequest.from_dict(monthly.as_dict()) == monthly
    assert not PackRequest.from_dict({**monthly.as_dict(), "seal_first": "yes"}).seal_first


@pytest.mark.parametrize("seal_first", [True, False])
def test_build_passes_the_platforms_seal_only_for_the_monthly_run(seal_first: bool, tmp_path: Path) -> None:
    request = PackRequest("acme", D(2026, 11, 1), D(2026, 12, 1), seal_first=seal_first)
    operator = EvidencePackOperator(task_id="pack", request=request.as_dict())
    with (
        mock.patch("include.evidence.pack.build_pack") as build_pack,
        mock.patch("include.audit.seal.run_seal", return_value={"checkpoint_seq": 7}) as run_seal,
    ):
        operator.build(mock.sentinel.store, request, mock.sentinel.keys, tmp_path / "pack")
        seal = build_pack.call_args.kwargs["seal"]
        if seal_first:
            assert seal() == {"checkpoint_seq": 7}
            run_seal.assert_called_once_with()
        else:
            assert seal is None
    assert build_pack.call_args.kwargs["parallel"] is False
