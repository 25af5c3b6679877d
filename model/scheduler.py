"""Continuous batching: one thread decodes every request's sequence in one shared batch.

::

    submit() ──▶ waiting queue ──(policy: _plan)──▶ running batch ──(the step: _step)──▶ channels
    (any thread)  highest effective                 ≤ max_batch_size    prefill the joiners,     │
                  priority first, FIFO              sequences            one decode for the rest │
                  within a priority                                                             ▼
                                                    consumers: channel.stream() / .astream()

Every request gets a :class:`~threading_utils.Channel`, created in ``submit`` — that is, in the
caller's context (a Cog prediction's) — and the scheduler thread is the only one that feeds it.
One iteration of the thread's loop:

1. **policy** (``_plan``, no model call): drop the requests whose consumer left; move waiting
   requests into the batch while it has room, by effective priority; pick the running requests
   whose channel has room (``writable``) — a request whose consumer is slow is *paused*, skipped
   this step, and never stalls the others;
2. **the step** (``_step``): close the channels of the leavers (their KV caches go back through
   the engine's optional ``release(seq)``, else with their ``SequenceState``), prefill the
   joiners (each samples its first token), then one batched ``engine.decode`` over every picked
   sequence; each new token goes through the request's own
   UTF-8 decoder into its channel.

Requests therefore join the batch between two decode steps, and leave it at the step after their
consumer left, or in the step that made their last token. The thread sleeps only when there is
nothing to run; ``submit``, a consumer that frees room or leaves (``on_ready``) and ``shutdown``
wake it.

Knobs (``Scheduler(engine, ...)``):

- ``max_batch_size`` (32): sequences decoded together; see the measurement below.
- ``flush_interval`` (0.01 s): a request's text goes out as chunks — its first piece at once,
  then whatever accumulated over ``flush_interval``, the rest at the end. Cog's server spends
  ~100 µs of GIL per output event, which the model thread then waits for; one event per token
  per request would cost more than the model at large batches.
- ``max_events_per_second`` (100): with many requests running, each one's interval grows to
  ``running / max_events_per_second`` (8 running: 80 ms; 32 running: 320 ms), so that all of
  them together send at most ~100 chunks a second however large the batch. Each chunk costs
  the model thread time it does not compute in: coglet's slot thread takes the GIL to send it,
  and the model thread waits for it inside its step. Measured through the server
  (``benchmarks/model/profile_server.py``'s split of a round): 100 instead of 250, with the
  consumers' wait slices at 200 ms instead of 50, halved the model thread's waits inside its
  steps (3.8% -> 2.0% of the round at 8 running, 3.7% -> 1.5% at 32) and took server/raw from
  82.9% to 88.5% at 8 and from 86.4% to 90.1% at 32 (medians of 6 and 5 alternating rounds).
  Earlier, 250 instead of 500 gave 13% more tokens/s at 8 and 5% at 32. ``None``:
  ``flush_interval`` only.
- ``aging_rate`` (1.0 priority level per second): the effective priority of a waiting request is
  ``priority + aging_rate * seconds waited``. So a request waiting ``k / aging_rate`` seconds
  goes before any request of priority up to ``priority + k`` that arrives later, and a low
  priority cannot wait for ever. Since every waiting request ages at the same rate, the order is
  fixed at submit time: ``priority - aging_rate * submit_time``, higher first, then FIFO.
  ``aging_rate=0`` is strict priority.
- ``max_queue_size`` (1024 chunks), ``grace_period`` (5 s): each channel's
  (see :class:`~threading_utils.Channel`).
- ``progress_every`` (256 tokens): how often the listener's ``on_progress`` runs.
- ``num_threads``: torch intra-op threads for the scheduler thread (set in that thread; None
  leaves torch's setting alone).
- ``clock`` (``time.monotonic``): the time source of arrivals, ``queue_time`` and flushing; a
  test can pass a fake one.

Why ``max_batch_size=32`` and one torch thread (``python -m benchmarks.model.bench_model``: decode
steps of B sequences, sampling included, in one thread that set its torch thread count itself;
this project's 2-core CPU, fp32, median of 3 x 40 steps)::

    batch            1     2     4     8    12    16    24    32    48    64
    1 thread  ms  1.58  2.50  3.30  4.64  6.14  7.48  9.86 12.28 16.89 21.19
           tok/s   634   800  1214  1725  1956  2138  2435  2607  2842  3021
    2 threads ms  1.70  3.17  3.82  4.61  5.44  6.28  7.99  9.16 12.06 15.06
           tok/s   590   632  1048  1734  2207  2547  3004  3493  3980  4251

Tokens/s keep rising up to 64 but flatten: 32 -> 64 adds 16% for 1.7x the step time (each
stream 81 -> 47 tokens/s). 32 takes most of the batching gain while each stream stays far above
reading speed, and equals predict.py's 32 concurrent predictions, so none of them waits in the
queue. A KV cache slot is 2 MB (fp32): 64 MB for 32. A second torch thread wins in this table
from B = 12 on, but inside the server (``benchmarks/model/bench_server.py``) it lost 17% at one
stream and 14% at 8 — it takes the core that the server's own threads (HTTP, output events, the
consumers) need — and won 11% only at 32. Hence one on 2 cores. (On a bigger CPU, measure again.)

Determinism — what is guaranteed:

- Each sequence samples only from its own ``torch.Generator`` (seeded from its request), with
  one draw per token, whatever else is in the batch; the scheduler never reorders, drops or
  duplicates a sequence's tokens. So a request's draws never depend on its batch-mates.
- The same requests decoded in the same batches give bitwise the same text, run after run.
- Across batch sizes the *logits* are equal only up to float reduction order: CPU sgemm picks
  other kernels for fewer than 4 rows, and a row's values differed by ~1e-5 between batch 1
  and batch 8 here. The text is therefore the same alone or in any batch unless a random draw
  lands within that distance of a boundary between two tokens. None did here: 16 prompts x 60
  tokens gave the same text alone and in batches of 2, 4, 8 and 16, and the 74 requests of the
  server tests (20 to 600 tokens, 1 torch thread) the same alone and shuffled through this
  scheduler with max_batch_size 3, 8, 17 and 32 (measured before the batched sampling and the
  KV pool; since then the server tests' 32 concurrent predictions still match their in-process
  single runs exactly). On CUDA in bf16 the gap is larger and differing
  text correspondingly more likely. The tests check exactly this: fixed prompts and seeds give
  the same text alone and in a batch of 8 (CPU fp32), the same batch twice gives the same text,
  and with a batch-invariant fake engine no arrival order or batch size changes any request's
  text.

Errors:

- A request whose prefill raises fails alone: its channel ends with that exception.
- A batched decode step that raises fails the requests of that step (``RuntimeError("decode step
  failed: ...")`` from the error); the others, and later requests, are served on. An engine (or a
  wrapper) that knows which sequences failed *before changing any* raises
  :class:`SequenceError`: only those requests fail, and the step runs again without them.
- A listener callback that raises fails its own request.
- If the thread ever dies (an exception that is not an ``Exception`` escapes), every waiting and
  running request fails at once with ``RuntimeError("scheduler stopped: ...")``, ``submit``
  raises the same, and ``healthy`` turns False.

Listeners: ``submit(..., listener=...)`` takes a :class:`RequestListener`, whose methods the
scheduler thread calls under the request's captured context (``channel.run``), so that a
``print`` or a Cog metric in them lands on the request's own prediction. Keep them short: the
whole batch waits for them.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from threading_utils import Channel

from .sampling import SamplingParams, resolve_seed
from .text import Utf8StreamDecoder

__all__ = ["BatchEngine", "RequestListener", "Scheduler", "SequenceError"]

_log = logging.getLogger(__name__)


class BatchEngine(Protocol):
    """What the scheduler needs of an engine (``Engine`` is one)."""

    def prefill(self, prompt: str, params: SamplingParams) -> Any:
        """A new sequence whose ``last_token`` is its first sampled token."""
        ...

    def decode(self, seqs: Sequence[Any]) -> list[int]:
        """One more token for each sequence, in order."""
        ...

    # Optional: ``release(seq)``, called when a sequence leaves, frees its KV cache at once.


class SequenceError(Exception):
    """Raised by ``decode`` when some sequences failed and *no* sequence was changed.

    ``errors`` maps positions in the ``seqs`` argument to their errors: those requests fail with
    them, and the scheduler runs the step again for the rest.
    """

    def __init__(self, errors: Mapping[int, BaseException]) -> None:
        super().__init__(f"{len(errors)} sequence(s) failed")
        self.errors = dict(errors)


class RequestListener:
    """Callbacks for one request; override the ones you need.

    The scheduler thread calls them under the request's captured context. If one raises, the
    request fails with that error.
    """

    def on_start(self, queue_time: float) -> None:
        """After the prefill (the first token is sampled), before the first piece is sent.

        ``queue_time``: seconds from ``submit`` to the start of the prefill.
        """

    def on_progress(self, tokens: int) -> None:
        """Every ``progress_every`` tokens (not at the last token)."""

    def on_finish(self, tokens: int, seconds: float) -> None:
        """After the last token, before the channel closes; ``seconds`` since ``submit``."""


@dataclass(eq=False, slots=True)
class _Request:
    prompt: str
    params: SamplingParams
    max_new_tokens: int
    channel: Channel[str]
    listener: RequestListener | None
    submitted: float
    seq: Any = None  # the engine's SequenceState while running; None frees its KV cache
    tokens: int = 0
    decoder: Utf8StreamDecoder = field(default_factory=Utf8StreamDecoder)
    pending: list[str] = field(default_factory=list)  # text not sent yet
    flushed: float | None = None  # when text was last sent; None: nothing sent yet


@dataclass(slots=True)
class _Plan:
    """What the next step runs; decided by the policy, run by ``_step``."""

    leave: list[_Request]  # consumer gone: close, free
    join: list[_Request]  # waiting -> running: prefill
    decode: list[_Request]  # running and writable (joiners included): one decode step

    @property
    def idle(self) -> bool:
        return not (self.leave or self.join or self.decode)


class Scheduler:
    """Continuous batching on one daemon thread; see the module docstring."""

    def __init__(
        self,
        engine: BatchEngine,
        *,
        max_batch_size: int = 32,
        flush_interval: float = 0.01,
        max_events_per_second: float | None = 100.0,
        aging_rate: float = 1.0,
        max_queue_size: int = 1024,
        grace_period: float = 5.0,
        progress_every: int = 256,
        num_threads: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if not flush_interval >= 0 or not aging_rate >= 0:
            raise ValueError("flush_interval and aging_rate must be >= 0")
        if max_events_per_second is not None and not max_events_per_second > 0:
            raise ValueError(f"max_events_per_second must be > 0, got {max_events_per_second}")
        if progress_every < 1:
            raise ValueError(f"progress_every must be >= 1, got {progress_every}")
        self.engine = engine
        self.max_batch_size = max_batch_size
        self.flush_interval = flush_interval
        self.max_events_per_second = max_events_per_second
        self.aging_rate = aging_rate
        self.max_queue_size = max_queue_size
        self.grace_period = grace_period
        self.progress_every = progress_every
        self.num_threads = num_threads
        self.clock = clock

        self._lock = threading.Lock()  # guards _waiting, _stopped, _running's hand-over on death
        self._wakeup = threading.Event()
        self._waiting: list[tuple[float, int, _Request]] = []  # heap: (-order, arrival no, req)
        self._arrivals = itertools.count()
        self._running: list[_Request] = []  # only the scheduler thread touches it while alive
        self._interval = flush_interval  # the flush interval of this step (see _plan)
        self._stopped: str | None = None  # why submit fails, once the thread ended
        self._shutting_down = False
        self._thread: threading.Thread | None = None

    # ---- public API --------------------------------------------------------------------------

    def start(self) -> Scheduler:
        """Start the scheduler thread (once); returns self."""
        if self._thread is not None:
            raise RuntimeError("scheduler already started")
        self._thread = threading.Thread(target=self._loop, name="model-scheduler", daemon=True)
        self._thread.start()
        return self

    @property
    def healthy(self) -> bool:
        """True while the thread runs and has not failed or been shut down."""
        thread = self._thread
        return thread is not None and thread.is_alive() and self._stopped is None

    def submit(
        self,
        prompt: str,
        *,
        max_new_tokens: int,
        temperature: float = 0.8,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int | None = None,
        priority: int = 0,
        listener: RequestListener | None = None,
    ) -> Channel[str]:
        """Queue a request; returns the channel its text arrives on (consume it once).

        Call it in the context the request's callbacks should run in (the channel captures it).
        Bad arguments raise ``ValueError`` here; a stopped scheduler raises ``RuntimeError``.
        ``seed=None`` draws a random seed. ``priority``: higher runs first (see aging).
        """
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        params = SamplingParams(temperature, top_k, top_p, resolve_seed(seed))
        channel: Channel[str] = Channel(
            self.max_queue_size, grace_period=self.grace_period, on_ready=self._wakeup.set
        )
        now = self.clock()
        request = _Request(prompt, params, max_new_tokens, channel, listener, submitted=now)
        order = priority - self.aging_rate * now  # effective priority, up to a common offset
        with self._lock:
            if self._stopped is not None:
                raise RuntimeError(self._stopped)
            heapq.heappush(self._waiting, (-order, next(self._arrivals), request))
        self._wakeup.set()
        return channel

    def shutdown(self, timeout: float | None = 10.0) -> None:
        """Stop the thread; requests still waiting or running fail. Idempotent."""
        self._shutting_down = True
        self._wakeup.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        if self._thread is None:  # never started: fail what was submitted
            self._fail_everything("scheduler shut down", None)

    @property
    def num_running(self) -> int:
        return len(self._running)

    @property
    def num_waiting(self) -> int:
        return len(self._waiting)

    # ---- the thread ----------------------------------------------------------------------------

    def _loop(self) -> None:
        try:
            if self.num_threads is not None:
                torch.set_num_threads(self.num_threads)
            while not self._shutting_down:
                if self._wakeup.is_set():  # clear() takes a lock; most steps need none
                    self._wakeup.clear()  # before planning: a wake-up during the step is kept
                plan = self._plan()
                if plan.idle:
                    self._wakeup.wait()
                else:
                    self._step(plan)
                del plan  # hold no request (nor its KV cache) while sleeping
        except BaseException as exc:
            _log.critical("scheduler thread died", exc_info=exc)
            self._fail_everything(f"scheduler stopped: {exc!r}", exc)
        else:
            self._fail_everything("scheduler shut down", None)

    # ---- policy: what runs next (no model calls) ---------------------------------------------

    def _plan(self) -> _Plan:
        leave: list[_Request] = []
        running: list[_Request] = []
        decode: list[_Request] = []
        for r in self._running:  # one pass: this runs every step, for every request
            channel = r.channel
            if channel.stop_requested:
                leave.append(r)
            else:
                running.append(r)
                if channel.writable:
                    decode.append(r)
        join: list[_Request] = []
        if self._waiting:  # read without the lock: a request submitted now is seen next step
            with self._lock:
                if any(r.channel.stop_requested for _, _, r in self._waiting):
                    leave += [r for _, _, r in self._waiting if r.channel.stop_requested]
                    self._waiting = [e for e in self._waiting if not e[2].channel.stop_requested]
                    heapq.heapify(self._waiting)
                while self._waiting and len(running) + len(join) < self.max_batch_size:
                    join.append(heapq.heappop(self._waiting)[2])
        running += join
        decode += join
        self._running = running
        self._interval = self.flush_interval  # coalescing: bound the events of the whole batch
        if self.max_events_per_second is not None:
            self._interval = max(self._interval, len(self._running) / self.max_events_per_second)
        return _Plan(leave, join, decode)

    # ---- the step: run the plan ----------------------------------------------------------------

    def _step(self, plan: _Plan) -> None:
        for r in plan.leave:
            self._drop(r)
        for r in plan.join:
            self._prefill(r)
        batch = [r for r in plan.decode if r.seq is not None]  # not failed nor finished
        while batch:
            try:
                tokens = self.engine.decode([r.seq for r in batch])
            except SequenceError as exc:
                failed = {batch[i] for i in exc.errors}
                for i, error in exc.errors.items():
                    self._drop(batch[i], error)
                batch = [r for r in batch if r not in failed]
                continue
            except Exception as exc:
                for r in batch:
                    error = RuntimeError(f"decode step failed: {exc}")
                    error.__cause__ = exc
                    self._drop(r, error)
                return
            now = self.clock()
            for r, token in zip(batch, tokens, strict=True):
                self._deliver(r, token, now)
            return

    def _prefill(self, r: _Request) -> None:
        queue_time = self.clock() - r.submitted
        try:
            r.seq = self.engine.prefill(r.prompt, r.params)
            if r.listener is not None:
                r.channel.run(r.listener.on_start, queue_time)
        except Exception as exc:  # bad input that slipped through: this request only
            self._drop(r, exc)
            return
        self._deliver(r, r.seq.last_token, self.clock())

    def _deliver(self, r: _Request, token: int, now: float) -> None:
        """Hand one new token of ``r`` to its channel: coalesced, the first piece at once."""
        r.tokens += 1
        last = r.tokens == r.max_new_tokens
        piece = r.decoder.feed(token, final=last)
        pending = r.pending
        if piece:
            pending.append(piece)
        if pending and (last or r.flushed is None or now - r.flushed >= self._interval):
            r.channel.send("".join(pending))
            pending.clear()
            r.flushed = now
        listener = r.listener
        if listener is not None:
            try:
                if last:
                    r.channel.run(listener.on_finish, r.tokens, self.clock() - r.submitted)
                elif r.tokens % self.progress_every == 0:
                    r.channel.run(listener.on_progress, r.tokens)
            except Exception as exc:
                self._drop(r, exc)
                return
        if last:
            self._drop(r)

    def _drop(self, r: _Request, error: BaseException | None = None) -> None:
        """End ``r``: free its sequence (KV cache) now, close its channel (with ``error``)."""
        self._release(r)
        if error is not None:  # the traceback's frames would keep the batch's sequences alive
            _clear_frames(error)
        r.channel.close(error)
        if r in self._running:
            self._running.remove(r)

    # ---- the end -------------------------------------------------------------------------------

    def _fail_everything(self, message: str, cause: BaseException | None) -> None:
        with self._lock:
            self._stopped = message
            requests = [r for _, _, r in self._waiting] + self._running
            self._waiting = []
            self._running = []
        if cause is not None:
            _clear_frames(cause)
        for r in requests:
            error = RuntimeError(message)
            error.__cause__ = cause
            self._release(r)
            r.channel.close(error)

    def _release(self, r: _Request) -> None:
        """Forget ``r``'s sequence, and give its KV cache back at once through the engine's
        optional ``release(seq)`` (else it goes when the sequence is garbage collected)."""
        seq, r.seq = r.seq, None
        release = getattr(self.engine, "release", None)
        if seq is not None and release is not None:
            try:
                release(seq)
            except Exception:  # freeing is best effort; the sequence is dropped either way
                _log.exception("engine.release failed")


def _clear_frames(error: BaseException) -> None:
    """Drop the local variables of the frames in ``error``'s tracebacks (lines stay)."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        traceback.clear_frames(error.__traceback__)
        error = error.__cause__ or error.__context__  # type: ignore[assignment]
