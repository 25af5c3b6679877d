"""coglet_cancel: cancelling a finished future stops its bridge stream; other futures unchanged."""

from __future__ import annotations

import asyncio
import concurrent.futures
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest
from cog_server import REPO_ROOT
from conftest import CogServers, wait_until

import coglet_cancel
from threading_utils import Channel, generator_from_callback, generator_from_thread, stop_requested

ORIGINAL_CANCEL = Future.cancel


@pytest.fixture(autouse=True)
def no_hook_left_behind() -> Iterator[None]:
    assert not coglet_cancel.installed()
    yield
    coglet_cancel.uninstall()
    assert Future.cancel is ORIGINAL_CANCEL


@pytest.fixture
def hook() -> None:
    assert coglet_cancel.install()


# ── every other future behaves exactly as before ──────────────────────────────────────────────


class Boom(Exception):
    pass


def _pending() -> Future[Any]:
    return Future()


def _running() -> Future[Any]:
    future: Future[Any] = Future()
    assert future.set_running_or_notify_cancel()
    return future


def _finished_with(result: Any) -> Callable[[], Future[Any]]:
    def make() -> Future[Any]:
        future: Future[Any] = Future()
        future.set_result(result() if callable(result) else result)
        return future

    return make


def _failed() -> Future[Any]:
    future: Future[Any] = Future()
    future.set_exception(Boom("no"))
    return future


def _cancelled() -> Future[Any]:
    future: Future[Any] = Future()
    assert future.cancel()
    return future


def _plain_generator() -> Iterator[int]:
    yield from range(3)


FUTURES: dict[str, Callable[[], Future[Any]]] = {
    "pending": _pending,
    "running": _running,
    "finished with None": _finished_with(None),
    "finished with a list": _finished_with([1, 2]),
    "finished with a plain generator": _finished_with(_plain_generator),
    "finished with an unhashable, unweakrefable value": _finished_with(lambda: {"a": [1]}),
    "finished with an exception": _failed,
    "already cancelled": _cancelled,
}


def observe(make: Callable[[], Future[Any]]) -> dict[str, Any]:
    """Cancel a fresh future twice; everything a caller can see of it, and of its callbacks."""
    future = make()
    called: list[str] = []
    future.add_done_callback(lambda f: called.append("early"))
    first = future.cancel()
    second = future.cancel()
    future.add_done_callback(lambda f: called.append("late"))
    seen: dict[str, Any] = {
        "returns": (first, second),
        "state": (future.cancelled(), future.done(), future.running()),
        "callbacks": called,
    }
    if future.done() and not future.cancelled():
        error = future.exception(timeout=0)
        seen["exception"] = repr(error)
        if error is None:
            result = future.result(timeout=0)
            seen["result"] = list(result) if hasattr(result, "__next__") else result
    return seen


@pytest.mark.parametrize("make", FUTURES.values(), ids=FUTURES.keys())
def test_a_future_whose_result_is_not_a_stream_behaves_as_without_the_hook(
    make: Callable[[], Future[Any]],
) -> None:
    without = observe(make)
    coglet_cancel.install()
    assert observe(make) == without


def test_a_running_executor_task_is_neither_cancelled_nor_disturbed(hook: None) -> None:
    release = threading.Event()
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(lambda: release.wait(10) and "done")
        wait_until(future.running, what="the task to start")
        assert future.cancel() is False
        release.set()
        assert future.result(timeout=10) == "done"
        assert (future.done(), future.cancelled()) == (True, False)


def test_asyncio_futures_are_untouched(hook: None) -> None:
    async def main() -> tuple[bool, bool]:
        future = asyncio.get_running_loop().create_future()
        task = asyncio.ensure_future(asyncio.sleep(10))
        return future.cancel(), task.cancel()

    assert asyncio.Future.cancel is not Future.cancel
    assert asyncio.run(main()) == (True, True)


# ── install / uninstall ───────────────────────────────────────────────────────────────────────


def test_install_is_explicit_idempotent_and_reversible() -> None:
    assert Future.cancel is ORIGINAL_CANCEL  # importing the module changed nothing
    assert coglet_cancel.install() is True
    wrapped = Future.cancel
    assert wrapped is not ORIGINAL_CANCEL
    assert coglet_cancel.install() is False
    assert Future.cancel is wrapped  # not wrapped twice
    assert coglet_cancel.installed()
    assert coglet_cancel.uninstall() is True
    assert Future.cancel is ORIGINAL_CANCEL
    assert coglet_cancel.uninstall() is False
    assert not coglet_cancel.installed()


def test_concurrent_installs_wrap_once() -> None:
    barrier = threading.Barrier(8)

    def install() -> bool:
        barrier.wait()
        return coglet_cancel.install()

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: install(), range(8)))
    assert sorted(results) == [False] * 7 + [True]
    assert Future.cancel.__wrapped__ is ORIGINAL_CANCEL  # type: ignore[attr-defined]


def test_importing_it_or_the_bridge_patches_nothing_and_imports_no_cog() -> None:
    code = (
        "import sys, concurrent.futures as cf\n"
        "original = cf.Future.cancel\n"
        "import threading_utils\n"
        "assert 'coglet_cancel' not in sys.modules and 'cog' not in sys.modules\n"
        "import coglet_cancel\n"
        "assert cf.Future.cancel is original\n"
        "bad = {'cog', 'coglet', 'model', 'predict', 'torch'} & set(sys.modules)\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=True, timeout=60)


# ── a finished future whose result is a bridge stream: the stream stops ─────────────────────


def test_cancelling_a_finished_future_stops_its_generator_stream(hook: None) -> None:
    stopped = threading.Event()
    cleaned_up = threading.Event()

    @generator_from_thread(max_queue_size=2)
    def tokens() -> Iterator[int]:
        try:
            n = 0
            while not stop_requested():
                yield n
                n += 1
            stopped.set()
        finally:
            cleaned_up.set()

    stream = tokens()
    future: Future[Any] = Future()
    future.set_result(stream)
    assert next(stream) == 0
    assert future.cancel() is False  # Future semantics: a finished future stays finished
    assert cleaned_up.wait(5)  # the producer was closed: its finally ran in its thread
    assert list(stream) == []  # the consumer ends quietly, dropping what was queued
    assert (future.done(), future.cancelled(), future.result()) == (True, False, stream)


def test_a_stream_is_stopped_before_its_producer_started(hook: None) -> None:
    started = threading.Event()

    @generator_from_thread()
    def tokens() -> Iterator[int]:
        started.set()
        yield 1

    stream = tokens()
    future: Future[Any] = Future()
    future.set_result(stream)
    assert future.cancel() is False
    assert list(stream) == []
    assert not started.is_set()


def test_a_callback_stream_is_stopped(hook: None) -> None:
    @generator_from_callback(max_queue_size=1)
    def pushes(emit: Callable[[int], None]) -> None:
        n = 0
        while True:
            emit(n)  # raises StreamClosed once stopped
            n += 1

    stream = pushes()
    future: Future[Any] = Future()
    future.set_result(stream)
    assert next(stream) == 0
    future.cancel()
    assert list(stream) == []


def test_a_channel_stream_is_stopped_and_its_feeder_told(hook: None) -> None:
    ready = threading.Event()
    channel: Channel[str] = Channel(on_ready=ready.set)
    stream = channel.stream()
    future: Future[Any] = Future()
    future.set_result(stream)
    assert channel.send("a")
    assert next(stream) == "a"
    assert future.cancel() is False
    assert channel.stop_requested
    assert ready.is_set()  # a scheduler thread waiting for work is woken to drop the request
    assert channel.send("b") is False
    channel.close()  # the feeder acknowledges
    assert list(stream) == []


def test_a_stream_that_already_ended_is_left_alone(hook: None) -> None:
    @generator_from_thread()
    def two() -> Iterator[int]:
        yield from (1, 2)

    stream = two()
    future: Future[Any] = Future()
    future.set_result(stream)
    assert list(stream) == [1, 2]
    assert future.cancel() is False
    assert list(stream) == []


def test_cancel_never_raises_from_the_stop_request(
    hook: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(stream: object) -> bool:
        raise RuntimeError("broken stop")

    monkeypatch.setattr(coglet_cancel, "request_stop", broken)
    future: Future[Any] = Future()
    future.set_result(object())
    assert future.cancel() is False
    assert "stopping the stream of a cancelled prediction failed" in caplog.text


def test_as_coglet_does_it_run_coroutine_threadsafe_then_cancel_from_another_thread(
    hook: None,
) -> None:
    """coglet's path: run() on an event loop thread, its Future cancelled from the slot thread."""
    loop = asyncio.new_event_loop()
    loop_thread = threading.Thread(target=loop.run_forever, daemon=True)
    loop_thread.start()
    produced: list[int] = []

    @generator_from_thread(max_queue_size=4)
    def tokens(n: int) -> Iterator[int]:
        for i in range(n):
            produced.append(i)
            yield i

    async def run() -> Iterator[int]:
        return tokens(1_000_000)

    try:
        future = asyncio.run_coroutine_threadsafe(run(), loop)
        stream = future.result(timeout=10)
        received = [next(stream) for _ in range(10)]  # the slot thread iterates it
        assert isinstance(future, concurrent.futures.Future)
        canceller = threading.Thread(target=future.cancel)
        canceller.start()
        canceller.join(10)
        received += list(stream)
        assert received == produced[: len(received)]
        assert len(produced) < 1_000  # the producer stopped; it did not run to its end
    finally:
        loop.call_soon_threadsafe(loop.stop)
        loop_thread.join(10)
        loop.close()


# ── on the real server: why the hook exists, and the test that says when it can go ────────────


@pytest.mark.server
@pytest.mark.timeout(120)
@pytest.mark.parametrize("hook", ["1", "0"], ids=["with the hook", "without it"])
def test_without_the_hook_coglet_runs_a_returned_stream_to_its_end(
    cog_servers: CogServers, hook: str
) -> None:
    """coglet 0.23 cancels an async run() only through its finished Future (see the module).

    Without the hook it iterates the returned stream to its end and only then reports
    `canceled`. The day the "without it" case fails, coglet stops such streams itself: delete
    coglet_cancel.py, its install() lines and this test.
    """
    server = cog_servers.start(
        "ignores_cancel.py:Predictor", concurrency=2, env={"COGLET_CANCEL": hook}
    )
    # A fresh worker's first outputs can reach coglet seconds late while a pure-Python
    # producer holds the GIL (docs/limitations.md): warm it up first.
    assert server.predict({"seconds": 0.2})[1]["status"] == "succeeded"
    id_ = "hook-" + hook
    assert server.predict_async(id_, {"seconds": 4.0, "fault": "none"})[0] == 202
    wait_until(lambda: bool((server.get(id_) or {}).get("output")), timeout=30, what="output")
    cancelled_at = time.monotonic()
    assert server.cancel(id_)[0] == 200
    result = server.wait(id_, timeout=60)
    took = time.monotonic() - cancelled_at
    assert result["status"] == "canceled", result
    steps = len("".join(result.get("output") or []).split())
    if hook == "1":
        assert took < 1.0, f"with the hook the cancel took {took:.2f}s"
    else:
        assert took > 2.0, f"coglet stopped the stream itself in {took:.2f}s: remove the hook"
    assert steps > 0
