"""A predictor that runs the raw batch loop, or predict.py's scheduler, inside coglet's worker.

``benchmarks/model/profile_server.py`` serves it beside predict.py to split the server's
overhead: the same work as the benchmark process's raw loop, but in a coglet worker process
(``raw=true``: what being in that process costs), and predict.py's scheduler with its channels
consumed by threads of the worker instead of coglet's output path (what the scheduler costs
there, without streaming). Each prediction returns the tokens/s it measured. Not a model to
serve: no input checks beyond the types.
"""

from __future__ import annotations

import threading
import time

import torch
from cog import BasePredictor

from model import SamplingParams, Scheduler, load_model
from predict import FLUSH_EVERY, MAX_BATCH_SIZE, TORCH_THREADS

PROMPT = "def fibonacci(n):"
SAMPLING = {"temperature": 0.8, "top_k": 0, "top_p": 0.95}


class Predictor(BasePredictor):
    def setup(self) -> None:
        torch.set_num_threads(TORCH_THREADS)
        self.engine = load_model()
        self.engine.warmup()
        self.scheduler = Scheduler(
            self.engine,
            max_batch_size=MAX_BATCH_SIZE,
            flush_interval=FLUSH_EVERY,
            num_threads=TORCH_THREADS,
        ).start()

    def predict(self, n: int = 8, tokens: int = 256, raw: bool = False) -> float:
        return self._raw(n, tokens) if raw else self._scheduled(n, tokens)

    def _raw(self, n: int, tokens: int) -> float:
        """N prefills, then tokens - 1 batched decode steps, in a fresh thread."""
        rate: list[float] = []

        def body() -> None:
            torch.set_num_threads(TORCH_THREADS)
            start = time.perf_counter()
            seqs = [
                self.engine.prefill(PROMPT, SamplingParams(seed=1 + i, **SAMPLING))  # type: ignore[arg-type]
                for i in range(n)
            ]
            for _ in range(tokens - 1):
                self.engine.decode(seqs)
            for seq in seqs:
                self.engine.release(seq)
            rate.append(n * tokens / (time.perf_counter() - start))

        thread = threading.Thread(target=body)
        thread.start()
        thread.join()
        return rate[0]

    def _scheduled(self, n: int, tokens: int) -> float:
        """N requests on the scheduler at once, each channel read by its own thread."""
        barrier = threading.Barrier(n + 1)

        def consume(i: int) -> None:
            barrier.wait()
            channel = self.scheduler.submit(
                PROMPT,
                max_new_tokens=tokens,
                seed=1 + i,
                **SAMPLING,  # type: ignore[arg-type]
            )
            for _ in channel.stream():
                pass

        threads = [threading.Thread(target=consume, args=(i,)) for i in range(n)]
        for thread in threads:
            thread.start()
        barrier.wait()
        start = time.perf_counter()
        for thread in threads:
            thread.join()
        return n * tokens / (time.perf_counter() - start)
