"""Stream a small GPT's output, all predictions batched on one thread, logs and metrics intact.

The only file where cog meets the model. `setup()` starts a continuous-batching scheduler
(model/scheduler.py): one thread decodes the sequences of all running predictions together.
`run()` submits a request and returns the stream of its channel, which coglet iterates in a thread
of its own: on cog 0.23 that shape streams live *and* runs up to 32 predictions at once. The
channel carries the prediction's context, so the lines and metrics the scheduler thread writes for
this request (`Report` below) land on this prediction — not on whichever one ran last.
"""

from __future__ import annotations

import time
from typing import Protocol, cast

import cog
import torch
from cog import BaseRunner, ConcatenateIterator, Input, Path, current_scope, streaming

import coglet_cancel
import coglet_inputs
from model import Engine, RequestListener, Scheduler, load_model
from threading_utils import Channel

MAX_CONCURRENCY = 32  # predictions at once; `make serve` passes it to the server as well
MAX_BATCH_SIZE = 32  # sequences decoded together (why: model/scheduler.py)
TORCH_THREADS = 1  # intra-op threads of the one model thread on a CPU (why: model/scheduler.py)
MAX_NEW_TOKENS = 2048  # upper bound of the input
MAX_PROMPT_CHARS = 65_536  # longer prompts get HTTP 422; the model reads only the last 256 bytes
PROGRESS_EVERY = 256  # tokens between progress lines in the logs
FLUSH_EVERY = 0.01  # seconds: tokens made within 10 ms go out as one chunk (the first at once)


class _Scope(Protocol):
    def record_metric(self, name: str, value: float) -> None: ...


class Predictor(BaseRunner):
    def setup(self, weights: Path | str | None = None) -> None:
        coglet_cancel.install()  # a cancel or a dropped client stops the generation at once
        coglet_inputs.install(self)  # file inputs: only what the server received
        threads = None if torch.cuda.is_available() else TORCH_THREADS
        if threads is not None:
            torch.set_num_threads(threads)
        self.engine = load_model(weights)  # `weights` (COG_WEIGHTS) else ./weights
        self.engine.warmup()
        print(f"model ready on {self.engine.device} ({self.engine.dtype})")
        self.scheduler = Scheduler(
            self.engine,
            max_batch_size=MAX_BATCH_SIZE,
            flush_interval=FLUSH_EVERY,
            progress_every=PROGRESS_EVERY,
            num_threads=threads,
        ).start()

    def healthcheck(self) -> bool:  # coglet's GET /health-check: False -> UNHEALTHY
        return self.scheduler.healthy

    @streaming
    @cog.concurrent(max=32)  # = MAX_CONCURRENCY (cog build needs an integer literal)
    async def run(
        self,
        prompt: str = Input(
            description="Text to continue", default="def fibonacci(n):", max_length=65536
        ),
        max_new_tokens: int = Input(
            description="Tokens (bytes) to generate", default=256, ge=1, le=2048
        ),
        temperature: float = Input(description="0 = greedy", default=0.8, ge=0.0, le=2.0),
        top_k: int = Input(
            description="Sample from the k likeliest; 0 = all", default=0, ge=0, le=256
        ),
        top_p: float = Input(description="Nucleus sampling mass", default=0.95, ge=0.01, le=1.0),
        seed: int | None = Input(
            description="Random seed (32-bit); empty = random", default=None, ge=0, le=4294967295
        ),
    ) -> ConcatenateIterator[str]:
        channel = self.submit(prompt, max_new_tokens, temperature, top_k, top_p, seed)
        return cast(ConcatenateIterator[str], channel.stream())  # cog only reads the annotation

    def submit(
        self,
        prompt: str,
        max_new_tokens: int,
        temperature: float,
        top_k: int,
        top_p: float,
        seed: int | None,
    ) -> Channel[str]:
        """Queue one generation; call it in the prediction's context (its channel captures it)."""
        report = Report(self.engine, prompt, max_new_tokens, seed)
        return self.scheduler.submit(
            prompt,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            seed=report.seed,
            listener=report,
        )


class Report(RequestListener):
    """One prediction's log lines and metrics: run by the scheduler thread, in its context."""

    def __init__(self, engine: Engine, prompt: str, max_new_tokens: int, seed: int | None) -> None:
        self.started = time.perf_counter()
        self.engine, self.prompt, self.max_new_tokens = engine, prompt, max_new_tokens
        self.random_seed = seed is None
        self.seed = engine.resolve_seed(seed)

    def on_start(self, queue_time: float) -> None:
        scope = cast(_Scope, current_scope())  # this prediction's, thanks to the channel
        scope.record_metric("time_to_first_token", time.perf_counter() - self.started)
        scope.record_metric("queue_time", queue_time)
        scope.record_metric("input_token_count", self.engine.count_prompt_tokens(self.prompt))
        if self.random_seed:
            scope.record_metric("seed", self.seed)
        print(f"generating up to {self.max_new_tokens} tokens (seed {self.seed})")

    def on_progress(self, tokens: int) -> None:
        print(f"progress: {tokens}/{self.max_new_tokens} tokens")

    def on_finish(self, tokens: int, seconds: float) -> None:
        seconds = time.perf_counter() - self.started  # since run() was called
        scope = cast(_Scope, current_scope())
        scope.record_metric("output_token_count", tokens)
        scope.record_metric("tokens_per_second", tokens / seconds)
        print(f"generated {tokens} tokens in {seconds:.2f}s ({tokens / seconds:.1f} tok/s)")
