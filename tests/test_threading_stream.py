"""The stream bridge: ordering, backpressure, errors, early exit, threads, concurrency."""

from __future__ import annotations

import asyncio
import ctypes
import gc
import logging
import threading
import time
import traceback
import types
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import collect, producer_thread_is_blocked, request_id, wait_until
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from threading_utils import (
    ContextThread,
    async_generator_from_callback,
    async_generator_from_thread,
    generator_from_callback,
    generator_from_thread,
    stop_requested,
)
from threading_utils._pool import default_pool

PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class Boom(Exception):
    pass


# ── ordering, one thread per stream ───────────────────────────────────────────────────────────


@PROPERTY
@given(items=st.lists(st.integers()), max_queue_size=st.integers(0, 5), use_async=st.booleans())
def test_every_item_arrives_once_in_order(items, max_queue_size, use_async):
    @generator_from_thread(max_queue_size=max_queue_size)
    def sync_source():
        yield from items

    @async_generator_from_thread(max_queue_size=max_queue_size)
    def async_source():
        yield from items

    got = asyncio.run(collect(async_source())) if use_async else list(sync_source())
    assert got == items


def test_one_stream_runs_entirely_on_one_worker_thread():
    @async_generator_from_thread(max_queue_size=2)
    def idents():
        for _ in range(50):
            yield threading.get_ident()

    got = asyncio.run(collect(idents()))
    assert len(set(got)) == 1
    assert got[0] != threading.get_ident()


def test_generator_from_thread_returns_a_real_generator_and_starts_at_first_next():
    started = threading.Event()

    @generator_from_thread()
    def source():
        started.set()
        yield request_id.get()

    token = request_id.set("at-call")
    stream = source()
    request_id.reset(token)
    assert isinstance(stream, types.GeneratorType)
    assert not started.is_set()
    assert next(stream) == "at-call"  # captured at the call, not at the first next()
    assert started.is_set()
    stream.close()


# ── concurrency ───────────────────────────────────────────────────────────────────────────────


def test_eight_concurrent_async_streams_each_see_their_own_context():
    @async_generator_from_thread(max_queue_size=1)
    def source(n: int):
        for i in range(n):
            yield (request_id.get(), i)

    async def one(name: str, n: int) -> list:
        request_id.set(name)
        return await collect(source(n))

    async def main():
        return await asyncio.gather(*(one(f"p{k}", 20 + k) for k in range(8)))

    results = asyncio.run(main())
    for k, got in enumerate(results):
        assert got == [(f"p{k}", i) for i in range(20 + k)]


def test_streams_from_many_threads_and_event_loops_at_once():
    @async_generator_from_thread(max_queue_size=3)
    def async_source(n: int):
        for i in range(n):
            yield (request_id.get(), i)

    @generator_from_thread(max_queue_size=3)
    def sync_source(n: int):
        for i in range(n):
            yield (request_id.get(), i)

    results: dict[str, list] = {}

    def with_loop(name: str) -> None:
        async def main():
            request_id.set(name)
            return await collect(async_source(100))

        results[name] = asyncio.run(main())

    def with_thread(name: str) -> None:
        request_id.set(name)
        results[name] = list(sync_source(100))

    threads = [threading.Thread(target=with_loop, args=(f"loop{i}",)) for i in range(4)]
    threads += [threading.Thread(target=with_thread, args=(f"thread{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert results == {name: [(name, i) for i in range(100)] for name in results}
    assert len(results) == 8


# ── backpressure ──────────────────────────────────────────────────────────────────────────────


@PROPERTY
@given(max_queue_size=st.integers(1, 8), taken=st.integers(1, 12), use_async=st.booleans())
def test_a_stalled_consumer_holds_at_most_max_queue_size_items(max_queue_size, taken, use_async):
    produced = 0
    producer_ident = 0

    def endless():
        nonlocal produced, producer_ident
        producer_ident = threading.get_ident()
        while True:
            produced += 1
            yield produced

    def stalled_and_bounded() -> None:
        # Blocked means the queue holds more than half of max_queue_size, so it stays blocked.
        wait_until(
            lambda: (
                producer_ident != 0
                and producer_thread_is_blocked(producer_ident)
                and produced - taken > max_queue_size // 2
            ),
            what="the producer to block on the full queue",
        )
        assert produced - taken <= max_queue_size

    if use_async:

        async def main():
            stream = async_generator_from_thread(max_queue_size=max_queue_size)(endless)()
            assert [await anext(stream) for _ in range(taken)] == list(range(1, taken + 1))
            stalled_and_bounded()
            await stream.aclose()

        asyncio.run(main())
    else:
        stream = generator_from_thread(max_queue_size=max_queue_size)(endless)()
        assert [next(stream) for _ in range(taken)] == list(range(1, taken + 1))
        stalled_and_bounded()
        stream.close()


def test_the_producer_never_runs_more_than_max_queue_size_ahead():
    log: list[str] = []

    @generator_from_thread(max_queue_size=4)
    def source():
        for i in range(200):
            log.append("p")
            yield i

    assert [log.append("c") or i for i in source()] == list(range(200))
    ahead = worst = 0
    for entry in log:
        ahead += 1 if entry == "p" else -1
        worst = max(worst, ahead)
    # 4 queued, plus the one item the consumer has received but not yet logged.
    assert worst <= 4 + 1


def test_unbounded_queue_never_blocks_the_producer():
    finished = threading.Event()

    @generator_from_thread(max_queue_size=0)
    def source():
        yield from range(10_000)
        finished.set()

    stream = source()
    assert next(stream) == 0
    assert finished.wait(10)  # ran to the end while the consumer took a single item
    assert list(stream) == list(range(1, 10_000))


# ── errors ────────────────────────────────────────────────────────────────────────────────────


@PROPERTY
@given(before=st.integers(0, 30), max_queue_size=st.integers(0, 4), use_async=st.booleans())
def test_a_producer_error_arrives_after_every_item_before_it(before, max_queue_size, use_async):
    def failing_producer():
        yield from range(before)
        raise Boom(f"after {before}")

    got: list[int] = []

    async def consume_async() -> None:
        bridge = async_generator_from_thread(max_queue_size=max_queue_size)
        async for x in bridge(failing_producer)():
            got.append(x)

    def consume_sync() -> None:
        got.extend(generator_from_thread(max_queue_size=max_queue_size)(failing_producer)())

    with pytest.raises(Boom, match=f"after {before}") as info:
        asyncio.run(consume_async()) if use_async else consume_sync()
    assert got == list(range(before))
    frames = [f.name for f in traceback.extract_tb(info.value.__traceback__)]
    assert "failing_producer" in frames


def test_an_error_in_the_producers_finally_during_close_is_not_lost_when_it_ends_itself():
    @generator_from_thread()
    def source():
        try:
            yield 1
        finally:
            raise Boom("in finally")

    with pytest.raises(Boom, match="in finally"):
        list(source())


# ── the consumer leaves early ─────────────────────────────────────────────────────────────────


class Probe:
    """A producer that records what the bridge did to it."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.stop_seen = threading.Event()
        self.finally_thread: int | None = None
        self.finally_ran = threading.Event()
        self.thread: int | None = None

    def body(self) -> Iterator[int]:
        self.thread = threading.get_ident()
        try:
            yield 0
            self.started.set()
            # A long step between two yields that polls stop_requested(), as a prefill would.
            while not stop_requested():
                time.sleep(0.001)
            self.stop_seen.set()
            yield 1  # closed here: GeneratorExit
            raise AssertionError("the generator must be closed at its next yield")
        finally:
            self.finally_thread = threading.get_ident()
            self.finally_ran.set()

    def check_stopped(self) -> None:
        assert self.stop_seen.is_set()
        assert self.finally_ran.is_set()  # before close() returned
        assert self.finally_thread == self.thread


@PROPERTY
@given(
    items=st.lists(st.integers(), min_size=1, max_size=50),
    data=st.data(),
    max_queue_size=st.integers(0, 4),
    use_async=st.booleans(),
)
def test_leaving_at_any_point_gets_a_prefix_and_closes_the_producer_first(
    items, data, max_queue_size, use_async
):
    leave_after = data.draw(st.integers(1, len(items)), label="leave_after")
    closed_in: list[int] = []
    producer_thread: list[int] = []

    def source():
        producer_thread.append(threading.get_ident())
        try:
            yield from items
        finally:
            closed_in.append(threading.get_ident())

    async def consume_async() -> list[int]:
        stream = async_generator_from_thread(max_queue_size=max_queue_size)(source)()
        got = [await anext(stream) for _ in range(leave_after)]
        await stream.aclose()
        return got

    def consume_sync() -> list[int]:
        stream = generator_from_thread(max_queue_size=max_queue_size)(source)()
        got = [next(stream) for _ in range(leave_after)]
        stream.close()
        return got

    got = asyncio.run(consume_async()) if use_async else consume_sync()
    assert got == items[:leave_after]
    assert closed_in == producer_thread  # finished, in its own thread, before close() returned


@pytest.mark.parametrize("how", ["aclose", "break", "gc", "cancel"])
def test_async_consumer_leaving_early_stops_the_producer(how):
    probe = Probe()
    source = async_generator_from_thread()(probe.body)

    async def main():
        stream = source()
        if how != "break":
            assert await anext(stream) == 0
        if how == "aclose":
            assert await asyncio.to_thread(probe.started.wait, 10)
            await stream.aclose()
        elif how == "break":
            async for first in stream:
                assert first == 0
                break
            assert await asyncio.to_thread(probe.started.wait, 10)
            await stream.aclose()  # what `async with contextlib.aclosing(...)` does
        elif how == "gc":
            assert await asyncio.to_thread(probe.started.wait, 10)
            del stream
            gc.collect()
            # asyncio finalises the collected generator with a task of its own.
            await asyncio.to_thread(probe.finally_ran.wait, 10)
        else:

            async def consume():
                async for _ in stream:
                    pass

            task = asyncio.create_task(consume())
            assert await asyncio.to_thread(probe.started.wait, 10)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(main())
    probe.check_stopped()


@pytest.mark.parametrize("how", ["close", "break", "gc"])
def test_sync_consumer_leaving_early_stops_the_producer(how):
    probe = Probe()
    stream = generator_from_thread()(probe.body)()
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
    else:
        assert next(stream) == 0
        assert probe.started.wait(10)
        del stream
        gc.collect()
    probe.check_stopped()


def test_a_consumer_thread_hit_by_an_asynchronous_exception_stops_its_producer():
    """What cog does to a sync predict() on cancel: PyThreadState_SetAsyncExc(...)."""

    class Cancelled(Exception):
        pass

    probe = Probe()
    outcome: list[BaseException] = []
    waiting = threading.Event()

    @generator_from_thread()
    def slow():
        yield from probe.body()

    def consumer() -> None:
        stream = slow()
        try:
            next(stream)
            waiting.set()
            next(stream)  # waits for an item that only comes after a stop request
        except Cancelled as exc:
            outcome.append(exc)

    thread = threading.Thread(target=consumer)
    thread.start()
    assert waiting.wait(10)
    assert probe.started.wait(10)
    sent = time.monotonic()
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread.ident), ctypes.py_object(Cancelled)
    )
    thread.join(10)
    assert not thread.is_alive()
    assert time.monotonic() - sent < 2.0  # raised at the next 200 ms wait slice, not after an item
    assert len(outcome) == 1
    probe.check_stopped()


def test_close_gives_up_after_the_grace_period_and_the_producer_stops_at_its_next_yield(caplog):
    release = threading.Event()
    finished = threading.Event()

    @generator_from_thread(grace_period=0.2)
    def stubborn():
        try:
            yield 0
            release.wait(30)  # a long step that does not poll stop_requested()
            yield 1
            raise AssertionError("must be closed at the yield above")
        finally:
            finished.set()

    stream = stubborn()
    next(stream)
    with caplog.at_level(logging.WARNING, logger="threading_utils"):
        began = time.monotonic()
        stream.close()
        waited = time.monotonic() - began
    assert 0.2 <= waited < 5
    assert not finished.is_set()
    assert "did not finish within 0.2s" in caplog.text
    release.set()
    assert finished.wait(10)


def test_closing_never_leaves_a_producer_blocked_on_a_full_queue():
    finished = threading.Event()

    @async_generator_from_thread(max_queue_size=1)
    def source():
        try:
            while True:
                yield 1
        finally:
            finished.set()

    async def main():
        stream = source()
        await anext(stream)
        await stream.aclose()
        assert finished.is_set()

    asyncio.run(main())


def test_stop_requested_is_false_outside_producers_and_seen_by_threads_they_start():
    assert stop_requested() is False
    seen: list[bool] = []

    @generator_from_thread()
    def source():
        worker = ContextThread(target=lambda: seen.append(stop_requested()))
        worker.start()
        worker.join()
        yield stop_requested()

    assert list(source()) == [False]
    assert seen == [False]


# ── threads ───────────────────────────────────────────────────────────────────────────────────


@pytest.fixture
def quick_retire():
    pool = default_pool()
    old, pool.idle_timeout = pool.idle_timeout, 0.05
    yield
    pool.idle_timeout = old


def test_thread_count_returns_to_baseline_after_streams_end_or_are_abandoned(quick_retire):
    wait_until(lambda: default_pool().idle == 0)
    baseline = threading.active_count()

    @generator_from_thread(max_queue_size=1)
    def endless():
        while True:
            yield 1

    finished = [list(generator_from_thread()(lambda: iter(range(10)))()) for _ in range(3)]
    assert finished == [list(range(10))] * 3
    wait_until(lambda: default_pool().busy == 0, what="finished streams' workers to park")
    abandoned = [endless() for _ in range(5)]
    for stream in abandoned:
        next(stream)
    assert default_pool().busy == 5
    del abandoned, stream
    gc.collect()
    wait_until(lambda: threading.active_count() == baseline, what="workers to retire")


def test_the_default_pool_reuses_named_threads_instead_of_one_pool_per_call():
    @generator_from_thread()
    def name():
        yield threading.current_thread().name

    names = set()
    for _ in range(20):
        names.add(next(iter(name())))
        wait_until(lambda: default_pool().busy == 0, what="the worker to park")
    assert len(names) == 1
    assert all(n.startswith("threading_utils-") for n in names)


def test_any_executor_may_run_the_producer():
    @async_generator_from_thread(executor=(executor := ThreadPoolExecutor(1, "mine")))
    def source():
        yield threading.current_thread().name

    try:
        assert asyncio.run(collect(source())) == ["mine_0"]
    finally:
        executor.shutdown()
    with pytest.raises(RuntimeError, match="shutdown"):
        asyncio.run(collect(source()))


@pytest.mark.parametrize(
    "decorator",
    [
        generator_from_thread,
        async_generator_from_thread,
        generator_from_callback,
        async_generator_from_callback,
    ],
)
def test_bad_options_are_rejected_at_decoration_time(decorator):
    with pytest.raises(ValueError, match="max_queue_size"):
        decorator(max_queue_size=-1)
    with pytest.raises(TypeError, match="max_queue_size"):
        decorator(max_queue_size=2.5)
    with pytest.raises(TypeError, match="parentheses"):
        decorator(lambda: iter(()))
    with pytest.raises(ValueError, match="grace_period"):
        decorator(grace_period=-1)
