"""The contract's inputs for tests/predictors/file_inputs.py's StreamingPredictor: a fork's
tests/contract.py, for a model that opens a list of file inputs and streams what it read.

Served with coglet_inputs installed, it keeps the whole contract; the naive fork (the same model
without it) fails the contract's server-path check (tests/test_contract.py shows both).
"""

from __future__ import annotations

import base64
import re
from typing import Any

PREDICTOR = "tests/predictors/file_inputs.py:StreamingPredictor"


def _file(text: str) -> str:
    return f"data:text/plain;base64,{base64.b64encode(text.encode()).decode()}"


def short_input(i: int) -> dict[str, Any]:
    """A valid input that finishes in well under a second; a different output for each `i`."""
    return {"images": [_file(f"file {i}\n"), *(_file(f"more {j}\n") for j in range(i % 3))]}


def streaming_input(i: int) -> dict[str, Any]:
    """A line per file, streamed as each is read (and hashed 1000 times: about 35 ms a file)."""
    return {"images": [_file(f"stream {i} {j}\n" * 4096) for j in range(8)], "passes": 1000}


def long_input(i: int) -> dict[str, Any]:
    """Nine files of 256 kB, each hashed 1000 times (about 0.15 s a file here)."""
    return {"images": [_file(f"{j}" * 262_144) for j in range(9)], "passes": 1000}


# Each must be answered 422 (the schema's validation), never reach the model.
BAD_INPUTS: dict[str, dict[str, Any]] = {
    "no files": {},
    "a number for a file": {"images": [5]},
    "a string for a list": {"images": _file("y")},
    "null for the list": {"images": None},
    "1 MB string for a list": {"images": "x" * 1_000_000},
}

# Metrics whose values differ between two runs of the same input; every other metric must match.
VOLATILE_METRICS = frozenset({"predict_time"})
# Parts of a log line that differ between two runs of the same input (timings).
VOLATILE_LOG = re.compile(r"\d+\.\d+")
