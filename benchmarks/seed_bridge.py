"""The seed article's ``async_generator_from_thread`` decorator, re-implemented as a baseline.

Kept only as the benchmark baseline for :mod:`benchmarks.bench_bridge`; use
:func:`threading_utils.async_generator_from_thread` in real code. The algorithm is the article's,
step for step:

- a new ``ThreadPoolExecutor`` per call when no executor is given;
- ``ctx = contextvars.copy_context()`` in the consumer, ``executor.submit(ctx.run, runner)``;
- every item is handed over with ``asyncio.run_coroutine_threadsafe(queue.put(item), loop)``
  and the producer blocks on ``.result()`` until the event loop has run that ``put``;
- the end of the stream (a sentinel) and any exception are sent with
  ``loop.call_soon_threadsafe(queue.put_nowait, ...)``; the consumer re-raises exceptions;
- ``shutdown(wait=False)`` of the per-call executor in the consumer's ``finally``.

Known defects (why it is not used anywhere else):

- Slow: one event-loop round trip per item, with the producer thread blocked on each one
  (tens of thousands of items/s where a plain generator runs at tens of millions).
- ``max_queue_size=0`` by default: an unbounded queue, so a slow consumer lets memory grow
  without limit.
- With a bounded queue, a producer that raises while the queue is full loses the error:
  ``put_nowait`` raises ``QueueFull`` inside a loop callback, no sentinel arrives and the
  consumer waits forever.
- Nothing stops the producer when the consumer goes away (``aclose()``, client disconnect,
  cancellation): the generator runs to its end, or blocks forever on a full queue.
- The per-call executor is shut down with ``wait=False``: its thread outlives the stream.
- A producer that *yields* an exception object has it raised in the consumer instead.
- Only ``contextvars`` are carried: torch's thread-local modes (grad / inference mode,
  autocast, CUDA device) are not; and there is no counterpart for sync consumers.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import AsyncGenerator, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from functools import wraps
from typing import Any

__all__ = ["async_generator_from_thread"]

_sentinel = object()


def async_generator_from_thread(
    executor: ThreadPoolExecutor | None = None,
    max_queue_size: int = 0,
) -> Callable[[Callable[..., Iterable[Any]]], Callable[..., AsyncGenerator[Any, None]]]:
    """The seed article's decorator: sync generator function -> async generator (baseline only)."""

    def decorator(
        gen_func: Callable[..., Iterable[Any]],
    ) -> Callable[..., AsyncGenerator[Any, None]]:
        @wraps(gen_func)
        def wrapper(*args: Any, **kwargs: Any) -> AsyncGenerator[Any, None]:
            async def async_gen() -> AsyncGenerator[Any, None]:
                loop = asyncio.get_running_loop()
                queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=max_queue_size)
                local_executor = None
                ctx = contextvars.copy_context()

                used_executor = executor
                if used_executor is None:
                    local_executor = ThreadPoolExecutor()
                    used_executor = local_executor

                def thread_runner() -> None:
                    try:
                        gen = gen_func(*args, **kwargs)
                        for item in gen:
                            future = asyncio.run_coroutine_threadsafe(queue.put(item), loop)
                            future.result()
                        loop.call_soon_threadsafe(queue.put_nowait, _sentinel)
                    except Exception as e:
                        loop.call_soon_threadsafe(queue.put_nowait, e)
                    except BaseException as e:  # the article's second clause, kept as written
                        loop.call_soon_threadsafe(queue.put_nowait, e)

                used_executor.submit(ctx.run, thread_runner)

                try:
                    while True:
                        item = await queue.get()
                        if item is _sentinel:
                            break
                        if isinstance(item, BaseException):
                            raise item
                        yield item
                finally:
                    if local_executor is not None:
                        local_executor.shutdown(wait=False)

            return async_gen()

        return wrapper

    return decorator
