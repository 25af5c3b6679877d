"""benchmarks/proc_times.py: per-thread CPU and run-queue time from /proc, and child processes."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest

from benchmarks import proc_times

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs Linux /proc")


def test_a_busy_thread_shows_its_cpu_and_an_idle_one_none() -> None:
    ready = threading.Event()
    stop = threading.Event()
    tids: dict[str, int] = {}

    def busy() -> None:
        tids["busy"] = threading.get_native_id()
        ready.set()
        while not stop.is_set():
            pass

    def idle() -> None:
        tids["idle"] = threading.get_native_id()
        stop.wait()

    threads = [threading.Thread(target=busy), threading.Thread(target=idle)]
    for t in threads:
        t.start()
    ready.wait()
    while "idle" not in tids:
        time.sleep(0.001)
    before = proc_times.snapshot([os.getpid()])
    deadline = time.monotonic() + 60.0  # a loaded machine gives the busy thread less of a core
    while True:
        time.sleep(0.01)
        used = {t.tid: t for t in proc_times.delta(before, proc_times.snapshot([os.getpid()]))}
        if used[tids["busy"]].cpu >= 0.1 or time.monotonic() > deadline:
            break
    stop.set()
    for t in threads:
        t.join()
    assert used[tids["busy"]].cpu >= 0.1
    assert used[tids["idle"]].cpu < used[tids["busy"]].cpu / 5
    waited = used[tids["busy"]].waited
    assert waited is None or waited >= 0.0


def test_children_lists_a_child_process_and_delta_keeps_new_threads() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
    )
    try:
        assert child.pid in proc_times.children(os.getpid())
        after = proc_times.snapshot([child.pid])
        assert {t.pid for t in proc_times.delta({}, after)} == {child.pid}
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(timeout=30)
    assert child.pid not in proc_times.children(os.getpid())
    assert proc_times.snapshot([child.pid]) == {}
