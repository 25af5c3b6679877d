"""Shared fixtures: start real Cog servers for predictors kept in tests/predictors/."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cog_server import CogServer, stage_predictor

PREDICTORS = Path(__file__).resolve().parent / "predictors"


class CogServers:
    """Starts servers, each in a fresh directory holding a copy of its predictor file.

    Every server started through one instance is stopped by `close()` (the fixture teardown).
    """

    def __init__(self, tmp_dir: Path) -> None:
        self._tmp_dir = tmp_dir
        self._servers: list[CogServer] = []

    def start(self, predictor: str, **kwargs: Any) -> CogServer:
        """`predictor` is `file.py:Class` with the file in tests/predictors/."""
        file_name, _, _ = predictor.partition(":")
        source = PREDICTORS / file_name
        cwd = stage_predictor(source, self._tmp_dir / f"server-{len(self._servers)}")
        server = CogServer(predictor, cwd=cwd, **kwargs)
        self._servers.append(server)
        return server.start()

    def close(self) -> None:
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
