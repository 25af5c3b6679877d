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
loop callback, or for a thread the release of a held C-level lock, ``_Signal``) under a lock, the
producer takes it under the same lock.
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
import types
import weakref
from collections import deque
from collections.abc import AsyncGenerator, Callable, Generator, Iterable
from concurrent.futures import Executor, Future
from typing import Any, Concatenate, Generic, ParamSpec, Protocol, TypeVar, overload

from ._context import CapturedContext, capture_context
from ._errors import StreamClosed
from ._pool import default_pool

__all__ = [
    "DEFAULT_GRACE_PERIOD",
    "DEFAULT_MAX_QUEUE_SIZE",
    "Channel",
    "Emit",
    "StreamClosed",
    "async_generator_from_callback",
    "async_generator_from_thread",
    "generator_from_callback",
    "generator_from_thread",
    "request_stop",
    "stop_requested",
]

P = ParamSpec("P")
T = TypeVar("T")
R = TypeVar("R")
S = TypeVar("S")

DEFAULT_MAX_QUEUE_SIZE = 1024
"""Items a producer may run ahead of its consumer before it blocks."""

DEFAULT_GRACE_PERIOD = 5.0
"""Seconds a consumer's close waits for its producer to finish."""

# A sync consumer blocks in slices this long, so that an exception delivered to its thread
# asynchronously (cog cancels sync predictions with PyThreadState_SetAsyncExc) is raised within
# one slice. Each slice's end takes the GIL from whatever thread runs the model: 50 ms slices gave
# 32 waiting consumers 640 wake-ups a second (docs/benchmarks.md, "The server's overhead").
_WAIT_SLICE = 0.2

_log = logging.getLogger("threading_utils")
_current_stream: contextvars.ContextVar[_Stream[Any] | None] = contextvars.ContextVar(
    "threading_utils_current_stream", default=None
)
# Consumer (generator / async generator) -> its stream, for request_stop(). Weak keys: an entry
# goes with its consumer; the stream does not refer to the consumer, so nothing is kept alive.
_streams: weakref.WeakKeyDictionary[object, _Stream[Any]] = weakref.WeakKeyDictionary()
_streams_lock = threading.Lock()


def request_stop(stream: object) -> bool:
    """Ask the producer of ``stream`` to stop, from any thread; True if it is one of ours.

    ``stream`` is a generator or async generator returned by this package's decorators, or by
    :meth:`Channel.stream` / :meth:`Channel.astream`. For anything else this returns False and
    does nothing — a caller may pass any object.

    Cancellation:
        :func:`stop_requested` turns True in the producer at once; a generator producer is
        closed at its next ``yield``, a callback producer's ``emit`` raises
        :class:`StreamClosed`, a :class:`Channel`'s feeder sees ``stop_requested``. The
        consumer drops the items not yet received: its next step (or the one it is waiting in)
        waits, as its own close would, up to the grace period for the producer to finish, and
        then ends the stream normally (``StopIteration`` / ``StopAsyncIteration``), so whoever
        iterates it sees an end, not an error. Idempotent; safe to call after the stream ended.

    Threads:
        Meant for a thread other than the consumer's: a runtime's cancel path that cannot
        reach the code iterating the stream. The consumer's own way out is ``close()``.
    """
    try:
        target = _streams.get(stream)
    except TypeError:  # not weak-referenceable: not one of ours
        return False
    if target is None:
        return False
    target.request_stop()
    return True


def _register(consumer: T, stream: _Stream[Any]) -> T:
    with _streams_lock:
        _streams[consumer] = stream
    return consumer


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


class _Signal:
    """A one-consumer ``threading.Event`` on one C-level lock: held = clear, released = set.

    ``set`` is one ``release`` in the producer's thread (``Event.set`` runs a Python-level
    ``Condition`` under the GIL the producer shares with the model), and ``wait`` one timed
    ``acquire``. Only the consumer clears or waits; setting a set signal does nothing.
    """

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()

    def set(self) -> None:
        with contextlib.suppress(RuntimeError):  # already set
            self._lock.release()

    def clear(self) -> None:
        self._lock.acquire(blocking=False)

    def wait(self, timeout: float) -> bool:
        """True once set (and clear again); False after ``timeout`` seconds."""
        return self._lock.acquire(timeout=timeout)


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
        "signal",
        "space",
        "started",
        "stop",
        "stop_hooks",
        "waiter",
    )

    def __init__(
        self,
        fn: Callable[..., Iterable[T]] | None,
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
        self.signal = _Signal()  # the sync consumer's waiter
        self.space = threading.Event()  # the producer's wait for room
        self.producer_waiting = False
        self.stop = False
        self.stop_hooks: list[Callable[[], object]] | None = None
        self.done = False
        self.error: BaseException | None = None
        self.started = False
        self.future: Future[Any] | None = None

    # ── producer side (worker thread) ────────────────────────────────────────────────────────

    def start(self) -> None:
        """Hand the producer to its executor (the consumer's first step calls this)."""
        with self.lock:  # request_stop() may run in another thread at the same time
            if self.started:  # stopped before it started
                return
            self.started = True
            captured = self.captured
            self.captured = None
        assert captured is not None
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
        """Ask the producer to stop; it closes its generator at its next ``yield``.

        Any thread may call it: the consumer's close, or :func:`request_stop` from elsewhere.
        """
        self.stop = True
        self.space.set()
        with self.lock:
            unstarted = not self.started
            if unstarted:
                self.started = True
                self.captured = None
            hooks, self.stop_hooks = self.stop_hooks, None
        for hook in hooks or ():
            try:
                hook()
            except Exception:
                _log.exception("stream stop hook failed")
        if unstarted:
            self.finish()
        elif self.future is not None and self.future.cancel():
            self.finish()  # never started on the caller's executor
        else:
            self.wake_consumer()  # a consumer waiting for items now waits for the end

    def add_stop_hook(self, hook: Callable[[], object]) -> bool:
        """Call ``hook()`` once when the consumer leaves; False (not added) if it already has.

        The hook runs in the thread that stops the stream (the consumer's close, or whoever
        calls :func:`request_stop`), so it must not block: an ordered stage cancels its queued
        work there.
        """
        with self.lock:
            if self.stop:
                return False
            if self.stop_hooks is None:
                self.stop_hooks = []
            self.stop_hooks.append(hook)
            return True

    def remove_stop_hook(self, hook: Callable[[], object]) -> None:
        with self.lock:
            if self.stop_hooks is not None and hook in self.stop_hooks:
                self.stop_hooks.remove(hook)

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
        signal = self.signal
        signal.clear()
        waiter = signal.set
        if not self.publish(waiter):
            return
        try:
            if deadline is None:
                while not signal.wait(_WAIT_SLICE):
                    pass
            else:
                while not signal.wait(min(_WAIT_SLICE, max(0.0, deadline - time.monotonic()))):
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


class _CallbackStream(_Stream[T]):
    """A stream whose producer is a blocking function handed an ``emit`` callable."""

    __slots__ = ()

    @staticmethod
    def check_function(fn: Callable[..., object], result: object = None) -> None:
        """Reject what cannot push through ``emit``: a generator or coroutine (function).

        Called with ``fn`` when decorating and with what ``fn`` returned when it returns: such a
        function would otherwise "run" without ever being iterated or awaited, and the stream
        would end empty instead of failing.
        """
        import inspect  # only here: the bridge's hot path never needs it

        name = getattr(fn, "__qualname__", repr(fn))
        if inspect.isgeneratorfunction(fn) or inspect.isgenerator(result):
            problem = "is a generator function (bridge those with generator_from_thread)"
        elif inspect.isasyncgenfunction(fn) or inspect.isasyncgen(result):
            problem = "is an async generator function"
        elif inspect.iscoroutinefunction(fn) or inspect.isawaitable(result):
            problem = "is a coroutine function"
        else:
            return
        close = getattr(result, "close", None)  # generators, coroutines (not async generators)
        if close is not None:
            close()  # no "never awaited" warning on top of the error
        raise TypeError(
            f"{name} {problem}; a callback producer is a blocking function that calls "
            "emit(item) for every item"
        )

    def produce(self) -> None:
        """Call the producer function to its end, a stop request, or an error (worker thread)."""
        _current_stream.set(self)
        try:
            if self.stopped():
                return
            fn = self.fn
            assert fn is not None
            self.check_function(fn, fn(self.emit, *self.args, **self.kwargs))
        except BaseException as exc:
            # After the consumer left, the function ends quietly: the StreamClosed that `emit`
            # raised, or whatever the function made of it, is dropped (nobody would receive
            # it). Before that, even a StreamClosed is an error: not this stream's end.
            if not self.stop:
                self.error = exc
        finally:
            self.fn = None
            self.args = ()
            self.kwargs = {}
            self.finish()

    def emit(self, item: T) -> None:
        """Hand ``item`` to the consumer; block while the queue is full (the producer's side)."""
        if self.stop or self.done:
            raise StreamClosed
        items = self.items
        items.append(item)
        if self.waiter is not None:
            self.wake_consumer()
        if len(items) >= self.limit and not self.wait_for_space():
            raise StreamClosed


class Channel(_Stream[T]):
    """One stream fed by a thread you run yourself — typically one thread feeding many streams.

    The bridge's decorators give every stream a worker thread of its own. A continuous-batching
    scheduler is the opposite: *one* thread produces for many consumers, each of which belongs to
    a different request (a different Cog prediction). A :class:`Channel` is one such consumer's
    stream: the request creates it, the feeding thread sends into it, and the request
    iterates :meth:`stream` or :meth:`astream` with the same contract as
    :func:`generator_from_thread` / :func:`async_generator_from_thread`::

        channel = Channel()                      # in the request: captures its context
        scheduler.enqueue(prompt, channel)       # the feeding thread, later:
        ...                                      #   channel.send(piece) ... channel.close()
        return channel.stream()                  #   channel.run(print, "done") -> this request

    Context:
        The constructor captures the calling thread's state (:func:`capture_context`).
        :meth:`run` calls a function *in the feeding thread* under that state, so a log line,
        a ``logging`` record or a Cog metric written on behalf of one request lands on that
        request, whichever request the thread served a moment before. Inside :meth:`run`,
        :func:`stop_requested` answers for this channel.

    Threads:
        One feeding thread calls :meth:`send`, :meth:`close`, :meth:`run` and reads
        :attr:`writable` / :attr:`stop_requested`; none of them blocks. One consumer iterates
        the stream: :meth:`stream` in any one thread, :meth:`astream` on an event loop.

    Ordering:
        Items arrive in the order they were sent, each exactly once.

    Backpressure:
        :meth:`send` never blocks, so a slow consumer cannot stall the feeding thread or the
        other channels it feeds. Instead :attr:`writable` turns False once ``max_queue_size``
        items wait (0 = never); the feeder should then *pause* that request — a scheduler skips
        its sequence — until ``on_ready`` is called: from the consumer's thread, once the
        consumer has taken the queue down to half. Items sent while not writable are still
        queued; the bound is the feeder's to keep.

    Errors:
        ``close(error)`` ends the stream; the consumer raises ``error`` (the same object)
        after every item sent before it.

    Cancellation:
        When the consumer leaves early — ``close()``/``aclose()``, ``break`` and finalisation,
        garbage collection (also of a stream never iterated), its task cancelled, an
        asynchronous exception in its thread, or :func:`request_stop` from any thread —
        :attr:`stop_requested` turns True, ``on_ready`` is called, :meth:`send` drops its items
        and returns False, and the consumer's close waits up to ``grace_period`` for the feeder
        to acknowledge with :meth:`close` (then it logs a warning and returns). A feeder that
        checks :attr:`stop_requested` once per step therefore frees the request's resources
        within one step, before the consumer's close returns. ``close()`` on a stream that was
        never iterated runs no code (Python generators work so): the feeder learns of it when
        the stream is collected — at once in CPython, when its last reference goes.

    Args:
        max_queue_size: items that may wait before :attr:`writable` turns False (0: never).
        grace_period: seconds a consumer's close waits for :meth:`close`.
        on_ready: called, without arguments, from the consumer's thread when the feeder may
            send again (room after a full queue) or must look at the channel (the consumer
            left). It must not block; use it to wake the feeding thread.
    """

    __slots__ = ("_claimed", "_context", "_on_ready")

    def __init__(
        self,
        max_queue_size: int = DEFAULT_MAX_QUEUE_SIZE,
        *,
        grace_period: float = DEFAULT_GRACE_PERIOD,
        on_ready: Callable[[], object] | None = None,
    ) -> None:
        _check_options(None, max_queue_size, grace_period)
        super().__init__(
            None,  # no producer: the feeder is a thread of the caller's
            (),
            {},
            executor=None,
            max_queue_size=max_queue_size,
            grace_period=grace_period,
        )
        context = self.captured
        assert context is not None
        self._context = context
        self.captured = None
        self.started = True  # there is no producer to start: the feeder is already running
        self._on_ready = on_ready
        self._claimed = False

    # ── the feeding thread ───────────────────────────────────────────────────────────────────

    def send(self, item: T) -> bool:
        """Queue ``item`` for the consumer; never blocks. False (dropped) once it has left."""
        if self.stop or self.done:
            return False
        items = self.items
        items.append(item)
        if self.waiter is not None:
            self.wake_consumer()
        if len(items) >= self.limit:
            self.producer_waiting = True
            if len(items) <= self.low:  # the consumer drained it before it saw the flag
                self.resume_producer()
        return True

    @property
    def writable(self) -> bool:
        """False once the consumer left, the channel closed, or ``max_queue_size`` items wait."""
        return not self.stop and not self.done and len(self.items) < self.limit

    @property
    def stop_requested(self) -> bool:
        """True once the consumer has gone away (see Cancellation)."""
        return self.stop

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called (or the consumer left before it began)."""
        return self.done

    def close(self, error: BaseException | None = None) -> None:
        """End the stream; the consumer raises ``error``, if given, after the items before it.

        Idempotent: only the first call counts.
        """
        with self.lock:
            if self.done:
                return
            self.error = error
        self.finish()

    def run(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Call ``fn(*args, **kwargs)`` in the calling thread, under the channel's context.

        Errors:
            Whatever ``fn`` raises propagates unchanged to the caller (the feeding thread).
        """
        return self._context.run(self._call_as_current, fn, args, kwargs)

    def _call_as_current(
        self, fn: Callable[..., R], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> R:
        _current_stream.set(self)  # in the fresh context copy that run() made: not leaked
        return fn(*args, **kwargs)

    # ── the consumer ─────────────────────────────────────────────────────────────────────────

    def stream(self) -> Generator[T, None, None]:
        """The consumer's side as a generator (iterate it in any one thread). Call it once."""
        self._claim()
        consumer = _sync_side(self)
        weakref.finalize(consumer, self.request_stop)  # left without being iterated or closed
        return consumer

    def astream(self) -> AsyncGenerator[T, None]:
        """The consumer's side as an async generator (iterate it on one loop). Call it once."""
        self._claim()
        return _async_side(self)  # which also stops the feeder if it is left unfinalised

    def _claim(self) -> None:
        with self.lock:
            claimed, self._claimed = self._claimed, True
        if claimed:
            raise RuntimeError("a Channel has one consumer: stream()/astream() called twice")

    # ── hooks called by the consumer side ────────────────────────────────────────────────────

    def resume_producer(self) -> None:
        super().resume_producer()
        self._notify()

    def request_stop(self) -> None:
        first = not self.stop
        super().request_stop()
        if first:
            self._notify()

    def _notify(self) -> None:
        on_ready = self._on_ready
        if on_ready is not None:
            try:
                on_ready()
            except Exception:
                _log.exception("Channel on_ready callback failed")


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
            if stream.stop:  # request_stop() from another thread: end quietly
                await stream.close_async(loop)
                return
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
            if stream.stop:  # request_stop() from another thread: end quietly
                stream.close_sync()
                return
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


def _opener(
    cls: type[_Stream[Any]], executor: Executor | None, max_queue_size: int, grace_period: float
) -> Callable[[Callable[..., Any], tuple[Any, ...], dict[str, Any]], _Stream[Any]]:
    """Check a decorator's options once; return what opens one stream of ``cls`` per call."""
    _check_options(executor, max_queue_size, grace_period)
    return functools.partial(
        cls, executor=executor, max_queue_size=max_queue_size, grace_period=grace_period
    )


def _sync_side(stream: _Stream[T]) -> Generator[T, None, None]:
    """The consumer of ``stream`` as a generator, known to :func:`request_stop`."""
    return _register(_consume_sync(stream), stream)


def _async_side(stream: _Stream[T]) -> AsyncGenerator[T, None]:
    """The consumer of ``stream`` as an async generator, known to :func:`request_stop`.

    It also stops the producer if the consumer is collected without being finalised by an event
    loop (no asyncgen hooks, or the loop already closed).
    """
    consumer = _register(_consume_async(stream), stream)
    weakref.finalize(consumer, stream.request_stop)
    return consumer


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
    iterated, entirely in one worker thread, under the captured state. A method may be
    decorated too (``def tokens(self, prompt)``, called as ``self.tokens(prompt)``): the
    decorated function binds as a method, ``self`` first.

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
    open_stream = _opener(_Stream, executor, max_queue_size, grace_period)

    def decorator(fn: Callable[P, Iterable[T]]) -> Callable[P, AsyncGenerator[T, None]]:
        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> AsyncGenerator[T, None]:
            return _async_side(open_stream(fn, args, kwargs))

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
        waiting consumer sleeps in slices of at most 200 ms, so it is raised within one) — the
        producer is stopped as for :func:`async_generator_from_thread`, and the close blocks
        the consumer's thread until the producer has finished or ``grace_period`` has passed.
    """
    open_stream = _opener(_Stream, executor, max_queue_size, grace_period)

    def decorator(fn: Callable[P, Iterable[T]]) -> Callable[P, Generator[T, None, None]]:
        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> Generator[T, None, None]:
            return _sync_side(open_stream(fn, args, kwargs))

        return wrapper

    return decorator


Emit = Callable[[T], None]
"""The callable a callback producer receives: ``emit(item)`` hands one item to the consumer."""


class _SyncCallbackDecorator(Protocol):
    """What :func:`generator_from_callback` returns: a function (``emit`` first) becomes a
    function without ``emit``; a method (``emit`` after ``self``) a method without it."""

    @overload
    def __call__(
        self, fn: Callable[Concatenate[Emit[T], P], object], /
    ) -> Callable[P, Generator[T, None, None]]: ...

    @overload
    def __call__(
        self, fn: Callable[Concatenate[S, Emit[T], P], object], /
    ) -> Callable[Concatenate[S, P], Generator[T, None, None]]: ...


class _AsyncCallbackDecorator(Protocol):
    """What :func:`async_generator_from_callback` returns (see :class:`_SyncCallbackDecorator`)."""

    @overload
    def __call__(
        self, fn: Callable[Concatenate[Emit[T], P], object], /
    ) -> Callable[P, AsyncGenerator[T, None]]: ...

    @overload
    def __call__(
        self, fn: Callable[Concatenate[S, Emit[T], P], object], /
    ) -> Callable[Concatenate[S, P], AsyncGenerator[T, None]]: ...


class _CallbackFunction:
    """A callback producer, decorated: called as a function, it passes ``emit`` first; reached
    through an instance (or its class) as a method, it passes ``emit`` after ``self``, as
    Python binds methods. Static and class methods bind as they do without the decorator.

    A descriptor, because the decorator cannot tell a method from a function when it runs (a
    ``def`` in a class body is a plain function then): only attribute access on an instance or
    a class says which it is.
    """

    def __init__(
        self,
        fn: Callable[..., object],
        open_stream: Callable[[Callable[..., Any], tuple[Any, ...], dict[str, Any]], _Stream[Any]],
        side: Callable[[_Stream[Any]], object],
    ) -> None:
        _CallbackStream.check_function(getattr(fn, "__func__", fn))
        self._fn = fn
        self._open = open_stream
        self._side = side
        functools.update_wrapper(self, fn)

        def method(instance: object, /, *args: Any, **kwargs: Any) -> Any:
            # fn(instance, emit, *args, **kwargs): emit after self, as Python binds methods
            return self._call(types.MethodType(fn, instance), *args, **kwargs)

        self._method = functools.update_wrapper(method, fn)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._call(self._fn, *args, **kwargs)

    def _call(self, fn: Callable[..., object], /, *args: Any, **kwargs: Any) -> Any:
        return self._side(self._open(fn, args, kwargs))  # the stream calls fn(emit, *args)

    def __get__(self, instance: object, owner: type | None = None) -> Callable[..., Any]:
        fn = self._fn
        if isinstance(fn, staticmethod | classmethod):  # bind as they do: emit first / after cls
            return functools.partial(self._call, fn.__get__(instance, owner))
        if instance is None:  # Class.method(obj, ...)
            return self._method
        return types.MethodType(self._method, instance)


def generator_from_callback(
    executor: Executor | None = None,
    max_queue_size: int = DEFAULT_MAX_QUEUE_SIZE,
    *,
    grace_period: float = DEFAULT_GRACE_PERIOD,
) -> _SyncCallbackDecorator:
    """Turn a blocking function that *pushes* items through a callback into a generator.

    The push-style counterpart of :func:`generator_from_thread`, for producers that call you
    instead of yielding: a Hugging Face ``generate(streamer=...)``, a diffusers
    ``callback_on_step_end``, a llama.cpp token callback, any C library with a callback. The
    decorated function receives ``emit`` as its first argument and calls ``emit(item)`` for
    every item; it runs in the bridge's worker thread, under the caller's state::

        @generator_from_callback()
        def tokens(emit: Emit[str], prompt: str) -> None:
            model.generate(prompt, streamer=MyStreamer(emit))  # streamer.put() -> emit(text)

        async def predict(self, prompt: str) -> Iterator[str]:
            return tokens(prompt)                # state captured here; `emit` is supplied

    Methods:
        A method takes ``emit`` after ``self`` — ``def _tokens(self, emit, prompt)``, called as
        ``self._tokens(prompt)`` — because the decorated object binds as methods do: reached
        through an instance or its class, ``emit`` goes after the bound ``self``; called as a
        plain function, first. Static methods take ``emit`` first, class methods after ``cls``.

    Threads:
        As for :func:`generator_from_thread`: the function runs on ``executor`` or the shared
        pool, one worker per stream, started by the consumer's first ``next()``. Call ``emit``
        from that worker (where the library calls its callback) or from one thread the function
        starts and joins — one thread at a time (to send work finished on a pool in order, use
        :class:`~threading_utils.OrderedStage`); a thread started with
        :class:`~threading_utils.ContextThread` also sees :func:`stop_requested`.

    Ordering:
        Items arrive in the order ``emit`` was called, each exactly once.

    Backpressure:
        ``emit`` blocks while ``max_queue_size`` items wait, until the consumer has taken them
        down to half (0 = unbounded: it never blocks).

    Errors:
        An exception that escapes the function is raised in the consumer after every item
        emitted before it (the same object, with the worker's frames in its traceback) — also
        a :class:`StreamClosed` while the consumer is still there (not this stream's end).
        When the function returns, the stream ends; its return value is ignored. A generator
        or coroutine function is rejected with ``TypeError`` (when decorating, or, when the
        function returns one, in the consumer).

    Cancellation:
        When the consumer leaves early (as for :func:`generator_from_thread`), or
        :func:`request_stop` is called on the stream: :func:`stop_requested` turns True in the
        worker at once — poll it where the library offers a hook (a ``StoppingCriteria``, a
        step callback) — and the next ``emit`` (or the one blocked on a full queue) raises
        :class:`StreamClosed`, which unwinds the function; the bridge swallows it. A function
        that ends after the consumer left ends quietly: any error it raises then is dropped.
        The consumer's close waits up to ``grace_period`` for the function to return.
    """
    open_stream = _opener(_CallbackStream, executor, max_queue_size, grace_period)

    def decorator(fn: Callable[..., object]) -> Any:
        return _CallbackFunction(fn, open_stream, _sync_side)

    return decorator


def async_generator_from_callback(
    executor: Executor | None = None,
    max_queue_size: int = DEFAULT_MAX_QUEUE_SIZE,
    *,
    grace_period: float = DEFAULT_GRACE_PERIOD,
) -> _AsyncCallbackDecorator:
    """The async-consumer counterpart of :func:`generator_from_callback`.

    The same contract (Methods, Threads, Ordering, Backpressure, Errors, Cancellation),
    consumed with ``async for`` on an event loop, as :func:`async_generator_from_thread` is; the
    consumer's steps never block the loop, and a close waits for the function without blocking
    it.
    """
    open_stream = _opener(_CallbackStream, executor, max_queue_size, grace_period)

    def decorator(fn: Callable[..., object]) -> Any:
        return _CallbackFunction(fn, open_stream, _async_side)

    return decorator
