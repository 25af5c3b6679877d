"""OrderedStage: work handed to a pool, its results sent through `emit` in hand-off order.

Ordering, backpressure, stop, errors, context and hand-offs from several threads, as properties
(hypothesis) and on the bridge's own streams. Each guard of the stage is one method; each fault
test swaps in a naive version of one guard (a subclass) and shows the check that the guard
passes failing without it.

Completion order is the test's to choose: every work item waits at a gate, and a releaser
thread opens the gates of started items in an order drawn by hypothesis. No sleeps: threads
wait for observable events, with deadlines.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import sys
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from conftest import collect, request_id, wait_until
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from threading_utils import (
    ContextThread,
    ContextThreadPoolExecutor,
    Emit,
    OrderedStage,
    StreamClosed,
    async_generator_from_callback,
    generator_from_callback,
    stop_requested,
)

PROPERTY = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DEADLINE = 10.0  # seconds any one wait may take before the test fails


class Boom(Exception):
    pass


# ── helpers ───────────────────────────────────────────────────────────────────────────────────


class Gates:
    """Work items (a function `work(i)` calling `gates.wait(i)`) that finish only when
    released. A releaser thread releases started items, the one that comes first in `order`
    each time, and releases the next only once the last one has finished: its `work` returned
    and the stage's done callback for it (`_settle`) ran. So items finish, as the stage sees
    them, in `order` among those started together. It begins once `together` have started."""

    def __init__(self, order: list[int], together: int = 1) -> None:
        self.together = together
        self.rank = {item: n for n, item in enumerate(order)}
        self.changed = threading.Condition()
        self.started: dict[int, int] = {}  # item -> the pool thread running it
        self.released: set[int] = set()
        self.closed = False
        self.thread = threading.Thread(target=self._release, name="gates", daemon=True)
        self.thread.start()

    def wait(self, item: int) -> None:
        with self.changed:
            self.started[item] = threading.get_ident()
            self.changed.notify_all()
            assert self.changed.wait_for(lambda: item in self.released, DEADLINE), item

    def _finishing(self, item: int) -> bool:
        frame = sys._current_frames().get(self.started[item])
        while frame is not None:
            name = frame.f_code.co_name
            if name == "_settle" or (name == "work" and frame.f_locals.get("i") == item):
                return True
            frame = frame.f_back
        return False

    def _release(self) -> None:
        with self.changed:
            self.changed.wait_for(lambda: self.closed or len(self.started) >= self.together)
            while not self.closed:
                waiting = [i for i in self.started if i not in self.released]
                if not waiting:
                    self.changed.wait()
                    continue
                item = min(waiting, key=lambda i: self.rank.get(i, i))
                self.released.add(item)
                self.changed.notify_all()
                while self._finishing(item) and not self.closed:
                    self.changed.wait(0.001)  # lets the pool thread finish `item`

    def close(self) -> None:
        with self.changed:
            self.closed = True
            self.changed.notify_all()
        self.thread.join(DEADLINE)


def thread_waits_in(ident: int, function: str) -> bool:
    """True while the thread `ident` is inside `function` (a frame of that name)."""
    frame = sys._current_frames().get(ident)
    while frame is not None:
        if frame.f_code.co_name == function:
            return True
        frame = frame.f_back
    return False


def blocked_for_room(ident: int) -> bool:
    """True once the thread `ident` waits in a hand-off for the stage to have room."""
    return thread_waits_in(ident, "_wait_for_room") and thread_waits_in(ident, "wait")


class Counting:
    """An `emit` wrapper: counts what went out, and how many calls ran at once."""

    def __init__(self, emit: Callable[[Any], None]) -> None:
        self.emit = emit
        self.sent = 0
        self.inside = 0
        self.most_inside = 0
        self.lock = threading.Lock()

    def __call__(self, item: Any) -> None:
        with self.lock:
            self.inside += 1
            self.most_inside = max(self.most_inside, self.inside)
        try:
            self.emit(item)
        finally:
            with self.lock:
                self.inside -= 1
                self.sent += 1


# ── ordering and the bound, under random completion orders ────────────────────────────────────


def check_order_and_bound(
    stage_cls: type[OrderedStage[int]],
    count: int,
    max_pending: int,
    workers: int,
    order: list[int],
    together: int = 1,
) -> None:
    """Every result arrives once, in hand-off order; no item starts more than `max_pending`
    hand-offs ahead of what was sent (an item starts only after its hand-off returned)."""
    gates = Gates(order, together)
    ahead: list[tuple[int, int]] = []

    @generator_from_callback(max_queue_size=2)
    def produce(emit: Emit[int]) -> None:
        counting = Counting(emit)

        def work(i: int) -> int:
            if i >= max_pending + counting.sent:
                ahead.append((i, counting.sent))
            gates.wait(i)
            return i

        with (
            ThreadPoolExecutor(workers) as pool,
            stage_cls(counting, pool, max_pending=max_pending) as stage,
        ):
            for i in range(count):
                stage.submit(work, i)

    try:
        assert list(produce()) == list(range(count))
    finally:
        gates.close()
    assert ahead == [], f"items started more than max_pending={max_pending} ahead: {ahead}"


@PROPERTY
@given(
    data=st.data(),
    count=st.integers(0, 24),
    max_pending=st.integers(1, 6),
    workers=st.integers(1, 6),
)
def test_results_arrive_in_hand_off_order_whatever_order_the_work_finishes(
    data, count, max_pending, workers
):
    order = data.draw(st.permutations(range(count)))
    check_order_and_bound(OrderedStage, count, max_pending, workers, order)


class SendsWhatIsDone(OrderedStage[Any]):
    """No ordering: sends any finished result (completion order, as `as_completed` would)."""

    def _next_to_send(self) -> Any:
        if self._halted:
            return None
        for handoff in self._pending:
            if handoff.settled:
                self._pending.remove(handoff)
                return handoff
        return None


class Unbounded(OrderedStage[Any]):
    """No backpressure: a hand-off never waits."""

    def _has_room(self) -> bool:
        return True


def test_without_ordering_results_go_out_in_completion_order():
    with pytest.raises(AssertionError, match=r"== \[0, 1, 2, 3, 4, 5\]"):
        check_order_and_bound(SendsWhatIsDone, 6, 3, 3, [2, 1, 0, 5, 4, 3], together=3)


def test_without_the_bound_work_runs_ahead_of_the_consumer():
    with pytest.raises(AssertionError, match="ahead"):
        check_order_and_bound(Unbounded, 12, 2, 4, list(range(11, -1, -1)))


# ── backpressure ──────────────────────────────────────────────────────────────────────────────


def check_the_producer_blocks_at_the_bound(stage_cls: type[OrderedStage[int]], bound: int) -> None:
    """Slow work: the producer blocks once `bound` hand-offs are unsent."""
    release = threading.Event()
    handed = 0
    emit = Counting(lambda item: None)
    producer = threading.get_ident()
    finished = threading.Event()

    def produce() -> None:
        nonlocal handed, producer
        producer = threading.get_ident()
        try:
            with (
                ThreadPoolExecutor(2) as pool,
                stage_cls(emit, pool, max_pending=bound) as stage,
            ):
                for i in range(3 * bound + 3):
                    stage.submit(lambda i: release.wait(DEADLINE) and i, i)
                    handed += 1
        finally:
            finished.set()

    thread = threading.Thread(target=produce)
    thread.start()
    try:
        wait_until(
            lambda: handed == 3 * bound + 3 or blocked_for_room(producer),
            timeout=DEADLINE,
            what="the producer to block on the bound, or to hand everything over",
        )
        assert handed - emit.sent <= bound, f"{handed} handed over, {emit.sent} sent"
    finally:
        release.set()
        thread.join(DEADLINE)
    assert emit.sent == 3 * bound + 3


@pytest.mark.parametrize("bound", [1, 2, 5])
def test_the_producer_blocks_while_max_pending_hand_offs_are_unsent(bound):
    check_the_producer_blocks_at_the_bound(OrderedStage, bound)


def test_without_the_bound_the_producer_runs_ahead_of_slow_work():
    with pytest.raises(AssertionError, match="handed over"):
        check_the_producer_blocks_at_the_bound(Unbounded, 2)


# ── the stop: cancel, a consumer gone ─────────────────────────────────────────────────────────


def remove(path: Path) -> None:
    path.unlink()


def check_stop(
    stage_cls: type[OrderedStage[Path]],
    directory: Path,
    *,
    workers: int,
    max_pending: int,
    taken: int,
    discard: Callable[[Path], object] | None = remove,
) -> None:
    """The consumer takes `taken` files and leaves while the producer is blocked on the bound:
    queued work never runs, running work finishes and its file is discarded, the producer's
    next hand-off raises StreamClosed, and no file is left."""
    started: list[int] = []
    hold = threading.Event()
    producer = 0
    raised: list[type[BaseException]] = []
    done = threading.Event()

    def work(i: int) -> Path:
        started.append(i)
        if i >= taken:
            assert hold.wait(DEADLINE)
        path = directory / f"item-{i:03d}"
        path.write_text(str(i))
        return path

    @generator_from_callback(max_queue_size=1, grace_period=0)  # close returns at once
    def produce(emit: Emit[Path]) -> None:
        nonlocal producer
        producer = threading.get_ident()
        try:
            with (
                ThreadPoolExecutor(workers) as pool,
                stage_cls(emit, pool, max_pending=max_pending, discard=discard) as stage,
            ):
                for i in range(taken + max_pending + workers + 3):
                    stage.submit(work, i)
        except BaseException as exc:
            raised.append(type(exc))
            raise
        finally:
            done.set()

    stream = produce()
    got = [next(stream) for _ in range(taken)]
    assert [p.name for p in got] == [f"item-{i:03d}" for i in range(taken)]
    for path in got:
        path.unlink()  # what coglet does with a file it was sent
    wait_until(lambda: blocked_for_room(producer), timeout=DEADLINE, what="the bound")
    stream.close()  # the consumer leaves: queued work is cancelled now
    hold.set()  # running work finishes
    assert done.wait(DEADLINE)
    assert raised == [StreamClosed]
    ran_after = [i for i in started if i >= taken]
    assert len(ran_after) <= min(workers, max_pending), f"queued work ran: {ran_after}"
    assert sorted(p.name for p in directory.iterdir()) == [], "files left"


@PROPERTY
@given(
    workers=st.integers(1, 3),
    extra=st.integers(1, 3),
    taken=st.integers(1, 4),
)
def test_a_stop_mid_flight_cancels_queued_work_and_leaves_no_file(
    tmp_path_factory, workers, extra, taken
):
    directory = tmp_path_factory.mktemp("stop")
    check_stop(OrderedStage, directory, workers=workers, max_pending=workers + extra, taken=taken)


class NeverCancels(OrderedStage[Any]):
    """No cancel on stop: queued work runs anyway (its results are still dropped)."""

    def _cancel(self, future: Future[Any]) -> None:
        pass


def test_without_cancel_queued_work_runs_after_the_stop(tmp_path):
    with pytest.raises(AssertionError, match="queued work ran"):
        check_stop(NeverCancels, tmp_path, workers=1, max_pending=4, taken=2)


def test_without_discard_the_files_of_dropped_results_stay(tmp_path):
    with pytest.raises(AssertionError, match="files left"):
        check_stop(OrderedStage, tmp_path, workers=2, max_pending=3, taken=1, discard=None)


def test_a_stop_seen_only_through_emit_still_cancels_queued_work(tmp_path):
    """A stage made outside any producer (no stream to hook): `emit` raising StreamClosed."""
    hold = threading.Event()
    started: list[int] = []
    closed = threading.Event()

    def emit(path: Path) -> None:
        closed.set()
        raise StreamClosed

    submitted = threading.Event()

    def work(i: int) -> Path:
        started.append(i)
        # 0 waits until all five are handed over: else its refused send can stop the stage
        # before the loop ends (a fast pool thread), and the loop's own submit raises.
        assert (submitted if i == 0 else hold).wait(DEADLINE)
        path = tmp_path / f"{i}"
        path.write_text("x")
        return path

    with ThreadPoolExecutor(1) as pool:
        stage = OrderedStage(emit, pool, max_pending=5, discard=remove)
        for i in range(5):
            stage.submit(work, i)  # 0 is sent (and refused); 1 runs; 2..4 are queued
        submitted.set()
        assert closed.wait(DEADLINE)
        hold.set()
        with pytest.raises(StreamClosed):
            stage.submit(work, 9)
        with pytest.raises(StreamClosed):
            stage.close()
    assert started in ([0], [0, 1])
    assert list(tmp_path.iterdir()) == []


def test_a_stop_releases_a_producer_blocked_on_the_bound_with_an_async_consumer():
    hold = threading.Event()
    raised: list[type[BaseException]] = []

    @async_generator_from_callback(max_queue_size=1)
    def produce(emit: Emit[int]) -> None:
        with (
            ContextThreadPoolExecutor(2) as pool,
            OrderedStage(emit, pool, max_pending=2) as stage,
        ):
            try:
                stage.submit(int, 0)
                for i in range(1, 10):
                    stage.submit(lambda i: hold.wait(DEADLINE) and i, i)
            except BaseException as exc:
                raised.append(type(exc))
                hold.set()
                raise

    async def main() -> list[int]:
        stream = produce()
        first = await anext(stream)
        await stream.aclose()  # waits for the producer (grace period) without blocking
        return [first]

    assert asyncio.run(main()) == [0]
    assert raised == [StreamClosed]


def test_work_already_running_sees_stop_requested_and_may_end_early():
    seen = threading.Event()
    running = threading.Event()

    @generator_from_callback()
    def produce(emit: Emit[str]) -> None:
        def work() -> str:
            running.set()
            wait_until(stop_requested, timeout=DEADLINE, what="the stop")
            seen.set()
            return "late"

        with ThreadPoolExecutor(1) as pool, OrderedStage(emit, pool, max_pending=2) as stage:
            stage.send("first")
            stage.submit(work)

    stream = produce()
    assert next(stream) == "first"
    assert running.wait(DEADLINE)
    stream.close()
    assert seen.is_set()


# ── errors ────────────────────────────────────────────────────────────────────────────────────


def check_first_error(
    stage_cls: type[OrderedStage[int]],
    count: int,
    failing: set[int],
    order: list[int],
    together: int = 1,
) -> None:
    """The first failing hand-off in order fails the stream, after every result before it."""
    gates = Gates(order, together)
    received: list[int] = []

    def consume() -> None:
        for item in produce():
            received.append(item)

    @generator_from_callback()
    def produce(emit: Emit[int]) -> None:
        def work(i: int) -> int:
            gates.wait(i)
            if i in failing:
                raise Boom(i)
            return i

        with ThreadPoolExecutor(3) as pool, stage_cls(emit, pool, max_pending=4) as stage:
            for i in range(count):
                stage.submit(work, i)

    try:
        with pytest.raises(Boom) as raised:
            consume()
    finally:
        gates.close()
    first = min(failing)
    assert raised.value.args == (first,), f"raised Boom{raised.value.args}, not Boom({first})"
    assert received == list(range(first))


@PROPERTY
@given(data=st.data(), count=st.integers(1, 16))
def test_the_first_failed_hand_off_in_order_fails_the_stream(data, count):
    failing = data.draw(st.sets(st.integers(0, count - 1), min_size=1))
    order = data.draw(st.permutations(range(count)))
    check_first_error(OrderedStage, count, failing, order)


class FailsOnFirstToRaise(OrderedStage[Any]):
    """The error of whichever work raised first in time, not first in order."""

    def _settle(self, handoff: Any, future: Future[Any]) -> None:
        if not future.cancelled() and future.exception() is not None:
            self._fail(future.exception())  # type: ignore[arg-type]
        super()._settle(handoff, future)


def test_without_ordered_errors_a_later_hand_offs_error_wins():
    with pytest.raises(AssertionError, match=r"raised Boom\(2,\), not Boom\(1\)"):
        check_first_error(FailsOnFirstToRaise, 4, {1, 2}, [0, 2, 1, 3], together=3)


def test_the_error_is_raised_by_the_next_hand_off_with_the_pool_threads_frames():
    def fail() -> int:
        raise Boom("in the pool")

    with ThreadPoolExecutor(1) as pool:
        sent: list[int] = []
        stage = OrderedStage(sent.append, pool, max_pending=3)
        stage.submit(fail)
        with pytest.raises(Boom) as raised:
            stage.join()
        assert any(frame.name == "fail" for frame in _frames(raised.value))
        with pytest.raises(Boom):
            stage.submit(int, 1)
        with pytest.raises(Boom):
            stage.close()
    assert sent == []


def _frames(error: BaseException) -> list[Any]:
    import traceback

    return list(traceback.extract_tb(error.__traceback__))


def test_an_error_in_the_block_drops_unsent_work_and_waits_for_running_work():
    hold = threading.Event()
    running = threading.Event()
    finished: list[int] = []
    sent: list[int] = []

    def work(i: int) -> int:
        running.set()
        assert hold.wait(DEADLINE)
        finished.append(i)
        return i

    me = threading.get_ident()

    def release_once_the_exit_waits() -> None:
        wait_until(lambda: thread_waits_in(me, "_finish"), timeout=DEADLINE, what="the exit")
        hold.set()

    releaser = threading.Thread(target=release_once_the_exit_waits)

    def fail_inside_the_block(pool: Executor) -> None:
        with OrderedStage(sent.append, pool, max_pending=3) as stage:
            stage.submit(work, 0)
            stage.submit(work, 1)  # queued behind 0
            assert running.wait(DEADLINE)
            releaser.start()
            raise Boom

    with ThreadPoolExecutor(1) as pool:
        with pytest.raises(Boom):
            fail_inside_the_block(pool)
        releaser.join(DEADLINE)
        assert finished == [0]  # the exit waited for it; 1 was cancelled
    assert sent == []


def test_send_and_submit_keep_one_order_and_close_refuses_more():
    with ContextThreadPoolExecutor(2) as pool:
        sent: list[str] = []
        with OrderedStage(sent.append, pool, max_pending=2) as stage:
            stage.submit(str.upper, "a")
            stage.send("b")
            stage.submit(str.upper, "c")
            stage.join()
            assert sent == ["A", "b", "C"]
            stage.send("d")
        assert sent == ["A", "b", "C", "d"]
        with pytest.raises(RuntimeError, match="after its close"):
            stage.submit(str, "e")
        stage.close()  # idempotent


def test_a_discard_that_raises_is_logged(caplog):
    def bad_discard(item: int) -> None:
        raise OSError("cannot delete")

    def emit(item: int) -> None:
        raise StreamClosed

    with ThreadPoolExecutor(1) as pool:
        stage = OrderedStage(emit, pool, max_pending=2, discard=bad_discard)
        with caplog.at_level(logging.ERROR, logger="threading_utils"):
            stage.send(1)
        with pytest.raises(StreamClosed):
            stage.close()
    assert "discard(1) failed" in caplog.text


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"max_pending": 0}, ValueError),
        ({"max_pending": True}, TypeError),
        ({"max_pending": 2.0}, TypeError),
    ],
)
def test_bad_options_are_refused(kwargs, error):
    with ThreadPoolExecutor(1) as pool, pytest.raises(error):
        OrderedStage(print, pool, **kwargs)


def test_an_executor_is_required():
    with pytest.raises(TypeError, match="Executor"):
        OrderedStage(print, object(), max_pending=1)  # type: ignore[arg-type]


# ── one sender at a time ──────────────────────────────────────────────────────────────────────


def check_one_sender(stage_cls: type[OrderedStage[int]]) -> Counting:
    """Result 0's emit blocks until result 2 is done; result 1 finishes meanwhile, on the other
    pool thread. Its done callback must leave the sending to the thread already sending."""
    first_emit = threading.Event()
    all_handed = threading.Event()
    two_done = threading.Event()

    def emit(item: int) -> None:
        if item == 0:
            first_emit.set()
            assert two_done.wait(DEADLINE), "result 2 never finished"

    counting = Counting(emit)
    order: list[int] = []

    def recording(item: int) -> None:
        counting(item)
        order.append(item)

    def work(i: int) -> int:
        if i == 0:
            assert all_handed.wait(DEADLINE)  # finishes in a pool thread, not in submit
        elif i == 1:
            assert first_emit.wait(DEADLINE)  # finishes while 0 is being sent
        else:
            two_done.set()  # runs on the same pool thread as 1, after 1's done callback
        return i

    with ThreadPoolExecutor(2) as pool:
        stage = stage_cls(recording, pool, max_pending=3)
        for i in range(3):
            stage.submit(work, i)
        all_handed.set()
        stage.close()
    counting.order = order  # type: ignore[attr-defined]
    return counting


def test_emit_is_called_by_one_thread_at_a_time():
    counting = check_one_sender(OrderedStage)
    assert counting.most_inside == 1
    assert counting.order == [0, 1, 2]  # type: ignore[attr-defined]


class EverySettlerSends(OrderedStage[Any]):
    """No sender token: the thread that settles a result sends what is ready, even while
    another thread is still inside `emit`."""

    def _take_sender_token(self) -> bool:
        self._sending = True
        return True


def test_without_the_sender_token_two_threads_emit_at_once_out_of_order():
    counting = check_one_sender(EverySettlerSends)
    assert counting.most_inside == 2
    assert counting.order != [0, 1, 2]  # type: ignore[attr-defined]


# ── context ───────────────────────────────────────────────────────────────────────────────────


def check_context(stage_cls: type[OrderedStage[Any]], executor: Executor) -> list[Any]:
    @generator_from_callback()
    def produce(emit: Emit[Any]) -> None:
        with stage_cls(emit, executor, max_pending=2) as stage:
            for _ in range(3):
                stage.submit(lambda: (request_id.get(), stop_requested()))

    request_id.set("the prediction")
    return list(produce())


@pytest.mark.parametrize("context_pool", [True, False], ids=["ContextThreadPool", "plain pool"])
def test_the_pool_runs_work_under_the_handing_over_threads_context(context_pool):
    pool_cls = ContextThreadPoolExecutor if context_pool else ThreadPoolExecutor
    with pool_cls(2) as pool:
        assert check_context(OrderedStage, pool) == [("the prediction", False)] * 3


class PlainSubmit(OrderedStage[Any]):
    """No context: the executor's own submit."""

    def _submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        return self._executor.submit(fn, *args, **kwargs)


def test_without_the_context_a_plain_pools_work_loses_the_predictions_context():
    with ThreadPoolExecutor(2) as pool:
        assert check_context(PlainSubmit, pool) == [("unset", False)] * 3


# ── hand-offs from several threads ────────────────────────────────────────────────────────────


@PROPERTY
@given(
    threads=st.integers(2, 4),
    per_thread=st.integers(0, 12),
    max_pending=st.integers(1, 5),
)
def test_hand_offs_from_several_threads_each_arrive_once_in_each_threads_order(
    threads, per_thread, max_pending
):
    ahead: list[int] = []

    @generator_from_callback(max_queue_size=2)
    def produce(emit: Emit[tuple[int, int]]) -> None:
        counting = Counting(emit)
        handed = 0
        lock = threading.Lock()

        def work(t: int, j: int) -> tuple[int, int]:
            with lock:
                if handed - counting.sent > max_pending:
                    ahead.append(handed - counting.sent)
            return t, j

        with (
            ThreadPoolExecutor(3) as pool,
            OrderedStage(counting, pool, max_pending=max_pending) as stage,
        ):

            def feed(t: int) -> None:
                nonlocal handed
                for j in range(per_thread):
                    stage.submit(work, t, j)
                    with lock:
                        handed += 1

            feeders = [ContextThread(target=feed, args=(t,)) for t in range(threads)]
            for feeder in feeders:
                feeder.start()
            for feeder in feeders:
                feeder.join()

    got = list(produce())
    assert sorted(got) == [(t, j) for t in range(threads) for j in range(per_thread)]
    for t in range(threads):
        assert [j for u, j in got if u == t] == list(range(per_thread))
    assert ahead == []


class _HeldExecutor(Executor):
    """Runs calls on a real pool; the first `submit` it is told to hold waits until `release`."""

    def __init__(self, pool: Executor) -> None:
        self.pool = pool
        self.entered = threading.Event()
        self.hold = False
        self.release: Callable[[], bool] = lambda: True

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        if self.hold:
            self.hold = False
            self.entered.set()
            wait_until(self.release, timeout=DEADLINE, what="the second hand-off")
        return self.pool.submit(fn, *args, **kwargs)


class RoomCheckedApart(OrderedStage[Any]):
    """The room check and the hand-off in two critical sections instead of one."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> None:
        with self._changed:
            self._wait_for_room()
        future = self._submit(fn, *args, **kwargs)
        with self._changed:
            handoff = self._track(future)
        future.add_done_callback(functools.partial(self._settle, handoff))


def check_two_threads_at_the_last_free_place(stage_cls: type[OrderedStage[Any]]) -> int:
    """One place left; thread A takes it and is held inside the executor's submit until
    thread B has called submit too (B waits for the stage's lock, or went past it). Returns
    how many hand-offs were unsent at most."""
    hold = threading.Event()
    with ThreadPoolExecutor(3) as pool:
        executor = _HeldExecutor(pool)
        stage = stage_cls(lambda item: None, executor, max_pending=2)
        stage.submit(hold.wait, DEADLINE)  # one place taken until `hold`
        handed = [0, 0]
        b_ident = 0

        def b_in_submit() -> bool:
            """B returned, or is at the stage's lock in submit (taking it, or waiting for it)."""
            if handed[1]:
                return True
            frame = sys._current_frames().get(b_ident)
            if frame is not None and frame.f_code.co_name == "__enter__":  # Condition's
                frame = frame.f_back
            return (
                frame is not None
                and frame.f_code.co_name == "submit"
                and frame.f_locals.get("self") is stage
                and stage._lock.locked()
            )

        def hand_off(n: int) -> None:
            nonlocal b_ident
            if n == 1:
                b_ident = threading.get_ident()
            stage.submit(hold.wait, DEADLINE)
            handed[n] = 1

        executor.hold = True
        executor.release = b_in_submit
        a = threading.Thread(target=hand_off, args=(0,))
        a.start()
        assert executor.entered.wait(DEADLINE)
        b = threading.Thread(target=hand_off, args=(1,))
        b.start()
        wait_until(
            lambda: (handed[0] and handed[1]) or blocked_for_room(b_ident),
            timeout=DEADLINE,
            what="B to block on the bound, or to get past it",
        )
        most = 1 + handed[0] + handed[1]
        hold.set()
        a.join(DEADLINE)
        b.join(DEADLINE)
        stage.close()
    return most


def test_two_threads_cannot_both_take_the_last_free_place():
    assert check_two_threads_at_the_last_free_place(OrderedStage) == 2


def test_without_one_critical_section_two_threads_both_take_the_last_free_place():
    assert check_two_threads_at_the_last_free_place(RoomCheckedApart) == 3


# ── nothing outlives the stage ────────────────────────────────────────────────────────────────


def test_no_work_of_the_stage_runs_once_the_stream_has_ended():
    running = 0
    lock = threading.Lock()
    observed: list[int] = []

    def work(i: int) -> int:
        nonlocal running
        with lock:
            running += 1
        try:
            return i
        finally:
            with lock:
                running -= 1

    @generator_from_callback()
    def produce(emit: Emit[int]) -> None:
        with ThreadPoolExecutor(4) as pool, OrderedStage(emit, pool, max_pending=4) as stage:
            for i in range(50):
                stage.submit(work, i)

    stream = produce()
    for _ in range(10):
        next(stream)
    stream.close()
    observed.append(running)
    assert observed == [0]


def test_the_stage_leaves_the_streams_stop_hooks_when_it_closes():
    hooks: list[Any] = []

    @generator_from_callback()
    def produce(emit: Emit[int]) -> None:
        from threading_utils._stream import _current_stream

        stream = _current_stream.get()
        assert stream is not None
        with ThreadPoolExecutor(1) as pool, OrderedStage(emit, pool, max_pending=1) as stage:
            hooks.append(list(stream.stop_hooks or []))
            stage.send(1)
        hooks.append(list(stream.stop_hooks or []))

    assert list(produce()) == [1]
    assert len(hooks[0]) == 1
    assert hooks[1] == []


def test_an_async_consumer_gets_the_results_in_order():
    @async_generator_from_callback(max_queue_size=3)
    def produce(emit: Emit[int], n: int) -> None:
        with (
            ContextThreadPoolExecutor(3) as pool,
            OrderedStage(emit, pool, max_pending=5) as stage,
        ):
            for i in range(n):
                stage.submit(pow, i, 2)

    assert asyncio.run(collect(produce(40))) == [i * i for i in range(40)]


# ── results are freed with their last reference, not by the cyclic collector ───────────────────


class Result:
    pass


def check_a_sent_result_is_freed_when_the_consumer_drops_it() -> bool:
    """A result's future keeps a done callback that refers to its hand-off; if the hand-off
    kept the future too, the result would wait for the cyclic collector (whose finalizers run
    in whatever thread allocates then: prediction_files' deadlock)."""
    handed = threading.Event()
    sent: list[Result] = []
    gc.disable()
    try:
        with ThreadPoolExecutor(1) as pool, OrderedStage(sent.append, pool, max_pending=2) as st:
            st.submit(lambda: handed.wait(DEADLINE) and Result())  # done after add_done_callback
            handed.set()
            st.join()
            result = weakref.ref(sent.pop())
            return result() is None
    finally:
        gc.enable()


def test_a_sent_result_is_freed_as_soon_as_the_consumer_drops_it():
    assert check_a_sent_result_is_freed_when_the_consumer_drops_it()


def test_when_the_hand_off_keeps_its_future_the_result_outlives_the_consumer(monkeypatch):
    from threading_utils import _ordered

    monkeypatch.setattr(_ordered._Handoff, "release", lambda self: self.future)
    assert not check_a_sent_result_is_freed_when_the_consumer_drops_it()
