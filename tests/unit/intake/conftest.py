"""Intake fixtures: the deployed policy's sources and real SQS queues in moto's in-process mock."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from include.intake.policy import IntakePolicy, load_intake
from include.intake.queues import ensure_queues


@pytest.fixture
def policy() -> IntakePolicy:
    return load_intake()


@pytest.fixture
def sqs(policy: IntakePolicy, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """An SQS client with every intake queue and dead-letter queue created (RedrivePolicy included)."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        client = boto3.client("sqs", region_name="us-east-1")
        ensure_queues(policy, client)
        yield client
