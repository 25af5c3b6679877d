"""What the template's contract tests (tests/test_contract.py) send to the predictor they check.

The contract — output streams live over SSE, every prediction keeps its own output, logs and
metrics at full concurrency, a request past capacity gets 409, bad input gets 422, a cancel ends
the prediction and frees its slot at once, the server stays healthy — holds for whatever model
`predict.py` serves. A fork that changes `predict.py`'s inputs edits *this file only*; the tests
themselves stay as they are. Nothing here depends on the model's text.

What the contract assumes of a model: the same input (seed included) gives the same output,
logs and non-timing metrics, whether the prediction ran alone or beside others.

What it reads from the predictor itself: whether run() streams (`@streaming`; without it the
tests that need a stream skip, saying so, and the cancel check measures whole runs), and its
file inputs (`cog.Path`: sent as data URIs and as URLs, and paths of the server in their place,
which must be refused; without file inputs those tests skip).

Optional declarations, for models that need them (absent = the default):
- `FLOAT_TOLERANCE = 1e-5`: floats in outputs and metrics compare within it (a batched forward
  pass sums in another order than a solo one). Default 0: exact.
- `ACCEPTABLE_ERRORS = (r"give 1 to 16 images",)`: regexes of the errors a schema-valid input
  may fail with — what the schema cannot say. The schema fuzzer accepts those failures.
- `ALLOWS_SERVER_PATHS = True`: the model is meant to read paths of the server (it installs
  `coglet_inputs` with `allow_local_paths=True`); the server-path check skips.
"""

from __future__ import annotations

import re
from typing import Any

PREDICTOR = "predict.py:Predictor"  # the file (at the repository root) and class under test


def short_input(i: int) -> dict[str, Any]:
    """A valid input that finishes in well under a second; a different output for each `i`."""
    return {"prompt": f"# request {i}\ndef ", "max_new_tokens": 12 + i % 11, "seed": 1000 + i}


def streaming_input(i: int) -> dict[str, Any]:
    """A valid input whose output takes a few hundred milliseconds or more to stream."""
    return {"prompt": f"# stream {i}\nclass ", "max_new_tokens": 600, "seed": 2000 + i}


def long_input(i: int) -> dict[str, Any]:
    """The longest valid input (within the model's bounds): what the cancel tests stop.

    The cancel check measures how it runs on the machine at hand and fits itself to it: CPU
    windows inside its stream when it streams 1 s or more after its first output, else the
    CPU of a whole run against a cancelled one. Any length works; a run too short to tell
    anything is reported, never failed.
    """
    return {"prompt": f"# long {i}\nimport ", "max_new_tokens": 2048, "seed": 3000 + i}


# Each must be answered 422 (the schema's validation), never reach the model.
BAD_INPUTS: dict[str, dict[str, Any]] = {
    "wrong type": {"prompt": "x", "max_new_tokens": "many"},
    "float for int": {"prompt": "x", "max_new_tokens": 2.5},
    "above the maximum": {"prompt": "x", "max_new_tokens": 1_000_000},
    "below the minimum": {"prompt": "x", "max_new_tokens": 0},
    "null for a string": {"prompt": None},
    "list for a string": {"prompt": ["def"]},
    "1 MB string": {"prompt": "x" * 1_000_000},
}

# Metrics whose values differ between two runs of the same input; every other metric must match.
VOLATILE_METRICS = frozenset(
    {"predict_time", "time_to_first_token", "tokens_per_second", "queue_time"}
)
# Parts of a log line that differ between two runs of the same input (timings).
VOLATILE_LOG = re.compile(r"\d+\.\d+")
