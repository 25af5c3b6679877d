"""Benchmark: ``threading_utils.Batcher`` vs one forward pass per request, two CPU torch models.

Run ``python -m benchmarks.batching.bench_batching`` from the repository root (``--quick``: a
smoke run of a few seconds; the full run takes about two minutes). Two models built in code
(random weights, nothing downloaded), fp32 on the CPU:

(a) ``mlp``: a small classifier (256 -> 512 -> 512 -> 10) whose forward pass of one item is
    mostly per-call overhead, so its cost per item falls with the batch size;
(b) ``attention``: two transformer encoder blocks (d=128, 4 heads, MLP 512) over 256 tokens, whose
    cost per item does not fall with the batch size (the attention and the matrix products grow
    with it).

For 1, 8 and 32 concurrent callers — each a closed loop: submit a request, wait for its result,
submit the next — it measures requests per second and p50 / p99 latency (submit to result) of:

- ``solo, threads (lock)``: no batching. Each caller thread runs its own forward pass of one
  item, one at a time in arrival order (a FIFO lock, as a queue in front of one model serves
  them), on the same torch thread count as the batch thread (``--torch-threads``, default 1):
  the batcher's one thread without cross-request batching. The baseline of a sync predictor;
- ``solo, asyncio -> thread pool (lock)``: the same, called from tasks on one event loop through
  a thread pool (``asyncio.to_thread``'s way): an async predictor that must not block its loop
  has to hand the forward pass to a thread — the baseline of the asyncio rows;
- ``batcher, threads``: the callers are threads calling ``Batcher.submit``;
- ``batcher, asyncio``: the callers are tasks on one event loop awaiting ``Batcher.asubmit``
  (Cog's shape: ``@cog.concurrent`` async predictions), for each knob setting listed;
- ``raw batched``: no callers — one forward pass over N items at a time, in a loop: the ceiling.

Every batch function also runs one per-item call under each item's caller context (what a
metric per prediction costs). The modes of one N run in interleaved rounds (``--rounds``, 3;
each round in a rotated order) so that a neighbour's load spreads over all of them. Reported
per cell: throughput (the median round's) and ``x solo``, its ratio to the solo row of the same
callers (asyncio rows: the asyncio solo row; the others: the threads one) at the same N; latency
p50 / p99 over every round's requests (a request counts if it began inside a round's measured
window); the batch sizes that formed (mean / median / max); and, per model, the largest absolute
difference between a batched result and the same input's solo forward pass. The machine is
shared: compare ratios within one run, not absolute numbers across runs. Exit status 0 (a
benchmark, not a test).
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import os
import platform
import statistics
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import torch
from torch import nn

from threading_utils import Batcher, current_batch

CONCURRENCY = (1, 8, 32)
SOLO_THREADS = "solo, threads (lock)"
SOLO_ASYNC = "solo, asyncio -> thread pool (lock)"
INPUTS_PER_CALLER = 16

# What each item's caller context holds in a Cog prediction: its scope. Here a dict of metrics.
_metrics: contextvars.ContextVar[dict[str, float] | None] = contextvars.ContextVar(
    "metrics", default=None
)


def record(size: int, queue_time: float) -> None:
    """Per-item work in the caller's context: what ``current_scope().record_metric`` does."""
    metrics = _metrics.get()
    if metrics is not None:
        metrics["batch_size"] = size
        metrics["queue_ms"] = queue_time * 1000


# ── the models ─────────────────────────────────────────────────────────────────────────────────


def make_mlp() -> tuple[nn.Module, Callable[[torch.Generator], torch.Tensor]]:
    model = nn.Sequential(
        nn.Linear(256, 512), nn.GELU(), nn.Linear(512, 512), nn.GELU(), nn.Linear(512, 10)
    ).eval()
    return model, lambda gen: torch.randn(256, generator=gen)


class EncoderBlock(nn.Module):
    """Self-attention over the whole sequence and an MLP, pre-norm."""

    def __init__(self, dim: int = 128, heads: int = 4, hidden: int = 512) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, dim) -> (B, T, dim)
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, t, 3, self.heads, d // self.heads).unbind(2)
        attn = nn.functional.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        )
        x = x + self.proj(attn.transpose(1, 2).reshape(b, t, d))
        return x + self.mlp(self.norm2(x))


class Encoder(nn.Module):
    def __init__(self, blocks: int = 2) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(EncoderBlock() for _ in range(blocks))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, dim) -> (B, dim)
        for block in self.blocks:
            x = block(x)
        return x.mean(dim=1)


def make_attention() -> tuple[nn.Module, Callable[[torch.Generator], torch.Tensor]]:
    return Encoder().eval(), lambda gen: torch.randn(256, 128, generator=gen)


MODELS: dict[str, Callable[[], tuple[nn.Module, Callable[[torch.Generator], torch.Tensor]]]] = {
    "mlp": make_mlp,
    "attention": make_attention,
}

# The batcher knobs measured per model (max_batch_size, max_wait): the first is the one the docs
# recommend for that kind of model.
KNOBS: dict[str, list[tuple[int, float]]] = {
    "mlp": [(32, 0.0), (32, 0.002)],
    "attention": [(4, 0.0), (32, 0.0)],
}


class FifoLock:
    """A lock handed to its waiters in arrival order (``threading.Lock`` is not fair: the thread
    that releases it usually takes it again before a waiting one wakes, starving the others)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: deque[threading.Lock] = deque()
        self._held = False

    def __enter__(self) -> None:
        with self._lock:
            if not self._held:
                self._held = True
                return
            waiter = threading.Lock()
            waiter.acquire()
            self._waiters.append(waiter)
        waiter.acquire()  # released by __exit__: the lock is handed over, still held

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            if self._waiters:
                self._waiters.popleft().release()
            else:
                self._held = False


# ── one measured cell ──────────────────────────────────────────────────────────────────────────


@dataclass
class Cell:
    """One mode at one concurrency: its rounds' rates, latencies and batch sizes, pooled."""

    model: str
    callers: int
    mode: str
    rates: list[float] = field(default_factory=list)  # requests per second, one per round
    latencies: list[float] = field(default_factory=list)
    batch_sizes: list[int] = field(default_factory=list)

    @property
    def rate(self) -> float:
        """The median round's rate."""
        return statistics.median(self.rates) if self.rates else 0.0

    def merge(self, other: Cell) -> None:
        self.rates += other.rates
        self.latencies += other.latencies
        self.batch_sizes += other.batch_sizes


@dataclass
class Window:
    """The measured interval of a round: requests that end inside it count for throughput; the
    latency of every request that began inside it counts, also if it ends after it (a caller
    finishes its request in flight before it stops), so that a starved request is not missed."""

    start: float
    stop: float
    ended: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)

    def add(self, began: float, ended: float) -> None:
        if self.start <= ended <= self.stop:
            self.ended.append(ended)
        if self.start <= began < self.stop:
            self.latencies.append(ended - began)


class Bench:
    def __init__(self, name: str, seconds: float, warmup: float, torch_threads: int) -> None:
        self.name = name
        self.model, make_input = MODELS[name]()
        gen = torch.Generator().manual_seed(7)
        self.inputs = [make_input(gen) for _ in range(max(CONCURRENCY) * INPUTS_PER_CALLER)]
        self.seconds = seconds
        self.warmup = warmup
        self.torch_threads = torch_threads
        self.lock = FifoLock()
        self.batch_sizes: list[int] = []
        self.measuring = False
        self.batched: dict[int, torch.Tensor] = {}  # input index -> a batched result of it

    # the forward passes

    def forward(self, items: list[int]) -> list[torch.Tensor]:
        """The batch function: inputs are indices into self.inputs (one per request)."""
        batch = current_batch()
        for entry in batch:
            entry.run(record, len(batch), entry.queue_time)
        if self.measuring:
            self.batch_sizes.append(len(items))
        with torch.inference_mode():
            out = self.model(torch.stack([self.inputs[i] for i in items]))
        return list(out)

    def solo(self, index: int) -> torch.Tensor:
        with self.lock, torch.inference_mode():
            _metrics.get()  # the same per-request bookkeeping as the batch function's
            record(1, 0.0)
            return self.model(self.inputs[index][None])[0]

    def warm(self) -> None:
        with torch.inference_mode():
            for size in (1, 4, 8, 32):
                for _ in range(3):
                    self.model(torch.stack(self.inputs[:size]))

    # the callers

    def run_threads(
        self, callers: int, call: Callable[[int], torch.Tensor], *, keep: bool
    ) -> Window:
        """``callers`` threads, each calling ``call`` in a closed loop; ``keep``: remember the
        results as batched ones (for the difference to solo)."""
        now = time.perf_counter()
        window = Window(now + self.warmup, now + self.warmup + self.seconds)
        lock = threading.Lock()

        def caller(k: int) -> None:
            _metrics.set({})
            indices = range(k * INPUTS_PER_CALLER, (k + 1) * INPUTS_PER_CALLER)
            n = 0
            while True:
                index = indices[n % INPUTS_PER_CALLER]
                began = time.perf_counter()
                if began >= window.stop:
                    return
                result = call(index)
                ended = time.perf_counter()
                with lock:
                    window.add(began, ended)
                if keep:
                    self.batched[index] = result
                n += 1

        threads = [threading.Thread(target=caller, args=(k,)) for k in range(callers)]
        for thread in threads:
            thread.start()
        self.wait_measuring(window)
        for thread in threads:
            thread.join()
        return window

    def run_tasks(self, callers: int, batcher: Batcher[int, torch.Tensor] | None) -> Window:
        """``callers`` tasks on one event loop, each awaiting ``batcher.asubmit`` in a closed
        loop, or without a batcher, ``self.solo`` in a thread pool of ``callers`` threads (as
        ``asyncio.to_thread``, whose default pool has only min(32, CPUs + 4) threads)."""

        async def main() -> Window:
            now = time.perf_counter()
            window = Window(now + self.warmup, now + self.warmup + self.seconds)
            loop = asyncio.get_running_loop()
            pool = ThreadPoolExecutor(callers)

            def solo_in_pool(index: int) -> Awaitable[torch.Tensor]:
                context = contextvars.copy_context()
                return loop.run_in_executor(pool, context.run, self.solo, index)

            call = solo_in_pool if batcher is None else batcher.asubmit

            async def caller(k: int) -> None:
                _metrics.set({})
                indices = range(k * INPUTS_PER_CALLER, (k + 1) * INPUTS_PER_CALLER)
                n = 0
                while True:
                    index = indices[n % INPUTS_PER_CALLER]
                    began = time.perf_counter()
                    if began >= window.stop:
                        return
                    result = await call(index)
                    window.add(began, time.perf_counter())
                    if batcher is not None:
                        self.batched[index] = result
                    n += 1

            flag = asyncio.create_task(asyncio.to_thread(self.wait_measuring, window))
            await asyncio.gather(*(caller(k) for k in range(callers)))
            await flag
            pool.shutdown()
            return window

        return asyncio.run(main())

    def wait_measuring(self, window: Window) -> None:
        """Record batch sizes only inside the window (set from a side thread)."""
        time.sleep(max(0.0, window.start - time.perf_counter()))
        self.measuring = True
        time.sleep(max(0.0, window.stop - time.perf_counter()))
        self.measuring = False

    # the cells

    def cell(self, callers: int, mode: str, window: Window) -> Cell:
        sizes, self.batch_sizes = self.batch_sizes, []
        rate = len(window.ended) / self.seconds
        return Cell(self.name, callers, mode, [rate], window.latencies, sizes)

    def solo_cell(self, callers: int, use_async: bool) -> Cell:
        if use_async:
            return self.cell(callers, SOLO_ASYNC, self.run_tasks(callers, None))
        return self.cell(callers, SOLO_THREADS, self.run_threads(callers, self.solo, keep=False))

    def batcher(self, max_batch_size: int, max_wait: float) -> Batcher[int, torch.Tensor]:
        return Batcher(
            self.forward,
            max_batch_size=max_batch_size,
            max_wait=max_wait,
            num_threads=self.torch_threads,
            name="bench-batcher",
        ).start()

    def batcher_cell(self, callers: int, knobs: tuple[int, float], use_async: bool) -> Cell:
        size, wait = knobs
        callers_kind = "asyncio" if use_async else "threads"
        mode = f"batcher, {callers_kind} (max {size}, wait {wait * 1e3:g} ms)"
        with self.batcher(size, wait) as batcher:
            if use_async:
                window = self.run_tasks(callers, batcher)
            else:
                window = self.run_threads(callers, batcher.submit, keep=True)
        return self.cell(callers, mode, window)

    def raw_cell(self, callers: int) -> Cell:
        """One forward pass over `callers` items at a time, in this thread: the ceiling."""
        items = list(range(callers))
        start = time.perf_counter()
        window = Window(start + self.warmup, start + self.warmup + self.seconds)
        while True:
            began = time.perf_counter()
            if began >= window.stop:
                break
            with torch.inference_mode():
                self.model(torch.stack([self.inputs[i] for i in items]))
            ended = time.perf_counter()
            if window.start <= ended <= window.stop:
                window.ended.extend([ended] * callers)
            if window.start <= began < window.stop:
                window.latencies.append(ended - began)
        cell = self.cell(callers, "raw batched (no callers)", window)
        cell.batch_sizes = [callers]
        return cell

    def max_difference(self) -> float:
        """Largest |batched - solo| over every input that got a batched result."""
        worst = 0.0
        with torch.inference_mode():
            for index, result in self.batched.items():
                alone = self.model(self.inputs[index][None])[0]
                worst = max(worst, (result - alone).abs().max().item())
        return worst


# ── the report ─────────────────────────────────────────────────────────────────────────────────


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def sizes_text(sizes: list[int]) -> str:
    if not sizes:
        return "-"
    return f"{statistics.fmean(sizes):.1f} / {statistics.median(sizes):g} / {max(sizes)}"


def print_table(cells: list[Cell]) -> None:
    header = (
        f"{'N':>3}  {'mode':<42} {'req/s':>8} {'x solo':>7} {'p50 ms':>8} {'p99 ms':>8}  "
        "batch mean / p50 / max"
    )
    print(header)
    print("-" * len(header))
    # x solo: the ratio to the solo row of the same callers (asyncio rows: the asyncio solo row;
    # the others: the threads one)
    solo = {(c.callers, c.mode): c.rate for c in cells if c.mode in (SOLO_THREADS, SOLO_ASYNC)}
    previous = None
    for c in cells:
        if previous is not None and c.callers != previous:
            print()
        previous = c.callers
        base = solo.get((c.callers, SOLO_ASYNC if "asyncio" in c.mode else SOLO_THREADS))
        ratio = f"{c.rate / base:.2f}" if base else "-"
        p50, p99 = (percentile(c.latencies, q) * 1e3 for q in (0.5, 0.99))
        print(
            f"{c.callers:>3}  {c.mode:<42} {c.rate:>8.0f} {ratio:>7} {p50:>8.2f} {p99:>8.2f}"
            f"  {sizes_text(c.batch_sizes)}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few seconds")
    parser.add_argument("--seconds", type=float, help="measured seconds per cell and round")
    parser.add_argument("--rounds", type=int, help="interleaved rounds per concurrency")
    parser.add_argument("--torch-threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=list(MODELS))
    args = parser.parse_args()
    seconds = args.seconds or (0.3 if args.quick else 0.8)
    rounds = args.rounds or (1 if args.quick else 3)
    warmup = 0.1 if args.quick else 0.3
    torch.set_num_threads(args.torch_threads)  # every thread started later gets it too
    print(
        f"bench_batching: torch {torch.__version__}, {args.torch_threads} torch thread(s), "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}; {rounds} interleaved "
        f"round(s) of {seconds:g} s per cell, rates are the median round's"
        + (" (--quick)" if args.quick else "")
    )
    targets: list[str] = []
    for name in args.models:
        bench = Bench(name, seconds, warmup, args.torch_threads)
        bench.warm()
        cells: list[Cell] = []
        for callers in CONCURRENCY:
            cells += measure(bench, callers, rounds)
        print(f"\n({name}) {describe(name)}")
        print_table(cells)
        difference = bench.max_difference()
        print(f"max |batched - solo| over {len(bench.batched)} inputs: {difference:.2e}")
        targets += target_lines(name, cells)
    print("\nTargets (ratios of this run):")
    for line in targets:
        print(f"  {line}")


def measure(bench: Bench, callers: int, rounds: int) -> list[Cell]:
    """Every mode at one concurrency, in ``rounds`` rounds, each in a rotated order."""
    knobs = KNOBS[bench.name]
    modes: list[Callable[[], Cell]] = [
        lambda: bench.solo_cell(callers, use_async=False),
        lambda: bench.solo_cell(callers, use_async=True),
        lambda: bench.batcher_cell(callers, knobs[0], use_async=False),
        *(lambda k=k: bench.batcher_cell(callers, k, use_async=True) for k in knobs),
        lambda: bench.raw_cell(callers),
    ]
    cells: list[Cell | None] = [None] * len(modes)
    for r in range(rounds):
        for i in [(r + j) % len(modes) for j in range(len(modes))]:
            cell = modes[i]()
            existing = cells[i]
            if existing is None:
                cells[i] = cell
            else:
                existing.merge(cell)
    return [cell for cell in cells if cell is not None]


def describe(name: str) -> str:
    if name == "mlp":
        return "mlp: 256 -> 512 -> 512 -> 10, one item = one 256-vector"
    return "attention: two encoder blocks, d=128, 4 heads, MLP 512, one item = 256 tokens"


def target_lines(name: str, cells: list[Cell]) -> list[str]:
    """The issue's targets, each against the solo baseline of the same kind of callers."""

    def rate(callers: int, mode: str) -> float:
        return next(c.rate for c in cells if c.callers == callers and c.mode == mode)

    size, wait = KNOBS[name][0]
    knobs = f"(max {size}, wait {wait * 1e3:g} ms)"
    pairs = [
        (f"batcher, {kind} {knobs}", solo)
        for kind, solo in (("asyncio", SOLO_ASYNC), ("threads", SOLO_THREADS))
    ]
    lines = []
    for batched, solo in pairs:
        kind = "asyncio" if solo == SOLO_ASYNC else "threads"
        if name == "mlp":
            ratio = rate(32, batched) / rate(32, solo)
            verdict = "met" if ratio >= 3 else "NOT met"
            lines.append(
                f"(a) mlp, 32 {kind} callers: batcher / solo = {ratio:.2f} (target >= 3: {verdict})"
            )
        else:
            ratios = [rate(n, batched) / rate(n, solo) for n in CONCURRENCY]
            verdict = "met" if min(ratios) >= 0.9 else "NOT met"
            shown = ", ".join(f"{r:.2f}" for r in ratios)
            lines.append(
                f"(b) attention, {kind} callers, max_batch_size={size}: batcher / solo at N = "
                f"{', '.join(map(str, CONCURRENCY))}: {shown} (target >= 0.90: {verdict})"
            )
    return lines


if __name__ == "__main__":
    main()
