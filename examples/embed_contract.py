"""The contract's inputs for examples/embed_predict.py: tests/contract.py, for an embeddings model.

A fork that serves the embeddings example copies this file over tests/contract.py; until then
`CONTRACT=examples/embed_contract.py pytest tests/test_contract.py` checks the example against the
template's contract (tests/examples/test_examples_contract.py runs it). The model returns its output
at the end (no `@streaming`): the contract's streaming tests skip, saying so, and its cancel check
compares the CPU of a whole run with a cancelled one.
"""

from __future__ import annotations

import re
from typing import Any

PREDICTOR = "examples/embed_predict.py:Predictor"

WORDS = ("alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa")


def _text(i: int, j: int, chars: int) -> str:
    """Text `j` of input `i`: words in an order of its own, cut to `chars` characters."""
    words = " ".join(WORDS[(i * 7 + j * 3 + k * k) % len(WORDS)] for k in range(chars // 3 + 1))
    return words[:chars]


def short_input(i: int) -> dict[str, Any]:
    """A valid input that finishes in well under a second; a different output for each `i`."""
    return {"texts": [_text(i, j, 20 + 7 * ((i + j) % 9)) for j in range(1 + i % 3)]}


def streaming_input(i: int) -> dict[str, Any]:
    """Any valid input: the model streams nothing (the tests that need a stream skip)."""
    return short_input(i)


def long_input(i: int) -> dict[str, Any]:
    """The most work one prediction may ask for: 64 texts of 2,000 characters (about 1 s on
    one CPU core). The cancel check measures it, whatever its length."""
    return {"texts": [_text(i, j, 2000) for j in range(64)]}


# Each must be answered 422 (the schema's validation), never reach the model.
BAD_INPUTS: dict[str, dict[str, Any]] = {
    "a string for the list": {"texts": "one text"},
    "numbers in the list": {"texts": [1, 2]},
    "null in the list": {"texts": ["a", None]},
    "null for the list": {"texts": None},
    "an object for the list": {"texts": {"a": "b"}},
    "1 MB string for the list": {"texts": "x" * 1_000_000},
}

# What a schema-valid input may fail with: the bounds the schema cannot express (run() checks
# them: the list's length, each text's length).
ACCEPTABLE_ERRORS = (
    r"texts: \d+ given; send 1 to 64 per prediction",
    r"texts\[\d+\]: \d+ characters; at most 2000",
)

# Metrics whose values differ between two runs of the same input; every other metric must match.
# The batch each text rode in, and its wait for it, depend on the other predictions.
VOLATILE_METRICS = frozenset({"predict_time", "batch_size", "queue_ms"})
# Parts of a log line that differ between two runs of the same input (the batch's size).
VOLATILE_LOG = re.compile(r"in a batch of \d+")
# Floats in outputs and metrics may differ by this much between two runs of one input: a text
# batched with others goes through other kernels than alone (measured: at most 1.2e-7).
FLOAT_TOLERANCE = 1e-5
