"""Async predictors for the legacy Python server (cog 0.16, no coglet): plain thread vs bridge.

In cog <= 0.16 the prediction scope lives in a ContextVar, and both `current_scope()` and the
stdout/stderr hooks that route `print` to a prediction look it up. A plain thread starts with an
empty context, so its first `print` raises `RuntimeError: No scope available`.

Written against the cog 0.16 API: `BasePredictor.predict`, `record_metric(name, value)`
(replace only, so the running count is recorded), concurrency from COG_MAX_CONCURRENCY, and
no `from __future__ import annotations` (0.16 cannot read string annotations), and
`-> Iterator[str]` even on async generators (0.16 knows no AsyncIterator output type).
"""

import asyncio
import hashlib
import threading
import time
import warnings
from collections.abc import AsyncIterator, Iterator
from typing import Any

from cog import BasePredictor, Path, current_scope

import coglet_inputs
from threading_utils import async_generator_from_thread, generator_from_thread

warnings.filterwarnings("ignore", message="current_scope is an experimental internal function")

PAUSE = 0.01


def produce(n: int, tag: str) -> Iterator[str]:
    for i in range(n):
        print(f"{tag} item {i}")
        current_scope().record_metric("items", i + 1)
        time.sleep(PAUSE)
        yield f"{tag}-{i}"


threaded_stream = async_generator_from_thread(max_queue_size=4)(produce)
threaded_generator = generator_from_thread(max_queue_size=4)(produce)


async def plain_thread_stream(n: int, tag: str) -> AsyncIterator[str]:
    """What the article starts from: a plain thread feeding an asyncio queue, errors forwarded."""
    loop = asyncio.get_running_loop()
    items: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    def work() -> None:
        try:
            for item in produce(n, tag):
                loop.call_soon_threadsafe(items.put_nowait, ("item", item))
        except BaseException as exc:
            loop.call_soon_threadsafe(items.put_nowait, ("error", exc))
        else:
            loop.call_soon_threadsafe(items.put_nowait, ("end", None))

    threading.Thread(target=work, daemon=True).start()
    while True:
        kind, value = await items.get()
        if kind == "error":
            raise value
        if kind == "end":
            return
        yield value


class _NoWeights:
    """cog 0.16 hands `weights/` (present in the build context) to a `setup` with a `weights`
    parameter, BasePredictor's own included, and fails on its type: take none."""

    def setup(self) -> None:
        pass


class PlainThreadPredictor(_NoWeights, BasePredictor):
    async def predict(self, n: int, tag: str) -> Iterator[str]:  # type: ignore[override]
        async for item in plain_thread_stream(n, tag):
            yield item


class StreamPredictor(_NoWeights, BasePredictor):
    async def predict(self, n: int, tag: str) -> Iterator[str]:  # type: ignore[override]
        async for item in threaded_stream(n, tag):
            yield item


class GeneratorPredictor(_NoWeights, BasePredictor):
    async def predict(self, n: int, tag: str) -> Iterator[str]:
        return threaded_generator(n, tag)


class FilePredictor(_NoWeights, BasePredictor):
    """Opens its file input, with coglet_inputs installed (its install() must not refuse what
    the legacy server downloaded)."""

    def setup(self) -> None:
        coglet_inputs.install(self)

    async def predict(self, image: Path) -> str:  # type: ignore[override]
        with open(image, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
