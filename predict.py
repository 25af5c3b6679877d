"""Stream a small GPT's output from a worker thread, with each prediction's logs and metrics intact.

The only file where cog meets the model. `run()` returns a generator fed by a worker thread
(`generator_from_thread`): on cog 0.23 that is the shape that streams live *and* runs up to 8
predictions at once. The thread carries the prediction's context, so its `print`s land in this
prediction's `logs` and its metrics on this prediction — not on whichever one ran last.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Protocol, cast

import torch
from cog import BaseRunner, ConcatenateIterator, Input, Path, concurrent, current_scope, streaming

import coglet_cancel
from model import Engine, load_model
from threading_utils import generator_from_thread, stop_requested

MAX_CONCURRENCY = 8  # predictions at once; `make serve` passes it to the server as well
MAX_NEW_TOKENS = 2048  # upper bound of the input: ~3-4 s on 2 CPU cores, far less on a GPU
MAX_PROMPT_CHARS = 65_536  # longer prompts get HTTP 422; the model reads only the last 256 bytes
PROGRESS_EVERY = 256  # tokens between progress lines in the logs
FLUSH_EVERY = 0.01  # seconds: tokens made within 10 ms go out as one chunk (the first at once)


class _Scope(Protocol):
    def record_metric(self, name: str, value: float) -> None: ...


class Predictor(BaseRunner):
    def setup(self, weights: Path | str | None = None) -> None:
        coglet_cancel.install()  # a cancel or a dropped client stops the generation at once
        if not torch.cuda.is_available():
            # cores / MAX_CONCURRENCY intra-op threads per stream (at least 1): more, in worker
            # threads, ran slower here (one stream: 303 tok/s with 2 threads, 696 with 1).
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // MAX_CONCURRENCY))
        self.engine = load_model(weights)  # `weights` (COG_WEIGHTS) else ./weights
        self.engine.warmup()
        print(f"model ready on {self.engine.device} ({self.engine.dtype})")

    @streaming
    @concurrent(max=8)  # = MAX_CONCURRENCY (cog build needs an integer literal)
    async def run(
        self,
        prompt: str = Input(description="Text to continue", max_length=65536),
        max_new_tokens: int = Input(
            description="Tokens (bytes) to generate", default=256, ge=1, le=2048
        ),
        temperature: float = Input(description="0 = greedy", default=0.8, ge=0.0, le=2.0),
        top_k: int = Input(
            description="Sample from the k likeliest; 0 = all", default=0, ge=0, le=256
        ),
        top_p: float = Input(description="Nucleus sampling mass", default=0.95, ge=0.01, le=1.0),
        seed: int | None = Input(
            description="Random seed; empty = random", default=None, ge=0, le=9223372036854775807
        ),
    ) -> ConcatenateIterator[str]:
        # Called on the event loop: capture the prediction's context here, generate in a thread.
        # (A generator, not a ConcatenateIterator subclass: cog only reads the annotation.)
        return cast(
            ConcatenateIterator[str],
            _stream(
                self.engine,
                prompt,
                max_new_tokens,
                temperature,
                top_k,
                top_p,
                seed,
                started=time.perf_counter(),
            ),
        )


def stream_tokens(
    engine: Engine,
    prompt: str,
    max_new_tokens: int,
    temperature: float,
    top_k: int,
    top_p: float,
    seed: int | None,
    *,
    started: float,
) -> Iterator[str]:
    """Generate text pieces, logging progress and recording metrics on the current prediction.

    Runs in the worker thread, under the prediction's context captured when `_stream` is called.
    """
    scope = cast(_Scope, current_scope())  # this prediction's, thanks to the captured context
    if seed is None:
        seed = engine.resolve_seed(None)
        scope.record_metric("seed", seed)
    scope.record_metric("input_token_count", engine.count_prompt_tokens(prompt))
    print(f"generating up to {max_new_tokens} tokens (seed {seed})")
    count, chunk, flushed = 0, "", 0.0
    for piece in engine.generate(
        prompt,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        seed=seed,
        should_stop=stop_requested,
    ):
        count += 1
        if count == 1:
            scope.record_metric("time_to_first_token", time.perf_counter() - started)
        elif count % PROGRESS_EVERY == 0 and count < max_new_tokens:
            print(f"progress: {count}/{max_new_tokens} tokens")
        chunk += piece
        # One output event per token costs the server ~100 us of GIL time per event, which the
        # model thread then waits for: send what 10 ms produced as one chunk instead.
        if chunk and time.perf_counter() - flushed >= FLUSH_EVERY:
            yield chunk
            chunk, flushed = "", time.perf_counter()
    if chunk:
        yield chunk
    seconds = time.perf_counter() - started
    scope.record_metric("output_token_count", count)
    scope.record_metric("tokens_per_second", count / seconds)
    print(f"generated {count} tokens in {seconds:.2f}s ({count / seconds:.1f} tok/s)")


_stream = generator_from_thread()(stream_tokens)  # the model runs in a worker thread
