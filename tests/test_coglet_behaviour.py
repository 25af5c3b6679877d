"""coglet's own behaviour that a client relies on, pinned on the real server.

Each test says what to change the day it fails: these are upstream facts (coglet 0.23.1), not the
template's, and docs/limitations.md describes each one. The probe (tests/predictors/slot_probe.py)
is predict.py's shape: an async `run()` returning a bridge stream, `coglet_cancel` installed, so
a cancel ends the prediction `canceled` within milliseconds.

**The slot after a prediction ends.** coglet reports a prediction's end before it frees the
prediction's slot, on two channels of the worker: `run_prediction` (replicate/cog
`crates/coglet/src/worker.rs`) sends `SlotResponse::Cancelled` / `Done` on the slot's socket, and
only then returns the slot's completion, which `run_worker` forwards as `ControlResponse::Idle`
on the control channel. The parent marks the prediction terminal on the first
(`crates/coglet/src/orchestrator.rs` `run_event_loop` → `Prediction::set_canceled` in
`prediction.rs`: the SSE `completed` event, the terminal webhook, the synchronous response) and
puts the slot back in the pool on the second (`PredictionService::predict` in
`crates/coglet/src/service.rs`: `slot.into_idle()` in a spawned task waits for the idle token;
`PermitIdle::drop` in `crates/coglet/src/permit/pool.rs` returns the permit). A request that
arrives in between finds no permit (`submit_prediction` → `AtCapacity`) and gets 409
(`create_prediction_with_id`, `crates/coglet/src/transport/http/routes.rs`). Nothing of the
predictor runs in that window (the worker sends `Cancelled` after `handler.predict` returned), so
no template code can close it. What a client can rely on, and these tests check: the 409 is
transient (retry it), and `/health-check` says READY only once a slot is free (`HealthSnapshot`
counts the pool's permits: BUSY while there are none).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Generator
from typing import Any, TypeVar, cast

import pytest
from cog_server import CogServer, SSEEvent, _retry_busy
from conftest import CogServers, wait_until

pytestmark = [pytest.mark.server, pytest.mark.timeout(90)]

PROBE = "slot_probe.py:Predictor"
REPETITIONS = 50
ENDLESS = {"ticks": 1_000_000}  # runs until it is cancelled (about 80 minutes otherwise)
QUICK = {"ticks": 0}  # one line, then done
AT_CAPACITY = {"error": "At capacity - all prediction slots busy", "status": "failed"}
R = TypeVar("R")
RETRY_FOR = 10.0  # seconds a 409 may last before the test calls the slot lost (measured: < 7 ms)


@pytest.fixture(scope="module")
def server(module_cog_servers: CogServers) -> CogServer:
    # One slot: a request right after a prediction's end needs exactly the slot it freed.
    return module_cog_servers.shared(PROBE, concurrency=1)


def cancel_on_first_output_then(server: CogServer, signal: str, then: Callable[[], R]) -> R:
    """Start an endless prediction, cancel it at its first output, and call `then()` the instant
    the client learns it ended `canceled`: at the SSE `completed` event (`signal="sse"`, the
    stream still open) or at the terminal webhook (`signal="webhook"`)."""
    prediction_id = uuid.uuid4().hex
    if signal == "sse":
        # a generator: closing it closes the connection
        stream = cast(Generator[SSEEvent], server.predict_stream(ENDLESS, id=prediction_id))
        cancelled = False
        with contextlib.closing(stream):
            for event in stream:
                if event.event == "output" and not cancelled:
                    assert server.cancel(prediction_id)[0] == 200
                    cancelled = True
                elif event.event == "completed":
                    assert event.data["status"] == "canceled", event.data
                    return then()
        pytest.fail(f"the SSE stream of {prediction_id} closed without a completed event")
    code, body = server.predict_async(prediction_id, ENDLESS)
    assert code == 202, body
    wait_until(
        lambda: any(p.get("output") for p in server.webhook_payloads(prediction_id)),
        timeout=30,
        what=f"a webhook with the first output of {prediction_id}",
    )
    assert server.cancel(prediction_id)[0] == 200
    assert server.wait(prediction_id, timeout=30)["status"] == "canceled"
    return then()


def post_until_accepted(server: CogServer) -> None:
    """POST a quick prediction again and again (polling, no pause to speak of) until it is not a
    409; each 409 must be coglet's "At capacity" answer, and the prediction then succeeds."""

    def accepted() -> bool:
        code, body = server.predict(QUICK, busy_retry=0)
        if code == 409:
            assert body == AT_CAPACITY
            return False
        assert code == 200, body
        assert body["status"] == "succeeded", body
        return True

    wait_until(
        accepted,
        timeout=RETRY_FOR,
        what="a 200 after a canceled prediction (every request got 409: coglet no longer "
        "frees a canceled prediction's slot, a regression upstream; the contract's cancel test "
        "fails too)",
    )


@pytest.mark.parametrize("signal", ["sse", "webhook"])
def test_a_409_right_after_canceled_turns_into_a_200_on_retry(
    server: CogServer, signal: str
) -> None:
    """The instant a client learns a prediction ended `canceled`, a new request may get 409 for a
    few milliseconds (measured: 4 of 500 after the SSE event, 0 of 500 after the webhook, each
    turned into a 200 by one more request): retrying it, as scripts/cog_server.py's
    `_retry_busy` does, always gets the slot.

    The day it fails: if the retries never get a 200, coglet leaks a canceled prediction's slot
    (check the contract's cancel test and file it upstream). It cannot fail the day coglet frees
    the slot before it reports the end; then delete the limitation's 409 paragraph (see
    `test_after_canceled_health_ready_means_the_next_request_is_accepted`).
    """
    for _ in range(REPETITIONS):
        cancel_on_first_output_then(server, signal, lambda: post_until_accepted(server))


def test_after_canceled_health_ready_means_the_next_request_is_accepted(
    server: CogServer,
) -> None:
    """/health-check is the signal that needs no retry: BUSY while the canceled prediction's slot
    is not yet back in the pool (measured: 10 of 500 checks right after the SSE `completed`
    event), READY once it is; after READY one request, from the only client, is accepted.

    The day it fails (a 409 after READY): coglet's health no longer counts the pool's permits
    (`PredictionService::health` in crates/coglet/src/service.rs); clients must then retry
    every 409, as `_retry_busy` does. With several clients, READY says that *a* slot is free,
    not that each of them gets one (docs/limitations.md).
    """

    def health_then_post() -> tuple[int, Any]:
        wait_until(
            lambda: server.health()["status"] == "READY",
            timeout=RETRY_FOR,
            what="/health-check READY after a canceled prediction",
        )
        answer: tuple[int, Any] = server.predict(QUICK, busy_retry=0)
        return answer

    for _ in range(REPETITIONS):
        code, body = cancel_on_first_output_then(server, "sse", health_then_post)
        assert code == 200, body
        assert body["status"] == "succeeded", body


# ── null for an optional input ────────────────────────────────────────────────────────────────


def post(server: CogServer, body: dict[str, Any]) -> tuple[int, Any]:
    """POST /predictions with `body` as it is (a 409 retried, as `CogServer.predict` does)."""
    answer: tuple[int, Any] = _retry_busy(lambda: server.request("POST", "/predictions", body), 2.0)
    return answer


def test_null_for_an_optional_input_is_a_422_leaving_it_out_takes_the_default(
    server: CogServer,
) -> None:
    """coglet validates the input with a JSON Schema validator (`InputValidator` in
    crates/coglet/src/input_validation.rs, the `jsonschema` crate), which does not know
    OpenAPI's `nullable`: `{"seed": null}` is a 422 although the schema coglet serves says
    `"nullable": true` for `seed: int | None = Input(default=None)`. A client leaves the key
    out instead (or sends no `input`, or `"input": null`), and `run()` gets None.

    The day it fails at the 422: coglet accepts null for a nullable input. Then
    `make predict` could send null for an empty value (`seed=`; scripts/local_predict.py
    `parse_inputs` leaves it out today), and the limitation's null paragraph goes.
    """
    seed = server.openapi()[1]["components"]["schemas"]["Input"]["properties"]["seed"]
    assert (seed["nullable"], seed["default"]) == (True, None), seed

    code, body = post(server, {"input": {"seed": None}})
    assert code == 422, body
    assert body["detail"] == [
        {
            "loc": ["body", "input", "seed"],
            "msg": 'null is not of type "integer"',
            "type": "value_error",
        }
    ]

    defaults = ["seed=None level=None\n"]
    requests: list[dict[str, Any]] = [{"input": {}}, {"input": None}, {}]
    for request in requests:
        code, body = post(server, request)
        assert (code, body["output"]) == (200, defaults), (request, body)
    code, body = post(server, {"input": {"seed": 7}})
    assert (code, body["output"]) == (200, ["seed=7 level=None\n"]), body


def test_a_none_default_is_not_checked_against_the_bounds(server: CogServer) -> None:
    """`level: int | None = Input(default=None, ge=1, le=3)` builds and serves: the build's
    schema validation checks only a non-null default (kin-openapi `Schema.validate`), and coglet
    only checks values that are sent. Left out, `run()` gets None; a value must be in bounds;
    null is a 422 as for any optional input (above). docs/schema.md says so.

    The day it fails: `make schema` or coglet started checking the None default (or the
    bounds moved); update docs/schema.md's note on `None` defaults.
    """
    bounds = server.openapi()[1]["components"]["schemas"]["Input"]["properties"]["level"]
    assert (bounds["default"], bounds["minimum"], bounds["maximum"]) == (None, 1, 3), bounds
    assert post(server, {"input": {}})[1]["output"] == ["seed=None level=None\n"]
    assert post(server, {"input": {"level": 2}})[1]["output"] == ["seed=None level=2\n"]
    for bad in (0, 4, None):
        assert post(server, {"input": {"level": bad}})[0] == 422, bad
