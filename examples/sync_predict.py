"""The same model behind a sync `run()`: streams live and is cancellable, one prediction at a time.

cog runs a sync `run()` in a thread of its own and cancels it by raising `CancelationException`
in that thread. The consumer of a channel's `stream()` waits in 50 ms slices, so the exception
surfaces at once; closing the stream tells the scheduler, which drops the request's sequence from
the batch at its next step (a few ms) and closes the channel, so nothing of a cancelled prediction
runs on. The other sequences in that batch go on with exactly the text they would have had.

    COG_PREDICT_TYPE_STUB=examples/sync_predict.py:Predictor python -m cog.server.http
"""

from __future__ import annotations

from typing import cast

from cog import ConcatenateIterator, Input, streaming

import predict


class Predictor(predict.Predictor):  # same setup(): loads the model, starts the scheduler
    @streaming
    def run(  # type: ignore[override]  # sync on purpose: this is the sync shape
        self,
        prompt: str = Input(description="Text to continue", max_length=65536),
        max_new_tokens: int = Input(default=256, ge=1, le=2048),
        seed: int | None = Input(default=None, ge=0, le=4294967295),
    ) -> ConcatenateIterator[str]:
        channel = self.submit(prompt, max_new_tokens, 0.8, 0, 0.95, seed)
        return cast(ConcatenateIterator[str], channel.stream())  # cog iterates it in this thread
