"""Streams: a sync generator running in a worker thread, consumed from an async or sync caller.

Design (one stream)::

    producer thread                                    consumer (event loop or thread)
    ───────────────                                    ───────────────────────────────
    for item in gen:            ┌──────────────┐
        items.append(item) ───▶ │ deque (≤ N)  │ ───▶  popleft() while items are there
        wake consumer if it     └──────────────┘       else: publish a waiter, sleep
          published a waiter                           wake producer once ≤ N/2 remain
        sleep while N items wait

The hot path is lock-free: one ``deque.append`` and two attribute reads per item on the
producer's side, one ``deque.popleft`` and one attribute read on the consumer's. The threads
only synchronise when one of them has nothing to do: the consumer publishes a waiter (an event
loop callback or a ``threading.Event``) under a lock, the producer takes it under the same lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import AsyncGenerator, Callable, Generator, Iterable
from concurrent.futures import Executor, Future
from typing import Any, Generic, ParamSpec, TypeVar

from ._context import CapturedContext, capture_context
from ._pool import default_pool

__all__ = [
    "DEFAULT_GRACE_PERIOD",
    "DEFAULT_MAX_QUEUE_SIZE",
    "async_generator_from_thread",
    "generator_from_thread",
    "stop_requested",
]

P = ParamSpec("P")
T = TypeVar("T")

DEFAULT_MAX_QUEUE_SIZE = 1024
"""Items a producer may run ahead of its consumer before it blocks."""

DEFAULT_GRACE_PERIOD = 5.0
"""Seconds a consumer's close waits for its producer to finish."""

# A sync consumer blocks in slices this long, so that an exception delivered to its thread
# asynchronously (cog cancels sync predictions with PyThreadState_SetAsyncExc) is raised promptly.
_WAIT_SLICE = 0.05

_log = logging.getLogger("threading_utils")
_current_stream: contextvars.ContextVar[_Stream[Any] | None] = contextvars.ContextVar(
    "threading_utils_current_stream", default=None
)


def stop_requested() -> bool:
    """True inside a stream's producer once its consumer has gone away; False anywhere else.

    Producers only notice that their consumer left at their next ``yield``. Code that runs long
    between two yields (a prefill, a diffusion step, a torch stopping criterion) polls this and
    returns early. It is cheap (a context-variable read and an attribute read).

    The flag travels with the producer's context: a :class:`~threading_utils.ContextThread` or
    :class:`~threading_utils.ContextThreadPoolExecutor` task started by the producer sees it too.
    """
    stream = _current_stream.get()
    return stream is not None and stream.stop


class _Stream(Generic[T]):
    """The state shared by one producer thread and one consumer.

    Fields written by the producer: ``items`` (append), ``done``, ``error``.
    Fields written by the consumer: ``items`` (popleft), ``stop``.
    ``waiter`` is written by both, under ``lock``.
    """

    __slots__ = (
        "__weakref__",
        "args",
        "captured",
        "done",
        "error",
        "event",
        "executor",
        "fn",
        "future",
        "grace_period",
        "items",
        "kwargs",
        "limit",
        "lock",
        "low",
        "producer_waiting",
        "space",
        "started",
        "stop",
        "waiter",
    )

    def __init__(
        self,
        fn: Callable[..., Iterable[T]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        executor: Executor | None,
        max_queue_size: int,
        grace_period: float,
    ) -> None:
        self.fn: Callable[..., Iterable[T]] | None = fn
        self.args = args
        self.kwargs = kwargs
        self.captured: CapturedContext | None = capture_context()
        self.executor = executor
        self.grace_period = grace_period
        self.items: deque[T] = deque()
        self.limit = max_queue_size if max_queue_size > 0 else sys.maxsize
        self.low = max_queue_size // 2
        self.lock = threading.Lock()
        self.waiter: Callable[[], object] | None = None
        self.event = threading.Event()  # the sync consumer's waiter
        self.space = threading.Event()  # the producer's wait for room
        self.producer_waiting = False
        self.stop = False
        self.done = False
        self.error: BaseException | None = None
        self.started = False
        self.future: Future[Any] | None = None

    # ── producer side (worker thread) ────────────────────────────────────────────────────────

    def start(self) -> None:
        """Hand the producer to its executor (the consumer's first step calls this)."""
        self.started = True
        captured = self.captured
        assert captured is not None
        self.captured = None
        try:
            if self.executor is None:
                default_pool().submit(functools.partial(captured.run, self.produce))
            else:
                self.future = self.executor.submit(captured.run, self.produce)
        except BaseException as exc:  # e.g. RuntimeError from an executor that was shut down
            self.error = exc
            self.done = True

    def produce(self) -> None:
        """Run the generator to its end, a stop request, or an error. Runs in the worker thread."""
        _current_stream.set(self)
        iterator = None
        try:
            if self.stopped():  # the consumer left before the producer started
                return
            fn = self.fn
            assert fn is not None
            iterator = iter(fn(*self.args, **self.kwargs))
            items = self.items
            append = items.append
            limit = self.limit
            for item in iterator:
                if self.stop:
                    break
                append(item)
                if self.waiter is not None:
                    self.wake_consumer()
                if len(items) >= limit and not self.wait_for_space():
                    break
        except BaseException as exc:
            self.error = exc
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                try:
                    close()  # GeneratorExit at the paused yield: its finally blocks run here
                except BaseException as exc:
                    if self.error is None:
                        self.error = exc
            del iterator
            self.fn = None
            self.args = ()
            self.kwargs = {}
            self.finish()

    def stopped(self) -> bool:
        return self.stop

    def finish(self) -> None:
        self.done = True
        self.wake_consumer()

    def wake_consumer(self) -> None:
        with self.lock:
            waiter, self.waiter = self.waiter, None
        if waiter is not None:
            # RuntimeError: the consumer's event loop is closed, so nobody is waiting.
            with contextlib.suppress(RuntimeError):
                waiter()

    def wait_for_space(self) -> bool:
        """Block until the consumer has taken the queue down to half; False when stopped."""
        space = self.space
        items = self.items
        low = self.low
        self.producer_waiting = True
        try:
            while True:
                space.clear()
                if self.stop:
                    return False
                if len(items) <= low:
                    return True
                space.wait()
        finally:
            self.producer_waiting = False

    # ── consumer side ─────────────────────────────────────────────────────────────────────────

    def resume_producer(self) -> None:
        """Called by the consumer once the queue is down to ``low`` while the producer waits.

        Clearing ``producer_waiting`` first makes this happen once per wait, not once per item
        until the producer thread gets the GIL back (it re-checks the length after waking).
        """
        self.producer_waiting = False
        self.space.set()

    def publish(self, waiter: Callable[[], object]) -> bool:
        """Publish ``waiter``; False (and nothing published) if there is already work to do."""
        with self.lock:
            self.waiter = waiter
        # Re-check after publishing: the producer appends, then reads `waiter`; the consumer
        # publishes, then reads `items`/`done`. One of the two sees the other's write.
        if self.items or self.done:
            self.retract(waiter)
            return False
        return True

    def retract(self, waiter: Callable[[], object]) -> None:
        with self.lock:
            if self.waiter is waiter:
                self.waiter = None

    def request_stop(self) -> None:
        """Ask the producer to stop; it closes its generator at its next ``yield``."""
        self.stop = True
        self.space.set()
        if not self.started:
            self.started = True
            self.captured = None
            self.finish()
        elif self.future is not None and self.future.cancel():
            self.finish()  # never started on the caller's executor

    def result(self) -> None:
        """The end of the stream: raise the producer's error, if any."""
        error, self.error = self.error, None
        if error is not None:
            raise error

    def warn_overdue(self) -> None:
        _log.warning(
            "stream producer did not finish within %.1fs of its consumer leaving; "
            "it will stop at its next yield (poll stop_requested() in long steps)",
            self.grace_period,
        )

    # sync waiting ──────────────────────────────────────────────────────────────────────────────

    def wait_sync(self, deadline: float | None = None) -> None:
        """Sleep until there is work (or ``deadline``, a ``time.monotonic()`` value)."""
        event = self.event
        event.clear()
        waiter = event.set
        if not self.publish(waiter):
            return
        try:
            if deadline is None:
                while not event.wait(_WAIT_SLICE):
                    pass
            else:
                while not event.wait(min(_WAIT_SLICE, max(0.0, deadline - time.monotonic()))):
                    if time.monotonic() >= deadline:
                        return
        finally:
            self.retract(waiter)

    def close_sync(self) -> None:
        """Stop the producer and wait up to the grace period for it to finish."""
        self.request_stop()
        self.items.clear()
        deadline = time.monotonic() + self.grace_period
        while not self.done:
            if time.monotonic() >= deadline:
                self.warn_overdue()
                return
            self.wait_sync(deadline)
            self.items.clear()

    # async waiting ─────────────────────────────────────────────────────────────────────────────

    async def wait_async(
        self, loop: asyncio.AbstractEventLoop, timeout: float | None = None
    ) -> None:
        """Suspend the calling task until there is work (or ``timeout`` seconds)."""
        future: asyncio.Future[None] = loop.create_future()
        waiter = functools.partial(loop.call_soon_threadsafe, _resolve, future)
        if not self.publish(waiter):
            return
        timer = None if timeout is None else loop.call_later(timeout, _resolve, future)
        try:
            await future
        finally:
            self.retract(waiter)
            if timer is not None:
                timer.cancel()

    async def close_async(self, loop: asyncio.AbstractEventLoop) -> None:
        """Stop the producer and wait, without blocking the loop, up to the grace period."""
        self.request_stop()
        self.items.clear()
        deadline = loop.time() + self.grace_period
        while not self.done:
            remaining = deadline - loop.time()
            if remaining <= 0:
                self.warn_overdue()
                return
            await self.wait_async(loop, remaining)
            self.items.clear()


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def _consume_async(stream: _Stream[T]) -> AsyncGenerator[T, None]:
    loop = asyncio.get_running_loop()
    stream.start()
    items = stream.items
    popleft = items.popleft
    low = stream.low
    try:
        while True:
            if items:
                item = popleft()
                if stream.producer_waiting and len(items) <= low:
                    stream.resume_producer()
                yield item
            elif stream.done:
                if not items:
                    stream.result()
                    return
            else:
                await stream.wait_async(loop)
    finally:
        if not stream.done:
            await stream.close_async(loop)


def _consume_sync(stream: _Stream[T]) -> Generator[T, None, None]:
    stream.start()
    items = stream.items
    popleft = items.popleft
    low = stream.low
    try:
        while True:
            if items:
                item = popleft()
                if stream.producer_waiting and len(items) <= low:
                    stream.resume_producer()
                yield item
            elif stream.done:
                if not items:
                    stream.result()
                    return
            else:
                stream.wait_sync()
    finally:
        if not stream.done:
            stream.close_sync()


def _check_options(executor: object, max_queue_size: int, grace_period: float) -> None:
    if callable(executor) and not isinstance(executor, Executor):
        raise TypeError("use the decorator with parentheses: @async_generator_from_thread()")
    if executor is not None and not isinstance(executor, Executor):
        raise TypeError(f"executor must be a concurrent.futures.Executor, not {executor!r}")
    if isinstance(max_queue_size, bool) or not isinstance(max_queue_size, int):
        raise TypeError(f"max_queue_size must be an int, not {max_queue_size!r}")
    if max_queue_size < 0:
        raise ValueError(f"max_queue_size must be >= 0 (0 = unbounded), not {max_queue_size}")
    if not grace_period >= 0:
        raise ValueError(f"grace_period must be >= 0 seconds, not {grace_period!r}")


def async_generator_from_thread(
    executor: Executor | None = None,
    max_queue_size: int = DEFAULT_MAX_QUEUE_SIZE,
    *,
    grace_period: float = DEFAULT_GRACE_PERIOD,
) -> Callable[[Callable[P, Iterable[T]]], Callable[P, AsyncGenerator[T, None]]]:
    """Turn a sync generator function into one that returns an async generator.

    ::

        @async_generator_from_thread()
        def tokens(prompt: str) -> Iterator[str]:
            yield from model.generate(prompt)    # runs in a worker thread

        async for token in tokens("hello"):     # consumed on the event loop
            ...

    Calling the decorated function captures the caller's state (:func:`capture_context`:
    context variables and torch's thread-local modes) and returns an async generator; nothing
    runs yet. Its first ``__anext__`` starts the producer: the wrapped function is called and
    iterated, entirely in one worker thread, under the captured state.

    Threads:
        The producer runs on ``executor`` if given (it must run the task in a thread of its
        own for the stream's life), else on a shared pool that starts a worker at once for
        every stream, reuses idle workers and retires them after 2 s idle. The consumer's steps
        run in the event loop's thread; they never block it.

    Ordering:
        Items arrive in the order they were yielded, each exactly once.

    Backpressure:
        The producer blocks (at the ``yield`` that filled the queue) while ``max_queue_size``
        items wait to be consumed, and resumes once the consumer has taken them down to half.
        At most ``max_queue_size`` items have been produced but not yet received by the
        consumer. ``max_queue_size=0`` means unbounded: the producer never blocks.

    Errors:
        An exception raised by the producer is raised from ``__anext__`` after every item
        yielded before it; it is the same exception object, with the producer's frames in its
        traceback.

    Cancellation:
        When the consumer leaves early — ``aclose()``, ``break`` followed by the generator's
        finalisation, garbage collection, or its task being cancelled — :func:`stop_requested`
        turns True in the producer at once, the producer's generator is closed at its next
        ``yield`` (its ``finally`` blocks run in the producer thread) and the close waits,
        without blocking the event loop, until the producer has finished or ``grace_period``
        seconds have passed (then it logs a warning and returns; the producer stops at its
        next yield). A producer blocked on a full queue is released at once.

    Args:
        executor: where to run producers; default: the shared pool.
        max_queue_size: the backpressure bound, 0 for unbounded.
        grace_period: seconds a close waits for the producer to finish.
    """
    _check_options(executor, max_queue_size, grace_period)

    def decorator(fn: Callable[P, Iterable[T]]) -> Callable[P, AsyncGenerator[T, None]]:
        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> AsyncGenerator[T, None]:
            stream = _Stream(
                fn,
                args,
                kwargs,
                executor=executor,
                max_queue_size=max_queue_size,
                grace_period=grace_period,
            )
            consumer = _consume_async(stream)
            # Also stop the producer if the consumer is collected without being finalised by
            # an event loop (no asyncgen hooks, or the loop already closed).
            weakref.finalize(consumer, stream.request_stop)
            return consumer

        return wrapper

    return decorator


def generator_from_thread(
    executor: Executor | None = None,
    max_queue_size: int = DEFAULT_MAX_QUEUE_SIZE,
    *,
    grace_period: float = DEFAULT_GRACE_PERIOD,
) -> Callable[[Callable[P, Iterable[T]]], Callable[P, Generator[T, None, None]]]:
    """Turn a sync generator function into one whose generator runs in a worker thread.

    The counterpart of :func:`async_generator_from_thread` for sync consumers: a sync
    ``predict()``, or an async one that returns a generator for the runtime to iterate in a
    thread of its own. The return value is a real :class:`types.GeneratorType`.

    ::

        @generator_from_thread()
        def tokens(prompt: str) -> Iterator[str]:
            yield from model.generate(prompt)    # runs in a worker thread

        async def predict(self, prompt: str) -> Iterator[str]:
            return tokens(prompt)                # state captured here, in the prediction

    Calling the decorated function captures the caller's state; the producer starts at the
    first ``next()``, in a worker thread, under that state — whichever thread then iterates.

    Threads, Ordering, Backpressure, Errors:
        As for :func:`async_generator_from_thread`; the consumer's ``next()`` runs in the
        thread that calls it.

    Cancellation:
        When the consumer leaves early — ``close()``, ``break`` and garbage collection, or an
        exception raised in the consumer's thread while it waits (cog delivers
        ``CancelationException`` to sync predictions with ``PyThreadState_SetAsyncExc``; a
        waiting consumer sleeps in slices of at most 50 ms, so it is raised promptly) — the
        producer is stopped as for :func:`async_generator_from_thread`, and the close blocks
        the consumer's thread until the producer has finished or ``grace_period`` has passed.
    """
    _check_options(executor, max_queue_size, grace_period)

    def decorator(fn: Callable[P, Iterable[T]]) -> Callable[P, Generator[T, None, None]]:
        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> Generator[T, None, None]:
            stream = _Stream(
                fn,
                args,
                kwargs,
                executor=executor,
                max_queue_size=max_queue_size,
                grace_period=grace_period,
            )
            return _consume_sync(stream)

        return wrapper

    return decorator
