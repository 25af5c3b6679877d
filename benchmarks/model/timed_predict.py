"""predict.py's Predictor with its model thread's calls timed, for ``profile_server.py``.

Served in place of predict.py (same inputs, same outputs, same scheduler), it appends one JSON
line per event to the file named by ``$TIMELINE_LOG``: ``["s", t]`` when a request is
submitted (in coglet's thread, at ``run()``), ``["p", t, wall]`` per prefill, and
``["d", t, wall, cpu, n, k]`` per batched decode step of ``n`` sequences at ``k`` different
positions. ``t`` is ``time.perf_counter()``, the same clock as the benchmark process's on
Linux; ``cpu`` is the model thread's own CPU time. One unbuffered write per event (a few
microseconds against a step of milliseconds). Not a model to serve.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from cog import Path

from predict import Predictor as _Predictor

LOG_ENV = "TIMELINE_LOG"


class Predictor(_Predictor):
    def setup(self, weights: Path | str | None = None) -> None:
        super().setup(weights)
        fd = os.open(os.environ[LOG_ENV], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

        def record(*fields: Any) -> None:
            os.write(fd, (json.dumps(fields) + "\n").encode())

        engine, scheduler = self.engine, self.scheduler
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
