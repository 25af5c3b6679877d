"""Benchmark: handing a generator's items from a worker thread to an ``async for`` consumer.

Run ``python -m benchmarks.bench_bridge`` (``--quick`` for a smoke run). It measures, in one run:

Throughput
    A trivial producer (``yield from range(N)``) consumed with ``async for`` on the event loop,
    through each bridge, and the same generator iterated by a plain ``for`` loop in a thread (no
    bridge). N is calibrated per variant so that one run takes about ``target_s`` seconds; the
    variants are run in interleaved rounds (rotating their order) and the median rate is reported.

Hand-off latency
    The producer sleeps ``interval`` (1 ms), takes ``time.perf_counter()`` just before ``yield``
    and yields that stamp; the consumer records ``perf_counter() - stamp`` on receipt. The floor
    is the event loop's own wake-up from another thread: a plain thread sleeps ``interval``, then
    calls ``loop.call_soon_threadsafe(callback, perf_counter())`` and the callback records the
    delta. Rounds of all variants are interleaved; p50 / p99 are over the pooled samples.

Ordered stage: cost per item
    A callback producer hands N items of no work (``identity``) to a 2-thread
    ``ContextThreadPoolExecutor`` and they are sent in order to an ``async for`` consumer:
    through ``OrderedStage.submit``, through the hand-written sender thread it replaces (a
    bounded queue of futures, one thread calling ``emit``, a join, error capture), and, as the
    floor, with ``emit(item)`` directly (no pool). Reported: microseconds per item, median of
    interleaved rounds, and the cost over ``emit`` alone.

It ends with the project's two targets and whether this run met them. The machine is shared and
small, so treat single numbers as noisy; the exit status is 0 either way (a benchmark, not a test).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import os
import platform
import queue
import statistics
import sys
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from benchmarks import seed_bridge
from threading_utils import (
    ContextThread,
    ContextThreadPoolExecutor,
    Emit,
    OrderedStage,
    async_generator_from_callback,
    async_generator_from_thread,
)

SEED = "seed (article), defaults"
TO_THREAD = "asyncio.to_thread(next, it)"
TU = "threading_utils, defaults"
TU_UNBOUNDED = "threading_utils, max_queue_size=0"
RAW = "raw for-loop in a thread"
FLOOR = "floor: loop.call_soon_threadsafe"
TASK_FLOOR = "floor: ... -> Future -> Task"

THROUGHPUT_TARGET = 100.0  # threading_utils items/s >= this many times the seed's
LATENCY_TARGET = 1.2  # threading_utils p50 hand-off <= this many times the loop's wake-up p50

WARMUP_SAMPLES = 10  # latency samples dropped at the start of every run

Bridge = Callable[..., AsyncIterator[Any]]
"""``bridge(gen_func, *args)``: run ``gen_func(*args)`` in a thread, return an async iterator."""


# ── producers ────────────────────────────────────────────────────────────────────────────────


def count_up(n: int) -> Iterator[int]:
    """The throughput producer: as cheap as a generator gets."""
    yield from range(n)


def stamps(n: int, interval: float) -> Iterator[float]:
    """The latency producer: every ``interval`` s, yield ``perf_counter()`` taken just before."""
    sleep = time.sleep
    clock = time.perf_counter
    for _ in range(n):
        sleep(interval)
        yield clock()


# ── bridges ──────────────────────────────────────────────────────────────────────────────────


async def _to_thread_stream(iterator: Iterator[Any]) -> AsyncIterator[Any]:
    sentinel = object()
    while True:
        item = await asyncio.to_thread(next, iterator, sentinel)
        if item is sentinel:
            return
        yield item


def bridge_seed(gen_func: Callable[..., Iterable[Any]], *args: Any) -> AsyncIterator[Any]:
    return seed_bridge.async_generator_from_thread()(gen_func)(*args)


def bridge_to_thread(gen_func: Callable[..., Iterable[Any]], *args: Any) -> AsyncIterator[Any]:
    return _to_thread_stream(iter(gen_func(*args)))


def bridge_threading_utils(
    gen_func: Callable[..., Iterable[Any]], *args: Any
) -> AsyncIterator[Any]:
    return async_generator_from_thread()(gen_func)(*args)


def bridge_threading_utils_unbounded(
    gen_func: Callable[..., Iterable[Any]], *args: Any
) -> AsyncIterator[Any]:
    return async_generator_from_thread(max_queue_size=0)(gen_func)(*args)


THROUGHPUT_BRIDGES: dict[str, Bridge] = {
    SEED: bridge_seed,
    TO_THREAD: bridge_to_thread,
    TU: bridge_threading_utils,
    TU_UNBOUNDED: bridge_threading_utils_unbounded,
}
LATENCY_BRIDGES: dict[str, Bridge] = {
    SEED: bridge_seed,
    TO_THREAD: bridge_to_thread,
    TU: bridge_threading_utils,
}


# ── throughput ───────────────────────────────────────────────────────────────────────────────


@dataclass
class Throughput:
    name: str
    n: int
    rates: list[float]  # items/s, one per round

    @property
    def median(self) -> float:
        return statistics.median(self.rates)


async def bridged_rate(bridge: Bridge, n: int) -> float:
    """Items/s of ``count_up(n)`` through ``bridge``, from creating the stream to its end."""
    start = time.perf_counter()
    count = 0
    async for _ in bridge(count_up, n):
        count += 1
    elapsed = time.perf_counter() - start
    if count != n:
        raise AssertionError(f"expected {n} items, got {count}")
    return n / elapsed


def _raw_loop(n: int) -> float:
    start = time.perf_counter()
    count = 0
    for _ in count_up(n):
        count += 1
    return count / (time.perf_counter() - start)


async def raw_rate(n: int) -> float:
    """Items/s of ``count_up(n)`` iterated by a plain ``for`` loop in a worker thread."""
    return await asyncio.get_running_loop().run_in_executor(None, _raw_loop, n)


async def calibrate(measure: Callable[[int], Awaitable[float]], target_s: float) -> int:
    """An N for which ``measure(N)`` takes about ``target_s`` seconds."""
    n = 500
    while True:
        rate = await measure(n)
        if n / rate >= min(0.05, target_s / 4):
            return max(n, round(rate * target_s))
        n *= 4


async def measure_throughput(target_s: float, rounds: int) -> list[Throughput]:
    measures: dict[str, Callable[[int], Awaitable[float]]] = {RAW: raw_rate}
    for name, bridge in THROUGHPUT_BRIDGES.items():
        measures[name] = functools.partial(bridged_rate, bridge)
    results: dict[str, Throughput] = {}
    for name, measure in measures.items():
        _progress(f"throughput: calibrating {name}")
        results[name] = Throughput(name, await calibrate(measure, target_s), [])
    names = list(measures)
    for r in range(rounds):
        _progress(f"throughput: round {r + 1}/{rounds}")
        for name in names[r % len(names) :] + names[: r % len(names)]:
            gc.collect()
            results[name].rates.append(await measures[name](results[name].n))
    return [results[name] for name in names]


# ── latency ──────────────────────────────────────────────────────────────────────────────────


@dataclass
class Latency:
    name: str
    samples: list[float]  # seconds, all rounds pooled
    round_p50s: list[float]  # seconds

    def quantile(self, q: float) -> float:
        ordered = sorted(self.samples)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    @property
    def p50(self) -> float:
        return self.quantile(0.50)

    @property
    def p99(self) -> float:
        return self.quantile(0.99)


async def bridged_latency(bridge: Bridge, n: int, interval: float) -> list[float]:
    """Hand-off delays (s) of ``n`` stamps through ``bridge``, warm-up samples dropped."""
    clock = time.perf_counter
    delays: list[float] = []
    append = delays.append
    async for stamp in bridge(stamps, n + WARMUP_SAMPLES, interval):
        append(clock() - stamp)
    return delays[WARMUP_SAMPLES:]


async def floor_latency(n: int, interval: float) -> list[float]:
    """The event loop's own wake-up delay (s) for a callback scheduled from another thread."""
    loop = asyncio.get_running_loop()
    finished: asyncio.Future[None] = loop.create_future()
    clock = time.perf_counter
    delays: list[float] = []
    append = delays.append

    def record(stamp: float) -> None:
        append(clock() - stamp)

    def producer() -> None:
        call = loop.call_soon_threadsafe
        for _ in range(n + WARMUP_SAMPLES):
            time.sleep(interval)
            call(record, clock())
        call(finished.set_result, None)

    thread = threading.Thread(target=producer, name="bench-floor", daemon=True)
    thread.start()
    await finished
    thread.join()
    return delays[WARMUP_SAMPLES:]


async def task_floor_latency(n: int, interval: float) -> list[float]:
    """The floor for an awaiting consumer: thread -> ``call_soon_threadsafe`` -> Future -> Task."""
    loop = asyncio.get_running_loop()
    clock = time.perf_counter
    pending: deque[float | None] = deque()
    waiting: list[asyncio.Future[None]] = []

    def deliver(stamp: float | None) -> None:
        pending.append(stamp)
        if waiting and not waiting[0].done():
            waiting[0].set_result(None)

    def producer() -> None:
        call = loop.call_soon_threadsafe
        for _ in range(n + WARMUP_SAMPLES):
            time.sleep(interval)
            call(deliver, clock())
        call(deliver, None)

    thread = threading.Thread(target=producer, name="bench-task-floor", daemon=True)
    thread.start()
    delays: list[float] = []
    while True:
        if pending:
            stamp = pending.popleft()
            if stamp is None:
                break
            delays.append(clock() - stamp)
            continue
        future: asyncio.Future[None] = loop.create_future()
        waiting[:] = [future]
        await future
    thread.join()
    return delays[WARMUP_SAMPLES:]


async def measure_latency(samples: int, rounds: int, interval: float) -> list[Latency]:
    """``rounds`` interleaved rounds of ``samples // rounds`` samples for every variant."""
    per_round = max(1, samples // rounds)
    measures: dict[str, Callable[[], Awaitable[list[float]]]] = {
        FLOOR: functools.partial(floor_latency, per_round, interval),
        TASK_FLOOR: functools.partial(task_floor_latency, per_round, interval),
    }
    for name, bridge in LATENCY_BRIDGES.items():
        measures[name] = functools.partial(bridged_latency, bridge, per_round, interval)
    results = {name: Latency(name, [], []) for name in measures}
    names = list(measures)
    for r in range(rounds):
        _progress(f"latency: round {r + 1}/{rounds}")
        for name in names[r % len(names) :] + names[: r % len(names)]:
            gc.collect()
            delays = await measures[name]()
            results[name].samples.extend(delays)
            results[name].round_p50s.append(statistics.median(delays))
    return [results[name] for name in names]


# ── ordered stage: cost per item ─────────────────────────────────────────────────────────────

ORDERED_EMIT = "emit(item) directly, no pool"
ORDERED_SENDER = "pool + hand-written sender thread"
ORDERED_STAGE = "pool + OrderedStage.submit"
ORDERED_POOL_THREADS = 2
ORDERED_MAX_PENDING = 64


def _identity(item: int) -> int:
    return item


def produce_by_emit(emit: Emit[int], n: int) -> None:
    for i in range(n):
        emit(i)


def produce_by_sender_thread(emit: Emit[int], n: int) -> None:
    """What OrderedStage replaces (docs/bridge.md): one thread calls emit, in hand-off order."""
    pending: queue.Queue[Any] = queue.Queue(maxsize=ORDERED_MAX_PENDING)
    errors: list[BaseException] = []

    def sender() -> None:
        try:
            while (future := pending.get()) is not None:
                emit(future.result())
        except BaseException as exc:  # StreamClosed too: the consumer left
            errors.append(exc)
            while pending.get() is not None:  # let the producer's puts through
                pass

    with ContextThreadPoolExecutor(ORDERED_POOL_THREADS) as pool:
        thread = ContextThread(target=sender)
        thread.start()
        try:
            for i in range(n):
                if errors:
                    break
                pending.put(pool.submit(_identity, i))
        finally:
            pending.put(None)
            thread.join()
            if errors:
                pool.shutdown(cancel_futures=True)
        if errors:
            raise errors[0]


def produce_by_ordered_stage(emit: Emit[int], n: int) -> None:
    with (
        ContextThreadPoolExecutor(ORDERED_POOL_THREADS) as pool,
        OrderedStage(emit, pool, max_pending=ORDERED_MAX_PENDING) as stage,
    ):
        for i in range(n):
            stage.submit(_identity, i)


ORDERED_PRODUCERS: dict[str, Callable[[Emit[int], int], None]] = {
    ORDERED_EMIT: produce_by_emit,
    ORDERED_SENDER: produce_by_sender_thread,
    ORDERED_STAGE: produce_by_ordered_stage,
}


@dataclass
class PerItem:
    name: str
    n: int
    seconds: list[float]  # per item, one per round

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


async def ordered_seconds_per_item(producer: Callable[[Emit[int], int], None], n: int) -> float:
    """Seconds per item of ``producer`` handing ``n`` items to an ``async for`` consumer."""
    start = time.perf_counter()
    expected = 0
    async for item in async_generator_from_callback()(producer)(n):
        if item != expected:
            raise AssertionError(f"item {item} arrived where {expected} was due")
        expected += 1
    elapsed = time.perf_counter() - start
    if expected != n:
        raise AssertionError(f"expected {n} items, got {expected}")
    return elapsed / n


async def measure_ordered(n: int, rounds: int) -> list[PerItem]:
    results = {name: PerItem(name, n, []) for name in ORDERED_PRODUCERS}
    names = list(ORDERED_PRODUCERS)
    for r in range(rounds):
        _progress(f"ordered stage: round {r + 1}/{rounds}")
        for name in names[r % len(names) :] + names[: r % len(names)]:
            gc.collect()
            results[name].seconds.append(await ordered_seconds_per_item(ORDERED_PRODUCERS[name], n))
    return [results[name] for name in names]


def format_ordered(per_item: Sequence[PerItem]) -> str:
    floor = {p.name: p for p in per_item}[ORDERED_EMIT].median
    lines = [
        f"Ordered stage: a callback producer hands {per_item[0].n:,} items of no work to a"
        f" {ORDERED_POOL_THREADS}-thread pool (max_pending={ORDERED_MAX_PENDING}), sent in order"
        f" to `async for`; median of {len(per_item[0].seconds)} interleaved round(s)",
        f"  {'variant':<34} {'us/item':>9} {'min..max us/item':>18} {'over emit':>11}",
    ]
    for p in per_item:
        spread = f"{min(p.seconds) * 1e6:.1f}..{max(p.seconds) * 1e6:.1f}"
        over = "" if p.name == ORDERED_EMIT else f"+{(p.median - floor) * 1e6:.1f} us"
        lines.append(f"  {p.name:<34} {p.median * 1e6:>9.1f} {spread:>18} {over:>11}")
    return "\n".join(lines)


# ── report ───────────────────────────────────────────────────────────────────────────────────


def machine_line() -> str:
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    cpus = f"{os.cpu_count()} CPUs" + (
        f" ({affinity} usable)" if affinity is not None and affinity != os.cpu_count() else ""
    )
    load = ""
    if hasattr(os, "getloadavg"):
        load = ", load avg {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    return (
        f"Machine: {cpus}{load}; {platform.python_implementation()} {platform.python_version()}"
        f" on {platform.system()} {platform.machine()}; switch interval"
        f" {sys.getswitchinterval() * 1e3:g} ms"
    )


def _ratio(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}x"
    if value >= 1:
        return f"{value:.2f}x"
    return f"{value:.2g}x"


def format_report(
    throughput: Sequence[Throughput],
    latency: Sequence[Latency],
    *,
    interval: float,
    machine: str | None = None,
) -> str:
    """The plain-text report: machine, throughput table, latency table, targets."""
    by_rate = {t.name: t for t in throughput}
    by_lat = {lat.name: lat for lat in latency}
    seed_rate = by_rate[SEED].median
    raw = by_rate[RAW].median
    lines = [
        "Stream bridge benchmark: generator in a worker thread -> `async for` on the event loop",
        machine if machine is not None else machine_line(),
        "",
        f"Throughput: producer `yield from range(N)`; median of"
        f" {len(throughput[0].rates)} interleaved round(s)",
        f"  {'variant':<34} {'N':>11} {'items/s':>13} {'min..max items/s':>23}"
        f" {'vs seed':>9} {'vs raw':>8}",
    ]
    for t in throughput:
        spread = f"{min(t.rates):,.0f}..{max(t.rates):,.0f}"
        lines.append(
            f"  {t.name:<34} {t.n:>11,} {t.median:>13,.0f} {spread:>23}"
            f" {_ratio(t.median / seed_rate):>9} {_ratio(t.median / raw):>8}"
        )
    lines += [
        "",
        f"Hand-off latency: a stamp yielded every {interval * 1e3:g} ms, received on the loop;"
        f" {len(latency[0].round_p50s)} interleaved round(s), samples pooled",
        f"  {'variant':<34} {'samples':>8} {'p50 us':>8} {'p99 us':>9}"
        f" {'round p50s us':>15} {'p50 vs floor':>13} {'vs Task floor':>14}",
    ]
    floor = by_lat[FLOOR].p50
    task_floor = by_lat[TASK_FLOOR].p50
    for lat in latency:
        spread = f"{min(lat.round_p50s) * 1e6:.0f}..{max(lat.round_p50s) * 1e6:.0f}"
        lines.append(
            f"  {lat.name:<34} {len(lat.samples):>8} {lat.p50 * 1e6:>8.1f} {lat.p99 * 1e6:>9.1f}"
            f" {spread:>15} {_ratio(lat.p50 / floor):>13} {_ratio(lat.p50 / task_floor):>14}"
        )
    speedup = by_rate[TU].median / seed_rate
    lat_ratio = by_lat[TU].p50 / floor
    lines += [
        "",
        "Targets:",
        f"  [{'MET' if speedup >= THROUGHPUT_TARGET else 'MISSED':<6}] threading_utils items/s"
        f" >= {THROUGHPUT_TARGET:g}x the seed's (defaults): {_ratio(speedup)}",
        f"  [{'MET' if lat_ratio <= LATENCY_TARGET else 'MISSED':<6}] threading_utils p50"
        f" hand-off <= {LATENCY_TARGET:g}x the loop's own wake-up p50: {_ratio(lat_ratio)}"
        f" ({by_lat[TU].p50 * 1e6:.1f} us vs {floor * 1e6:.1f} us)",
        f"  (for reference: {_ratio(by_lat[TU].p50 / task_floor)} the p50 of the least any"
        f" awaiting consumer pays, {TASK_FLOOR!r}: {task_floor * 1e6:.1f} us)",
    ]
    return "\n".join(lines)


# ── main ─────────────────────────────────────────────────────────────────────────────────────

_verbose = False  # main() turns progress lines on unless --quiet


def _progress(message: str) -> None:
    if _verbose:
        print(f"... {message}", file=sys.stderr, flush=True)


async def run_benchmark(
    *,
    target_s: float,
    rounds: int,
    samples: int,
    latency_rounds: int,
    interval: float,
) -> tuple[list[Throughput], list[Latency]]:
    throughput = await measure_throughput(target_s, rounds)
    latency = await measure_latency(samples, latency_rounds, interval)
    return throughput, latency


def main(argv: Sequence[str] | None = None) -> int:
    global _verbose
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a ~10 s smoke run")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = parser.parse_args(argv)
    _verbose = not args.quiet
    if args.quick:
        target_s, rounds, samples, latency_rounds, ordered_n = 0.15, 2, 400, 2, 5_000
    else:
        target_s, rounds, samples, latency_rounds, ordered_n = 0.7, 3, 1800, 6, 40_000
    interval = 0.001
    throughput, latency = asyncio.run(
        run_benchmark(
            target_s=target_s,
            rounds=rounds,
            samples=samples,
            latency_rounds=latency_rounds,
            interval=interval,
        )
    )
    ordered = asyncio.run(measure_ordered(ordered_n, rounds))
    print(format_report(throughput, latency, interval=interval))
    print()
    print(format_ordered(ordered))
    return 0


if __name__ == "__main__":
    sys.exit(main())
