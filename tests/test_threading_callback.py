"""The callback bridge (generator_from_callback): a function that pushes items through `emit`.

Ordering, backpressure, errors, the consumer leaving at any point, context, threads — the same
contract as the generator bridge (tests/test_threading_stream.py), seen from `emit`.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import logging
import threading
import time
import traceback
import types
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from conftest import collect, producer_thread_is_blocked, request_id, wait_until
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from threading_utils import (
    ContextThread,
    Emit,
    StreamClosed,
    async_generator_from_callback,
    generator_from_callback,
    request_stop,
    stop_requested,
)

PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class Boom(Exception):
    pass


def bridges(max_queue_size: int = 1024, **options: Any) -> tuple[Callable, Callable]:
    return (
        generator_from_callback(max_queue_size=max_queue_size, **options),
        async_generator_from_callback(max_queue_size=max_queue_size, **options),
    )


def consume(fn: Callable[..., object], use_async: bool, *args: Any, **options: Any) -> list:
    sync_bridge, async_bridge = bridges(**options)
    if use_async:
        return asyncio.run(collect(async_bridge(fn)(*args)))
    return list(sync_bridge(fn)(*args))


# ── ordering ──────────────────────────────────────────────────────────────────────────────────


@PROPERTY
@given(items=st.lists(st.integers()), max_queue_size=st.integers(0, 5), use_async=st.booleans())
def test_every_item_arrives_once_in_order(items, max_queue_size, use_async):
    def source(emit: Emit[int]) -> None:
        for item in items:
            emit(item)

    assert consume(source, use_async, max_queue_size=max_queue_size) == items


@PROPERTY
@given(items=st.lists(st.integers()), max_queue_size=st.integers(0, 5), use_async=st.booleans())
def test_items_emitted_from_a_thread_the_function_starts_arrive_in_order(
    items, max_queue_size, use_async
):
    """A library that calls its callback from a thread of its own (started and joined)."""

    def source(emit: Emit[int]) -> None:
        worker = ContextThread(target=lambda: [emit(item) for item in items])
        worker.start()
        worker.join()

    assert consume(source, use_async, max_queue_size=max_queue_size) == items


def test_the_function_gets_emit_first_then_its_arguments_and_runs_on_one_worker_thread():
    def source(emit: Emit[tuple], a: int, *, b: str) -> str:
        for _ in range(20):
            emit((a, b, threading.get_ident()))
        return "ignored"

    got = list(generator_from_callback(max_queue_size=2)(source)(1, b="x"))
    assert {(a, b) for a, b, _ in got} == {(1, "x")}
    assert len({ident for _, _, ident in got}) == 1
    assert got[0][2] != threading.get_ident()


def test_generator_from_callback_returns_a_real_generator_and_starts_at_first_next():
    started = threading.Event()

    def source(emit: Emit[str]) -> None:
        started.set()
        emit(request_id.get())

    request_id.set("at-call")
    stream = generator_from_callback()(source)()
    request_id.set("later")
    assert isinstance(stream, types.GeneratorType)
    assert not started.is_set()
    assert list(stream) == ["at-call"]  # captured at the call, not at the first next()


def test_an_async_consumer_gets_a_real_async_generator():
    stream = async_generator_from_callback()(lambda emit: emit(1))()
    assert isinstance(stream, types.AsyncGeneratorType)
    assert asyncio.run(collect(stream)) == [1]


# ── context ───────────────────────────────────────────────────────────────────────────────────


def test_eight_concurrent_async_streams_each_see_their_own_context():
    @async_generator_from_callback(max_queue_size=1)
    def source(emit: Emit[tuple], n: int) -> None:
        seen_in_thread: list[str] = []
        worker = ContextThread(target=lambda: seen_in_thread.append(request_id.get()))
        worker.start()
        worker.join()
        for i in range(n):
            emit((request_id.get(), seen_in_thread[0], i))

    async def one(name: str, n: int) -> list:
        request_id.set(name)
        return await collect(source(n))

    async def main():
        return await asyncio.gather(*(one(f"p{k}", 20 + k) for k in range(8)))

    results = asyncio.run(main())
    for k, got in enumerate(results):
        assert got == [(f"p{k}", f"p{k}", i) for i in range(20 + k)]


def test_a_contextvar_set_in_the_function_does_not_leak_into_the_caller():
    def source(emit: Emit[str]) -> None:
        request_id.set("inside")
        emit(request_id.get())

    request_id.set("caller")
    assert list(generator_from_callback()(source)()) == ["inside"]
    assert request_id.get() == "caller"


# ── backpressure ──────────────────────────────────────────────────────────────────────────────


@PROPERTY
@given(max_queue_size=st.integers(1, 8), taken=st.integers(1, 12), use_async=st.booleans())
def test_emit_blocks_once_max_queue_size_items_wait(max_queue_size, taken, use_async):
    produced = 0
    producer_ident = 0

    def endless(emit: Emit[int]) -> None:
        nonlocal produced, producer_ident
        producer_ident = threading.get_ident()
        while True:
            produced += 1
            emit(produced)

    def stalled_and_bounded() -> None:
        # Blocked means the queue holds more than half of max_queue_size, so it stays blocked.
        wait_until(
            lambda: (
                producer_ident != 0
                and producer_thread_is_blocked(producer_ident)
                and produced - taken > max_queue_size // 2
            ),
            what="emit to block on the full queue",
        )
        assert produced - taken <= max_queue_size

    sync_bridge, async_bridge = bridges(max_queue_size)
    if use_async:

        async def main():
            stream = async_bridge(endless)()
            assert [await anext(stream) for _ in range(taken)] == list(range(1, taken + 1))
            stalled_and_bounded()
            await stream.aclose()

        asyncio.run(main())
    else:
        stream = sync_bridge(endless)()
        assert [next(stream) for _ in range(taken)] == list(range(1, taken + 1))
        stalled_and_bounded()
        stream.close()


def test_the_function_never_runs_more_than_max_queue_size_ahead():
    log: list[str] = []

    def source(emit: Emit[int]) -> None:
        for i in range(200):
            log.append("p")
            emit(i)

    stream = generator_from_callback(max_queue_size=4)(source)()
    assert [log.append("c") or i for i in stream] == list(range(200))
    ahead = worst = 0
    for entry in log:
        ahead += 1 if entry == "p" else -1
        worst = max(worst, ahead)
    # 4 queued, plus the one item the consumer has received but not yet logged.
    assert worst <= 4 + 1


def test_emit_in_a_thread_the_function_started_blocks_and_raises_there_too():
    emitter = 0
    outcome: list[str] = []
    workers: list[ContextThread] = []

    def source(emit: Emit[int]) -> None:
        def library_thread() -> None:
            nonlocal emitter
            emitter = threading.get_ident()
            try:
                for i in itertools.count():
                    emit(i)
            except StreamClosed:
                outcome.append("StreamClosed")  # a thread's top level must not let it escape

        workers.append(ContextThread(target=library_thread))
        workers[0].start()
        workers[0].join()

    stream = generator_from_callback(max_queue_size=3)(source)()
    assert next(stream) == 0
    wait_until(lambda: emitter != 0 and producer_thread_is_blocked(emitter))
    stream.close()
    assert outcome == ["StreamClosed"]
    assert not workers[0].is_alive()  # joined by the function, before close() returned


def test_an_unbounded_queue_never_blocks_emit():
    finished = threading.Event()

    def source(emit: Emit[int]) -> None:
        for i in range(10_000):
            emit(i)
        finished.set()

    stream = generator_from_callback(max_queue_size=0)(source)()
    assert next(stream) == 0
    assert finished.wait(10)  # ran to the end while the consumer took a single item
    assert list(stream) == list(range(1, 10_000))


# ── errors ────────────────────────────────────────────────────────────────────────────────────


@PROPERTY
@given(before=st.integers(0, 30), max_queue_size=st.integers(0, 4), use_async=st.booleans())
def test_an_error_arrives_after_every_item_before_it(before, max_queue_size, use_async):
    raised: list[BaseException] = []

    def failing_function(emit: Emit[int]) -> None:
        for i in range(before):
            emit(i)
        raised.append(Boom(f"after {before}"))
        raise raised[0]

    got: list[int] = []

    async def consume_async() -> None:
        async for x in async_generator_from_callback(max_queue_size=max_queue_size)(
            failing_function
        )():
            got.append(x)

    def consume_sync() -> None:
        got.extend(generator_from_callback(max_queue_size=max_queue_size)(failing_function)())

    with pytest.raises(Boom, match=f"after {before}") as info:
        asyncio.run(consume_async()) if use_async else consume_sync()
    assert got == list(range(before))
    assert info.value is raised[0]  # the same object
    frames = [f.name for f in traceback.extract_tb(info.value.__traceback__)]
    assert "failing_function" in frames


def test_a_base_exception_from_the_function_is_raised_in_the_consumer_too():
    def source(emit: Emit[int]) -> None:
        emit(1)
        raise KeyboardInterrupt

    got: list[int] = []
    with pytest.raises(KeyboardInterrupt):
        got.extend(generator_from_callback()(source)())
    assert got == [1]


def test_stream_closed_that_the_function_raises_itself_is_not_taken_for_a_consumer_leaving():
    """Only the consumer leaving ends a stream quietly; a stray StreamClosed is an error."""

    def source(emit: Emit[int]) -> None:
        emit(1)
        raise StreamClosed("not from this stream's emit")

    got: list[int] = []
    with pytest.raises(StreamClosed, match="not from this stream"):
        got.extend(generator_from_callback()(source)())
    assert got == [1]


def test_a_generator_function_is_rejected_instead_of_silently_producing_nothing():
    def mistaken(emit: Emit[int]):
        yield 1  # meant for generator_from_thread: never iterated by this bridge

    with pytest.raises(TypeError, match="generator_from_thread"):
        list(generator_from_callback()(mistaken)())


def test_a_function_that_returns_a_generator_fails_the_stream():
    """Caught when the function returns: decoration cannot see through a lambda."""

    def mistaken(emit: Emit[int]):
        yield 1

    with pytest.raises(TypeError, match="generator_from_thread"):
        list(generator_from_callback()(lambda emit: mistaken(emit))())


def test_a_coroutine_function_is_rejected():
    async def mistaken(emit: Emit[int]) -> None:
        emit(1)

    with pytest.raises(TypeError, match="coroutine"):
        list(generator_from_callback()(mistaken)())


def test_an_error_after_the_consumer_left_is_dropped_and_the_function_still_finishes():
    finished = threading.Event()

    def source(emit: Emit[int]) -> None:
        try:
            emit(0)
            while not stop_requested():
                time.sleep(0.001)
            raise Boom("after the consumer left")
        finally:
            finished.set()

    stream = generator_from_callback()(source)()
    assert next(stream) == 0
    stream.close()  # no Boom here
    assert finished.is_set()


# ── the consumer leaves early ─────────────────────────────────────────────────────────────────


class Probe:
    """A callback producer that records what the bridge did to it.

    It emits 0, then runs a long step that polls stop_requested() (as a StoppingCriteria would)
    while a ContextThread it started does the same, then emits again: that emit must raise.
    """

    def __init__(self) -> None:
        self.started = threading.Event()
        self.stop_seen = threading.Event()
        self.stream_closed = threading.Event()
        self.finally_ran = threading.Event()
        self.finally_thread: int | None = None
        self.thread: int | None = None
        self.stop_in_finally: bool | None = None
        self.helper: ContextThread | None = None
        self.helper_saw_stop = threading.Event()

    def _helper(self) -> None:
        while not stop_requested():
            time.sleep(0.001)
        self.helper_saw_stop.set()

    def body(self, emit: Emit[int]) -> None:
        self.thread = threading.get_ident()
        self.helper = ContextThread(target=self._helper)
        self.helper.start()
        try:
            emit(0)
            self.started.set()
            while not stop_requested():  # a long step between two emits
                time.sleep(0.001)
            self.stop_seen.set()
            try:
                emit(1)
            except StreamClosed:
                self.stream_closed.set()
                raise
            raise AssertionError("emit must raise StreamClosed once the consumer has left")
        finally:
            self.helper.join()
            self.stop_in_finally = stop_requested()
            self.finally_thread = threading.get_ident()
            self.finally_ran.set()

    def check_stopped(self) -> None:
        assert self.stop_seen.is_set()
        assert self.stream_closed.is_set()
        assert self.finally_ran.is_set()  # before the consumer's close returned
        assert self.finally_thread == self.thread
        assert self.stop_in_finally is True
        assert self.helper_saw_stop.is_set()
        assert self.helper is not None
        assert not self.helper.is_alive()


@PROPERTY
@given(
    items=st.lists(st.integers(), min_size=1, max_size=50),
    data=st.data(),
    max_queue_size=st.integers(0, 4),
    use_async=st.booleans(),
)
def test_leaving_at_any_point_gets_a_prefix_and_unwinds_the_function_first(
    items, data, max_queue_size, use_async
):
    leave_after = data.draw(st.integers(1, len(items)), label="leave_after")
    worker: list[int] = []
    finally_in: list[int] = []
    outcome: list[str] = []

    def source(emit: Emit[int]) -> None:
        worker.append(threading.get_ident())
        try:
            for item in items:
                emit(item)
            while not stop_requested():  # the consumer always leaves in this test
                time.sleep(0.001)
            emit(0)
            outcome.append("emit returned")
        except StreamClosed:
            outcome.append("StreamClosed")
            raise
        finally:
            finally_in.append(threading.get_ident())

    sync_bridge, async_bridge = bridges(max_queue_size)

    async def consume_async() -> list[int]:
        stream = async_bridge(source)()
        got = [await anext(stream) for _ in range(leave_after)]
        await stream.aclose()
        return got

    def consume_sync() -> list[int]:
        stream = sync_bridge(source)()
        got = [next(stream) for _ in range(leave_after)]
        stream.close()
        return got

    got = asyncio.run(consume_async()) if use_async else consume_sync()
    assert got == items[:leave_after]
    assert outcome == ["StreamClosed"]  # unwound by emit, before close() returned
    assert finally_in == worker  # in its own thread


@pytest.mark.parametrize("how", ["aclose", "break", "gc", "cancel", "request_stop"])
def test_an_async_consumer_leaving_early_closes_the_stream(how):
    probe = Probe()
    source = async_generator_from_callback()(probe.body)

    async def main():
        stream = source()
        if how == "aclose":
            assert await anext(stream) == 0
            assert await asyncio.to_thread(probe.started.wait, 10)
            await stream.aclose()
        elif how == "break":
            async for first in stream:
                assert first == 0
                break
            assert await asyncio.to_thread(probe.started.wait, 10)
            await stream.aclose()  # what `async with contextlib.aclosing(...)` does
        elif how == "gc":
            assert await anext(stream) == 0
            assert await asyncio.to_thread(probe.started.wait, 10)
            del stream
            gc.collect()
            # asyncio finalises the collected generator with a task of its own.
            assert await asyncio.to_thread(probe.finally_ran.wait, 10)
        elif how == "cancel":

            async def consume_all():
                async for _ in stream:
                    pass

            task = asyncio.create_task(consume_all())
            assert await asyncio.to_thread(probe.started.wait, 10)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        else:
            got: list[int] = []
            received = threading.Event()

            async def consume_all():
                async for item in stream:
                    got.append(item)
                    received.set()

            def stop_from_elsewhere() -> None:
                # Once the item is received: request_stop drops what is not received yet.
                assert received.wait(10)
                assert probe.started.wait(10)
                assert request_stop(stream) is True

            helper = threading.Thread(target=stop_from_elsewhere)
            helper.start()
            await consume_all()  # ends quietly, no error
            helper.join()
            assert got == [0]

    asyncio.run(main())
    probe.check_stopped()


@pytest.mark.parametrize("how", ["close", "break", "gc", "request_stop"])
def test_a_sync_consumer_leaving_early_closes_the_stream(how):
    probe = Probe()
    stream = generator_from_callback()(probe.body)()
    if how == "break":
        for first in stream:
            assert first == 0
            break
        assert probe.started.wait(10)
        del stream  # refcounting finalises the generator here
    elif how == "close":
        assert next(stream) == 0
        assert probe.started.wait(10)
        stream.close()
    elif how == "gc":
        assert next(stream) == 0
        assert probe.started.wait(10)
        del stream
        gc.collect()
    else:
        got: list[int] = []
        received = threading.Event()

        def stop_from_elsewhere() -> None:
            # Once the item is received: request_stop drops what is not received yet.
            assert received.wait(10)
            assert probe.started.wait(10)
            assert request_stop(stream) is True

        helper = threading.Thread(target=stop_from_elsewhere)
        helper.start()
        for item in stream:  # ends quietly, no error
            got.append(item)
            received.set()
        helper.join()
        assert got == [0]
        assert request_stop(stream) is True  # idempotent, also after the end
    probe.check_stopped()


def test_leaving_releases_an_emit_blocked_on_a_full_queue():
    blocked_in = 0
    outcome: list[str] = []

    def source(emit: Emit[int]) -> None:
        nonlocal blocked_in
        blocked_in = threading.get_ident()
        try:
            for i in itertools.count():
                emit(i)
        except StreamClosed:
            outcome.append("StreamClosed")
            raise
        finally:
            outcome.append("finally")

    async def main():
        stream = async_generator_from_callback(max_queue_size=1)(source)()
        await anext(stream)
        wait_until(lambda: blocked_in != 0 and producer_thread_is_blocked(blocked_in))
        await stream.aclose()
        assert outcome == ["StreamClosed", "finally"]

    asyncio.run(main())


def test_a_library_catching_exception_around_the_callback_does_not_swallow_stream_closed():
    swallowed: list[BaseException] = []
    finished = threading.Event()

    def library_generate(callback: Callable[[int], None]) -> None:
        for i in itertools.count():  # a generate() loop that logs callback errors and goes on
            try:
                callback(i)
            except Exception as exc:
                swallowed.append(exc)

    def source(emit: Emit[int]) -> None:
        try:
            library_generate(emit)
        finally:
            finished.set()

    stream = generator_from_callback(max_queue_size=2)(source)()
    assert [next(stream) for _ in range(5)] == list(range(5))
    stream.close()
    assert finished.is_set()
    assert swallowed == []


def test_emit_after_the_stream_ended_raises_stream_closed():
    leaked: list[Emit[int]] = []

    def source(emit: Emit[int]) -> None:
        leaked.append(emit)  # e.g. a streamer object kept by a library after generate()
        emit(1)

    assert list(generator_from_callback()(source)()) == [1]
    with pytest.raises(StreamClosed):
        leaked[0](2)


def test_a_stream_never_iterated_never_calls_the_function():
    called = threading.Event()
    stream = generator_from_callback()(lambda emit: called.set())()
    assert request_stop(stream) is True
    assert list(stream) == []
    assert not called.is_set()


def test_close_gives_up_after_the_grace_period_and_emit_raises_later(caplog):
    release = threading.Event()
    outcome: list[str] = []

    def stubborn(emit: Emit[int]) -> None:
        emit(0)
        release.wait(30)  # a long step that does not poll stop_requested()
        try:
            emit(1)
        except StreamClosed:
            outcome.append("StreamClosed")
            raise

    stream = generator_from_callback(grace_period=0.2)(stubborn)()
    next(stream)
    with caplog.at_level(logging.WARNING, logger="threading_utils"):
        began = time.monotonic()
        stream.close()
        waited = time.monotonic() - began
    assert 0.2 <= waited < 5
    assert outcome == []
    assert "did not finish within 0.2s" in caplog.text
    release.set()
    wait_until(lambda: outcome == ["StreamClosed"], what="the next emit to raise")


def test_stop_requested_is_false_while_the_consumer_is_there():
    seen: list[bool] = []

    def source(emit: Emit[bool]) -> None:
        worker = ContextThread(target=lambda: seen.append(stop_requested()))
        worker.start()
        worker.join()
        emit(stop_requested())

    assert stop_requested() is False
    assert list(generator_from_callback()(source)()) == [False]
    assert seen == [False]


# ── executors, options ────────────────────────────────────────────────────────────────────────


def test_any_executor_may_run_the_function():
    executor = ThreadPoolExecutor(1, "mine")
    source = async_generator_from_callback(executor)(
        lambda emit: emit(threading.current_thread().name)
    )
    try:
        assert asyncio.run(collect(source())) == ["mine_0"]
    finally:
        executor.shutdown()
    with pytest.raises(RuntimeError, match="shutdown"):
        asyncio.run(collect(source()))
