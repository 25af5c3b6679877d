"""Dynamic batching: many callers' items, one call of a batch function, each item's own context.

Design::

    callers (event-loop tasks, threads)          the batch thread (one, owned by the Batcher)
    ───────────────────────────────────          ────────────────────────────────────────────
    await batcher.asubmit(x) ─┐ captures the     wait for the first item, then ≤ max_wait more
    batcher.submit(x) ────────┤ caller's state   take ≤ max_batch_size, oldest first
                              ▼                  results = fn(items)        one forward pass
                 FIFO queue (≤ max_queue) ─────▶   current_batch()[i].run(log, ...)
                                                     └─ under caller i's context
    returns results[i] / raises ◀── wake ──────  results handed back, each to its own caller

A caller blocks (a thread) or suspends (a task, without blocking its loop) until its own result is
there. Nothing on the hot path polls: a submit appends under a lock and wakes the batch thread only
when the queue was empty or just filled a batch; a result wakes its caller with one lock release
(a thread) or one ``loop.call_soon_threadsafe`` per event loop and batch (tasks).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
import queue
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, Generic, ParamSpec, TypeVar

from ._context import CapturedContext, capture_context
from ._stream import _WAIT_SLICE

__all__ = [
    "DEFAULT_MAX_BATCH_SIZE",
    "DEFAULT_MAX_QUEUE",
    "DEFAULT_MAX_WAIT",
    "BatchItem",
    "Batcher",
    "current_batch",
]

P = ParamSpec("P")
T = TypeVar("T")
R = TypeVar("R")
S = TypeVar("S")

DEFAULT_MAX_BATCH_SIZE = 32
"""Items one call of the batch function gets at most."""

DEFAULT_MAX_WAIT = 0.0
"""Seconds the batch thread waits for more items after the oldest one arrived (see Batcher)."""

DEFAULT_MAX_QUEUE = 1024
"""Items that may wait for a batch before ``submit`` / ``asubmit`` fail with ``queue.Full``."""

_log = logging.getLogger("threading_utils")

# An item's life: queued -> running (in a batch) -> done (its outcome is set, its caller woken).
# gone: its caller left (cancelled, timed out, hit by an exception) before taking the outcome.
_QUEUED, _RUNNING, _DONE, _GONE = range(4)

_current_batch: contextvars.ContextVar[tuple[BatchItem[Any], ...]] = contextvars.ContextVar(
    "threading_utils_current_batch", default=()
)


def current_batch() -> tuple[BatchItem[Any], ...]:
    """Inside a batch function: the batch it was called with, one :class:`BatchItem` per item.

    ``current_batch()[i].item is items[i]``: the same order as the batch function's argument.
    Anywhere else (also when the batch function is called directly, not by a :class:`Batcher`)
    it is ``()``, so per-item reporting written as ``for entry in current_batch(): ...`` does
    nothing there. A context variable: threads that the batch function starts with
    :class:`~threading_utils.ContextThread` or
    :class:`~threading_utils.ContextThreadPoolExecutor` see it too.
    """
    return _current_batch.get()


class BatchItem(Generic[T]):
    """One caller's item in the running batch; :func:`current_batch` lists them.

    ``item`` is what the caller submitted, ``queue_time`` the seconds it waited from its submit
    to the start of this batch's call, ``batch_size`` the number of items in the batch.
    :meth:`run` calls a function under the caller's context; :attr:`gone` tells whether the
    caller has left.
    """

    __slots__ = (
        "_after_run",
        "_batcher",
        "_context",
        "_error",
        "_future",
        "_in_run",
        "_loop",
        "_result",
        "_signal",
        "_state",
        "_traceback",
        "batch_size",
        "item",
        "started",
        "submitted",
    )

    def __init__(self, item: T, batcher: Batcher[Any, Any]) -> None:
        self.item = item
        self.submitted = time.monotonic()
        self.started = 0.0
        self.batch_size = 0
        self._batcher = batcher
        self._context: CapturedContext = capture_context()
        self._state = _QUEUED
        self._in_run = 0  # calls of run() in progress
        self._after_run: list[Callable[[], object]] | None = None  # called once _in_run is 0
        self._result: Any = None
        self._error: BaseException | None = None
        self._traceback: TracebackType | None = None
        self._signal: threading.Lock | None = None  # a thread's wake-up: released when done
        self._loop: asyncio.AbstractEventLoop | None = None  # a task's wake-up: its future
        self._future: asyncio.Future[None] | None = None

    @property
    def queue_time(self) -> float:
        """Seconds from the caller's submit to the start of the batch function's call."""
        return self.started - self.submitted

    @property
    def gone(self) -> bool:
        """True once the caller has left (cancelled, timed out, or hit by an exception).

        Its result will be discarded and :meth:`run` no longer calls anything for it. A batch
        function may read it to skip work done only for that item (its per-item output).
        """
        return self._state == _GONE

    def run(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R | None:
        """Call ``fn(*args, **kwargs)`` in the calling thread under this item's caller's state.

        The state is what :func:`~threading_utils.capture_context` took in the caller at submit
        time: its context variables (in Cog: the prediction's scope, where ``print``,
        ``logging`` and ``current_scope().record_metric()`` go) and torch's thread-local modes.
        Call it from the batch function (its thread, or a thread it joins before returning).
        Write the work as a function that looks things up when it runs: ``entry.run(report,
        n)`` with ``def report(n): current_scope().record_metric("batch_size", n)`` — not
        ``entry.run(current_scope().record_metric, ...)``, which looks the scope up in the
        batch thread, outside any prediction.

        Cancellation:
            Once the caller has left (:attr:`gone`), or once the batch function has returned,
            ``fn`` is not called and the result is ``None``: nothing is written under a
            caller's context after its ``submit`` / ``asubmit`` has returned or raised. A
            caller that leaves while ``fn`` runs waits for that call to end before it goes.

        Errors:
            Whatever ``fn`` raises propagates unchanged to the batch function.
        """
        lock = self._batcher._lock
        with lock:
            if self._state != _RUNNING:
                return None
            self._in_run += 1
        try:
            return self._context.run(fn, *args, **kwargs)
        finally:
            with lock:
                self._in_run -= 1
                after = self._after_run if self._in_run == 0 else None
                if after is not None:
                    self._after_run = None
            for callback in after or ():
                callback()

    def __repr__(self) -> str:
        state = ("queued", "running", "done", "gone")[self._state]
        return f"<BatchItem {state} {self.item!r}>"

    # ── the caller's side (its thread or event loop) ─────────────────────────────────────────

    def _outcome(self) -> Any:
        error = self._error
        if error is not None:
            self._error = None
            raise error.with_traceback(self._traceback)  # the batch thread's frames, then ours
        result, self._result = self._result, None
        return result


def _resolve_all(futures: list[asyncio.Future[None]]) -> None:
    for future in futures:
        if not future.done():
            future.set_result(None)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Batcher(Generic[T, R]):
    """Dynamic batching: callers submit one item each, one thread runs ``fn`` over many at once.

    ``fn(items: list[T]) -> list[R]`` is the batch function — typically one forward pass of a
    model over a batch built from the items. Every caller (a Cog prediction: an async ``run()``
    on coglet's event loop, or a sync one in its thread) submits one item and gets its own
    result, ``fn``'s output at the item's position::

        def forward(self, texts: list[str]) -> list[str]:    # runs in the batch thread
            batch = current_batch()
            for entry in batch:                              # per item, in its caller's context
                entry.run(report, len(batch), entry.queue_time)
            with torch.inference_mode():
                return decode(self.model(encode(texts)))     # one forward pass for all

        def report(size: int, queue_time: float) -> None:    # -> that prediction's logs/metrics
            print(f"batched with {size - 1} others")
            current_scope().record_metric("batch_size", size)
            current_scope().record_metric("queue_ms", queue_time * 1000)

        batcher = Batcher(self.forward, max_batch_size=32).start()    # in setup()
        text = await batcher.asubmit(prompt)                 # in each prediction (or .submit)

    A bound method works as ``fn``, as any callable does. ``fn`` may return any iterable of
    the same length (a list, a tuple, a tensor's rows); one result per item, in order.

    Threads:
        :meth:`start` starts one thread, the batch thread, that runs every call of ``fn``, one
        at a time. One thread because a model wants its forward passes in one place: on the
        CPU, torch parallelises each op over one OpenMP team (two threads each running a
        forward pass oversubscribe the cores and both slow down); on CUDA, the work of one
        thread goes in order to one stream, and the thread keeps its device. The thread runs
        under the state captured by :meth:`start` (:func:`~threading_utils.capture_context`):
        start the batcher inside ``torch.inference_mode()`` — or enter it in ``fn`` — for the
        forward passes to run in it. Each item's own torch modes apply only inside its
        :meth:`BatchItem.run`. Lines printed by ``fn`` outside :meth:`BatchItem.run` land in
        that start state's context (in Cog, started in ``setup()``: the worker's log, on no
        prediction). ``num_threads`` sets torch's intra-op threads in the batch thread
        (``torch.set_num_threads``; torch also makes it the default of threads started later)
        and ``thread_init`` is called there next, before the first batch — set a CUDA device,
        warm up. :meth:`submit` blocks its thread; :meth:`asubmit` never blocks the event loop.

    Batching and ordering:
        Items are taken strictly first in, first out: a batch is the oldest waiting items, at
        most ``max_batch_size``, and a batch never skips an older item. The batch thread
        starts a batch as soon as an item waits and either ``max_batch_size`` items wait or the
        oldest has waited ``max_wait`` seconds. ``max_wait=0`` (the default) adds no latency:
        a batch holds what queued while the previous one ran, so batches grow with the load
        by themselves, and an item arriving at an idle batcher runs alone at once. A positive
        ``max_wait`` trades up to that much latency for fuller batches when callers arrive
        spread out — worth it only when a batch costs much less per item than a call of one
        (measure it: ``benchmarks/batching``). Callers that wait for their result before
        sending the next (Cog predictions) rarely fill a batch, so there a positive
        ``max_wait`` adds its whole length to most batches. ``max_batch_size`` bounds the
        memory of a batch and the latency every member pays for the others' share of the call.

    Backpressure:
        At most ``max_queue`` items wait (running batches not counted); past that,
        :meth:`submit` and :meth:`asubmit` raise :class:`queue.Full` at once instead of
        queueing: a caller is never blocked for room, and a server with more concurrent
        callers than ``max_queue`` fails the surplus fast. Size it at least the number of
        callers (Cog: ``@cog.concurrent(max=N)``, times the items each submits).

    Errors:
        If ``fn`` raises an :class:`Exception`, every caller of that batch raises the same
        exception object, with the batch thread's frames in its traceback (their local
        variables cleared, so that a failed batch's tensors are freed). A result that is an
        :class:`Exception` instance fails only its own caller, which raises it: return
        ``ValueError("bad input")`` at an item's position to reject one item and serve the
        others. A result count other than the item count fails the whole batch with
        :class:`ValueError`. The batcher goes on with the next batch. Anything else that
        escapes ``fn`` (``SystemExit``, ``KeyboardInterrupt``: never re-raised in a caller's
        task or thread) stops the batch thread: the callers of that batch, every waiting and
        every later caller raise ``RuntimeError("the Batcher's thread stopped: ...")``, its
        ``__cause__`` the original.

    Cancellation:
        A caller leaves when its task is cancelled (``asubmit``; also by ``asyncio.timeout``),
        its ``timeout`` passes (``submit``: :class:`TimeoutError`), or an exception is raised
        in its thread while it waits (cog cancels a sync prediction with
        ``PyThreadState_SetAsyncExc``; a waiting caller sleeps in slices of at most 200 ms, so
        it is raised within one). A queued item is then removed: ``fn`` never sees it. An item
        whose batch is running stays in it — the others' results are unaffected — and its
        result is discarded; :attr:`BatchItem.gone` turns True and :meth:`BatchItem.run` stops
        calling anything under its context. A caller leaving while a :meth:`BatchItem.run` of
        its own is in progress waits for that call to end, so nothing is written under its
        context after it has left.

    Close:
        :meth:`close` (or leaving ``with``) fails every queued item at once with
        :class:`RuntimeError`, lets the running batch finish (its callers get their results),
        and joins the batch thread; later submits raise :class:`RuntimeError`. Idempotent.
        The thread is a daemon thread, so a batcher left unclosed does not keep the process
        alive.

    Args:
        fn: the batch function, ``fn(items) -> results``, one result per item.
        max_batch_size: items one call of ``fn`` gets at most.
        max_wait: seconds to wait for more items once the oldest has arrived (0: none).
        max_queue: items that may wait before submits fail with :class:`queue.Full`.
        num_threads: torch intra-op threads for the batch thread (None: leave torch's setting).
        thread_init: called without arguments in the batch thread before the first batch.
        name: the batch thread's name.
    """

    def __init__(
        self,
        fn: Callable[[list[T]], Iterable[R | Exception]],
        *,
        max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
        max_wait: float = DEFAULT_MAX_WAIT,
        max_queue: int = DEFAULT_MAX_QUEUE,
        num_threads: int | None = None,
        thread_init: Callable[[], object] | None = None,
        name: str = "batcher",
    ) -> None:
        if not callable(fn):
            raise TypeError(f"the batch function must be callable, not {fn!r}")
        for option, value in (("max_batch_size", max_batch_size), ("max_queue", max_queue)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{option} must be an int >= 1, not {value!r}")
        if not (isinstance(max_wait, int | float) and 0 <= max_wait < float("inf")):
            raise ValueError(f"max_wait must be a finite number of seconds >= 0, not {max_wait!r}")
        if num_threads is not None and (not isinstance(num_threads, int) or num_threads < 1):
            raise ValueError(f"num_threads must be an int >= 1 or None, not {num_threads!r}")
        self._fn = fn
        self.max_batch_size = max_batch_size
        self.max_wait = float(max_wait)
        self.max_queue = max_queue
        self._num_threads = num_threads
        self._thread_init = thread_init
        self._name = name
        self._lock = threading.Lock()  # guards _queue, every item's state, _stopped, _closing
        self._wakeup = threading.Condition(self._lock)  # the batch thread waits on it
        self._queue: deque[BatchItem[T]] = deque()
        self._stopped: str | None = "the Batcher was not started: call start() or use `with`"
        self._closing = False
        self._thread: threading.Thread | None = None

    # ── lifecycle ─────────────────────────────────────────────────────────────────────────────

    def start(self) -> Batcher[T, R]:
        """Start the batch thread; returns self. Once only.

        Captures the calling thread's state for the batch thread (see Threads) and waits until
        ``num_threads`` and ``thread_init`` have been applied there.

        Errors:
            What ``thread_init`` (or ``torch.set_num_threads``) raised is raised here, and the
            batcher is closed. A second call raises :class:`RuntimeError`.
        """
        with self._lock:
            if self._thread is not None or self._closing:
                raise RuntimeError("a Batcher starts once, and not after close()")
            ready = threading.Event()
            init_error: list[BaseException] = []
            captured = capture_context()
            self._thread = threading.Thread(
                target=captured.run,
                args=(self._serve, ready, init_error),
                name=self._name,
                daemon=True,
            )
            self._stopped = None
        self._thread.start()
        ready.wait()
        if init_error:
            self._thread.join()
            raise init_error[0]
        return self

    def close(self) -> None:
        """Fail the queued items, let the running batch finish, join the thread. Idempotent.

        Errors:
            Each queued caller raises ``RuntimeError("the Batcher was closed before this item
            ran")``. Called from inside the batch function, it does not wait for the thread
            (which ends once that batch is done).
        """
        with self._lock:
            self._closing = True
            if self._stopped is None or self._thread is None:
                self._stopped = "the Batcher is closed"
            dropped = self._take_queue()
            self._wakeup.notify_all()
        _deliver(dropped, None, lambda: RuntimeError("the Batcher was closed before this item ran"))
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def __enter__(self) -> Batcher[T, R]:
        """Start the batcher unless it was started already (``with Batcher(fn).start() as b``)."""
        if self._thread is None:
            return self.start()
        if not self.running:
            raise RuntimeError(self._stopped or "the Batcher is closed")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def queued(self) -> int:
        """Items waiting for a batch now (not those of the running batch)."""
        return len(self._queue)

    @property
    def running(self) -> bool:
        """True between :meth:`start` and :meth:`close` while the batch thread serves."""
        return self._stopped is None and not self._closing

    # ── callers ───────────────────────────────────────────────────────────────────────────────

    def submit(self, item: T, *, timeout: float | None = None) -> R:
        """Submit ``item`` from a thread and wait for its result; returns ``fn``'s result for it.

        Captures the calling thread's state for the item (see :meth:`BatchItem.run`). Blocks
        the calling thread, which must not be running an event loop (use :meth:`asubmit`
        there) nor be the batch thread.

        Errors:
            As the class docstring says (the batch's error, the item's own, ``RuntimeError``
            once closed), ``queue.Full`` past ``max_queue``, and :class:`TimeoutError` after
            ``timeout`` seconds without a result (the item is dropped, see Cancellation).
        """
        if threading.current_thread() is self._thread:
            raise RuntimeError("submit() from the batch function would wait for itself")
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise RuntimeError("submit() would block the running event loop: use asubmit()")
        entry: BatchItem[T] = BatchItem(item, self)
        signal = threading.Lock()
        signal.acquire()
        entry._signal = signal
        self._enqueue(entry)
        deadline = None if timeout is None else time.monotonic() + timeout
        timed_out = False
        try:
            if deadline is None:
                while not signal.acquire(timeout=_WAIT_SLICE):
                    pass
            else:
                while not signal.acquire(
                    timeout=min(_WAIT_SLICE, max(0.0, deadline - time.monotonic()))
                ):
                    if time.monotonic() >= deadline:
                        timed_out = self._leave_sync(entry, keep_done=True)
                        break
        except BaseException:  # an asynchronous exception (cog's cancel) while waiting
            self._leave_sync(entry, keep_done=False)
            raise
        if timed_out:
            raise TimeoutError(f"no result within {timeout} s; the item was dropped")
        result: R = entry._outcome()
        return result

    async def asubmit(self, item: T) -> R:
        """Submit ``item`` from a coroutine and wait for its result, without blocking the loop.

        Captures the calling task's state for the item (see :meth:`BatchItem.run`).

        Errors:
            As for :meth:`submit` (no ``timeout``: wrap it in ``asyncio.timeout``).

        Cancellation:
            Cancelling the awaiting task drops the item (see the class docstring) and raises
            :class:`asyncio.CancelledError` in it.
        """
        loop = asyncio.get_running_loop()
        entry: BatchItem[T] = BatchItem(item, self)
        future = loop.create_future()
        entry._loop = loop
        entry._future = future
        self._enqueue(entry)
        try:
            await future
        except BaseException:
            done = self._leave(entry, keep_done=False, waiter=lambda: _async_waiter(loop))
            if done is not None:  # one of its BatchItem.run calls is in progress: let it end
                await _wait_shielded(done)
            raise
        result: R = entry._outcome()
        return result

    def _enqueue(self, entry: BatchItem[T]) -> None:
        with self._lock:
            if self._stopped is not None:
                raise RuntimeError(self._stopped)
            pending = self._queue
            if len(pending) >= self.max_queue:
                raise queue.Full(
                    f"the Batcher's queue is full ({self.max_queue} items wait; max_queue)"
                )
            pending.append(entry)
            n = len(pending)
            if n == 1 or n == self.max_batch_size:  # the two points where the thread may wait
                self._wakeup.notify()

    def _leave(
        self,
        entry: BatchItem[T],
        *,
        keep_done: bool,
        waiter: Callable[[], tuple[Callable[[], object], S]],
    ) -> S | None:
        """The caller leaves: drop ``entry`` if queued, discard its outcome if not taken yet.

        Returns what to wait on when a :meth:`BatchItem.run` of the entry is in progress
        (``waiter()`` makes the pair: the callback that ends the wait, and the thing to wait
        on), else None. With ``keep_done``, an entry whose outcome is already set is kept (its
        caller takes it) and nothing is returned.
        """
        with self._lock:
            state = entry._state
            if state == _GONE or (keep_done and state == _DONE):
                return None
            if state == _QUEUED:
                self._queue.remove(entry)
            entry._state = _GONE
            entry._result = None
            entry._error = entry._traceback = None
            if not entry._in_run:
                return None
            wake, handle = waiter()
            if entry._after_run is None:
                entry._after_run = []
            entry._after_run.append(wake)
            return handle

    def _leave_sync(self, entry: BatchItem[T], *, keep_done: bool) -> bool:
        """:meth:`_leave` from a thread: True once left, False if the outcome is kept."""
        done = self._leave(entry, keep_done=keep_done, waiter=_sync_waiter)
        if done is not None:  # one of its BatchItem.run calls is in progress: let it end
            while not done.acquire(timeout=_WAIT_SLICE):
                pass
        return entry._state == _GONE

    # ── the batch thread ──────────────────────────────────────────────────────────────────────

    def _serve(self, ready: threading.Event, init_error: list[BaseException]) -> None:
        """The batch thread's body, under the state captured by start()."""
        try:
            if self._num_threads is not None:
                import torch  # only when asked for: this package never imports torch itself

                torch.set_num_threads(self._num_threads)
            if self._thread_init is not None:
                self._thread_init()
        except BaseException as exc:
            init_error.append(exc)
            with self._lock:
                self._stopped = f"the Batcher's thread_init failed: {exc!r}"
                self._closing = True
            ready.set()
            return
        ready.set()
        batch: list[BatchItem[T]] | None = None
        try:
            while True:
                batch = self._next_batch()
                if batch is None:
                    return
                self._run_batch(batch)
                batch = None
        except BaseException as exc:
            _log.critical("the Batcher's thread stopped", exc_info=exc)
            message = f"the Batcher's thread stopped: {exc!r}"
            with self._lock:
                self._stopped = message
                dropped = self._take_queue()
            if batch is not None:  # raised by the batch function, or by the batcher mid-batch
                dropped += [e for e in batch if e._state == _RUNNING]
            cause = exc
            _clear_frames(cause)
            _deliver(dropped, None, lambda: _chained(RuntimeError(message), cause))

    def _next_batch(self) -> list[BatchItem[T]] | None:
        """Wait for the next batch and take it (its items turn running); None once closing."""
        pending = self._queue
        size = self.max_batch_size
        with self._lock:
            while True:
                if self._closing:
                    return None
                if not pending:
                    self._wakeup.wait()
                    continue
                if len(pending) < size and self.max_wait > 0:
                    remaining = pending[0].submitted + self.max_wait - time.monotonic()
                    if remaining > 0:
                        self._wakeup.wait(remaining)
                        continue  # re-check: closed, items cancelled, the head changed
                n = min(size, len(pending))
                batch = [pending.popleft() for _ in range(n)]
                break
            now = time.monotonic()
            for entry in batch:
                entry._state = _RUNNING
                entry.started = now
                entry.batch_size = n
        return batch

    def _run_batch(self, batch: list[BatchItem[T]]) -> None:
        token = _current_batch.set(tuple(batch))
        try:
            results = self._call(batch)
        except Exception as exc:  # anything else stops the thread (see _serve)
            error = exc
            _clear_frames(error)  # the batch's tensors go now, not with the last caller's error
            _deliver(batch, None, lambda: error)
            return
        finally:
            _current_batch.reset(token)
        _deliver(batch, results, None)

    def _call(self, batch: list[BatchItem[T]]) -> list[R | Exception]:
        out = self._fn([entry.item for entry in batch])
        results = out if type(out) is list else list(out)
        if len(results) != len(batch):
            name = getattr(self._fn, "__qualname__", repr(self._fn))
            raise ValueError(
                f"the batch function {name} returned {len(results)} results for {len(batch)} "
                "items; it must return one result per item, in the items' order"
            )
        return results

    def _take_queue(self) -> list[BatchItem[T]]:
        """Empty the queue (under the lock); its items turn running, to be failed by the caller."""
        dropped = list(self._queue)
        self._queue.clear()
        for entry in dropped:
            entry._state = _RUNNING
        return dropped

    def __repr__(self) -> str:
        state = "running" if self.running else (self._stopped or "closing")
        return (
            f"<Batcher {self._name!r} {state}, {self.queued} queued, "
            f"max_batch_size={self.max_batch_size}, max_wait={self.max_wait}>"
        )


def _deliver(
    batch: list[BatchItem[Any]],
    results: list[Any] | None,
    error: Callable[[], BaseException] | None,
) -> None:
    """Set each running item's outcome and wake its caller; items whose caller left are skipped.

    ``results[i]`` for item i, or, when ``error`` is given, the exception it makes (called once
    per item, or once for all when it returns the same object).
    """
    if not batch:
        return
    lock = batch[0]._batcher._lock
    signals: list[threading.Lock] = []
    futures: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
    with lock:
        for i, entry in enumerate(batch):
            if entry._state != _RUNNING:
                continue  # gone: its result is discarded
            entry._state = _DONE
            outcome = error() if error is not None else results[i] if results is not None else None
            if isinstance(outcome, Exception):
                entry._error = outcome
                entry._traceback = outcome.__traceback__
            else:
                entry._result = outcome
            if entry._in_run:  # a run() of it still in progress: wake the caller after it
                if entry._after_run is None:
                    entry._after_run = []
                entry._after_run.append(functools.partial(_wake, entry))
            elif entry._signal is not None:
                signals.append(entry._signal)
            elif entry._loop is not None and entry._future is not None:
                futures.setdefault(entry._loop, []).append(entry._future)
    for signal in signals:
        signal.release()
    for loop, waiting in futures.items():
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits on it
            loop.call_soon_threadsafe(_resolve_all, waiting)


def _wake(entry: BatchItem[Any]) -> None:
    if entry._signal is not None:
        entry._signal.release()
    elif entry._loop is not None and entry._future is not None:
        with contextlib.suppress(RuntimeError):
            entry._loop.call_soon_threadsafe(_resolve, entry._future)


def _sync_waiter() -> tuple[Callable[[], object], threading.Lock]:
    done = threading.Lock()
    done.acquire()
    return done.release, done


def _async_waiter(
    loop: asyncio.AbstractEventLoop,
) -> tuple[Callable[[], object], asyncio.Future[None]]:
    done: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_resolve, done)

    return wake, done


async def _wait_shielded(done: asyncio.Future[None]) -> None:
    """Wait for ``done`` even if the task is cancelled again meanwhile (a short wait)."""
    while not done.done():
        try:
            await asyncio.shield(done)
        except asyncio.CancelledError:
            continue


def _chained(error: BaseException, cause: BaseException) -> BaseException:
    error.__cause__ = cause
    return error


def _clear_frames(error: BaseException) -> None:
    """Drop the local variables of the frames in ``error``'s tracebacks (lines stay)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        traceback.clear_frames(current.__traceback__)
        current = current.__cause__ or current.__context__
