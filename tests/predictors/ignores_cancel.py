"""A predictor whose work can be made to ignore cancel: faults the contract's cancel check catches.

`run()` streams progress while it burns the CPU for `seconds` after its first output, with one
`fault`:

- `"none"`: the work runs in the bridge's producer, which stops at its next yield once the
  prediction is cancelled (`coglet_cancel` makes coglet's cancel reach the stream);
- `"thread"`: the work runs in a plain `threading.Thread` that feeds the producer. A cancel ends
  the stream at once (coglet reports `canceled`, the slot is free), but nothing tells the
  thread: it computes on to its end — the classic leak of a worker started without the bridge;
- `"unhooked"` (with `COGLET_CANCEL=0` in the server's environment): the work is in the producer,
  but `coglet_cancel` is not installed, so coglet iterates the stream to its end after a cancel.

`tests/test_contract.py` shows its cancel check failing on the last two and passing on the first.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Iterator
from typing import cast

from cog import BaseRunner, ConcatenateIterator, Input, concurrent, streaming

import coglet_cancel
from threading_utils import generator_from_thread

_DONE = "done"


def _steps(seconds: float) -> Iterator[str]:
    """Model steps of about 20 ms of CPU, for `seconds` of wall time after the first one."""
    end: float | None = None
    step = 0
    while end is None or time.monotonic() < end:
        sum(i * i for i in range(300_000))  # a model step: about 20 ms of CPU
        step += 1
        yield f"step {step} "
        if end is None:  # the clock starts at the first output, whatever the machine's load
            end = time.monotonic() + seconds


def _feed(seconds: float, out: queue.SimpleQueue[str]) -> None:
    for item in _steps(seconds):
        out.put(item)
    out.put(_DONE)


def _stream(seconds: float, fault: str) -> Iterator[str]:
    if fault != "thread":
        yield from _steps(seconds)
        return
    out: queue.SimpleQueue[str] = queue.SimpleQueue()
    threading.Thread(target=_feed, args=(seconds, out), daemon=True).start()  # the fault
    while (item := out.get()) != _DONE:
        yield item


class Predictor(BaseRunner):
    def setup(self) -> None:
        if os.environ.get("COGLET_CANCEL", "1") == "1":
            coglet_cancel.install()

    @streaming
    @concurrent(max=2)
    async def run(
        self,
        seconds: float = Input(default=1.0, ge=0.0, le=60.0),
        fault: str = Input(default="none", choices=["none", "thread", "unhooked"]),
    ) -> ConcatenateIterator[str]:
        return cast(ConcatenateIterator[str], generator_from_thread()(_stream)(seconds, fault))
