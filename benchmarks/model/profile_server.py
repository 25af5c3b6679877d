"""Where the server's time goes: predict.py on the real Cog server, profiled, against the raw loop.

Run ``python -m benchmarks.model.profile_server`` from the repository root (``make profile``;
``--n 8 32`` the loads, ``--rounds 3`` per pass, ``--json FILE``). For each N it runs N
predictions of 256 tokens at once (as ``bench_server``), in passes against one server:

0. **A round's wall time, split** (twice ``--rounds`` rounds of each kind; ``--split-only`` runs
   this pass alone): predict.py served as ``benchmarks/model/timed_predict.py``, which records
   when each request reaches the worker and each prefill and decode step of the model thread
   (wall and CPU), kept in memory and written out between rounds. Each raw-loop round is
   followed by a streamed round and a drained one (each request's text sent once, at its end),
   in turn; the streamed rounds' time outside the decode steps above the drained rounds' is the
   cost of coglet's output path per event. The client's wall time of a round then splits exactly
   into: the raw loop's time for the same tokens; the decode steps' CPU above the raw loop's;
   time asleep inside the steps (the GIL taken by another thread — coglet's, sending an output
   event or checking a wait slice — or no free core); time between model calls (the scheduler's
   bookkeeping, channel hand-offs, the listener, and waits there); prefills above the raw
   loop's; request -> its submit in the worker; and last token -> the client's ``completed``.
   Plus what share of the steps had rows at different positions (requests that joined in
   different steps), and what such a step costs against an aligned one (two batches decoded in
   turn in this process). And the decode steps' CPU against raw steps *paired in the worker* (a
   third server, the same file with ``$PAIRED_STEPS``: each step of the scheduler paired with
   one of a raw batch of the same size, prompt and age in another thread there, run after it or,
   in turn, before it): the same moment of the same process, so the machine's drift, which moves
   the raw-loop rounds by ±10% against the server's, hits both alike; server / raw with the raw
   loop's decode time taken from them.

1. **Unprofiled**, four kinds one after the other in each round (rotating which goes first):
   the raw batch-N loop in this process; the same loop inside a coglet worker, and predict.py's
   scheduler there with its channels read by threads of that worker instead of coglet's output
   path (``benchmarks/model/worker_probe.py``, served by a second server); and the server.
   Their tokens/s as medians of the rounds' ratios to the raw loop, which split the server's
   loss into being in coglet's worker, the scheduler, and coglet's streaming path. And from
   /proc (``benchmarks/proc_times.py``) where the server's CPU went — the model thread's CPU,
   its run-queue wait (runnable, no core free) and the rest of its wall time asleep; the
   worker's other threads; coglet's parent process; and this process, the client (its own CPU
   clock), which is not the server's.
2. **py-spy, active samples** (``py-spy record --nonblocking``, no ``--idle``) on the worker:
   what the model thread runs while on a core, by the innermost frame of this repository —
   ``model/gpt.py`` / ``engine.py`` and the torch calls under them (model compute),
   ``model/sampling.py`` (sampling), ``model/scheduler.py`` / ``text.py`` (scheduler
   bookkeeping), ``threading_utils/`` (channel hand-offs), ``predict.py`` (the listener's logs and
   metrics). (The worker's other threads are counted by their CPU from pass 1 only: without
   native frames py-spy takes a thread asleep in a C-level lock for a running one.)
3. **py-spy with ``--idle``**: the model thread's samples asleep in the scheduler's wake-up wait
   (no work: before the round's first request and after its last) — the rest of its sleep is
   waiting for the GIL.

4. **perf, native** (only where Linux's ``perf`` is installed and allowed: ``apt install
   linux-perf``; not from PyPI): ``perf record -e cpu-clock`` on the model thread during server
   rounds, then on this process during raw-loop rounds (its only busy thread then), and the CPU
   samples of each per token, by shared object — torch's kernels, the Python interpreter, the
   kernel (system calls, context switches), libc — so that the same work's native cost is
   compared. The kernel samples it with no stop of the process.

py-spy reads the worker's memory without stopping it (``--nonblocking``), so its sampling costs
the worker nothing, but it runs on the same cores: passes 2 and 3 print their own tokens/s, and
the table's shares come from them while the cores come from pass 1. It sees Python threads only:
coglet's parent (Rust) is measured by its CPU alone. Linux only; py-spy from requirements-dev.txt.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from benchmarks import proc_times
from benchmarks.model.bench_server import (  # also puts scripts/ on sys.path
    MAX_CONCURRENCY,
    PROMPT,
    REPO_ROOT,
    SAMPLING,
    SEED,
    CogServer,
    Cores,
    in_thread,
    machine_line,
    raw_run,
    run_together,
    server_run,
    server_stream,
    set_threads_like_predictor,
    stage_predictor,
)
from benchmarks.model.timed_predict import DRAIN_SUFFIX, FLUSH_PROMPT, LOG_ENV, PAIRED_ENV
from model import SamplingParams, load_model, resolve_weights_path

T = TypeVar("T")
TOKENS = 256
RATE = 100  # py-spy samples per second
TIMELINE_FILE = "timeline.jsonl"
PAIRED_FILE = "paired.jsonl"

# The model thread's on-CPU samples, by the innermost frame in one of these files.
CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("model compute", ("model/gpt.py", "model/engine.py")),
    ("sampling", ("model/sampling.py",)),
    ("scheduler bookkeeping", ("model/scheduler.py", "model/text.py")),
    ("channel hand-offs", ("threading_utils/",)),
    ("listener: logs, metrics", ("predict.py",)),
)


def classify(stack: list[str]) -> str:
    """The category of one sample (frames root first, as py-spy writes them)."""
    for frame in reversed(stack):
        for name, files in CATEGORIES:
            if any(f"({f}" in frame or f" {f}" in frame for f in files):
                return name
    return "other"


def spy(worker: int, idle: bool, out: Path) -> subprocess.Popen[bytes]:
    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    cmd = [exe, "record", "--pid", str(worker), "--nonblocking", "--threads", "-r", str(RATE)]
    cmd += ["--format", "raw", "-o", str(out)] + (["--idle"] if idle else [])
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # py-spy attaches
    return proc


def read_samples(path: Path) -> list[tuple[list[str], int]]:
    samples = []
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack:
            samples.append((stack.split(";"), int(count)))
    return samples


def is_model_thread(stack: list[str]) -> bool:
    """The scheduler's thread (named by ``Scheduler.start``), also in a torn sample."""
    return "model-scheduler" in stack[0] or any("Scheduler._loop" in f for f in stack)


def model_thread_samples(samples: list[tuple[list[str], int]]) -> list[tuple[list[str], int]]:
    return [(s, n) for s, n in samples if is_model_thread(s)]


# perf's shared objects, grouped: what the model thread's CPU goes to natively
NATIVE = (
    ("torch kernels (libtorch_cpu, libc10)", ("libtorch_cpu", "libc10")),
    ("torch's Python bindings (libtorch_python)", ("libtorch_python",)),
    ("Python interpreter (libpython)", ("libpython",)),
    ("the kernel: system calls, context switches", ("[kernel",)),
    ("libc: malloc, locks", ("libc.so", "libm.so", "libstdc++")),
)


def perf_samples(tid: int | None, pid: int | None, out: Path) -> subprocess.Popen[bytes] | None:
    """``perf record`` of one thread (``tid``) or process (``pid``); None without perf."""
    exe = shutil.which("perf")
    if exe is None:
        return None
    target = ["-t", str(tid)] if tid is not None else ["-p", str(pid)]
    cmd = [exe, "record", "-q", "-e", "cpu-clock", "-F", "1000", *target, "-o", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    return proc if proc.poll() is None else None


def perf_by_group(data: Path) -> dict[str, int] | None:
    """Samples per NATIVE group (and "other") in a perf.data file; None if unreadable."""
    exe = shutil.which("perf")
    if exe is None or not data.exists():
        return None
    report = subprocess.run(
        [exe, "report", "-i", str(data), "--stdio", "-n", "--no-children", "--sort", "dso"],
        capture_output=True,
        text=True,
        check=False,
    )
    groups = Counter[str]()
    for line in report.stdout.splitlines():
        fields = line.split()
        if len(fields) < 3 or not fields[0].endswith("%") or not fields[1].isdigit():
            continue
        dso = " ".join(fields[2:])
        name = next((g for g, keys in NATIVE if any(k in dso for k in keys)), "other")
        groups[name] += int(fields[1])
    return dict(groups) if groups else None


def native(
    server: CogServer, model_tid: int, engine: Any, n: int, rounds: int, tmp: Path
) -> dict[str, Any] | None:
    """Pass 4: perf samples per token, model thread in the server vs the raw loop's thread."""
    recorded: dict[str, dict[str, int]] = {}
    for kind in ("server", "raw"):
        data = tmp / f"perf-{kind}-{n}.data"
        proc = perf_samples(model_tid if kind == "server" else None, os.getpid(), data)
        if proc is None:
            return None
        try:
            for _ in range(rounds):
                if kind == "server":
                    server_run(server, n, TOKENS)
                else:
                    raw_run(engine, n, TOKENS)
        finally:
            proc.send_signal(2)
            proc.wait(timeout=60)
        groups = perf_by_group(data)
        if groups is None:
            return None
        recorded[kind] = groups
    tokens = rounds * n * TOKENS
    names = [g for g, _ in NATIVE] + ["other"]
    return {
        "samples_per_1000_tokens": {
            kind: {g: 1000 * recorded[kind].get(g, 0) / tokens for g in names} for kind in recorded
        },
        "server_vs_raw": sum(recorded["server"].values()) / max(1, sum(recorded["raw"].values())),
    }


def waiting_for_work(stack: list[str]) -> bool:
    """The scheduler thread asleep in its loop's wake-up wait (nothing to run)."""
    for i, frame in enumerate(stack[:-1]):
        if "Scheduler._loop" in frame:
            return stack[i + 1].startswith("Event.wait")
    return False


def profiled(
    server: CogServer, worker: int, n: int, rounds: int, idle: bool, out: Path
) -> tuple[list[float], list[tuple[list[str], int]], float]:
    """Server rounds under py-spy: their tokens/s, the samples, and the seconds py-spy
    sampled outside the rounds (before, between and after them)."""
    proc = spy(worker, idle, out)
    started = time.monotonic()
    walls = 0.0
    rates = []
    try:
        for _ in range(rounds):
            rate = server_run(server, n, TOKENS).aggregate
            rates.append(rate)
            walls += n * TOKENS / rate
    finally:
        proc.send_signal(2)  # SIGINT: py-spy writes its file and exits
        stopped = time.monotonic()
        proc.wait(timeout=60)
    return rates, read_samples(out), max(0.0, stopped - started + 1.0 - walls)


# Pass 0: a server round's wall time, split by the model thread's own timings (timed_predict.py)
SPLIT = (
    ("raw", "the raw loop's time for the same tokens (= server / raw tokens/s)"),
    ("decode_cpu", "decode steps: CPU above the raw loop's"),
    ("decode_wait", "decode steps: asleep inside them (the GIL, a core)"),
    ("between", "between model calls: scheduler, channels, listener, waits"),
    ("prefill", "prefills: above the raw loop's"),
    ("before", "request -> its submit in the worker (client, HTTP, coglet)"),
    ("after", "last token -> the client's `completed` (coglet, SSE, client)"),
)


def split_round(
    records: list[list[Any]], start: float, wall: float, raw_wall: float, raw_prefill: float
) -> dict[str, float]:
    """One server round's wall time, in seconds per part of SPLIT; the parts add up to it.

    ``records`` are timed_predict.py's lines for the round; ``start`` and ``wall`` the client's
    (first request sent, all ``completed`` events received); the raw loop's round took
    ``raw_wall`` seconds, ``raw_prefill`` of them prefilling (its thread runs on a core
    throughout: CPU = wall).
    """
    submits = [r[1] for r in records if r[0] == "s"]
    decodes = [r for r in records if r[0] == "d"]
    prefills = [r for r in records if r[0] == "p"]
    if not submits or not decodes:
        raise RuntimeError("timed_predict.py wrote no records for this round")
    first, last = min(submits), max(r[1] + r[2] for r in decodes)
    decode_wall = sum(r[2] for r in decodes)
    decode_cpu = sum(r[3] for r in decodes)
    prefill = sum(r[2] for r in prefills)
    raw_decode = raw_wall - raw_prefill
    parts = {
        "raw": raw_wall,
        "decode_cpu": decode_cpu - raw_decode,
        "decode_wait": decode_wall - decode_cpu,
        "between": (last - first) - decode_wall - prefill,
        "prefill": prefill - raw_prefill,
        "before": first - start,
        "after": start + wall - last,
    }
    assert abs(sum(parts.values()) - wall) < 1e-6 * max(1.0, wall)
    return parts


def timeline(timed: CogServer, log: Path, engine: Any, n: int, rounds: int) -> dict[str, Any]:
    """Pass 0: ``rounds`` times the raw loop, then the timed server streamed and drained (its
    text sent once per request, at the end: timed_predict.py's ``.drain`` file), those two in
    alternating order. The parts pooled over the rounds as shares of each kind's wall time; how
    often rows sat at different positions; the output events per second when streamed; and
    the streamed rounds' cost per event above the drained ones', from the difference of their
    shares of time outside the decode steps' CPU (each kind's own share: drift-free)."""
    drain = log.with_name(log.name + DRAIN_SUFFIX)
    totals = {kind: Counter[str]() for kind in ("streamed", "drained")}
    walls = dict.fromkeys(totals, 0.0)
    steps = mixed = events = 0
    for r in range(rounds):
        raw = raw_run(engine, n, TOKENS)
        raw_wall = n * TOKENS / raw.aggregate
        for kind in ("streamed", "drained") if r % 2 == 0 else ("drained", "streamed"):
            if kind == "drained":
                drain.touch()
            else:
                drain.unlink(missing_ok=True)
            jobs = [lambda i=i: server_stream(timed, TOKENS, SEED + i) for i in range(n)]
            (streams, wall, start), records = timed_records(
                timed, log, functools.partial(run_together, jobs)
            )
            totals[kind].update(split_round(records, start, wall, raw_wall, raw.ttft[-1]))
            walls[kind] += wall
            if kind == "streamed":
                events += sum(s.chunks for s in streams)
                decodes = [r for r in records if r[0] == "d"]
                steps += len(decodes)
                mixed += sum(1 for r in decodes if r[5] > 1)
    drain.unlink(missing_ok=True)
    shares = {kind: {key: totals[kind][key] / walls[kind] for key, _ in SPLIT} for kind in totals}
    return {
        "shares": shares["streamed"],
        "drained_shares": shares["drained"],
        "mixed_positions": mixed / max(1, steps),
        "events_per_s": events / walls["streamed"],
        "per_event_s": per_event(shares["streamed"], shares["drained"], walls["streamed"], events),
    }


def per_event(
    streamed: dict[str, float], drained: dict[str, float], wall: float, events: int
) -> float:
    """Seconds per output event that streaming costs above draining.

    ``streamed`` and ``drained`` are the SPLIT shares of each kind's rounds; ``wall`` the streamed
    rounds' seconds and ``events`` their output events. Each kind's share of its time *outside*
    the decode steps' CPU (the split's first two rows) is its own, so the machine's drift between
    the rounds, which moves the steps' CPU and the wall time alike, mostly cancels; what the
    streamed rounds spend there above the drained ones is the events' cost.
    """
    if events < 1:
        raise ValueError("no output events")

    def outside(shares: dict[str, float]) -> float:
        return 1.0 - shares["raw"] - shares["decode_cpu"]

    return (outside(streamed) - outside(drained)) * wall / events


def timed_records(timed: CogServer, log: Path, work: Callable[[], T]) -> tuple[T, list[list[Any]]]:
    """What ``work()`` returns, and timed_predict.py's records of it (run against ``timed``),
    and only of it: the worker writes what it holds to ``log`` before and after (its flush
    request), when its model thread is idle."""

    def flush() -> None:
        status, body = timed.predict({"prompt": FLUSH_PROMPT, "max_new_tokens": 1})
        if status != 200 or not isinstance(body, dict) or body.get("status") != "succeeded":
            raise RuntimeError(f"the timeline's flush answered {status}: {body}")

    flush()
    log.write_bytes(b"")
    result = work()
    flush()
    return result, [json.loads(line) for line in log.read_text().splitlines()]


def paired_steps(paired: CogServer, log: Path, n: int, rounds: int) -> dict[str, float]:
    """Rounds of N predictions on the paired server: the median over its full steps (all N
    requests running) of the step's CPU over its paired raw step's, and how many there were."""

    def work() -> None:
        for _ in range(rounds):
            server_run(paired, n, TOKENS)

    return paired_ratio(timed_records(paired, log, work)[1], n)


def paired_ratio(records: list[list[Any]], n: int) -> dict[str, float]:
    """timed_predict.py's ``["r", n, k, cpu, raw_cpu]`` records -> the median CPU ratio of the
    steps that ran all ``n`` requests, and their count; RuntimeError without any."""
    ratios = [r[3] / r[4] for r in records if r[0] == "r" and r[1] == n and r[4] > 0]
    if not ratios:
        raise RuntimeError(f"no paired step of {n} requests was logged")
    return {"ratio": statistics.median(ratios), "steps": float(len(ratios))}


def drift_free(timeline: dict[str, Any], shares_key: str = "shares") -> float:
    """Server / raw tokens/s with the raw loop's decode time taken from the paired steps.

    The split's first two rows add up to the server's decode CPU (plus the raw loop's prefill
    time, a fraction of a percent); a raw loop doing the same steps needs that over the paired
    ratio. Its other parts (waits, between calls, prefills, coglet) stay as measured.
    ``shares_key="drained_shares"``: the same for the rounds whose text went out at the end.
    """
    shares = timeline[shares_key]
    return float((shares["raw"] + shares["decode_cpu"]) / timeline["paired"]["ratio"])


def mixed_positions_cost(engine: Any, n: int, steps: int = 100, spread: int = 3) -> float:
    """CPU of a decode step whose rows sit at ``spread`` different positions (as when requests
    join a few steps apart) over one whose rows are aligned (the raw loop's), in this process.

    Two batches of ``n`` sequences, decoded in turn step by step, so that the machine's drift
    hits both alike; the ratio of their median CPU per step, in a thread that sets predict.py's
    torch threads.
    """

    def body() -> float:
        set_threads_like_predictor()
        batches = [
            [
                engine.prefill(PROMPT, SamplingParams(seed=SEED + b * n + i, **SAMPLING))
                for i in range(n)
            ]
            for b in range(2)
        ]
        aligned, mixed = batches
        for i, seq in enumerate(mixed):  # row i runs i % spread steps ahead
            for _ in range(i % spread):
                engine.decode([seq])
        cpu: dict[int, list[float]] = {0: [], 1: []}
        for step in range(steps):
            for which in (0, 1) if step % 2 == 0 else (1, 0):  # alternate which goes first
                start = time.thread_time()
                engine.decode(batches[which])
                cpu[which].append(time.thread_time() - start)
        for seq in aligned + mixed:
            engine.release(seq)
        return statistics.median(cpu[1]) / statistics.median(cpu[0])

    return in_thread(body, "mixed-positions")


def in_worker(probe: CogServer, n: int, raw: bool) -> float:
    """tokens/s of worker_probe.py's raw loop (``raw``) or scheduler, inside its worker."""
    status, body = probe.predict({"n": n, "tokens": TOKENS, "raw": raw}, timeout=600.0)
    if status != 200 or not isinstance(body, dict) or body.get("status") != "succeeded":
        raise RuntimeError(f"worker probe answered {status}: {body}")
    return float(body["output"])


def profile(
    server: CogServer,
    probe: CogServer,
    timed: CogServer,
    paired: CogServer,
    engine: Any,
    n: int,
    rounds: int,
    tmp: Path,
    *,
    split_only: bool = False,
) -> dict[str, Any]:
    assert server.pid is not None
    server_run(timed, n, 32)  # warm-up
    wall_split = timeline(timed, tmp / TIMELINE_FILE, engine, n, 2 * rounds)
    wall_split["mixed_step_cpu"] = mixed_positions_cost(engine, n)
    server_run(paired, n, 32)  # warm-up
    wall_split["paired"] = paired_steps(paired, tmp / PAIRED_FILE, n, rounds)
    if split_only:
        return {"n": n, "timeline": wall_split}
    worker = proc_times.children(server.pid)[0]
    before = proc_times.snapshot([worker])
    server_run(server, n, 32)  # warm-ups; the model thread is the worker's busiest
    busiest = max(proc_times.delta(before, proc_times.snapshot([worker])), key=lambda t: t.cpu)
    in_worker(probe, n, True)
    in_worker(probe, n, False)

    # 1. unprofiled: server vs raw, and where the server's CPU went
    servers, raws, raws_in_worker, scheduled_in_worker = [], [], [], []
    for r in range(rounds):
        kinds: list[Callable[[], None]] = [
            lambda: raws.append(raw_run(engine, n, TOKENS)),
            lambda: raws_in_worker.append(in_worker(probe, n, True)),
            lambda: scheduled_in_worker.append(in_worker(probe, n, False)),
            lambda: servers.append(server_run(server, n, TOKENS)),
        ]
        for run in kinds[r % 4 :] + kinds[: r % 4]:
            run()
    cores = [s.cores for s in servers if s.cores is not None]

    def vs_raw(rates: list[float]) -> float:
        return statistics.median(x / w.aggregate for x, w in zip(rates, raws, strict=True))

    ratio = vs_raw([s.aggregate for s in servers])
    # CPU per token of the model thread against the raw loop's thread, round by round: above 1,
    # the same work costs more CPU in the server; at 1, the server only adds waits
    cpu_per_token = statistics.median(
        (s.cores["model"] * n * TOKENS / s.aggregate) / w.cpu
        for s, w in zip(servers, raws, strict=True)
        if s.cores is not None and w.cpu
    )
    core = {k: statistics.median(c[k] for c in cores) for k in Cores.KEYS}
    asleep = max(0.0, 1.0 - core["model"] - core["model_waited"])

    # 2. on-CPU split of the model thread
    active_rates, active, _ = profiled(server, worker, n, rounds, False, tmp / f"active-{n}.txt")
    model = model_thread_samples(active)
    total = sum(c for _, c in model) or 1
    split = Counter[str]()
    for stack, count in model:
        split[classify(stack)] += count

    # 3. asleep: waiting for work vs waiting for the GIL
    idle_rates, with_idle, outside = profiled(
        server, worker, n, rounds, True, tmp / f"idle-{n}.txt"
    )
    model_idle = model_thread_samples(with_idle)
    # the thread waits for work outside the rounds too: take those seconds' samples off
    outside_samples = outside * RATE
    idle_total = max(1.0, sum(c for _, c in model_idle) - outside_samples)
    no_work = max(0.0, sum(c for s, c in model_idle if waiting_for_work(s)) - outside_samples)
    no_work_share = min(asleep, no_work / idle_total)

    on_cpu = core["model"]
    rows = {name: on_cpu * split[name] / total for name, _ in CATEGORIES}
    rows["other (model thread)"] = on_cpu * split["other"] / total
    rows["waiting for a core (run queue)"] = core["model_waited"]
    rows["waiting for the GIL"] = max(0.0, asleep - no_work_share)
    rows["waiting for work (round start/end)"] = no_work_share
    return {
        "n": n,
        "server_tokens_per_s": statistics.median(s.aggregate for s in servers),
        "raw_tokens_per_s": statistics.median(w.aggregate for w in raws),
        "model_cpu_per_token_vs_raw": cpu_per_token,
        "server_vs_raw": ratio,
        "raw_in_worker_vs_raw": vs_raw(raws_in_worker),
        "scheduler_in_worker_vs_raw": vs_raw(scheduled_in_worker),
        "profiled_tokens_per_s": statistics.median(active_rates + idle_rates),
        "model_thread": rows,  # shares of the model thread's wall time
        "cores": core,  # CPU in cores over the server rounds
        "samples": {"active": total, "idle": idle_total},
        "native": native(server, busiest.tid, engine, n, rounds, tmp),
        "timeline": wall_split,
    }


def report(results: list[dict[str, Any]]) -> str:
    ns = [r["n"] for r in results]
    head = "| | " + " | ".join(f"N = {n}" for n in ns) + " |"
    lines = [head, "| --- |" + " --- |" * len(ns)]

    def row(label: str, cell: Callable[[dict[str, Any]], str] = lambda r: "") -> None:
        lines.append(f"| {label} | " + " | ".join(cell(r) for r in results) + " |")

    def parts(title: str, shares_key: str) -> None:
        row(title)
        for key, label in SPLIT:
            row(label, lambda r, key=key: f"{r['timeline'][shares_key][key]:.1%}")

    parts(
        "**a server round's wall time, by part (timed_predict.py, pooled over the rounds)**",
        "shares",
    )
    row(
        "decode steps with rows at different positions",
        lambda r: f"{r['timeline']['mixed_positions']:.0%}",
    )
    row(
        "a step's CPU, rows at 3 positions vs aligned (this process, steps interleaved)",
        lambda r: f"{r['timeline']['mixed_step_cpu']:.3f}x",
    )
    row(
        "a server step's CPU vs a raw step paired with it in the worker (median, steps)",
        lambda r: (
            f"{r['timeline']['paired']['ratio']:.3f}x ({r['timeline']['paired']['steps']:.0f})"
        ),
    )
    row(
        "**server / raw without the drift**: the first two rows' sum over the paired ratio",
        lambda r: f"{drift_free(r['timeline']):.1%}",
    )
    parts(
        "**the same server, each request's text sent once, at its end (drained rounds)**",
        "drained_shares",
    )
    row(
        "**drained: server / raw without the drift**",
        lambda r: f"{drift_free(r['timeline'], 'drained_shares'):.1%}",
    )
    row("output events per second, streamed", lambda r: f"{r['timeline']['events_per_s']:.0f}")
    row(
        "coglet's output path per event (streamed over drained), us; share of the round",
        lambda r: (
            f"{r['timeline']['per_event_s'] * 1e6:.0f}; "
            f"{r['timeline']['per_event_s'] * r['timeline']['events_per_s']:.1%}"
        ),
    )
    if "model_thread" not in results[0]:  # --split-only
        return "\n".join(lines)
    row("**tokens/s vs the raw loop in this process**")
    row("raw loop inside a coglet worker", lambda r: f"{r['raw_in_worker_vs_raw']:.1%}")
    row(
        "scheduler inside that worker, channels read by its threads (no streaming)",
        lambda r: f"{r['scheduler_in_worker_vs_raw']:.1%}",
    )
    row("server: predict.py over SSE", lambda r: f"{r['server_vs_raw']:.1%}")
    row(
        "server, raw tokens/s (profiled)",
        lambda r: (
            f"{r['server_tokens_per_s']:.0f}, {r['raw_tokens_per_s']:.0f} "
            f"({r['profiled_tokens_per_s']:.0f})"
        ),
    )
    row(
        "model thread's CPU per token, vs the raw loop's thread",
        lambda r: f"{r['model_cpu_per_token_vs_raw']:.3f}x",
    )
    row("**model thread, share of its wall time**")
    for key in results[0]["model_thread"]:
        row(key, lambda r, key=key: f"{r['model_thread'][key]:.1%}")
    if all(r["native"] for r in results):
        row(
            "**model thread's native CPU per 1,000 tokens (perf samples, 1 ms each): "
            "server / raw loop's thread**"
        )
        for name in results[0]["native"]["samples_per_1000_tokens"]["server"]:
            row(
                name,
                lambda r, name=name: " / ".join(
                    f"{r['native']['samples_per_1000_tokens'][kind][name]:.1f}"
                    for kind in ("server", "raw")
                ),
            )
        row("all, server / raw", lambda r: f"{r['native']['server_vs_raw']:.3f}x")
    row("**CPU elsewhere, in cores**")
    for key, label in (
        (
            "worker_other",
            "worker's other threads (coglet's slots iterating the channels, its event loop)",
        ),
        ("parent", "coglet's parent (Rust: HTTP, SSE, IPC)"),
        ("client", "client (this process: N threads reading SSE)"),
    ):
        row(label, lambda r, key=key: f"{r['cores'][key]:.3f}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.model.profile_server")
    ap.add_argument("--n", type=int, nargs="+", default=[8, 32], help="predictions at once")
    ap.add_argument("--rounds", type=int, default=3, help="rounds per pass")
    ap.add_argument("--json", type=Path, help="also write the numbers to this JSON file")
    ap.add_argument(
        "--split-only", action="store_true", help="only the split and the paired steps (pass 0)"
    )
    args = ap.parse_args()
    resolve_weights_path()
    set_threads_like_predictor()
    print(machine_line(), flush=True)
    engine = in_thread(load_model, "raw-load")
    engine.warmup()
    with tempfile.TemporaryDirectory(prefix="profile_server-") as tmp_name:
        tmp = Path(tmp_name)
        cwd = stage_predictor(REPO_ROOT / "predict.py", tmp / "predictor")
        probe_cwd = stage_predictor(REPO_ROOT / "predict.py", tmp / "probe")
        shutil.copy(Path(__file__).with_name("worker_probe.py"), probe_cwd)
        timed_cwd = stage_predictor(REPO_ROOT / "predict.py", tmp / "timed")
        shutil.copy(Path(__file__).with_name("timed_predict.py"), timed_cwd)
        with (
            CogServer(
                "predict.py:Predictor", cwd=cwd, concurrency=MAX_CONCURRENCY, startup_timeout=120.0
            ) as server,
            CogServer("worker_probe.py:Predictor", cwd=probe_cwd, startup_timeout=120.0) as probe,
            CogServer(
                "timed_predict.py:Predictor",
                cwd=timed_cwd,
                concurrency=MAX_CONCURRENCY,
                env={LOG_ENV: str(tmp / TIMELINE_FILE)},
                startup_timeout=120.0,
            ) as timed,
            CogServer(
                "timed_predict.py:Predictor",
                cwd=timed_cwd,
                concurrency=MAX_CONCURRENCY,
                env={LOG_ENV: str(tmp / PAIRED_FILE), PAIRED_ENV: "1"},
                startup_timeout=120.0,
            ) as paired,
        ):
            results = []
            for n in args.n:
                passes = "the split" if args.split_only else "4 passes"
                print(f"N = {n}: {args.rounds} rounds x {passes} ...", flush=True)
                results.append(
                    profile(
                        server,
                        probe,
                        timed,
                        paired,
                        engine,
                        n,
                        args.rounds,
                        tmp,
                        split_only=args.split_only,
                    )
                )
    print(report(results))
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
