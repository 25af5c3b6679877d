"""Shared fixtures: real Cog servers for the predictors in tests/predictors/ (see cog_server.py)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cog_server import CogServers

from threading_utils._pool import default_pool


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
