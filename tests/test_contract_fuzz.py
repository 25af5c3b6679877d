"""tests/contract_fuzz.py: the inputs it generates, the verdict on each answer, the bounded run.

The generator is tested on a real schema (tests/predictors/fuzz_probe.py's, written by
scripts/schema.py as `cog build` would) and on hand-written ones in cog's shapes; the check and
the run on fake servers; the whole on the real Cog server serving the probe, which has one
declared failure and one fault the fuzzer must find.
"""

from __future__ import annotations

import base64
import io
import json
import re
import struct
import subprocess
import sys
import threading
import time
import wave
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import contract_fuzz
import pytest
from cog_server import REPO_ROOT
from conftest import CogServers
from contract_fuzz import (
    ContractFuzzError,
    FuzzFailure,
    FuzzReport,
    InputSource,
    OutputCheck,
    Verdict,
    check_response,
    run_inputs,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.timeout(120)

PROBE = "tests/predictors/fuzz_probe.py:Predictor"
CRASH = "the probe broke on count=4, mode=lower"
DECLARED = ("give 1 to 3 words",)


@pytest.fixture(scope="module")
def probe_schema(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The probe's schema, as `make schema` (and `cog build`) writes it."""
    out = tmp_path_factory.mktemp("schema") / "openapi_schema.json"
    subprocess.run(
        [sys.executable, "scripts/schema.py", PROBE, "-o", str(out)],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
        timeout=60,
    )
    schema: dict[str, Any] = json.loads(out.read_text())
    return schema


def take(source: InputSource, n: int) -> list[dict[str, Any]]:
    inputs = []
    for item in source:
        inputs.append(item)
        if len(inputs) == n:
            break
    return inputs


def cog_schema(properties: dict[str, Any], *, required: list[str] | None = None, **extra: Any):
    """An OpenAPI document shaped as cog writes one (`Input`, `Output`, enum components)."""
    return {
        "openapi": "3.0.2",
        "components": {
            "schemas": {
                "Input": {
                    "title": "Input",
                    "type": "object",
                    "properties": properties,
                    **({"required": required} if required else {}),
                },
                "Output": extra.pop("output", {"title": "Output", "type": "string"}),
                **extra,
            }
        },
    }


def data_uri_bytes(uri: str) -> tuple[str, bytes]:
    match = re.fullmatch(r"data:([\w.+-]+/[\w.+-]+);base64,([A-Za-z0-9+/=]*)", uri)
    assert match, uri
    return match[1], base64.b64decode(match[2], validate=True)


# ── the generator ─────────────────────────────────────────────────────────────────────────────


def test_inputs_from_a_real_schema_respect_its_bounds_choices_and_required_keys(
    probe_schema: dict[str, Any],
) -> None:
    source = InputSource(probe_schema, seed=1)
    inputs = take(source, 150)
    assert len(inputs) == 150
    assert source.discarded == 0
    declared = set(probe_schema["components"]["schemas"]["Input"]["properties"])
    for item in inputs:
        assert set(item) <= declared, item  # no undeclared key
        assert "file" in item, item  # required
        if "count" in item:
            assert isinstance(item["count"], int)
            assert 1 <= item["count"] <= 5, item
        if "mode" in item:
            assert item["mode"] in ("upper", "lower"), item  # choices, via the schema's $ref
        if "words" in item:
            assert all(isinstance(word, str) for word in item["words"]), item
    # the bounds are reached, every choice is made, optional keys come and go
    assert {item.get("count") for item in inputs} >= {None, 1, 5}
    assert {item.get("mode") for item in inputs} == {None, "upper", "lower"}
    assert any(len(item.get("words", [])) > 3 for item in inputs)


def test_a_nullable_optional_input_is_left_out_or_given_a_value_never_null(
    probe_schema: dict[str, Any],
) -> None:
    note = probe_schema["components"]["schemas"]["Input"]["properties"]["note"]
    assert note["nullable"] is True  # what cog writes for `str | None = Input(default=None)`
    inputs = take(InputSource(probe_schema, seed=2), 150)
    assert all(None not in item.values() for item in inputs)
    assert any("note" not in item for item in inputs)
    assert any(isinstance(item.get("note"), str) for item in inputs)


def test_file_inputs_are_small_data_uris_with_a_media_type_from_accept() -> None:
    schema = cog_schema(
        {
            "image": {"type": "string", "format": "uri", "x-cog-accept": "image/*"},
            "audio": {"type": "string", "format": "uri", "x-cog-accept": ".wav"},
            "any": {"type": "string", "format": "uri", "nullable": True, "default": None},
            "frames": {
                "type": "array",
                "items": {"type": "string", "format": "uri"},
                "x-cog-accept": "video/mp4",
            },
        },
        required=["image", "audio"],
    )
    inputs = take(InputSource(schema, seed=3), 80)
    images, sounds = [], []
    for item in inputs:
        media_type, image = data_uri_bytes(item["image"])
        assert media_type == "image/png"
        images.append(image)
        media_type, sound = data_uri_bytes(item["audio"])
        assert media_type in ("audio/wav", "audio/x-wav")
        sounds.append(sound)
        if "any" in item:
            assert data_uri_bytes(item["any"])[0] in contract_fuzz.MEDIA_TYPES
        for frame in item.get("frames", []):
            assert data_uri_bytes(frame)[0] == "video/mp4"
    assert any(item.get("frames") for item in inputs)
    # random bytes, and as often a small valid file where the stdlib can write one
    png = [data for data in images if data.startswith(b"\x89PNG\r\n\x1a\n")]
    assert png
    assert len(png) < len(images)
    assert all(len(data) <= contract_fuzz.FILE_BYTES for data in images if data not in png)
    wav = [data for data in sounds if data.startswith(b"RIFF")]
    assert wav
    for data in wav:
        with wave.open(io.BytesIO(data)) as reader:
            assert reader.getsampwidth() == 2


def test_the_png_writer_writes_what_a_png_reader_reads() -> None:
    data = contract_fuzz.png_bytes(3, 2, bytes(range(18)))
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (3, 2)
    idat = data.index(b"IDAT")
    (length,) = struct.unpack(">I", data[idat - 4 : idat])
    rows = zlib.decompress(data[idat + 4 : idat + 4 + length])
    assert rows == b"\x00" + bytes(range(9)) + b"\x00" + bytes(range(9, 18))


def test_hand_written_cog_shapes_enums_numbers_patterns_and_lists() -> None:
    schema = cog_schema(
        {
            "level": {"allOf": [{"$ref": "#/components/schemas/level"}], "default": 1},
            "ratio": {"type": "number", "minimum": 0.01, "maximum": 1},
            "name": {"type": "string", "maxLength": 8, "pattern": "^[a-z]+$", "default": "x"},
            "tags": {"type": "array", "items": {"type": "string"}, "default": ["a"]},
            "flag": {"type": "boolean", "default": False},
        },
        required=["ratio"],
        level={"title": "level", "enum": [1, 2, 3], "type": "integer"},
    )
    inputs = take(InputSource(schema, seed=4), 100)
    for item in inputs:
        assert 0.01 <= item["ratio"] <= 1, item
        assert item.get("level", 1) in (1, 2, 3), item
        if "name" in item:
            assert re.fullmatch("[a-z]{1,8}", item["name"]), item
        assert isinstance(item.get("flag", False), bool)
    assert {item.get("level") for item in inputs} == {None, 1, 2, 3}


def test_the_same_seed_gives_the_same_inputs_and_another_seed_others(
    probe_schema: dict[str, Any],
) -> None:
    first = take(InputSource(probe_schema, seed=7), 40)
    assert take(InputSource(probe_schema, seed=7), 40) == first
    assert take(InputSource(probe_schema, seed=8), 40) != first


def test_a_small_input_space_is_sent_once_then_the_source_ends() -> None:
    schema = cog_schema(
        {
            "flag": {"type": "boolean", "default": False},
            "mode": {"allOf": [{"$ref": "#/components/schemas/mode"}], "default": "a"},
        },
        mode={"title": "mode", "enum": ["a", "b"], "type": "string"},
    )
    source = InputSource(schema, seed=5, chunk=8)
    inputs = list(source)
    assert source.exhausted
    keys = [json.dumps(item, sort_keys=True) for item in inputs]
    assert len(keys) == len(set(keys)) <= 9  # flag: absent/true/false, mode: absent/a/b


def test_a_predictor_without_inputs_gets_the_empty_input_once() -> None:
    source = InputSource(cog_schema({}), seed=1, chunk=4)
    assert list(source) == [{}]
    assert source.exhausted


def test_the_hypothesis_database_is_off_and_no_example_is_shrunk_or_replayed() -> None:
    assert contract_fuzz.GENERATION_SETTINGS.database is None
    assert tuple(contract_fuzz.GENERATION_SETTINGS.phases) == (contract_fuzz.Phase.generate,)


def test_a_schema_nothing_can_satisfy_is_reported_as_such() -> None:
    schema = cog_schema({"n": {"type": "integer", "minimum": 5, "maximum": 1}}, required=["n"])
    with pytest.raises(ContractFuzzError, match="could not generate inputs from the schema"):
        take(InputSource(schema, seed=1), 1)


def test_media_types_from_accept() -> None:
    assert contract_fuzz.media_types("image/*") == ("image/png",)
    assert contract_fuzz.media_types(".png, .jpg") == ("image/png", "image/jpeg")
    assert contract_fuzz.media_types("audio/flac,application/x-thing") == (
        "audio/flac",
        "application/x-thing",
    )
    assert contract_fuzz.media_types(None) == contract_fuzz.MEDIA_TYPES


# ── the verdict on one answer ─────────────────────────────────────────────────────────────────

ITERATOR_OF_FILES = {
    "title": "Output",
    "type": "array",
    "items": {"type": "string", "format": "uri"},
    "x-cog-array-type": "iterator",
}


def verdict(code: int, body: Any, *, output: Any = None, cancelled: bool = False) -> Verdict:
    schema = cog_schema({}, output=output or ITERATOR_OF_FILES)
    return check_response(
        code,
        body,
        output_problem=OutputCheck(schema),
        acceptable=contract_fuzz.compile_acceptable((r"give 1 to \d+ images",)),
        cancelled=cancelled,
    )


def test_the_check_flags_a_5xx_and_any_status_but_200() -> None:
    v = verdict(500, {"detail": "Internal Server Error"})
    assert v.outcome == "failure"
    assert "answered 500" in v.problem
    assert verdict(409, {"detail": "At capacity"}).outcome == "failure"
    assert verdict(200, "not json").outcome == "failure"


def test_the_check_flags_a_422_for_an_input_the_schema_accepts() -> None:
    detail = [{"loc": ["body", "input", "seed"], "msg": "null is not of type integer"}]
    v = verdict(422, {"detail": detail})
    assert v.outcome == "failure"
    assert v.problem.startswith("422 for an input the schema accepts")
    assert "null is not of type integer" in v.problem


def test_the_check_flags_an_output_that_does_not_match_the_schema() -> None:
    ok = {"status": "succeeded", "output": ["data:image/png;base64,iVBO", "https://x.test/a.png"]}
    assert verdict(200, ok) == Verdict("succeeded")
    v = verdict(200, {"status": "succeeded", "output": ["/tmp/out.png"]})  # a path, not a URI
    assert v.outcome == "failure"
    assert "does not match Output" in v.problem
    assert "0:" in v.problem  # where
    v = verdict(200, {"status": "succeeded", "output": "one string"})
    assert (v.outcome, "not of type" in v.problem) == ("failure", True)


def test_the_output_check_reads_nullable_and_refs_as_openapi_means_them() -> None:
    chunk = {
        "type": "object",
        "properties": {
            "text": {"type": "string"},
            "note": {"type": "string", "nullable": True},
            "kind": {"allOf": [{"$ref": "#/components/schemas/kind"}]},
        },
        "required": ["text"],
    }
    schema = cog_schema(
        {},
        output={"type": "array", "items": chunk, "x-cog-array-type": "iterator"},
        kind={"enum": ["a", "b"], "type": "string"},
    )
    check = OutputCheck(schema)
    assert check([{"text": "x", "note": None, "kind": "a"}]) is None
    problem = check([{"text": "x", "kind": "c"}, {"note": 3}])
    assert problem is not None
    assert "0/kind" in problem
    assert "1" in problem


def test_the_check_flags_an_undeclared_failure_with_its_error_and_passes_a_declared_one() -> None:
    v = verdict(200, {"status": "failed", "error": "ValueError: index -1 is out of bounds"})
    assert v.outcome == "failure"
    assert "does not declare in ACCEPTABLE_ERRORS" in v.problem
    assert "index -1 is out of bounds" in v.problem
    declared = verdict(200, {"status": "failed", "error": "ValueError: give 1 to 16 images"})
    assert declared == Verdict("declared")


def test_a_cancel_is_expected_only_when_the_fuzzer_sent_it() -> None:
    assert verdict(200, {"status": "canceled"}, cancelled=True) == Verdict("cancelled")
    v = verdict(200, {"status": "canceled"})
    assert v.outcome == "failure"
    assert "'canceled'" in v.problem


def test_an_acceptable_error_that_is_not_a_regex_is_named() -> None:
    with pytest.raises(ContractFuzzError, match=r"ACCEPTABLE_ERRORS: '\(unclosed'"):
        contract_fuzz.compile_acceptable(("fine", "(unclosed"))


# ── the report ────────────────────────────────────────────────────────────────────────────────


def test_the_report_names_each_problem_once_with_its_shortest_input_and_how_to_replay() -> None:
    report = FuzzReport(seed=123, budget_s=30, concurrency=4, replay=contract_fuzz.REPLAY)
    report.sent, report.succeeded = 10, 7
    report.failures = [
        FuzzFailure(2, {"prompt": "x" * 1_000_000, "seed": 1}, "failed: boom"),
        FuzzFailure(5, {"seed": 2}, "failed: boom"),
        FuzzFailure(9, {"seed": 3}, "422 for an input the schema accepts: [...]"),
    ]
    text = report.summary()
    assert not report.ok
    assert "seed 123: 10 inputs sent" in text
    assert '- input #5 {"seed": 2}: failed: boom (and 1 more inputs: #2)' in text
    assert "- input #9" in text
    assert "2 distinct problems" in text
    assert text.endswith("replay: CONTRACT_FUZZ_SEED=123 pytest tests/test_contract.py -k fuzz")
    with pytest.raises(ContractFuzzError) as caught:
        report.raise_if_failed()
    assert str(caught.value) == text


def test_the_report_says_when_no_input_got_past_the_declared_errors() -> None:
    report = FuzzReport(seed=1, budget_s=30, concurrency=1, replay=contract_fuzz.REPLAY)
    report.sent, report.declared = 40, 40
    assert report.ok
    assert "no input succeeded" in report.summary()
    report.succeeded = 1
    assert "no input succeeded" not in report.summary()


def test_a_long_input_is_shortened_in_messages() -> None:
    text = contract_fuzz.shorten({"prompt": "x" * 1_000_000, "files": list(range(100))})
    assert "…(1000000 chars)" in text
    assert "…(100 items)" in text
    assert len(text) < 400


def test_seed_and_budget_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(contract_fuzz.ENV_SEED, "42")
    monkeypatch.setenv(contract_fuzz.ENV_BUDGET, "2.5")
    assert contract_fuzz.resolve_seed(None) == 42
    assert contract_fuzz.resolve_seed(7) == 7
    assert contract_fuzz.resolve_budget(None) == 2.5
    monkeypatch.delenv(contract_fuzz.ENV_SEED)
    monkeypatch.delenv(contract_fuzz.ENV_BUDGET)
    assert 0 <= contract_fuzz.resolve_seed(None) < 2**32
    assert contract_fuzz.resolve_budget(None) == contract_fuzz.DEFAULT_BUDGET_S


# ── the run, on a fake server ─────────────────────────────────────────────────────────────────


Answer = Callable[[dict[str, Any], threading.Event], tuple[int, Any]]


class FakeServer:
    """`CogServer.predict`/`cancel` in memory: `answer(input, cancelled)` makes each reply (in
    the caller's pool thread); it may wait on `cancelled`, which `cancel(id)` sets."""

    def __init__(self, answer: Answer, concurrency: int = 2) -> None:
        self.cwd = Path("/nonexistent")
        self.concurrency = concurrency
        self.answer = answer
        self.received: list[dict[str, Any]] = []
        self.cancelled: list[str] = []
        self.cancel_after: dict[str, float] = {}  # seconds from a prediction's start to its cancel
        self.peak = 0
        self._inflight = 0
        self._started: dict[str, float] = {}
        self._events: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def predict(
        self,
        input: Any,
        *,
        id: str | None = None,
        timeout: float = 60.0,
        busy_retry: float = 2.0,
    ) -> tuple[int, Any]:
        assert id is not None
        with self._lock:
            self._inflight += 1
            self.peak = max(self.peak, self._inflight)
            self.received.append(dict(input))
            self._started[id] = time.monotonic()
            event = self._events.setdefault(id, threading.Event())
        try:
            return self.answer(dict(input), event)
        finally:
            with self._lock:
                self._inflight -= 1

    def cancel(self, id: str, *, timeout: float = 10.0) -> tuple[int, Any]:
        with self._lock:
            self.cancelled.append(id)
            self.cancel_after[id] = time.monotonic() - self._started[id]
            event = self._events.setdefault(id, threading.Event())
        event.set()
        return 200, {}


def by_status(inputs: dict[str, Any], cancelled: threading.Event) -> tuple[int, Any]:
    """Replies as each input asks: `{"code": ..., "status": ..., "output": ...}`."""
    if inputs.get("block"):
        assert cancelled.wait(timeout=60), "never cancelled"
        return 200, {"status": "canceled"}
    if inputs.get("raise"):
        raise inputs["raise"]
    body = {k: v for k, v in inputs.items() if k in ("status", "output", "error")}
    return inputs.get("code", 200), body


def simple_check(code: int, body: Any, cancelled: bool) -> Verdict:
    schema = cog_schema({}, output={"type": "string"})
    return check_response(
        code,
        body,
        output_problem=OutputCheck(schema),
        acceptable=[re.compile("^declared")],
        cancelled=cancelled,
    )


def new_report(concurrency: int, budget_s: float = 60.0) -> FuzzReport:
    return FuzzReport(seed=9, budget_s=budget_s, concurrency=concurrency, replay="r")


ANSWERS_OK = {"status": "succeeded", "output": "ok"}
ANSWERS_DECLARED = {"status": "failed", "error": "declared trouble"}


ANSWERS = st.sampled_from(
    [
        ANSWERS_OK,
        {"status": "succeeded", "output": 3},  # not the Output schema's string
        ANSWERS_DECLARED,
        {"status": "failed", "error": "undeclared trouble"},
        {"code": 422, "status": "x"},
        {"code": 500},
    ]
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(answers=st.lists(ANSWERS, max_size=20), concurrency=st.integers(1, 4))
def test_every_input_is_sent_once_judged_once_and_no_thread_outlives_the_run(
    answers: list[dict[str, Any]], concurrency: int
) -> None:
    inputs = [{"n": i, **answer} for i, answer in enumerate(answers)]
    server = FakeServer(by_status, concurrency)
    report = run_inputs(server, iter(inputs), simple_check, new_report(concurrency))
    assert contract_fuzz.fuzz_threads() == []
    assert sorted(item["n"] for item in server.received) == list(range(len(inputs)))
    assert server.peak <= concurrency
    bad = [i for i, a in enumerate(answers) if a not in (ANSWERS_OK, ANSWERS_DECLARED)]
    assert [failure.index for failure in report.failures] == bad  # sorted by index
    assert all(failure.inputs == inputs[failure.index] for failure in report.failures)
    assert report.succeeded == answers.count(ANSWERS_OK)
    assert report.declared == answers.count(ANSWERS_DECLARED)
    assert report.sent == len(inputs)
    assert report.cancelled == 0


def endless(first: list[dict[str, Any]], then: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield from first
    while True:
        yield then


def test_past_the_deadline_running_predictions_are_cancelled_once_settled() -> None:
    server = FakeServer(by_status, concurrency=2)
    inputs = endless([ANSWERS_OK], {"block": True})
    report = run_inputs(
        server, inputs, simple_check, new_report(2, budget_s=0.05), min_examples=1, settle_s=0.2
    )
    assert report.ok, report.summary()
    assert report.succeeded == 1
    assert report.cancelled == report.sent - 1 >= 1
    assert len(server.cancelled) == report.cancelled
    # never at its start (coglet 0.23.1 can lose a prediction cancelled as it starts)
    # (the fake starts its clock a little after the fuzzer, on a pool thread: half the wait)
    assert all(server.cancel_after[id_] >= 0.1 for id_ in server.cancelled)
    assert contract_fuzz.fuzz_threads() == []


def test_a_spent_budget_still_checks_a_handful_of_inputs() -> None:
    server = FakeServer(by_status, concurrency=1)
    report = run_inputs(
        server, endless([], ANSWERS_OK), simple_check, new_report(1, budget_s=0), min_examples=3
    )
    assert (report.sent, report.succeeded, report.cancelled) == (3, 3, 0)


def test_a_server_that_stops_answering_stops_the_sending_and_names_the_input() -> None:
    server = FakeServer(by_status, concurrency=1)
    gone = {"raise": ConnectionRefusedError(111, "Connection refused")}
    inputs = endless([ANSWERS_OK, ANSWERS_OK, gone], ANSWERS_OK)
    report = run_inputs(server, inputs, simple_check, new_report(1))
    assert report.sent == 3
    assert [f.index for f in report.failures] == [2]
    assert "no answer: ConnectionRefusedError" in report.failures[0].problem
    assert report.stopped == "the server stopped answering at input #2"


def test_no_answer_in_time_fails_that_input_and_the_run_goes_on() -> None:
    server = FakeServer(by_status, concurrency=1)
    late = {"raise": RuntimeError("POST /predictions: no answer within 180s\n--- server log")}
    report = run_inputs(server, iter([late, ANSWERS_OK]), simple_check, new_report(1))
    assert report.succeeded == 1
    assert report.failures[0].problem == "no answer: POST /predictions: no answer within 180s"


def test_an_error_in_the_callers_thread_cancels_what_runs_and_ends_every_thread() -> None:
    server = FakeServer(by_status, concurrency=2)

    def exploding_check(code: int, body: Any, cancelled: bool) -> Verdict:
        raise KeyError("the check broke")

    inputs = endless([ANSWERS_OK], {"block": True})
    with pytest.raises(KeyError, match="the check broke"):
        run_inputs(server, inputs, exploding_check, new_report(2), settle_s=0.05)
    assert server.cancelled  # the blocked prediction was cancelled, so its call returned
    assert contract_fuzz.fuzz_threads() == []


def test_fuzz_inputs_on_a_fake_server_prints_its_seed_and_reports(
    capsys: pytest.CaptureFixture[str],
) -> None:
    schema = cog_schema(
        {"n": {"type": "integer", "minimum": 1, "maximum": 3, "default": 1}},
        output={"type": "array", "items": {"type": "string"}, "x-cog-array-type": "iterator"},
    )

    def answer(inputs: dict[str, Any], cancelled: threading.Event) -> tuple[int, Any]:
        if inputs.get("n") == 3:
            return 200, {"status": "failed", "error": "n=3 is not supported"}
        return 200, {"status": "succeeded", "output": ["x"] * inputs.get("n", 1)}

    server = FakeServer(answer, concurrency=2)
    report = contract_fuzz.fuzz_inputs(server, schema, (r"not supported",), budget_s=5, seed=11)
    assert report.ok, report.summary()
    assert report.exhausted  # four distinct inputs: n absent, 1, 2, 3
    assert (report.succeeded, report.declared) == (3, 1)
    assert "contract fuzz: seed 11, budget 5s, up to 2 at once" in capsys.readouterr().out
    undeclared = contract_fuzz.fuzz_inputs(server, schema, (), budget_s=5, seed=11)
    assert [failure.inputs for failure in undeclared.failures] == [{"n": 3}]
    with pytest.raises(ContractFuzzError, match="CONTRACT_FUZZ_SEED=11 pytest"):
        undeclared.raise_if_failed()


# ── the real server ───────────────────────────────────────────────────────────────────────────


@pytest.mark.server
def test_on_the_real_server_the_fuzzer_finds_the_probes_fault_and_only_it(
    probe_schema: dict[str, Any], cog_servers: CogServers
) -> None:
    # How far along seed 1's sequence the first crash and the first declared failure come:
    # the run checks at least that many inputs, however slow the machine.
    sequence = take(InputSource(probe_schema, seed=1), 400)
    words_ok = [1 <= len(x.get("words", ["probe"])) <= 3 for x in sequence]
    crash = next(
        i
        for i, x in enumerate(sequence)
        if (x.get("count"), x.get("mode"), words_ok[i]) == (4, "lower", True)
    )
    many = words_ok.index(False)
    server = cog_servers.start("fuzz_probe.py:Predictor", concurrency=4)
    report = contract_fuzz.fuzz_inputs(
        server, None, DECLARED, budget_s=3, seed=1, min_examples=max(crash, many) + 1
    )
    assert server.health()["status"] == "READY"
    assert report.failures, report.summary()
    assert report.sent > max(crash, many)
    assert report.declared >= 1
    assert report.succeeded >= 1
    for failure in report.failures:  # the fault, and nothing else (no 422, no 5xx, no output)
        assert (failure.inputs.get("count"), failure.inputs.get("mode")) == (4, "lower")
        assert CRASH in failure.problem
        assert "does not declare in ACCEPTABLE_ERRORS" in failure.problem
    assert crash in [failure.index for failure in report.failures]
