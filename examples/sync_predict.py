"""The same model behind a sync `run()`: streams live and is cancellable, one prediction at a time.

cog runs a sync `run()` in a thread of its own and cancels it by raising `CancelationException`
in that thread. The consumer of a `generator_from_thread` stream waits in 50 ms slices, so the
exception surfaces at once; the stream then tells the worker thread to stop (`stop_requested()`
is polled before every model step) and waits for it, so nothing of a cancelled prediction runs on.

    COG_PREDICT_TYPE_STUB=examples/sync_predict.py:Predictor python -m cog.server.http
"""

from __future__ import annotations

import time
from typing import cast

from cog import ConcatenateIterator, Input, streaming

import predict
from threading_utils import generator_from_thread

_stream = generator_from_thread()(predict.stream_tokens)


class Predictor(predict.Predictor):  # same setup(): loads the model, prints device and dtype
    @streaming
    def run(  # type: ignore[override]  # sync on purpose: this is the sync shape
        self,
        prompt: str = Input(description="Text to continue", max_length=65536),
        max_new_tokens: int = Input(default=256, ge=1, le=2048),
        seed: int | None = Input(default=None, ge=0, le=9223372036854775807),
    ) -> ConcatenateIterator[str]:
        stream = _stream(
            self.engine, prompt, max_new_tokens, 0.8, 0, 0.95, seed, started=time.perf_counter()
        )
        return cast(ConcatenateIterator[str], stream)  # cog iterates it in this same thread
