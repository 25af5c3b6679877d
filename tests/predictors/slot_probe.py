"""A probe for tests/test_coglet_behaviour.py: coglet's slot bookkeeping and its input validation.

`run()` streams `ticks` lines from the bridge's producer thread, one every `TICK` seconds (the
shape of predict.py: an async `run()` returning a threaded stream, `coglet_cancel` installed, so
a cancel ends the prediction `canceled` within milliseconds); `ticks=0` streams one line and
ends at once. The first line names `seed` and `level` as `run()` received them:

- `seed: int | None = Input(default=None)`: an optional input with a `None` default; the schema
  says `"default": null, "nullable": true` (what `cog build` writes);
- `level: int | None = Input(default=None, ge=1, le=3)`: the same with bounds, which the `None`
  default is never checked against (kin-openapi validates a non-null default only).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import cast

from cog import BaseRunner, ConcatenateIterator, Input, Path, concurrent, streaming

import coglet_cancel
from threading_utils import generator_from_thread

TICK = 0.005  # seconds between lines: a stream that runs until it is cancelled, at little CPU


def _lines(ticks: int, seed: int | None, level: int | None) -> Iterator[str]:
    yield f"seed={seed!r} level={level!r}\n"
    for tick in range(ticks):
        time.sleep(TICK)  # a model step, in the producer: the bridge stops it at its next yield
        yield f"tick {tick}\n"


class Predictor(BaseRunner):
    def setup(self, weights: Path | str | None = None) -> None:
        coglet_cancel.install()

    @streaming
    @concurrent(max=4)  # an integer literal: cog build reads it statically
    async def run(
        self,
        ticks: int = Input(default=0, ge=0, le=1_000_000),
        seed: int | None = Input(default=None),
        level: int | None = Input(default=None, ge=1, le=3),
    ) -> ConcatenateIterator[str]:
        stream = generator_from_thread()(_lines)(ticks, seed, level)
        return cast(ConcatenateIterator[str], stream)
