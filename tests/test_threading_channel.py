"""Channel: one feeding thread of yours serving many streams, each with its own context.

What a continuous-batching scheduler needs: every consumer gets exactly its items in order, the
feeder never blocks on a slow consumer (it is told when to pause and when to go on), `run()`
puts each request's context (logs, metrics) around the feeder's work for it, and a consumer
that leaves is seen by the feeder, which acknowledges with `close()`.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import time
from collections import deque
from typing import Any

import pytest
from conftest import collect, request_id
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from threading_utils import Channel, ContextThread, request_stop, stop_requested

PROPERTY = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class Boom(Exception):
    pass


def joined(thread: threading.Thread) -> None:
    thread.join(10)
    assert not thread.is_alive()


# ── one feeder, many channels ─────────────────────────────────────────────────────────────────


@PROPERTY
@given(
    streams=st.lists(st.lists(st.integers(), max_size=30), min_size=1, max_size=6),
    max_queue_size=st.integers(0, 4),
    use_async=st.booleans(),
)
def test_one_feeding_thread_serves_many_channels_each_gets_its_items_in_order(
    streams, max_queue_size, use_async
):
    wake = threading.Event()
    channels = []
    for k in range(len(streams)):
        request_id.set(f"r{k}")  # each request's own context, captured by its channel
        channels.append(Channel(max_queue_size, on_ready=wake.set))
    contexts_seen: list[tuple[int, str]] = []
    errors: list[BaseException] = []

    def feeder() -> None:  # a scheduler: skips channels that are not writable, sleeps if none is
        try:
            pending = {k: deque(items) for k, items in enumerate(streams)}
            while pending:
                wake.clear()
                progressed = False
                for k in list(pending):
                    channel, queue = channels[k], pending[k]
                    while queue and channel.writable:
                        contexts_seen.append((k, channel.run(request_id.get)))
                        assert channel.send(queue.popleft())
                        progressed = True
                    if not queue:
                        channel.close()
                        del pending[k]
                if pending and not progressed:
                    assert wake.wait(10), "on_ready never came"
        except BaseException as exc:
            errors.append(exc)
            for channel in channels:
                channel.close(exc)

    thread = threading.Thread(target=feeder)
    thread.start()
    if use_async:

        async def main() -> list[list[int]]:
            return list(await asyncio.gather(*(collect(c.astream()) for c in channels)))

        got = asyncio.run(main())
    else:
        results: dict[int, list[int]] = {}

        def consume(k: int) -> None:
            results[k] = list(channels[k].stream())

        consumers = [threading.Thread(target=consume, args=(k,)) for k in range(len(channels))]
        for consumer in consumers:
            consumer.start()
        for consumer in consumers:
            joined(consumer)
        got = [results[k] for k in range(len(channels))]
    joined(thread)
    assert errors == []
    assert got == streams
    assert all(seen == f"r{k}" for k, seen in contexts_seen)
    assert len(contexts_seen) == sum(map(len, streams))


def test_run_calls_in_the_feeders_thread_under_each_channels_captured_context():
    channels = []
    for name in ("a", "b", "c"):
        request_id.set(name)
        channels.append(Channel())
    request_id.set("after creation")  # not what the channels captured
    seen: list[tuple[str, str, int]] = []

    def work(tag: str) -> str:
        before = request_id.get()
        request_id.set(f"{before} changed by {tag}")  # stays inside this run()
        return before

    def feeder() -> None:
        for round_ in range(2):
            for channel in channels:
                value = channel.run(work, f"round {round_}")
                seen.append((value, request_id.get(), threading.get_ident()))
            # a thread started inside run() inherits the channel's context
            inner: list[str] = []
            thread = ContextThread(target=lambda out=inner: out.append(request_id.get()))
            channels[1].run(thread.start)  # a ContextThread captures at start()
            thread.join()
            seen.append((inner[0], request_id.get(), threading.get_ident()))

    thread = threading.Thread(target=feeder)
    thread.start()
    joined(thread)
    feeder_ident = thread.ident
    assert [value for value, _, _ in seen] == ["a", "b", "c", "b"] * 2
    assert {outside for _, outside, _ in seen} == {"unset"}  # the feeder's own context
    assert {ident for _, _, ident in seen} == {feeder_ident}


def test_run_returns_what_fn_returns_and_raises_what_it_raises():
    channel = Channel()
    assert channel.run(lambda a, *, b: a + b, 1, b=2) == 3
    error = Boom("from fn")

    def fail() -> None:
        raise error

    with pytest.raises(Boom) as info:
        channel.run(fail)
    assert info.value is error
    channel.close()


def test_stop_requested_inside_run_answers_for_that_channel():
    left, staying = Channel(), Channel()
    stream = left.stream()
    assert request_stop(stream) is True
    assert left.stop_requested
    assert left.run(stop_requested) is True
    assert staying.run(stop_requested) is False
    assert stop_requested() is False  # outside run(): no stream here
    seen_in_thread: list[bool] = []

    def in_a_context_thread() -> None:
        worker = ContextThread(target=lambda: seen_in_thread.append(stop_requested()))
        worker.start()
        worker.join()

    left.run(in_a_context_thread)
    staying.run(in_a_context_thread)
    assert seen_in_thread == [True, False]
    left.close()
    staying.close()


# ── backpressure: writable and on_ready ───────────────────────────────────────────────────────


def test_a_slow_consumer_makes_the_channel_not_writable_but_never_blocks_send():
    channel: Channel[int] = Channel(max_queue_size=4)
    states: list[bool] = []

    def feeder() -> None:  # nobody consumes yet: every call must return at once
        for i in range(6):
            states.append(channel.writable)
            assert channel.send(i)  # queued even when not writable: the bound is the feeder's
        states.append(channel.writable)
        channel.close()

    thread = threading.Thread(target=feeder)
    thread.start()
    joined(thread)
    assert states == [True, True, True, True, False, False, False]
    assert list(channel.stream()) == list(range(6))


@PROPERTY
@given(max_queue_size=st.integers(1, 8), use_async=st.booleans())
def test_on_ready_is_called_from_the_consumer_once_it_has_taken_the_queue_down_to_half(
    max_queue_size, use_async
):
    calls: list[int] = []
    channel: Channel[int] = Channel(
        max_queue_size, on_ready=lambda: calls.append(threading.get_ident())
    )
    for i in range(max_queue_size):
        assert channel.writable
        channel.send(i)
    assert not channel.writable
    observed: list[tuple[int, bool]] = []  # after each item taken: (on_ready calls, writable)

    def after_take() -> None:
        observed.append((len(calls), channel.writable))

    if use_async:

        async def main() -> int:
            stream = channel.astream()
            for _ in range(max_queue_size):
                await anext(stream)
                after_take()
            channel.close()  # the feeder's end: the consumer's close need not wait for it
            await stream.aclose()
            return threading.get_ident()

        consumer = asyncio.run(main())
    else:
        stream = channel.stream()
        for _ in range(max_queue_size):
            next(stream)
            after_take()
        channel.close()
        stream.close()
        consumer = threading.get_ident()
    expected = [
        (0 if max_queue_size - taken > max_queue_size // 2 else 1, True)
        for taken in range(1, max_queue_size + 1)
    ]
    assert observed == expected
    assert set(calls) == {consumer}


def test_on_ready_comes_once_per_pause_however_often_the_queue_fills():
    calls: list[str] = []
    channel: Channel[int] = Channel(max_queue_size=2, on_ready=lambda: calls.append("ready"))
    stream = channel.stream()
    channel.send(0)
    assert next(stream) == 0
    assert calls == []  # never full: no pause, no on_ready
    for round_ in range(1, 4):
        channel.send(1)
        channel.send(2)
        assert not channel.writable
        assert next(stream) == 1  # down to half (1 of 2): resume
        assert calls == ["ready"] * round_
        assert next(stream) == 2
        assert calls == ["ready"] * round_  # once per pause, not once per item
    channel.close()
    assert list(stream) == []


def test_an_unbounded_channel_is_always_writable():
    channel: Channel[int] = Channel(max_queue_size=0)
    for i in range(10_000):
        assert channel.writable
        channel.send(i)
    channel.close()
    assert not channel.writable
    assert list(channel.stream()) == list(range(10_000))


def test_an_on_ready_that_raises_is_logged_and_the_stream_goes_on(caplog):
    def on_ready() -> None:
        raise Boom("in on_ready")

    channel: Channel[int] = Channel(max_queue_size=2, on_ready=on_ready)
    channel.send(0)
    channel.send(1)
    channel.close()
    with caplog.at_level(logging.ERROR, logger="threading_utils"):
        assert list(channel.stream()) == [0, 1]
    assert "on_ready callback failed" in caplog.text


# ── errors, end ───────────────────────────────────────────────────────────────────────────────


@PROPERTY
@given(before=st.integers(0, 30), max_queue_size=st.integers(0, 4), use_async=st.booleans())
def test_close_with_an_error_raises_it_after_every_item_sent_before_it(
    before, max_queue_size, use_async
):
    channel: Channel[int] = Channel(max_queue_size)
    error = Boom(f"after {before}")
    got: list[int] = []

    def feeder() -> None:
        for i in range(before):
            channel.send(i)
        channel.close(error)

    async def consume_async() -> None:
        async for item in channel.astream():
            got.append(item)

    def consume_sync() -> None:
        got.extend(channel.stream())

    thread = threading.Thread(target=feeder)
    thread.start()
    with pytest.raises(Boom) as info:
        asyncio.run(consume_async()) if use_async else consume_sync()
    joined(thread)
    assert info.value is error
    assert got == list(range(before))


def test_only_the_first_close_counts_and_nothing_is_sent_after_it():
    channel: Channel[int] = Channel()
    assert not channel.closed
    channel.send(1)
    channel.close(Boom("first"))
    channel.close()
    channel.close(Boom("third"))
    assert channel.closed
    assert channel.send(2) is False
    assert not channel.writable
    stream = channel.stream()
    assert next(stream) == 1
    with pytest.raises(Boom, match="first"):
        next(stream)


def test_stream_and_astream_may_be_called_once_per_channel():
    channel: Channel[int] = Channel()
    stream = channel.stream()
    with pytest.raises(RuntimeError, match="one consumer"):
        channel.stream()
    with pytest.raises(RuntimeError, match="one consumer"):
        channel.astream()
    other: Channel[int] = Channel()
    agen = other.astream()
    with pytest.raises(RuntimeError, match="one consumer"):
        other.stream()
    for ch in (channel, other):
        ch.send(7)
        ch.close()
    assert list(stream) == [7]
    assert asyncio.run(collect(agen)) == [7]


# ── the consumer leaves ───────────────────────────────────────────────────────────────────────


class Feeder:
    """A feeding thread for one channel: sends an item, then serves until the consumer leaves.

    It waits on `on_ready` (never polls), and once the consumer has left it records what the
    channel tells it and acknowledges with `close()` — which the consumer's close waits for.
    """

    def __init__(self, **options: Any) -> None:
        self.ready = threading.Event()
        self.ready_calls = 0
        self.channel: Channel[int] = Channel(on_ready=self.on_ready, **options)
        self.stop_in_run: bool | None = None
        self.send_after_stop: bool | None = None
        self.writable_after_stop: bool | None = None
        self.acknowledge = True
        self.thread = threading.Thread(target=self.serve)

    def on_ready(self) -> None:
        self.ready_calls += 1
        self.ready.set()

    def start(self) -> Feeder:
        self.thread.start()
        return self

    def serve(self) -> None:
        channel = self.channel
        channel.send(0)
        while not channel.stop_requested:
            if not self.ready.wait(10):
                return  # the test failed: the consumer never left, or on_ready never came
            self.ready.clear()
        self.stop_in_run = channel.run(stop_requested)
        self.send_after_stop = channel.send(1)
        self.writable_after_stop = channel.writable
        if self.acknowledge:
            channel.close()

    def check_left(self, *, waited_for_close: bool = True) -> None:
        if waited_for_close:
            assert self.channel.closed  # the consumer's close returned only after close()
        joined(self.thread)
        assert self.channel.stop_requested
        assert self.stop_in_run is True
        assert self.send_after_stop is False
        assert self.writable_after_stop is False
        assert self.ready_calls == 1


@pytest.mark.parametrize("how", ["close", "break", "gc", "request_stop", "never iterated"])
def test_a_sync_consumer_leaving_is_seen_by_the_feeder_which_acknowledges(how):
    feeder = Feeder().start()
    stream = feeder.channel.stream()
    if how == "close":
        assert next(stream) == 0
        stream.close()
    elif how == "break":
        for first in stream:
            assert first == 0
            break
        del stream  # refcounting finalises the generator here
    elif how == "gc":
        assert next(stream) == 0
        cycle: list[Any] = [stream]
        cycle.append(cycle)
        del stream, cycle
        gc.collect()
    elif how == "request_stop":
        received = threading.Event()

        def stop_from_elsewhere() -> None:
            assert received.wait(10)
            assert request_stop(stream) is True

        helper = threading.Thread(target=stop_from_elsewhere)
        helper.start()
        got = []
        for item in stream:  # ends quietly, once the feeder has closed
            got.append(item)
            received.set()
        joined(helper)
        assert got == [0]
    else:
        del stream
        gc.collect()
        feeder.check_left(waited_for_close=False)  # nothing waits for a never-started stream
        return
    feeder.check_left()


@pytest.mark.parametrize("how", ["aclose", "cancel", "request_stop", "never iterated"])
def test_an_async_consumer_leaving_is_seen_by_the_feeder_which_acknowledges(how):
    feeder = Feeder().start()

    async def main() -> None:
        stream = feeder.channel.astream()
        if how == "aclose":
            assert await anext(stream) == 0
            await stream.aclose()
        elif how in ("cancel", "request_stop"):
            received = asyncio.Event()

            async def consume() -> None:
                async for _ in stream:
                    received.set()

            task = asyncio.create_task(consume())
            await received.wait()
            if how == "cancel":
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
            else:
                await asyncio.to_thread(request_stop, stream)
                await task  # ends quietly, once the feeder has closed
        else:
            del stream
            gc.collect()

    asyncio.run(main())
    feeder.check_left(waited_for_close=how != "never iterated")


def test_the_consumers_close_gives_up_after_the_grace_period_without_close(caplog):
    feeder = Feeder(grace_period=0.2)
    feeder.acknowledge = False
    feeder.start()
    stream = feeder.channel.stream()
    assert next(stream) == 0
    with caplog.at_level(logging.WARNING, logger="threading_utils"):
        began = time.monotonic()
        stream.close()
        waited = time.monotonic() - began
    assert 0.2 <= waited < 5
    assert "did not finish within 0.2s" in caplog.text
    joined(feeder.thread)
    assert not feeder.channel.closed
    assert feeder.send_after_stop is False


def test_request_stop_on_something_else_is_false():
    assert request_stop(object()) is False
    assert request_stop([1, 2]) is False
    assert request_stop(Channel()) is False  # the channel itself: its stream() is the stream
