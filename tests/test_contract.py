"""The template's contract, checked on the real Cog server for whatever `predict.py` serves.

A fork keeps these tests unchanged: what they send comes from tests/contract.py, what they check is
behaviour any streamed model must show on Cog — never a model's text or images (outputs are compared
by content: text joined, files by their bytes). A model's own tests live beside the model, not here.
`CONTRACT=path/to/other_contract.py pytest tests/test_contract.py` checks the predictor another
contract file names (tests/contract_runs.py does so, with data URIs and with uploads).
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import itertools
import json
import mimetypes
import os
import re
import threading
import time
import urllib.request
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import contract_fuzz
import pytest
from cog_server import REPO_ROOT, CogServer, _Receiver
from cog_static import check
from conftest import PREDICTORS, CogServers, cancelled_before_run, predictor_files, wait_until

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
_STATIC = check(contract.PREDICTOR, roots=[REPO_ROOT])  # the predictor, read as `cog build` does
# `@concurrent(max=N)` of the predictor under test (1 without it).
CONCURRENCY = _STATIC.concurrency_max or 1
# `@streaming` on run(): its output streams over SSE. Without it, run() returns its output at
# the end (a vector, a text, an object): the tests that need a stream say so and skip, and the
# cancel check measures the prediction as a whole instead.
STREAMS = _STATIC.streaming
NO_STREAM = (
    f"{contract.PREDICTOR} returns its output at the end (no @streaming on run()): nothing "
    f"streams over SSE"
)
# Optional declarations of a contract file (tests/contract.py says what each means).
FLOAT_TOLERANCE: float = getattr(contract, "FLOAT_TOLERANCE", 0.0)
ALLOWS_SERVER_PATHS: bool = getattr(contract, "ALLOWS_SERVER_PATHS", False)
# Metrics coglet_inputs records on a prediction with file inputs: their values are timings.
TEMPLATE_VOLATILE_METRICS = frozenset({"input_download_time"})
# Log lines of coglet_inputs: an URL's download (a data URI's has none), masked when comparing.
DOWNLOAD_LOG = re.compile(r"^\S+: download(ing|ed) ")
# The contract's predictor with a fault in its streams: tests/predictors/contract_probes.py, then
FAILING_STREAMS = """

from {module} import {cls} as _Predictor


class FailingStreams(_Predictor):
    pass


fail_results(FailingStreams)  # a predictor without a stream: every second result fails
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


def output_content(item: Any) -> tuple[str, Any]:
    """("text", the text) for a text item; ("file", sha256 of its bytes) for a file output;
    ("value", the item) for anything else (a number, an object, a list of them).

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
    return ("text", item) if isinstance(item, str) else ("value", item)


@dataclass(frozen=True)
class Fingerprint:
    """What must be the same for two runs of one input: output, stable metrics, masked logs.

    Compared with `==`, where floats (in values and metrics) may differ by the contract file's
    `FLOAT_TOLERANCE` (a batched forward pass sums in another order than a solo one).
    """

    text: str
    files: list[str]
    values: list[Any]
    metrics: dict[str, Any]
    logs: list[str]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Fingerprint):
            return NotImplemented
        return (self.text, self.files, self.logs) == (other.text, other.files, other.logs) and (
            close(self.values, other.values) and close(self.metrics, other.metrics)
        )

    __hash__ = None  # type: ignore[assignment]


def close(a: Any, b: Any, tolerance: float | None = None) -> bool:
    """`a == b`, but floats within `tolerance` (default: the contract's `FLOAT_TOLERANCE`)."""
    tol = FLOAT_TOLERANCE if tolerance is None else tolerance
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, int | float) and isinstance(b, int | float) and abs(a - b) <= tol
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(close(x, y, tol) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(close(a[k], b[k], tol) for k in a)
    return bool(a == b)


def fingerprint(body: Mapping[str, Any]) -> Fingerprint:
    """The `Fingerprint` of a prediction's response or final event.

    Text is joined (how it was split into chunks depends on timing); files are compared by
    content, in order (as a set when uploaded: coglet appends URLs as their uploads finish).
    Logs are what the contract promises, a multiset: every line the prediction should have,
    once, and none of another prediction's. Lines from several threads (a producer and a pool)
    interleave differently from run to run, so their order is not compared.
    """
    output = body["output"]
    if not STREAMS or not isinstance(output, list):
        output = [output]  # one value, whatever its type (a list of floats is one output)
    items = [output_content(item) for item in output]
    text = "".join(value for kind, value in items if kind == "text")
    files = [value for kind, value in items if kind == "file"]
    if UPLOADS:  # URLs come in the order their uploads finished (docs/files.md, "Order")
        files.sort()
    volatile = contract.VOLATILE_METRICS | TEMPLATE_VOLATILE_METRICS
    metrics = {k: v for k, v in (body.get("metrics") or {}).items() if k not in volatile}
    logs = sorted(
        contract.VOLATILE_LOG.sub("#", line)
        for line in (body.get("logs") or "").splitlines()
        if not DOWNLOAD_LOG.match(line)
    )
    values = [value for kind, value in items if kind == "value"]
    return Fingerprint(text, files, values, metrics, logs)


def start(server: CogServer, inputs: Mapping[str, Any]) -> str:
    id_ = f"contract-{uuid.uuid4().hex[:10]}"
    code, body = server.predict_async(id_, inputs)
    assert code == 202, body
    return id_


def output_flows(server: CogServer, id_: str) -> Callable[[], bool]:
    """Whether prediction `id_` is at work: its output flows (a stream), or it has started
    (without a stream nothing shows before the end: `processing` is the most a client sees)."""

    def check() -> bool:
        state = server.get(id_) or {}
        return bool(state.get("output")) if STREAMS else state.get("status") == "processing"

    return check


def wait_until_at_work(server: CogServer, id_: str, not_before: float = 0.0) -> None:
    """Return once prediction `id_`'s run() is at work: a cancel sent now reaches the model.

    With a stream, that is its first output. Without one, `processing` is all a client sees, and
    coglet 0.23 sets it in its parent before its worker has the request: a cancel that reaches
    the worker first is dropped, run() goes to its end, and the prediction is reported
    `canceled` only then (docs/limitations.md). So a cancel of a prediction that does not
    stream also waits for `not_before` (a `time.monotonic()`): a share of a whole run's time,
    measured on this server, after the request was sent.
    """
    wait_until(output_flows(server, id_), timeout=60, what=f"{id_} to start")
    if not STREAMS:
        time.sleep(max(0.0, not_before - time.monotonic()))


def cancel_after(server: CogServer, inputs: Mapping[str, Any]) -> float:
    """Seconds a whole run of `inputs` takes on this server (0.0 for a predictor that streams):
    what wait_until_at_work's `not_before` is a share of."""
    return 0.0 if STREAMS else measure_whole(server, inputs).seconds


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
    """CPU time (user + system, ns resolution) used so far by the processes of one group.

    Read from each process's CPU-time clock (clock_getcpuclockid(3): `(~pid << 3) | 2`), which
    counts the threads that have ended too; /proc's tick counts (10 ms) are too coarse for the
    short windows of a fast model.
    """
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
            if int(fields[2]) == pgid:  # fields[0] is the state: pgrp is field 5 of stat(5)
                total += time.clock_gettime((~int(stat.parent.name) << 3) | 2)
        except (OSError, ValueError):  # the process ended meanwhile
            continue
    return total


# The cancel check's windows are placed inside the stream of `long_input` as measured on this
# server, so that it holds for a model that streams 0.3 s or 30 s, on a slow CPU or a fast GPU.
# Seconds of streaming after the first output below which CPU windows tell nothing: a window is
# then a cancel's own latency or two (0.13 s seen on a loaded 2-core machine), and a short
# stream's work can end before the second window opens, hiding work that ran on. The whole-run
# check, which counts CPU seconds and not time, takes such inputs.
FLOOR = 1.0
WINDOW_SHARE = 0.25  # each of the two CPU windows covers this share of that streaming time
MAX_WINDOW = 0.5  # ... up to this many seconds (a longer input is measured only this far)
MIN_BUSY = 0.2  # CPU seconds per wall second while streaming that show a model at work
IDLE_SHARE = 0.3  # after a cancel, at most this share of the streaming CPU rate
ATTEMPTS = 3  # runs of the measurement when the windows do not fit inside the stream


@dataclass(frozen=True)
class Streaming:
    """How `long_input` streams on this server: for how long after its first output, and the
    median gap between two outputs (a model's step: a cancel stops it at its next output)."""

    seconds: float
    step: float
    first_after: float  # seconds from the request to the first output


def measure_streaming(server: CogServer, inputs: Mapping[str, Any]) -> Streaming:
    """Run `inputs` over SSE and time its stream (at most as far as the windows need).

    A stream still running after `MAX_WINDOW / WINDOW_SHARE` seconds is cancelled there: a
    30-second input costs the check a few seconds, not thirty.
    """
    enough = MAX_WINDOW / WINDOW_SHARE
    id_ = f"contract-{uuid.uuid4().hex[:10]}"
    outputs: list[float] = []
    sent = time.monotonic()
    stream = server.predict_stream(inputs, timeout=180, id=id_)
    for event in stream:
        if event.event == "output":
            outputs.append(event.time)
        if event.event == "completed":
            assert event.data.get("status") == "succeeded", event.data
            assert outputs, "the input streamed no output"
            break
        if outputs and event.time - outputs[0] >= enough:
            status = server.cancel(id_)[0]
            # 404: the prediction ended before the cancel reached it — a loaded client reads
            # the last outputs late, in one burst with `completed`, which then follows here
            assert status in (200, 404), f"cancelling {id_} answered {status}"
            rest = list(stream)  # to its end: the prediction is over and its slot free
            if status == 404:
                assert [e.event for e in rest][-1:] == ["completed"], f"{id_}: not completed"
                assert rest[-1].data.get("status") == "succeeded", rest[-1].data
            break
    else:
        pytest.fail(f"the stream of {id_} ended without a completed event")
    gaps = sorted(b - a for a, b in itertools.pairwise(outputs))
    step = gaps[len(gaps) // 2] if gaps else enough
    return Streaming(seconds=event.time - outputs[0], step=step, first_after=outputs[0] - sent)


class _Run:
    """One prediction streamed over SSE on a thread of its own: its first output and its end."""

    def __init__(self, server: CogServer, inputs: Mapping[str, Any]) -> None:
        self.id = f"contract-{uuid.uuid4().hex[:10]}"
        self.first_output = threading.Event()
        self.first_output_at = 0.0
        self.done = threading.Event()
        self.done_at = 0.0
        self.status: str | None = None
        self.error = ""
        self.sent_at = 0.0
        self._thread = threading.Thread(target=self._read, args=(server, dict(inputs)))
        self._thread.start()

    def _read(self, server: CogServer, inputs: dict[str, Any]) -> None:
        self.sent_at = time.monotonic()
        try:
            for event in server.predict_stream(inputs, timeout=180, id=self.id):
                if event.event == "output" and not self.first_output.is_set():
                    self.first_output_at = event.time
                    self.first_output.set()
                if event.event == "completed":
                    self.status, self.done_at = event.data.get("status"), event.time
                    self.error = str(event.data.get("error") or "")
        finally:
            self.first_output.set()  # wakes a waiter when the stream ends without output
            self.done.set()

    def join(self) -> None:
        self._thread.join(timeout=180)
        assert not self._thread.is_alive(), f"the SSE stream of {self.id} did not end"


@dataclass(frozen=True)
class Whole:
    """One run of an input, from its request to its end, measured on the server."""

    seconds: float  # wall time
    cpu: float  # CPU seconds the server's processes used meanwhile
    first_after: float | None  # seconds to its first output (None without a stream)


def measure_whole(server: CogServer, inputs: Mapping[str, Any]) -> Whole:
    assert server.pid is not None
    cpu, sent = group_cpu_seconds(server.pid), time.monotonic()
    first: float | None = None
    if STREAMS:
        for event in server.predict_stream(inputs, timeout=180):
            if event.event == "output" and first is None:
                first = event.time - sent
            if event.event == "completed":
                assert event.data.get("status") == "succeeded", event.data
    else:  # as the cancelled run will be sent: with a webhook (coglet's own CPU counts too)
        final = server.wait(start(server, inputs), timeout=180)
        assert final["status"] == "succeeded", final
    ended = time.monotonic()
    return Whole(ended - sent, group_cpu_seconds(server.pid) - cpu, first)


# Without a stream: cancel once this share of a whole run's time has passed since the request,
# in the first try, the second and the third (later after a cancel that came too early).
CANCEL_SHARES = (0.25, 0.5, 0.75)
IDLE_SPAN = 0.2  # seconds: the shortest span the whole-run check calls idle ...
IDLE_RATE = 0.1  # ... using at most this many CPU seconds per second (or IDLE_SHARE of the run's)
NOISE = 0.015  # CPU seconds: what a request's handling alone may vary by
TELLS = 0.6  # a cancel later than this share of the work leaves too little to tell apart


def cpu_rate(server: CogServer, over: float = 0.1) -> float:
    """The CPU seconds per second `server`'s processes use, measured over `over` seconds."""
    assert server.pid is not None
    before, at = group_cpu_seconds(server.pid), time.monotonic()
    time.sleep(over)
    return (group_cpu_seconds(server.pid) - before) / (time.monotonic() - at)


def check_cancel_stops_the_whole_work(
    server: CogServer, inputs: Mapping[str, Any], streamed: Streaming | None = None
) -> None:
    """The cancel check for a run too short for CPU windows, or one that does not stream.

    Measures the CPU seconds the server uses for a whole run of `inputs` (the smaller of two:
    a lenient reading would hide a fault), then runs it again and cancels it at its first
    output (without a stream: once it is `processing` and a share of its measured time
    has passed). After `canceled`, it waits until the server's CPU rate has fallen idle (or the
    run would long have ended), and compares what the cancelled run used with the whole run:
    work that stopped used about the share done before the cancel; work that ran on used all
    of it. The limit is halfway between. Counted CPU time, not wall time: a loaded machine
    slows both runs alike.

    When the cancel comes so late in the work that the two cannot be told apart (a stream whose
    first output is its last, a run that ends before a cancel lands), the check says so, with
    the measured times, and checks what it can: the prediction ends `canceled` and its slot is
    free. It never asks for another model or input.
    """
    assert server.pid is not None
    whole = min((measure_whole(server, inputs) for _ in range(2)), key=lambda w: w.cpu)
    rate = whole.cpu / max(whole.seconds, 1e-3)  # the run's CPU rate
    note = ""
    for attempt in range(ATTEMPTS):
        cpu, sent = group_cpu_seconds(server.pid), time.monotonic()
        if STREAMS:
            run = _Run(server, inputs)
            assert run.first_output.wait(timeout=120), f"no output from {run.id}"
            id_ = run.id
        else:
            id_ = start(server, inputs)
            share = CANCEL_SHARES[attempt]  # later after a cancel that came too early (below)
            wait_until_at_work(server, id_, not_before=sent + share * whole.seconds)
        done_at_cancel = group_cpu_seconds(server.pid) - cpu  # the work done before the cancel
        code = server.cancel(id_)[0]
        if STREAMS:
            run.join()
            status, error = run.status, run.error
        else:
            final = server.wait(id_, timeout=60)
            status, error = final["status"], str(final.get("error") or "")
        if code == 404:  # it ended before the cancel: nothing to measure in this try
            assert status == "succeeded", f"{id_} ended {status}"
            note = f"it ended before the cancel in {ATTEMPTS} tries"
            continue
        if cancelled_before_run({"status": status, "error": error}):
            # coglet 0.23: a cancel while it still turns the request's JSON into Python, before
            # run() is called, fails the prediction so (docs/limitations.md): not the model's
            note = f"the cancel came before run() started in {attempt + 1} tries"
            continue
        assert (code, status) == (200, "canceled"), f"{id_}: cancel {code}, ended {status}"
        # Until the server is idle: work that stopped is idle at once; work that ran on keeps
        # using the CPU to its end (bounded: 3 times the run, plus a second). Idle means near
        # none over a span of at least IDLE_SPAN: on a loaded machine a thread that runs on
        # gets only a share of a core, and can wait its turn for a few scheduler periods.
        span = max(IDLE_SPAN, min(1.0, whole.seconds / 4))
        idle_rate = min(IDLE_SHARE * rate, IDLE_RATE)
        deadline = sent + 3 * whole.seconds + 1.0
        while time.monotonic() < deadline:
            before, at = group_cpu_seconds(server.pid), time.monotonic()
            time.sleep(span)
            if group_cpu_seconds(server.pid) - before < idle_rate * (time.monotonic() - at):
                break
        used = group_cpu_seconds(server.pid) - cpu
        # The share of a whole run's work done when the cancel went out, measured (a model's
        # work need not be spread evenly: a pool may decode every input first; a loaded client
        # sees the first output late): a cancel later than TELLS is tried again.
        share = min(1.0, done_at_cancel / max(whole.cpu, 1e-6))
        if share > TELLS:
            note = f"the cancel came after {share:.0%} of its work in {attempt + 1} tries"
            continue
        if (1 - share) * whole.cpu / 2 < NOISE:
            note = f"a whole run uses {whole.cpu:.3f} CPU s, near the noise of a request's own"
            break
        limit = (share + 1) / 2 * whole.cpu
        print(  # shown with a failure: what the check measured
            f"cancel check (whole run): a run takes {whole.seconds:.3f}s and {whole.cpu:.3f} "
            f"CPU s; cancelled after {share:.0%} of its work, the run used {used:.3f} CPU s "
            f"(limit {limit:.3f})"
        )
        if used > limit:
            pytest.fail(
                f"after the cancel the server kept using the CPU: the cancelled run used "
                f"{used:.3f} CPU seconds, a whole run {whole.cpu:.3f}, though it was "
                f"cancelled after {share:.0%} of its work; the cancelled prediction's work "
                f"did not stop"
            )
        return
    wait_until(lambda: server.health()["status"] == "READY", timeout=10, what="a free slot")
    streams = (
        "" if streamed is None else f"streams {streamed.seconds:.3f}s after its first output, "
    )
    warnings.warn(
        f"cancel check: too short to tell whether a cancel stops the work: {long_input_name()} "
        f"{streams}runs {whole.seconds:.3f}s in all, and {note}. Checked instead: the "
        f"prediction ends canceled (when a cancel landed) and its slot is free.",
        stacklevel=2,
    )


def long_input_name() -> str:
    return f"long_input ({CONTRACT_FILE})"


def check_cancel_stops_the_work(server: CogServer, inputs: Mapping[str, Any]) -> None:
    """Cancel the only running prediction; its model must stop using the CPU (black-box).

    First measures how `inputs` streams on this server: for S seconds after its first output,
    one output every `step`. Each CPU window is then S / 4 (at most `MAX_WINDOW`), so that both
    fit inside the stream whatever the model's speed: one window while it streams, then a
    cancel; once the server reports the prediction `canceled` and one more step has passed
    (the producer stops at its next output), the second window. A model that ignores the
    cancel keeps its CPU rate there; one that stopped is idle. The second window ends where the
    stream would have ended and must cover half a window: a cancel that ends the prediction
    only when its work would have ended anyway leaves no room for it, and fails too, after
    `ATTEMPTS` tries (a stalled machine gets another). Below `FLOOR` seconds of streaming the
    windows would be a few scheduler time slices (and a cancel's own cost), too short to tell
    anything, and a predictor without a stream has no outputs to place them by: both are
    checked by `check_cancel_stops_the_whole_work` instead.
    """
    assert server.pid is not None
    if not STREAMS:
        check_cancel_stops_the_whole_work(server, inputs)
        return
    measured = measure_streaming(server, inputs)
    for _attempt in range(ATTEMPTS - 1):  # a stalled client sees the first output late and
        if measured.seconds >= FLOOR:  # the stream short: the longest of a few tries counts
            break
        measured = max(measured, measure_streaming(server, inputs), key=lambda m: m.seconds)
    if measured.seconds < FLOOR:  # too short for windows: the CPU of the whole run instead
        check_cancel_stops_the_whole_work(server, inputs, streamed=measured)
        return
    window = min(MAX_WINDOW, WINDOW_SHARE * measured.seconds)
    grace = min(measured.step, window)
    ended_after: list[float] = []
    for _attempt in range(ATTEMPTS):
        run = _Run(server, inputs)
        try:
            assert run.first_output.wait(timeout=120), f"no output from {run.id}"
            # Its outputs came in one burst, at its end (a client or worker starved of CPU or
            # of the GIL, e.g. by a cancelled run that runs on): this try does not count.
            if run.done.is_set():
                ended_after.append(run.done_at - time.monotonic())
                continue
            busy_from, busy = time.monotonic(), group_cpu_seconds(server.pid)
            time.sleep(window)  # the first window: the model at work
            cancelled_at = time.monotonic()
            busy = (group_cpu_seconds(server.pid) - busy) / (cancelled_at - busy_from)
            status = server.cancel(run.id)[0]
            if status == 404:  # over before the cancel: a loaded client read its outputs late
                assert run.done.wait(timeout=60), f"{run.id} unknown to the server yet streaming"
                ended_after.append(run.done_at - cancelled_at)  # <= 0: this try does not count
                continue
            assert status == 200, f"the cancel of {run.id} answered {status}"
            assert run.done.wait(timeout=60), f"{run.id} still streaming after its cancel"
            time.sleep(max(0.0, run.done_at + grace - time.monotonic()))
            # The second window: the cancelled model must be idle. It ends where the stream
            # would have ended, and counts if it still covers half a window.
            after_from, after = time.monotonic(), group_cpu_seconds(server.pid)
            # Where the stream would have ended: its first output came this much later after
            # the request than in the measured run (a loaded machine), so its work began earlier.
            late = max(0.0, run.first_output_at - run.sent_at - measured.first_after)
            stream_end = run.first_output_at + measured.seconds - late
            time.sleep(max(0.0, min(after_from + window, stream_end) - time.monotonic()))
            ended_at = time.monotonic()
            after = (group_cpu_seconds(server.pid) - after) / max(ended_at - after_from, 1e-3)
        finally:
            run.join()
        assert run.status == "canceled", f"{run.id} ended {run.status}, not canceled"
        ended_after.append(run.done_at - cancelled_at)
        if ended_at - after_from >= window / 2 and ended_at <= stream_end + 0.01:
            break  # both windows fell inside the stream: the reading counts
    else:
        pytest.fail(
            f"the cancel did not end the prediction early: it ended "
            f"{', '.join(f'{t:.2f}' for t in ended_after)}s after the cancel in {ATTEMPTS} "
            f"runs, leaving no {window:.2f}s window inside the input's {measured.seconds:.2f}s "
            f"of streaming; the cancelled prediction's work ran on (or long_input is too short "
            f"for this machine: {CONTRACT_FILE})"
        )
    print(  # shown with a failure: what the check measured
        f"cancel check: streams {measured.seconds:.2f}s (a step {measured.step:.3f}s), "
        f"windows {window:.2f}s, CPU rate while streaming {busy:.2f}, after the cancel "
        f"{after:.2f}, canceled {ended_after[-1]:.3f}s after the cancel"
    )
    if busy < MIN_BUSY:  # too little to tell in a window (a loaded machine, a light model):
        check_cancel_stops_the_whole_work(server, inputs, streamed=measured)  # totals instead
        return
    if after > IDLE_SHARE * busy:
        pytest.fail(
            f"after the cancel the server kept using the CPU: {after:.2f} CPU seconds per "
            f"second over {window:.2f}s once the prediction was canceled (streaming: "
            f"{busy:.2f}); the cancelled prediction's work did not stop"
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
    if not STREAMS:
        pytest.skip(NO_STREAM)
    # A new worker's first prediction pays a one-off start-up cost that a fast model's whole
    # stream may not outlast: warm it up, so that what is timed is the streaming.
    succeeded(server, contract.short_input(0))
    # A fast model's whole stream can be shorter than one scheduling hiccup of a loaded machine,
    # which then hands the client every event at once: such a try proves nothing either way and
    # is made again. A model that sends its output only at the end never passes.
    for _attempt in range(ATTEMPTS):
        events = list(server.predict_stream(contract.streaming_input(0), timeout=120))
        outputs = [e for e in events if e.event == "output"]
        assert events[-1].event == "completed"
        assert events[-1].data["status"] == "succeeded"
        assert len(outputs) > 3, "the output arrived in one piece, not streamed"
        # Timed from when run() could start: the request's first event (its body uploaded and
        # accepted), plus the time its file inputs took to download (coglet_inputs' metric):
        # a large input is not a slow stream.
        metrics = events[-1].data.get("metrics") or {}
        began = events[0].time + float(metrics.get("input_download_time", 0.0))
        # The first piece arrives long before the end, not with it.
        if outputs[0].time - began < 0.5 * (events[-1].time - began):
            break
    else:
        pytest.fail(
            f"in {ATTEMPTS} tries the first output never arrived before half of the stream: "
            f"outputs are held back until the end, or streaming_input streams too briefly to "
            f"tell (make it longer: {CONTRACT_FILE})"
        )


def test_an_iterator_output_is_marked_streaming(server: CogServer) -> None:
    """coglet streams over SSE only a run() marked `@streaming`; an `Iterator[...]` output
    without it arrives in one piece at the end."""
    schema = json.loads((server.cwd / ".cog" / "openapi_schema.json").read_text())
    output = schema["components"]["schemas"]["Output"]
    iterator = output.get("x-cog-array-type") == "iterator"
    assert STREAMS or not iterator, (
        f"{contract.PREDICTOR}'s run() returns an iterator but is not marked @streaming: "
        f"add `@streaming` (from cog) above it"
    )


# ── isolation ─────────────────────────────────────────────────────────────────────────────────


def test_at_full_concurrency_every_prediction_keeps_its_own_output_logs_and_metrics(
    server: CogServer,
) -> None:
    inputs = [contract.short_input(i) for i in range(CONCURRENCY)]
    alone = [fingerprint(succeeded(server, job)) for job in inputs[:4]]  # a sample, one by one
    outputs = {json.dumps([a.text, a.files, a.values], sort_keys=True) for a in alone}
    assert len(outputs) == len(alone), "contract.short_input must vary the output"
    for _round in range(2):
        with ThreadPoolExecutor(CONCURRENCY) as pool:
            bodies = list(pool.map(lambda job: succeeded(server, job), inputs))
        together = [fingerprint(body) for body in bodies]
        assert together[:4] == alone
        # Every prediction's logs and metrics are its own: those of the same input run again.
        again = [fingerprint(succeeded(server, job)) for job in inputs[4:8]]
        assert together[4:8] == again


def test_logs_are_compared_as_the_contract_promises_every_line_once_in_any_order() -> None:
    def body(*lines: str) -> dict[str, Any]:
        return {"output": ["a", "b"], "metrics": {}, "logs": "".join(f"{x}\n" for x in lines)}

    alone = fingerprint(body("start", "producer 1", "pool 1", "pool 2", "done"))
    assert fingerprint(body("start", "pool 1", "producer 1", "pool 2", "done")) == alone
    assert fingerprint(body("start", "producer 1", "pool 2", "done")) != alone, "missing"
    assert fingerprint(body("start", "producer 1", "pool 1", "pool 1", "pool 2", "done")) != alone
    misrouted = body("start", "producer 1", "pool 1", "other's pool 1", "pool 2", "done")
    assert fingerprint(misrouted) != alone


# ── capacity, cancel ──────────────────────────────────────────────────────────────────────────


def test_past_capacity_a_request_gets_409_and_cancels_free_every_slot_at_once(
    server: CogServer,
) -> None:
    whole = cancel_after(server, contract.long_input(0))
    # A fast model's long_input may end before the request past capacity lands: a 200 is then
    # no fault, and the test tries again. A server that takes too many never passes.
    for _attempt in range(ATTEMPTS):
        jobs = [contract.long_input(i) for i in range(CONCURRENCY)]
        sent = time.monotonic()
        with ThreadPoolExecutor(CONCURRENCY) as pool:  # all at once: they overlap the most
            ids = list(pool.map(lambda job: start(server, job), jobs))
        # coglet takes the slot before it answers 202 (submit_prediction, in
        # crates/coglet/src/transport/http/routes.rs): ask for one more at once, before a short
        # long_input on a loaded machine can end (waiting for outputs first lost that race).
        code, body = server.predict(contract.short_input(0), busy_retry=0)
        if code == 409:
            break
        assert code == 200, body
        for id_ in ids:
            server.wait(id_, timeout=180)
    else:
        pytest.fail(
            f"in {ATTEMPTS} tries a request past capacity never got 409: the server took more "
            f"than {CONCURRENCY} predictions at once, or long_input ends before {CONCURRENCY} "
            f"of them overlap (make it longer: {CONTRACT_FILE})"
        )
    for id_ in ids:  # a cancel that beats the start is reported "failed" by coglet 0.23
        wait_until_at_work(server, id_, not_before=sent + CANCEL_SHARES[0] * whole)
    cancelled_at = time.monotonic()
    cancels = {id_: server.cancel(id_)[0] for id_ in ids}
    ended: list[float] = []  # when each prediction a cancel reached ended
    for id_, code in cancels.items():
        final = server.wait(id_, timeout=30)
        if code == 404:  # coglet: no longer running when the cancel came (it ended on its own)
            assert final["status"] == "succeeded", final
        elif not cancelled_before_run(final):  # (coglet's early-cancel race: its run() goes on)
            assert (code, final["status"]) == (200, "canceled"), final
            ended.append(time.monotonic())
    assert all(t - cancelled_at < 5.0 for t in ended), "cancelled predictions ran on"
    # Every slot is free again: as many new predictions as there are slots all start.
    new = [start(server, contract.short_input(i)) for i in range(CONCURRENCY)]
    for id_ in new:
        assert server.wait(id_, timeout=120)["status"] == "succeeded"


def test_a_cancelled_prediction_stops_and_leaves_nothing_in_the_next_one(
    server: CogServer,
) -> None:
    expected = fingerprint(succeeded(server, contract.short_input(5)))
    whole = cancel_after(server, contract.long_input(5))
    for attempt in range(ATTEMPTS):  # a fast model's long_input may end before its cancel
        sent = time.monotonic()
        id_ = start(server, contract.long_input(5))
        wait_until_at_work(server, id_, not_before=sent + CANCEL_SHARES[attempt] * whole)
        cancelled_at = time.monotonic()
        code = server.cancel(id_)[0]
        result = server.wait(id_, timeout=30)
        if cancelled_before_run(result):  # too early to tell what the model does: again
            continue
        if code != 404:
            assert (code, result["status"]) == (200, "canceled"), result
            took = time.monotonic() - cancelled_at
            assert took < 1.0, f"{id_} ended {took:.2f}s after its cancel (at most 1 s)"
            break
        assert result["status"] == "succeeded", result  # ended before the cancel came
    else:  # a model this fast leaves nothing to cancel: what follows still holds
        warnings.warn(
            f"in {ATTEMPTS} tries long_input ended (or had not reached run()) before its cancel "
            f"landed: checked only that the next prediction is exact",
            stacklevel=1,
        )
    assert fingerprint(succeeded(server, contract.short_input(5))) == expected


def test_a_cancel_stops_the_models_work(server: CogServer) -> None:
    check_cancel_stops_the_work(server, contract.long_input(7))


# What the check says of work that runs on after its cancel: it used the CPU in the second window,
# or (when the machine is too loaded to fit that window in before the work ends) the prediction
# ended no earlier than the work would have.
RAN_ON = "kept using the CPU|did not end the prediction early"


# Probes of every speed (seconds of streaming after the first output): 1.5 s is checked by CPU
# windows, 0.1 s (below FLOOR) by whole runs' CPU, where a fault is hardest to catch; 30 s
# stands for a slow model (its windows are MAX_WINDOW long, as for any stream of 2 s or more:
# it is measured only as far as they need); 0 s streams one output, its last.
@pytest.mark.parametrize(
    ("inputs", "failure"),
    [
        ({"seconds": 1.5, "fault": "thread"}, RAN_ON),
        ({"seconds": 1.5, "fault": "unhooked"}, RAN_ON),
        ({"seconds": 1.5, "fault": "none"}, None),
        ({"seconds": 30.0, "fault": "none"}, None),
        ({"seconds": 0.1, "fault": "thread"}, RAN_ON),
        ({"seconds": 0.1, "fault": "unhooked"}, RAN_ON),
        ({"seconds": 0.1, "fault": "none"}, None),
        ({"seconds": 0.0, "fault": "none"}, "too short to tell"),
    ],
    ids=[
        "a plain thread, 1.5 s",
        "no coglet_cancel, 1.5 s",
        "no fault, 1.5 s",
        "no fault, 30 s",
        "a plain thread, 0.1 s",
        "no coglet_cancel, 0.1 s",
        "no fault, 0.1 s",
        "too short to tell",
    ],
)
def test_the_cancel_check_fails_on_work_that_runs_on(
    module_cog_servers: CogServers, inputs: dict[str, Any], failure: str | None
) -> None:
    hook = "0" if inputs["fault"] == "unhooked" else "1"
    faulty = module_cog_servers.shared(
        "ignores_cancel.py:Predictor", concurrency=2, env={"COGLET_CANCEL": hook}
    )
    # A case before on this server may have left work running (a plain thread's fault does):
    # its CPU would show in this case's windows.
    wait_until(lambda: cpu_rate(faulty) < MIN_BUSY / 4, timeout=60, what="an idle server")
    # A fresh worker's first outputs can reach coglet seconds late while a pure-Python
    # producer holds the GIL (docs/limitations.md): warm it up first.
    assert faulty.predict({"seconds": 0.2})[1]["status"] == "succeeded"
    if failure is None:
        check_cancel_stops_the_work(faulty, inputs)
        return
    if failure == "too short to tell":  # passes, saying what it checked instead
        with pytest.warns(UserWarning, match="too short to tell .* Checked instead"):
            check_cancel_stops_the_work(faulty, inputs)
        return
    # A client starved of CPU (a loaded machine) can see a 0.1 s stream's first output only
    # after it ended: the check then says "too short to tell" and passes. Such a reading shows
    # nothing either way and is made again; the fault must be caught in one of them.
    for _attempt in range(ATTEMPTS):
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            try:
                check_cancel_stops_the_work(faulty, inputs)
            except pytest.fail.Exception as exc:
                if not re.search(failure, str(exc)):
                    raise
                return
        if not any("too short to tell" in str(w.message) for w in seen):
            pytest.fail(f"the cancel check passed work that runs on: {inputs}")
    pytest.fail(f"in {ATTEMPTS} tries the check could not tell the fault apart: {inputs}")


# ── file inputs ───────────────────────────────────────────────────────────────────────────────


def schema_of(server: CogServer) -> dict[str, Any]:
    return dict(json.loads((server.cwd / ".cog" / "openapi_schema.json").read_text()))


def file_inputs(schema: Mapping[str, Any]) -> dict[str, bool]:
    """The predictor's file inputs (`format: uri`), by name: True for a list of files."""
    properties = schema["components"]["schemas"]["Input"].get("properties") or {}
    found = {}
    for name, prop in properties.items():
        if prop.get("format") == "uri":
            found[name] = False
        elif prop.get("type") == "array" and (prop.get("items") or {}).get("format") == "uri":
            found[name] = True
    return found


# Paths of the server that a file input must never read: the system's, the process's own
# environment, and a file of the build context (/src in the image): the predictor's own.
SERVER_PATHS = ("/etc/hostname", "/proc/self/environ", contract.PREDICTOR.partition(":")[0])
REFUSED = "is not a file this server received"  # coglet_inputs' message


def check_server_paths_are_refused(
    server: CogServer, inputs: Mapping[str, Any], files: Mapping[str, bool]
) -> None:
    """Each server path, sent as each file input, is refused (422, or a failed prediction with
    coglet_inputs' message) before the model opens anything."""
    for name, is_list in files.items():
        for path in SERVER_PATHS:
            code, body = server.predict({**inputs, name: [path] if is_list else path})
            status, error = body.get("status") if code == 200 else None, ""
            if code == 200:
                error = str(body.get("error") or "")
            if code == 422 or (status == "failed" and REFUSED in error and name in error):
                continue
            what = (
                "succeeded: the model read it"
                if status == "succeeded"
                else f"reached the model, which tried to open it ({error[:200]!r})"
                if status == "failed"
                else f"got {code} {str(body)[:200]}"
            )
            pytest.fail(
                f"{path!r} sent as the file input {name!r} {what}. A file input must be what "
                f"the server received (a data: URI or an http(s) URL): keep "
                f'`coglet_inputs.install(self)` in setup() (docs/files.md, "File inputs"), '
                f"or declare ALLOWS_SERVER_PATHS = True in {CONTRACT_FILE} if the model is "
                f"meant to read server paths"
            )


def test_a_path_on_the_server_sent_as_a_file_input_is_refused(server: CogServer) -> None:
    files = file_inputs(schema_of(server))
    if not files:
        pytest.skip(f"{contract.PREDICTOR} has no file inputs")
    if ALLOWS_SERVER_PATHS:
        pytest.skip(f"{CONTRACT_FILE} declares ALLOWS_SERVER_PATHS: the model reads them")
    check_server_paths_are_refused(server, contract.short_input(0), files)


@pytest.mark.parametrize("guard", ["1", "0"], ids=["with coglet_inputs", "a naive fork"])
def test_the_server_path_check_fails_a_model_that_reads_them(
    module_cog_servers: CogServers, guard: str
) -> None:
    """tests/predictors/file_inputs.py's StreamingPredictor opens whatever its inputs name
    (tests/predictors/files_contract.py puts it through the whole contract): with coglet_inputs
    the check passes, without it (the naive fork) it fails, naming the input and the fix."""
    probe = module_cog_servers.shared(
        "file_inputs.py:StreamingPredictor", concurrency=4, env={"GUARD": guard}
    )
    inputs = {"images": ["data:text/plain;base64,aGk="]}
    files = {"images": True}
    if guard == "1":
        check_server_paths_are_refused(probe, inputs, files)
        return
    with pytest.raises(pytest.fail.Exception, match="'images' succeeded: the model read it"):
        check_server_paths_are_refused(probe, inputs, files)


class _FileHost:
    """Serves bytes at /<n>/<name> on 127.0.0.1: what a client's file URLs point to."""

    def __init__(self) -> None:
        self.files: dict[str, tuple[str, bytes]] = {}
        host = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                found = host.files.get(self.path)
                if found is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", found[0])
                self.send_header("Content-Length", str(len(found[1])))
                self.end_headers()
                self.wfile.write(found[1])

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = _Receiver(Handler)

    def url_for(self, data_uri: str) -> str:
        """An http URL serving a data URI's bytes, named with its media type's extension."""
        header, _, payload = data_uri.partition(",")
        media_type = header.removeprefix("data:").split(";")[0] or "application/octet-stream"
        data = base64.b64decode(payload) if header.endswith(";base64") else payload.encode()
        ext = mimetypes.guess_extension(media_type) or ".bin"
        path = f"/{len(self.files)}/file{ext}"
        self.files[path] = (media_type, data)
        return f"{self.server.base_url}{path}"


@pytest.fixture(scope="module")
def file_host() -> Iterator[_FileHost]:
    host = _FileHost()
    yield host
    host.server.close()


def test_file_inputs_sent_as_urls_give_what_data_uris_give(
    server: CogServer, file_host: _FileHost
) -> None:
    files = file_inputs(schema_of(server))
    if not files:
        pytest.skip(f"{contract.PREDICTOR} has no file inputs")
    inputs = contract.short_input(3)
    as_urls = dict(inputs)
    for name, value in inputs.items():
        if name in files:
            items = value if isinstance(value, list) else [value]
            urls = [
                file_host.url_for(v) if isinstance(v, str) and v.startswith("data:") else v
                for v in items
            ]
            as_urls[name] = urls if isinstance(value, list) else urls[0]
    if as_urls == inputs:
        pytest.skip(f"short_input(3) sends no file as a data URI ({CONTRACT_FILE})")
    with ThreadPoolExecutor(2) as pool:  # at once too: each download is its own prediction's
        data, urls = pool.map(lambda job: succeeded(server, job), [inputs, as_urls])
    assert fingerprint(urls) == fingerprint(data)
    assert fingerprint(succeeded(server, as_urls)) == fingerprint(data)


# ── inputs nobody wrote ───────────────────────────────────────────────────────────────────────


def test_inputs_generated_from_the_schema_get_answers_a_client_can_live_with_fuzz(
    server: CogServer,
) -> None:
    """Inputs generated from the predictor's own schema for about 30 s (tests/contract_fuzz.py;
    CONTRACT_FUZZ_SECONDS sets it): no 5xx, no 422, outputs matching the schema, failures only
    as ACCEPTABLE_ERRORS allow. A failure prints the seed that replays it."""
    replay = "pytest tests/test_contract.py -k fuzz"
    if CONTRACT_FILE != "tests/contract.py":
        replay = f"CONTRACT={CONTRACT_FILE} {replay}"
    report = contract_fuzz.fuzz_inputs(
        server, acceptable_errors=getattr(contract, "ACCEPTABLE_ERRORS", ()), replay=replay
    )
    report.raise_if_failed()
    wait_until(lambda: server.health()["status"] == "READY", timeout=10, what="every slot free")


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
        files=predictor_files(file_name, REPO_ROOT),  # the predictor it imports, if a probe
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
            assert re.search("injected failure after (2 items|the model ran)", body["error"])
        else:
            assert fingerprint(body) == want
    wait_until(lambda: failing.health()["status"] == "READY", timeout=5, what="a free slot")
    assert succeeded(server, inputs[0])["status"] == "succeeded"
