"""The template's predictors with a probe on the model: what a test cannot see over HTTP.

Each class is predict.py's predictor (as shipped, or behind the sync or async-generator shape of
`run()`) whose scheduler drives a wrapped
engine (`ProbedEngine`: the same `prefill`/`decode`, observed), switched by environment variables:
- `PROBE_FILE`: one JSON line per sequence when the scheduler frees it (its KV cache goes with it),
  however it ends — its prompt, the number of tokens made, and wall-clock times of its prefill
  and of its release — so a test can see when a cancelled model stopped and which sequences
  shared the batch;
- `FAIL_AT` (+ `FAIL_PROMPT`): the sequence of a prompt containing `FAIL_PROMPT` (any prompt
  without it) fails once it has made `FAIL_AT` tokens: `decode` raises `SequenceError` for it
  before touching any sequence, as a model that detects a bad row would, so that prediction fails
  alone ("model exploded at token N") and its batch-mates go on;
- `KILL_PROMPT`: a decode step holding a sequence of a prompt containing it raises an exception
  that is not an `Exception`: the scheduler thread dies (the path /health-check reports).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import weakref
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, cast

import cog
from cog import ConcatenateIterator, Input, streaming

import predict
from model import Engine, SamplingParams, SequenceError


class SchedulerKilled(BaseException):  # not an Exception: no step can recover from it
    """Injected by KILL_PROMPT: escapes the scheduler's per-step error handling."""


def _record(probe: str, facts: dict[str, Any]) -> None:
    facts["ended"] = time.time()
    with Path(probe).open("a") as f:
        f.write(json.dumps(facts) + "\n")


class ProbedEngine:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.probe = os.environ.get("PROBE_FILE")
        self.fail_at = int(os.environ.get("FAIL_AT", "0"))
        self.fail_prompt = os.environ.get("FAIL_PROMPT", "")
        self.kill_prompt = os.environ.get("KILL_PROMPT")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)

    def prefill(self, prompt: str, params: SamplingParams) -> Any:
        seq = self.engine.prefill(prompt, params)
        facts = {"prompt": prompt, "tokens": 1, "started": time.time()}
        seq.probe_facts = facts  # the finalizer below must not hold the sequence itself
        if self.probe:
            weakref.finalize(seq, _record, self.probe, facts)
        return seq

    def decode(self, seqs: Sequence[Any]) -> list[int]:
        prompts = [seq.probe_facts["prompt"] for seq in seqs]
        if self.kill_prompt and any(self.kill_prompt in p for p in prompts):
            raise SchedulerKilled("injected: the scheduler thread dies")
        if self.fail_at:
            failed = {
                i: RuntimeError(f"model exploded at token {seq.probe_facts['tokens']}")
                for i, seq in enumerate(seqs)
                if self.fail_prompt in prompts[i] and seq.probe_facts["tokens"] >= self.fail_at
            }
            if failed:
                raise SequenceError(failed)
        tokens = self.engine.decode(seqs)
        for seq in seqs:
            seq.probe_facts["tokens"] += 1
        return tokens


class _Probe:
    def setup(self, weights: Any = None) -> None:
        super().setup(weights)  # type: ignore[misc]
        self.scheduler.engine = ProbedEngine(self.engine)  # type: ignore[attr-defined]


class MainProbe(_Probe, predict.Predictor):
    pass


class SyncProbe(_Probe, predict.Predictor):
    """The sync shape: cog raises its cancel in run()'s thread, the stream's 50 ms wait sees it."""

    @streaming
    def run(  # type: ignore[override]
        self,
        prompt: str = Input(description="Text to continue", max_length=65536),
        max_new_tokens: int = Input(default=256, ge=1, le=2048),
        seed: int | None = Input(default=None, ge=0, le=4294967295),
    ) -> ConcatenateIterator[str]:
        channel = self.submit(prompt, max_new_tokens, 0.8, 0, 0.95, seed)
        return cast(ConcatenateIterator[str], channel.stream())


class AsyncYieldProbe(_Probe, predict.Predictor):
    """The async-generator shape: concurrent and cancellable, collected to the end by coglet."""

    @cog.concurrent(max=32)
    async def run(  # type: ignore[override]
        self,
        prompt: str = Input(description="Text to continue", max_length=65536),
        max_new_tokens: int = Input(default=256, ge=1, le=2048),
        seed: int | None = Input(default=None, ge=0, le=4294967295),
    ) -> AsyncIterator[str]:
        channel = self.submit(prompt, max_new_tokens, 0.8, 0, 0.95, seed)
        async with contextlib.aclosing(channel.astream()) as stream:
            async for piece in stream:
                yield piece
