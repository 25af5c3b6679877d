"""capture_context, ContextThread and ContextThreadPoolExecutor: what a worker thread sees."""

from __future__ import annotations

import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from conftest import request_id

from threading_utils import (
    ContextThread,
    ContextThreadPoolExecutor,
    StreamClosed,
    async_generator_from_thread,
    capture_context,
    generator_from_thread,
)


def torch_modes() -> tuple[bool, bool, bool, torch.dtype]:
    return (
        torch.is_grad_enabled(),
        torch.is_inference_mode_enabled(),
        torch.is_autocast_enabled("cpu"),
        torch.get_autocast_dtype("cpu"),
    )


DEFAULT_MODES = (True, False, False, torch.bfloat16)


def in_plain_thread(fn):
    out = []
    t = threading.Thread(target=lambda: out.append(fn()))
    t.start()
    t.join()
    return out[0]


def test_plain_thread_loses_the_context_and_torch_modes():
    # The problem this package exists for: if this stops failing, the tests below prove nothing.
    request_id.set("r1")
    with torch.inference_mode():
        assert in_plain_thread(request_id.get) == "unset"
        assert in_plain_thread(torch_modes) == DEFAULT_MODES


def test_capture_context_carries_contextvars_into_another_thread():
    token = request_id.set("r1")
    try:
        snapshot = capture_context()
    finally:
        request_id.reset(token)
    assert request_id.get() == "unset"
    assert in_plain_thread(lambda: snapshot.run(request_id.get)) == "r1"


def test_one_snapshot_runs_in_many_threads_at_once_each_with_its_own_copy():
    request_id.set("shared")
    snapshot = capture_context()
    barrier = threading.Barrier(8)

    def body(i: int) -> tuple[str, str]:
        before = request_id.get()
        request_id.set(f"mine-{i}")
        barrier.wait(timeout=10)  # all eight runs are inside the same snapshot now
        return before, request_id.get()

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: snapshot.run(body, i), range(8)))
    assert results == [("shared", f"mine-{i}") for i in range(8)]
    assert request_id.get() == "shared"  # nothing leaked back


@pytest.mark.parametrize(
    ("enter", "expected"),
    [
        (torch.no_grad, (False, False, False, torch.bfloat16)),
        (torch.inference_mode, (False, True, False, torch.bfloat16)),
        (lambda: torch.autocast("cpu", dtype=torch.bfloat16), (True, False, True, torch.bfloat16)),
        (lambda: torch.autocast("cpu", dtype=torch.float16), (True, False, True, torch.float16)),
    ],
    ids=["no_grad", "inference_mode", "autocast-bf16", "autocast-fp16"],
)
def test_torch_modes_travel_and_the_worker_thread_gets_its_own_back(enter, expected):
    with enter():
        snapshot = capture_context()

    def check() -> tuple[object, object]:
        inside = snapshot.run(torch_modes)
        return inside, torch_modes()

    inside, after = in_plain_thread(check)
    assert inside == expected
    assert after == DEFAULT_MODES


def test_torch_modes_seen_inside_stream_producers():
    @generator_from_thread()
    def sync_modes():
        yield torch_modes()
        with torch.no_grad():
            yield torch_modes()
        yield torch_modes()  # back to the captured state, not the thread default

    @async_generator_from_thread()
    def async_modes():
        yield torch_modes()

    import asyncio

    async def consume():
        return [m async for m in async_modes()]

    with torch.inference_mode():
        stream = sync_modes()
    assert list(stream) == [(False, True, False, torch.bfloat16)] * 3

    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        coro = consume()
    # Captured when async_modes() is called, inside consume(), i.e. outside the `with` block.
    assert asyncio.run(coro) == [DEFAULT_MODES]

    async def consume_inside():
        with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
            stream = async_modes()
        return [m async for m in stream]

    assert asyncio.run(consume_inside()) == [(False, False, True, torch.bfloat16)]


def test_a_producer_builds_no_autograd_graph_under_the_callers_inference_mode():
    weight = torch.ones(3, requires_grad=True)

    @generator_from_thread()
    def forward():
        yield (weight * 2).requires_grad

    with torch.inference_mode():
        stream = forward()
    assert list(stream) == [False]
    assert in_plain_thread(lambda: (weight * 2).requires_grad) is True


def test_context_thread_uses_the_context_at_start_not_at_construction():
    seen: list[str] = []
    thread = ContextThread(target=lambda: seen.append(request_id.get()))
    request_id.set("at-start")
    thread.start()
    thread.join()
    assert seen == ["at-start"]


def test_context_thread_subclass_run_override_is_covered():
    seen: list[object] = []

    class Worker(ContextThread):
        def run(self) -> None:
            seen.append((request_id.get(), torch.is_inference_mode_enabled()))

    request_id.set("sub")
    with torch.inference_mode():
        worker = Worker()
        worker.start()
    worker.join()
    assert seen == [("sub", True)]


def test_context_thread_pool_executor_uses_each_submitters_context():
    def submit_from(name: str, pool: ContextThreadPoolExecutor) -> list[str]:
        request_id.set(name)
        futures = [pool.submit(request_id.get) for _ in range(4)]
        mapped = list(pool.map(lambda _: request_id.get(), range(4)))
        return [f.result() for f in futures] + mapped

    with ContextThreadPoolExecutor(max_workers=2) as pool:
        results = {}
        threads = [
            threading.Thread(target=lambda n=n: results.__setitem__(n, submit_from(n, pool)))
            for n in ("a", "b", "c")
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert results == {n: [n] * 8 for n in ("a", "b", "c")}


def test_capture_context_never_imports_torch():
    code = (
        "import sys, threading_utils as tu\n"
        "s = tu.capture_context(); s.run(print, 'ran')\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.split() == ["ran", "False"]


def test_a_context_thread_ended_by_stream_closed_exits_quietly_and_other_errors_are_reported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reported: list[type[BaseException]] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: reported.append(args.exc_type))

    def raise_(exc: BaseException) -> None:
        raise exc

    quiet = ContextThread(target=raise_, args=(StreamClosed(),))
    loud = ContextThread(target=raise_, args=(ValueError("boom"),))
    for thread in (quiet, loud):
        thread.start()
        thread.join()
    assert reported == [ValueError]
