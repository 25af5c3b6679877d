"""The contract's inputs for examples/image_predict.py: tests/contract.py, for an image model.

A fork that serves the image example copies this file over tests/contract.py; until then
`CONTRACT=examples/image_contract.py pytest tests/test_contract.py` checks the example against the
template's contract (tests/examples/test_examples_contract.py runs it). File outputs are compared by
their bytes, so "the same output" means the same PNGs in the same order.
"""

from __future__ import annotations

import re
from typing import Any

PREDICTOR = "examples/image_predict.py:Predictor"


def short_input(i: int) -> dict[str, Any]:
    """A valid input that finishes in well under a second; a different output for each `i`."""
    return {"steps": 8 + i % 5, "preview_every": 4, "seed": 1000 + i}


def streaming_input(i: int) -> dict[str, Any]:
    """A valid input whose output takes a few hundred milliseconds or more to stream."""
    return {"steps": 200, "preview_every": 10, "seed": 2000 + i}


def long_input(i: int) -> dict[str, Any]:
    """A valid input that keeps the model busy for several seconds: what cancel tests stop."""
    return {"steps": 1000, "preview_every": 50, "seed": 3000 + i}


# Each must be answered 422 (the schema's validation), never reach the model.
BAD_INPUTS: dict[str, dict[str, Any]] = {
    "wrong type": {"steps": "many"},
    "float for int": {"steps": 2.5},
    "above the maximum": {"steps": 1_000_000},
    "below the minimum": {"steps": 0},
    "negative": {"preview_every": -1},
    "seed too big": {"seed": 2**32},
    "null for an int": {"steps": None},
    "1 MB list": {"steps": [1] * 200_000},
}

# Metrics whose values differ between two runs of the same input; every other metric must match.
VOLATILE_METRICS = frozenset({"predict_time", "steps_per_second"})
# Parts of a log line that differ between two runs of the same input (timings).
VOLATILE_LOG = re.compile(r"\d+\.\d+")
