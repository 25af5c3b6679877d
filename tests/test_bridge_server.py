"""The bridge under the real Cog server: concurrent predictions keep their own logs and metrics.

Each predictor in tests/predictors/bridge.py does its work in a worker thread. With 8 predictions
in flight at once, a user must see in every response exactly that prediction's printed and logged
lines and its own `items` count. The plain-thread control group shows the test can fail: there,
lines go missing and counts land on the wrong prediction.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from cog_server import CogServer
from conftest import CogServers

pytestmark = [pytest.mark.server, pytest.mark.timeout(60)]

CONCURRENCY = 8
SHAPES = ["Stream", "Generator", "Thread"]
STREAMING_SHAPES = ["Stream", "Generator"]


@pytest.fixture(scope="module")
def servers(module_cog_servers: CogServers) -> Callable[[str], CogServer]:
    """The server for a predictor class, started on first use and shared by the module's tests."""
    return lambda cls: module_cog_servers.shared(f"bridge.py:{cls}", concurrency=CONCURRENCY)


def expected_logs(n: int, tag: str) -> list[str]:
    return [f"{tag} item {i}" for i in range(n)] + [f"{tag} finished {n} items"]


def run_concurrently(server: CogServer) -> list[tuple[int, str, int, Any]]:
    """Send CONCURRENCY predictions at once; returns (n, tag, status code, body) for each."""
    jobs = [(3 + i, f"tag{i}") for i in range(CONCURRENCY)]  # distinct counts: 3..10 items
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        futures = [
            pool.submit(server.predict, {"n": n, "tag": tag, "together": CONCURRENCY})
            for n, tag in jobs
        ]
        return [(n, tag, *f.result()) for (n, tag), f in zip(jobs, futures, strict=True)]


def is_own(n: int, tag: str, body: Any) -> bool:
    return (
        body.get("status") == "succeeded"
        and body.get("logs", "").splitlines() == expected_logs(n, tag)
        and body.get("metrics", {}).get("items") == n
    )


@pytest.mark.parametrize("shape", SHAPES)
def test_concurrent_predictions_keep_their_own_logs_and_metrics(
    servers: Callable[[str], CogServer], shape: str
) -> None:
    results = run_concurrently(servers(f"{shape}Predictor"))
    for n, tag, code, body in results:
        assert code == 200, body
        assert body["status"] == "succeeded", body
        assert body["logs"].splitlines() == expected_logs(n, tag)
        assert body["metrics"]["items"] == n
        if shape == "Thread":
            assert body["output"] == f"{tag} done"
        else:
            assert body["output"] == [f"{tag}-{i}" for i in range(n)]


@pytest.mark.parametrize("shape", SHAPES)
def test_plain_threads_lose_logs_or_metrics(
    servers: Callable[[str], CogServer], shape: str
) -> None:
    results = run_concurrently(servers(f"Plain{shape}Predictor"))
    assert all(code == 200 for _, _, code, _ in results), results
    wrong = [(tag, body) for n, tag, _, body in results if not is_own(n, tag, body)]
    assert wrong, "plain threads kept every prediction's logs and metrics: the control is broken"


@pytest.mark.parametrize("shape", STREAMING_SHAPES)
def test_sse_stream_carries_own_logs_metrics_and_output(
    servers: Callable[[str], CogServer], shape: str
) -> None:
    server = servers(f"{shape}Predictor")
    events = list(server.predict_stream({"n": 5, "tag": "sse"}))
    kinds = [e.event for e in events]
    assert kinds[0] == "start"
    assert kinds[-1] == "completed"
    logs = "".join(e.data["data"] for e in events if e.event == "log")
    assert logs.splitlines() == expected_logs(5, "sse")
    assert sum(e.data["value"] for e in events if e.event == "metric") == 5
    assert [e.data["chunk"] for e in events if e.event == "output"] == [
        f"sse-{i}" for i in range(5)
    ]
    final = events[-1].data
    assert final["status"] == "succeeded"
    assert final["metrics"]["items"] == 5


def test_returned_generator_streams_outputs_while_running(
    servers: Callable[[str], CogServer],
) -> None:
    """An async run() returning a threaded generator streams each item as it is made.

    (coglet 0.23 collects an async-generator run()'s items and sends them only at the end, so
    only this shape delivers output progressively.)
    """
    server = servers("GeneratorPredictor")
    events = list(server.predict_stream({"n": 30, "tag": "live"}))
    outputs = [e for e in events if e.event == "output"]
    completed = next(e for e in events if e.event == "completed")
    assert len(outputs) == 30
    # After the client has the first item the producer still has >= 25 items (10 ms each) to
    # make (its queue holds 4), so a live stream shows a gap of about 0.25 s here; outputs that
    # are held back until the end arrive together with "completed".
    assert completed.time - outputs[0].time > 0.1
