"""Benchmark: the byte-level model with the committed weights, on the CPU.

Run ``python -m benchmarks.bench_model`` from the repository root (``--quick`` for a smoke run).
It measures, in well under a minute:

One stream
    ``engine.generate`` (the per-sequence iterator predict.py uses) producing ``--tokens`` tokens
    after the prompt ``def fibonacci(n):``, greedy: time to the first piece (the prefill) and
    tokens per second over the whole stream (the window slides about a dozen times).

Decode step vs batch size
    ``engine.decode`` over B = 1, 2, 4, 8, 16 sequences whose prompts have different lengths
    (40..200 bytes), after their prefills: median time of one step, and tokens/s summed over the
    batch. No sequence reaches the window during the measurement.

The machine is shared and small: treat single numbers as noisy. Exit status 0 either way.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from model import SamplingParams, load_model


def time_stream(engine, n_tokens: int) -> tuple[float, float]:
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


def time_decode(engine, batch_size: int, steps: int) -> float:
    prompts = [
        "# " + "x" * (40 + (160 * i) // max(1, batch_size - 1)) for i in range(batch_size)
    ]  # different lengths, 42..202 bytes
    params = [SamplingParams(temperature=1.0, seed=i) for i in range(batch_size)]
    seqs = [engine.prefill(p, sp) for p, sp in zip(prompts, params, strict=True)]
    engine.decode(seqs)  # first step outside the timing
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        engine.decode(seqs)
        times.append(time.perf_counter() - t)
    assert max(s.cache.length for s in seqs) < engine.config.block_size
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_model")
    ap.add_argument("--quick", action="store_true", help="fewer tokens and steps (smoke run)")
    ap.add_argument("--tokens", type=int, default=1000, help="tokens in the one-stream run")
    args = ap.parse_args()
    n_tokens = 30 if args.quick else args.tokens
    steps = 5 if args.quick else 100

    engine = load_model(device="cpu")
    engine.warmup()
    print(
        f"model: {engine.config}, {engine.dtype}, device {engine.device}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"Python {platform.python_version()}"
    )

    ttft, rate = time_stream(engine, n_tokens)
    print(f"\none stream, generate(): {n_tokens} tokens")
    print(f"  first piece after {ttft * 1e3:.1f} ms, {rate:.0f} tokens/s overall")

    print(f"\ndecode step (median of {steps} steps)")
    print(f"  {'batch':>5}  {'ms/step':>8}  {'tokens/s':>9}  {'vs batch 1':>10}")
    base = None
    for batch_size in (1, 2, 4, 8, 16):
        step = time_decode(engine, batch_size, steps)
        tps = batch_size / step
        base = base or tps
        print(f"  {batch_size:>5}  {step * 1e3:>8.2f}  {tps:>9.0f}  {tps / base:>9.2f}x")


if __name__ == "__main__":
    main()
