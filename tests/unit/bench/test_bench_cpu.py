"""bench.cpu: CPU seconds per component tree, with real processes that burn a known amount."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.cpu import CLIENT, MACHINE, TASKS, CpuMeter, line

# Burns CPU time (not wall time), so a loaded machine makes it slower, never smaller.
BURN = "import time\nt = time.process_time()\nwhile time.process_time() - t < {seconds}: pass\n"
# Waits for a go file, then runs a burning child to its end (and reaps it), then says so.
PARENT = """
import pathlib, subprocess, sys, time
go, done = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
while not go.exists():
    time.sleep(0.02)
subprocess.run([sys.executable, "-c", sys.argv[3]], check=True)
done.touch()
time.sleep(60)
"""
# Waits for a go file, burns CPU itself, then says so.
BURNER = """
import pathlib, sys, time
go, done = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
while not go.exists():
    time.sleep(0.02)
exec(sys.argv[3])
done.touch()
time.sleep(60)
"""


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    go = tmp_path / "go"
    started = {
        "scheduler": subprocess.Popen(
            [
                sys.executable,
                "-c",
                PARENT,
                str(go),
                str(tmp_path / "scheduler.done"),
                BURN.format(seconds=0.6),
            ]
        ),
        "request-tracker": subprocess.Popen(
            [sys.executable, "-c", BURNER, str(go), str(tmp_path / "rt.done"), BURN.format(seconds=0.5)]
        ),
        "moto": subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]),
    }
    try:
        yield started
    finally:
        for process in started.values():
            process.kill()
            process.wait()


def test_each_tree_gets_its_own_cpu_and_a_reaped_child_still_counts(
    processes: dict[str, subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    time.sleep(0.5)  # let the interpreters start before the stretch begins
    with CpuMeter(lambda: {name: p.pid for name, p in processes.items()}) as meter:
        (tmp_path / "go").touch()
        deadline = time.monotonic() + 60
        while not ((tmp_path / "scheduler.done").exists() and (tmp_path / "rt.done").exists()):
            assert time.monotonic() < deadline, "the burners did not finish"
            time.sleep(0.05)
    cpu = meter.seconds
    # The scheduler's child ended (and was reaped) inside the stretch: its 0.6 s is the tasks'.
    assert cpu[TASKS] >= 0.5
    assert cpu["scheduler"] < 0.3
    assert cpu["request-tracker"] >= 0.4
    assert cpu["moto"] < 0.1
    # Both burners are children of this process, but they are roots: not counted as the client.
    assert cpu[CLIENT] < 0.3
    assert cpu[MACHINE] >= cpu[TASKS] + cpu["request-tracker"]
    summary = line(cpu)
    assert summary.startswith(f"machine {cpu[MACHINE]} s: ")
    assert f"{TASKS} {cpu[TASKS]}" in summary
    assert f"request-tracker {cpu['request-tracker']}" in summary


def test_a_component_that_is_gone_or_not_started_is_left_out() -> None:
    with CpuMeter(lambda: {"scheduler": None, "moto": 2**22 + 12345}) as meter:
        pass
    assert set(meter.seconds) == {CLIENT, "other", MACHINE}


def test_a_part_without_a_measurement_prints_na() -> None:
    assert line("n/a") == "n/a"
    assert line({}) == "n/a"
