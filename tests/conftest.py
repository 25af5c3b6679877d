"""Shared fixtures: real Cog servers for the predictors in tests/predictors/ (see cog_server.py)."""

from __future__ import annotations

import contextvars
import functools
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from build_context import context_files
from cog_server import REPO_ROOT, SCHEMA_CACHE_ENV, CogServer, stage_server_dir

import coglet_cancel
import coglet_inputs
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


@functools.cache
def in_build_context() -> frozenset[Path]:
    """The repository's files that the image gets (scripts/build_context.py), resolved."""
    return frozenset((REPO_ROOT / name).resolve() for name in context_files(REPO_ROOT))


def predictor_files(file_name: str, source_dir: Path) -> dict[str, Path]:
    """What a server needs staged for the predictor file `source_dir/file_name`, by relative path:
    nothing beyond the build context for a file of it at that path, the file alone for one of it
    served from elsewhere, else the file and its folder's files (a probe's data, as `weights/`
    beside it)."""
    source = source_dir / file_name
    if source.resolve() in in_build_context():
        return {} if source.resolve() == (REPO_ROOT / file_name).resolve() else {file_name: source}
    files = {
        (Path(file_name).parent / path.relative_to(source.parent)).as_posix(): path
        for path in source.parent.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    return files | {file_name: source}


class CogServers:
    """Starts servers, each in a fresh copy of the build context holding its predictor file.

    Every server started through one instance is stopped by `close()` (the fixture teardown).
    """

    def __init__(self, tmp_dir: Path) -> None:
        self._tmp_dir = tmp_dir
        self._servers: list[CogServer] = []
        self._shared: dict[str, CogServer] = {}

    def start(
        self,
        predictor: str,
        *,
        source_dir: Path = PREDICTORS,
        files: Mapping[str, Path] | None = None,
        **kwargs: Any,
    ) -> CogServer:
        """`predictor` is `path/file.py:Class`, the file in `source_dir` (tests/predictors/).

        The server's cwd is the repository's build context, laid out as /src is in the image,
        with the predictor file at the same relative path, beside the files of its own folder
        (a probe's data: `weights/` beside it), and `files`, by relative path.
        """
        file_name, _, _ = predictor.partition(":")
        cwd = self._tmp_dir / f"server-{len(self._servers)}"
        stage_server_dir(cwd, files={**predictor_files(file_name, source_dir), **(files or {})})
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
def runtime_hooks_undone() -> Iterator[None]:
    """A test that runs a predictor's `setup()` in this process (a fork's own model test, say)
    installs the runtime workarounds, which patch classes for the whole process
    (`concurrent.futures.Future.cancel`, `cog.types.Path.validate`): each test ends with them
    as it found them, so no other test depends on the order tests run in."""
    was = coglet_cancel.installed(), coglet_inputs.installed()
    yield
    for module, installed in zip((coglet_cancel, coglet_inputs), was, strict=True):
        if module.installed() and not installed:
            module.uninstall()


@pytest.fixture(autouse=True)
def no_stream_outlives_its_test() -> Iterator[None]:
    """Every stream a test starts in this process has finished when the test ends."""
    yield
    wait_until(lambda: default_pool().busy == 0, timeout=10, what="stream workers to finish")


def pytest_configure(config: pytest.Config) -> None:
    """One schema cache for the whole run (scripts/cog_server.py `write_schema`): made by the
    first pytest process, inherited by its xdist workers and the pytest runs tests start."""
    if SCHEMA_CACHE_ENV not in os.environ:
        cache = tempfile.mkdtemp(prefix="cog-schemas-")
        os.environ[SCHEMA_CACHE_ENV] = cache

        def remove() -> None:
            os.environ.pop(SCHEMA_CACHE_ENV, None)
            shutil.rmtree(cache, ignore_errors=True)

        config.add_cleanup(remove)


# ── running on every core (pytest-xdist: `make test` runs `-n auto --dist loadgroup`) ─────────

# The longest files go first (docs/testing.md has the times): xdist, with
# `--no-loadscope-reorder`, hands out work in collection order, so they start first and the run
# does not end on one long test with the other workers idle. A file marks itself
# (`pytest.mark.first`: those that run pytest or forks of their own); the template's contract
# follows them.
CONTRACT_TESTS = "tests/test_contract.py"


# Single tests that take longest, first in their file: the template contract's schema fuzzer
# (its 30 s budget) starts while the other worker runs the rest of the contract.
LONGEST_TESTS = frozenset(
    {
        "tests/test_contract.py::test_inputs_generated_from_the_schema_get_answers_a_client_can_live_with_fuzz"
    }
)

# Files whose tests are spread over the workers all the same: they are long enough (the schema
# fuzzer's 30 s; two forks checked) that running them side by side finishes sooner than one
# worker would, at the cost of a second start of their shared server or fork in the other worker.
SPREAD = frozenset({"tests/test_contract.py", "tests/test_fork_drill.py"})


def shares_module_fixture(item: pytest.Item) -> bool:
    """Whether `item` uses a fixture set up once per module or class (a shared server, a fork)."""
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return False
    return any(
        defs[-1].scope in {"module", "class", "package"}
        for defs in info.name2fixturedefs.values()
        if defs
    )


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The longest files first; under xdist's `loadgroup`, each module whose tests share a
    module-scoped fixture runs in one worker (its server started once), and every other test
    goes to whichever worker is free. Runs before xdist reads the groups (tryfirst)."""

    def order(item: pytest.Item) -> tuple[int, bool]:
        long_test = item.nodeid.partition("[")[0] in LONGEST_TESTS
        if item.get_closest_marker("first") is not None:
            return 0, not long_test
        return (1 if item.nodeid.partition("::")[0] == CONTRACT_TESTS else 2), not long_test

    items.sort(key=order)  # stable: each file's tests stay together, the rest in their order
    if not config.pluginmanager.hasplugin("xdist"):
        return
    for item in items:
        path = item.nodeid.partition("::")[0]
        if path not in SPREAD and shares_module_fixture(item):
            item.add_marker(pytest.mark.xdist_group(path))


# ── helpers shared by test modules ────────────────────────────────────────────────────────────

# coglet 0.23's errors for a prediction cancelled before it has registered run()
# (docs/limitations.md).
EARLY_CANCEL = re.compile(
    r"Input validation error|Prediction failed: (Failed to submit coroutine|Async prediction "
    r"failed): CancelationException"
)


def cancelled_before_run(final: Mapping[str, Any]) -> bool:
    """coglet 0.23 fails a prediction cancelled before it has registered run() — while it turns
    the request's JSON into Python, or submits run() to its loop — with one of its own errors,
    not `canceled` (docs/limitations.md). Without a stream, `processing` is all a client sees
    of a prediction before it ends, so a cancel sent then can land there: the model's cancel
    handling was never reached, and the try tells nothing about it."""
    return final.get("status") == "failed" and bool(
        EARLY_CANCEL.match(str(final.get("error") or ""))
    )


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
