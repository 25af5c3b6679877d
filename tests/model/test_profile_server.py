"""benchmarks/model/profile_server.py: how a py-spy sample of the model thread is classified."""

from __future__ import annotations

from benchmarks.model.profile_server import classify, is_model_thread, waiting_for_work

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
