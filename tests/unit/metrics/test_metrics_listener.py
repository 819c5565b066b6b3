"""The metrics listener's StatsD packets, caught on a local UDP socket."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from include.metrics import listener as metrics_listener
from include.metrics import statsd
from include.metrics.statsd import StatsdClient, packet

T0 = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)


@pytest.fixture
def udp() -> Iterator[socket.socket]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(2)
        yield sock


@pytest.fixture
def configured(udp: socket.socket, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("AIRFLOW__ORCHESTRATOR_METRICS__STATSD_HOST", "127.0.0.1")
    monkeypatch.setenv("AIRFLOW__ORCHESTRATOR_METRICS__STATSD_PORT", str(udp.getsockname()[1]))
    monkeypatch.setenv("AIRFLOW__ORCHESTRATOR_METRICS__STATSD_PREFIX", "orch")
    statsd.configured_client.cache_clear()
    yield
    statsd.configured_client.cache_clear()


def received(sock: socket.socket) -> list[str]:
    packets = []
    try:
        while True:
            sock.settimeout(0.5 if packets else 2)
            packets.append(sock.recv(4096).decode())
    except TimeoutError:
        return sorted(packets)


def worker_ti(*, try_number: int = 1, gate_record: dict[str, Any] | None = None) -> Any:
    """What the Task SDK hands the listener: a RuntimeTaskInstance with its task and template context."""
    task = SimpleNamespace(dag=SimpleNamespace(tags={"domain:soc", "kind:fast_path", "soc"}))
    if gate_record is not None:
        task.approval_action = "host-isolate"
    return SimpleNamespace(
        dag_id="soc_contain_host",
        run_id="manual__1",
        task_id="approve_isolation" if gate_record is not None else "isolate",
        try_number=try_number,
        start_date=T0,
        end_date=T0 + timedelta(seconds=2.5),
        state="success",
        task=task,
        _cached_template_context={"params": {"tenant": "acme"}, "dag_run": SimpleNamespace(conf={})},
        xcom_pull=lambda task_ids, key: gate_record if key == "approval" else None,
    )


def test_packet_format() -> None:
    line = packet("orch.task.duration", 2500.0, "ms", {"tenant": "acme", "domain": "soc", "empty": None})
    assert line == "orch.task.duration:2500|ms|#domain:soc,tenant:acme"
    assert packet("x", 1, "c", {"task_id": "a,b|c#d"}) == "x:1|c|#task_id:a_b_c_d"


@pytest.mark.usefixtures("configured")
def test_task_success_sends_duration_outcome_and_retries(udp: socket.socket) -> None:
    metrics_listener.on_task_instance_success(None, worker_ti(try_number=3))
    assert received(udp) == [
        "orch.task.duration:2500|ms|#dag_id:soc_contain_host,domain:soc,state:success,task_id:isolate,tenant:acme",
        "orch.task.finished:1|c|#dag_id:soc_contain_host,domain:soc,state:success,task_id:isolate,tenant:acme",
        "orch.task.retries:2|c|#dag_id:soc_contain_host,domain:soc,task_id:isolate,tenant:acme",
    ]


@pytest.mark.usefixtures("configured")
def test_retry_is_counted_as_its_state_without_retries_total(udp: socket.socket) -> None:
    ti = worker_ti(try_number=1)
    ti.state = "up_for_retry"
    metrics_listener.on_task_instance_failed(None, ti, RuntimeError("boom"))
    packets = received(udp)
    assert [p.split("|#")[0] for p in packets] == ["orch.task.duration:2500|ms", "orch.task.finished:1|c"]
    assert all(",state:up_for_retry," in p for p in packets)


@pytest.mark.usefixtures("configured")
def test_gate_success_sends_its_approval_wait(udp: socket.socket) -> None:
    record = {
        "outcome": "approved",
        "requested_at": T0.isoformat(),
        "responded_at": (T0 + timedelta(seconds=95.5)).isoformat(),
    }
    metrics_listener.on_task_instance_success(None, worker_ti(gate_record=record))
    assert (
        "orch.approval.wait:95500|ms|#dag_id:soc_contain_host,domain:soc,outcome:approved,"
        "task_id:approve_isolation,tenant:acme"
    ) in received(udp)


@pytest.mark.usefixtures("configured")
def test_run_end_sends_duration_sla_miss_and_queue_waits(udp: socket.socket) -> None:
    dag_run = SimpleNamespace(
        dag_id="hr_onboarding",
        dag=SimpleNamespace(tags=["domain:hr", "kind:fast_path"]),
        conf={},
        state="failed",
        queued_at=T0,
        start_date=T0 + timedelta(seconds=1),
        end_date=T0 + timedelta(minutes=31),  # HR fast path SLA: 30 minutes
    )
    tis = [
        SimpleNamespace(task_id="validate", queued_dttm=T0, start_date=T0 + timedelta(seconds=0.75)),
        # resumed from deferral: queued again after its first start; no queue wait to report
        SimpleNamespace(task_id="gate", queued_dttm=T0 + timedelta(minutes=20), start_date=T0),
    ]
    metrics_listener.emit_run_metrics(statsd.configured_client(), dag_run, tis)
    tags = "dag_id:hr_onboarding,domain:hr"
    assert received(udp) == [
        f"orch.dagrun.duration:1860000|ms|#{tags},kind:fast_path,state:failed,tenant:secops",
        f"orch.dagrun.sla_miss:1|c|#{tags},kind:fast_path,tenant:secops",
        f"orch.task.queue_wait:750|ms|#{tags},task_id:validate,tenant:secops",
    ]


def test_off_unless_configured(udp: socket.socket, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRFLOW__ORCHESTRATOR_METRICS__STATSD_HOST", raising=False)
    statsd.configured_client.cache_clear()
    try:
        assert statsd.configured_client() is None
        metrics_listener.on_task_instance_success(None, worker_ti())
    finally:
        statsd.configured_client.cache_clear()
    assert received(udp) == []


def test_an_unreachable_collector_never_raises() -> None:
    StatsdClient(host="203.0.113.1", port=9).incr("x", {"domain": "soc"})
    StatsdClient(host="no-such-host.invalid", port=8125).incr("x", {"domain": "soc"})


@pytest.mark.usefixtures("configured")
def test_a_broken_task_instance_does_not_fail_the_task(udp: socket.socket) -> None:
    metrics_listener.on_task_instance_success(None, SimpleNamespace())
    assert received(udp) == []
