"""predict.py's Predictor with its model thread's calls timed, for ``profile_server.py``.

Served in place of predict.py (same inputs, same outputs, same scheduler), it records one
event per line: ``["s", t]`` when a request is submitted (in coglet's thread, at ``run()``),
``["p", t, wall]`` per prefill, and ``["d", t, wall, cpu, n, k]`` per batched decode step of
``n`` sequences at ``k`` different positions. ``t`` is ``time.perf_counter()``, the same clock
as the benchmark process's on Linux; ``cpu`` is the model thread's own CPU time. Not a model to
serve.

The records stay in memory (a list append: well under a microsecond) until a prediction whose
prompt is ``FLUSH_PROMPT`` comes: its ``run()`` appends them as JSON lines to the file named by
``$TIMELINE_LOG`` and returns an empty stream at once. The benchmark sends one after a round,
when the model thread is idle. (Written as they came, one ``os.write`` each, the records cost
the model thread 45-80 us a step in the worker: in a batch-1 round, 2% of its time.)

With ``$PAIRED_STEPS`` set, each decode step of the scheduler is paired with one step of a raw
batch of the same size in another thread of this worker (run just after it, or on every other
step just before it), with its own KV pool and aligned rows that start at the same prompt and
live as long (255 steps, their window slide included); the scheduler's thread waits meanwhile.
It then records ``["r", n, k, cpu, raw_cpu]`` per step:
the same work, in the same process and the same moment, so the machine's drift hits both and
their ratio says whether the server's steps themselves cost more.

While a file named as the log plus ``.drain`` exists, each new request's text goes out as one
output at its end instead of chunk by chunk: the scheduler's events still reach the consumer,
coglet's thread iterating the channel, as when streamed, but coglet's output path (per item: its
Python checks, ``json.dumps``, the pipe to the parent, SSE, the client's parse) runs once. The
difference between the two is that path's cost per event.
"""

from __future__ import annotations

import itertools
import json
import os
import threading
import time
from collections.abc import Iterator
from typing import Any, cast

import torch
from cog import Path

from model import Engine, SamplingParams
from predict import TORCH_THREADS
from predict import Predictor as _Predictor
from threading_utils import Channel

LOG_ENV = "TIMELINE_LOG"
PAIRED_ENV = "PAIRED_STEPS"
DRAIN_SUFFIX = ".drain"  # with $TIMELINE_LOG + this present, text goes out once, at the end
PROMPT = "def fibonacci(n):"  # bench_server's prompt and sampling, for the raw batches
RAW_STEPS = 255  # a raw batch's life: bench_server's raw loop, 256 tokens
FLUSH_PROMPT = "<write the timeline>"  # a request with this prompt writes the records out


class Predictor(_Predictor):
    def setup(self, weights: Path | str | None = None) -> None:
        super().setup(weights)
        self.drain_flag = os.environ[LOG_ENV] + DRAIN_SUFFIX
        self.records: list[tuple[Any, ...]] = []

        def record(*fields: Any) -> None:
            self.records.append(fields)

        engine, scheduler = self.engine, self.scheduler
        if os.environ.get(PAIRED_ENV):
            engine.decode = _paired(engine, record)  # type: ignore[method-assign]
            return
        decode, prefill, submit = engine.decode, engine.prefill, scheduler.submit

        def timed_decode(seqs: Any) -> Any:
            lengths = {seq.cache.length for seq in seqs}
            start, cpu = time.perf_counter(), time.thread_time()
            tokens = decode(seqs)
            wall, cpu = time.perf_counter() - start, time.thread_time() - cpu
            record("d", start, wall, cpu, len(seqs), len(lengths))
            return tokens

        def timed_prefill(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            seq = prefill(*args, **kwargs)
            record("p", start, time.perf_counter() - start)
            return seq

        def timed_submit(*args: Any, **kwargs: Any) -> Any:
            record("s", time.perf_counter())
            return submit(*args, **kwargs)

        engine.decode = timed_decode  # type: ignore[method-assign]
        engine.prefill = timed_prefill  # type: ignore[method-assign]
        scheduler.submit = timed_submit  # type: ignore[method-assign]

    def submit(self, prompt: str, *args: Any, **kwargs: Any) -> Channel[str]:
        if prompt == FLUSH_PROMPT:
            self.flush()
            channel: Channel[str] = Channel()
            channel.close()
            return channel
        channel = super().submit(prompt, *args, **kwargs)
        if not os.path.exists(self.drain_flag):
            return channel
        return cast(Channel[str], _Drained(channel))

    def flush(self) -> None:
        """Append the records so far to ``$TIMELINE_LOG``; those made meanwhile stay."""
        n = len(self.records)  # the model thread may append meanwhile: take the first n only
        lines = "".join(json.dumps(fields) + "\n" for fields in self.records[:n])
        del self.records[:n]
        with open(os.environ[LOG_ENV], "a", encoding="utf-8") as log:
            log.write(lines)


class _Drained:
    """A channel whose consumer gets its text as one item, when the request ends."""

    def __init__(self, channel: Channel[str]) -> None:
        self.channel = channel

    def stream(self) -> Iterator[str]:
        yield "".join(self.channel.stream())


def _paired(engine: Engine, record: Any) -> Any:
    """engine.decode, each step paired with a raw step of the same size in another thread."""
    raw = Engine(engine.model, device=engine.device, dtype=engine.dtype)  # its own KV pool
    go, done = threading.Semaphore(0), threading.Semaphore(0)
    size: list[int] = [0]
    raw_cpu: list[float] = [0.0]
    decode = engine.decode

    def raw_thread() -> None:
        if not torch.cuda.is_available():  # as predict.py's scheduler thread
            torch.set_num_threads(TORCH_THREADS)
        batches: dict[int, tuple[list[Any], list[int]]] = {}  # size -> (sequences, steps run)
        while True:
            go.acquire()
            n = size[0]
            seqs, steps = batches.get(n, ([], [RAW_STEPS]))
            if steps[0] >= RAW_STEPS:
                for seq in seqs:
                    raw.release(seq)
                params = [SamplingParams(0.8, 0, 0.95, seed=i) for i in range(n)]
                seqs, steps = [raw.prefill(PROMPT, p) for p in params], [0]
                batches[n] = (seqs, steps)
            cpu = time.thread_time()
            raw.decode(seqs)
            raw_cpu[0] = time.thread_time() - cpu
            steps[0] += 1
            done.release()

    threading.Thread(target=raw_thread, name="paired-raw", daemon=True).start()

    steps = itertools.count()

    def raw_step(n: int) -> float:
        size[0] = n
        go.release()
        done.acquire()
        return raw_cpu[0]

    def paired_decode(seqs: Any) -> Any:
        k = len({seq.cache.length for seq in seqs})
        raw_first = next(steps) % 2 == 1  # either goes first in turn: neither finds caches warmer
        raw = raw_step(len(seqs)) if raw_first else 0.0
        cpu = time.thread_time()
        tokens = decode(seqs)
        cpu = time.thread_time() - cpu
        if not raw_first:
            raw = raw_step(len(seqs))
        record("r", len(seqs), k, cpu, raw)
        return tokens

    return paired_decode
