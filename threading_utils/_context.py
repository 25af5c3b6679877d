"""Snapshots of a thread's context, and threads / executors that run under one.

A new OS thread starts with an empty :mod:`contextvars` context and torch's default thread-local
modes (grad enabled, no inference mode, no autocast, CUDA device 0). Anything keyed on either —
Cog's per-prediction scope (logs, metrics), request ids, ``torch.inference_mode()`` — is silently
lost when work moves to another thread. :func:`capture_context` takes the snapshot in the caller;
:meth:`CapturedContext.run` re-applies it around a call in any thread.
"""

from __future__ import annotations

import contextvars
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

from ._errors import StreamClosed

__all__ = ["CapturedContext", "ContextThread", "ContextThreadPoolExecutor", "capture_context"]

P = ParamSpec("P")
R = TypeVar("R")

# Device types whose autocast state is captured. "cpu" and "cuda" cover what torch's public
# autocast supports on the platforms this template targets; others are left as the thread has them.
_AUTOCAST_DEVICES = ("cpu", "cuda")


@dataclass(frozen=True, slots=True)
class _TorchState:
    """torch's thread-local modes, as read in one thread."""

    grad_enabled: bool
    inference_mode: bool
    autocast: tuple[tuple[str, bool, Any], ...]  # (device_type, enabled, dtype)
    cuda_device: int | None  # None when CUDA was not initialised in the capturing process

    @staticmethod
    def capture() -> _TorchState | None:
        # Never import torch here: a process that has not imported it has no torch state to
        # carry, and importing it would cost seconds.
        torch = sys.modules.get("torch")
        if torch is None:
            return None
        try:
            return _TorchState(
                grad_enabled=torch.is_grad_enabled(),
                inference_mode=torch.is_inference_mode_enabled(),
                autocast=tuple(
                    (dev, torch.is_autocast_enabled(dev), torch.get_autocast_dtype(dev))
                    for dev in _AUTOCAST_DEVICES
                ),
                cuda_device=torch.cuda.current_device() if torch.cuda.is_initialized() else None,
            )
        except AttributeError:  # torch is only partly imported (capture during its import)
            return None

    def apply(self, stack: ExitStack) -> None:
        """Enter context managers on ``stack`` that put the current thread in this state.

        Only what differs from the current thread's own state is entered; ``stack.close()``
        restores the thread's previous state.
        """
        import torch

        if torch.is_inference_mode_enabled() != self.inference_mode:
            stack.enter_context(torch.inference_mode(self.inference_mode))
        if torch.is_grad_enabled() != self.grad_enabled:
            stack.enter_context(torch.set_grad_enabled(self.grad_enabled))
        for device, enabled, dtype in self.autocast:
            if torch.is_autocast_enabled(device) != enabled or (
                enabled and torch.get_autocast_dtype(device) != dtype
            ):
                stack.enter_context(torch.autocast(device, dtype=dtype, enabled=enabled))
        if self.cuda_device is not None and torch.cuda.current_device() != self.cuda_device:
            stack.enter_context(torch.cuda.device(self.cuda_device))


class CapturedContext:
    """A snapshot of one thread's context, made by :func:`capture_context`.

    Holds a copy of the :mod:`contextvars` context and, when torch was already imported at capture
    time, torch's thread-local modes: grad mode, inference mode, autocast (enabled and dtype, for
    ``cpu`` and ``cuda``) and the current CUDA device.

    A snapshot is immutable and thread-safe: :meth:`run` may be called from any number of threads
    at once, each run seeing its own copy of the captured context variables.
    """

    __slots__ = ("_context", "_torch")

    def __init__(self, context: contextvars.Context, torch_state: _TorchState | None) -> None:
        self._context = context
        self._torch = torch_state

    def run(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Call ``fn(*args, **kwargs)`` in the current thread under the captured state.

        Each call runs in a fresh copy of the captured context (a ``contextvars.Context`` cannot
        be entered by two threads at once), so ``ContextVar.set()`` inside ``fn`` is visible to
        ``fn`` and whatever it calls, never to the caller or to other runs. torch modes are
        applied around the call and the thread's own modes are restored afterwards, also when
        ``fn`` raises.

        Errors:
            Whatever ``fn`` raises propagates unchanged.
        """
        context = self._context.copy()
        if self._torch is None:
            return context.run(fn, *args, **kwargs)
        with ExitStack() as stack:
            self._torch.apply(stack)
            return context.run(fn, *args, **kwargs)


def capture_context() -> CapturedContext:
    """Snapshot the calling thread's context variables and torch thread-local modes.

    Call it in the thread whose state should travel (an ``async def predict`` coroutine, a
    request handler), then hand the snapshot to the worker and call :meth:`CapturedContext.run`
    there. Capturing is cheap (an O(1) context copy plus a few torch flag reads); torch is never
    imported by this function.
    """
    return CapturedContext(contextvars.copy_context(), _TorchState.capture())


class ContextThread(threading.Thread):
    """A :class:`threading.Thread` whose ``run()`` executes under the state captured at ``start()``.

    The same semantics as ``threading.Thread(context=None)`` on CPython 3.14: the thread that
    calls :meth:`start` provides the context variables (and, here, torch's modes) that the target
    sees. Subclasses that override :meth:`run` are covered too; calling ``run()`` directly
    (without ``start()``) runs it in the caller's own thread and context, as for any Thread.

    Errors:
        As for any Thread, an exception that ends the target goes to :func:`threading.excepthook`
        (printed, under the captured context: into the prediction's logs); it is not the
        stream's error unless the producer that started the thread joins it and re-raises.
        :class:`~threading_utils.StreamClosed` — a callback stream's ``emit`` called in this
        thread after the consumer left — ends the thread quietly instead.
    """

    def start(self) -> None:
        captured = capture_context()
        run = self.run  # the subclass's run(), if it overrides it

        def run_in_captured_context() -> None:
            try:
                captured.run(run)
            except StreamClosed:
                pass  # `emit` told this thread its stream's consumer left: a quiet way to end
            finally:
                vars(self).pop("run", None)  # break the self -> closure -> self cycle

        self.run = run_in_captured_context  # type: ignore[method-assign]
        try:
            super().start()
        except BaseException:
            vars(self).pop("run", None)
            raise


class ContextThreadPoolExecutor(ThreadPoolExecutor):
    """A thread pool executor that runs each call under its submitter's state.

    :meth:`submit` captures the submitting thread's state (see :func:`capture_context`) and runs
    the call under it; :meth:`map` submits every call at once at ``map()`` time, so all of them see
    the state of the thread that called ``map()``. Worker threads keep no state between calls.
    """

    def submit(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> Future[R]:
        return super().submit(capture_context().run, fn, *args, **kwargs)
