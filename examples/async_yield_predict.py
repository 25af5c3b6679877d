"""The async-generator shape: `async def run()` yields — concurrent and cancellable, not live.

On cog 0.23 (coglet) an async generator `run()` is collected to the end before anything is sent,
so the client sees the whole output at once; on the legacy Python server it streamed. A cancel
raises `CancelledError` in `run()`; `aclosing` then closes the stream, `stop_requested()` turns
True in the worker and `words()` stops at its next check. Use this shape when the event loop must
see each piece (to post-process it with other async code) and live output is not needed.

    COG_PREDICT_TYPE_STUB=examples/async_yield_predict.py:Predictor COG_MAX_CONCURRENCY=8 \\
        python -m cog.server.http

Replace `words()` with your model's generator; nothing else changes.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import cog
from cog import BaseRunner, Input, current_scope

from threading_utils import async_generator_from_thread, stop_requested


def words(text: str, repeat: int) -> Iterator[str]:
    """The model stand-in, run in the stream's worker thread: `text`'s words, `repeat` times."""
    for n in range(1, repeat + 1):
        for word in text.split():
            if stop_requested():  # the client left or cancelled: stop the work
                return
            time.sleep(0.005)  # your model's step
            yield word + " "
        print(f"pass {n}/{repeat}")  # -> this prediction's logs
        scope: Any = current_scope()  # cog types it `object`
        scope.record_metric("passes", 1, mode="incr")  # -> this prediction's metrics


class Predictor(BaseRunner):
    @cog.concurrent(max=8)  # an integer literal: cog build reads it from the source text
    async def run(
        self,
        text: str = Input(description="Words to stream", default="hello from a worker thread"),
        repeat: int = Input(description="How many times", default=3, ge=1, le=1000),
    ) -> AsyncIterator[str]:
        stream = async_generator_from_thread()(words)(text, repeat)  # context captured here
        async with contextlib.aclosing(stream):  # closed (worker stopped) however run() ends
            async for piece in stream:
                yield piece
