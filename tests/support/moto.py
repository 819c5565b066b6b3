"""An in-process moto server for integration tests, with an Airflow AWS connection pointing at it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import requests
from moto.server import ThreadedMotoServer

from devstack.config import MOTO_ACCESS_KEY, MOTO_SECRET_KEY


@contextmanager
def moto_with_aws_connection(conn_id: str, region: str) -> Iterator[str]:
    """Start moto on a free loopback port, expose it as connection ``conn_id``; yield its URL."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    with pytest.MonkeyPatch.context() as patch:
        # MOTO_ACCOUNT_ID would force one account for every request of this in-process server.
        patch.delenv("MOTO_ACCOUNT_ID", raising=False)
        patch.setenv(
            f"AIRFLOW_CONN_{conn_id.upper()}",
            json.dumps(
                {
                    "conn_type": "aws",
                    "login": MOTO_ACCESS_KEY,
                    "password": MOTO_SECRET_KEY,
                    "extra": {"endpoint_url": url, "region_name": region},
                }
            ),
        )
        requests.post(f"{url}/moto-api/reset", timeout=10).raise_for_status()  # backends are per process
        try:
            yield url
        finally:
            server.stop()
