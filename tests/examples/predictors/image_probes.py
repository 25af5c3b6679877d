"""examples/image_predict.py's predictor with a probe on its denoising loop.

What a test cannot see over HTTP, or cannot make the model do:
- `PROBE_FILE` (env): a JSON line per PNG the model encodes — its sha256 and the wall-clock time
  it was made (the file is written right after: the latency measurement's start) — and a line
  per loop when it ends, however it ends: the seed, the steps it ran, the time, the error;
- `STEP_SECONDS` (env): each denoising step takes that much longer (a slower model);
- a seed from `FAIL_SEEDS` up (4_000_000_000 + N) makes the loop raise a RuntimeError at its
  step N, from inside the loop: a model failing mid-stream, after some previews were written.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import torch

from examples import image_predict

FAIL_SEEDS = 4_000_000_000

_denoise = image_predict.denoise
_png_bytes = image_predict.png_bytes
_lock = threading.Lock()


def _record(record: dict[str, Any]) -> None:
    probe = os.environ.get("PROBE_FILE")
    if probe:
        with _lock, Path(probe).open("a") as f:
            f.write(json.dumps(record) + "\n")


def _probed_denoise(
    unet: image_predict.TinyUNet, steps: int, seed: int, callback: image_predict.StepCallback
) -> torch.Tensor:
    step_seconds = float(os.environ.get("STEP_SECONDS", "0"))
    fail_at = seed - FAIL_SEEDS if seed >= FAIL_SEEDS else None
    ran = 0

    def on_step(step: int, image: torch.Tensor) -> bool:
        nonlocal ran
        ran = step
        if step == fail_at:
            raise RuntimeError(f"model exploded at step {step}")
        if step_seconds:
            time.sleep(step_seconds)  # a slower model
        return callback(step, image)

    error = None
    try:
        return _denoise(unet, steps, seed, on_step)
    except BaseException as exc:
        error = type(exc).__name__
        raise
    finally:
        _record({"seed": seed, "steps": ran, "ended": time.time(), "error": error})


def _probed_png_bytes(image: torch.Tensor) -> bytes:
    data = _png_bytes(image)
    _record({"png": hashlib.sha256(data).hexdigest(), "made": time.time()})
    return data


class Probe(image_predict.Predictor):
    def setup(self, weights: Any = None) -> None:
        image_predict.denoise = _probed_denoise
        image_predict.png_bytes = _probed_png_bytes
        super().setup(weights)
