"""Benchmark: the byte-level model with the committed weights, on the CPU.

Run ``python -m benchmarks.model.bench_model`` from the repository root (``--quick``: a smoke
run).
It measures, in about a minute on 2 CPU cores:

One stream
    ``engine.generate`` producing ``--tokens`` tokens after the prompt ``def fibonacci(n):``,
    greedy: time to the first piece (the prefill) and tokens per second over the whole stream
    (the window slides about a dozen times).

Decode step vs batch size and torch threads (the measurement behind the scheduler's
``max_batch_size`` and predict.py's torch thread count)
    ``engine.decode`` over B = 1 .. 64 sequences whose prompts have different lengths
    (40..200 bytes), after their prefills, sampling with temperature 0.8 and top_p 0.95 as
    predict.py does: median time of one step, and tokens/s summed over the batch. Each setting
    runs in ONE dedicated thread that calls ``torch.set_num_threads(n)`` itself — the scheduler
    thread's situation — for n = 1 and 2; the two settings alternate over ``--rounds`` rounds
    and the median step of all rounds is reported. No sequence reaches the window during the
    measurement.

The machine is shared and small: treat single numbers as noisy. Exit status 0 either way.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import threading
import time

import torch

from model import Engine, SamplingParams, load_model

BATCH_SIZES = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64)
THREADS = (1, 2)


def time_stream(engine: Engine, n_tokens: int) -> tuple[float, float]:
    start = time.perf_counter()
    first = None
    count = 0
    for _ in engine.generate("def fibonacci(n):", max_new_tokens=n_tokens, temperature=0.0):
        count += 1
        if first is None:
            first = time.perf_counter() - start
    total = time.perf_counter() - start
    assert count == n_tokens
    return first or 0.0, count / total


def decode_steps(engine: Engine, batch_size: int, steps: int) -> list[float]:
    """Times of ``steps`` decode steps of one batch (after one untimed step)."""
    prompts = [
        "# " + "x" * (40 + (160 * i) // max(1, batch_size - 1)) for i in range(batch_size)
    ]  # different lengths, 42..202 bytes
    params = [SamplingParams(temperature=0.8, top_p=0.95, seed=i) for i in range(batch_size)]
    seqs = [engine.prefill(p, sp) for p, sp in zip(prompts, params, strict=True)]
    engine.decode(seqs)
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        engine.decode(seqs)
        times.append(time.perf_counter() - t)
    assert max(s.cache.length for s in seqs) < engine.config.block_size
    return times


def in_model_thread(engine: Engine, threads: int, batch_sizes: tuple[int, ...], steps: int):
    """Step times per batch size, measured in one fresh thread with ``threads`` torch threads."""
    result: dict[int, list[float]] = {}

    def body() -> None:
        torch.set_num_threads(threads)
        engine.warmup()
        for b in batch_sizes:
            result[b] = decode_steps(engine, b, steps)

    thread = threading.Thread(target=body, name=f"bench-model-{threads}")
    thread.start()
    thread.join()
    return result


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.model.bench_model")
    ap.add_argument("--quick", action="store_true", help="fewer tokens, steps and sizes")
    ap.add_argument("--tokens", type=int, default=1000, help="tokens in the one-stream run")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds per thread count")
    args = ap.parse_args()
    n_tokens = 30 if args.quick else args.tokens
    steps = 5 if args.quick else 40
    rounds = 1 if args.quick else args.rounds
    sizes = (1, 8, 32) if args.quick else BATCH_SIZES

    engine = load_model(device="cpu")
    engine.warmup()
    print(
        f"model: {engine.config}, {engine.dtype}, device {engine.device}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"Python {platform.python_version()}"
    )

    ttft, rate = time_stream(engine, n_tokens)
    print(f"\none stream, generate() in the main thread: {n_tokens} tokens")
    print(f"  first piece after {ttft * 1e3:.1f} ms, {rate:.0f} tokens/s overall")

    times: dict[int, dict[int, list[float]]] = {n: {b: [] for b in sizes} for n in THREADS}
    for r in range(rounds):
        for n in THREADS if r % 2 == 0 else THREADS[::-1]:
            for b, ts in in_model_thread(engine, n, sizes, steps).items():
                times[n][b].extend(ts)

    print(
        f"\ndecode step in one model thread, sampling included (median of {rounds} x {steps} steps)"
    )
    head = "".join(f"  {f'{n} thread(s): ms':>17}  {'tok/s':>6}  {'vs B1':>5}" for n in THREADS)
    print(f"  {'batch':>5}{head}")
    base = {n: statistics.median(times[n][sizes[0]]) for n in THREADS}
    for b in sizes:
        row = ""
        for n in THREADS:
            step = statistics.median(times[n][b])
            row += f"  {step * 1e3:17.2f}  {b / step:6.0f}  {b * base[n] / step:4.1f}x"
        print(f"  {b:5d}{row}")


if __name__ == "__main__":
    main()
