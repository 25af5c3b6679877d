"""The template's contract, checked on the real Cog server for whatever `predict.py` serves.

A fork keeps these tests unchanged: what they send comes from tests/contract.py, what they check
is behaviour any streamed model must show on Cog — never a model's text or images (outputs are
compared by content: text joined, files by their bytes). A model's own tests live beside the
model, not here. `CONTRACT=examples/image_contract.py pytest tests/test_contract.py` checks the
predictor another contract file names (tests/test_examples_contract.py does, for each example,
with data URIs and with uploads).
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import os
import re
import time
import urllib.request
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest
from cog_server import REPO_ROOT, CogServer
from cog_static import check
from conftest import PREDICTORS, CogServers, wait_until

pytestmark = [pytest.mark.server, pytest.mark.timeout(240)]


CONTRACT_FILE = os.environ.get("CONTRACT", "tests/contract.py")  # relative to the repository


def load_contract() -> ModuleType:
    """tests/contract.py, or the contract file named by $CONTRACT."""
    path = REPO_ROOT / CONTRACT_FILE
    spec = importlib.util.spec_from_file_location("contract_under_test", path)
    assert spec is not None, path
    assert spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


contract = load_contract()
# `@concurrent(max=N)` of the predictor under test (1 without it), read as `cog build` reads it.
CONCURRENCY = check(contract.PREDICTOR, roots=[REPO_ROOT]).concurrency_max or 1
# The contract's predictor with a fault in its streams: tests/predictors/contract_probes.py, then
FAILING_STREAMS = """

from {module} import {cls} as _Predictor


class FailingStreams(_Predictor):
    pass
"""


# CONTRACT_UPLOADS=1: coglet uploads file outputs to a receiver on 127.0.0.1, as on Replicate
# (outputs are then URLs, compared by the bytes fetched from them); else they are data URIs.
UPLOADS = os.environ.get("CONTRACT_UPLOADS") == "1"


@pytest.fixture(scope="module")
def server(module_cog_servers: CogServers) -> CogServer:
    return module_cog_servers.shared(
        contract.PREDICTOR, source_dir=REPO_ROOT, concurrency=CONCURRENCY, uploads=UPLOADS
    )


def succeeded(server: CogServer, inputs: Mapping[str, Any]) -> dict[str, Any]:
    code, body = server.predict(inputs, timeout=180)
    assert code == 200, body
    assert body["status"] == "succeeded", body
    return dict(body)


def output_content(item: Any) -> tuple[str, str]:
    """("text", the text) for a text item; ("file", sha256 of its bytes) for a file output.

    A file arrives as a data URI when the server has no upload URL (local runs), or as the URL
    coglet uploaded it to (Replicate): either way its bytes are what is compared.
    """
    if isinstance(item, str) and item.startswith("data:"):
        payload = item.partition(",")[2]
        data = base64.b64decode(payload) if ";base64," in item[:200] else payload.encode()
        return "file", hashlib.sha256(data).hexdigest()
    if isinstance(item, str) and re.match(r"https?://", item):
        with urllib.request.urlopen(item, timeout=30) as response:
            return "file", hashlib.sha256(response.read()).hexdigest()
    return "text", item if isinstance(item, str) else json.dumps(item, sort_keys=True)


def fingerprint(body: Mapping[str, Any]) -> tuple[str, list[str], dict[str, Any], list[str]]:
    """What must be the same for two runs of one input: output, stable metrics, masked logs.

    Text is joined (how it was split into chunks depends on timing); files are compared by
    content, in order (as a set when uploaded: coglet appends URLs as their uploads finish).
    """
    output = body["output"]
    items = [output_content(item) for item in (output if isinstance(output, list) else [output])]
    text = "".join(value for kind, value in items if kind == "text")
    files = [value for kind, value in items if kind == "file"]
    if UPLOADS:  # URLs come in the order their uploads finished (docs/files.md, "Order")
        files.sort()
    metrics = {
        k: v for k, v in (body.get("metrics") or {}).items() if k not in contract.VOLATILE_METRICS
    }
    logs = [contract.VOLATILE_LOG.sub("#", line) for line in (body.get("logs") or "").splitlines()]
    return text, files, metrics, logs


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


def sent_inputs(spec: Any) -> dict[str, dict[str, Any]]:
    """Every input a contract module (`tests/contract.py` or a stand-in) sends, by where from."""
    sent = {f"{name}(0)": getattr(spec, name)(0) for name in CONTRACT_INPUTS}
    sent |= {f"BAD_INPUTS[{name!r}]": value for name, value in spec.BAD_INPUTS.items()}
    return sent


CONTRACT_INPUTS = ("short_input", "streaming_input", "long_input")


def unknown_inputs(schema: Mapping[str, Any], spec: Any, file: str = CONTRACT_FILE) -> list[str]:
    """One line per input key that `spec` sends and the predictor's schema does not declare.

    coglet ignores such keys (a stale name runs on the defaults), so the contract would test the
    wrong inputs without a word.
    """
    declared = set(schema["components"]["schemas"]["Input"].get("properties") or {})
    return [
        f"{file}: {where} sends {key!r}, which {spec.PREDICTOR} does not declare "
        f"(its inputs: {', '.join(sorted(declared)) or 'none'}); coglet would ignore it: "
        f"edit {file}"
        for where, inputs in sent_inputs(spec).items()
        if isinstance(inputs, dict)
        for key in inputs
        if key not in declared
    ]


def group_cpu_seconds(pgid: int) -> float:
    """CPU time (user + system) used so far by the live processes of one process group."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:  # the process ended meanwhile
            continue
        if int(fields[2]) == pgid:  # fields[0] is the state: pgrp is field 5 of stat(5)
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / tick


def cpu_used_over(pgid: int, seconds: float) -> float:
    """CPU seconds the group used in the next `seconds` of wall time (a measuring window)."""
    before = group_cpu_seconds(pgid)
    time.sleep(seconds)
    return group_cpu_seconds(pgid) - before


WINDOW = 0.5  # seconds of wall time each CPU reading covers
MIN_BUSY = 0.2 * WINDOW  # CPU seconds per window that show a model at work
IDLE_SHARE = 0.15  # after a cancel, at most this share of the busy reading
MARGIN = 0.5  # seconds of streaming the cancel check asks for beyond its two windows


def check_cancel_stops_the_work(server: CogServer, inputs: Mapping[str, Any]) -> None:
    """Cancel the only running prediction; its model must stop using the CPU (black-box).

    First runs `inputs` alone to its end: it must stream for two windows and more after its first
    output, or a cancel one window in could not tell a model that ignores cancel from one that
    finished. Then runs it again, reads the server's CPU use over one window while it streams,
    cancels it, and reads the CPU used from the cancel to the end of one more window.
    """
    assert server.pid is not None
    events = list(server.predict_stream(inputs, timeout=180))
    outputs = [e for e in events if e.event == "output"]
    assert events[-1].data.get("status") == "succeeded", events[-1].data
    assert outputs, "the input streamed no output"
    streamed = events[-1].time - outputs[0].time
    if streamed < 2 * WINDOW + MARGIN:
        pytest.fail(
            f"the input streams for {streamed:.2f}s after its first output; the cancel check "
            f"needs {2 * WINDOW + MARGIN:.1f}s or more: make long_input longer ({CONTRACT_FILE})"
        )
    id_ = start(server, inputs)
    wait_until(output_flows(server, id_), timeout=60, what=f"output of {id_}")
    busy = cpu_used_over(server.pid, WINDOW)
    if busy < MIN_BUSY:
        pytest.fail(
            f"while streaming, the server used {busy:.2f}s of CPU in {WINDOW}s: too little to "
            f"tell whether a cancel stops the model; make long_input heavier ({CONTRACT_FILE})"
        )
    before, cancelled_at = group_cpu_seconds(server.pid), time.monotonic()
    assert server.cancel(id_)[0] == 200
    assert server.wait(id_, timeout=60)["status"] == "canceled"
    time.sleep(max(0.0, cancelled_at + WINDOW - time.monotonic()))  # the end of the window
    after = group_cpu_seconds(server.pid) - before
    if after > IDLE_SHARE * busy:
        pytest.fail(
            f"after the cancel the server kept using the CPU: {after:.2f}s in the "
            f"{time.monotonic() - cancelled_at:.2f}s from the cancel (streaming: {busy:.2f}s in "
            f"{WINDOW}s); the cancelled prediction's work did not stop"
        )


# ── the contract's own inputs ─────────────────────────────────────────────────────────────────


def test_every_input_the_contract_sends_is_declared_by_the_predictor(server: CogServer) -> None:
    schema = json.loads((server.cwd / ".cog" / "openapi_schema.json").read_text())
    problems = unknown_inputs(schema, contract)
    assert not problems, "\n".join(problems)


def test_the_input_check_names_an_unknown_key_and_the_file_to_edit() -> None:
    schema = {"components": {"schemas": {"Input": {"properties": {"prompt": {}, "seed": {}}}}}}
    stale = SimpleNamespace(
        PREDICTOR="predict.py:Predictor",
        short_input=lambda i: {"prompt": "x", "max_new_tokens": 5},  # a renamed input
        streaming_input=lambda i: {"prompt": "x"},
        long_input=lambda i: {"prompt": "x", "seed": i},
        BAD_INPUTS={"wrong type": {"seed": "x"}, "stale": {"temperature": 3}},
    )
    assert unknown_inputs(schema, stale, "tests/contract.py") == [
        "tests/contract.py: short_input(0) sends 'max_new_tokens', which predict.py:Predictor "
        "does not declare (its inputs: prompt, seed); coglet would ignore it: edit "
        "tests/contract.py",
        "tests/contract.py: BAD_INPUTS['stale'] sends 'temperature', which predict.py:Predictor "
        "does not declare (its inputs: prompt, seed); coglet would ignore it: edit "
        "tests/contract.py",
    ]


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
    outputs = {(a[0], tuple(a[1])) for a in alone}
    assert len(outputs) == len(alone), "contract.short_input must vary the output"
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


def test_a_cancel_stops_the_models_work(server: CogServer) -> None:
    check_cancel_stops_the_work(server, contract.long_input(7))


@pytest.mark.parametrize(
    ("inputs", "failure"),
    [
        ({"seconds": 6.0, "fault": "thread"}, "kept using the CPU"),
        ({"seconds": 6.0, "fault": "unhooked"}, "kept using the CPU"),
        ({"seconds": 3.0, "fault": "none"}, None),
        ({"seconds": 1.0, "fault": "none"}, "make long_input longer"),
    ],
    ids=["a plain thread", "no coglet_cancel", "no fault", "too short to cancel"],
)
def test_the_cancel_check_fails_on_work_that_runs_on(
    module_cog_servers: CogServers, inputs: dict[str, Any], failure: str | None
) -> None:
    hook = "0" if inputs["fault"] == "unhooked" else "1"
    faulty = module_cog_servers.shared(
        "ignores_cancel.py:Predictor", concurrency=2, env={"COGLET_CANCEL": hook}
    )
    # A fresh worker's first outputs can reach coglet seconds late while a pure-Python
    # producer holds the GIL (docs/limitations.md): warm it up first.
    assert faulty.predict({"seconds": 0.2})[1]["status"] == "succeeded"
    if failure is None:
        check_cancel_stops_the_work(faulty, inputs)
        return
    with pytest.raises(pytest.fail.Exception, match=failure):
        check_cancel_stops_the_work(faulty, inputs)


# ── bad input, health ─────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize("name", contract.BAD_INPUTS)
def test_bad_input_gets_a_422_that_names_the_input(server: CogServer, name: str) -> None:
    code, body = server.predict(contract.BAD_INPUTS[name])
    assert code == 422, body
    assert body["detail"][0]["loc"][:2] == ["body", "input"]
    wait_until(lambda: server.health()["status"] == "READY", timeout=5, what="a free slot")


@pytest.mark.parametrize("payload", [{"input": "text"}, {"input": [1, 2]}])
def test_a_body_that_is_not_an_input_object_is_rejected(server: CogServer, payload: Any) -> None:
    code, body = server.request("POST", "/predictions", payload)
    assert code in (400, 422), body
    succeeded(server, contract.short_input(1))


def test_a_body_without_input_needs_every_required_input(server: CogServer) -> None:
    """No `input` at all: 422 if the predictor has a required input, else a run on the defaults."""
    schema = json.loads((server.cwd / ".cog" / "openapi_schema.json").read_text())
    required = schema["components"]["schemas"]["Input"].get("required") or []
    code, body = server.request("POST", "/predictions", {"nothing": 1})
    if required:
        assert code == 422, body
    else:
        assert (code, body["status"]) == (200, "succeeded"), body


def test_the_422_for_a_huge_input_is_answered_promptly(server: CogServer) -> None:
    big = next(v for v in contract.BAD_INPUTS.values() if len(repr(v)) > 100_000)
    sent = time.monotonic()
    assert server.predict(big)[0] == 422
    assert time.monotonic() - sent < 5.0
    assert re.fullmatch(r"READY|BUSY", server.health()["status"])


# ── errors ────────────────────────────────────────────────────────────────────────────────────


def test_a_stream_that_fails_mid_way_fails_its_own_prediction_only(
    server: CogServer, module_cog_servers: CogServers, tmp_path_factory: pytest.TempPathFactory
) -> None:
    file_name, _, cls = contract.PREDICTOR.partition(":")
    module = file_name.removesuffix(".py").replace("/", ".")
    probes = tmp_path_factory.mktemp("failing")
    injection = (PREDICTORS / "contract_probes.py").read_text()
    (probes / "failing_streams.py").write_text(
        injection + FAILING_STREAMS.format(module=module, cls=cls)
    )
    failing = module_cog_servers.shared(
        "failing_streams.py:FailingStreams",  # every second stream raises after 2 items
        source_dir=probes,
        concurrency=CONCURRENCY,
        uploads=UPLOADS,
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
    wait_until(lambda: failing.health()["status"] == "READY", timeout=5, what="a free slot")
    assert succeeded(server, inputs[0])["status"] == "succeeded"
