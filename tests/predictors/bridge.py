"""Async predictors that do their work in a worker thread, bridged and plain (control group).

Every prediction produces `n` items tagged `tag` in a worker thread; for each item that thread
prints `"{tag} item {i}"` and records `items += 1` on the current prediction's scope, and at the
end it logs `"{tag} finished {n} items"`. A user expects each prediction's `logs` and `metrics`
to hold exactly its own lines and count, even with 8 predictions running at once.

Three shapes, each in two variants (one server per class):

- `Stream*`: `async def run() -> AsyncIterator[str]` iterating a threaded stream
- `Generator*`: `async def run() -> Iterator[str]` returning a generator fed by a thread
- `Thread*`: `async def run() -> str` starting a worker thread and awaiting it

The `*Predictor` classes use threading_utils; the `Plain*Predictor` classes do the same with
plain `threading.Thread`s, which start with an empty contextvars context.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import cog
from cog import current_scope

from threading_utils import ContextThread, async_generator_from_thread, generator_from_thread

PAUSE = 0.01  # seconds per item: long enough for concurrent predictions to interleave
log = logging.getLogger("bridge-test")


def produce(n: int, tag: str) -> Iterator[str]:
    """The model stand-in: runs in a worker thread, talks to the current prediction's scope."""
    for i in range(n):
        print(f"{tag} item {i}")
        current_scope().record_metric("items", 1, mode="incr")
        time.sleep(PAUSE)
        yield f"{tag}-{i}"
    log.warning("%s finished %d items", tag, n)


# the bridge: the same generator, run in a worker thread under the caller's context
threaded_stream = async_generator_from_thread(max_queue_size=4)(produce)
threaded_generator = generator_from_thread(max_queue_size=4)(produce)


def run_to_end(n: int, tag: str) -> None:
    for _ in produce(n, tag):
        pass


# -- plain-thread plumbing (the control group: no context is carried) ----------------------------

_END = object()


async def plain_async_stream(n: int, tag: str) -> AsyncIterator[str]:
    loop = asyncio.get_running_loop()
    items: asyncio.Queue[Any] = asyncio.Queue()

    def work() -> None:
        try:
            for item in produce(n, tag):
                loop.call_soon_threadsafe(items.put_nowait, item)
        finally:
            loop.call_soon_threadsafe(items.put_nowait, _END)

    threading.Thread(target=work, daemon=True).start()
    while (item := await items.get()) is not _END:
        yield item


def plain_generator(n: int, tag: str) -> Iterator[str]:
    items: queue.Queue[Any] = queue.Queue()

    def work() -> None:
        try:
            for item in produce(n, tag):
                items.put(item)
        finally:
            items.put(_END)

    threading.Thread(target=work, daemon=True).start()
    while (item := items.get()) is not _END:
        yield item


async def await_thread(thread_class: Callable[..., threading.Thread], n: int, tag: str) -> None:
    """Start `run_to_end` in a new thread and wait for it without blocking the event loop."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def settle(exc: BaseException | None) -> None:
        if done.done():
            return
        if exc is None:
            done.set_result(None)
        else:
            done.set_exception(exc)

    def work() -> None:
        try:
            run_to_end(n, tag)
        except BaseException as exc:
            loop.call_soon_threadsafe(settle, exc)
        else:
            loop.call_soon_threadsafe(settle, None)

    thread = thread_class(target=work, daemon=True)
    thread.start()
    await done
    thread.join()


_arrived: list[asyncio.Future[None]] = []


async def rendezvous(together: int) -> None:
    """Wait until `together` predictions have arrived, so that they really run at once.

    Without it a loaded machine may serve the "concurrent" predictions one after another, and
    then even plain threads look right (the last prediction to start is the only one running).
    """
    if together <= 1:
        return
    arrived: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    _arrived.append(arrived)
    if len(_arrived) >= together:
        for future in _arrived:
            future.set_result(None)
        _arrived.clear()
    await asyncio.wait_for(arrived, timeout=20)


# -- bridged variants -----------------------------------------------------------------------------


class StreamPredictor(cog.BaseRunner):
    @cog.streaming
    @cog.concurrent(max=8)
    async def run(self, n: int, tag: str, together: int = 1) -> AsyncIterator[str]:
        await rendezvous(together)
        async for item in threaded_stream(n, tag):
            yield item


class GeneratorPredictor(cog.BaseRunner):
    @cog.streaming
    @cog.concurrent(max=8)
    async def run(self, n: int, tag: str, together: int = 1) -> Iterator[str]:
        await rendezvous(together)
        return threaded_generator(n, tag)


class ThreadPredictor(cog.BaseRunner):
    @cog.concurrent(max=8)
    async def run(self, n: int, tag: str, together: int = 1) -> str:
        await rendezvous(together)
        await await_thread(ContextThread, n, tag)
        return f"{tag} done"


# -- control group: the same with plain threads ---------------------------------------------------


class PlainStreamPredictor(cog.BaseRunner):
    @cog.streaming
    @cog.concurrent(max=8)
    async def run(self, n: int, tag: str, together: int = 1) -> AsyncIterator[str]:
        await rendezvous(together)
        async for item in plain_async_stream(n, tag):
            yield item


class PlainGeneratorPredictor(cog.BaseRunner):
    @cog.streaming
    @cog.concurrent(max=8)
    async def run(self, n: int, tag: str, together: int = 1) -> Iterator[str]:
        await rendezvous(together)
        return plain_generator(n, tag)


class PlainThreadPredictor(cog.BaseRunner):
    @cog.concurrent(max=8)
    async def run(self, n: int, tag: str, together: int = 1) -> str:
        await rendezvous(together)
        await await_thread(threading.Thread, n, tag)
        return f"{tag} done"
