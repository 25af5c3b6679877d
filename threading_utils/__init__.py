"""Run generators and calls in worker threads without losing the caller's context.

A new thread starts with an empty ``contextvars`` context and torch's default thread-local modes,
so per-request state — Cog's prediction scope (where ``print``, ``logging`` and
``current_scope().record_metric()`` go), ``torch.inference_mode()``, autocast — is lost there.
This package carries that state across, and bridges a generator running in a worker thread to an
async or sync consumer with backpressure, error propagation and cancellation.

Standard library only; torch state is carried when torch is already imported, and torch is never
imported by this package. It does not depend on cog.

Public API:
    capture_context()                  snapshot the calling thread's state; ``.run(fn, ...)``
    ContextThread                      a Thread whose target runs under the state at start()
    ContextThreadPoolExecutor          an executor whose calls run under the state at submit()
    async_generator_from_thread(...)   sync generator function -> async generator, in a thread
    generator_from_thread(...)         sync generator function -> generator, in a thread
    async_generator_from_callback(...) function pushing through ``emit`` -> async generator
    generator_from_callback(...)       function pushing through ``emit`` -> generator
    Emit, StreamClosed                 the ``emit`` callable's type; what it raises once the
                                       consumer has gone
    Channel                            one stream fed by a thread of yours (one thread, many
                                       streams: a batching scheduler); context per stream
    OrderedStage                       work handed to a pool from a producer, its results
                                       emitted in hand-off order, bounded and stoppable
    Batcher                            dynamic batching: callers submit one item each, one
                                       thread runs the batch function over many at once
    current_batch(), BatchItem         inside a batch function: its items, each with
                                       ``.run(fn)`` under its caller's context
    stop_requested()                   inside a producer: has its consumer gone away?
    request_stop(stream)               from any thread: stop a stream's producer (cancel hooks)
"""

from ._batch import Batcher, BatchItem, current_batch
from ._context import ContextThread, ContextThreadPoolExecutor, capture_context
from ._ordered import OrderedStage
from ._stream import (
    Channel,
    Emit,
    StreamClosed,
    async_generator_from_callback,
    async_generator_from_thread,
    generator_from_callback,
    generator_from_thread,
    request_stop,
    stop_requested,
)

__all__ = [
    "BatchItem",
    "Batcher",
    "Channel",
    "ContextThread",
    "ContextThreadPoolExecutor",
    "Emit",
    "OrderedStage",
    "StreamClosed",
    "async_generator_from_callback",
    "async_generator_from_thread",
    "capture_context",
    "current_batch",
    "generator_from_callback",
    "generator_from_thread",
    "request_stop",
    "stop_requested",
]
