"""examples/transformers_predict.py's predictor with a probe on `model.generate`.

What a test cannot see over HTTP, or cannot make the model do:
- `PROBE_FILE` (env): one JSON line per `generate()` call when it ends, however it ends — the
  tokens it streamed, the wall-clock time, and the error it raised, if any;
- `STEP_SECONDS` (env): each decoding step takes that much longer, and the model never ends
  by itself (end-of-text suppressed), so a generation runs for max_new_tokens * STEP_SECONDS;
- a prompt that starts with `raise at N:` makes `generate()` raise a RuntimeError at its
  decoding step N (after N tokens), from inside its loop: a model failing mid-stream.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from examples import transformers_predict

EOS_ID = 256


class _StepProbe(LogitsProcessor):
    """Called by generate() once per decoding step, before it picks the token."""

    def __init__(self, step_seconds: float, fail_at: int | None) -> None:
        self.step_seconds = step_seconds
        self.fail_at = fail_at
        self.steps = 0

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> Any:
        if self.steps == self.fail_at:
            raise RuntimeError(f"model exploded at token {self.steps}")
        self.steps += 1
        if self.step_seconds:
            time.sleep(self.step_seconds)  # a slower model
            scores[:, EOS_ID] = -float("inf")
        return scores


def _probed(generate: Any) -> Any:
    probe = os.environ.get("PROBE_FILE")
    step_seconds = float(os.environ.get("STEP_SECONDS", "0"))

    def generate_with_probe(*args: Any, **kwargs: Any) -> Any:
        streamer = kwargs["streamer"]
        prompt = streamer.tokenizer.decode(kwargs["input_ids"][0], skip_special_tokens=True)
        match = re.match(r"raise at (\d+):", prompt)
        step = _StepProbe(step_seconds, int(match.group(1)) if match else None)
        kwargs["logits_processor"] = LogitsProcessorList([*kwargs["logits_processor"], step])
        error = None
        try:
            return generate(*args, **kwargs)
        except BaseException as exc:
            error = type(exc).__name__
            raise
        finally:
            if probe:
                record = {"tokens": streamer.tokens, "ended": time.time(), "error": error}
                with Path(probe).open("a") as f:
                    f.write(json.dumps(record) + "\n")

    return generate_with_probe


class Probe(transformers_predict.Predictor):
    def setup(self, weights: Any = None) -> None:
        super().setup(weights)
        self.model.generate = _probed(self.model.generate)
