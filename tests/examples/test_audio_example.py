"""examples/audio_predict.py on the real Cog server: WAV chunks in order, then the full file.

Through tests/examples/predictors/audio_probes.py (the example plus a probe of what it made), on
servers as `cog predict` runs it locally (data URIs) and as Replicate runs it (coglet uploads each
file to `--upload-url`: an UploadReceiver on 127.0.0.1). Every file the model writes goes to the
server's own PREDICTION_FILES_DIR, so "nothing left behind" is a count. The synthesiser itself is
tested in-process at the end.
"""

from __future__ import annotations

import base64
import hashlib
import io
import statistics
import time
import uuid
import wave
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import torch
from cog_server import CogServer
from conftest import CogServers, probe_records, wait_until

from examples import audio_predict

pytestmark = [pytest.mark.server, pytest.mark.timeout(240)]

PREDICTOR = "audio_probes.py:Probe"
PROBES = Path(__file__).resolve().parent / "predictors"  # the example with a probe
FAIL_SEEDS = 4_000_000_000  # audio_probes: seed FAIL_SEEDS + N: the synthesiser raises at chunk N
ENCODE_FAIL_SEEDS = 4_100_000_000  # ... + N: the encoder raises on chunk N
CONCURRENCY = 4
SENTENCE = "The quick brown fox jumps over the lazy dog, and then it rests a while. "


def start_server(servers: CogServers, tmp: Path, name: str, **kwargs: Any) -> CogServer:
    env = {
        "PREDICTION_FILES_DIR": str(tmp / name / "files"),
        "PROBE_FILE": str(tmp / name / "probe.jsonl"),
        **kwargs.pop("env", {}),
    }
    (tmp / name).mkdir()
    return servers.shared(PREDICTOR, source_dir=PROBES, concurrency=CONCURRENCY, env=env, **kwargs)


@pytest.fixture(scope="module")
def local(module_cog_servers: CogServers, tmp_path_factory: pytest.TempPathFactory) -> CogServer:
    """Outputs as data URIs (no upload URL)."""
    return start_server(module_cog_servers, tmp_path_factory.mktemp("audio"), "local")


@pytest.fixture(scope="module")
def uploading(
    module_cog_servers: CogServers, tmp_path_factory: pytest.TempPathFactory
) -> CogServer:
    """Outputs uploaded to an UploadReceiver; its outputs are the receiver's URLs."""
    return start_server(
        module_cog_servers, tmp_path_factory.mktemp("audio"), "uploads", uploads=True
    )


@pytest.fixture(scope="module")
def slow(module_cog_servers: CogServers, tmp_path_factory: pytest.TempPathFactory) -> CogServer:
    """Each encode 100 ms longer: hand-offs queue up behind the pool (8 at most)."""
    return start_server(
        module_cog_servers,
        tmp_path_factory.mktemp("audio"),
        "slow",
        env={"ENCODE_SECONDS": "0.1"},
    )


# ── helpers ───────────────────────────────────────────────────────────────────────────────────


def file_bytes(server: CogServer, output: str) -> bytes:
    """The bytes a client gets for one output: a data URI decoded, or the uploaded file."""
    if output.startswith("data:"):
        header, _, data = output.partition(",")
        assert header in ("data:audio/wav;base64", "data:audio/x-wav;base64"), header
        return base64.b64decode(data)
    assert server.uploads is not None
    found = server.uploads.file(output)
    assert found is not None, f"{output} is not one of the receiver's URLs"
    content_type, data = found
    assert content_type in ("audio/wav", "audio/x-wav"), content_type
    return data


def frames(data: bytes) -> bytes:
    """The PCM frames of a WAV file, checked to be 16-bit mono at the model's rate."""
    with wave.open(io.BytesIO(data)) as wav:
        assert (wav.getnchannels(), wav.getsampwidth()) == (1, 2)
        assert wav.getframerate() == audio_predict.SAMPLE_RATE
        pcm = wav.readframes(wav.getnframes())
        assert len(pcm) == 2 * wav.getnframes()
        return pcm


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def made(server: CogServer) -> dict[str, float]:
    """sha256 -> when the encoder made that WAV (audio_probes' records)."""
    return {r["wav"]: r["made"] for r in probe_records(server) if "wav" in r}


def ended(server: CogServer, seed: int) -> dict[str, Any]:
    """The probe's record of the synthesis with `seed` (once it has ended)."""
    found = [r for r in probe_records(server) if r.get("seed") == seed and "ended" in r]
    assert len(found) == 1, found
    return found[0]


def encodes(server: CogServer, seed: int) -> int:
    return sum(1 for r in probe_records(server) if r.get("encode") == seed)


def files_left(server: CogServer) -> list[Path]:
    root = Path(server.extra_env["PREDICTION_FILES_DIR"])
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def dirs_left(server: CogServer) -> list[Path]:
    root = Path(server.extra_env["PREDICTION_FILES_DIR"])
    return list(root.iterdir()) if root.exists() else []


def nothing_left(server: CogServer) -> None:
    wait_until(lambda: not dirs_left(server), timeout=15, what="prediction files to be deleted")


def predict(server: CogServer, **inputs: Any) -> dict[str, Any]:
    code, body = server.predict(inputs, timeout=180)
    assert code == 200, body
    return dict(body)


def sse_outputs(server: CogServer, inputs: dict[str, Any]) -> Iterator[tuple[float, str]]:
    """(wall-clock arrival time, output) for each output event of an SSE prediction."""
    for event in server.predict_stream(inputs, timeout=180):
        if event.event == "output":
            yield time.time(), event.data["chunk"]


def start(server: CogServer, **inputs: Any) -> str:
    id_ = f"audio-{uuid.uuid4().hex[:10]}"
    # a 409 just after another prediction ended is retried (predict_async, in cog_server.py)
    code, body = server.predict_async(id_, inputs, busy_retry=5.0)
    assert code == 202, body
    return id_


def expected_chunks(text: str, seed: int, chunk_ms: int) -> int:
    samples = audio_predict.Utterance(text, seed).samples
    return -(-samples // round(audio_predict.SAMPLE_RATE * chunk_ms / 1000))


def check_chunks_and_full_file(files: list[bytes], count: int) -> None:
    """`count` chunks, each a WAV, whose frames concatenate to the full file's, sample for
    sample."""
    assert len(files) == count + 1
    *chunks, full = (frames(data) for data in files)
    assert all(chunks)
    assert b"".join(chunks) == full


# ── streaming, content ────────────────────────────────────────────────────────────────────────


def test_chunks_stream_live_in_order_then_the_full_file_sample_for_sample(local: CogServer) -> None:
    text = "Chunks, in order. " + SENTENCE
    events = list(sse_outputs(local, {"text": text, "seed": 7, "chunk_ms": 200}))
    count = expected_chunks(text, 7, 200)
    times = [t for t, _ in events]
    assert times == sorted(times)
    assert times[-2] - times[0] > 0.02  # the chunks arrived while the model ran
    files = [file_bytes(local, output) for _, output in events]
    check_chunks_and_full_file(files, count)
    produced = made(local)
    assert all(sha(data) in produced for data in files)  # exactly the bytes the model wrote
    nothing_left(local)


def test_uploaded_chunks_sort_back_into_order_by_name(uploading: CogServer) -> None:
    text = "Uploaded. " + SENTENCE
    body = predict(uploading, text=text, seed=8, chunk_ms=150)
    assert body["status"] == "succeeded", body.get("error")
    urls = body["output"]
    assert server_urls(uploading, urls)
    # In the order the uploads finished; the names sort back (docs/files.md, "Order").
    by_name = sorted(urls, key=lambda url: url.rsplit("-", 1)[-1])
    names = [url.rsplit("-", 1)[-1] for url in by_name]
    count = expected_chunks(text, 8, 150)
    assert names == [f"{i:05d}.wav" for i in range(count)] + ["full.wav"]
    check_chunks_and_full_file([file_bytes(uploading, url) for url in by_name], count)
    nothing_left(uploading)


def server_urls(server: CogServer, urls: list[str]) -> bool:
    assert server.uploads is not None
    return all(u.startswith(server.uploads.base_url + "/files/") for u in urls)


def test_at_4_concurrent_each_prediction_its_own_chunks_and_pool_metrics(
    local: CogServer,
) -> None:
    inputs = [{"text": f"Voice {n}. " + SENTENCE[: 20 + 9 * n], "seed": 50 + n} for n in range(6)]
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        bodies = list(pool.map(lambda i: predict(local, **i), inputs))
    assert [b["status"] for b in bodies] == ["succeeded"] * len(inputs)
    alone = predict(local, **inputs[-1])
    for job, body in zip(inputs, bodies, strict=True):
        count = expected_chunks(job["text"], job["seed"], 250)
        check_chunks_and_full_file([file_bytes(local, o) for o in body["output"]], count)
        # the pool threads' metric landed on this prediction, once per chunk
        assert body["metrics"]["encoded_chunks"] == count == body["metrics"]["chunks"]
        assert body["logs"].splitlines()[0].endswith(f"(seed {job['seed']})")
    assert [sha(file_bytes(local, o)) for o in alone["output"]] == [
        sha(file_bytes(local, o)) for o in bodies[-1]["output"]
    ]
    nothing_left(local)


# ── errors, cancel ────────────────────────────────────────────────────────────────────────────


def test_a_failing_encode_fails_the_prediction_after_the_chunks_before_it(
    local: CogServer,
) -> None:
    seed = ENCODE_FAIL_SEEDS + 5
    events = list(local.predict_stream({"text": SENTENCE, "seed": seed}, timeout=120))
    outputs = [e for e in events if e.event == "output"]
    completed = events[-1]
    assert completed.event == "completed"
    assert completed.data["status"] == "failed"
    assert "encoder exploded on chunk 5" in completed.data["error"]
    assert len(outputs) == 5  # chunks 0..4, in order, then the error
    nothing_left(local)


def test_a_failing_model_fails_the_prediction_and_leaves_no_file(local: CogServer) -> None:
    body = predict(local, text=SENTENCE, seed=FAIL_SEEDS + 6)
    assert body["status"] == "failed"
    assert "synthesiser exploded at chunk 6" in body["error"]
    nothing_left(local)


def test_a_cancel_ends_canceled_drops_queued_encodes_and_leaves_no_file(slow: CogServer) -> None:
    seed = 21
    id_ = start(slow, text=SENTENCE * 6, seed=seed, chunk_ms=100)
    # 4 chunks out: the pool (100 ms a chunk, 2 threads) has fallen behind the model
    wait_until(
        lambda: len((slow.get(id_) or {}).get("output") or ()) >= 4, timeout=60, what="chunks"
    )
    cancelled_at = time.time()
    assert slow.cancel(id_)[0] == 200
    assert slow.wait(id_, timeout=30)["status"] == "canceled"
    wait_until(lambda: any("ended" in r for r in probe_records(slow) if r.get("seed") == seed))
    record = ended(slow, seed)
    assert record["ended"] - cancelled_at < 1.0
    assert record["handed"] < expected_chunks(SENTENCE * 6, seed, 100)
    # queued encodes were cancelled, never run (2 run at a time, 8 may be handed over)
    assert encodes(slow, seed) < record["handed"], (encodes(slow, seed), record)
    nothing_left(slow)


# ── latency and the mixed run ─────────────────────────────────────────────────────────────────


def chunk_latencies(server: CogServer, seeds: list[int]) -> list[float]:
    """Seconds from each WAV made (then written) to its SSE output event, all `seeds` at once."""

    def run(seed: int) -> list[tuple[float, str]]:
        inputs = {"text": SENTENCE, "seed": seed, "chunk_ms": 250}
        return [(t, sha(file_bytes(server, o))) for t, o in sse_outputs(server, inputs)]

    with ThreadPoolExecutor(len(seeds)) as pool:
        arrivals = [a for result in pool.map(run, seeds) for a in result]
    produced = made(server)
    return [arrived - produced[digest] for arrived, digest in arrivals]


def test_chunk_latency_made_to_sse_event(local: CogServer) -> None:
    report = {}
    for concurrent, seeds in ((1, [71]), (4, [72, 73, 74, 75])):
        latencies = chunk_latencies(local, seeds)
        report[concurrent] = (statistics.median(latencies), max(latencies))
        assert statistics.median(latencies) < 0.25, latencies
    print(
        "\nchunk latency (WAV made -> SSE event): "
        + "; ".join(
            f"{c} concurrent: median {m * 1000:.1f} ms, max {x * 1000:.1f} ms"
            for c, (m, x) in report.items()
        )
    )
    nothing_left(local)


def drop_sse_after_first_output(server: CogServer, inputs: dict[str, Any]) -> None:
    stream = server.predict_stream(inputs, timeout=60)
    try:
        for event in stream:
            if event.event == "output":
                break
    finally:
        stream.close()  # closes the connection: coglet cancels the prediction


def mixed_run(server: CogServer, count: int) -> dict[str, int]:
    """`count` predictions, 4 at a time: normal, cancelled, SSE dropped, failing, in turn."""

    def one(i: int) -> str:
        kind = ("normal", "cancelled", "dropped", "failing")[i % 4]
        seed = 1000 + i
        long = {"text": SENTENCE * 4, "seed": seed, "chunk_ms": 100}
        if kind == "normal":
            body = predict(server, text=SENTENCE[: 30 + i], seed=seed)
            assert body["status"] == "succeeded", body.get("error")
        elif kind == "failing":
            body = predict(server, text=SENTENCE, seed=ENCODE_FAIL_SEEDS + 1 + i % 3)
            assert body["status"] == "failed"
        elif kind == "dropped":
            drop_sse_after_first_output(server, long)
        else:
            id_ = start(server, **long)
            wait_until(lambda: bool((server.get(id_) or {}).get("output")), timeout=60)
            assert server.cancel(id_)[0] == 200
            assert server.wait(id_, timeout=30)["status"] in {"canceled", "succeeded"}
        return kind

    with ThreadPoolExecutor(CONCURRENCY) as pool:
        kinds = list(pool.map(one, range(count)))
    return {k: kinds.count(k) for k in set(kinds)}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["local", "uploading"])
def test_mixed_run_leaves_no_file_behind(name: str, request: pytest.FixtureRequest) -> None:
    server: CogServer = request.getfixturevalue(name)
    before = len(made(server))
    started = time.monotonic()
    kinds = mixed_run(server, 24)
    wait_until(
        lambda: not files_left(server) and not dirs_left(server),
        timeout=15,
        what="every prediction file to be deleted",
    )
    written = len(made(server)) - before
    assert written > 24
    print(
        f"\nmixed run ({name}): {kinds}, {written} WAVs written, "
        f"{len(files_left(server))} files left, {time.monotonic() - started:.1f}s"
    )
    assert server.health()["status"] == "READY"


# ── the synthesiser and the encoder, in-process ───────────────────────────────────────────────


def test_the_same_seed_gives_the_same_audio_and_chunks_concatenate_to_the_whole():
    chunks: list[torch.Tensor] = []
    with torch.inference_mode():
        count = audio_predict.synthesise("Hello, world.", 3, 1000, lambda i, s: chunks.append(s))
        again: list[torch.Tensor] = []
        audio_predict.synthesise("Hello, world.", 3, 1000, lambda i, s: again.append(s))
    assert count == len(chunks) == -(-audio_predict.Utterance("Hello, world.", 3).samples // 1000)
    assert all(torch.equal(a, b) for a, b in zip(chunks, again, strict=True))
    joined = b"".join(audio_predict.pcm16(c) for c in chunks)
    assert joined == audio_predict.pcm16(torch.cat(chunks))  # sample for sample
    assert frames(audio_predict.wav_bytes(joined)) == joined


def test_the_synthesiser_stops_before_the_next_chunk_once_asked():
    seen: list[int] = []
    with torch.inference_mode():
        count = audio_predict.synthesise(
            SENTENCE, 1, 2000, lambda i, s: seen.append(i), should_stop=lambda: len(seen) >= 3
        )
    assert count == 3 == len(seen)
