"""Benchmark: predict.py on the real Cog server vs the raw model loop, in the same run.

Run ``python -m benchmarks.bench_server`` from the repository root (``--quick`` for a ~20 s smoke
run). It starts ``python -m cog.server.http`` for predict.py (concurrency 8, as ``make serve``)
with the harness in scripts/cog_server.py, and measures:

One stream
    The prompt ``def fibonacci(n):``, ``max_new_tokens`` 512, temperature 0.8, top_p 0.95,
    top_k 0, one fixed seed, through the server over SSE and through ``engine.generate`` in a
    fresh thread of this process (model loaded and warmed up in that thread, torch threads set as
    predict.py sets them). Raw TTFT is the time from calling ``generate`` to its first piece (the
    first non-empty one: predict.py sends no empty pieces, which only an incomplete UTF-8
    character gives);
    server TTFT is client-side, from sending the request to the first ``output`` event, and
    server tokens/s is tokens / (``completed`` event - send). The server's own
    ``time_to_first_token`` and ``tokens_per_second`` metrics are shown too. Raw and server runs
    alternate (rotating which goes first); medians are reported, against two targets: server
    tokens/s >= 95% of raw, and server TTFT <= raw TTFT + 20 ms.

Concurrent predictions
    N = 1, 2, 4, 8 synchronous predictions (256 tokens each) sent at once from a thread pool;
    aggregate tokens/s = all tokens / wall time of the batch, and the median per-stream rate. For
    reference, N Python threads each running ``generate`` on one shared engine in this process.
    This is the baseline for batching; there is no target.

The machine is shared and small: treat single numbers as noisy. Exit status 0 either way.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "scripts"))

from cog_server import CogServer, stage_predictor  # noqa: E402

from model import Engine, WeightsError, load_model, resolve_weights_path  # noqa: E402
from predict import MAX_CONCURRENCY  # noqa: E402

T = TypeVar("T")

PROMPT = "def fibonacci(n):"
SAMPLING: dict[str, Any] = {"temperature": 0.8, "top_k": 0, "top_p": 0.95}
SEED = 1
TOKENS_PER_SECOND_TARGET = 0.95  # server tokens/s >= this fraction of the raw loop's
TTFT_TARGET_MS = 20.0  # server TTFT <= raw TTFT + this many ms
STREAM_TIMEOUT = 300.0  # seconds, per request
AT_CAPACITY_RETRIES = 100  # a 409 is retried after 5 ms, this many times at most


@dataclass(frozen=True)
class Settings:
    stream_tokens: int
    stream_rounds: int
    batch_tokens: int
    batch_rounds: int
    batch_sizes: tuple[int, ...]


FULL = Settings(
    stream_tokens=512, stream_rounds=5, batch_tokens=256, batch_rounds=3, batch_sizes=(1, 2, 4, 8)
)
QUICK = Settings(
    stream_tokens=128, stream_rounds=2, batch_tokens=64, batch_rounds=1, batch_sizes=(1, 2, 4, 8)
)


@dataclass(frozen=True)
class Stream:
    ttft: float  # seconds
    rate: float  # tokens/s
    text: str
    server_ttft: float | None = None  # the server's time_to_first_token metric
    server_rate: float | None = None  # the server's tokens_per_second metric


@dataclass(frozen=True)
class Batch:
    aggregate: float  # all tokens / wall time
    per_stream: list[float]  # tokens/s of each stream, client-side
    server_per_stream: list[float]  # the server's tokens_per_second metric (server only)
    retries: int = 0  # requests answered 409 (at capacity) and sent again


# ── helpers ──────────────────────────────────────────────────────────────────────────────────


def set_threads_like_predictor() -> None:
    """What predict.py's setup() does: one intra-op thread per stream's share of the cores."""
    if not torch.cuda.is_available():
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // MAX_CONCURRENCY))


def in_thread(fn: Callable[[], T], name: str) -> T:
    """Run ``fn`` in a fresh thread and return its result (or raise its exception)."""
    results: list[T] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            results.append(fn())
        except BaseException as e:
            errors.append(e)

    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return results[0]


def inputs(n_tokens: int, seed: int) -> dict[str, Any]:
    return {"prompt": PROMPT, "max_new_tokens": n_tokens, "seed": seed, **SAMPLING}


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "?"


# ── one stream ───────────────────────────────────────────────────────────────────────────────


def raw_stream(n_tokens: int, seed: int) -> Stream:
    """Load, warm up and time ``generate`` in a fresh thread, as the server's worker would."""

    def body() -> Stream:
        engine = load_model()
        engine.warmup()
        pieces: list[str] = []
        first: float | None = None
        start = time.perf_counter()
        for piece in engine.generate(PROMPT, max_new_tokens=n_tokens, seed=seed, **SAMPLING):
            if first is None and piece:  # the server sends no empty pieces: compare like with like
                first = time.perf_counter() - start
            pieces.append(piece)
        total = time.perf_counter() - start
        assert len(pieces) == n_tokens, f"raw loop gave {len(pieces)} pieces"
        return Stream(first or 0.0, n_tokens / total, "".join(pieces))

    return in_thread(body, "raw-stream")


def server_stream(server: CogServer, n_tokens: int, seed: int) -> Stream:
    """One SSE prediction; times are client-side, from sending the request."""
    events = server.predict_stream(inputs(n_tokens, seed), timeout=STREAM_TIMEOUT)
    chunks: list[str] = []
    first: float | None = None
    final: dict[str, Any] | None = None
    end = 0.0
    sent = time.monotonic()  # the request goes out on the first next()
    for event in events:  # the server ends the stream after `completed`
        if event.event == "output":
            if first is None:
                first = event.time - sent
            chunks.append(event.data["chunk"])
        elif event.event == "completed":
            final, end = event.data, event.time
    if final is None or final.get("status") != "succeeded":
        raise RuntimeError(f"prediction did not succeed: {final}")
    metrics = final.get("metrics", {})
    count = metrics.get("output_token_count", n_tokens)
    assert count == n_tokens, f"server gave {count} tokens"
    return Stream(
        first if first is not None else float("nan"),
        n_tokens / (end - sent),
        "".join(chunks),
        metrics.get("time_to_first_token"),
        metrics.get("tokens_per_second"),
    )


def bench_one_stream(server: CogServer, settings: Settings) -> None:
    n = settings.stream_tokens
    print(
        f"\n1. one stream: {PROMPT!r}, {n} tokens, temperature {SAMPLING['temperature']}, "
        f"top_p {SAMPLING['top_p']}, top_k {SAMPLING['top_k']}, seed {SEED}; "
        f"median of {settings.stream_rounds} alternating rounds"
    )
    server_stream(server, 16, SEED)  # the server's first prediction, not timed
    raws: list[Stream] = []
    served: list[Stream] = []
    for r in range(settings.stream_rounds):
        order = ("raw", "server") if r % 2 == 0 else ("server", "raw")
        for kind in order:
            if kind == "raw":
                raws.append(raw_stream(n, SEED))
            else:
                served.append(server_stream(server, n, SEED))

    raw_rate = median([s.rate for s in raws])
    raw_ttft = median([s.ttft for s in raws]) * 1e3
    srv_rate = median([s.rate for s in served])
    srv_ttft = median([s.ttft for s in served]) * 1e3
    metric_ttft = median([s.server_ttft for s in served if s.server_ttft is not None]) * 1e3
    metric_rate = median([s.server_rate for s in served if s.server_rate is not None])
    same = all(s.text == raws[0].text for s in (*raws, *served))

    print(f"   {'':34}{'raw loop':>12}{'server':>12}")
    print(f"   {'tokens/s':34}{raw_rate:12.1f}{srv_rate:12.1f}   (server: send -> completed)")
    print(f"   {'TTFT, ms':34}{raw_ttft:12.1f}{srv_ttft:12.1f}   (server: send -> first output)")
    print(f"   {'server metric tokens_per_second':34}{'':12}{metric_rate:12.1f}")
    print(f"   {'server metric time_to_first_token':34}{'':12}{metric_ttft:12.1f}   (ms)")
    print(
        f"   per round, tokens/s: raw {' '.join(f'{s.rate:.0f}' for s in raws)}; "
        f"server {' '.join(f'{s.rate:.0f}' for s in served)}"
    )
    print(f"   same text from every run: {'yes' if same else 'NO'}")

    ratio = srv_rate / raw_rate
    diff = srv_ttft - raw_ttft
    ok_rate = ratio >= TOKENS_PER_SECOND_TARGET
    ok_ttft = diff <= TTFT_TARGET_MS
    print(
        f"   {'MET   ' if ok_rate else 'MISSED'} server tokens/s = {ratio:.1%} of raw "
        f"(target >= {TOKENS_PER_SECOND_TARGET:.0%})"
    )
    print(
        f"   {'MET   ' if ok_ttft else 'MISSED'} server TTFT - raw TTFT = {diff:+.1f} ms "
        f"(target <= {TTFT_TARGET_MS:.0f} ms)"
    )


# ── concurrent predictions ───────────────────────────────────────────────────────────────────


def run_together(jobs: Sequence[Callable[[], T]]) -> tuple[list[T], float]:
    """Start ``jobs`` in their own threads at once; their results and the batch's wall time."""
    barrier = threading.Barrier(len(jobs) + 1)

    def wait_then(job: Callable[[], T]) -> T:
        barrier.wait()
        return job()

    with ThreadPoolExecutor(len(jobs)) as pool:
        futures = [pool.submit(wait_then, job) for job in jobs]
        barrier.wait()
        start = time.perf_counter()
        results = [f.result() for f in futures]
        wall = time.perf_counter() - start
    return results, wall


def server_batch(server: CogServer, n_streams: int, n_tokens: int) -> Batch:
    retries = [0]
    retry_lock = threading.Lock()

    def job(seed: int) -> Callable[[], tuple[float, dict[str, Any]]]:
        def call() -> tuple[float, dict[str, Any]]:
            start = time.perf_counter()
            for _ in range(AT_CAPACITY_RETRIES):
                code, body = server.predict(inputs(n_tokens, seed), timeout=STREAM_TIMEOUT)
                if code != 409:
                    break
                # coglet answers before it frees the slot: a request sent right after another
                # one's answer can find the slot still taken
                with retry_lock:
                    retries[0] += 1
                time.sleep(0.005)
            seconds = time.perf_counter() - start
            if code != 200 or body.get("status") != "succeeded":
                raise RuntimeError(f"prediction (N={n_streams}) answered {code}: {body}")
            return seconds, body

        return call

    results, wall = run_together([job(i) for i in range(n_streams)])
    tokens = sum(body["metrics"]["output_token_count"] for _, body in results)
    return Batch(
        tokens / wall,
        [body["metrics"]["output_token_count"] / s for s, body in results],
        [body["metrics"]["tokens_per_second"] for _, body in results],
        retries[0],
    )


def raw_batch(engine: Engine, n_streams: int, n_tokens: int) -> Batch:
    def job(seed: int) -> Callable[[], float]:
        def call() -> float:
            start = time.perf_counter()
            count = sum(
                1 for _ in engine.generate(PROMPT, max_new_tokens=n_tokens, seed=seed, **SAMPLING)
            )
            assert count == n_tokens
            return time.perf_counter() - start

        return call

    seconds, wall = run_together([job(i) for i in range(n_streams)])
    return Batch(n_streams * n_tokens / wall, [n_tokens / s for s in seconds], [])


def bench_concurrent(server: CogServer, settings: Settings) -> None:
    n = settings.batch_tokens
    print(
        f"\n2. concurrent predictions: {n} tokens each, server concurrency {server.concurrency} "
        f"(sync POST /predictions from N client threads) vs N Python threads running generate "
        f"on one engine; median of {settings.batch_rounds} round(s)"
    )

    def load() -> Engine:
        engine = load_model()
        engine.warmup()
        return engine

    engine = in_thread(load, "raw-load")
    server_runs: dict[int, list[Batch]] = {b: [] for b in settings.batch_sizes}
    raw_runs: dict[int, list[Batch]] = {b: [] for b in settings.batch_sizes}
    for r in range(settings.batch_rounds):
        for b in settings.batch_sizes:
            order = ("raw", "server") if (r + b) % 2 == 0 else ("server", "raw")
            for kind in order:
                if kind == "raw":
                    raw_runs[b].append(raw_batch(engine, b, n))
                else:
                    server_runs[b].append(server_batch(server, b, n))

    header = (
        f"   {'N':>3}  {'server agg':>11}  {'per stream':>10}  {'(metric)':>9}  "
        f"{'raw agg':>9}  {'per stream':>10}  {'server/raw':>10}"
    )
    print(header)
    print(f"   {'':3}  {'tokens/s':>11}  {'tokens/s':>10}  {'':9}  {'tokens/s':>9}")
    for b in settings.batch_sizes:
        srv, raw = server_runs[b], raw_runs[b]
        srv_agg = median([x.aggregate for x in srv])
        raw_agg = median([x.aggregate for x in raw])
        print(
            f"   {b:3d}  {srv_agg:11.1f}  "
            f"{median([v for x in srv for v in x.per_stream]):10.1f}  "
            f"{median([v for x in srv for v in x.server_per_stream]):9.1f}  "
            f"{raw_agg:9.1f}  {median([v for x in raw for v in x.per_stream]):10.1f}  "
            f"{srv_agg / raw_agg:10.1%}"
        )
    retried = sum(x.retries for runs in server_runs.values() for x in runs)
    if retried:
        print(f"   ({retried} request(s) answered 409 'at capacity' and retried after 5 ms)")


# ── main ─────────────────────────────────────────────────────────────────────────────────────


def machine_line() -> str:
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return (
        f"machine: {os.cpu_count()} CPUs ({usable} usable), torch {torch.__version__}, "
        f"{torch.get_num_threads()} torch thread(s) (set as predict.py does, "
        f"MAX_CONCURRENCY {MAX_CONCURRENCY}), {device}, Python {platform.python_version()}, "
        f"cog {package_version('cog')}, coglet {package_version('coglet')}"
    )


def run(settings: Settings) -> None:
    resolve_weights_path()  # WeightsError now rather than a server that fails its setup
    set_threads_like_predictor()
    print(machine_line(), flush=True)
    with tempfile.TemporaryDirectory(prefix="bench_server-") as tmp:
        cwd = stage_predictor(REPO_ROOT / "predict.py", Path(tmp) / "predictor")
        started = time.perf_counter()
        with CogServer(
            "predict.py:Predictor",
            cwd=cwd,
            concurrency=MAX_CONCURRENCY,
            startup_timeout=120.0,
        ) as server:
            print(f"server ready in {time.perf_counter() - started:.1f}s", flush=True)
            bench_one_stream(server, settings)
            bench_concurrent(server, settings)


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_server")
    ap.add_argument("--quick", action="store_true", help="fewer tokens and rounds (smoke run)")
    args = ap.parse_args()
    try:
        run(QUICK if args.quick else FULL)
    except WeightsError as e:
        print(f"no model weights ({e}); run `make weights` first")
    except Exception:
        print("benchmark failed:")
        traceback.print_exc(file=sys.stdout)


if __name__ == "__main__":
    main()
