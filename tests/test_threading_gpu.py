"""The bridge on CUDA: inference mode, CUDA autocast and the current device reach worker threads.

Skipped without CUDA (`make gpu-check` runs them on a machine that has it). The CPU-side
counterparts are in test_threading_context.py; here the same state is checked where it matters
on a GPU: tensors made on the device in a `ContextThread` or a stream producer are inference
tensors, matmuls there run in the autocast dtype, and the producer's current device is the
caller's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
import torch

from threading_utils import (
    Channel,
    ContextThread,
    ContextThreadPoolExecutor,
    async_generator_from_thread,
    generator_from_callback,
    generator_from_thread,
)

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
    pytest.mark.timeout(60),
]


def cuda_state() -> tuple[bool, bool, torch.dtype, int]:
    """(inference mode, result is an inference tensor, dtype of a matmul, current device)."""
    a = torch.ones(8, 8, device="cuda")
    out = a @ a
    return (
        torch.is_inference_mode_enabled(),
        out.is_inference(),
        out.dtype,
        torch.cuda.current_device(),
    )


def in_context_thread(fn: Any) -> Any:
    results: list[Any] = []
    thread = ContextThread(target=lambda: results.append(fn()))
    thread.start()
    thread.join(timeout=30)
    assert not thread.is_alive()
    return results[0]


def test_plain_defaults_on_cuda() -> None:
    assert in_context_thread(cuda_state) == (False, False, torch.float32, 0)


def test_context_thread_carries_inference_mode_and_cuda_autocast() -> None:
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
        expected = cuda_state()
        inside = in_context_thread(cuda_state)
    assert expected == (True, True, torch.bfloat16, 0)
    assert inside == expected


def test_executor_carries_cuda_autocast_fp16() -> None:
    with (
        torch.autocast("cuda", dtype=torch.float16),
        ContextThreadPoolExecutor(max_workers=2) as pool,
    ):
        inside = pool.submit(cuda_state).result(timeout=30)
    assert inside == (False, False, torch.float16, 0)


def test_stream_producers_see_the_consumers_cuda_state() -> None:
    @generator_from_thread()
    def produce() -> Iterator[tuple[bool, bool, torch.dtype, int]]:
        yield cuda_state()
        with torch.autocast("cuda", enabled=False):
            yield cuda_state()
        yield cuda_state()  # back to the captured state

    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
        stream = produce()
        seen = list(stream)
    assert seen == [
        (True, True, torch.bfloat16, 0),
        (True, True, torch.float32, 0),
        (True, True, torch.bfloat16, 0),
    ]


def test_callback_producer_sees_cuda_autocast() -> None:
    def produce(emit: Any) -> None:
        emit(cuda_state())

    with torch.autocast("cuda", dtype=torch.bfloat16):
        seen = list(generator_from_callback()(produce)())
    assert seen == [(False, False, torch.bfloat16, 0)]


def test_async_producer_sees_inference_mode_on_cuda() -> None:
    @async_generator_from_thread()
    def produce() -> Iterator[tuple[bool, bool, torch.dtype, int]]:
        yield cuda_state()

    async def consume() -> list[Any]:
        with torch.inference_mode():
            stream = produce()
        return [item async for item in stream]

    assert asyncio.run(consume()) == [(True, True, torch.float32, 0)]


def test_channel_feeder_runs_in_the_submitters_cuda_state() -> None:
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
        channel: Channel[Any] = Channel()

    def feed() -> None:  # a scheduler-like thread of its own, with its own (default) modes
        assert channel.run(cuda_state) == (True, True, torch.bfloat16, 0)
        channel.send(channel.run(cuda_state))
        channel.close()

    thread = ContextThread(target=feed)  # captured here: default modes
    thread.start()
    assert list(channel.stream()) == [(True, True, torch.bfloat16, 0)]
    thread.join(timeout=30)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_current_device_travels() -> None:
    torch.cuda.init()
    with torch.cuda.device(1):
        assert in_context_thread(cuda_state)[3] == 1

        @generator_from_thread()
        def produce() -> Iterator[int]:
            yield torch.cuda.current_device()

        stream = produce()
    assert list(stream) == [1]
    assert in_context_thread(torch.cuda.current_device) == 0
