"""Shared fixtures: real Cog servers for the predictors in tests/predictors/ (see cog_server.py)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cog_server import CogServer, stage_predictor

from threading_utils._pool import default_pool

PREDICTORS = Path(__file__).resolve().parent / "predictors"


class CogServers:
    """Starts servers, each in a fresh directory holding a copy of its predictor file.

    Every server started through one instance is stopped by `close()` (the fixture teardown).
    """

    def __init__(self, tmp_dir: Path) -> None:
        self._tmp_dir = tmp_dir
        self._servers: list[CogServer] = []
        self._shared: dict[str, CogServer] = {}

    def start(self, predictor: str, *, source_dir: Path = PREDICTORS, **kwargs: Any) -> CogServer:
        """`predictor` is `file.py:Class`, the file in `source_dir` (default tests/predictors/)."""
        file_name, _, _ = predictor.partition(":")
        cwd = stage_predictor(
            source_dir / file_name, self._tmp_dir / f"server-{len(self._servers)}"
        )
        server = CogServer(predictor, cwd=cwd, **kwargs)
        self._servers.append(server)
        return server.start()

    def shared(self, predictor: str, **kwargs: Any) -> CogServer:
        """Like `start`, but started once per predictor and options, then reused until `close()`."""
        key = f"{predictor} {sorted(kwargs.items())}"
        if key not in self._shared:
            self._shared[key] = self.start(predictor, **kwargs)
        return self._shared[key]

    def close(self) -> None:
        self._shared.clear()
        while self._servers:
            self._servers.pop().stop()


@pytest.fixture
def cog_servers(tmp_path: Path) -> Iterator[CogServers]:
    servers = CogServers(tmp_path)
    try:
        yield servers
    finally:
        servers.close()


@pytest.fixture(scope="module")
def module_cog_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CogServers]:
    servers = CogServers(tmp_path_factory.mktemp("cog"))
    try:
        yield servers
    finally:
        servers.close()


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    """Poll ``predicate`` until it holds; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(0.001)


@pytest.fixture(autouse=True)
def no_stream_outlives_its_test() -> Iterator[None]:
    """Every stream a test starts in this process has finished when the test ends."""
    yield
    wait_until(lambda: default_pool().busy == 0, timeout=10, what="stream workers to finish")
