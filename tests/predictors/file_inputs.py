"""Predictors that open their file inputs, with coglet_inputs or without (test_coglet_inputs.py).

Each returns, per file input, what it read: the sha256 and size of the bytes, and the path's
name. `GUARD=0` (env) leaves coglet_inputs uninstalled: the naive fork, which reads whatever
path it is sent. `PROBE_FILE` (env): a JSON line when run() starts, with its time — what the
download tests compare with the client's cancel.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator

import cog
from cog import BaseRunner, Input, Path, streaming

import coglet_cancel
import coglet_inputs
from threading_utils import generator_from_thread


def _read(path: Path | str) -> dict[str, object]:
    data = open(path, "rb").read()  # noqa: SIM115 (a naive model: any str or Path)
    return {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}


def _started() -> None:
    probe = os.environ.get("PROBE_FILE")
    if probe:
        with open(probe, "a") as f:
            f.write(json.dumps({"run_started": time.time()}) + "\n")


class Predictor(BaseRunner):
    """An async run() returning its result at the end: one file and a list of files."""

    def setup(self) -> None:
        if os.environ.get("GUARD", "1") == "1":
            coglet_inputs.install(self)

    @cog.concurrent(max=4)
    async def run(
        self,
        image: Path = Input(description="A file"),
        images: list[Path] | None = Input(description="More files", default=None),
    ) -> str:
        _started()
        read = [_read(image)] + [_read(p) for p in images or []]
        return json.dumps(read)


@generator_from_thread(max_queue_size=8)
def _stream(paths: list[Path], passes: int) -> Iterator[str]:
    print(f"reading {len(paths)} files")
    for path in paths:
        read = _read(path)
        data = open(path, "rb").read()  # noqa: SIM115
        digest = hashlib.sha256()
        for _ in range(passes - 1):  # the model's work on the file: hashing it again
            digest.update(data)
        yield json.dumps(read) + "\n"


class StreamingPredictor(BaseRunner):
    """An async run() that returns a stream (predict.py's shape): the files are read later."""

    def setup(self) -> None:
        coglet_cancel.install()
        if os.environ.get("GUARD", "1") == "1":
            coglet_inputs.install(self)

    @streaming
    @cog.concurrent(max=4)
    async def run(
        self,
        images: list[Path] = Input(description="Files"),
        passes: int = Input(description="Times each file is hashed", default=1, ge=1, le=5000),
    ) -> Iterator[str]:
        _started()
        return _stream(images, passes)


class SyncPredictor(BaseRunner):
    """A sync run() (one prediction at a time)."""

    def setup(self) -> None:
        if os.environ.get("GUARD", "1") == "1":
            coglet_inputs.install(self)

    def run(self, image: Path = Input(description="A file")) -> str:
        _started()
        return json.dumps([_read(image)])
