"""A small predictor for tests/test_contract_fuzz.py: one input of each kind the fuzzer generates.

An int with bounds, a str with choices (optional: it has a default), a required `cog.Path`, a
list of strings, an `Optional[str]` (nullable: the fuzzer must never send it `null`). It streams
one line per `count`, naming the file's size, in predict.py's shape: an async `run()` returning
a bridge stream, `coglet_cancel` and `coglet_inputs` installed in `setup()`.

Two faults, each on inputs the schema accepts:
- a `words` list that is empty or longer than 3 fails with "give 1 to 3 words" — a rule the
  schema cannot say, which the test declares acceptable (a contract's `ACCEPTABLE_ERRORS`);
- `count=4` with `mode="lower"` (and 1 to 3 words) raises an error nothing declares: the fuzzer
  must catch it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import cast

import cog
from cog import BaseRunner, Input, Path, streaming

import coglet_cancel
import coglet_inputs
from threading_utils import generator_from_thread


def lines(count: int, mode: str, words: list[str], size: int, note: str | None) -> Iterator[str]:
    """The model stand-in, run in the stream's worker thread."""
    for i in range(count):
        line = f"{i} {' '.join(words)} {size} bytes{' ' + note if note else ''}\n"
        yield line.upper() if mode == "upper" else line.lower()


class Predictor(BaseRunner):
    def setup(self) -> None:
        coglet_cancel.install()  # a cancel stops the returned stream, as in predict.py
        coglet_inputs.install(self)  # file inputs: only what the server received

    @streaming
    @cog.concurrent(max=4)  # an integer literal: cog build reads it statically
    async def run(
        self,
        file: Path = Input(description="Any file"),
        count: int = Input(description="Lines to stream", default=2, ge=1, le=5),
        mode: str = Input(
            description="Case of the lines", default="upper", choices=["upper", "lower"]
        ),
        words: list[str] = Input(description="1 to 3 words", default=["probe"]),
        note: str | None = Input(description="Appended when given", default=None),
    ) -> Iterator[str]:
        if not 1 <= len(words) <= 3:
            raise ValueError(f"give 1 to 3 words, not {len(words)}")
        if count == 4 and mode == "lower":
            raise RuntimeError("the probe broke on count=4, mode=lower")
        size = file.stat().st_size
        # On the event loop: the call captures this prediction's context for the worker thread.
        stream = generator_from_thread()(lines)(count, mode, words, size, note)
        return cast(Iterator[str], stream)  # cog only reads the annotation
