"""Schema fuzzing: inputs generated from the predictor's own schema, checked on the real server.

The contract tests send the inputs a fork wrote into tests/contract.py; this module sends the
ones nobody wrote. It reads the schema the server serves (`<cwd>/.cog/openapi_schema.json`,
`components.schemas.Input`), generates inputs the schema accepts — property-based, with
schemathesis' JSON Schema generator on Hypothesis — and sends each to the server, up to the
predictor's concurrency at once, for a bounded time (`fuzz_inputs`). Every answer must be one a
client can live with:

- no 5xx, no other status than 200 (a 422 for an input the schema accepts is a failure);
- a 200's `status` is `succeeded` or `failed`;
- a succeeded prediction's `output` matches `components.schemas.Output`;
- a failed one failed with an error the contract file declares in `ACCEPTABLE_ERRORS` (regexes
  searched in the error text: what the schema cannot say, such as "give 1 to 16 images").

How the schema is read (OpenAPI 3.0, as cog writes it, against JSON Schema, as coglet checks it):

- coglet validates an input with a JSON Schema validator (the Rust `jsonschema` crate) on
  `Input` with its `$ref`s inlined, and that validator ignores OpenAPI's `nullable: true`
  (replicate/cog `crates/coglet/src/input_validation.rs`, `InputValidator`): an explicit `null`
  for an optional input gets 422. So no `null` is generated for one; an optional input is left
  out instead, as any key not in `required` may be. Keys the schema does not declare are never
  sent (coglet drops them unread: `strip_unknown`).
- `format: uri` strings (`Path`/`File` inputs) are sent as small `data:` URIs with a plausible
  media type (from the input's `accept=`, `x-cog-accept`, when it names one): random bytes, or
  as often a small valid file where the stdlib can write one (PNG, WAV, text, JSON). coglet
  downloads `http(s)://` and `data:` values and nothing else (replicate/cog
  `crates/coglet-python/src/input.rs`, `coerce_typed_inputs`). Never a local path. Random bytes
  are not a valid image: a predictor that decodes its files declares that error acceptable.
- Before it is sent, every generated input is checked with `jsonschema_rs` (Python bindings of
  the validator coglet uses) against the schema coglet builds; one it rejects is a fault of the
  generator, not of the server: it is not sent and the report counts it.
- Outputs are checked against `Output` with `nullable: true` read as OpenAPI means it (null
  allowed) and `format: uri` checked (a `data:` URI or the URL coglet uploaded a file to).

Reproducible: one seed (printed, `CONTRACT_FUZZ_SEED` to replay) fixes the sequence of inputs;
how far along it a run gets depends on the server's speed, so a failure names its input too.
Nothing is shrunk (each example costs a prediction, and the budget is wall time); the report
shows each distinct problem once, with the shortest input that had it. Predictions still
running at the deadline are cancelled, not checked (`run_inputs`, `CANCEL_SETTLE_S`).
"""

from __future__ import annotations

import base64
import contextlib
import copy
import http.client
import io
import json
import mimetypes
import os
import random
import re
import struct
import threading
import time
import uuid
import wave
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from hypothesis import HealthCheck, Phase, Verbosity, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

Json = Any

ENV_SEED = "CONTRACT_FUZZ_SEED"  # replay a run: the seed its failure printed
ENV_BUDGET = "CONTRACT_FUZZ_SECONDS"  # a longer (or shorter) run than DEFAULT_BUDGET_S
DEFAULT_BUDGET_S = 30.0
MIN_EXAMPLES = 5  # checked even when they take longer than the budget
REPLAY = "pytest tests/test_contract.py -k fuzz"
CHUNK = 32  # inputs generated at a time (one Hypothesis run), as the sending needs them
EXHAUSTED_AFTER = 3  # chunks in a row with no input not sent before: the input space is spent
# Past the deadline a prediction is cancelled once it has been in flight this long, never at its
# start: coglet 0.23.1 can lose a prediction whose cancel lands while its file inputs are being
# prepared. The cancel (`PyThreadState_SetAsyncExc`, replicate/cog
# `crates/coglet-python/src/cancel.rs`) can hit a thread of the pool that
# `download_url_paths_into_dict` (`crates/coglet-python/src/input.rs`) waits on without a
# timeout; the thread dies (the server's log: "Exception ignored in thread ... ThreadPoolExecutor
# ... coglet.CancelationException"), the request is never answered and its slot stays taken.
# Measured with tests/predictors/fuzz_probe.py: in each of 4 runs, 2 of the first 3 to 6 cancels
# sent right after a start hung; none in 100 tries each for predictors without a file input.
CANCEL_SETTLE_S = 1.0

# Media types for a file input whose `accept=` names none.
MEDIA_TYPES = (
    "application/octet-stream",
    "text/plain",
    "image/png",
    "image/jpeg",
    "audio/wav",
    "video/mp4",
    "application/json",
)
_FAMILY = {"image": "png", "audio": "wav", "video": "mp4", "text": "plain"}
FILE_BYTES = 64  # random payloads up to this size; valid PNGs (16 x 16 at most), WAVs up to ~2 KB

Outcome = Literal["succeeded", "declared", "cancelled", "failure"]


class ContractFuzzError(AssertionError):
    """Schema fuzzing found inputs the server mishandled, or could not generate any input."""


class PredictionServer(Protocol):
    """What the fuzzer needs of a server: scripts/cog_server.py's `CogServer` has it."""

    cwd: Path
    concurrency: int

    def predict(
        self,
        input: Mapping[str, Json],
        *,
        id: str | None = ...,
        timeout: float = ...,
        busy_retry: float = ...,
    ) -> tuple[int, Json]: ...

    def cancel(self, id: str, *, timeout: float = ...) -> tuple[int, Json]: ...


# ── the schema ────────────────────────────────────────────────────────────────────────────────


def load_schema(server: PredictionServer) -> dict[str, Json]:
    """The OpenAPI document the server validates with: `<server.cwd>/.cog/openapi_schema.json`."""
    schema: dict[str, Json] = json.loads((server.cwd / ".cog" / "openapi_schema.json").read_text())
    return schema


def _components(openapi: Mapping[str, Json]) -> Mapping[str, Json]:
    schemas: Mapping[str, Json] = openapi.get("components", {}).get("schemas", {})
    return schemas


def inline_refs(value: Json, schemas: Mapping[str, Json]) -> Json:
    """`value` with every `{"$ref": "#/components/schemas/X"}` replaced by a copy of `X`, as
    coglet inlines them before it compiles its validator (`input_validation.rs`, `inline_refs`;
    cog writes `choices=` as such a reference, inside an `allOf`)."""
    if isinstance(value, dict):
        ref = value.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
            name = ref.rpartition("/")[2]
            if name in schemas:
                return inline_refs(copy.deepcopy(schemas[name]), schemas)
        return {key: inline_refs(item, schemas) for key, item in value.items()}
    if isinstance(value, list):
        return [inline_refs(item, schemas) for item in value]
    return value


def coglet_input_schema(openapi: Mapping[str, Json]) -> dict[str, Json]:
    """`Input` as coglet validates it: references inlined, `nullable` and formats not read."""
    schemas = _components(openapi)
    if "Input" not in schemas:
        raise ContractFuzzError("the schema has no components.schemas.Input to generate from")
    resolved: dict[str, Json] = inline_refs(schemas["Input"], schemas)
    return resolved


def _file_format(accept: str | None) -> str:
    return "cog-file" if not accept else f"cog-file {accept}"


def _for_generation(node: Json, accept: str | None, formats: dict[str, str | None]) -> Json:
    if isinstance(node, list):
        return [_for_generation(item, accept, formats) for item in node]
    if not isinstance(node, dict):
        return node
    accept = node.get("x-cog-accept", accept)
    out: dict[str, Json] = {}
    for key, value in node.items():
        if key == "nullable" or (key == "default" and value is None):
            continue  # no null: coglet's validator ignores `nullable` (422)
        if key == "format" and value == "uri":
            name = _file_format(accept)
            formats[name] = accept
            out[key] = name
            continue
        out[key] = _for_generation(value, accept, formats)
    return out


def media_types(accept: str | None) -> tuple[str, ...]:
    """Plausible media types for a file input's `accept=` (`"image/*"`, `".png,.jpg"`, ...)."""
    found: list[str] = []
    for token in (accept or "").split(","):
        token = token.strip().lower()
        if token.startswith("."):
            guessed = mimetypes.guess_type(f"file{token}")[0]
            if guessed:
                found.append(guessed)
        elif token.endswith("/*"):
            family = token[:-2]
            found.append(f"{family}/{_FAMILY.get(family, 'octet-stream')}")
        elif "/" in token:
            found.append(token)
    return tuple(dict.fromkeys(found)) or MEDIA_TYPES


def png_bytes(width: int, height: int, rgb: bytes) -> bytes:
    """A valid 8-bit RGB PNG of `width` x `height` from `rgb` (3 bytes a pixel), stdlib only."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(tag + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", crc)

    row = 3 * width
    raw = b"".join(b"\x00" + rgb[y * row : (y + 1) * row] for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def wav_bytes(rate: int, samples: bytes) -> bytes:
    """A valid 16-bit mono WAV of `samples` (2 bytes each) at `rate` Hz."""
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(samples[: len(samples) // 2 * 2])
    return out.getvalue()


def _valid_file(media_type: str) -> st.SearchStrategy[bytes] | None:
    """Small files a decoder of `media_type` reads, where the stdlib can write one."""
    if media_type == "image/png":
        sizes = st.tuples(st.integers(1, 16), st.integers(1, 16))
        return sizes.flatmap(
            lambda wh: st.binary(min_size=3 * wh[0] * wh[1], max_size=3 * wh[0] * wh[1]).map(
                lambda rgb: png_bytes(wh[0], wh[1], rgb)
            )
        )
    if media_type in ("audio/wav", "audio/x-wav", "audio/wave"):
        rates = st.sampled_from((8000, 16000, 22050, 44100))
        return st.builds(wav_bytes, rates, st.binary(max_size=2 * 800))
    if media_type.startswith("text/"):
        return st.text(max_size=FILE_BYTES).map(lambda text: text.encode())
    if media_type == "application/json":
        values = st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=8),
            lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
            max_leaves=5,
        )
        return values.map(lambda value: json.dumps(value).encode())
    return None


def _file_of(media_type: str) -> st.SearchStrategy[str]:
    random_bytes = st.binary(max_size=FILE_BYTES)
    valid = _valid_file(media_type)
    data = random_bytes if valid is None else st.one_of(valid, random_bytes)
    return data.map(
        lambda payload: f"data:{media_type};base64,{base64.b64encode(payload).decode()}"
    )


def data_uris(accept: str | None = None) -> st.SearchStrategy[str]:
    """Small `data:` URIs with a media type from `accept`: random bytes (up to `FILE_BYTES`),
    or, for the types the stdlib can write (PNG, WAV, text, JSON), a small valid file as often,
    so that a model that decodes its input gets past the decoding too."""
    return st.sampled_from(media_types(accept)).flatmap(_file_of)


def input_strategy(openapi: Mapping[str, Json]) -> st.SearchStrategy[dict[str, Json]]:
    """Inputs `Input` accepts, as coglet reads it: no `null`, no undeclared key, files as data
    URIs. schemathesis generates the object (its positive mode: valid values only) from a
    one-operation OpenAPI document whose request body is the prepared `Input`."""
    import schemathesis  # lazily: only a fuzzing run needs it (gpu_check collects tests/ bare)
    from schemathesis import GenerationMode

    formats: dict[str, str | None] = {}
    prepared: dict[str, Json] = _for_generation(coglet_input_schema(openapi), None, formats)
    prepared["additionalProperties"] = False
    for name, accept in formats.items():
        schemathesis.openapi.format(name, data_uris(accept))
    document = {
        "openapi": "3.0.3",
        "info": {"title": "predictor input", "version": "1"},
        "paths": {
            "/input": {
                "post": {
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/Input"}}
                        },
                    },
                    "responses": {"200": {"description": "the prediction"}},
                }
            }
        },
        "components": {"schemas": {"Input": prepared}},
    }
    operation = schemathesis.openapi.from_dict(document)["/input"]["POST"]
    cases = operation.as_strategy(generation_mode=GenerationMode.POSITIVE)
    return cases.map(_body)


def _body(case: Any) -> dict[str, Json]:
    body = case.body
    assert isinstance(body, dict), body  # the request body of an object schema
    return body


GENERATION_SETTINGS = settings(
    # No example database: nothing is saved or replayed between runs (Hypothesis still caches
    # its unicode tables under .hypothesis/, git-ignored, as for every property test here).
    database=None,
    deadline=None,
    phases=(Phase.generate,),  # no replay of old failures, no shrinking: values only
    verbosity=Verbosity.quiet,
    # The body only collects values; what is slow or large is the schema's (a 64 KiB string).
    suppress_health_check=(
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ),
)


def generate(strategy: st.SearchStrategy[Json], *, seed: int, count: int) -> list[Json]:
    """Up to `count` values of `strategy`, the same list for the same seed (one Hypothesis run
    of the generate phase; its first values are the simplest, then random ones)."""
    values: list[Json] = []

    @hypothesis_seed(seed)
    @settings(GENERATION_SETTINGS, max_examples=count)
    @given(strategy)
    def collect(value: Json) -> None:
        values.append(value)

    try:
        collect()
    except Exception as exc:  # an unsatisfiable schema, one schemathesis cannot read
        raise ContractFuzzError(
            f"could not generate inputs from the schema: {type(exc).__name__}: {exc}"
        ) from exc
    return values


class InputSource:
    """The distinct inputs of one seed, generated `CHUNK` at a time as they are asked for.

    Iterated by one thread. Chunk `k` is generated with a seed derived from (`seed`, `k`), so the
    sequence is the same for the same seed, schema and library versions. An input `Input`
    rejects (as coglet's validator reads it) is not yielded: `discarded` counts them and
    `first_discarded` keeps one. Iteration ends when `EXHAUSTED_AFTER` chunks in a row brought
    nothing new (`exhausted`: a small input space, e.g. only choices and booleans, all sent).
    """

    def __init__(self, openapi: Mapping[str, Json], seed: int, *, chunk: int = CHUNK) -> None:
        import jsonschema_rs  # lazily, as schemathesis

        self.seed = seed
        self.chunk = chunk
        self.discarded = 0
        self.first_discarded: tuple[dict[str, Json], str] | None = None
        self.exhausted = False
        self._strategy = input_strategy(openapi)
        self._validator = jsonschema_rs.validator_for(coglet_input_schema(openapi))

    def problem(self, inputs: Mapping[str, Json]) -> str | None:
        """Why coglet's validator would reject `inputs`, or None."""
        for error in self._validator.iter_errors(dict(inputs)):
            where = "/".join(str(part) for part in error.instance_path) or "input"
            return f"{where}: {shorten(error.message, 200)}"
        return None

    def chunk_seed(self, k: int) -> int:
        return random.Random(f"{self.seed}/{k}").randrange(2**32)

    def __iter__(self) -> Iterator[dict[str, Json]]:
        seen: set[str] = set()
        barren = 0
        k = 0
        while barren < EXHAUSTED_AFTER:
            fresh = 0
            for inputs in generate(self._strategy, seed=self.chunk_seed(k), count=self.chunk):
                key = json.dumps(inputs, sort_keys=True)
                if key in seen:
                    continue
                seen.add(key)
                fresh += 1
                problem = self.problem(inputs)
                if problem is not None:
                    self.discarded += 1
                    self.first_discarded = self.first_discarded or (inputs, problem)
                    continue
                yield inputs
            barren = 0 if fresh else barren + 1
            k += 1
        self.exhausted = True


# ── the check of one answer ───────────────────────────────────────────────────────────────────


def _openapi_to_json_schema(node: Json) -> Json:
    """OpenAPI 3.0's `nullable: true` as JSON Schema says it: the schema, or null."""
    if isinstance(node, list):
        return [_openapi_to_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _openapi_to_json_schema(value) for key, value in node.items() if key != "nullable"}
    if node.get("nullable") is True:
        return {"anyOf": [out, {"type": "null"}]}
    return out


class OutputCheck:
    """Whether an output matches `components.schemas.Output` (None: it does; else why not).

    `x-cog-array-type: iterator` outputs are arrays of their items by then (coglet collects
    them); `format: uri` is checked, so a file output must be a URI (`data:` or the URL coglet
    uploaded it to), never a local path. No `Output` in the schema: any output passes.
    """

    def __init__(self, openapi: Mapping[str, Json]) -> None:
        import jsonschema_rs

        schemas = _components(openapi)
        self.schema: Json = _openapi_to_json_schema(inline_refs(schemas.get("Output", {}), schemas))
        self._validator = jsonschema_rs.validator_for(self.schema, validate_formats=True)

    def __call__(self, output: Json) -> str | None:
        problems = [
            f"{'/'.join(str(p) for p in error.instance_path) or 'output'}: "
            f"{shorten(error.message, 200)}"
            for error in self._validator.iter_errors(output)
        ]
        if not problems:
            return None
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        return "; ".join(problems[:3]) + more


@dataclass(frozen=True)
class Verdict:
    """What one answer says: `succeeded`, `declared` (failed as the contract allows),
    `cancelled` (by the fuzzer at its deadline: not checked), or `failure` (`problem` says why).
    """

    outcome: Outcome
    problem: str = ""


def compile_acceptable(patterns: Sequence[str | re.Pattern[str]]) -> list[re.Pattern[str]]:
    """The contract's `ACCEPTABLE_ERRORS` compiled; a pattern that does not compile is named."""
    compiled = []
    for pattern in patterns:
        try:
            compiled.append(re.compile(pattern))
        except re.error as exc:
            raise ContractFuzzError(
                f"ACCEPTABLE_ERRORS: {pattern!r} is not a regex: {exc}"
            ) from exc
    return compiled


def check_response(
    code: int,
    body: Json,
    *,
    output_problem: Callable[[Json], str | None],
    acceptable: Sequence[re.Pattern[str]],
    cancelled: bool = False,
) -> Verdict:
    """The verdict on the answer `(code, body)` to an input the schema accepts.

    `cancelled`: the fuzzer cancelled this prediction itself (at its deadline), so a
    `canceled` or `failed` status is what it asked for; only an output is still checked.
    """
    if code >= 500:
        return Verdict("failure", f"the server answered {code}: {shorten(body, 300)}")
    if code == 422:
        detail = body.get("detail") if isinstance(body, dict) else body
        return Verdict(
            "failure",
            f"422 for an input the schema accepts (coglet's validation): {shorten(detail, 300)}",
        )
    if code != 200:
        return Verdict("failure", f"the server answered {code}: {shorten(body, 300)}")
    if not isinstance(body, dict):
        return Verdict("failure", f"a 200 whose body is not a prediction: {shorten(body, 300)}")
    status = body.get("status")
    if cancelled and status in ("canceled", "failed"):
        # coglet 0.23 reports a cancel that lands while the input is prepared (files fetched)
        # as a failure, "Input validation error: " (replicate/cog
        # `crates/coglet-python/src/predictor.rs`: `prepare_input`'s errors are `InvalidInput`)
        return Verdict("cancelled")
    if status == "succeeded":
        problem = output_problem(body.get("output"))
        if problem is None:
            return Verdict("succeeded")
        return Verdict("failure", f"succeeded, but its output does not match Output: {problem}")
    if status == "failed":
        error = str(body.get("error") or "")
        if any(pattern.search(error) for pattern in acceptable):
            return Verdict("declared")
        return Verdict(
            "failure",
            f"failed with an error the contract does not declare in ACCEPTABLE_ERRORS: "
            f"{shorten(error, 500)}",
        )
    return Verdict("failure", f"a 200 with status {status!r}, not succeeded or failed")


# ── the report ────────────────────────────────────────────────────────────────────────────────


def shorten(value: Json, limit: int = 80) -> str:
    """`value` as JSON, each long string cut to its start and length, each long list to its first
    items and count, the whole to about `limit` characters (2 to 3 times more for a dict)."""

    def cut(item: Json) -> Json:
        if isinstance(item, str) and len(item) > limit:
            return f"{item[: limit // 2]}…({len(item)} chars)"
        if isinstance(item, list):
            head = [cut(x) for x in item[:8]]
            return head + ([f"…({len(item)} items)"] if len(item) > 8 else [])
        if isinstance(item, dict):
            return {key: cut(x) for key, x in item.items()}
        return item

    if isinstance(value, str):
        text = cut(value)
        return text if isinstance(text, str) else str(text)
    text = json.dumps(cut(value), ensure_ascii=False, default=str)
    return text if len(text) <= 3 * limit else f"{text[: 3 * limit]}…"


@dataclass(frozen=True)
class FuzzFailure:
    """One input the server mishandled: its place in the seed's sequence, the input, why."""

    index: int
    inputs: dict[str, Json]
    problem: str

    def describe(self) -> str:
        return f"input #{self.index} {shorten(self.inputs)}: {self.problem}"


@dataclass
class FuzzReport:
    """What a run sent and what came back. `ok`: no failure. `raise_if_failed()` for a test."""

    seed: int
    budget_s: float
    concurrency: int
    replay: str
    seconds: float = 0.0
    sent: int = 0
    succeeded: int = 0
    declared: int = 0  # failed with an error the contract declares acceptable
    cancelled: int = 0  # still running at the deadline: cancelled, not checked
    discarded: int = 0  # generated, but the schema coglet validates with rejects it: not sent
    first_discarded: tuple[dict[str, Json], str] | None = None
    exhausted: bool = False  # every distinct input the generator could find was sent
    stopped: str = ""  # why sending stopped before the deadline (the server stopped answering)
    failures: list[FuzzFailure] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def checked(self) -> int:
        return self.succeeded + self.declared + len(self.failures)

    def summary(self) -> str:
        groups: dict[str, list[FuzzFailure]] = {}
        for failure in self.failures:  # one line per problem, with its shortest input
            groups.setdefault(failure.problem, []).append(failure)
        lines = [
            f"contract fuzz, seed {self.seed}: {self.sent} inputs sent in {self.seconds:.1f}s "
            f"(budget {self.budget_s:g}s, up to {self.concurrency} at once): {self.succeeded} "
            f"succeeded, {self.declared} failed as ACCEPTABLE_ERRORS allow, {self.cancelled} "
            f"cancelled at the deadline, {len(self.failures)} mishandled"
            + (f" ({len(groups)} distinct problems)" if len(groups) > 1 else "")
            + (" (every distinct input generated was sent)" if self.exhausted else "")
        ]
        if self.stopped:
            lines.append(f"sending stopped early: {self.stopped}")
        if self.declared and not self.succeeded:
            lines.append(
                "no input succeeded: every prediction failed (most as ACCEPTABLE_ERRORS allow), "
                "so nothing past those checks was tested; are they broader than the model's "
                "real limits?"
            )
        if self.discarded and self.first_discarded is not None:
            inputs, problem = self.first_discarded
            lines.append(
                f"{self.discarded} generated inputs were not sent, the schema rejects them "
                f"(a generator fault), e.g. {shorten(inputs)}: {problem}"
            )
        for group in list(groups.values())[:10]:
            example = min(group, key=lambda failure: len(shorten(failure.inputs)))
            others = [f"#{failure.index}" for failure in group if failure is not example]
            also = ", ".join(others[:5]) + (", …" if len(others) > 5 else "")
            lines.append(
                f"- {example.describe()}"
                + (f" (and {len(others)} more inputs: {also})" if others else "")
            )
        if len(groups) > 10:
            lines.append(f"- … and {len(groups) - 10} more problems")
        if self.failures:
            lines.append(f"replay: {ENV_SEED}={self.seed} {self.replay}")
        return "\n".join(lines)

    def raise_if_failed(self) -> None:
        if self.failures:
            raise ContractFuzzError(self.summary())


# ── the run ───────────────────────────────────────────────────────────────────────────────────


def resolve_seed(seed: int | None) -> int:
    """`seed`, else `$CONTRACT_FUZZ_SEED`, else a fresh random one."""
    if seed is not None:
        return seed
    text = os.environ.get(ENV_SEED, "").strip()
    return int(text) if text else random.SystemRandom().randrange(2**32)


def resolve_budget(budget_s: float | None) -> float:
    """`budget_s`, else `$CONTRACT_FUZZ_SECONDS`, else `DEFAULT_BUDGET_S`."""
    if budget_s is not None:
        return budget_s
    text = os.environ.get(ENV_BUDGET, "").strip()
    return float(text) if text else DEFAULT_BUDGET_S


@dataclass
class _Sent:
    index: int
    inputs: dict[str, Json]
    id: str
    at: float  # time.monotonic() when it was sent (a pool thread may start it late)
    cancelled: bool = False


def _predict(server: PredictionServer, sent: _Sent, timeout_s: float) -> tuple[int, Json]:
    """On a pool thread: the request, its clock started as it goes out (for `settle_s`)."""
    sent.at = time.monotonic()
    return server.predict(sent.inputs, id=sent.id, timeout=timeout_s, busy_retry=10.0)


def run_inputs(
    server: PredictionServer,
    inputs: Iterator[dict[str, Json]],
    check: Callable[[int, Json, bool], Verdict],
    report: FuzzReport,
    *,
    min_examples: int = MIN_EXAMPLES,
    timeout_s: float = 180.0,
    settle_s: float = CANCEL_SETTLE_S,
) -> FuzzReport:
    """Send `inputs` to `server`, `report.concurrency` at a time, until `report.budget_s` is
    spent; `check(code, body, cancelled)` judges each answer into `report`.

    Threads: the caller's thread draws the inputs (generation runs there), submits them, waits
    for answers, judges them and cancels; a pool of `report.concurrency` threads, named
    `contract-fuzz-N`, only makes the blocking `server.predict` calls.

    Ordering: inputs are drawn and sent in the iterator's order (index 0, 1, ...); answers are
    judged as they come; `report.failures` ends sorted by index.

    Backpressure: at most `report.concurrency` predictions are in flight; the next input is
    drawn only when one of them has answered, so generation never runs ahead of the server.

    Bounds: no input is sent after the deadline (`budget_s` from the start) once
    `min_examples` answers have been judged; until then sending goes on past it. Past the
    deadline the predictions still running are cancelled (`POST /predictions/{id}/cancel`),
    unless their answers are needed to reach `min_examples`, each once it has been in flight
    `settle_s` (see `CANCEL_SETTLE_S`); a cancelled one counts as `cancelled`, not checked,
    unless it succeeded first. Each call waits at most `timeout_s` for its answer.

    Cancellation: an exception in the caller's thread (KeyboardInterrupt, a failing `check`)
    cancels every prediction in flight (each once settled), waits for their calls to return,
    and propagates.

    Errors: an answer that is not a verdict's business — no answer within `timeout_s`, a
    connection refused or reset — is a failure of its input; a refused or reset connection
    (the server died) stops the sending, and `report.stopped` says after which input.

    Close: returns (or raises) only once every pool thread has ended; nothing outlives the call.
    """
    start = time.monotonic()
    deadline = start + report.budget_s
    prefix = f"fuzz-{report.seed}-{uuid.uuid4().hex[:6]}"
    inflight: dict[Future[tuple[int, Json]], _Sent] = {}
    draw = iter(inputs)
    sending = True

    def cancel_settled() -> float | None:
        """Cancel each prediction in flight for `settle_s` or more; seconds until the next one
        settles (None: none left to cancel)."""
        now = time.monotonic()
        waits = []
        for future, sent in inflight.items():
            if sent.cancelled or future.done():
                continue
            if now - sent.at < settle_s:
                waits.append(sent.at + settle_s - now)
                continue
            sent.cancelled = True
            # the server gone or slow to answer: the prediction's own call ends by timeout_s
            with contextlib.suppress(OSError, http.client.HTTPException, RuntimeError):
                server.cancel(sent.id)
        return min(waits) if waits else None

    def judge(future: Future[tuple[int, Json]], sent: _Sent) -> None:
        nonlocal sending
        try:
            code, body = future.result()
        except (OSError, http.client.HTTPException) as exc:  # the server died or hung up
            report.failures.append(
                FuzzFailure(sent.index, sent.inputs, f"no answer: {type(exc).__name__}: {exc}")
            )
            sending = False
            report.stopped = (
                report.stopped or f"the server stopped answering at input #{sent.index}"
            )
            return
        except RuntimeError as exc:  # CogServerError: no answer within timeout_s
            first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            report.failures.append(
                FuzzFailure(sent.index, sent.inputs, f"no answer: {shorten(first_line, 300)}")
            )
            return
        verdict = check(code, body, sent.cancelled)
        if verdict.outcome == "succeeded":
            report.succeeded += 1
        elif verdict.outcome == "declared":
            report.declared += 1
        elif verdict.outcome == "cancelled":
            report.cancelled += 1
        else:
            report.failures.append(FuzzFailure(sent.index, sent.inputs, verdict.problem))

    with ThreadPoolExecutor(report.concurrency, thread_name_prefix="contract-fuzz") as pool:
        try:
            while True:
                while sending and len(inflight) < report.concurrency:
                    if time.monotonic() >= deadline and (
                        report.checked + len(inflight) >= min_examples
                    ):
                        sending = False
                        break
                    item = next(draw, None)
                    if item is None:
                        sending = False
                        break
                    sent = _Sent(report.sent, item, f"{prefix}-{report.sent}", time.monotonic())
                    report.sent += 1
                    future = pool.submit(_predict, server, sent, timeout_s)
                    inflight[future] = sent
                if not inflight:
                    break
                now = time.monotonic()
                if now < deadline:
                    timeout: float | None = deadline - now
                elif report.checked >= min_examples:
                    sending = False
                    timeout = cancel_settled()
                else:
                    timeout = None  # the answers needed for min_examples
                done, _ = wait(inflight, timeout=timeout, return_when=FIRST_COMPLETED)
                for future in done:
                    judge(future, inflight.pop(future))
        except BaseException:
            while (settling := cancel_settled()) is not None:
                wait(inflight, timeout=settling, return_when=ALL_COMPLETED)
            raise
    report.failures.sort(key=lambda failure: failure.index)
    report.seconds = time.monotonic() - start
    return report


def fuzz_inputs(
    server: PredictionServer,
    schema: Mapping[str, Json] | None = None,
    acceptable_errors: Sequence[str | re.Pattern[str]] = (),
    *,
    budget_s: float | None = None,
    seed: int | None = None,
    min_examples: int = MIN_EXAMPLES,
    concurrency: int | None = None,
    timeout_s: float = 180.0,
    replay: str = REPLAY,
) -> FuzzReport:
    """Send inputs generated from `schema` (default: the server's own) to `server` for
    `budget_s` seconds (default `$CONTRACT_FUZZ_SECONDS` or 30) and judge every answer.

    `acceptable_errors`: the contract file's `ACCEPTABLE_ERRORS`, regexes searched in a failed
    prediction's error. `seed` (default `$CONTRACT_FUZZ_SEED`, else random) is printed first;
    `replay` is the command a failure tells to rerun with it. `concurrency` (default the
    server's) bounds the predictions in flight. Returns the report: `report.raise_if_failed()`
    raises `ContractFuzzError` with the summary (each mishandled input, why, how to replay).
    How the sending is bounded, threaded and cancelled: `run_inputs`.
    """
    openapi = load_schema(server) if schema is None else schema
    report = FuzzReport(
        seed=resolve_seed(seed),
        budget_s=resolve_budget(budget_s),
        concurrency=max(1, concurrency or getattr(server, "concurrency", 1) or 1),
        replay=replay,
    )
    print(
        f"contract fuzz: seed {report.seed}, budget {report.budget_s:g}s, up to "
        f"{report.concurrency} at once (replay: {ENV_SEED}={report.seed} {replay})",
        flush=True,
    )
    acceptable = compile_acceptable(acceptable_errors)
    output_problem = OutputCheck(openapi)
    source = InputSource(openapi, report.seed)

    def check(code: int, body: Json, cancelled: bool) -> Verdict:
        return check_response(
            code, body, output_problem=output_problem, acceptable=acceptable, cancelled=cancelled
        )

    try:
        run_inputs(
            server,
            iter(source),
            check,
            report,
            min_examples=min_examples,
            timeout_s=timeout_s,
        )
    finally:
        report.discarded = source.discarded
        report.first_discarded = source.first_discarded
        report.exhausted = source.exhausted
    print(report.summary(), flush=True)
    return report


def fuzz_threads() -> list[threading.Thread]:
    """The fuzzer's pool threads still alive (none once `run_inputs` has returned)."""
    return [t for t in threading.enumerate() if t.name.startswith("contract-fuzz")]
