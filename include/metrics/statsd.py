"""StatsD export with domain and tenant labels: DogStatsD packets over UDP, standard library only.

Why DogStatsD tags (``name:value|type|#domain:soc,tenant:acme``) rather than Airflow's own StatsD
client: Airflow's metrics have no domain or tenant, and plain StatsD can only put labels into the
metric name. The tag format is read by the Datadog agent, Telegraf's statsd input
(``datadog_extensions = true``), the OpenTelemetry Collector's ``statsd`` receiver and
statsd_exporter for Prometheus, so any of them can sit on the other end.

Off unless configured, in Airflow's configuration (so also as environment variables):

.. code-block:: ini

    [orchestrator_metrics]
    statsd_host = 127.0.0.1     # AIRFLOW__ORCHESTRATOR_METRICS__STATSD_HOST; empty: off
    statsd_port = 8125          # AIRFLOW__ORCHESTRATOR_METRICS__STATSD_PORT
    statsd_prefix = orchestrator  # AIRFLOW__ORCHESTRATOR_METRICS__STATSD_PREFIX

Sending never raises and never blocks: a metric lost is better than a task failed by its metrics.
Run and correlation ids are not tags (one time series per run would swamp any backend); the
per-run detail is in the metadata DB (:mod:`include.metrics.measure`).
"""

from __future__ import annotations

import logging
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Literal

log = logging.getLogger(__name__)

CONFIG_SECTION = "orchestrator_metrics"
DEFAULT_PORT = 8125
DEFAULT_PREFIX = "orchestrator"
MetricType = Literal["c", "g", "ms"]
# DogStatsD separators may not appear inside a name or a tag.
_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-/:]")


def _clean(text: str) -> str:
    return _UNSAFE.sub("_", text)


def packet(name: str, value: float, metric_type: MetricType, tags: Mapping[str, str | None]) -> str:
    """One DogStatsD line; tags without a value are left out, the rest sorted by name."""
    number = f"{value:.3f}".rstrip("0").rstrip(".") if isinstance(value, float) else str(value)
    tag_text = ",".join(
        f"{_clean(k)}:{_clean(str(v))}" for k, v in sorted(tags.items()) if v not in (None, "")
    )
    return f"{_clean(name)}:{number}|{metric_type}" + (f"|#{tag_text}" if tag_text else "")


@dataclass(frozen=True)
class StatsdClient:
    host: str
    port: int = DEFAULT_PORT
    prefix: str = DEFAULT_PREFIX

    def send(self, name: str, value: float, metric_type: MetricType, tags: Mapping[str, str | None]) -> None:
        line = packet(f"{self.prefix}.{name}" if self.prefix else name, value, metric_type, tags)
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.setblocking(False)
                sock.sendto(line.encode("ascii", "replace"), (self.host, self.port))
        except OSError as error:
            log.debug("statsd packet to %s:%s not sent: %s", self.host, self.port, error)

    def timing(self, name: str, seconds: float, tags: Mapping[str, str | None]) -> None:
        self.send(name, round(seconds * 1000, 3), "ms", tags)

    def incr(self, name: str, tags: Mapping[str, str | None], count: int = 1) -> None:
        self.send(name, count, "c", tags)


@cache
def configured_client() -> StatsdClient | None:
    """The client of ``[orchestrator_metrics]``, or ``None`` when ``statsd_host`` is not set."""
    from airflow.configuration import conf

    host = (conf.get(CONFIG_SECTION, "statsd_host", fallback="") or "").strip()
    if not host:
        return None
    port = conf.getint(CONFIG_SECTION, "statsd_port", fallback=DEFAULT_PORT)
    prefix = conf.get(CONFIG_SECTION, "statsd_prefix", fallback=DEFAULT_PREFIX) or ""
    return StatsdClient(host=host, port=port, prefix=prefix.strip("."))
