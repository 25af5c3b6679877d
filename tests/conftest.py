"""Shared fixtures: real Cog servers for the predictors in tests/predictors/ (see cog_server.py)."""

from __future__ import annotations

import contextvars
import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cog_server import CogServer, stage_predictor

from threading_utils._pool import default_pool

PREDICTORS = Path(__file__).resolve().parent / "predictors"

# A context variable the bridge's tests set in the consumer and read in the producer.
request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="unset")


@pytest.fixture(autouse=True)
def fresh_request_id() -> Iterator[None]:
    """Tests share one context: undo what each one sets in `request_id`."""
    token = request_id.set("unset")
    yield
    request_id.reset(token)


class CogServers:
    """Starts servers, each in a fresh directory holding a copy of its predictor file.

    Every server started through one instance is stopped by `close()` (the fixture teardown).
    """

    def __init__(self, tmp_dir: Path) -> None:
        self._tmp_dir = tmp_dir
        self._servers: list[CogServer] = []
        self._shared: dict[str, CogServer] = {}

    def start(self, predictor: str, *, source_dir: Path = PREDICTORS, **kwargs: Any) -> CogServer:
        """`predictor` is `path/file.py:Class`, the file in `source_dir` (tests/predictors/).

        The file is staged at the same relative path in the server's fresh cwd.
        """
        file_name, _, _ = predictor.partition(":")
        cwd = self._tmp_dir / f"server-{len(self._servers)}"
        stage_predictor(source_dir / file_name, cwd / Path(file_name).parent)
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


# ── helpers shared by test modules ────────────────────────────────────────────────────────────


def producer_thread_is_blocked(ident: int) -> bool:
    """True once the thread `ident` sits in the bridge's wait for queue space."""
    frame = sys._current_frames().get(ident)
    while frame is not None:
        if frame.f_code.co_name == "wait_for_space":
            return True
        frame = frame.f_back
    return False


async def collect(agen: Any, limit: int | None = None) -> list[Any]:
    """The items of an async iterator, up to `limit` of them (then it stops iterating)."""
    out = []
    async for item in agen:
        out.append(item)
        if limit is not None and len(out) >= limit:
            break
    return out


def probe_records(server: CogServer) -> list[dict[str, Any]]:
    """The JSON lines a probe predictor wrote to the file in the server's PROBE_FILE."""
    path = Path(server.extra_env["PROBE_FILE"])
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def setup_printed(server: CogServer, line: str) -> bool:
    """Whether the predictor's `setup()` printed `line`, as far as the server has reported it.

    coglet copies setup's output into /health-check's `setup.logs` until its worker reports
    Ready, but the worker forwards log lines on a task of their own and sends Ready directly
    (replicate/cog `crates/coglet/src/worker.rs`, the log forwarder and `ControlResponse::Ready`),
    so setup's last line can lose that race: it then reaches only the server's own log, as a
    `coglet::user` line (`crates/coglet/src/orchestrator.rs`). Either place counts.
    """
    logs = ((server.health().get("setup") or {}).get("logs")) or ""
    return line in logs or f'"message":{json.dumps(line)}' in server.log_text()


def succeeded(server: CogServer, **inputs: Any) -> dict[str, Any]:
    """A synchronous prediction that must succeed; its response body."""
    code, body = server.predict(inputs, timeout=120)
    assert code == 200, body
    assert body["status"] == "succeeded", body
    return dict(body)
