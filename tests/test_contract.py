"""The template's contract, checked on the real Cog server for whatever `predict.py` serves.

A fork keeps these tests unchanged: what they send comes from tests/contract.py, what they check
is behaviour any streamed model must show on Cog — never this model's text. The byte-level
model's own server tests are in tests/test_model_server.py.
"""

from __future__ import annotations

import importlib
import re
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import contract
import pytest
from cog_server import REPO_ROOT, CogServer
from conftest import CogServers, wait_until

pytestmark = [pytest.mark.server, pytest.mark.timeout(240)]


def declared_concurrency() -> int:
    """`@concurrent(max=N)` of the predictor under test (1 without it), as `make serve` reads it."""
    file_name, _, cls = contract.PREDICTOR.partition(":")
    module = importlib.import_module(file_name.removesuffix(".py").replace("/", "."))
    return int(getattr(getattr(module, cls).run, "__cog_concurrent_max__", 1))


CONCURRENCY = declared_concurrency()


@pytest.fixture(scope="module")
def server(module_cog_servers: CogServers) -> CogServer:
    return module_cog_servers.shared(
        contract.PREDICTOR, source_dir=REPO_ROOT, concurrency=CONCURRENCY
    )


def succeeded(server: CogServer, inputs: Mapping[str, Any]) -> dict[str, Any]:
    code, body = server.predict(inputs, timeout=180)
    assert code == 200, body
    assert body["status"] == "succeeded", body
    return dict(body)


def fingerprint(body: Mapping[str, Any]) -> tuple[str, dict[str, Any], list[str]]:
    """What must be the same for two runs of one input: output, stable metrics, masked logs."""
    output = body["output"]
    text = "".join(output) if isinstance(output, list) else str(output)
    metrics = {
        k: v for k, v in (body.get("metrics") or {}).items() if k not in contract.VOLATILE_METRICS
    }
    logs = [contract.VOLATILE_LOG.sub("#", line) for line in (body.get("logs") or "").splitlines()]
    return text, metrics, logs


def start(server: CogServer, inputs: Mapping[str, Any]) -> str:
    id_ = f"contract-{uuid.uuid4().hex[:10]}"
    code, body = server.predict_async(id_, inputs)
    assert code == 202, body
    return id_


def output_flows(server: CogServer, id_: str) -> Callable[[], bool]:
    def check() -> bool:
        state = server.get(id_) or {}
        return bool(state.get("output"))

    return check


# ── streaming ─────────────────────────────────────────────────────────────────────────────────


def test_output_streams_live_over_sse(server: CogServer) -> None:
    sent = time.monotonic()
    events = list(server.predict_stream(contract.streaming_input(0), timeout=120))
    outputs = [e for e in events if e.event == "output"]
    assert events[-1].event == "completed"
    assert events[-1].data["status"] == "succeeded"
    assert len(outputs) > 3, "the output arrived in one piece, not streamed"
    # The first piece arrives long before the end, not with it.
    assert outputs[0].time - sent < 0.5 * (events[-1].time - sent)


# ── isolation ─────────────────────────────────────────────────────────────────────────────────


def test_at_full_concurrency_every_prediction_keeps_its_own_output_logs_and_metrics(
    server: CogServer,
) -> None:
    inputs = [contract.short_input(i) for i in range(CONCURRENCY)]
    alone = [fingerprint(succeeded(server, job)) for job in inputs[:4]]  # a sample, one by one
    assert len({a[0] for a in alone}) == len(alone), "contract.short_input must vary the output"
    for _round in range(2):
        with ThreadPoolExecutor(CONCURRENCY) as pool:
            bodies = list(pool.map(lambda job: succeeded(server, job), inputs))
        together = [fingerprint(body) for body in bodies]
        assert together[:4] == alone
        # Every prediction's logs and metrics are its own: those of the same input run again.
        again = [fingerprint(succeeded(server, job)) for job in inputs[4:8]]
        assert together[4:8] == again


# ── capacity, cancel ──────────────────────────────────────────────────────────────────────────


def test_past_capacity_a_request_gets_409_and_cancels_free_every_slot_at_once(
    server: CogServer,
) -> None:
    ids = [start(server, contract.long_input(i)) for i in range(CONCURRENCY)]
    for id_ in ids:  # a cancel that beats the start is reported "failed" by coglet 0.23
        wait_until(output_flows(server, id_), timeout=60, what=f"output of {id_}")
    code, body = server.predict(contract.short_input(0), busy_retry=0)
    assert code == 409, body
    cancelled_at = time.monotonic()
    for id_ in ids:
        assert server.cancel(id_)[0] == 200
    for id_ in ids:
        assert server.wait(id_, timeout=30)["status"] == "canceled"
    assert time.monotonic() - cancelled_at < 5.0, "cancelled predictions ran on"
    # Every slot is free again: as many new predictions as there are slots all start.
    new = [start(server, contract.short_input(i)) for i in range(CONCURRENCY)]
    for id_ in new:
        assert server.wait(id_, timeout=120)["status"] == "succeeded"


def test_a_cancelled_prediction_stops_and_leaves_nothing_in_the_next_one(
    server: CogServer,
) -> None:
    expected = fingerprint(succeeded(server, contract.short_input(5)))
    id_ = start(server, contract.long_input(5))
    wait_until(output_flows(server, id_), timeout=60, what="output to flow")
    cancelled_at = time.monotonic()
    assert server.cancel(id_)[0] == 200
    result = server.wait(id_, timeout=30)
    assert result["status"] == "canceled", result
    assert time.monotonic() - cancelled_at < 1.0
    assert fingerprint(succeeded(server, contract.short_input(5))) == expected


# ── bad input, health ─────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize("name", contract.BAD_INPUTS)
def test_bad_input_gets_a_422_that_names_the_input(server: CogServer, name: str) -> None:
    code, body = server.predict(contract.BAD_INPUTS[name])
    assert code == 422, body
    assert body["detail"][0]["loc"][:2] == ["body", "input"]
    assert server.health()["status"] == "READY"


@pytest.mark.parametrize("payload", [{"input": "text"}, {"input": [1, 2]}, {"nothing": 1}])
def test_a_body_that_is_not_an_input_object_is_rejected(server: CogServer, payload: Any) -> None:
    code, body = server.request("POST", "/predictions", payload)
    assert code in (400, 422), body
    succeeded(server, contract.short_input(1))


def test_the_422_for_a_huge_input_is_answered_promptly(server: CogServer) -> None:
    big = next(v for v in contract.BAD_INPUTS.values() if len(repr(v)) > 100_000)
    sent = time.monotonic()
    assert server.predict(big)[0] == 422
    assert time.monotonic() - sent < 5.0
    assert re.fullmatch(r"READY|BUSY", server.health()["status"])


# ── errors ────────────────────────────────────────────────────────────────────────────────────


def test_a_stream_that_fails_mid_way_fails_its_own_prediction_only(
    server: CogServer, module_cog_servers: CogServers
) -> None:
    failing = module_cog_servers.shared(
        "contract_probes.py:FailingStreams",  # every second stream raises after 2 items
        concurrency=CONCURRENCY,
        env={"FAIL_AFTER": "2"},
    )
    inputs = [contract.streaming_input(i) for i in range(4)]
    expected = [fingerprint(succeeded(server, job)) for job in inputs]
    with ThreadPoolExecutor(len(inputs)) as pool:
        results = list(pool.map(lambda job: failing.predict(job, timeout=180), inputs))
    statuses = sorted(body["status"] for _, body in results)
    assert statuses == ["failed", "failed", "succeeded", "succeeded"], results
    for (code, body), want in zip(results, expected, strict=True):
        assert code == 200, body
        if body["status"] == "failed":
            assert "injected failure after 2 items" in body["error"]
        else:
            assert fingerprint(body) == want
    assert failing.health()["status"] == "READY"  # and it goes on serving
    assert succeeded(server, inputs[0])["status"] == "succeeded"
