"""Probes whose run() streams a cog BaseModel per item: `Iterator[Chunk]` (streamed structured
outputs), in the shapes the template teaches (docs/shapes.md), for tests/test_structured_outputs.py.

With `gate` set (a directory), each chunk after the first is made only once the client has
written the file `<gate>/<index of the previous chunk>`, that is once the previous chunk reached
the client: a server that collected the items before sending any fails the prediction instead,
after `wait` seconds, saying so.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path as StdPath
from typing import cast

import cog
from cog import BaseModel, BaseRunner, Input, Path, streaming

from threading_utils import generator_from_thread


class Chunk(BaseModel):
    text: str
    index: int
    token_count: int
    score: float = 0.0  # a literal default: not required in the CLI's schema
    note: str | None = None  # Optional: nullable, not required


class FileChunk(BaseModel):
    index: int
    file: Path


def chunks(n: int, gate: str, wait: float) -> Iterator[Chunk]:
    for i in range(n):
        if gate and i > 0:
            seen = StdPath(gate, str(i - 1))
            deadline = time.monotonic() + wait
            while not seen.exists():
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"chunk {i - 1} had not reached the client after {wait}s: not streamed"
                    )
                time.sleep(0.005)
        yield Chunk(text=f"w{i}", index=i, token_count=i + 1, note="last" if i == n - 1 else None)


class SyncYield(BaseRunner):
    """`def run()` yielding."""

    @streaming
    def run(
        self,
        n: int = Input(default=3, ge=1, le=100),
        gate: str = Input(default=""),
        wait: float = Input(default=30.0),
    ) -> Iterator[Chunk]:
        yield from chunks(n, gate, wait)


class SyncReturned(BaseRunner):
    """`def run()` returning a bridge stream (examples/sync_predict.py)."""

    @streaming
    def run(
        self,
        n: int = Input(default=3, ge=1, le=100),
        gate: str = Input(default=""),
        wait: float = Input(default=30.0),
    ) -> Iterator[Chunk]:
        return cast(Iterator[Chunk], generator_from_thread()(chunks)(n, gate, wait))


class AsyncReturned(BaseRunner):
    """`async def run()` returning a bridge stream (predict.py's shape)."""

    @streaming
    @cog.concurrent(max=4)
    async def run(
        self,
        n: int = Input(default=3, ge=1, le=100),
        gate: str = Input(default=""),
        wait: float = Input(default=30.0),
    ) -> Iterator[Chunk]:
        return cast(Iterator[Chunk], generator_from_thread()(chunks)(n, gate, wait))


class AsyncYield(BaseRunner):
    """`async def run()` yielding (examples/async_yield_predict.py): coglet collects the items."""

    @streaming
    @cog.concurrent(max=4)
    async def run(
        self,
        n: int = Input(default=3, ge=1, le=100),
        gate: str = Input(default=""),
        wait: float = Input(default=30.0),
    ) -> AsyncIterator[Chunk]:
        for chunk in chunks(n, gate, wait):
            yield chunk


class Files(BaseRunner):
    """Chunks that carry a file: `<index>.txt` holding "chunk <index>"."""

    @streaming
    def run(self, n: int = Input(default=2, ge=1, le=100)) -> Iterator[FileChunk]:
        directory = Path(tempfile.mkdtemp(dir=Path.cwd()))  # in the server's own directory
        for i in range(n):
            path = directory / f"{i}.txt"
            path.write_text(f"chunk {i}")
            yield FileChunk(index=i, file=path)


class OneFile(BaseRunner):
    """One FileChunk as the whole output."""

    def run(self, index: int = Input(default=0, ge=0, le=100)) -> FileChunk:
        path = Path(tempfile.mkdtemp(dir=Path.cwd())) / f"{index}.txt"
        path.write_text(f"chunk {index}")
        return FileChunk(index=index, file=path)
