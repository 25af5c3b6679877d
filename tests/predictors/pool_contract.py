"""The contract's inputs for tests/predictors/pool_probe.py: a fork's tests/contract.py, for a
model whose producer and pool threads print at once, and whose long input streams 0.3 s."""

from __future__ import annotations

import re
from typing import Any

PREDICTOR = "tests/predictors/pool_probe.py:Predictor"


def short_input(i: int) -> dict[str, Any]:
    """A valid input that finishes in well under a second; a different output for each `i`."""
    return {"seed": 1000 + i, "steps": 10 + i % 7, "pool_threads": 1 + i % 4}


def streaming_input(i: int) -> dict[str, Any]:
    """A valid input whose output takes a few hundred milliseconds or more to stream."""
    return {"seed": 2000 + i, "steps": 100, "step_ms": 3}


def long_input(i: int) -> dict[str, Any]:
    """The fastest input the cancel check measures: about 0.3 s of streaming on any machine."""
    return {"seed": 3000 + i, "steps": 150, "step_ms": 2, "pool_threads": 4}


# Each must be answered 422 (the schema's validation), never reach the model.
BAD_INPUTS: dict[str, dict[str, Any]] = {
    "wrong type": {"steps": "many"},
    "float for int": {"steps": 2.5},
    "above the maximum": {"pool_threads": 9},
    "below the minimum": {"step_ms": 0},
    "null for an int": {"seed": None},
    "1 MB list": {"steps": [1] * 200_000},
}

# Metrics whose values differ between two runs of the same input; every other metric must match.
VOLATILE_METRICS = frozenset({"predict_time"})
# Parts of a log line that differ between two runs of the same input: none.
VOLATILE_LOG = re.compile(r"(?!)")
