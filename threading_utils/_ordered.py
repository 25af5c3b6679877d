"""An ordered stage: work handed to a pool as it is made, its results sent in hand-off order.

The shape: a model makes pieces one after another (speech chunks, video frames, images) and each
piece is post-processed on a pool (encoded, checked, upscaled) while the model makes the next.
The client needs the pieces in the order they were made, each as soon as it and every piece
before it are ready::

    producer thread              pool threads                   the stream (bridge's `emit`)
    ───────────────              ────────────                   ────────────────────────────
    stage.submit(encode, c0) ──▶ encode(c0) ─┐
    stage.submit(encode, c1) ──▶ encode(c1) ─┤ done callbacks:  the thread that completes the
    stage.submit(encode, c2) ──▶ encode(c2) ─┘ settle in any    in-order prefix sends it:
      (blocks while max_pending                order            emit(r0), emit(r1), emit(r2)
       hand-offs are unsent)

No thread of its own: whichever thread settles the head of the queue becomes the one sender
(a token taken under the stage's lock), sends every ready result in order, and hands the token
back; results settled meanwhile by other threads are picked up by its next look at the head.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import CancelledError, Executor, Future
from types import TracebackType
from typing import Any, Generic, ParamSpec, TypeVar

from ._context import ContextThreadPoolExecutor, capture_context
from ._errors import StreamClosed
from ._stream import Emit, _current_stream, _Stream

__all__ = ["OrderedStage"]

P = ParamSpec("P")
T = TypeVar("T")

_log = logging.getLogger("threading_utils")


class _Handoff(Generic[T]):
    """One item handed to the stage. ``settled``: its future finished and the stage has seen
    it; ``dropped``: it will never be sent. Both are read and written under the stage's lock.

    ``future`` is let go (``release()``) once the stage is done with it: the future's done
    callback refers to this hand-off, so keeping both would make a reference cycle, and the
    result (a file to delete, a tensor) would live on until the cyclic collector ran.
    """

    __slots__ = ("dropped", "future", "settled")

    def __init__(self, future: Future[T]) -> None:
        self.future: Future[T] | None = future
        self.settled = False
        self.dropped = False

    def release(self) -> Future[T]:
        future, self.future = self.future, None
        assert future is not None, "a hand-off is sent or dropped once"
        return future


class OrderedStage(Generic[T]):
    """Run work on a pool as it is handed over; send each result through ``emit`` in hand-off
    order, as soon as it and every result before it are ready.

    It replaces a hand-written sender thread (a queue of futures, one thread calling ``emit``,
    a join, error capture and re-raise, ``shutdown(cancel_futures=True)``) with one object.
    Use it in a callback producer (:func:`~threading_utils.generator_from_callback`), around
    the code that hands work over::

        @generator_from_callback()
        def speech(emit: Emit[object], text: str) -> None:
            with (
                ContextThreadPoolExecutor(2) as pool,
                OrderedStage(emit, pool, max_pending=8) as stage,
            ):
                synthesise(text, on_chunk=lambda i, samples: stage.submit(encode, i, samples))
                # leaving the block waits until every result has been sent

    Ordering:
        Results are sent in the order of the hand-offs (:meth:`submit`, :meth:`send`), each
        once; a result goes out as soon as it and every result handed over before it are
        ready, whatever order the pool finishes them in. From several threads: hand-offs are
        serialised by a lock, so they are safe, and the order is the order in which the calls
        took it (each thread's own hand-offs keep their order).

    Backpressure:
        At most ``max_pending`` hand-offs are unfinished (handed over, and not yet sent or
        dropped); a hand-off past that blocks its thread until they are down to half (as the
        bridge's own queue does: one wake-up per half a window, not one per result). ``emit``
        itself blocks while the stream's queue is full, so a slow consumer holds results here,
        and then the producer: memory stays bounded by ``max_pending`` plus the stream's
        ``max_queue_size``.

    Errors:
        The first hand-off, in hand-off order, whose work raised fails the stage: the results
        before it are sent, none after it (queued work is cancelled, running work finishes and
        its result is dropped), and the producer's next call into the stage — a hand-off, one
        blocked waiting for room, :meth:`join`, the ``with`` block's end — raises that
        exception (the same object, with the pool thread's frames). Let it escape the producer
        function, and it is the stream's error, as the producer's own would be. An error
        raised inside the ``with`` block drops the hand-offs not yet sent (as above) and
        propagates once the running ones have finished.

    Cancellation:
        When the stream's consumer leaves (a cancel, a client gone; :func:`stop_requested`
        turns True), the stage stops at once, in the thread that stopped the stream: queued
        work is cancelled and never runs, results that are ready but unsent are dropped, and
        work already running finishes and its result is dropped when it does. A dropped result
        is passed to ``discard`` (e.g. ``PredictionFiles.discard``, which deletes the file),
        never to ``emit``. The producer's next hand-off (or the one blocked waiting for room)
        raises :class:`StreamClosed`, as ``emit`` does, which unwinds the producer; the bridge
        swallows it. The stage learns of the stop from the stream it is created in (the
        producer's); used elsewhere, from ``emit`` raising :class:`StreamClosed`.

    Close:
        Leaving the ``with`` block normally is :meth:`close`: it waits until every result has
        been sent, then refuses further hand-offs (``RuntimeError``). However the block ends,
        it returns only once no work of the stage runs on the pool any more, so nothing it
        handed over outlives it (the executor itself is not shut down: it may be shared).

    Threads:
        ``fn`` runs on ``executor``, under the state of the thread that handed it over
        (:func:`~threading_utils.capture_context`: the prediction's context, so its
        ``print``s and metrics land on the prediction, and :func:`stop_requested` works
        there); a :class:`~threading_utils.ContextThreadPoolExecutor` does that itself, any
        other executor is given the call wrapped. ``emit`` is called by one thread at a time:
        the pool thread whose result completed the in-order prefix, or the handing-over
        thread when the result was already ready (:meth:`send`, fast work). So while a stage
        is open, send everything through it (:meth:`send` for an item already made), not
        through ``emit`` directly. ``discard`` runs in whichever thread drops the result: the
        one that stopped the stream, a pool thread, or the producer.

    Args:
        emit: where results go: the bridge's ``emit`` (or any callable taking one item).
        executor: where work runs; not shut down by the stage.
        max_pending: the backpressure bound (keyword-only, >= 1).
        discard: called with each result that is made but never sent; exceptions it raises
            are logged.
    """

    def __init__(
        self,
        emit: Emit[T],
        executor: Executor,
        *,
        max_pending: int,
        discard: Callable[[T], object] | None = None,
    ) -> None:
        if not isinstance(executor, Executor):
            raise TypeError(f"executor must be a concurrent.futures.Executor, not {executor!r}")
        if isinstance(max_pending, bool) or not isinstance(max_pending, int):
            raise TypeError(f"max_pending must be an int, not {max_pending!r}")
        if max_pending < 1:
            raise ValueError(f"max_pending must be >= 1, not {max_pending}")
        self._emit = emit
        self._executor = executor
        self._max_pending = max_pending
        self._low = max_pending // 2  # a blocked hand-off resumes once the unsent are down to it
        self._discard = discard
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._pending: deque[_Handoff[T]] = deque()  # handed over, not yet sent: oldest first
        self._unfinished = 0  # len(_pending) + the one being sent
        self._outstanding = 0  # hand-offs whose done callback has not finished
        self._sending = False  # the sender's token
        self._halted = False  # nothing more is sent: stopped, failed, or abandoned
        self._stopped = False  # the consumer left
        self._closed = False  # no more hand-offs
        self._error: BaseException | None = None
        self._stream: _Stream[Any] | None = _current_stream.get()
        if self._stream is not None and not self._stream.add_stop_hook(self._stop):
            self._stopped = self._halted = True

    # ── the producer's side ──────────────────────────────────────────────────────────────────

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> None:
        """Run ``fn(*args, **kwargs)`` on the executor; its result is sent in its turn.

        Blocks while ``max_pending`` hand-offs are unfinished. Raises :class:`StreamClosed`
        once the consumer has left, the first error of the stage's work (see Errors), or
        ``RuntimeError`` after :meth:`close`.
        """
        with self._changed:
            self._wait_for_room()
            future = self._submit(fn, *args, **kwargs)
            handoff = self._track(future)
        future.add_done_callback(functools.partial(self._settle, handoff))

    def send(self, item: T) -> None:
        """Hand over an item that is already made: it is sent after every earlier hand-off.

        Blocks, and raises, as :meth:`submit` does.
        """
        future: Future[T] = Future()
        future.set_result(item)
        with self._changed:
            self._wait_for_room()
            handoff = self._track(future)
        future.add_done_callback(functools.partial(self._settle, handoff))

    def join(self) -> None:
        """Wait until every result handed over so far has been sent.

        Raises :class:`StreamClosed` if the consumer left, or the stage's first error.
        """
        with self._changed:
            while True:
                self._raise_if_halted()
                if self._unfinished == 0:
                    return
                self._changed.wait()

    def close(self) -> None:
        """:meth:`join`, then refuse further hand-offs; returns once no work of the stage runs.

        Idempotent. Raises as :meth:`join` does (again on every call).
        """
        try:
            self.join()
        finally:
            self._finish()

    def __enter__(self) -> OrderedStage[T]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
            return
        with self._changed:  # the producer failed (or unwinds after a stop): send nothing more
            self._halted = True
            dropped = self._take_pending()
        self._drop(dropped)
        self._finish()

    @property
    def max_pending(self) -> int:
        return self._max_pending

    # ── guards (each one a method, so that the tests can show the fault it prevents) ─────────

    def _submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        """Context: the pool runs ``fn`` under the state of the handing-over thread."""
        if isinstance(self._executor, ContextThreadPoolExecutor):
            return self._executor.submit(fn, *args, **kwargs)
        return self._executor.submit(capture_context().run, fn, *args, **kwargs)

    def _has_room(self) -> bool:
        """Backpressure (under the lock)."""
        return self._unfinished < self._max_pending

    def _next_to_send(self) -> _Handoff[T] | None:
        """Ordering (under the lock): the head of the queue, once it is ready; else None."""
        if self._halted or not self._pending or not self._pending[0].settled:
            return None
        return self._pending.popleft()

    def _take_sender_token(self) -> bool:
        """One sender at a time (under the lock): ``emit`` is never called from two threads."""
        if self._sending:
            return False
        self._sending = True
        return True

    def _cancel(self, future: Future[T]) -> None:
        """Stop: queued work never runs (running work finishes; its result is dropped)."""
        future.cancel()

    def _fail(self, error: BaseException) -> None:
        """Errors: called by the sender for the head of the queue, so the first in order."""
        with self._changed:
            if self._error is None and not self._stopped:
                self._error = error
            self._halted = True
            dropped = self._take_pending()
            self._changed.notify_all()
        self._drop(dropped)

    # ── internals ────────────────────────────────────────────────────────────────────────────

    def _raise_if_halted(self) -> None:
        if self._stopped:
            raise StreamClosed
        if self._error is not None:
            raise self._error

    def _wait_for_room(self) -> None:
        """Under the lock: block until a hand-off may go in, or raise."""
        while True:
            self._raise_if_halted()
            if self._closed:
                raise RuntimeError("hand-off to an OrderedStage after its close")
            if self._has_room():
                return
            while not (self._halted or self._unfinished <= self._low):
                self._changed.wait()

    def _track(self, future: Future[T]) -> _Handoff[T]:
        handoff = _Handoff(future)
        self._pending.append(handoff)
        self._unfinished += 1
        self._outstanding += 1
        return handoff

    def _settle(self, handoff: _Handoff[T], future: Future[T]) -> None:
        """The done callback: in the pool thread that finished ``future``, in the handing-over
        thread if it was finished already, or in the thread that cancelled it.

        The common cases take the lock once or twice: settle, take the sender's token and the
        head in one critical section; give the token back in another.
        """
        finished = False  # whether this callback's `_outstanding` count was given back
        try:
            with self._changed:
                handoff.settled = True
                dropped = handoff.dropped
                first: _Handoff[T] | None = None
                if not dropped and self._take_sender_token():
                    first = self._next_to_send()
                    if first is None:  # the head is not ready: its settler will send
                        self._sending = False
                if not dropped and first is None:
                    finished = self._finished_one()
            if dropped:
                self._throw_away(future)
            elif first is not None:
                finished = self._send_ready(first)
        except BaseException:  # a done callback must not raise into the executor's worker
            _log.exception("OrderedStage: settling a hand-off failed")
        finally:
            if not finished:
                with self._changed:
                    self._finished_one()

    def _finished_one(self) -> bool:
        """Under the lock: one done callback less to wait for (``_finish``)."""
        self._outstanding -= 1
        if not self._outstanding:
            self._changed.notify_all()
        return True

    def _send_ready(self, handoff: _Handoff[T]) -> bool:
        """Holding the sender's token: send ``handoff`` and every result ready after it, in
        order, then hand the token back (and the callback's count, in the same critical
        section). A result settled by another thread meanwhile is seen at the next look at the
        head: that thread found the token taken, both under the lock, so nothing is missed."""
        unsent = True  # `handoff` still counts in `_unfinished`
        try:
            while True:
                self._send_one(handoff.release())
                with self._changed:
                    self._unfinished -= 1
                    unsent = False
                    if self._unfinished <= self._low:  # blocked hand-offs, join()
                        self._changed.notify_all()
                    next_handoff = self._next_to_send()
                    if next_handoff is None:
                        self._sending = False
                        return self._finished_one()
                handoff, unsent = next_handoff, True
        except BaseException:
            with self._changed:
                if unsent:
                    self._unfinished -= 1
                self._sending = False
                self._changed.notify_all()
            raise

    def _send_one(self, future: Future[T]) -> None:
        if future.cancelled():  # cancelled by someone else than the stage
            self._fail(CancelledError("a hand-off's future was cancelled"))
            return
        error = future.exception()
        if error is not None:
            self._fail(error)
            return
        item = future.result()
        try:
            self._emit(item)
        except StreamClosed:
            self._throw(item)
            self._stop()
        except BaseException as exc:
            self._throw(item)
            self._fail(exc)

    def _stop(self) -> None:
        """The consumer left: the stream's stop hook, or ``emit`` raised StreamClosed."""
        with self._changed:
            self._stopped = self._halted = True
            dropped = self._take_pending()
            self._changed.notify_all()
        self._drop(dropped)

    def _take_pending(self) -> list[tuple[_Handoff[T], bool]]:
        """Under the lock: mark every unsent hand-off dropped; (hand-off, settled) for each."""
        dropped = [(handoff, handoff.settled) for handoff in self._pending]
        for handoff, _ in dropped:
            handoff.dropped = True
        self._unfinished -= len(dropped)
        self._pending.clear()
        return dropped

    def _drop(self, dropped: list[tuple[_Handoff[T], bool]]) -> None:
        """Outside the lock. A hand-off settled when it was dropped is discarded here; any other
        is cancelled, or discarded by its own done callback once its running work finishes."""
        for handoff, settled in dropped:
            future = handoff.release()
            if settled:
                self._throw_away(future)
            else:
                self._cancel(future)

    def _throw_away(self, future: Future[T]) -> None:
        if not future.cancelled() and future.exception() is None:
            self._throw(future.result())

    def _throw(self, item: T) -> None:
        if self._discard is None:
            return
        try:
            self._discard(item)
        except Exception:
            _log.exception("OrderedStage: discard(%r) failed", item)

    def _finish(self) -> None:
        """No more hand-offs; wait until no work of the stage runs; leave the stream."""
        with self._changed:
            self._closed = True
            while self._outstanding:
                self._changed.wait()
        if self._stream is not None:
            self._stream.remove_stop_hook(self._stop)
