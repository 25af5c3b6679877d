"""Smoke tests for benchmarks/: the seed baseline is faithful, and the report renders."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Iterator

import pytest

from benchmarks import bench_bridge, seed_bridge

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


async def collect(agen) -> list:
    return [item async for item in agen]


def test_seed_bridge_delivers_items_in_order_with_the_callers_context():
    @seed_bridge.async_generator_from_thread()
    def numbers(n: int) -> Iterator[tuple[int, str]]:
        for i in range(n):
            yield i, request_id.get()

    async def main() -> list:
        request_id.set("req-1")
        return await collect(numbers(500))

    assert asyncio.run(main()) == [(i, "req-1") for i in range(500)]


def test_seed_bridge_forwards_the_producers_exception_after_its_items():
    boom = ValueError("boom")

    @seed_bridge.async_generator_from_thread(max_queue_size=4)
    def failing() -> Iterator[int]:
        yield 1
        yield 2
        raise boom

    async def drain(received: list[int]) -> None:
        async for item in failing():
            received.append(item)

    async def main() -> list[int]:
        received: list[int] = []
        with pytest.raises(ValueError, match="boom") as info:
            await drain(received)
        assert info.value is boom
        return received

    assert asyncio.run(main()) == [1, 2]


def test_benchmark_functions_and_report():
    throughput, latency = asyncio.run(
        bench_bridge.run_benchmark(
            target_s=0.02, rounds=1, samples=30, latency_rounds=1, interval=0.0005
        )
    )
    names = {t.name for t in throughput}
    assert {bench_bridge.RAW, bench_bridge.SEED, bench_bridge.TU} <= names
    assert all(rate > 0 for t in throughput for rate in t.rates)
    assert {lat.name for lat in latency} >= {bench_bridge.FLOOR, bench_bridge.TU}
    assert all(len(lat.samples) == 30 for lat in latency)
    assert all(0 < delay < 1 for lat in latency for delay in lat.samples)

    report = bench_bridge.format_report(throughput, latency, interval=0.0005)
    assert report.splitlines()[1].startswith("Machine: ")
    for heading in ("Throughput:", "Hand-off latency:", "Targets:"):
        assert heading in report
    for name in names | {lat.name for lat in latency}:
        assert name in report
    assert report.count("[MET") + report.count("[MISSED") == 2


def test_the_ordered_stage_cost_per_item_is_measured_and_reported():
    per_item = asyncio.run(bench_bridge.measure_ordered(300, 1))
    assert {p.name for p in per_item} == set(bench_bridge.ORDERED_PRODUCERS)
    assert all(0 < seconds < 1 for p in per_item for seconds in p.seconds)
    report = bench_bridge.format_ordered(per_item)
    assert report.startswith("Ordered stage:")
    for name in bench_bridge.ORDERED_PRODUCERS:
        assert name in report
    assert report.count(" us\n") + report.endswith(" us") == 2  # over emit: the pooled two
