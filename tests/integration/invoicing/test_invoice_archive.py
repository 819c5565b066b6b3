"""The invoice archive's write-once copies on S3 Object Lock (an in-process moto server).

An identical document written again is found, not refused; different bytes under the same key are
refused and the archived copy stays; every object carries its own COMPLIANCE retention.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest

from devstack.config import MOTO_ACCESS_KEY, MOTO_SECRET_KEY
from include.audit.export import ensure_locked_bucket
from include.invoicing.archive import ArchiveConflictError, document_bytes, put_write_once
from tests.support.moto import moto_with_aws_connection

REGION = "eu-west-1"
BUCKET = "orchestrator-audit-itest"
KEY = "invoices/acme/CT-2026-001/M1/invoice.json"


@pytest.fixture
def s3() -> Iterator[Any]:
    with moto_with_aws_connection("aws_archive_itest", REGION) as url:
        client = boto3.client(
            "s3",
            endpoint_url=url,
            region_name=REGION,
            aws_access_key_id=MOTO_ACCESS_KEY,
            aws_secret_access_key=MOTO_SECRET_KEY,
        )
        ensure_locked_bucket(client, BUCKET, region=REGION, retention_days=1)
        yield client


def test_written_once_then_found_identical(s3: Any) -> None:
    body = document_bytes({"number": "103001", "totals": {"net": "10.00"}})
    until = datetime.now(UTC).replace(microsecond=0) + timedelta(days=3653)

    first = put_write_once(s3, BUCKET, KEY, body, until=until)
    again = put_write_once(s3, BUCKET, KEY, body, until=until + timedelta(days=1))

    assert (first.written, again.written) == (True, False)
    assert first.sha256 == again.sha256
    assert again.retain_until == until  # the object's own retention, not the second run's
    head = s3.head_object(Bucket=BUCKET, Key=KEY)
    assert (head["ObjectLockMode"], head["ObjectLockRetainUntilDate"]) == ("COMPLIANCE", until)
    assert len(s3.list_object_versions(Bucket=BUCKET, Prefix=KEY)["Versions"]) == 1


def test_different_content_is_refused_and_the_archive_kept(s3: Any) -> None:
    until = datetime.now(UTC) + timedelta(days=1)
    put_write_once(s3, BUCKET, KEY, document_bytes({"number": "103001"}), until=until)

    with pytest.raises(
        ArchiveConflictError, match=r"already holds a different document .* the archived copy is kept"
    ):
        put_write_once(s3, BUCKET, KEY, document_bytes({"number": "103002"}), until=until)

    assert s3.get_object(Bucket=BUCKET, Key=KEY)["Body"].read() == document_bytes({"number": "103001"})


def test_document_bytes_are_canonical() -> None:
    assert (
        document_bytes({"b": 1, "a": "ä"})
        == document_bytes({"a": "ä", "b": 1})
        == '{\n  "a": "ä",\n  "b": 1\n}\n'.encode()
    )
