"""Batcher: many callers' items, one batch function call on one thread, each item's own context.

What a model serving concurrent predictions needs from it: every caller gets exactly its own
result, batches are the oldest items up to ``max_batch_size``, work done per item inside the
batch function runs under that item's caller's context (its logs and metrics), a caller that
leaves is dropped (or its result discarded) without touching the others, errors reach exactly
the callers they belong to, and ``close()`` fails what waits and leaves no thread behind.
"""

from __future__ import annotations

import asyncio
import contextvars
import ctypes
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import request_id, wait_until
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from threading_utils import Batcher, BatchItem, ContextThread, current_batch

PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
pytestmark = pytest.mark.timeout(30)


class Boom(Exception):
    pass


def batcher_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("test-batcher")]


@pytest.fixture(autouse=True)
def no_batch_thread_outlives_its_test() -> Iterator[None]:
    """Every test closes its batchers: their threads are gone when it ends (close joins)."""
    yield
    assert batcher_threads() == []


class Gate:
    """A batch function that records its batches, and holds chosen calls until released."""

    def __init__(self, hold: set[int] | None = None) -> None:
        self.batches: list[list[Any]] = []
        self.hold = hold or set()  # the calls (0 = first) that wait for release()
        self.entered = threading.Event()  # a held call has started
        self.released = threading.Event()

    def __call__(self, items: list[Any]) -> list[Any]:
        call = len(self.batches)
        self.batches.append(list(items))
        if call in self.hold:
            self.entered.set()
            assert self.released.wait(20), "the test never released the batch"
            self.released.clear()
            self.entered.clear()
        return [f"r{item}" for item in items]

    def release(self) -> None:
        self.released.set()


def batcher(fn: Callable[[list[Any]], Any], **options: Any) -> Batcher[Any, Any]:
    return Batcher(fn, name="test-batcher", **options).start()


async def until(predicate: Callable[[], bool], what: str = "", timeout: float = 10.0) -> None:
    """``wait_until`` for a coroutine: poll without blocking the event loop."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what or predicate}")
        await asyncio.sleep(0.001)


def in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    """Run ``fn`` in a new thread; the list gets its result or the exception it raised."""
    outcome: list[Any] = []

    def target() -> None:
        try:
            outcome.append(fn())
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    return thread, outcome


def joined(thread: threading.Thread) -> None:
    thread.join(10)
    assert not thread.is_alive()


# ── batches and results ───────────────────────────────────────────────────────────────────────


@PROPERTY
@given(
    callers=st.lists(st.sampled_from(["async", "sync"]), min_size=1, max_size=24),
    max_batch_size=st.integers(1, 8),
    max_wait=st.sampled_from([0.0, 0.002]),
    work=st.lists(st.integers(0, 3), min_size=1, max_size=5),  # spins per batch, cycled
)
def test_async_and_sync_callers_mixed_each_get_exactly_their_own_result(
    callers, max_batch_size, max_wait, work
):
    """Random caller kinds, batch sizes and batch durations: every caller gets its own result
    (an item that fails gets its own error), batches never exceed max_batch_size, every item is
    in exactly one batch, each item's run() sees its caller's context, and the async callers
    (all enqueued in task order on one loop) are batched first in, first out."""
    batches: list[list[int]] = []
    contexts: dict[int, str] = {}

    def fn(items: list[int]) -> list[Any]:
        batches.append(list(items))
        for entry in current_batch():
            contexts[entry.item] = entry.run(request_id.get) or "not run"
        for _ in range(work[len(batches) % len(work)] * 1000):  # a batch that takes a while
            pass
        return [Boom(item) if item % 7 == 3 else item * 3 + 1 for item in items]

    def check(item: int, outcome: Any) -> None:
        if item % 7 == 3:
            assert isinstance(outcome, Boom)
            assert outcome.args == (item,)
        else:
            assert outcome == item * 3 + 1

    async_items = [k for k, kind in enumerate(callers) if kind == "async"]
    sync_items = [k for k, kind in enumerate(callers) if kind == "sync"]
    with batcher(fn, max_batch_size=max_batch_size, max_wait=max_wait) as b:

        def sync_caller(item: int) -> Any:
            request_id.set(f"caller {item}")
            return b.submit(item)

        threads = {k: in_thread(lambda k=k: sync_caller(k)) for k in sync_items}

        async def async_caller(item: int) -> Any:
            request_id.set(f"caller {item}")
            return await b.asubmit(item)

        async def main() -> list[Any]:
            return await asyncio.gather(
                *(async_caller(k) for k in async_items), return_exceptions=True
            )

        for item, outcome in zip(async_items, asyncio.run(main()), strict=True):
            check(item, outcome)
        for item, (thread, outcome) in threads.items():
            joined(thread)
            check(item, outcome[0])
    flat = [item for batch in batches for item in batch]
    assert sorted(flat) == list(range(len(callers)))
    assert all(1 <= len(batch) <= max_batch_size for batch in batches)
    assert [item for item in flat if item in set(async_items)] == async_items
    assert contexts == {k: f"caller {k}" for k in range(len(callers))}


@PROPERTY
@given(
    plan=st.lists(st.one_of(st.none(), st.integers(0, 6)), min_size=1, max_size=20),
    max_batch_size=st.integers(1, 6),
    work=st.lists(st.integers(0, 3), min_size=1, max_size=5),
)
def test_callers_cancelled_at_random_points_leave_the_others_exact(plan, max_batch_size, work):
    """Each caller is cancelled after a random number of event-loop turns (None: never), while
    its item is queued, in a running batch, or already done: every caller not cancelled gets
    its own result, a cancelled one gets CancelledError or (cancelled too late) its own result,
    no item reaches the batch function twice, batches keep submission order, and nothing is
    left queued."""
    batches: list[list[int]] = []

    def fn(items: list[int]) -> list[int]:
        batches.append(list(items))
        for _ in range(work[len(batches) % len(work)] * 500):
            pass
        return [item * 10 for item in items]

    with batcher(fn, max_batch_size=max_batch_size) as b:

        async def main() -> list[Any]:
            tasks = [asyncio.create_task(b.asubmit(k)) for k in range(len(plan))]

            async def cancel_later(task: asyncio.Task[int], turns: int) -> None:
                for _ in range(turns):
                    await asyncio.sleep(0)
                task.cancel()

            cancels = [
                asyncio.create_task(cancel_later(task, turns))
                for task, turns in zip(tasks, plan, strict=True)
                if turns is not None
            ]
            outcomes = await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.gather(*cancels)
            return outcomes

        outcomes = asyncio.run(main())
        assert b.queued == 0
    flat = [item for batch in batches for item in batch]
    for k, (turns, outcome) in enumerate(zip(plan, outcomes, strict=True)):
        if turns is None or not isinstance(outcome, asyncio.CancelledError):
            assert outcome == k * 10
        if turns is not None:  # which cases the examples reached (--hypothesis-show-statistics)
            if not isinstance(outcome, asyncio.CancelledError):
                event("cancelled after its result came")
            else:
                event("cancelled in its batch" if k in flat else "cancelled while queued")
    assert flat == sorted(set(flat))  # each at most once, oldest first
    assert all(len(batch) <= max_batch_size for batch in batches)
    assert set(flat) >= {k for k, turns in enumerate(plan) if turns is None}


def test_queued_items_form_batches_of_max_batch_size_oldest_first():
    gate = Gate(hold={0})
    with batcher(gate, max_batch_size=4) as b:

        async def main() -> list[str]:
            first = asyncio.create_task(b.asubmit(-1))
            await until(gate.entered.is_set, "the first batch to start")
            rest = [asyncio.create_task(b.asubmit(k)) for k in range(10)]
            await until(lambda: b.queued == 10, "ten items to queue")
            gate.release()
            return await asyncio.gather(first, *rest)

        results = asyncio.run(main())
    assert results == ["r-1"] + [f"r{k}" for k in range(10)]
    assert gate.batches == [[-1], [0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_max_wait_holds_a_batch_until_it_is_full_and_no_longer():
    """With a max_wait far longer than the test's timeout, a batch still starts the moment it
    has max_batch_size items: max_wait bounds the wait for a batch, it does not fix it."""
    gate = Gate()
    with batcher(gate, max_batch_size=3, max_wait=60.0) as b:

        async def main() -> list[str]:
            return await asyncio.gather(*(b.asubmit(k) for k in range(6)))

        assert asyncio.run(main()) == [f"r{k}" for k in range(6)]
    assert gate.batches == [[0, 1, 2], [3, 4, 5]]


def test_a_method_works_as_the_batch_function():
    class Model:
        def __init__(self, scale: int) -> None:
            self.scale = scale

        def forward(self, items: list[int]) -> list[int]:
            return [item * self.scale for item in items]

    with batcher(Model(10).forward) as b:
        assert b.submit(4) == 40

        async def main() -> list[int]:
            return await asyncio.gather(*(b.asubmit(k) for k in range(5)))

        assert asyncio.run(main()) == [0, 10, 20, 30, 40]


def test_the_batch_function_may_return_any_iterable_of_the_right_length():
    with batcher(lambda items: (item + 1 for item in items)) as b:
        assert b.submit(1) == 2


# ── context per item ──────────────────────────────────────────────────────────────────────────


def test_run_calls_under_each_items_callers_context_in_the_batch_thread():
    gate = Gate(hold={0})
    seen: list[tuple[str, str, int, bool]] = []

    def fn(items: list[str]) -> list[str]:
        batch = current_batch()
        assert [entry.item for entry in batch] == items
        for entry in batch:
            assert entry.queue_time >= 0
            seen.append(
                (
                    entry.item,
                    entry.run(request_id.get) or "",
                    entry.batch_size,
                    threading.current_thread().name == "test-batcher",
                )
            )
            entry.run(request_id.set, "changed inside run")  # stays inside that run()
        return gate(items)

    request_id.set("the starter")
    with batcher(fn, max_batch_size=8) as b:

        async def caller(name: str) -> str:
            request_id.set(f"context of {name}")
            return await b.asubmit(name)

        async def main() -> list[str]:
            first = asyncio.create_task(caller("a"))
            await until(gate.entered.is_set)
            rest = [asyncio.create_task(caller(name)) for name in "bcd"]
            await until(lambda: b.queued == 3)
            gate.release()
            return await asyncio.gather(first, *rest)

        assert asyncio.run(main()) == ["ra", "rb", "rc", "rd"]
    assert seen == [
        ("a", "context of a", 1, True),
        ("b", "context of b", 3, True),
        ("c", "context of c", 3, True),
        ("d", "context of d", 3, True),
    ]
    assert request_id.get() == "the starter"


def test_the_batch_thread_runs_under_the_state_captured_by_start():
    def fn(items: list[str]) -> list[str]:
        return [f"{item} in {request_id.get()}" for item in items]

    request_id.set("setup")
    b = batcher(fn)
    request_id.set("a prediction")
    try:
        assert b.submit("x") == "x in setup"
    finally:
        b.close()


def test_current_batch_is_empty_outside_a_batch_function_and_seen_by_context_threads():
    assert current_batch() == ()
    seen: list[tuple[Any, ...]] = []

    def fn(items: list[int]) -> list[int]:
        worker = ContextThread(target=lambda: seen.append(current_batch()))
        worker.start()
        worker.join()
        return items

    with batcher(fn) as b:
        assert b.submit(5) == 5
    assert len(seen) == 1
    assert [entry.item for entry in seen[0]] == [5]
    assert isinstance(seen[0][0], BatchItem)


# ── cancellation ──────────────────────────────────────────────────────────────────────────────


def test_a_cancelled_queued_item_never_reaches_the_batch_function():
    gate = Gate(hold={0})
    with batcher(gate) as b:

        async def main() -> None:
            first = asyncio.create_task(b.asubmit("a"))
            await until(gate.entered.is_set)
            doomed = asyncio.create_task(b.asubmit("b"))
            kept = asyncio.create_task(b.asubmit("c"))
            await until(lambda: b.queued == 2)
            doomed.cancel()
            with pytest.raises(asyncio.CancelledError):
                await doomed
            assert b.queued == 1
            gate.release()
            assert await first == "ra"
            assert await kept == "rc"

        asyncio.run(main())
    assert gate.batches == [["a"], ["c"]]


def test_a_sync_caller_that_times_out_drops_its_queued_item():
    gate = Gate(hold={0})
    with batcher(gate) as b:
        first, outcome = in_thread(lambda: b.submit("a"))
        assert gate.entered.wait(10)
        with pytest.raises(TimeoutError, match="dropped"):
            b.submit("late", timeout=0.05)
        assert b.queued == 0
        gate.release()
        joined(first)
        assert outcome == ["ra"]
        assert b.submit("c") == "rc"
    assert gate.batches == [["a"], ["c"]]


def test_a_sync_caller_hit_by_an_asynchronous_exception_drops_its_item():
    """What cog does to a sync predict() on cancel: PyThreadState_SetAsyncExc(...)."""

    class Cancelled(Exception):
        pass

    gate = Gate(hold={0})
    with batcher(gate) as b:
        first, _ = in_thread(lambda: b.submit("a"))
        assert gate.entered.wait(10)
        caller, outcome = in_thread(lambda: b.submit("b"))
        wait_until(lambda: b.queued == 1, what="the item to queue")
        assert caller.ident is not None
        ctypes.pythonapi.PyThreadState_SetAsyncExc(
            ctypes.c_ulong(caller.ident), ctypes.py_object(Cancelled)
        )
        joined(caller)  # raised within one 200 ms wait slice
        assert len(outcome) == 1
        assert isinstance(outcome[0], Cancelled)
        assert b.queued == 0
        gate.release()
        joined(first)
    assert gate.batches == [["a"]]


def test_a_caller_cancelled_while_its_batch_runs_leaves_the_others_exact():
    """Its result is discarded, nothing more runs under its context, the others get theirs."""
    started = threading.Event()
    proceed = threading.Event()
    logged: list[tuple[str, str]] = []
    gone: list[tuple[str, bool]] = []

    def fn(items: list[str]) -> list[str]:
        batch = current_batch()
        for entry in batch:
            entry.run(lambda e=entry: logged.append((e.item, request_id.get())))
        started.set()
        assert proceed.wait(20)
        for entry in batch:
            gone.append((entry.item, entry.gone))
            entry.run(lambda e=entry: logged.append((e.item, request_id.get())))
        return [f"r{item}" for item in items]

    with batcher(fn, max_batch_size=3, max_wait=60.0) as b:

        async def caller(name: str) -> str:
            request_id.set(name)
            return await b.asubmit(name)

        async def main() -> None:
            tasks = [asyncio.create_task(caller(name)) for name in "abc"]
            await until(started.is_set, "the batch to start")
            tasks[1].cancel()
            with pytest.raises(asyncio.CancelledError):
                await tasks[1]
            proceed.set()
            assert await tasks[0] == "ra"
            assert await tasks[2] == "rc"

        asyncio.run(main())
    assert gone == [("a", False), ("b", True), ("c", False)]
    assert logged == [("a", "a"), ("b", "b"), ("c", "c"), ("a", "a"), ("c", "c")]


def test_a_caller_that_leaves_during_its_own_run_waits_for_it_and_nothing_runs_after():
    in_run = threading.Event()
    finish_run = threading.Event()
    after: list[Any] = []

    def report() -> None:
        in_run.set()
        assert finish_run.wait(20)

    def fn(items: list[str]) -> list[str]:
        entry = current_batch()[0]
        entry.run(report)
        after.append(entry.run(lambda: "ran"))  # the caller has left: not called
        return items

    with batcher(fn) as b:

        async def main() -> None:
            task = asyncio.create_task(b.asubmit("a"))
            await until(in_run.is_set, "the run() to start")
            task.cancel()
            for _ in range(20):  # the cancel is delivered, the task still waits for report()
                await asyncio.sleep(0)
            assert not task.done()
            finish_run.set()
            with pytest.raises(asyncio.CancelledError):
                await task

        asyncio.run(main())
    assert after == [None]


# ── errors ────────────────────────────────────────────────────────────────────────────────────


def test_a_batch_function_error_reaches_every_member_and_the_next_batch_is_served():
    error = Boom("the forward pass failed")
    gate = Gate(hold={0})

    def fn(items: list[str]) -> list[str]:
        out = gate(items)
        if len(gate.batches) == 2:
            raise error
        return out

    with batcher(fn) as b:

        async def main() -> list[Any]:
            first = asyncio.create_task(b.asubmit("a"))
            await until(gate.entered.is_set)
            batch = [asyncio.create_task(b.asubmit(name)) for name in "bc"]
            await until(lambda: b.queued == 2)
            sync_caller, sync_outcome = in_thread(lambda: b.submit("d"))
            await until(lambda: b.queued == 3)
            gate.release()
            outcomes = await asyncio.gather(first, *batch, return_exceptions=True)
            await asyncio.to_thread(joined, sync_caller)
            return [*outcomes, *sync_outcome]

        outcomes = asyncio.run(main())
        assert outcomes[0] == "ra"
        assert all(outcome is error for outcome in outcomes[1:])
        assert error.__traceback__ is not None
        assert "fn" in [frame.name for frame in _frames(error)]  # the batch thread's frames
        assert b.submit("e") == "re"
    assert gate.batches == [["a"], ["b", "c", "d"], ["e"]]


def _frames(error: BaseException) -> list[Any]:
    import traceback

    return list(traceback.extract_tb(error.__traceback__))


def test_an_exception_returned_at_an_items_position_fails_only_its_caller():
    def fn(items: list[int]) -> list[Any]:
        return [ValueError(f"bad item {item}") if item < 0 else item for item in items]

    with batcher(fn, max_batch_size=8) as b:

        async def main() -> list[Any]:
            return await asyncio.gather(*(b.asubmit(k) for k in (1, -2, 3)), return_exceptions=True)

        one, bad, three = asyncio.run(main())
        assert (one, three) == (1, 3)
        assert isinstance(bad, ValueError)
        assert str(bad) == "bad item -2"
        with pytest.raises(ValueError, match="bad item -5"):
            b.submit(-5)


def test_a_result_of_the_wrong_length_fails_the_whole_batch():
    def fn(items: list[int]) -> list[int]:
        return items[:-1]

    with batcher(fn, max_batch_size=8, max_wait=60.0) as b:

        async def main() -> list[Any]:
            return await asyncio.gather(*(b.asubmit(k) for k in range(8)), return_exceptions=True)

        outcomes = asyncio.run(main())
    assert all(isinstance(outcome, ValueError) for outcome in outcomes)
    assert "returned 7 results for 8 items" in str(outcomes[0])


def test_an_exception_that_is_not_an_exception_stops_the_batcher_with_runtime_errors():
    def fn(items: list[int]) -> list[int]:
        raise SystemExit(3)

    b = batcher(fn)
    try:
        with pytest.raises(RuntimeError, match="thread stopped") as raised:
            b.submit(1)
        assert isinstance(raised.value.__cause__, SystemExit)
        wait_until(lambda: batcher_threads() == [], what="the batch thread to end")
        assert not b.running
        with pytest.raises(RuntimeError, match="thread stopped"):
            b.submit(2)
    finally:
        b.close()


def test_a_full_queue_fails_the_submit_at_once():
    gate = Gate(hold={0})
    with batcher(gate, max_queue=2) as b:

        async def main() -> None:
            first = asyncio.create_task(b.asubmit(0))
            await until(gate.entered.is_set)
            queued = [asyncio.create_task(b.asubmit(k)) for k in (1, 2)]
            await until(lambda: b.queued == 2)
            with pytest.raises(queue.Full, match="max_queue"):
                await b.asubmit(3)
            gate.release()
            assert await asyncio.gather(first, *queued) == ["r0", "r1", "r2"]

        asyncio.run(main())


def test_submit_refuses_to_block_an_event_loop_or_the_batch_thread():
    inner: list[BaseException] = []

    def fn(items: list[int]) -> list[int]:
        try:
            b.submit(1)
        except RuntimeError as exc:
            inner.append(exc)
        return items

    with batcher(fn) as b:

        async def main() -> None:
            with pytest.raises(RuntimeError, match="asubmit"):
                b.submit(0)

        asyncio.run(main())
        assert b.submit(2) == 2
    assert "wait for itself" in str(inner[0])


# ── lifecycle ─────────────────────────────────────────────────────────────────────────────────


def test_close_fails_queued_items_finishes_the_running_batch_and_joins_the_thread():
    gate = Gate(hold={0})
    b = batcher(gate)
    assert len(batcher_threads()) == 1
    first, first_outcome = in_thread(lambda: b.submit("running"))
    assert gate.entered.wait(10)
    sync_waiting, sync_outcome = in_thread(lambda: b.submit("queued"))
    wait_until(lambda: b.queued == 1, what="the item to queue")

    async def main() -> Any:
        task = asyncio.create_task(b.asubmit("queued too"))
        await until(lambda: b.queued == 2)
        closer, _ = in_thread(b.close)  # blocks in join() until the running batch ends
        try:
            with pytest.raises(RuntimeError, match="closed before this item ran"):
                await task
            await asyncio.to_thread(joined, sync_waiting)
            assert not b.running
        finally:
            gate.release()
        await asyncio.to_thread(joined, closer)

    asyncio.run(main())
    assert isinstance(sync_outcome[0], RuntimeError)
    joined(first)
    assert first_outcome == ["rrunning"]
    assert gate.batches == [["running"]]
    assert batcher_threads() == []
    with pytest.raises(RuntimeError, match="closed"):
        b.submit("after close")
    b.close()  # idempotent


def test_close_while_waiting_for_a_fuller_batch_fails_the_waiting_items():
    gate = Gate()
    b = batcher(gate, max_batch_size=4, max_wait=60.0)
    caller, outcome = in_thread(lambda: b.submit("alone"))
    wait_until(lambda: b.queued == 1, what="the item to queue")
    b.close()
    joined(caller)
    assert isinstance(outcome[0], RuntimeError)
    assert gate.batches == []


def test_a_batcher_must_be_started_and_starts_once():
    b: Batcher[int, int] = Batcher(lambda items: items, name="test-batcher")
    with pytest.raises(RuntimeError, match="start"):
        b.submit(1)
    b.start()
    with pytest.raises(RuntimeError, match="once"):
        b.start()
    b.close()
    assert batcher_threads() == []


def test_thread_init_runs_in_the_batch_thread_and_its_error_is_raised_by_start():
    threads: list[str] = []
    with batcher(lambda items: items, thread_init=lambda: threads.append(_name())) as b:
        assert b.submit(1) == 1
    assert threads == ["test-batcher"]

    def broken() -> None:
        raise Boom("no device")

    b = Batcher(lambda items: items, name="test-batcher", thread_init=broken)
    with pytest.raises(Boom, match="no device"):
        b.start()
    assert batcher_threads() == []
    with pytest.raises(RuntimeError, match="thread_init failed"):
        b.submit(1)
    b.close()


def _name() -> str:
    return threading.current_thread().name


@pytest.mark.parametrize(
    "options",
    [{"max_batch_size": 0}, {"max_queue": 0}, {"max_wait": -1}, {"num_threads": 0}],
)
def test_bad_options_are_rejected(options):
    with pytest.raises(ValueError, match=next(iter(options))):
        Batcher(lambda items: items, **options)


def test_torch_modes_num_threads_and_each_items_own_modes():
    torch = pytest.importorskip("torch")
    seen: dict[str, Any] = {}

    def fn(items: list[str]) -> list[str]:
        seen["threads"] = torch.get_num_threads()
        seen["batch inference_mode"] = torch.is_inference_mode_enabled()
        for entry in current_batch():
            seen[entry.item] = entry.run(torch.is_grad_enabled)
        return items

    threads_before = torch.get_num_threads()
    with torch.inference_mode():
        b = batcher(fn, num_threads=1)
    try:
        with torch.no_grad():
            assert b.submit("no_grad") == "no_grad"
        assert b.submit("grad") == "grad"
    finally:
        b.close()
        torch.set_num_threads(threads_before)  # torch made 1 the default of new threads too
    assert seen == {
        "threads": 1,
        "batch inference_mode": True,
        "no_grad": False,
        "grad": True,
    }


def test_context_of_items_is_a_copy_per_run():
    """A ContextVar set inside one run() is not seen by the next run of the same item."""
    var: contextvars.ContextVar[int] = contextvars.ContextVar("var", default=0)
    seen: list[int] = []

    def fn(items: list[int]) -> list[int]:
        entry = current_batch()[0]
        entry.run(var.set, 5)
        seen.append(entry.run(var.get) or 0)
        return items

    with batcher(fn) as b:
        var.set(1)
        assert b.submit(0) == 0
    assert seen == [1]
