"""Stopping local services by their own PID: SIGTERM, SIGKILL after the timeout, several at once."""

from __future__ import annotations

import time
from pathlib import Path

from devstack import processes

# Ends at once on SIGTERM / ignores SIGTERM (a scheduler still waiting for its tasks).
POLITE = ["bash", "-c", "sleep 60 & wait"]
STUBBORN = ["bash", "-c", "trap 'echo term >> \"$0\"' TERM; while true; do sleep 0.1; done"]


def _start(tmp_path: Path, name: str, argv: list[str]) -> int:
    if argv is STUBBORN:
        argv = [*argv[:2], argv[2], str(tmp_path / f"{name}.terms")]
    process = processes.start(name, argv, pids_dir=tmp_path / "pids", logs_dir=tmp_path / "logs")
    time.sleep(0.3)  # let bash install its trap
    return process.pid


def test_stop_many_terms_everything_then_kills_what_is_left_after_one_shared_timeout(tmp_path):
    pids = {
        "polite": _start(tmp_path, "polite", POLITE),
        "stubborn-1": _start(tmp_path, "stubborn-1", STUBBORN),
        "stubborn-2": _start(tmp_path, "stubborn-2", STUBBORN),
    }
    timeout = 3.0

    began = time.monotonic()
    stopped = processes.stop_many([*pids, "never-started"], pids_dir=tmp_path / "pids", timeout=timeout)
    elapsed = time.monotonic() - began

    assert stopped == ["polite", "stubborn-1", "stubborn-2"]
    gone_by = time.monotonic() + 5  # SIGKILL is delivered, not awaited
    while any(processes.is_running(pid) for pid in pids.values()) and time.monotonic() < gone_by:
        time.sleep(0.05)
    assert not any(processes.is_running(pid) for pid in pids.values())
    assert not list((tmp_path / "pids").iterdir())  # PID files gone: a second stop is a no-op
    for name in ("stubborn-1", "stubborn-2"):
        assert (tmp_path / f"{name}.terms").read_text().strip() == "term"  # asked first, then killed
    # One shared wait: one after another, the two stubborn ones would take 2 x timeout.
    assert timeout <= elapsed < 2 * timeout - 1
    assert processes.stop_many(list(pids), pids_dir=tmp_path / "pids") == []


def test_stop_reports_whether_the_service_ran(tmp_path):
    _start(tmp_path, "polite", POLITE)
    assert processes.stop("polite", pids_dir=tmp_path / "pids") is True
    assert processes.stop("polite", pids_dir=tmp_path / "pids") is False


# Stands in for `sudo -n` in front of apt-get: logs each apt-get call, and fails the first install
# (as with a missing package list) unless told otherwise.
FAKE_ROOT = """#!/bin/bash
echo "$*" >> "$APT_LOG"
if [[ "$2" == install && ! -e "$APT_LOG.failed" && -z "$APT_OK" ]]; then
    touch "$APT_LOG.failed"
    exit 100
fi
"""


def _fake_root(tmp_path: Path) -> list[str]:
    script = tmp_path / "fake-root"
    script.write_text(FAKE_ROOT)
    script.chmod(0o755)
    return [str(script)]


def test_apt_install_refreshes_the_package_list_once_after_a_failed_install(tmp_path):
    log = tmp_path / "apt.log"
    processes.apt_install(_fake_root(tmp_path), ("chromium", "fonts-liberation"), {"APT_LOG": str(log)})
    install = (
        "apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=300 chromium fonts-liberation"
    )
    assert log.read_text().splitlines() == [install, "apt-get update -qq", install]


def test_apt_install_does_not_update_when_the_install_works(tmp_path):
    log = tmp_path / "apt.log"
    processes.apt_install(_fake_root(tmp_path), ("redis-server",), {"APT_LOG": str(log), "APT_OK": "1"})
    assert [line.split()[1] for line in log.read_text().splitlines()] == ["install"]
