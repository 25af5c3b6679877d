"""A cancel or a dropped client stops predict.py's generation at once, on the real Cog server.

predict.py's `run()` returns a stream that coglet iterates in a thread of its own; coglet's cancel
only cancels the (finished) future of `run()`, and `coglet_cancel` turns that into a stop request
for the stream. These tests drive predict.py as shipped (`predict.py:Predictor`, started as
`make serve` starts it) and, to see when the model itself stopped, the same predictor with a probe
on its model (tests/model/predictors/cancel_probes.py). Outputs are compared with a run of the
same seed that was not cancelled, not with this model's text.

Cancelled predictions are read over SSE, and the time they ended is when their `completed` event
arrived: the harness's webhook receiver sometimes takes a second to accept a connection when
several predictions post webhooks at once (the server's own log shows it done in milliseconds).
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from cog_server import REPO_ROOT, CogServer, SSEEvent
from conftest import CogServers, wait_until

import predict

pytestmark = [pytest.mark.server, pytest.mark.timeout(120)]

FIB = "def fibonacci(n):"
CANCEL_BOUND = 0.5  # seconds from a cancel to `canceled`, and to the model letting go
CONCURRENT = min(predict.MAX_CONCURRENCY, 8)  # bounded: the test machine may have 2 cores
HOLD_SEED = 90_001  # the probe holds this seed's prefill (see cancel_probes.py)
LONG = 1024  # tokens: a generation still running when the test cancels it

MODEL_PREDICTORS = Path(__file__).resolve().parent / "predictors"


@pytest.fixture(scope="module")
def shipped(module_cog_servers: CogServers) -> CogServer:
    """predict.py as shipped, every slot of the server usable by the concurrent test."""
    return module_cog_servers.shared(
        "predict.py:Predictor", source_dir=REPO_ROOT, concurrency=CONCURRENT
    )


@pytest.fixture(scope="module")
def probed(
    module_cog_servers: CogServers, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str], CogServer]:
    """One server per probe class (one slot: its health says BUSY while a prediction runs)."""
    probes = tmp_path_factory.mktemp("cancel-probes")

    def get(cls: str) -> CogServer:
        return module_cog_servers.shared(
            f"cancel_probes.py:{cls}",
            source_dir=MODEL_PREDICTORS,
            env={"PROBE_FILE": str(probes / f"{cls}.jsonl"), "HOLD_SEED": str(HOLD_SEED)},
        )

    return get


# ── helpers ───────────────────────────────────────────────────────────────────────────────────


def probe_records(server: CogServer, event: str, seed: int) -> list[dict[str, Any]]:
    path = Path(server.extra_env["PROBE_FILE"])
    lines = path.read_text().splitlines() if path.exists() else []
    records = [json.loads(line) for line in lines]
    return [r for r in records if r["event"] == event and r["seed"] == seed]


def wait_record(server: CogServer, event: str, seed: int, timeout: float = 10) -> dict[str, Any]:
    wait_until(
        lambda: bool(probe_records(server, event, seed)), timeout, f"the probe's {event} of {seed}"
    )
    [record] = probe_records(server, event, seed)
    return record


def text(payload: dict[str, Any]) -> str:
    return "".join(payload.get("output") or [])


def start(server: CogServer, seed: int, tokens: int, prompt: str = FIB) -> str:
    """An async prediction (its progress goes to the harness's webhook receiver); its id."""
    id_ = f"cancel-{uuid.uuid4().hex[:8]}"
    inputs = {"prompt": prompt, "max_new_tokens": tokens, "seed": seed}
    code, body = server.predict_async(id_, inputs)
    assert code == 202, body
    return id_


class Streamed:
    """One prediction over SSE, read by a thread of its own while the test cancels it."""

    def __init__(self, server: CogServer, seed: int, tokens: int, prompt: str = FIB) -> None:
        self.events: list[SSEEvent] = []
        self.error: BaseException | None = None
        inputs = {"prompt": prompt, "max_new_tokens": tokens, "seed": seed}
        self._thread = threading.Thread(target=self._read, args=(server, inputs), daemon=True)
        self._thread.start()

    def _read(self, server: CogServer, inputs: dict[str, Any]) -> None:
        try:
            for event in server.predict_stream(inputs, timeout=60):
                self.events.append(event)
        except BaseException as exc:
            self.error = exc

    def _of(self, kind: str) -> list[SSEEvent]:
        return [event for event in list(self.events) if event.event == kind]

    @property
    def id(self) -> str:
        wait_until(lambda: bool(self._of("start")) or self.error is not None, 30, "start event")
        assert self.error is None, self.error
        return str(self._of("start")[0].data["id"])

    def text(self) -> str:
        return "".join(event.data["chunk"] for event in self._of("output"))

    def wait_for_output(self) -> None:
        wait_until(lambda: self.text() != "" or self.error is not None, 30, "output")
        assert self.error is None, self.error

    def completed(self, timeout: float = 30) -> SSEEvent:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"SSE stream still open after {timeout}s"
        assert self.error is None, self.error
        [event] = self._of("completed")
        return event


def wait_for_output(server: CogServer, id_: str) -> None:
    wait_until(lambda: text(server.get(id_) or {}) != "", timeout=30, what=f"output of {id_}")


def cancel(server: CogServer, id_: str) -> tuple[float, float]:
    """Cancel `id_`; returns when the cancel was sent: (time.monotonic(), time.time())."""
    sent = time.monotonic(), time.time()
    code, body = server.cancel(id_)
    assert code == 200, body
    return sent


def succeeded(server: CogServer, inputs: dict[str, Any], busy_retry: float = 2.0) -> dict[str, Any]:
    code, body = server.predict(inputs, timeout=120, busy_retry=busy_retry)
    assert code == 200, body
    assert body["status"] == "succeeded", body
    return body


def accepted_by(server: CogServer, inputs: dict[str, Any], deadline: float) -> dict[str, Any]:
    """A prediction accepted by `deadline` (time.monotonic()): a 409 is retried until then only.

    coglet 0.23 frees a slot a moment after its prediction's end has been reported, after any
    prediction (see `_retry_busy` in scripts/cog_server.py); a slot still held by a model that
    runs on would answer 409 for seconds.
    """
    return succeeded(server, inputs, busy_retry=max(0.0, deadline - time.monotonic()))


def assert_same_text_so_far(partial: str, reference: str) -> None:
    """Both are beginnings of one generation (`reference` may have stopped earlier).

    A generation cut at its `max_new_tokens` may end in a replacement character for a
    character it did not finish: `reference` is trusted up to its last character.
    """
    common = reference[:-1]
    if len(partial) <= len(common):
        assert common.startswith(partial), (partial, reference)
    else:
        assert partial.startswith(common), (partial, reference)


def without_timings(logs: str) -> str:
    return re.sub(r"\d+\.\d+", "#", logs)


def assert_same_prediction(body: dict[str, Any], reference: dict[str, Any]) -> None:
    """Same output, logs (timings aside) and metrics (counts exact, timings present) as a rerun."""
    assert text(body) == text(reference)
    assert without_timings(body["logs"]) == without_timings(reference["logs"])
    metrics, expected = body["metrics"], reference["metrics"]
    assert metrics.keys() == expected.keys()
    for name, value in expected.items():
        if isinstance(value, int):
            assert metrics[name] == value, name
        else:
            assert metrics[name] >= 0, name


def assert_next_prediction_is_clean(server: CogServer, seed: int, free_by: float) -> None:
    """The slot is free by `free_by`; nothing of the cancelled prediction leaks into the next."""
    inputs = {"prompt": "class Stack:", "max_new_tokens": 24, "seed": seed}
    first = accepted_by(server, inputs, free_by)
    assert_same_prediction(first, succeeded(server, inputs))


# ── cancel at each point of a generation ──────────────────────────────────────────────────────


@pytest.mark.timeout(60)
def test_a_cancel_before_the_first_token_ends_it_with_no_output(
    probed: Callable[[str], CogServer],
) -> None:
    server = probed("HookedProbe")
    stream = Streamed(server, HOLD_SEED, 512)
    wait_record(server, "prefill", HOLD_SEED, timeout=30)  # the first token is not made yet
    sent, sent_wall = cancel(server, stream.id)
    done = stream.completed()
    assert done.data["status"] == "canceled", done.data
    assert done.time - sent < CANCEL_BOUND
    assert stream.text() == ""
    end = wait_record(server, "end", HOLD_SEED)
    assert end["t"] - sent_wall < CANCEL_BOUND
    assert end["tokens"] < 10  # the prefill's token and at most a step already under way
    assert_next_prediction_is_clean(server, seed=1, free_by=sent + CANCEL_BOUND)


@pytest.mark.timeout(60)
def test_a_cancel_mid_stream_stops_the_model_within_half_a_second(
    probed: Callable[[str], CogServer],
) -> None:
    server = probed("HookedProbe")
    seed = 2
    reference = text(succeeded(server, {"prompt": FIB, "max_new_tokens": LONG, "seed": seed}))
    stream = Streamed(server, seed, LONG)
    stream.wait_for_output()
    sent, sent_wall = cancel(server, stream.id)
    done = stream.completed()
    assert done.data["status"] == "canceled", done.data
    assert done.time - sent < CANCEL_BOUND
    assert 0 < len(stream.text()) < len(reference)
    assert_same_text_so_far(stream.text(), reference)
    [_, end] = probe_records(server, "end", seed)  # the reference's, then the cancelled one's
    assert end["t"] - sent_wall < CANCEL_BOUND
    assert end["tokens"] < LONG
    assert_next_prediction_is_clean(server, seed=3, free_by=sent + CANCEL_BOUND)


@pytest.mark.timeout(60)
def test_a_cancel_after_the_last_token_changes_nothing_that_was_delivered(
    probed: Callable[[str], CogServer],
) -> None:
    """The model is done, the prediction about to end: it ends either way, and cleanly."""
    server = probed("HookedProbe")
    seed, tokens = 4, 64
    reference = text(succeeded(server, {"prompt": FIB, "max_new_tokens": tokens, "seed": seed}))
    stream = Streamed(server, seed, tokens)
    wait_until(lambda: len(probe_records(server, "end", seed)) == 2, what="the model to finish")
    assert probe_records(server, "end", seed)[1]["tokens"] == tokens
    sent = time.monotonic()
    code, body = server.cancel(stream.id)
    assert code in (200, 404), body  # 404: the prediction had already ended
    done = stream.completed()
    if done.data["status"] == "succeeded":
        assert stream.text() == reference
    else:  # the cancel came first: what was not yet sent is dropped
        assert done.data["status"] == "canceled", done.data
        assert_same_text_so_far(stream.text(), reference)
    # once ended, a cancel finds nothing: coglet forgets a prediction a few ms after its
    # `completed` event (docs/limitations.md, the 409 after an end), so wait for that
    wait_until(lambda: server.cancel(stream.id)[0] == 404, what="the ended prediction to go")
    assert_next_prediction_is_clean(server, seed=5, free_by=sent + CANCEL_BOUND)


@pytest.mark.timeout(60)
def test_a_client_dropping_its_sse_stream_stops_the_model_and_frees_the_slot(
    probed: Callable[[str], CogServer],
) -> None:
    server = probed("HookedProbe")
    seed = 6
    events = server.predict_stream({"prompt": FIB, "max_new_tokens": LONG, "seed": seed})
    outputs = 0
    for event in events:
        outputs += event.event == "output"
        if outputs == 3:
            break
    assert server.health()["status"] == "BUSY"  # its one slot holds the stream's prediction
    dropped, dropped_wall = time.monotonic(), time.time()
    events.close()  # closes the connection
    end = wait_record(server, "end", seed)
    assert end["t"] - dropped_wall < CANCEL_BOUND
    assert end["tokens"] < LONG
    wait_until(lambda: server.health()["status"] == "READY", timeout=5, what="the slot")
    assert time.monotonic() - dropped < CANCEL_BOUND
    assert_next_prediction_is_clean(server, seed=7, free_by=dropped + CANCEL_BOUND)


# ── many at once ──────────────────────────────────────────────────────────────────────────────


@pytest.mark.timeout(120)
def test_cancelling_half_of_concurrent_predictions_leaves_the_others_exact(
    shipped: CogServer,
) -> None:
    jobs = [
        {"prompt": f"# job {i}\nimport ", "seed": 100 + i, "max_new_tokens": 48 + 16 * i}
        for i in range(CONCURRENT)
    ]
    kept, doomed = jobs[0::2], jobs[1::2]
    with ThreadPoolExecutor(CONCURRENT) as pool:  # the references: the same seeds, not cancelled
        references = list(pool.map(lambda job: succeeded(shipped, job), kept + doomed))
    kept_refs, doomed_refs = references[: len(kept)], references[len(kept) :]

    kept_ids = [start(shipped, job["seed"], job["max_new_tokens"], job["prompt"]) for job in kept]
    streams = [Streamed(shipped, job["seed"], 2048, job["prompt"]) for job in doomed]
    for stream in streams:
        stream.wait_for_output()
    sent = [cancel(shipped, stream.id)[0] for stream in streams]
    for stream, cancelled, reference in zip(streams, sent, doomed_refs, strict=True):
        done = stream.completed()
        assert done.data["status"] == "canceled", done.data
        assert done.time - cancelled < CANCEL_BOUND
        assert_same_text_so_far(stream.text(), text(reference))

    # Their slots are free at once: as many new predictions, at once, accepted by then.
    free_by = sent[0] + CANCEL_BOUND
    with ThreadPoolExecutor(len(kept)) as pool:
        reruns = list(pool.map(lambda job: accepted_by(shipped, job, free_by), kept))
    for id_, rerun, reference in zip(kept_ids, reruns, kept_refs, strict=True):
        assert_same_prediction(rerun, reference)  # nothing of a cancelled one leaked in
        survivor = shipped.wait(id_, timeout=60)
        assert survivor["status"] == "succeeded", survivor
        assert_same_prediction(survivor, reference)


# ── the runtime without the hook ──────────────────────────────────────────────────────────────


@pytest.mark.timeout(60)
def test_without_the_hook_coglet_still_runs_the_returned_generator_to_its_end(
    probed: Callable[[str], CogServer],
) -> None:
    """coglet's own cancel does not stop a generator that an async run() returned.

    This is the upstream behaviour coglet_cancel.py works around: cancelled mid-stream, the
    prediction without the hook still produces its whole output and only then reports
    `canceled`. When this test fails, coglet stops such generators itself: delete
    coglet_cancel.py, its `install()` line in predict.py's `setup()`, and this test.
    """
    server = probed("UnhookedProbe")
    seed, tokens = 8, 400
    reference = text(succeeded(server, {"prompt": FIB, "max_new_tokens": tokens, "seed": seed}))
    id_ = start(server, seed, tokens)
    wait_for_output(server, id_)
    _, sent_wall = cancel(server, id_)
    result = server.wait(id_, timeout=60)
    assert result["status"] == "canceled", result
    assert text(result) == reference  # every token was generated and sent after the cancel
    end = probe_records(server, "end", seed)[1]
    assert end["tokens"] == tokens
    assert end["t"] > sent_wall
