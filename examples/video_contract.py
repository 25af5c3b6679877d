"""The contract's inputs for examples/video_predict.py: tests/contract.py, for a video model.

A fork that serves the video example copies this file over tests/contract.py; until then
`CONTRACT=examples/video_contract.py pytest tests/test_contract.py` checks the example against
the template's contract (tests/examples/test_examples_contract.py runs it, with data URIs and with
uploads). File outputs are compared by their bytes, so "the same output" means the same JPEG
frames and the same MP4.
"""

from __future__ import annotations

import re
from typing import Any

PREDICTOR = "examples/video_predict.py:Predictor"


def short_input(i: int) -> dict[str, Any]:
    """A valid input that finishes in well under a second; a different output for each `i`."""
    return {"prompt": f"request {i}: a lighthouse", "frames": 4 + i % 5, "fps": 8, "seed": 1000 + i}


def streaming_input(i: int) -> dict[str, Any]:
    """A valid input whose output takes a few hundred milliseconds or more to stream."""
    return {"prompt": f"stream {i}: waves at dusk", "frames": 60, "fps": 12, "seed": 2000 + i}


def long_input(i: int) -> dict[str, Any]:
    """A valid input that keeps the model busy for several seconds: what cancel tests stop.

    1000 frames: some 5 s of rendering on 2 CPU cores, long enough for the cancel check's CPU
    windows (a stream of 1 s or more) on a machine a few times faster too.
    """
    return {"prompt": f"long {i}: a city by night", "frames": 1000, "fps": 24, "seed": 3000 + i}


# Each must be answered 422 (the schema's validation), never reach the model.
BAD_INPUTS: dict[str, dict[str, Any]] = {
    "wrong type": {"frames": "many"},
    "float for int": {"frames": 2.5},
    "above the maximum": {"frames": 1_000_000},
    "below the minimum": {"fps": 0},
    "seed too big": {"seed": 2**32},
    "null for a string": {"prompt": None},
    "list for a string": {"prompt": ["a kite"]},
    "1 MB string": {"prompt": "x" * 1_000_000},
}

# Metrics whose values differ between two runs of the same input; every other metric must match.
VOLATILE_METRICS = frozenset({"predict_time", "encode_ms", "queue_time"})
# Parts of a log line that differ between two runs of the same input (timings).
VOLATILE_LOG = re.compile(r"\d+\.\d+")
