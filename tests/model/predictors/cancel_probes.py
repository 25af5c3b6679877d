"""predict.py with a probe on its model: when each prediction's generation really stopped.

A test sees over HTTP when coglet *reports* a prediction canceled; these probes show when the
model stopped working on it. They wrap the two model calls every generation goes through,
``engine.prefill`` (the prompt, and the first token) and ``engine.decode`` (one more token for
each sequence of a batch) — one sequence at a time in predict.py today, a shared batch under a
batching scheduler. Environment:

- ``PROBE_FILE``: JSON lines, ``{"event": "prefill", "seed": s, "t": ...}`` when a sequence's
  prefill starts, and ``{"event": "end", "seed": s, "tokens": n, "t": ...}`` when the model let
  go of the sequence (it was freed), however the generation ended. ``t`` is ``time.time()``;
  ``seed`` is the sampling seed, which the tests choose unique per prediction.
- ``HOLD_SEED``, ``HOLD_SECONDS`` (default 0.25): the prefill of the sequence with that seed first
  waits up to ``HOLD_SECONDS``, returning early once ``stop_requested()`` says its consumer left —
  a long prefill that polls ``should_stop`` as the README asks. It gives the tests a moment
  "before the first token" to cancel in. (Under a scheduler thread, which polls its channels
  between steps instead, the hold simply runs out: hence short.)

Classes (one server each):

- ``HookedProbe``: predict.py's Predictor as shipped (its ``setup()`` installs
  ``coglet_cancel``), probed.
- ``UnhookedProbe``: the same without the hook (``setup()`` removes it again), to observe what
  coglet itself does on cancel.
"""

from __future__ import annotations

import json
import os
import threading
import time
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import coglet_cancel
import predict
from threading_utils import stop_requested

_write_lock = threading.Lock()


def _record(probe: Path | None, **fields: Any) -> None:
    if probe is None:
        return
    line = json.dumps({**fields, "t": time.time()}) + "\n"
    with _write_lock, probe.open("a") as f:
        f.write(line)


def _probe_engine(engine: Any) -> None:
    """Wrap ``engine.prefill`` / ``engine.decode`` on this instance (see the module docstring)."""
    probe = Path(os.environ["PROBE_FILE"]) if os.environ.get("PROBE_FILE") else None
    hold_seed = int(os.environ["HOLD_SEED"]) if os.environ.get("HOLD_SEED") else None
    hold_seconds = float(os.environ.get("HOLD_SECONDS", "0.25"))
    prefill, decode = engine.prefill, engine.decode
    counts: weakref.WeakKeyDictionary[Any, list[int]] = weakref.WeakKeyDictionary()

    def probed_prefill(prompt: Any, params: Any) -> Any:
        seed = params.seed
        _record(probe, event="prefill", seed=seed)
        if seed == hold_seed:
            deadline = time.monotonic() + hold_seconds
            while time.monotonic() < deadline and not stop_requested():
                time.sleep(0.001)
        seq = prefill(prompt, params)
        count = [1]
        counts[seq] = count
        weakref.finalize(seq, lambda: _record(probe, event="end", seed=seed, tokens=count[0]))
        return seq

    def probed_decode(seqs: Sequence[Any]) -> list[int]:
        tokens: list[int] = decode(seqs)
        for seq in seqs:
            count = counts.get(seq)
            if count is not None:
                count[0] += 1
        return tokens

    engine.prefill = probed_prefill
    engine.decode = probed_decode


class _Probe:
    hook = True  # keep the hook predict.py's setup() installs

    def setup(self, weights: Any = None) -> None:
        super().setup(weights)  # type: ignore[misc]
        assert coglet_cancel.installed()
        if not self.hook:
            coglet_cancel.uninstall()  # coglet's own behaviour, as if predict.py had no hook
        _probe_engine(self.engine)  # type: ignore[attr-defined]


class HookedProbe(_Probe, predict.Predictor):
    pass


class UnhookedProbe(_Probe, predict.Predictor):
    hook = False
