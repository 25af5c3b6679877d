"""The legacy Python server (cog 0.16.12, no coglet): the failure the bridge exists for, fixed.

Needs `.venv-legacy` with `cog==0.16.12` (`make test-legacy` creates it); skipped without it.
Predictors are in tests/predictors/legacy.py.
"""

from __future__ import annotations

import hashlib
from base64 import b64encode
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from cog_server import REPO_ROOT, CogServer
from conftest import CogServers

LEGACY_PYTHON = REPO_ROOT / ".venv-legacy" / "bin" / "python"
CONCURRENCY = 8

pytestmark = [
    pytest.mark.legacy,
    pytest.mark.server,
    pytest.mark.timeout(60),
    pytest.mark.skipif(
        not LEGACY_PYTHON.exists(), reason="no .venv-legacy (make test-legacy creates it)"
    ),
]


@pytest.fixture(scope="module")
def servers(module_cog_servers: CogServers) -> Callable[[str], CogServer]:
    def server(cls: str) -> CogServer:
        return module_cog_servers.shared(
            f"legacy.py:{cls}", concurrency=CONCURRENCY, schema=False, python=LEGACY_PYTHON
        )

    return server


def lines(n: int, tag: str) -> list[str]:
    return [f"{tag} item {i}" for i in range(n)]


def test_the_legacy_server_is_the_python_one(servers: Callable[[str], CogServer]) -> None:
    server = servers("StreamPredictor")
    assert "using Python HTTP server" in server.log_text()
    assert server.health()["status"] == "READY"


def test_a_plain_thread_fails_with_no_scope_available(
    servers: Callable[[str], CogServer],
) -> None:
    code, body = servers("PlainThreadPredictor").predict({"n": 3, "tag": "plain"})
    assert code == 200
    assert body["status"] == "failed"
    assert body["error"] == "No scope available"
    assert "RuntimeError: No scope available" in body["logs"]


@pytest.mark.parametrize("shape", ["Stream", "Generator"])
def test_a_bridged_stream_keeps_the_prediction_scope(
    servers: Callable[[str], CogServer], shape: str
) -> None:
    code, body = servers(f"{shape}Predictor").predict({"n": 4, "tag": "one"})
    assert code == 200, body
    assert body["status"] == "succeeded", body
    assert body["output"] == [f"one-{i}" for i in range(4)]
    assert body["logs"].splitlines() == lines(4, "one")
    assert body["metrics"]["items"] == 4


@pytest.mark.parametrize("shape", ["Stream", "Generator"])
def test_concurrent_bridged_streams_each_get_their_own_output_and_metrics(
    servers: Callable[[str], CogServer], shape: str
) -> None:
    """Eight at once: each prediction's output and metrics stay exact.

    Logs are not asserted here: cog 0.16 buffers stdout in one unlocked, process-wide line buffer
    and tags a line with the prediction of whichever thread flushes it, so with several threads
    printing at once lines can land on another prediction, or be duplicated or dropped.
    """
    server = servers(f"{shape}Predictor")
    jobs = [(3 + i, f"tag{i}") for i in range(CONCURRENCY)]
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        futures = [pool.submit(server.predict, {"n": n, "tag": tag}) for n, tag in jobs]
        results: list[tuple[int, Any]] = [f.result() for f in futures]
    for (n, tag), (code, body) in zip(jobs, results, strict=True):
        assert code == 200, body
        assert body["status"] == "succeeded", body
        assert body["output"] == [f"{tag}-{i}" for i in range(n)]
        assert body["metrics"]["items"] == n


def test_file_inputs_the_server_downloaded_pass_and_server_paths_get_422(
    servers: Callable[[str], CogServer],
) -> None:
    """cog 0.16 refuses a server path itself (coglet_inputs._received); the guard lets through
    what that server downloaded."""
    server = servers("FilePredictor")
    data = b"a legacy file input\n"
    code, body = server.predict({"image": f"data:text/plain;base64,{b64encode(data).decode()}"})
    assert (code, body["status"]) == (200, "succeeded"), body
    assert body["output"] == hashlib.sha256(data).hexdigest()
    code, body = server.predict({"image": "/etc/hostname"})
    assert code == 422, body
