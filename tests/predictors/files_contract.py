"""The contract's inputs for tests/predictors/file_inputs.py: a fork's tests/contract.py, for a
model that opens its file inputs (one file and a list) and returns its result at the end.

Served with coglet_inputs installed, it keeps the whole contract; the naive fork (the same model
without it) fails the contract's server-path check (tests/test_contract.py shows both).
"""

from __future__ import annotations

import base64
import re
from typing import Any

PREDICTOR = "tests/predictors/file_inputs.py:Predictor"


def _file(text: str) -> str:
    return f"data:text/plain;base64,{base64.b64encode(text.encode()).decode()}"


def short_input(i: int) -> dict[str, Any]:
    """A valid input that finishes in well under a second; a different output for each `i`."""
    return {"image": _file(f"file {i}\n"), "images": [_file(f"more {j}\n") for j in range(i % 3)]}


def streaming_input(i: int) -> dict[str, Any]:
    """Nothing streams (run() returns its result at the end): any valid input."""
    return short_input(i)


def long_input(i: int) -> dict[str, Any]:
    """The most work its bounds allow: 8 files of 256 kB (reading them takes milliseconds)."""
    return {"image": _file("x" * 262_144), "images": [_file(f"{j}" * 262_144) for j in range(8)]}


# Each must be answered 422 (the schema's validation), never reach the model.
BAD_INPUTS: dict[str, dict[str, Any]] = {
    "no image": {"images": [_file("x")]},
    "a number for a file": {"image": 5},
    "a string for a list": {"image": _file("x"), "images": _file("y")},
    "null for a file": {"image": None},
    "1 MB string for a list": {"image": _file("x"), "images": "x" * 1_000_000},
}

# Metrics whose values differ between two runs of the same input; every other metric must match.
VOLATILE_METRICS = frozenset({"predict_time"})
# Parts of a log line that differ between two runs of the same input (timings).
VOLATILE_LOG = re.compile(r"\d+\.\d+")
