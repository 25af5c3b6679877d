"""examples/embed_predict.py: concurrent predictions share forward passes, and each keeps its own
vectors, log lines and metrics; on the real Cog server and in-process.

One server for the module (32 slots), with coglet's webhooks unthrottled
(`COG_THROTTLE_RESPONSE_INTERVAL=0`, replicate/cog `crates/coglet/src/webhook.rs`) so that a
prediction's log lines are seen while it runs: a text's line is printed when its batch starts.
Every prediction's texts have lengths no other prediction's texts have, so a log line or a
`tokens` metric that lands on the wrong prediction shows. Vectors are compared within the
contract's `FLOAT_TOLERANCE` (a text batched with others goes through other kernels).

The output shapes that docs/shapes.md ("Nested numeric outputs") describes are pinned here too:
coglet 0.23.1 serves `list[list[float]]` and `list[Model]` with the schema `cog build` writes
for them, and `make schema` refuses both with cog's own message.

Throughput, once, for docs/batching.md (not a test): `PYTHONPATH=.:scripts .venv/bin/python
tests/examples/test_embed_example.py` (on the real server), `... --raw` (the encoder alone).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import statistics
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import local_predict
import pytest
import torch
from cog_server import REPO_ROOT, CogServer, CogServerError, stage_server_dir, write_schema
from conftest import CogServers, wait_until
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from examples import embed_contract, embed_predict
from examples.embed_predict import DIMS, MAX_CHARS, MAX_TEXTS, Embeddings, Predictor

pytestmark = pytest.mark.timeout(120)

PREDICTOR = "examples/embed_predict.py:Predictor"
CONCURRENCY = 32
TOLERANCE = embed_contract.FLOAT_TOLERANCE
LINE = re.compile(r"text (\d+): (\d+) tokens, in a batch of (\d+)")
FILLER = "the quick brown fox jumps over the lazy dog, " * 50


def texts_for(p: int, count: int | None = None, length: int | None = None) -> list[str]:
    """Prediction `p`'s texts (p < 70): 1 to 3 by default, each of a length that no text of
    another `p` has (10 + p + 70 j characters), or all `length` long."""
    n = 1 + p % 3 if count is None else count
    return [
        (f"p{p} t{j} " + FILLER)[: 10 + p + 70 * j if length is None else length] for j in range(n)
    ]


def tokens(text: str) -> int:
    return len(text.encode()) + 1  # its bytes and the start byte


def vectors(body: dict[str, Any]) -> list[list[float]]:
    output = body["output"]
    dims, flat = output["dims"], output["vectors"]
    return [flat[i : i + dims] for i in range(0, len(flat), dims)]


def close(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]]) -> bool:
    return len(a) == len(b) and all(
        len(x) == len(y) and all(abs(u - v) <= TOLERANCE for u, v in zip(x, y, strict=True))
        for x, y in zip(a, b, strict=True)
    )


def appended(value: Any) -> list[Any]:
    """A metric recorded with mode="append": its list of values."""
    return list(value) if isinstance(value, list) else [value]


def check_own(body: dict[str, Any], texts: list[str]) -> list[int]:
    """The prediction's log lines and metrics are exactly those of its own texts (none lost,
    none of another prediction's); returns the sizes of the batches its texts rode in."""
    lines = body["logs"].splitlines()
    found = [LINE.fullmatch(line) for line in lines]
    assert all(found), lines
    matches = [m for m in found if m is not None]
    assert sorted((int(m[1]), int(m[2])) for m in matches) == [
        (j, tokens(t)) for j, t in enumerate(texts)
    ], lines
    metrics = body["metrics"]
    assert metrics["tokens"] == sum(map(tokens, texts)), metrics
    sizes = appended(metrics["batch_size"])
    assert sorted(sizes) == sorted(int(m[3]) for m in matches), (metrics, lines)
    assert len(appended(metrics["queue_ms"])) == len(texts), metrics
    return sizes


def succeeded(server: CogServer, texts: list[str]) -> dict[str, Any]:
    code, body = server.predict({"texts": texts}, timeout=120)
    assert (code, body["status"]) == (200, "succeeded"), body
    return dict(body)


def start(server: CogServer, texts: list[str]) -> str:
    id_ = f"embed-{uuid.uuid4().hex[:10]}"
    code, body = server.predict_async(id_, {"texts": texts})
    assert code == 202, body
    return id_


def logged(server: CogServer, id_: str) -> bool:
    """Whether prediction `id_` has printed a line: one of its texts' batches has started."""
    return bool(((server.get(id_) or {}).get("logs") or "").strip())


@pytest.fixture(scope="module")
def server(module_cog_servers: CogServers) -> CogServer:
    return module_cog_servers.shared(
        PREDICTOR,
        source_dir=REPO_ROOT,
        concurrency=CONCURRENCY,
        env={"COG_THROTTLE_RESPONSE_INTERVAL": "0"},
    )


# ── on the real server ────────────────────────────────────────────────────────────────────────


@pytest.mark.server
def test_at_32_concurrent_predictions_each_keeps_its_own_vectors_log_lines_and_metrics(
    server: CogServer,
) -> None:
    inputs = [texts_for(p) for p in range(CONCURRENCY)]
    solo = [succeeded(server, texts) for texts in inputs]
    for body, texts in zip(solo, inputs, strict=True):
        check_own(body, texts)
    assert len({json.dumps(vectors(b)[0]) for b in solo}) == CONCURRENCY, "vectors must differ"
    shared = 0  # predictions whose texts rode in a batch with another prediction's
    for _round in range(2):
        with ThreadPoolExecutor(CONCURRENCY) as pool:
            bodies = list(pool.map(lambda texts: succeeded(server, texts), inputs))
        for body, alone, texts in zip(bodies, solo, inputs, strict=True):
            assert close(vectors(body), vectors(alone))
            sizes = check_own(body, texts)
            shared += max(sizes) > len(texts)
    assert shared, "no prediction ever shared a forward pass with another one"


@pytest.mark.server
def test_a_cancelled_member_of_a_running_batch_leaves_the_others_exact_and_its_slot_free(
    server: CogServer,
) -> None:
    # A blocker keeps the model busy for 3 batches of long texts while the victim and its
    # neighbours queue behind it; the victim is cancelled once its first batch has started.
    blocker = texts_for(60, count=24, length=MAX_CHARS)
    victim, *neighbours = [texts_for(p, count=2, length=MAX_CHARS) for p in range(61, 65)]
    expected = [vectors(succeeded(server, texts)) for texts in (blocker, *neighbours)]
    for _attempt in range(3):
        blocker_id = start(server, blocker)
        wait_until(partial(logged, server, blocker_id), timeout=30, what="its batch")
        ids = [start(server, texts) for texts in (victim, *neighbours)]
        wait_until(partial(logged, server, ids[0]), timeout=30, what="the victim's batch")
        code = server.cancel(ids[0])[0]
        final = server.wait(ids[0], timeout=30)
        others = [server.wait(id_, timeout=60) for id_ in (blocker_id, *ids[1:])]
        for body, want, texts in zip(others, expected, (blocker, *neighbours), strict=True):
            assert body["status"] == "succeeded", body
            assert close(vectors(body), want)  # the cancel changed no one else's vectors
            check_own(body, texts)
        if final["status"] == "succeeded":  # its batch ended before the cancel landed
            continue
        assert (code, final["status"]) == (200, "canceled"), final
        # Its lines, printed as its batch started: a batch beside other predictions' texts.
        found = [LINE.fullmatch(line) for line in final["logs"].splitlines()]
        assert found, final
        assert all(m is not None and int(m[1]) < 2 for m in found), final
        if any(m is not None and int(m[3]) > len(victim) for m in found):
            break
    else:
        pytest.fail("in 3 tries the victim was never cancelled in a running batch of others")
    # Its slot is free, and nothing of it is left in the batcher: a full house runs clean.
    wait_until(lambda: server.health()["status"] == "READY", timeout=10, what="a free slot")
    inputs = [texts_for(p) for p in range(CONCURRENCY)]
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        bodies = list(pool.map(lambda texts: succeeded(server, texts), inputs))
    for body, texts in zip(bodies, inputs, strict=True):
        check_own(body, texts)


@pytest.mark.server
def test_the_bounds_the_schema_cannot_express_fail_the_prediction_with_a_clear_message(
    server: CogServer,
) -> None:
    acceptable = [re.compile(p) for p in embed_contract.ACCEPTABLE_ERRORS]
    for texts in ([], ["x"] * (MAX_TEXTS + 1), ["x", "y" * (MAX_CHARS + 1)]):
        code, body = server.predict({"texts": texts})
        assert (code, body["status"]) == (200, "failed"), body
        assert any(p.search(body["error"]) for p in acceptable), body["error"]
    longest = ["é" * MAX_CHARS] * MAX_TEXTS  # at the bounds: 64 texts of 2,000 characters
    assert len(vectors(succeeded(server, longest))) == MAX_TEXTS


@pytest.mark.server
def test_make_predict_prints_the_vectors_logs_and_metrics(
    server: CogServer, capsys: pytest.CaptureFixture[str]
) -> None:
    code = local_predict.main(["--url", server.url, "--inputs", 'texts=["a b", "c"]'])
    out, err = capsys.readouterr()
    assert code == 0, err
    printed, _, rest = out.partition("\nstatus: ")
    assert rest.startswith("succeeded\n"), out
    output = json.loads(printed.strip())
    assert output["dims"] == DIMS
    assert close(vectors({"output": output}), vectors(succeeded(server, ["a b", "c"])))
    assert "text 0: 4 tokens, in a batch of" in rest
    assert "tokens: 6" in rest


# ── the output shapes docs/shapes.md describes ────────────────────────────────────────────────

NESTED = """
from dataclasses import dataclass

from cog import BaseModel, BaseRunner


@dataclass
class Embedding(BaseModel, auto_dataclass=False):
    vector: list[float]


class Flat(BaseRunner):
    def run(self, n: int = 2) -> list[float]:
        return [float(i) for i in range(n)]


class Lists(BaseRunner):
    def run(self, n: int = 2) -> list[list[float]]:
        return [[i, i / 2] for i in range(n)]


class Models(BaseRunner):
    def run(self, n: int = 2) -> list[Embedding]:
        return [Embedding(vector=[i, i / 2]) for i in range(n)]
"""
# What `cog build` writes for each (replicate/cog pkg/schema/schema_type.go, coreSchema; its
# parser_test.go TestListOfListOutput, TestListOfBaseModelOutput).
CLI_OUTPUTS = {
    "Lists": {"type": "array", "items": {"type": "array", "items": {"type": "number"}}},
    "Models": {
        "type": "array",
        "items": {
            "type": "object",
            "properties": {
                "vector": {"type": "array", "items": {"type": "number"}, "title": "Vector"}
            },
            "required": ["vector"],
        },
    },
}
REFUSED = {"Lists": "List cannot have nested type list", "Models": "unsupported Cog type Embedding"}


@pytest.mark.server
@pytest.mark.parametrize("name", CLI_OUTPUTS)
def test_coglet_serves_nested_outputs_that_make_schema_refuses(tmp_path: Path, name: str) -> None:
    probe = tmp_path / "nested_outputs.py"
    probe.write_text(NESTED)
    cwd = stage_server_dir(tmp_path / "server", files={probe.name: probe})
    with pytest.raises(CogServerError, match=re.escape(REFUSED[name])):
        write_schema(f"{probe.name}:{name}", cwd)  # cog's introspection (cog/_adt.py)
    # The CLI's document: that of `Flat` (the same input) with the CLI's output for `name`.
    document = json.loads(write_schema(f"{probe.name}:Flat", cwd).read_text())
    document["components"]["schemas"]["Output"] = {"title": "Output", **CLI_OUTPUTS[name]}
    (cwd / ".cog" / "openapi_schema.json").write_text(json.dumps(document))
    with CogServer(f"{probe.name}:{name}", cwd=cwd, schema=False) as server:
        code, body = server.predict({"n": 2})
    assert (code, body["status"]) == (200, "succeeded"), body
    first, second = [[0.0, 0.0], [1.0, 0.5]]
    if name == "Lists":
        assert body["output"] == [first, second]
    else:
        assert body["output"] == [{"vector": first}, {"vector": second}]


# ── in-process: the batch function and the batcher ───────────────────────────────────────────


@pytest.fixture(scope="module")
def predictor() -> Iterator[Predictor]:
    threads = torch.get_num_threads()  # the batcher sets 1 on the CPU: restored after
    model = Predictor()
    model.setup()
    try:
        yield model
    finally:
        model.batcher.close()
        torch.set_num_threads(threads)
    assert not [t for t in threading.enumerate() if t.name == "embed"], "the batch thread lives"


def solo(model: Predictor, text: str) -> list[float]:
    with torch.inference_mode():
        vector = model.encoder([text.encode("utf-8", "surrogatepass")])[0]
    return [float(x) for x in vector]


@pytest.mark.timeout(300)
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(st.text(max_size=300), min_size=1, max_size=6), min_size=1, max_size=12))
def test_texts_from_concurrent_callers_get_their_own_vectors_whatever_their_batch(
    predictor: Predictor, calls: list[list[str]]
) -> None:
    """Each call (a prediction's run(), in a thread with its own event loop) gets, for each of
    its texts, the vector that text gets alone, within the tolerance."""
    barrier = threading.Barrier(len(calls))

    def call(texts: list[str]) -> Embeddings:
        barrier.wait(timeout=30)
        return asyncio.run(predictor.run(texts=texts))

    with ThreadPoolExecutor(len(calls)) as pool:
        results = list(pool.map(call, calls))
    for texts, result in zip(calls, results, strict=True):
        assert result.dims == DIMS
        assert close(
            vectors({"output": {"dims": DIMS, "vectors": result.vectors}}),
            [solo(predictor, text) for text in texts],
        )


def test_vectors_are_unit_length_and_differ_by_text(predictor: Predictor) -> None:
    texts = ["", "a", "b", "a" * MAX_CHARS, "\ud800 surrogate", "日本語"]
    result = asyncio.run(predictor.run(texts=texts))
    rows = vectors({"output": {"dims": result.dims, "vectors": result.vectors}})
    assert len(rows) == len(texts)
    for row in rows:
        assert abs(sum(x * x for x in row) - 1.0) < 1e-5
    assert len({json.dumps([round(x, 4) for x in row]) for row in rows}) == len(texts)


def test_called_directly_the_batch_function_reports_nothing(
    predictor: Predictor, capsys: pytest.CaptureFixture[str]
) -> None:
    """Outside a Batcher `current_batch()` is empty: a test or benchmark of the batch function
    prints no per-text line."""
    capsys.readouterr()
    out = predictor.embed_batch([(0, b"a"), (1, b"bc")])
    assert len(out) == 2
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize(
    "texts",
    [[], ["x"] * (MAX_TEXTS + 1), ["ok", "y" * (MAX_CHARS + 1)]],
    ids=["no text", "too many", "too long"],
)
def test_run_rejects_what_the_schema_cannot_bound_as_the_contract_declares(
    predictor: Predictor, texts: list[str]
) -> None:
    with pytest.raises(ValueError) as raised:
        asyncio.run(predictor.run(texts=texts))
    assert any(re.fullmatch(p, str(raised.value)) for p in embed_contract.ACCEPTABLE_ERRORS)


# ── throughput, for docs/batching.md (run once, by hand) ──────────────────────────────────────

UNBATCHED = """
from examples.embed_predict import Predictor


class Unbatched(Predictor):
    max_batch_size = 1  # one text per forward pass: no batching across predictions
"""


def _closed_loop(server: CogServer, callers: int, seconds: float) -> tuple[float, float, float]:
    """`callers` clients, each sending the contract's short inputs one after another for
    `seconds`: (predictions/s, texts/s, mean batch size)."""
    counter = itertools.count()
    done: list[tuple[int, list[int]]] = []
    deadline = time.monotonic() + seconds

    def client() -> None:
        while time.monotonic() < deadline:
            texts = embed_contract.short_input(next(counter))["texts"]
            body = succeeded(server, texts)
            done.append((len(texts), appended(body["metrics"]["batch_size"])))

    began = time.monotonic()
    threads = [threading.Thread(target=client) for _ in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - began
    sizes = [s for _, batch in done for s in batch]
    return len(done) / elapsed, sum(n for n, _ in done) / elapsed, statistics.fmean(sizes)


def main() -> None:
    """The example (max_batch_size=8) against the same model with max_batch_size=1, both on
    the real server, at 1, 8 and 32 closed-loop callers, in interleaved rounds."""
    root = Path(tempfile.mkdtemp(prefix="embed-throughput-"))
    probe = root / "embed_unbatched.py"
    probe.write_text(textwrap.dedent(UNBATCHED))
    servers = {
        "batched (8)": CogServer(
            PREDICTOR, cwd=stage_server_dir(root / "a"), concurrency=CONCURRENCY
        ),
        "unbatched (1)": CogServer(
            "embed_unbatched.py:Unbatched",
            cwd=stage_server_dir(root / "b", files={probe.name: probe}),
            concurrency=CONCURRENCY,
        ),
    }
    results: dict[tuple[str, int], list[tuple[float, float, float]]] = {}
    try:
        for server in servers.values():
            server.start()
            _closed_loop(server, 8, 0.5)  # warm up
        for _round in range(2):
            for callers in (1, 8, 32):
                for name, server in servers.items():
                    results.setdefault((name, callers), []).append(
                        _closed_loop(server, callers, 2.0)
                    )
    finally:
        for server in servers.values():
            server.stop()
    print(f"torch {torch.__version__}, {embed_predict.__name__}, 2 rounds of 2 s per cell")
    print("| callers | variant | predictions/s | texts/s | x unbatched | mean batch |")
    print("| --- | --- | --- | --- | --- | --- |")
    for callers in (1, 8, 32):
        base = statistics.fmean(r[0] for r in results[("unbatched (1)", callers)])
        for name in servers:
            rows = results[(name, callers)]
            rate = statistics.fmean(r[0] for r in rows)
            texts = statistics.fmean(r[1] for r in rows)
            batch = statistics.fmean(r[2] for r in rows)
            print(
                f"| {callers} | {name} | {rate:,.0f} | {texts:,.0f} | {rate / base:.2f} "
                f"| {batch:.1f} |"
            )


def raw() -> None:
    """The encoder alone, in this process, on one torch thread (as the batch thread runs it):
    milliseconds per text at batch sizes 1, 8 and 32, for short texts and 2,000-character ones."""
    torch.set_num_threads(1)
    encoder = embed_predict.build_encoder()
    print("| text | batch of 1 | batch of 8 | batch of 32 | (ms per text) |")
    print("| --- | --- | --- | --- | --- |")
    for chars in (40, MAX_CHARS):
        texts = [t.encode() for t in texts_for(0, count=32, length=chars)]
        cells = []
        with torch.inference_mode():
            encoder(texts[:2])  # warm up
            for n in (1, 8, 32):
                calls, began = 0, time.perf_counter()
                while time.perf_counter() - began < 0.5:
                    encoder(texts[:n])
                    calls += 1
                cells.append(f"{(time.perf_counter() - began) / calls / n * 1000:.3f}")
        print(f"| {chars} characters | {' | '.join(cells)} | |")


if __name__ == "__main__":
    if "--raw" in sys.argv:
        raw()
    else:
        main()
