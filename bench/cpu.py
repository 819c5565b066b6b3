"""CPU seconds per stack component over a stretch of a benchmark: where a slowdown's CPU went.

On 2 cores every component competes for the same CPU, so a latency figure alone does not say
whether Airflow, Request Tracker, PostgreSQL or the benchmark's own client was busy. This reads
every process's CPU times (psutil, which Airflow already depends on) at the start and the end of
a stretch; no sampling thread. psutil gives them per process; the sums over process trees are
ours.

A component is the process tree under a PID the stack started (its PID file; PostgreSQL's
postmaster). Its CPU is the sum, over the tree's live processes, of user + system time plus the
time of children they have reaped (``cutime``/``cstime``): a task process that ends inside the
stretch moves its time into its parent's ``cutime``, so the difference of two readings still
counts it. A walk stops at another component's root, so the benchmark process (which started the
stack) counts only its own client work. The scheduler's tree is split into the scheduler itself
and ``tasks``: with the LocalExecutor its descendants are the task processes. ``machine`` is all
non-idle CPU time of the host, so ``machine`` minus the components is everything else.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType

import psutil

TASKS = "tasks"
CLIENT = "bench client"
MACHINE = "machine"


@dataclass(frozen=True)
class _Proc:
    ppid: int
    own: float  # user + system, seconds
    reaped: float  # children this process has waited for (cutime + cstime)


def _read_procs() -> dict[int, _Proc]:
    procs = {}
    for proc in psutil.process_iter(["ppid", "cpu_times"]):
        times = proc.info["cpu_times"]
        if times is None:  # ended, or not ours to read
            continue
        procs[proc.pid] = _Proc(
            ppid=proc.info["ppid"],
            own=times.user + times.system,
            reaped=times.children_user + times.children_system,
        )
    return procs


def _machine_busy_seconds() -> float:
    """All CPUs' non-idle time (user, nice, system, irq, softirq, steal) since boot."""
    t = psutil.cpu_times()
    return t.user + t.nice + t.system + t.irq + t.softirq + t.steal


def snapshot(roots: Mapping[str, int | None], *, split: str | None = "scheduler") -> dict[str, float]:
    """CPU seconds so far of each component in ``roots`` (name -> root PID), plus ``machine``.

    ``split`` names the component whose descendants are reported apart, as ``tasks``."""
    procs = _read_procs()
    children: dict[int, list[int]] = defaultdict(list)
    for pid, proc in procs.items():
        children[proc.ppid].append(pid)
    live_roots = {name: pid for name, pid in roots.items() if pid is not None and pid in procs}
    root_pids = set(live_roots.values())

    def tree(pid: int) -> float:
        total, stack = 0.0, list(children[pid])
        while stack:
            child = stack.pop()
            if child in root_pids:
                continue
            total += procs[child].own + procs[child].reaped
            stack.extend(children[child])
        return total

    seconds: dict[str, float] = {}
    for name, pid in live_roots.items():
        if name == split:
            seconds[name] = procs[pid].own
            seconds[TASKS] = procs[pid].reaped + tree(pid)
        else:
            seconds[name] = procs[pid].own + procs[pid].reaped + tree(pid)
    seconds[MACHINE] = _machine_busy_seconds()
    return seconds


@dataclass
class CpuMeter:
    """``with CpuMeter(roots) as meter: ...``; then ``meter.seconds``: CPU seconds per component
    over the block, largest first, with ``machine`` (the host) and ``other`` (machine minus the
    components). ``roots`` is called at both ends, so a component started inside counts from 0."""

    roots: Callable[[], Mapping[str, int | None]]
    seconds: dict[str, float] = field(default_factory=dict)
    _start: dict[str, float] = field(default_factory=dict)

    def __enter__(self) -> CpuMeter:
        self._start = snapshot(self._with_client())
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        end = snapshot(self._with_client())
        # A component that restarted inside the block would give a negative difference: count 0.
        spent = {name: max(0.0, value - self._start.get(name, 0.0)) for name, value in end.items()}
        machine = spent.pop(MACHINE)
        spent["other"] = max(0.0, machine - sum(spent.values()))
        ordered = sorted(spent.items(), key=lambda item: -item[1])
        self.seconds = {name: round(value, 1) for name, value in ordered}
        self.seconds[MACHINE] = round(machine, 1)

    def _with_client(self) -> dict[str, int | None]:
        return {**self.roots(), CLIENT: os.getpid()}


def line(seconds: object, top: int = 7) -> str:
    """``machine 180.2 s: tasks 95.1, scheduler 20.3, ...`` (the ``top`` largest, ``other`` too);
    ``n/a`` for anything but a measurement (a part that failed or did not run)."""
    if not isinstance(seconds, Mapping) or not seconds:
        return "n/a"
    parts = sorted(((k, v) for k, v in seconds.items() if k != MACHINE), key=lambda item: -item[1])[:top]
    return f"machine {seconds.get(MACHINE)} s: " + ", ".join(f"{k} {v}" for k, v in parts)
