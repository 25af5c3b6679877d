"""Make coglet's cancel stop a generator that an async ``run()`` returned (coglet 0.23 workaround).

The upstream behaviour worked around, read in replicate/cog at 6110c91 (0.22.0; the 0.23.1 wheel
logs the same messages on this path), ``crates/coglet-python/src/worker_bridge.rs``: coglet
submits an async ``run()`` to its event loop with ``asyncio.run_coroutine_threadsafe``
(``submit_async_coroutine`` in ``crates/coglet-python/src/predictor.rs``) and keeps the returned
``concurrent.futures.Future`` as the slot's state. Its ``cancel(slot)`` — for a
``POST /predictions/{id}/cancel``, and for a client that drops its SSE stream or its synchronous
request, which coglet turns into the same cancel (``crates/coglet/src/service.rs``) — marks the
slot cancelled and calls ``cancel_async_future()``, whose only action is ``future.cancel()``.
Once ``run()`` has returned its generator that future is finished: ``cancel()`` returns False and
changes nothing, and coglet goes on iterating the generator in its slot thread to its end
(``process_generator_output`` in predictor.rs neither closes it nor checks anything between
items). The model therefore generates until ``max_new_tokens``, holding the slot, and only then
does coglet report the prediction ``canceled``.

The workaround: :func:`install` wraps ``concurrent.futures.Future.cancel`` in this process.
Cancelling a future that finished successfully with one of ``threading_utils``' streams as its
result (a ``generator_from_thread`` generator, a ``Channel.stream()``, ... — whatever
:func:`threading_utils.request_stop` recognises) asks that stream's producer to stop; the stream
then ends quietly at once, coglet's iteration ends, and coglet 0.23.1 reports the prediction
``canceled`` within milliseconds (tests/test_coglet_cancel.py, on the real server). Every other
future behaves exactly as before, and asyncio's futures are a different class, untouched.

Return value: for a bridge stream the wrapped ``cancel()`` still returns False — the future was
finished and stays so (``cancelled()`` False, no callbacks run), as ``Future.cancel`` documents.
coglet ignores the value anyway (``Ok(_) => true`` in ``cancel_async_future``); only an exception
would reach it (logged as "Failed to cancel async future"), so the stop request never raises.

When to remove it: ``test_without_the_hook_coglet_runs_a_returned_stream_to_its_end`` in
tests/test_coglet_cancel.py serves a stream with and without the hook on the real server. The
day its "without it" case fails, coglet stops such streams itself: delete this module, the
``install()`` lines in predict.py and the examples, and that test.

Call :func:`install` explicitly (predict.py's ``setup()`` does), never at import: it changes a
standard-library class for the whole process, which only the process that serves the model
should do. This module imports neither cog nor the model.
"""

from __future__ import annotations

import concurrent.futures
import functools
import logging
import threading
from collections.abc import Callable
from typing import Any

from threading_utils import request_stop

__all__ = ["install", "installed", "uninstall"]

_log = logging.getLogger(__name__)
_lock = threading.Lock()
_original: Callable[[concurrent.futures.Future[Any]], bool] | None = None


def install() -> bool:
    """Wrap ``concurrent.futures.Future.cancel`` (see the module docstring); thread-safe.

    Idempotent: True if this call installed the wrapper, False if it was already installed.
    """
    global _original
    with _lock:
        if _original is not None:
            return False
        original = concurrent.futures.Future.cancel

        @functools.wraps(original)  # also sets __wrapped__ = original
        def cancel(self: concurrent.futures.Future[Any]) -> bool:
            cancelled = original(self)
            if not cancelled:
                _stop_stream_result(self)
            return cancelled

        concurrent.futures.Future.cancel = cancel  # type: ignore[method-assign]
        _original = original
        return True


def uninstall() -> bool:
    """Restore the original ``Future.cancel``; True if it was installed. For tests."""
    global _original
    with _lock:
        if _original is None:
            return False
        concurrent.futures.Future.cancel = _original  # type: ignore[method-assign,assignment]
        _original = None
        return True


def installed() -> bool:
    """Whether :func:`install` is in effect in this process."""
    return _original is not None


def _stop_stream_result(future: concurrent.futures.Future[Any]) -> None:
    """After the original ``cancel()`` returned False: the future is running or finished.

    A finished, successful future whose result is a bridge stream gets that stream stopped.
    ``done()``, ``exception(0)`` and ``result(0)`` of a finished future only read its state.
    """
    try:
        if not future.done() or future.cancelled() or future.exception(timeout=0) is not None:
            return
        request_stop(future.result(timeout=0))
    except Exception:  # never let the workaround break a cancel
        _log.exception("stopping the stream of a cancelled prediction failed")
