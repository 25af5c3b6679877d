"""Where a process tree's CPU time went, per thread, from Linux's /proc (stdlib only).

A benchmark takes a :func:`snapshot` of the processes it cares about before and after a run;
:func:`delta` gives, for each thread alive at the end, the CPU time it used in between and the
time it spent *runnable but waiting for a core* (the scheduler's run-queue delay), both in
seconds. Divided by the run's wall time, they say how much of a core each thread used and how
much it was held back by the others: on a small machine the model's thread competing with the
server's own threads for a core shows up in its run-queue delay, not in its CPU time.

Sources: ``/proc/<pid>/task/<tid>/schedstat`` (CPU and run-queue nanoseconds; kernels built with
scheduler statistics, which is the usual case), else ``stat``'s utime + stime (clock ticks) with
no run-queue figure. Threads that ended during the run are not listed: take the process's own
CPU clock for those (``time.process_time()`` for the calling process).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ThreadTimes", "children", "delta", "snapshot"]

_PROC = Path("/proc")


@dataclass(frozen=True)
class ThreadTimes:
    """One thread's counters: ``cpu`` and ``waited`` (run-queue delay) in seconds."""

    pid: int
    tid: int
    name: str  # the kernel's name for the thread (15 characters at most)
    cpu: float
    waited: float | None  # None where the kernel keeps no scheduler statistics


def _thread(pid: int, tid: int) -> ThreadTimes | None:
    base = _PROC / str(pid) / "task" / str(tid)
    try:
        stat = (base / "stat").read_text()
        try:
            run_ns, wait_ns, _ = (base / "schedstat").read_text().split()
            cpu, waited = int(run_ns) / 1e9, int(wait_ns) / 1e9
        except (OSError, ValueError):
            fields = stat[stat.rindex(")") + 2 :].split()
            cpu, waited = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), None
    except (OSError, ValueError):  # the thread ended while being read
        return None
    name = stat[stat.index("(") + 1 : stat.rindex(")")]
    return ThreadTimes(pid, tid, name, cpu, waited)


def snapshot(pids: Iterable[int]) -> dict[tuple[int, int], ThreadTimes]:
    """The counters of every thread of ``pids`` now, keyed by (pid, tid)."""
    out: dict[tuple[int, int], ThreadTimes] = {}
    for pid in pids:
        try:
            tids = [int(t) for t in os.listdir(_PROC / str(pid) / "task")]
        except OSError:
            continue
        for tid in tids:
            t = _thread(pid, tid)
            if t is not None:
                out[(pid, tid)] = t
    return out


def delta(
    before: Mapping[tuple[int, int], ThreadTimes], after: Mapping[tuple[int, int], ThreadTimes]
) -> list[ThreadTimes]:
    """Per thread alive in ``after``: what it used since ``before`` (all of it if it is new)."""
    out = []
    for key, end in after.items():
        start = before.get(key)
        cpu = end.cpu - (start.cpu if start else 0.0)
        waited = None
        if end.waited is not None:
            waited = end.waited - (start.waited if start and start.waited is not None else 0.0)
        out.append(ThreadTimes(end.pid, end.tid, end.name, cpu, waited))
    return out


def children(pid: int) -> list[int]:
    """The direct child processes of ``pid`` (from each of its threads' ``children`` file)."""
    found: list[int] = []
    try:
        tids = os.listdir(_PROC / str(pid) / "task")
    except OSError:
        return found
    for tid in tids:
        try:
            text = (_PROC / str(pid) / "task" / tid / "children").read_text()
            found += [int(c) for c in text.split()]
        except OSError:
            continue
    return sorted(set(found))
