"""A small predictor for tests/test_contract_fuzz.py: one input of each kind the fuzzer generates.

An int with bounds, a str with choices (optional: it has a default), a required `cog.Path`, a
list of strings, an `Optional[str]` (nullable: the fuzzer must never send it `null`). It streams
one line per `count`, naming the file's size and media type.

Two faults, each on inputs the schema accepts:
- more than 3 `words` fail with "give 1 to 3 words" — a rule the schema cannot say, which the
  test declares acceptable (a contract's `ACCEPTABLE_ERRORS`);
- `count=4` with `mode="lower"` raises an error nothing declares: the fuzzer must catch it.
"""

from __future__ import annotations

import mimetypes
from collections.abc import AsyncIterator

import cog
from cog import BaseRunner, Input, Path


class Predictor(BaseRunner):
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
    ) -> AsyncIterator[str]:
        if not 1 <= len(words) <= 3:
            raise ValueError(f"give 1 to 3 words, not {len(words)}")
        if count == 4 and mode == "lower":
            raise RuntimeError("the probe broke on count=4, mode=lower")
        size = file.stat().st_size
        kind = mimetypes.guess_type(str(file))[0] or "unknown"
        for i in range(count):
            line = f"{i} {' '.join(words)} {size} bytes {kind}{' ' + note if note else ''}\n"
            yield line.upper() if mode == "upper" else line.lower()
