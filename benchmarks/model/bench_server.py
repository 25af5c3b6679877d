"""Benchmark: predict.py on the real Cog server vs the raw model loop, in the same run.

Run ``python -m benchmarks.model.bench_server`` from the repository root (``--quick``: fewer
tokens, a ~1 min run, as ``make gpu-check`` runs it; ``--runs K`` repeats the whole comparison
K times, 3 by default, each printed with its numbers; ``--json FILE`` also writes them to
FILE). It starts ``python -m cog.server.http`` for predict.py (concurrency 32, as ``make
serve``) with the harness in scripts/cog_server.py, and measures:

One stream
    The prompt ``def fibonacci(n):``, ``max_new_tokens`` 512, temperature 0.8, top_p 0.95,
    top_k 0, one fixed seed, through the server over SSE and through ``engine.generate`` in a
    fresh thread of this process (model loaded and warmed up in that thread, which sets
    predict.py's torch thread count as the scheduler's thread does). Raw TTFT is the time from
    calling ``generate`` to its first piece (the first non-empty one: predict.py sends no empty
    pieces, which only an incomplete UTF-8 character gives);
    server TTFT is client-side, from sending the request to the first ``output`` event, and
    server tokens/s is tokens / (``completed`` event - send). The server's own
    ``time_to_first_token`` and ``tokens_per_second`` metrics are shown too. Raw and server runs
    alternate in pairs (rotating which goes first); the ratio is the median of the pairs' ratios,
    against two targets: server tokens/s >= 95% of raw, and server TTFT <= raw TTFT + 20 ms.

Concurrent predictions
    N = 1, 8, 16, 32 predictions of 256 tokens (the same prompt, seeds 1..N) started at once,
    three ways, one after the other in each round (rotating which goes first).
    Server: N SSE requests from N client threads; aggregate tokens/s = all tokens / wall time of
    the run, TTFT client-side (send -> first ``output`` event), p50/p99 over all streams of all
    rounds. Scheduler: the same N requests on predict.py's ``Scheduler`` (its settings) in this
    process, each channel consumed by a thread: what the server adds shows in the difference.
    Raw batch: the ceiling — N prefills, then ``engine.decode`` over all N for 255 steps, in one
    thread, no scheduler, no channels, no server (its TTFT: the N-th prefill waits for the ones
    before it). server/raw is the median over rounds of each round's ratio: the two ran seconds
    apart, so a machine whose speed drifts (a shared one does, by +-20% within a minute) moves
    both. Targets: server >= 95% of raw at every N; N = 8 >= 3x and N = 32 >= 5x the tokens/s of
    N = 1 through the server; p50 TTFT at N = 8 <= 50 ms and at N = 32 <= 2x the raw loop's.

Where the server's time goes (``--json`` and the table's last columns), from /proc
(``benchmarks/proc_times.py``) over each server round, in cores (1.00 = one core the whole
run): the model thread's CPU and its run-queue wait (runnable, no core free), the worker's other
threads (coglet's slot threads iterating the channels, its event loop), coglet's parent process
(HTTP, SSE), and this process — the benchmark's client — whose CPU is not the server's and is
reported apart. ``python -m benchmarks.model.profile_server`` splits it further
(docs/benchmarks.md).

The machine is shared and small: treat single numbers as noisy. Exit status 0 either way.
"""

from __future__ import annotations

import argparse
import json
import math
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

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT / "scripts"))

from cog_server import CogServer, stage_predictor  # noqa: E402

from benchmarks import proc_times  # noqa: E402
from model import (  # noqa: E402
    Engine,
    SamplingParams,
    Scheduler,
    WeightsError,
    load_model,
    resolve_weights_path,
)
from predict import (  # noqa: E402
    FLUSH_EVERY,
    MAX_BATCH_SIZE,
    MAX_CONCURRENCY,
    TORCH_THREADS,
)

T = TypeVar("T")

PROMPT = "def fibonacci(n):"
SAMPLING: dict[str, Any] = {"temperature": 0.8, "top_k": 0, "top_p": 0.95}
SEED = 1
TOKENS_PER_SECOND_TARGET = 0.95  # server tokens/s >= this fraction of the raw loop's
TTFT_TARGET_MS = 20.0  # server TTFT <= raw TTFT + this many ms
CONCURRENT_TARGETS = {8: 3.0, 32: 5.0}  # N at once >= this many times one stream's tokens/s
TTFT_AT, TTFT_P50_TARGET_MS = 8, 50.0  # p50 TTFT with 8 at once <= 50 ms
TTFT_RAW_AT, TTFT_RAW_FACTOR = 32, 2.0  # p50 TTFT with 32 at once <= 2x the raw loop's
STREAM_TIMEOUT = 300.0  # seconds, per request


@dataclass(frozen=True)
class Settings:
    stream_tokens: int
    stream_rounds: int
    batch_tokens: int
    batch_rounds: int
    batch_sizes: tuple[int, ...]
    runs: int


FULL = Settings(
    stream_tokens=512,
    stream_rounds=5,
    batch_tokens=256,
    batch_rounds=5,
    batch_sizes=(1, 8, 16, 32),
    runs=3,
)
QUICK = Settings(  # gpu-check's: three rounds, so that each ratio is a median
    stream_tokens=128,
    stream_rounds=3,
    batch_tokens=64,
    batch_rounds=3,
    batch_sizes=(1, 8, 16, 32),
    runs=1,
)


@dataclass(frozen=True)
class Stream:
    ttft: float  # seconds
    rate: float  # tokens/s
    text: str
    server_ttft: float | None = None  # the server's time_to_first_token metric
    server_rate: float | None = None  # the server's tokens_per_second metric
    chunks: int = 0  # output events received


# ── helpers ──────────────────────────────────────────────────────────────────────────────────


def set_threads_like_predictor() -> None:
    """What predict.py's setup() does: TORCH_THREADS intra-op threads for the model thread."""
    if not torch.cuda.is_available():
        torch.set_num_threads(TORCH_THREADS)


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
        set_threads_like_predictor()  # in this thread, as the scheduler thread does in its own
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
        len(chunks),
    )


def bench_one_stream(server: CogServer, settings: Settings) -> dict[str, Any]:
    n = settings.stream_tokens
    print(
        f"\n1. one stream: {PROMPT!r}, {n} tokens, temperature {SAMPLING['temperature']}, "
        f"top_p {SAMPLING['top_p']}, top_k {SAMPLING['top_k']}, seed {SEED}; "
        f"median of {settings.stream_rounds} alternating rounds"
    )
    server_stream(server, 16, SEED)  # the server's first prediction, not timed
    raws: list[Stream] = []
    served: list[Stream] = []
    for r in range(settings.stream_rounds):  # raws[r] and served[r] ran one after the other
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

    ratio = median([s.rate / w.rate for s, w in zip(served, raws, strict=True)])
    diff = srv_ttft - raw_ttft
    ok_rate = ratio >= TOKENS_PER_SECOND_TARGET
    ok_ttft = diff <= TTFT_TARGET_MS
    print(
        f"   {'MET   ' if ok_rate else 'MISSED'} server tokens/s = {ratio:.1%} of raw, median of "
        f"the rounds' ratios (target >= {TOKENS_PER_SECOND_TARGET:.0%})"
    )
    print(
        f"   {'MET   ' if ok_ttft else 'MISSED'} server TTFT - raw TTFT = {diff:+.1f} ms "
        f"(target <= {TTFT_TARGET_MS:.0f} ms)"
    )
    return {
        "tokens": n,
        "raw_tokens_per_s": raw_rate,
        "server_tokens_per_s": srv_rate,
        "raw_ttft_ms": raw_ttft,
        "server_ttft_ms": srv_ttft,
        "server_vs_raw": ratio,
        "same_text": same,
    }


# ── concurrent predictions ───────────────────────────────────────────────────────────────────


@dataclass(frozen=True)
class Run:
    """N streams started at once: aggregate tokens/s and each stream's time to first token."""

    aggregate: float  # all tokens / wall time of the whole run
    ttft: list[float]  # seconds, one per stream
    cores: dict[str, float] | None = None  # server runs: CPU (and waits) in cores, see Cores
    cpu: float | None = None  # raw runs: the loop thread's CPU seconds


class Cores:
    """Where a server run's CPU went, in cores (CPU seconds / wall seconds), from /proc.

    The model thread is the worker's busiest thread (the scheduler's: nothing else in the worker
    comes close). ``client`` is this process (the benchmark's client threads; nothing else runs
    here during a server round), measured with its own CPU clock, which counts ended threads.
    """

    KEYS = ("model", "model_waited", "worker_other", "parent", "client")

    def __init__(self, server: CogServer) -> None:
        assert server.pid is not None
        self.parent = server.pid
        self.workers = proc_times.children(server.pid)
        self.before = proc_times.snapshot([self.parent, *self.workers])
        self.client = time.process_time()

    def end(self, wall: float) -> dict[str, float]:
        client = time.process_time() - self.client
        threads = proc_times.delta(self.before, proc_times.snapshot([self.parent, *self.workers]))
        worker = [t for t in threads if t.pid != self.parent]
        model = max(worker, key=lambda t: t.cpu, default=None)
        parent = sum(t.cpu for t in threads if t.pid == self.parent)
        other = sum(t.cpu for t in worker if t is not model)
        return {
            "model": (model.cpu if model else 0.0) / wall,
            "model_waited": (model.waited or 0.0) / wall if model else 0.0,
            "worker_other": other / wall,
            "parent": parent / wall,
            "client": client / wall,
        }


def run_together(jobs: Sequence[Callable[[], T]]) -> tuple[list[T], float, float]:
    """Start ``jobs`` in their own threads at once; their results, the batch's wall time and
    when it started (``time.perf_counter()``)."""
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
    return results, wall, start


def server_run(server: CogServer, n_streams: int, n_tokens: int) -> Run:
    """N SSE predictions at once; TTFT client-side, from sending to the first output event."""
    cores = Cores(server)
    results, wall, _ = run_together(
        [lambda i=i: server_stream(server, n_tokens, SEED + i) for i in range(n_streams)]
    )
    return Run(n_streams * n_tokens / wall, [r.ttft for r in results], cores.end(wall))


def scheduler_run(scheduler: Scheduler, n_streams: int, n_tokens: int) -> Run:
    """N requests on predict.py's scheduler in this process, each consumed by its own thread."""

    def job(i: int) -> Callable[[], float]:
        def call() -> float:
            start = time.perf_counter()
            channel = scheduler.submit(PROMPT, max_new_tokens=n_tokens, seed=SEED + i, **SAMPLING)
            first = None
            for _ in channel.stream():
                if first is None:
                    first = time.perf_counter() - start
            return first or float("nan")

        return call

    ttft, wall, _ = run_together([job(i) for i in range(n_streams)])
    return Run(n_streams * n_tokens / wall, ttft)


def raw_run(engine: Engine, n_streams: int, n_tokens: int) -> Run:
    """The ceiling: prefill N sequences, then decode them as one batch; no scheduler, no server.

    In a fresh thread with predict.py's torch threads, as the scheduler's thread runs it.
    """

    def body() -> Run:
        torch.set_num_threads(TORCH_THREADS)
        start = time.perf_counter()
        cpu = time.thread_time()
        seqs, ttft = [], []
        for i in range(n_streams):
            params = SamplingParams(seed=SEED + i, **SAMPLING)
            seqs.append(engine.prefill(PROMPT, params))
            ttft.append(time.perf_counter() - start)
        for _ in range(n_tokens - 1):
            engine.decode(seqs)
        for seq in seqs:
            engine.release(seq)
        wall = time.perf_counter() - start
        return Run(n_streams * n_tokens / wall, ttft, cpu=time.thread_time() - cpu)

    return in_thread(body, "raw-batch")


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else math.nan


def bench_concurrent(server: CogServer, settings: Settings, engine: Engine) -> list[dict[str, Any]]:
    n = settings.batch_tokens
    print(
        f"\n2. N predictions at once, {n} tokens each ({PROMPT!r}, seeds {SEED}..{SEED}+N-1): "
        f"through the server (SSE, concurrency {server.concurrency}), through predict.py's "
        f"scheduler in this process (no server), and the raw batch-N prefill + decode loop "
        f"(the ceiling); {settings.batch_rounds} round(s), one of each kind per round; "
        f"medians of the rounds, TTFT over all of them"
    )
    scheduler = Scheduler(
        engine,
        max_batch_size=MAX_BATCH_SIZE,
        flush_interval=FLUSH_EVERY,
        num_threads=TORCH_THREADS,
    ).start()
    kinds: dict[str, Callable[[int], Run]] = {
        "server": lambda b: server_run(server, b, n),
        "scheduler": lambda b: scheduler_run(scheduler, b, n),
        "raw": lambda b: raw_run(engine, b, n),
    }
    runs: dict[str, dict[int, list[Run]]] = {
        k: {b: [] for b in settings.batch_sizes} for k in kinds
    }
    try:
        for r in range(settings.batch_rounds):
            for b in settings.batch_sizes:
                order = list(kinds)
                order = order[r % 3 :] + order[: r % 3]  # rotate which goes first
                for kind in order:
                    runs[kind][b].append(kinds[kind](b))
    finally:
        scheduler.shutdown()

    def agg(kind: str, b: int) -> float:
        return median([x.aggregate for x in runs[kind][b]])

    def round_ratios(kind: str, b: int) -> list[float]:  # each round's kind/raw
        return [
            x.aggregate / w.aggregate for x, w in zip(runs[kind][b], runs["raw"][b], strict=True)
        ]

    def ratio(kind: str, b: int) -> float:
        return median(round_ratios(kind, b))

    def ttfts(kind: str, b: int) -> list[float]:
        return [t * 1e3 for x in runs[kind][b] for t in x.ttft]

    def cores(b: int, key: str) -> float:
        return median([x.cores[key] for x in runs["server"][b] if x.cores is not None])

    one = agg("server", settings.batch_sizes[0])
    print(
        f"   {'N':>3}  {'server':>7}  {'vs N=1':>6}  {'TTFT p50/p99':>13}  {'sched.':>7}  "
        f"{'raw':>7}  {'TTFT p50':>8}  {'server/raw':>10}  {'sched/raw':>9}  "
        f"{'cores: model (waited)  worker  parent  client':>45}"
    )
    print(f"   {'':3}  {'tok/s':>7}  {'':6}  {'ms':>13}  {'tok/s':>7}  {'tok/s':>7}  {'ms':>8}")
    for b in settings.batch_sizes:
        srv = ttfts("server", b)
        print(
            f"   {b:3d}  {agg('server', b):7.0f}  {agg('server', b) / one:5.2f}x  "
            f"{percentile(srv, 0.5):6.1f}/{percentile(srv, 0.99):6.1f}  "
            f"{agg('scheduler', b):7.0f}  {agg('raw', b):7.0f}  "
            f"{percentile(ttfts('raw', b), 0.5):8.1f}  {ratio('server', b):10.1%}  "
            f"{ratio('scheduler', b):9.1%}  {'':8}{cores(b, 'model'):.2f} "
            f"({cores(b, 'model_waited'):.2f})  {cores(b, 'worker_other'):6.2f}  "
            f"{cores(b, 'parent'):6.2f}  {cores(b, 'client'):6.2f}"
        )
    print(
        "   server/raw per round: "
        + "; ".join(
            f"N={b} " + " ".join(f"{x:.0%}" for x in round_ratios("server", b))
            for b in settings.batch_sizes
        )
    )
    for b in settings.batch_sizes:
        ok = ratio("server", b) >= TOKENS_PER_SECOND_TARGET
        print(
            f"   {'MET   ' if ok else 'MISSED'} N={b}: server = {ratio('server', b):.1%} of the "
            f"raw batch loop's tokens/s (target >= {TOKENS_PER_SECOND_TARGET:.0%})"
        )
    for b, target in CONCURRENT_TARGETS.items():
        if b in settings.batch_sizes:
            x = agg("server", b) / one
            print(
                f"   {'MET   ' if x >= target else 'MISSED'} {b} concurrent = {x:.2f}x "
                f"one stream's tokens/s through the server (target >= {target:g}x)"
            )
    if TTFT_AT in settings.batch_sizes:
        p50 = percentile(ttfts("server", TTFT_AT), 0.5)
        print(
            f"   {'MET   ' if p50 <= TTFT_P50_TARGET_MS else 'MISSED'} p50 TTFT at {TTFT_AT} "
            f"concurrent = {p50:.1f} ms (target <= {TTFT_P50_TARGET_MS:g} ms)"
        )
    if TTFT_RAW_AT in settings.batch_sizes:
        p50 = percentile(ttfts("server", TTFT_RAW_AT), 0.5)
        raw_p50 = percentile(ttfts("raw", TTFT_RAW_AT), 0.5)
        x = p50 / raw_p50
        print(
            f"   {'MET   ' if x <= TTFT_RAW_FACTOR else 'MISSED'} p50 TTFT at {TTFT_RAW_AT} "
            f"concurrent = {p50:.1f} ms = {x:.2f}x the raw loop's {raw_p50:.1f} ms "
            f"(target <= {TTFT_RAW_FACTOR:g}x)"
        )
    return [
        {
            "n": b,
            "tokens": n,
            "server_tokens_per_s": agg("server", b),
            "scheduler_tokens_per_s": agg("scheduler", b),
            "raw_tokens_per_s": agg("raw", b),
            "server_vs_raw": ratio("server", b),
            "scheduler_vs_raw": ratio("scheduler", b),
            "server_vs_raw_rounds": round_ratios("server", b),
            "server_ttft_ms_p50": percentile(ttfts("server", b), 0.5),
            "server_ttft_ms_p99": percentile(ttfts("server", b), 0.99),
            "raw_ttft_ms_p50": percentile(ttfts("raw", b), 0.5),
            "server_cores": {key: cores(b, key) for key in Cores.KEYS},
        }
        for b in settings.batch_sizes
    ]


# ── main ─────────────────────────────────────────────────────────────────────────────────────


def machine_line() -> str:
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return (
        f"machine: {os.cpu_count()} CPUs ({usable} usable), torch {torch.__version__}, "
        f"{torch.get_num_threads()} torch thread(s) (predict.py's TORCH_THREADS), "
        f"MAX_CONCURRENCY {MAX_CONCURRENCY}, MAX_BATCH_SIZE {MAX_BATCH_SIZE}, {device}, "
        f"Python {platform.python_version()}, "
        f"cog {package_version('cog')}, coglet {package_version('coglet')}"
    )


def run(settings: Settings, runs: int) -> dict[str, Any]:
    """``runs`` whole comparisons against one server; each printed with its numbers."""
    resolve_weights_path()  # WeightsError now rather than a server that fails its setup
    set_threads_like_predictor()
    print(machine_line(), flush=True)
    engine = in_thread(load_model, "raw-load")  # the raw batch loop's
    engine.warmup()
    results: list[dict[str, Any]] = []
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
            for k in range(runs):
                if runs > 1:
                    print(f"\n── run {k + 1} of {runs} ──", flush=True)
                results.append(
                    {
                        "one_stream": bench_one_stream(server, settings),
                        "concurrent": bench_concurrent(server, settings, engine),
                    }
                )
    if runs > 1:
        print("\nserver / raw, each run (median of its rounds; target >= 95%):")
        print("   " + "".join(f"{'run ' + str(k + 1):>9}" for k in range(runs)))
        rows = [("one stream", [r["one_stream"]["server_vs_raw"] for r in results])]
        for i, b in enumerate(settings.batch_sizes):
            rows.append((f"N = {b}", [r["concurrent"][i]["server_vs_raw"] for r in results]))
        for label, values in rows:
            print(f"   {label:10}" + "".join(f"{v:9.1%}" for v in values))
    return {"machine": machine_line(), **results[-1], "runs": results}


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.model.bench_server")
    ap.add_argument("--quick", action="store_true", help="fewer tokens (gpu-check's run)")
    ap.add_argument("--runs", type=int, help="whole comparisons (default: 3, --quick: 1)")
    ap.add_argument("--json", type=Path, help="also write the numbers to this JSON file")
    args = ap.parse_args()
    settings = QUICK if args.quick else FULL
    try:
        numbers = run(settings, args.runs or settings.runs)
        if args.json is not None:
            args.json.write_text(json.dumps(numbers, indent=2) + "\n")
    except WeightsError as e:
        print(f"no model weights ({e}); run `make weights` first")
    except Exception:
        print("benchmark failed:")
        traceback.print_exc(file=sys.stdout)


if __name__ == "__main__":
    main()
