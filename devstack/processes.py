"""Start services in their own process group, remember their PID, stop them by that PID."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path


class ServiceError(RuntimeError):
    """A local service failed to start or to become ready; the message says which and where to look."""


def pid_file(pids_dir: Path, name: str) -> Path:
    return pids_dir / f"{name}.pid"


def start(
    name: str,
    argv: Sequence[str],
    *,
    pids_dir: Path,
    logs_dir: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` detached in a new session; output goes to ``<logs_dir>/<name>.log``."""
    pids_dir.mkdir(parents=True, exist_ok=True)
    logs_dir.mkdir(parents=True, exist_ok=True)
    log = (logs_dir / f"{name}.log").open("ab")
    process = subprocess.Popen(
        list(argv),
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=dict(env) if env is not None else None,
        cwd=cwd,
        start_new_session=True,
    )
    log.close()
    pid_file(pids_dir, name).write_text(str(process.pid))
    return process


def is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); reap it if it is ours.
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return waited == 0


def stop(name: str, *, pids_dir: Path, timeout: float = 20.0) -> bool:
    """SIGTERM the process group recorded for ``name``, SIGKILL after ``timeout``; True if it ran."""
    return bool(stop_many([name], pids_dir=pids_dir, timeout=timeout))


def stop_many(names: Sequence[str], *, pids_dir: Path, timeout: float = 20.0) -> list[str]:
    """:func:`stop` for several services at once: all get SIGTERM, then share one ``timeout``.

    One after another, each service that is slow to end (a scheduler waiting for its running tasks)
    adds its own wait; together the slowest one sets the pace. Returns the names that were running.
    """
    pids: dict[str, int] = {}
    for name in names:
        path = pid_file(pids_dir, name)
        if not path.exists():
            continue
        pid = int(path.read_text())
        path.unlink()
        if is_running(pid):
            pids[name] = pid
            _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    waiting = dict(pids)
    while waiting and time.monotonic() < deadline:
        waiting = {name: pid for name, pid in waiting.items() if is_running(pid)}
        if waiting:
            time.sleep(0.1)
    for pid in waiting.values():
        _signal_group(pid, signal.SIGKILL)
    return list(pids)


def wait_for_stop_signal() -> None:
    """Block until SIGTERM or SIGINT: the service's side of :func:`stop` (call from the main thread)."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)


def running_pid(name: str, *, pids_dir: Path) -> int | None:
    path = pid_file(pids_dir, name)
    if not path.exists():
        return None
    pid = int(path.read_text())
    return pid if is_running(pid) else None


def port_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def wait_until(check: Callable[[], bool], *, what: str, timeout: float, log: Path | None = None) -> None:
    """Poll ``check`` until it is true; on timeout raise with the tail of the service's log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:  # noqa: S110 - a service that is still starting may refuse or reset
            pass
        time.sleep(0.3)
    tail = ""
    if log is not None and log.exists():
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
    raise ServiceError(
        f"{what} not ready after {timeout:.0f}s" + (f"; last lines of {log}:\n{tail}" if tail else "")
    )


POLICY_RC_D = Path("/usr/sbin/policy-rc.d")


def root_prefix(missing: str, packages: Sequence[str]) -> list[str]:
    """``[]`` as root, else ``sudo -n``; no sudo: a :class:`ServiceError` saying what to install."""
    if os.geteuid() == 0:
        return []
    import shutil

    if shutil.which("sudo") is None:
        raise ServiceError(f"{missing} is not installed: run `apt-get install {' '.join(packages)}` as root")
    return ["sudo", "-n"]


def apt_install(prefix: Sequence[str], packages: Sequence[str], env: Mapping[str, str]) -> None:
    """``apt-get install`` Debian ``packages`` without recommends (``prefix``: ``[]`` or sudo);
    on a failure (a missing or stale package list) ``apt-get update`` once and try again."""
    install = [*prefix, "apt-get", "install", "-y", "-qq", "--no-install-recommends"]
    install += ["-o", "DPkg::Lock::Timeout=300", *packages]
    if subprocess.run(install, env=env, check=False, stdout=subprocess.DEVNULL).returncode != 0:
        subprocess.run([*prefix, "apt-get", "update", "-qq"], env=env, check=True)
        subprocess.run(install, env=env, check=True, stdout=subprocess.DEVNULL)


@contextlib.contextmanager
def services_kept_down(prefix: list[str]) -> Iterator[None]:
    """A policy-rc.d that exits 101 keeps package postinsts from starting system daemons.

    An existing policy-rc.d (Docker images ship one) is left as it is.
    """
    if POLICY_RC_D.exists():
        yield
        return
    script = f"printf '#!/bin/sh\\nexit 101\\n' > {POLICY_RC_D} && chmod 755 {POLICY_RC_D}"
    subprocess.run([*prefix, "sh", "-c", script], check=True)
    try:
        yield
    finally:
        subprocess.run([*prefix, "rm", "-f", str(POLICY_RC_D)], check=False)
