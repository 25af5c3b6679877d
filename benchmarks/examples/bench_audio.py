"""Benchmark: examples/audio_predict.py on the real server — chunk latency, files left, cancels.

Run ``python -m benchmarks.examples.bench_audio`` from the repository root (``--quick``: a smoke
run). It starts ``python -m cog.server.http`` servers of
``tests/examples/predictors/audio_probes.py:Probe`` (the example plus a probe that records when each
WAV was made) with the harness in scripts/cog_server.py, 4 slots each: one inlining file outputs as
data URIs (local runs), one uploading them to a receiver on 127.0.0.1 (as on Replicate), and one
whose encoder takes 100 ms longer per chunk (a slow post-processing step, so that hand-offs queue
behind the pool). It reports, per server:

- **chunk latency**: from a WAV chunk made (its bytes encoded; the file is written right after)
  to its SSE ``output`` event at the client, median / p90 / max, with 1 and with 4 predictions
  streaming at once (each a sentence in 250 ms chunks, about 22 chunks and the full file);
- **files left** after a mixed run (normal, cancelled, SSE dropped, failing on the pool, in
  turn, 4 at a time): files and directories under the server's PREDICTION_FILES_DIR once the
  run is over (goal 0);
- **cancel → canceled** (slow-encoder server): from the client's ``POST .../cancel`` to the
  prediction's ``canceled`` status, and the queued encodes dropped: chunks handed to the pool
  minus encodes that ran (the probe's records).

The machine is shared: treat single numbers as noisy. Exit status 0.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import platform
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "scripts"))

from cog_server import CogServer, stage_predictor  # noqa: E402

PROBE = REPO_ROOT / "tests" / "examples" / "predictors" / "audio_probes.py"
SLOTS = 4
SENTENCE = "The quick brown fox jumps over the lazy dog, and then it rests a while. "
ENCODE_FAIL_SEEDS = 4_100_000_000  # audio_probes: the encoder raises on chunk seed - this


def start_server(root: Path, name: str, **kwargs: Any) -> CogServer:
    directory = root / name
    env = {
        "PREDICTION_FILES_DIR": str(directory / "files"),
        "PROBE_FILE": str(directory / "probe.jsonl"),
        **kwargs.pop("env", {}),
    }
    return CogServer(
        "audio_probes.py:Probe",
        cwd=stage_predictor(PROBE, directory / "cwd"),
        concurrency=SLOTS,
        env=env,
        **kwargs,
    ).start()


def records(server: CogServer) -> list[dict[str, Any]]:
    path = Path(server.extra_env["PROBE_FILE"])
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def file_bytes(server: CogServer, output: str) -> bytes:
    if output.startswith("data:"):
        return base64.b64decode(output.partition(",")[2])
    assert server.uploads is not None
    found = server.uploads.file(output)
    assert found is not None, output
    return found[1]


def sse_outputs(server: CogServer, inputs: dict[str, Any]) -> Iterator[tuple[float, str]]:
    for event in server.predict_stream(inputs, timeout=180):
        if event.event == "output":
            yield time.time(), event.data["chunk"]


def latencies(server: CogServer, seeds: list[int]) -> list[float]:
    """Seconds from each WAV made to its SSE output event, `seeds` streaming at once."""

    def run(seed: int) -> list[tuple[float, str]]:
        inputs = {"text": SENTENCE, "seed": seed, "chunk_ms": 250}
        return [
            (t, hashlib.sha256(file_bytes(server, o)).hexdigest())
            for t, o in sse_outputs(server, inputs)
        ]

    with ThreadPoolExecutor(len(seeds)) as pool:
        arrivals = [a for result in pool.map(run, seeds) for a in result]
    made = {r["wav"]: r["made"] for r in records(server) if "wav" in r}
    return [arrived - made[digest] for arrived, digest in arrivals]


def start(server: CogServer, inputs: dict[str, Any]) -> str:
    id_ = f"bench-{uuid.uuid4().hex[:10]}"
    # a 409 just after another prediction ended is retried (predict_async, in cog_server.py)
    code, body = server.predict_async(id_, inputs, busy_retry=5.0)
    assert code == 202, body
    return id_


def wait_for(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def cancel_once(server: CogServer, seed: int) -> tuple[float, int, int]:
    """(seconds from the cancel to `canceled`, chunks handed to the pool, encodes run)."""
    id_ = start(server, {"text": SENTENCE * 6, "seed": seed, "chunk_ms": 100})
    assert wait_for(lambda: len((server.get(id_) or {}).get("output") or ()) >= 4, 60)
    sent = time.monotonic()
    assert server.cancel(id_)[0] == 200
    status = server.wait(id_, timeout=30)["status"]
    took = time.monotonic() - sent
    assert status == "canceled", status

    def ended() -> list[dict[str, Any]]:
        return [r for r in records(server) if r.get("seed") == seed and "ended" in r]

    assert wait_for(lambda: bool(ended()), 10)
    handed = ended()[0]["handed"]
    encoded = sum(1 for r in records(server) if r.get("encode") == seed)
    return took, handed, encoded


def mixed_run(server: CogServer, count: int) -> dict[str, int]:
    def one(i: int) -> str:
        kind = ("normal", "cancelled", "dropped", "failing")[i % 4]
        seed = 10_000 + i
        long = {"text": SENTENCE * 4, "seed": seed, "chunk_ms": 100}
        if kind == "normal":
            body = server.predict({"text": SENTENCE[: 30 + i % 40], "seed": seed}, timeout=180)[1]
            assert body["status"] == "succeeded", body
        elif kind == "failing":
            body = server.predict({"text": SENTENCE, "seed": ENCODE_FAIL_SEEDS + 1 + i % 3})[1]
            assert body["status"] == "failed", body
        elif kind == "dropped":
            stream = server.predict_stream(long, timeout=60)
            try:
                for event in stream:
                    if event.event == "output":
                        break
            finally:
                stream.close()
        else:
            id_ = start(server, long)
            assert wait_for(lambda: bool((server.get(id_) or {}).get("output")), 60)
            assert server.cancel(id_)[0] == 200
            server.wait(id_, timeout=30)
        return kind

    with ThreadPoolExecutor(SLOTS) as pool:
        kinds = list(pool.map(one, range(count)))
    return {k: kinds.count(k) for k in sorted(set(kinds))}


def left(server: CogServer) -> tuple[int, int]:
    root = Path(server.extra_env["PREDICTION_FILES_DIR"])
    if not root.exists():
        return 0, 0
    return sum(1 for p in root.rglob("*") if p.is_file()), sum(1 for _ in root.iterdir())


def quantiles(values: list[float]) -> str:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    return (
        f"median {statistics.median(ordered) * 1e3:.1f} ms, p90 {p90 * 1e3:.1f} ms,"
        f" max {ordered[-1] * 1e3:.1f} ms ({len(ordered)} chunks)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    args = parser.parse_args(argv)
    rounds, mixed, cancels = (1, 8, 2) if args.quick else (3, 48, 8)
    print(
        f"Machine: {platform.python_implementation()} {platform.python_version()}, "
        f"{platform.machine()}; {SLOTS} slots per server"
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name, uploads in (("data URIs", False), ("uploads", True)):
            server = start_server(root, name.replace(" ", "-"), uploads=uploads)
            try:
                server.predict({"text": "warm up", "seed": 1})
                one = [x for r in range(rounds) for x in latencies(server, [100 + r])]
                four = [
                    x
                    for r in range(rounds)
                    for x in latencies(server, [200 + 10 * r + k for k in range(SLOTS)])
                ]
                print(f"\n{name}: chunk made -> SSE output event")
                print(f"  1 streaming:  {quantiles(one)}")
                print(f"  4 streaming:  {quantiles(four)}")
                started = time.monotonic()
                kinds = mixed_run(server, mixed)
                wait_for(lambda s=server: left(s) == (0, 0), 15)
                files, dirs = left(server)
                print(
                    f"  mixed run of {mixed} ({kinds}, 4 at a time, "
                    f"{time.monotonic() - started:.1f}s): {files} files and {dirs} directories "
                    "left"
                )
            finally:
                server.stop()
        server = start_server(root, "slow-encoder", env={"ENCODE_SECONDS": "0.1"})
        try:
            server.predict({"text": "warm up", "seed": 1})
            results = [cancel_once(server, 500 + n) for n in range(cancels)]
            took = [t for t, _, _ in results]
            dropped = [handed - encoded for _, handed, encoded in results]
            print("\nslow encoder (+100 ms per chunk): cancel -> canceled, once 4 chunks are out")
            print(
                f"  {len(took)} cancels: median {statistics.median(took) * 1e3:.0f} ms, "
                f"max {max(took) * 1e3:.0f} ms; queued encodes dropped per cancel: "
                f"{', '.join(map(str, dropped))} (of {', '.join(str(h) for _, h, _ in results)} "
                "chunks handed over)"
            )
            wait_for(lambda: left(server) == (0, 0), 15)
            files, dirs = left(server)
            print(f"  after the cancels: {files} files and {dirs} directories left")
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
