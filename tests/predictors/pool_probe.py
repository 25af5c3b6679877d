"""A model no other test knows: its producer and a pool of its own threads print at once.

Stands for a fork whose model post-processes each piece on a `ThreadPoolExecutor` (a speech
model encoding chunks, an image model running a safety checker): for every step, the producer
prints a line, hands the step to a `ContextThreadPoolExecutor` whose threads print and record a
metric too, then streams the step's word. Lines from the producer and the pool interleave
differently from run to run; the contract compares a prediction's logs as a multiset (every
line there, once, none from another prediction), not in order.

Each step keeps a CPU busy for `step_ms` of wall time, so the stream's length does not depend
on the machine's speed: `steps=150, step_ms=2` streams for about 0.3 s anywhere, the fastest
model the contract's cancel check is shown on (tests/predictors/pool_contract.py).
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any, cast

import cog
from cog import BaseRunner, ConcatenateIterator, Input, current_scope, streaming

import coglet_cancel
from threading_utils import ContextThreadPoolExecutor, generator_from_thread, stop_requested

# Its "weights": a file in weights/ beside this file, found from the file's own place, as a fork
# loads its model (in the image, /src/weights/ beside /src/predict.py).
WEIGHTS = Path(__file__).parent / "weights" / "pool_words.txt"


_BLOCK = bytes(256 * 1024)


def _busy(seconds: float) -> None:
    """A model step: the CPU busy for `seconds` of wall time, in native code that releases the
    GIL as torch's kernels do (hashlib does for buffers over 2 KiB)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        hashlib.sha256(_BLOCK).digest()


def _encode(seed: int, step: int, word: str) -> str:
    """The post-processing a pool thread does: prints and records on the prediction."""
    print(f"seed {seed}: pool encoded step {step} ({word})")
    scope: Any = current_scope()  # cog types it `object`
    scope.record_metric("pool_steps", 1, mode="incr")
    return word


def _steps(
    words: list[str], seed: int, steps: int, step_ms: int, pool_threads: int
) -> Iterator[str]:
    rng = random.Random(seed)
    print(f"seed {seed}: {steps} steps on {pool_threads} pool threads")
    with ContextThreadPoolExecutor(pool_threads) as pool:
        pending: list[Future[str]] = []
        for step in range(steps):
            if stop_requested():
                pool.shutdown(cancel_futures=True)
                return
            _busy(step_ms / 1000)
            word = rng.choice(words)
            print(f"seed {seed}: producer made step {step}")
            pending.append(pool.submit(_encode, seed, step, word))
            while pending and (pending[0].done() or len(pending) > pool_threads):
                yield pending.pop(0).result() + " "
        for future in pending:
            yield future.result() + " "
    print(f"seed {seed}: done")


class Predictor(BaseRunner):
    def setup(self, weights: Path | str | None = None) -> None:
        coglet_cancel.install()
        self.words = WEIGHTS.read_text().split()

    @streaming
    @cog.concurrent(max=8)
    async def run(
        self,
        seed: int = Input(default=1, ge=0, le=2147483647),
        steps: int = Input(default=20, ge=1, le=100_000),
        step_ms: int = Input(default=2, ge=1, le=1000),
        pool_threads: int = Input(default=3, ge=1, le=8),
    ) -> ConcatenateIterator[str]:
        stream = generator_from_thread()(_steps)(self.words, seed, steps, step_ms, pool_threads)
        return cast(ConcatenateIterator[str], stream)
