"""The contract's inputs for examples/audio_predict.py: tests/contract.py, for a speech model.

A fork that serves the audio example copies this file over tests/contract.py; until then
`CONTRACT=examples/audio_contract.py pytest tests/test_contract.py` checks the example against
the template's contract (tests/examples/test_examples_contract.py runs it, with data URIs and with
uploads). File outputs are compared by their bytes, so "the same output" means the same WAV
chunks and the same full file.
"""

from __future__ import annotations

import re
from typing import Any

PREDICTOR = "examples/audio_predict.py:Predictor"

_SENTENCE = "The quick brown fox jumps over the lazy dog, and then it rests a while. "


def short_input(i: int) -> dict[str, Any]:
    """A valid input that finishes in well under a second; a different output for each `i`."""
    return {"text": f"Request {i}: hello.", "chunk_ms": 250, "seed": 1000 + i}


def streaming_input(i: int) -> dict[str, Any]:
    """A valid input whose output takes a few hundred milliseconds or more to stream."""
    return {"text": f"Stream {i}. " + _SENTENCE, "chunk_ms": 200, "seed": 2000 + i}


def long_input(i: int) -> dict[str, Any]:
    """A valid input that keeps the model busy for several seconds: what cancel tests stop.

    About a minute of audio: some 6 s of synthesis on 2 CPU cores, so that it streams for 0.2 s
    or more after its first output on a machine many times faster.
    """
    return {"text": f"Long {i}. " + _SENTENCE * 11, "chunk_ms": 250, "seed": 3000 + i}


# Each must be answered 422 (the schema's validation), never reach the model.
BAD_INPUTS: dict[str, dict[str, Any]] = {
    "wrong type": {"chunk_ms": "many"},
    "float for int": {"chunk_ms": 2.5},
    "above the maximum": {"chunk_ms": 1_000_000},
    "below the minimum": {"chunk_ms": 0},
    "seed too big": {"seed": 2**32},
    "null for a string": {"text": None},
    "list for a string": {"text": ["hello"]},
    "1 MB string": {"text": "x" * 1_000_000},
}

# Metrics whose values differ between two runs of the same input; every other metric must match.
VOLATILE_METRICS = frozenset({"predict_time", "real_time_factor", "queue_time"})
# Parts of a log line that differ between two runs of the same input (timings).
VOLATILE_LOG = re.compile(r"\d+\.\d+")
