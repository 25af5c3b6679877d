"""The same model behind an async `run()` that yields: concurrent and cancellable, not live.

On cog 0.23 (coglet) an async generator `run()` is collected to the end before anything is sent,
so the client sees the whole output at once; on the legacy Python server it streamed. A cancel
raises `CancelledError` in `run()`; closing the `async_generator_from_thread` stream stops the
worker thread at its next step. Use this shape when you want the event loop to see each piece
(to post-process it with other async code) and do not need live output.

    COG_PREDICT_TYPE_STUB=examples/async_yield_predict.py:Predictor COG_MAX_CONCURRENCY=8 \\
        python -m cog.server.http
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator

from cog import Input, concurrent

import predict
from threading_utils import async_generator_from_thread

_stream = async_generator_from_thread()(predict.stream_tokens)


class Predictor(predict.Predictor):  # same setup(): loads the model, prints device and dtype
    @concurrent(max=8)  # = predict.MAX_CONCURRENCY (a literal for cog build)
    async def run(  # type: ignore[override]  # an async generator on purpose: this shape
        self,
        prompt: str = Input(description="Text to continue", max_length=65536),
        max_new_tokens: int = Input(default=256, ge=1, le=2048),
        seed: int | None = Input(default=None, ge=0, le=9223372036854775807),
    ) -> AsyncIterator[str]:
        stream = _stream(
            self.engine, prompt, max_new_tokens, 0.8, 0, 0.95, seed, started=time.perf_counter()
        )
        async with contextlib.aclosing(stream):  # stop the worker when run() ends, however
            async for piece in stream:
                yield piece
