"""The shared worker pool that runs stream producers when no executor is given.

Why not a :class:`~concurrent.futures.ThreadPoolExecutor`: a stream holds its worker for its whole
life, so a pool with a fixed number of workers makes stream N+1 wait for one of the first N to end
(a deadlock when the consumer of N+1 is what would end them), and its idle workers never exit.
This pool gives every task a worker at once — an idle one if there is one, else a new thread —
and an idle worker exits after ``idle_timeout`` seconds, so the process returns to its baseline
thread count shortly after the last stream ends.
"""

from __future__ import annotations

import itertools
import os
import queue
import threading
from collections.abc import Callable

__all__ = ["WorkerPool", "default_pool"]

_Task = Callable[[], object]


class WorkerPool:
    """Runs each submitted task at once on a named daemon thread, reusing idle threads.

    Thread-safe. Tasks must not raise (the stream producer stores its errors itself); an
    exception that escapes a task is reported by :func:`threading.excepthook` and the worker exits.
    """

    def __init__(self, name: str = "threading_utils", *, idle_timeout: float = 2.0) -> None:
        self._name = name
        self.idle_timeout = idle_timeout
        self._lock = threading.Lock()
        self._idle: list[_Worker] = []
        self._busy = 0
        self._counter = itertools.count(1)

    def submit(self, task: _Task) -> None:
        """Run ``task()`` on a worker thread now (never queued behind other tasks)."""
        with self._lock:
            self._busy += 1
            worker = self._idle.pop() if self._idle else None
        if worker is not None:
            worker.inbox.put(task)
            return
        thread = threading.Thread(
            target=_Worker(self).serve,
            args=(task,),
            name=f"{self._name}-{next(self._counter)}",
            daemon=True,
        )
        thread.start()

    @property
    def busy(self) -> int:
        """Number of workers running a task right now."""
        return self._busy

    @property
    def idle(self) -> int:
        """Number of parked workers waiting for a task."""
        return len(self._idle)

    def _park(self, worker: _Worker) -> None:
        with self._lock:
            self._busy -= 1
            self._idle.append(worker)

    def _abandon(self) -> None:
        with self._lock:
            self._busy -= 1

    def _retire(self, worker: _Worker) -> bool:
        """Remove an idle worker; False when a task was handed to it meanwhile."""
        with self._lock:
            try:
                self._idle.remove(worker)
            except ValueError:
                return False
            return True


class _Worker:
    __slots__ = ("inbox", "pool")

    def __init__(self, pool: WorkerPool) -> None:
        self.pool = pool
        self.inbox: queue.SimpleQueue[_Task] = queue.SimpleQueue()

    def serve(self, task: _Task) -> None:
        current: _Task | None = task
        del task
        while current is not None:
            try:
                current()
            except BaseException:
                self.pool._abandon()
                raise
            current = None  # drop the task's references before parking
            self.pool._park(self)
            current = self._next_task()

    def _next_task(self) -> _Task | None:
        try:
            return self.inbox.get(timeout=self.pool.idle_timeout)
        except queue.Empty:
            if self.pool._retire(self):
                return None
            return self.inbox.get()  # handed a task while timing out: it is on its way


_default: WorkerPool | None = None
_default_lock = threading.Lock()


def _forget_default_pool() -> None:
    # A forked child has none of the parent's threads: start from an empty pool.
    global _default
    _default = None


os.register_at_fork(after_in_child=_forget_default_pool)


def default_pool() -> WorkerPool:
    """The process-wide pool, created on first use."""
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                _default = WorkerPool()
    return _default
