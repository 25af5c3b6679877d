"""The sync shape: `def run()` returns a threaded stream — live and cancellable, one at a time.

cog runs a sync `run()` in a thread of its own and cancels it by raising `CancelationException`
in that thread. The stream's consumer waits in 50 ms slices, so the exception surfaces at once;
the stream then closes, `stop_requested()` turns True in the worker and `words()` stops at its
next check. Its `print`s and metrics land on this prediction: the stream carries the context.

    COG_PREDICT_TYPE_STUB=examples/sync_predict.py:Predictor python -m cog.server.http

Replace `words()` with your model's generator; nothing else changes.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any, cast

from cog import BaseRunner, ConcatenateIterator, Input, current_scope, streaming

from threading_utils import generator_from_thread, stop_requested


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
    @streaming
    def run(
        self,
        text: str = Input(description="Words to stream", default="hello from a worker thread"),
        repeat: int = Input(description="How many times", default=3, ge=1, le=1000),
    ) -> ConcatenateIterator[str]:
        stream = generator_from_thread()(words)(text, repeat)  # context captured here
        return cast(ConcatenateIterator[str], stream)  # cog iterates it in this thread
