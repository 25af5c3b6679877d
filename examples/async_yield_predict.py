"""The same model behind an async `run()` that yields: concurrent and cancellable, not live.

On cog 0.23 (coglet) an async generator `run()` is collected to the end before anything is sent,
so the client sees the whole output at once; on the legacy Python server it streamed. A cancel
raises `CancelledError` in `run()`; `aclosing` then closes the channel's stream, and the scheduler
drops the request's sequence from the batch at its next step (a few ms); the other sequences in
that batch go on with exactly the text they would have had. Use this shape when you want the
event loop to see each piece (to post-process it with other async code) and do not need live
output.

    COG_PREDICT_TYPE_STUB=examples/async_yield_predict.py:Predictor COG_MAX_CONCURRENCY=32 \\
        python -m cog.server.http
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from cog import Input, concurrent

import predict


class Predictor(predict.Predictor):  # same setup(): loads the model, starts the scheduler
    @concurrent(max=32)  # = predict.MAX_CONCURRENCY (a literal for cog build)
    async def run(  # type: ignore[override]  # an async generator on purpose: this shape
        self,
        prompt: str = Input(description="Text to continue", max_length=65536),
        max_new_tokens: int = Input(default=256, ge=1, le=2048),
        seed: int | None = Input(default=None, ge=0, le=4294967295),
    ) -> AsyncIterator[str]:
        channel = self.submit(prompt, max_new_tokens, 0.8, 0, 0.95, seed)
        async with contextlib.aclosing(channel.astream()) as stream:  # closed however run() ends
            async for piece in stream:
                yield piece
