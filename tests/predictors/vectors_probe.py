"""Probes whose run() returns one value (no `@streaming`): coglet answers an SSE request for them
with HTTP 406, so `make predict` and gpu-check must ask for a synchronous response instead
(tests/test_local_predict.py, tests/test_gpu_check.py). `Echo` also reports the inputs it got,
for the input parsing of `make predict` (lists of files, JSON arrays, left-out optionals).
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Iterator

from cog import BaseModel, BasePredictor, BaseRunner, Input, Path, streaming


class Caption(BaseModel):
    index: int
    text: str


class Vectors(BaseRunner):
    """`-> list[float]`: an embedding-like vector of `dims` numbers."""

    def run(
        self, text: str = Input(default="abc"), dims: int = Input(default=4, ge=1, le=64)
    ) -> list[float]:
        return [round((len(text) + i) / 10, 3) for i in range(dims)]


class Text(BaseRunner):
    """`-> str`."""

    def run(self, text: str = Input(default="hello")) -> str:
        return f"you said: {text}"


class OneCaption(BasePredictor):
    """`-> Caption` from the legacy `predict()`."""

    def predict(self, index: int = Input(default=7)) -> Caption:
        return Caption(index=index, text=f"caption {index}")


class Files(BaseRunner):
    """`-> list[Path]`: `n` text files, not streamed."""

    def run(self, n: int = Input(default=2, ge=1, le=10)) -> list[Path]:
        directory = Path(tempfile.mkdtemp(dir=Path.cwd()))  # in the server's own directory
        paths = []
        for i in range(n):
            path = directory / f"{i}.txt"
            path.write_text(f"file {i}")
            paths.append(path)
        return paths


class Echo(BaseRunner):
    """What arrived, one line per input: each image's sha256 and size, the tags, the seed."""

    def run(
        self,
        images: list[Path] = Input(description="one or more images"),
        tags: list[int] = Input(default=[]),
        seed: int | None = Input(default=None, ge=0),
        label: str = Input(default="none"),
    ) -> str:
        lines = [
            f"image {i}: {hashlib.sha256(p.read_bytes()).hexdigest()} {p.stat().st_size}"
            for i, p in enumerate(images)
        ]
        lines += [f"tags: {tags}", f"seed: {seed}", f"label: {label}"]
        return "\n".join(lines)


class Streamed(BaseRunner):
    """`@streaming -> Iterator[Caption]`: structured items, streamed (SSE)."""

    @streaming
    def run(self, n: int = Input(default=3, ge=1, le=10)) -> Iterator[Caption]:
        for i in range(n):
            yield Caption(index=i, text=f"caption {i}")
