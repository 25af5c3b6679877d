"""examples/audio_predict.py's predictor with a probe on its synthesiser and its encoder.

What a test cannot see over HTTP, or cannot make the model do:
- `PROBE_FILE` (env): a JSON line per WAV file the encoder makes — its sha256, the wall-clock
  time it was made (the file is written right after: the latency measurement's start), the
  prediction's seed —, a line per encode started (the seed), and a line per synthesis when it
  ends, however it ends: the seed, the chunks handed to the pool, the time, the error;
- `ENCODE_SECONDS` (env): each encode takes that much longer (a slow post-processing step, so
  that hand-offs queue up behind the pool);
- a seed from `FAIL_SEEDS` up (4_000_000_000 + N) makes the synthesiser raise at its chunk N
  (the model failing mid-stream); from `ENCODE_FAIL_SEEDS` up (4_100_000_000 + N), the encoder
  raises on chunk N (a post-processing step failing on the pool).
"""

from __future__ import annotations

import contextvars
import hashlib
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import torch

from examples import audio_predict

FAIL_SEEDS = 4_000_000_000
ENCODE_FAIL_SEEDS = 4_100_000_000

_synthesise = audio_predict.synthesise
_pcm16 = audio_predict.pcm16
_wav_bytes = audio_predict.wav_bytes
_lock = threading.Lock()
_seed: contextvars.ContextVar[int] = contextvars.ContextVar("audio_probe_seed", default=-1)
_chunk: contextvars.ContextVar[int] = contextvars.ContextVar("audio_probe_chunk", default=-1)


def _record(record: dict[str, Any]) -> None:
    probe = os.environ.get("PROBE_FILE")
    if probe:
        with _lock, Path(probe).open("a") as f:
            f.write(json.dumps(record) + "\n")


def _probed_synthesise(
    text: str,
    seed: int,
    chunk_samples: int,
    on_chunk: audio_predict.ChunkCallback,
    should_stop: Any = lambda: False,
) -> int:
    _seed.set(seed)  # in the producer: the pool threads see it (their context is captured)
    fail_at = seed - FAIL_SEEDS if FAIL_SEEDS <= seed < ENCODE_FAIL_SEEDS else None
    handed = 0

    def probed_on_chunk(i: int, samples: torch.Tensor) -> None:
        nonlocal handed
        if i == fail_at:
            raise RuntimeError(f"synthesiser exploded at chunk {i}")
        token = _chunk.set(i)  # captured by the hand-off below
        try:
            on_chunk(i, samples)
        finally:
            _chunk.reset(token)
        handed += 1

    error = None
    try:
        return _synthesise(text, seed, chunk_samples, probed_on_chunk, should_stop)
    except BaseException as exc:
        error = type(exc).__name__
        raise
    finally:
        _record({"seed": seed, "handed": handed, "ended": time.time(), "error": error})


def _probed_pcm16(samples: torch.Tensor) -> bytes:
    seed, chunk = _seed.get(), _chunk.get()
    _record({"encode": seed, "chunk": chunk})
    if seed >= ENCODE_FAIL_SEEDS and chunk == seed - ENCODE_FAIL_SEEDS:
        raise RuntimeError(f"encoder exploded on chunk {chunk}")
    delay = float(os.environ.get("ENCODE_SECONDS", "0"))
    if delay:
        time.sleep(delay)  # a slower post-processing step
    return _pcm16(samples)


def _probed_wav_bytes(pcm: bytes) -> bytes:
    data = _wav_bytes(pcm)
    _record({"wav": hashlib.sha256(data).hexdigest(), "made": time.time(), "seed": _seed.get()})
    return data


class Probe(audio_predict.Predictor):
    def setup(self, weights: Any = None) -> None:
        audio_predict.synthesise = _probed_synthesise
        audio_predict.pcm16 = _probed_pcm16
        audio_predict.wav_bytes = _probed_wav_bytes
        super().setup(weights)
