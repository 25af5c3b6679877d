"""benchmarks/model/profile_server.py: how a py-spy sample of the model thread is classified,
how a server round's wall time is split from the model thread's timings, how paired steps are
compared, and what an output event costs."""

from __future__ import annotations

import pytest

from benchmarks.model.profile_server import (
    SPLIT,
    classify,
    drift_free,
    is_model_thread,
    paired_ratio,
    per_event,
    split_round,
    waiting_for_work,
)

LOOP = [
    "thread (7): model-scheduler",
    "Thread.run (threading.py:982)",
    "Scheduler._loop (model/scheduler.py:337)",
]


def test_the_innermost_frame_of_this_repository_decides() -> None:
    step = [
        *LOOP,
        "Scheduler._step (model/scheduler.py:377)",
        "Engine.decode (model/engine.py:251)",
    ]
    assert (
        classify(
            [
                *step,
                "GPT.decode (model/gpt.py:423)",
                "Linear.forward (torch/nn/modules/linear.py:134)",
            ]
        )
        == "model compute"
    )
    assert (
        classify(
            [*step, "sample_batch (model/sampling.py:90)", "softmax (torch/nn/functional.py:1)"]
        )
        == "sampling"
    )
    deliver = [
        *LOOP,
        "Scheduler._step (model/scheduler.py:392)",
        "Scheduler._deliver (model/scheduler.py:414)",
    ]
    assert classify(deliver) == "scheduler bookkeeping"
    assert (
        classify(
            [
                *deliver,
                "Channel.send (threading_utils/_stream.py:592)",
                "Event.set (threading.py:599)",
            ]
        )
        == "channel hand-offs"
    )
    assert (
        classify(
            [
                *deliver,
                "Channel.run (threading_utils/_stream.py:650)",
                "Report.on_finish (predict.py:120)",
            ]
        )
        == "listener: logs, metrics"
    )
    assert classify(["thread (7): model-scheduler"]) == "other"


def test_the_model_thread_and_its_wait_for_work() -> None:
    assert is_model_thread(LOOP)
    assert is_model_thread(
        ["thread (7): model-scheduler", "Linear.forward (torch/nn/modules/linear.py:134)"]
    )
    assert not is_model_thread(["thread (9)", "_consume_sync (threading_utils/_stream.py:732)"])
    assert waiting_for_work(
        [*LOOP, "Event.wait (threading.py:629)", "Condition.wait (threading.py:327)"]
    )
    assert not waiting_for_work(
        [*LOOP, "Scheduler._step (model/scheduler.py:377)", "Event.wait (threading.py:629)"]
    )


def test_a_rounds_wall_time_is_split_into_parts_that_add_up_to_it() -> None:
    # client sends at 10.0 and has every `completed` at 11.0; the worker sees the requests at
    # 10.004 and 10.006, prefills twice (10 ms each), decodes 3 steps (0.3 s wall, 0.25 s CPU
    # in all), its last step ending at 10.99
    records = [
        ["s", 10.004],
        ["p", 10.005, 0.010],
        ["s", 10.006],
        ["p", 10.016, 0.010],
        ["d", 10.030, 0.100, 0.090, 2, 2],
        ["d", 10.200, 0.100, 0.080, 2, 2],
        ["d", 10.890, 0.100, 0.080, 2, 1],
    ]
    parts = split_round(records, start=10.0, wall=1.0, raw_wall=0.5, raw_prefill=0.02)
    assert set(parts) == {key for key, _ in SPLIT}
    assert parts["raw"] == pytest.approx(0.5)
    assert parts["decode_cpu"] == pytest.approx(0.25 - 0.48)  # CPU above the raw loop's decode
    assert parts["decode_wait"] == pytest.approx(0.05)
    assert parts["prefill"] == pytest.approx(0.0)
    assert parts["before"] == pytest.approx(0.004)
    assert parts["after"] == pytest.approx(0.010)
    assert parts["between"] == pytest.approx((10.99 - 10.004) - 0.3 - 0.02)
    assert sum(parts.values()) == pytest.approx(1.0)


def test_a_round_without_records_is_an_error_not_a_split() -> None:
    with pytest.raises(RuntimeError, match="no records"):
        split_round([], start=0.0, wall=1.0, raw_wall=0.5, raw_prefill=0.01)


def test_paired_steps_compare_only_full_batches_by_their_median_ratio() -> None:
    records = [
        ["s", 1.0],  # other kinds of record are not steps
        ["r", 8, 3, 0.0110, 0.0100],
        ["r", 8, 2, 0.0090, 0.0100],
        ["r", 8, 1, 0.0300, 0.0100],  # a window slide: the median is not moved by it
        ["r", 7, 2, 0.0500, 0.0100],  # a request had left: not a full batch
    ]
    result = paired_ratio(records, 8)
    assert result["ratio"] == pytest.approx(1.1)
    assert result["steps"] == 3


def test_no_paired_step_is_an_error_not_a_ratio() -> None:
    with pytest.raises(RuntimeError, match="no paired step of 8"):
        paired_ratio([["r", 4, 1, 0.01, 0.01]], 8)


def test_the_drift_free_ratio_takes_the_raw_decode_time_from_the_paired_steps() -> None:
    # the raw round ran slow: the split credits the server with 2% of "negative" decode CPU
    timeline = {"shares": {"raw": 0.96, "decode_cpu": -0.02}, "paired": {"ratio": 1.01}}
    assert drift_free(timeline) == pytest.approx(0.94 / 1.01)


def test_the_drained_ratio_reads_the_drained_rounds_shares() -> None:
    timeline = {
        "shares": {"raw": 0.90, "decode_cpu": 0.0},
        "drained_shares": {"raw": 0.93, "decode_cpu": 0.02},
        "paired": {"ratio": 1.0},
    }
    assert drift_free(timeline, "drained_shares") == pytest.approx(0.95)


def test_an_events_cost_is_the_streamed_rounds_time_outside_the_steps_above_the_drained() -> None:
    # streamed: 10% of 10 s outside the decode steps' CPU; drained: 8% of theirs; 1,000 events
    streamed = {"raw": 0.93, "decode_cpu": -0.03}
    drained = {"raw": 0.90, "decode_cpu": 0.02}  # slower raw round: the drift does not count
    assert per_event(streamed, drained, 10.0, 1000) == pytest.approx(0.02 * 10.0 / 1000)
    with pytest.raises(ValueError, match="no output events"):
        per_event(streamed, drained, 10.0, 0)
