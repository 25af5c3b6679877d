"""The template's predictors with a probe on the model: what a test cannot see over HTTP.

Each class is the real predictor (predict.py or an example), with its engine's `generate`
wrapped in the worker thread:
- `PROBE_FILE` (env): one JSON line per generation when it ends, however it ends — the number
  of tokens made and the wall-clock time — so a test can see when a cancelled model stopped;
- `FAIL_AT` (env): raise a RuntimeError after that many tokens (a model failing mid-stream).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import predict
from examples import async_yield_predict, sync_predict


def _probed(generate: Any) -> Any:
    probe = os.environ.get("PROBE_FILE")
    fail_at = int(os.environ.get("FAIL_AT", "0"))

    def generate_with_probe(*args: Any, **kwargs: Any) -> Iterator[str]:
        count = 0
        try:
            for piece in generate(*args, **kwargs):
                if fail_at and count == fail_at:
                    raise RuntimeError(f"model exploded at token {count}")
                count += 1
                yield piece
        finally:
            if probe:
                with Path(probe).open("a") as f:
                    f.write(json.dumps({"tokens": count, "ended": time.time()}) + "\n")

    return generate_with_probe


class _Probe:
    def setup(self, weights: Any = None) -> None:
        super().setup(weights)  # type: ignore[misc]
        self.engine.generate = _probed(self.engine.generate)  # type: ignore[attr-defined]


class MainProbe(_Probe, predict.Predictor):
    pass


class SyncProbe(_Probe, sync_predict.Predictor):
    pass


class AsyncYieldProbe(_Probe, async_yield_predict.Predictor):
    pass
