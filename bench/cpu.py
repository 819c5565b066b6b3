"""CPU seconds per stack component over a stretch of a benchmark: where a slowdown's CPU went.

On 2 cores every component competes for the same CPU, so a latency figure alone does not say
whether Airflow, Request Tracker, PostgreSQL or the benchmark's own client was busy. This reads
``/proc`` at the start and the end of a stretch, no sampling thread and no dependency: psutil
would give the same numbers per process, but the sums over process trees below are ours anyway.

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
from pathlib import Path
from types import TracebackType

TICKS = os.sysconf("SC_CLK_TCK")
PROC = Path("/proc")
TASKS = "tasks"
CLIENT = "bench client"
MACHINE = "machine"


@dataclass(frozen=True)
class _Proc:
    ppid: int
    own: int  # utime + stime, ticks
    reaped: int  # cutime + cstime: children this process has waited for


def _read_procs() -> dict[int, _Proc]:
    procs = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_bytes()
        except OSError:  # ended while we listed /proc
            continue
        # The command name may hold spaces and parentheses; the fields start after the last ")".
        fields = raw[raw.rindex(b")") + 2 :].split()
        # fields[0] is the state; ppid, then utime, stime, cutime, cstime (stat fields 4, 14-17).
        procs[int(entry.name)] = _Proc(
            ppid=int(fields[1]),
            own=int(fields[11]) + int(fields[12]),
            reaped=int(fields[13]) + int(fields[14]),
        )
    return procs


def _machine_busy_ticks() -> int:
    """All CPUs' non-idle time (user, nice, system, irq, softirq, steal) since boot."""
    first = (PROC / "stat").read_text().splitlines()[0].split()
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in first[1:9])
    return user + nice + system + irq + softirq + steal


def snapshot(roots: Mapping[str, int | None], *, split: str | None = "scheduler") -> dict[str, float]:
    """CPU seconds so far of each component in ``roots`` (name -> root PID), plus ``machine``.

    ``split`` names the component whose descendants are reported apart, as ``tasks``."""
    procs = _read_procs()
    children: dict[int, list[int]] = defaultdict(list)
    for pid, proc in procs.items():
        children[proc.ppid].append(pid)
    live_roots = {name: pid for name, pid in roots.items() if pid is not None and pid in procs}
    root_pids = set(live_roots.values())

    def tree(pid: int) -> int:
        total, stack = 0, list(children[pid])
        while stack:
            child = stack.pop()
            if child in root_pids:
                continue
            total += procs[child].own + procs[child].reaped
            stack.extend(children[child])
        return total

    ticks: dict[str, int] = {}
    for name, pid in live_roots.items():
        if name == split:
            ticks[name] = procs[pid].own
            ticks[TASKS] = procs[pid].reaped + tree(pid)
        else:
            ticks[name] = procs[pid].own + procs[pid].reaped + tree(pid)
    ticks[MACHINE] = _machine_busy_ticks()
    return {name: value / TICKS for name, value in ticks.items()}


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
